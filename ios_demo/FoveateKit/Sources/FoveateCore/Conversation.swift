// The runner protocol's conversation driver (models/protocol.py `converse`, docs/runner-protocol.md):
// the text before the image, the image, the question, then one token per step.
import Foundation

/// Seconds from an arbitrary origin; injected so tests can drive the timings.
public typealias Clock = @Sendable () -> Double

public let monotonicClock: Clock = { Double(DispatchTime.now().uptimeNanoseconds) / 1e9 }

public struct Timings: Sendable, Equatable {
    public var imageEncodeS: Double?  // around vision_encoder; nil without an image
    public var prefillS = 0.0  // steps 3 to 5 less the image encode
    public var ttftS = 0.0  // steps 3 to 5: time to first token
    public var decodeS = 0.0
    public var decodeTokS = 0.0  // (new tokens - 1) / decode time

    public init() {}
}

/// What one conversation produced: new ids, timings, and each stage's raw output.
public struct Transcript: Sendable {
    public var ids: [Int] = []
    public var timings = Timings()
    public var visionEmbeds: Tensor?
    public var prefillLogits: [Float] = []  // the distribution the first new token is drawn from
    public var decodeLogitsCount = 0  // decode steps run (each fed one token back)
}

public final class Conversation {
    public let engine: Engine
    public let kv: KVLayout
    public let stopIds: Set<Int>
    public let clock: Clock

    public init(engine: Engine, kv: KVLayout, stopIds: [Int] = [], clock: @escaping Clock = monotonicClock) {
        self.engine = engine
        self.kv = kv
        self.stopIds = Set(stopIds)
        self.clock = clock
    }

    /// One conversation on token ids. Positions (`pos`) count every token, image included; slots count
    /// text-cache rows (the image takes rows only in the shared layout). Decoding ends at a stop id, after
    /// `maxNewTokens`, when the cache is full, or when `isCancelled()` says so. `pick` chooses each token.
    public func run(before: [Int], pixels: Tensor?, after: [Int], maxNewTokens: Int,
                    pick: ([Float]) -> Int = Sampler.greedy, onToken: ((Int) -> Void)? = nil,
                    isCancelled: () -> Bool = { false }) throws -> Transcript {
        let need = try kv.checkFits(textTokens: before.count + after.count, withImage: pixels != nil)
        guard !after.isEmpty else {
            throw TokenizerError("the question chunk is empty: the prompt template puts nothing after the image")
        }
        var out = Transcript()
        try engine.reset()
        let t0 = clock()
        var (pos, slot) = (0, 0)
        var prefix: Tensor?
        if !before.isEmpty {
            prefix = try engine.embed(before)
            _ = try engine.text(prefix!, pos: pos, slot: slot, select: false)
            (pos, slot) = (pos + before.count, slot + before.count)
        }
        if let pixels {
            let tImage = clock()
            let vision = try engine.encodeImage(pixels)
            out.visionEmbeds = vision
            out.timings.imageEncodeS = clock() - tImage
            if kv.layout == "shared" {
                _ = try engine.text(vision, pos: pos, slot: slot, select: false)
            } else {
                try engine.prefillVision(vision, startPos: pos, prefixEmbeds: prefix)
            }
            (pos, slot) = (pos + kv.visionTokens, slot + kv.imageSlots)
        }
        var logits = try engine.text(engine.embed(after), pos: pos, slot: slot, select: true)
        out.prefillLogits = logits
        (pos, slot) = (pos + after.count, slot + after.count)
        out.timings.ttftS = clock() - t0
        out.timings.prefillS = out.timings.ttftS - (out.timings.imageEncodeS ?? 0)
        let limit = min(maxNewTokens, kv.textRows - need + 1)  // every token but the last is fed back
        let t1 = clock()
        while out.ids.count < limit {
            let token = pick(logits)
            out.ids.append(token)
            onToken?(token)
            if stopIds.contains(token) || out.ids.count == limit || isCancelled() { break }
            logits = try engine.text(engine.embed([token]), pos: pos, slot: slot, select: false)
            out.decodeLogitsCount += 1
            (pos, slot) = (pos + 1, slot + 1)
        }
        let decodeS = clock() - t1
        out.timings.decodeS = decodeS
        let n = out.ids.count
        out.timings.decodeTokS = n > 1 && decodeS > 0 ? Double(n - 1) / decodeS : 0
        return out
    }
}
