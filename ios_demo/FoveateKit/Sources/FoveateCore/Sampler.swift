// Token sampling, bit for bit as runtime/sampler.py specifies it: SplitMix64 + nucleus (top-p) sampling.
import Foundation

/// SplitMix64 (Steele, Lea & Flood 2014): one 64-bit state, wrapping arithmetic.
public struct SplitMix64: Sendable {
    public private(set) var state: UInt64

    public init(seed: UInt64) { state = seed }
    public init(seed: Int) { state = UInt64(bitPattern: Int64(seed)) }  // seed mod 2^64

    public mutating func nextU64() -> UInt64 {
        state &+= 0x9e37_79b9_7f4a_7c15
        var z = state
        z = (z ^ (z >> 30)) &* 0xbf58_476d_1ce4_e5b9
        z = (z ^ (z >> 27)) &* 0x94d0_49bb_1331_11eb
        return z ^ (z >> 31)
    }

    /// 53 random bits, in [0, 1).
    public mutating func nextDouble() -> Double {
        Double(nextU64() >> 11) * 0x1p-53
    }
}

/// Greedy when temperature <= 0, else nucleus sampling over softmax(logits / temperature).
public final class Sampler {
    public let temperature: Double
    public let topP: Double
    public private(set) var rng: SplitMix64

    public init(temperature: Double = 0, topP: Double = 1, seed: Int = 0) {
        precondition(!temperature.isNaN && !topP.isNaN, "temperature and top_p must be numbers")
        self.temperature = temperature
        self.topP = topP
        rng = SplitMix64(seed: seed)
    }

    /// The index of the largest logit, the lowest index on ties.
    public static func greedy(_ logits: [Float]) -> Int {
        var best = 0
        for i in logits.indices where logits[i] > logits[best] { best = i }
        return best
    }

    public func pick(_ logits: [Float]) -> Int {
        precondition(!logits.isEmpty, "cannot pick from empty logits")
        if temperature <= 0 { return Self.greedy(logits) }
        let (ids, running) = nucleus(logits)
        let u = rng.nextDouble() * running[running.count - 1]  // exactly one draw per sampled token
        let j = running.firstIndex { $0 > u } ?? ids.count - 1
        return ids[j]
    }

    /// Steps 2-4: the kept ids, most probable first, and the running sums of their probabilities.
    public func nucleus(_ logits: [Float]) -> (ids: [Int], running: [Double]) {
        let y = logits.map { Double($0) / temperature }
        let m = y.max()!
        let e = y.map { Foundation.exp($0 - m) }
        var s = 0.0
        for v in e { s += v }  // one by one, in index order
        let p = e.map { $0 / s }
        let order = p.indices.sorted { p[$0] > p[$1] || (p[$0] == p[$1] && $0 < $1) }  // stable, descending
        var running: [Double] = []
        running.reserveCapacity(order.count)
        var c = 0.0
        for i in order {
            c += p[i]
            running.append(c)
        }
        let k = running.firstIndex { $0 >= topP } ?? order.count  // first k with c_k >= top_p
        let keep = min(k + 1, order.count)
        return (Array(order.prefix(keep)), Array(running.prefix(keep)))
    }
}
