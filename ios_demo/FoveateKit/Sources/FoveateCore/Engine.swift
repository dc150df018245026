// The engine a Conversation talks to (models/protocol.py's five calls), and GraphEngine, which speaks them
// in terms of a build's declared graph methods (runtime/backends.py GraphCalls): it keeps the vision K/V
// that vision_prefill returns and hands them to every text_decoder call.
import Foundation

public protocol Engine: AnyObject {
    /// Forget the previous conversation.
    func reset() throws
    /// ids -> embeds (1, T, hidden).
    func embed(_ ids: [Int]) throws -> Tensor
    /// pixels (1, 3, S, S) -> vision embeds (1, N_v, hidden).
    func encodeImage(_ pixels: Tensor) throws -> Tensor
    /// Split layout: the image after `startPos` text tokens, whose embeddings are `prefixEmbeds`.
    func prefillVision(_ visionEmbeds: Tensor, startPos: Int, prefixEmbeds: Tensor?) throws
    /// A chunk at positions pos.., text-cache rows slot..; the logits (V) of its last position.
    func text(_ embeds: Tensor, pos: Int, slot: Int, select: Bool) throws -> [Float]
}

/// Runs one graph method: inputs in the manifest's declared order, outputs in declared order
/// (a backend may return fewer outputs than declared: then the first ones).
public protocol MethodRunner: AnyObject {
    func run(_ method: String, _ inputs: [Tensor]) throws -> [Tensor]
    /// Forget the state a method keeps inside itself (Core ML: a new MLState for text_decoder).
    func reset() throws
}

extension MethodRunner {
    public func reset() throws {}
}

public final class GraphEngine: Engine {
    public let manifest: Manifest
    public let runner: MethodRunner
    public private(set) var visionKV: [Tensor] = []

    public init(manifest: Manifest, runner: MethodRunner) {
        self.manifest = manifest
        self.runner = runner
    }

    private var kv: KVLayout { manifest.kv }

    public func reset() throws {
        try runner.reset()
        visionKV = kv.visionKVNames.map { _ in Tensor.zeros(kv.visionKVShape) }
    }

    public func embed(_ ids: [Int]) throws -> Tensor {
        try call("token_embedding", [Tensor(shape: [1, ids.count], ints: ids.map(Int64.init))])[0]
    }

    public func encodeImage(_ pixels: Tensor) throws -> Tensor {
        try call("vision_encoder", [pixels])[0]
    }

    public func prefillVision(_ visionEmbeds: Tensor, startPos: Int, prefixEmbeds: Tensor?) throws {
        // The method takes at least one row; start_pos = 0 masks it.
        let prefix = prefixEmbeds ?? Tensor.zeros([1, 1, manifest.model.hiddenSize])
        let out = try call("vision_prefill", [visionEmbeds, Tensor(shape: [1], ints: [Int64(startPos)]), prefix])
        visionKV = Array(out.dropFirst())
    }

    public func text(_ embeds: Tensor, pos: Int, slot: Int, select: Bool) throws -> [Float] {
        let n = embeds.shape[1]
        try kv.checkSlots(slot: slot, count: n)
        let inputs: [Tensor]
        if kv.layout == "shared" {
            inputs = [embeds, Tensor(shape: [1], ints: [Int64(pos)])]
        } else {
            inputs = [embeds, Tensor(shape: [n], ints: (0..<n).map { Int64(pos + $0) }),
                      Tensor(shape: [1], ints: [Int64(slot)]), Tensor(shape: [1], ints: [select ? 1 : 0])] + visionKV
        }
        let logits = try call("text_decoder", inputs)[0]
        let v = logits.shape.last ?? 0
        return Array(logits.floats.suffix(v))  // (1, 1, V): the chunk's last position
    }

    /// Check the inputs against the method's declaration (count, rank, fixed dims, float or integer),
    /// then run it.
    private func call(_ method: String, _ inputs: [Tensor]) throws -> [Tensor] {
        let declared = try manifest.method(method).inputs
        guard inputs.count == declared.count else {
            throw BuildError("\(method): expected \(declared.count) inputs, got \(inputs.count)")
        }
        for (spec, t) in zip(declared, inputs) {
            let dimsOK = spec.shape.count == t.shape.count && zip(spec.shape, t.shape).allSatisfy { d, n in
                if case .fixed(let m) = d { return m == n }
                return true
            }
            let kindOK = spec.dtype.hasPrefix("float") == t.isFloat
            if !(dimsOK && kindOK) {
                throw BuildError("\(method).\(spec.name): expected \(spec.dtype)[\(spec.shape.map(Self.dimText).joined(separator: ", "))], "
                                 + "got \(t.dtype)\(t.shape)")
            }
        }
        let outputs = try runner.run(method, inputs)
        guard !outputs.isEmpty else { throw BuildError("\(method) returned no outputs") }
        return outputs
    }

    private static func dimText(_ d: Manifest.TensorSpec.Dim) -> String {
        switch d {
        case .fixed(let n): String(n)
        case .named(let s): s
        }
    }
}
