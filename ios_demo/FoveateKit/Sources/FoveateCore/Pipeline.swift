// One pipeline over any engine (runtime/pipeline.py): preprocess, tokenize, the conversation, stream, time.
//
//     let pipe = try Pipeline(manifest: manifest, tokenizer: tok, engine: engine)
//     for try await delta in pipe.stream(image: photo, prompt: "What is this?") { answer += delta }
import Foundation

/// An RGBA8 picture (straight alpha, row-major), as a platform layer decodes it.
public struct RGBAImage: Sendable {
    public let width: Int
    public let height: Int
    public let pixels: [UInt8]

    public init(width: Int, height: Int, pixels: [UInt8]) {
        (self.width, self.height, self.pixels) = (width, height, pixels)
    }
}

public struct Answer: Sendable {
    public var text: String
    public var ids: [Int]
    public var visionTokens: Int
    public var timings: Timings
}

/// Generation calls are serialised by a lock, and the engine is only touched under it, so one Pipeline may
/// be shared between tasks (the UI hands it to a background task per question).
public final class Pipeline: @unchecked Sendable {
    public let manifest: Manifest
    public let tokenizer: Tokenizer
    public let preprocessor: ImagePreprocessor
    private let conversation: Conversation
    private let lock = NSLock()

    public init(manifest: Manifest, tokenizer: Tokenizer, engine: Engine, clock: @escaping Clock = monotonicClock) throws {
        self.manifest = manifest
        self.tokenizer = tokenizer
        preprocessor = try ImagePreprocessor(spec: manifest.image)
        conversation = Conversation(engine: engine, kv: manifest.kv, stopIds: tokenizer.stopIds, clock: clock)
    }

    /// A build directory's manifest and tokenizer around `engine`.
    public convenience init(buildDirectory: URL, engine: Engine, clock: @escaping Clock = monotonicClock) throws {
        let manifest = try Manifest.load(buildDirectory: buildDirectory)
        let tokenizer = try Tokenizer(contentsOf: buildDirectory.appendingPathComponent(manifest.tokenizer),
                                      prompt: manifest.prompt)
        try self.init(manifest: manifest, tokenizer: tokenizer, engine: engine, clock: clock)
    }

    /// Answer `prompt` about `image` (or none); `onText` receives the text as it completes.
    public func generate(image: RGBAImage?, prompt: String, maxNewTokens: Int = 64, sampler: Sampler = Sampler(),
                         onText: ((String) -> Void)? = nil, isCancelled: () -> Bool = { false }) throws -> Answer {
        let pixels = try image.map { try preprocessor.preprocess(rgba: $0.pixels, width: $0.width, height: $0.height) }
        let (before, after) = tokenizer.encodePrompt(prompt, withImage: pixels != nil)
        let stream = tokenizer.streamDecoder()
        lock.lock()
        defer { lock.unlock() }
        let t = try conversation.run(before: before, pixels: pixels, after: after, maxNewTokens: maxNewTokens,
                                     pick: sampler.pick, onToken: onText.map { f in { f(stream.push($0)) } },
                                     isCancelled: isCancelled)
        onText?(stream.finish())
        let textIds = t.ids.filter { !tokenizer.stopIds.contains($0) }
        return Answer(text: tokenizer.decode(textIds), ids: t.ids, visionTokens: pixels == nil ? 0 : manifest.kv.visionTokens,
                      timings: t.timings)
    }

    /// The answer's text as it streams; the stream ends after the last delta, or with the error.
    /// Runs on a detached task; `onDone` receives the whole answer (ids, timings) before the stream ends.
    /// Ending the iteration early cancels the task: decoding stops after the current token.
    public func stream(image: RGBAImage?, prompt: String, maxNewTokens: Int = 64, temperature: Double = 0,
                       topP: Double = 1, seed: Int = 0, onDone: (@Sendable (Answer) -> Void)? = nil)
        -> AsyncThrowingStream<String, Error>
    {
        AsyncThrowingStream { continuation in
            let task = Task.detached {
                do {
                    let answer = try self.generate(image: image, prompt: prompt, maxNewTokens: maxNewTokens,
                                                   sampler: Sampler(temperature: temperature, topP: topP, seed: seed),
                                                   onText: { if !$0.isEmpty { continuation.yield($0) } },
                                                   isCancelled: { Task.isCancelled })
                    onDone?(answer)
                    continuation.finish()
                } catch {
                    continuation.finish(throwing: error)
                }
            }
            continuation.onTermination = { _ in task.cancel() }
        }
    }
}
