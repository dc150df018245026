// The Core ML engine: one MLModel per method from the build's .mlpackage files (export/coreml.py), the
// stateful text_decoder keeping its text K/V in an MLState made anew at every reset. Inputs are cast to
// what the manifest declares (integers int32, vision K/V float16); GraphEngine does the protocol.
//
//     let runner = try await CoreMLRunner.load(buildDirectory: dir, manifest: manifest)
//     let pipe = try Pipeline(manifest: manifest, tokenizer: tok, engine: GraphEngine(manifest: manifest, runner: runner))
//
// Apple platforms only; this file compiles to nothing elsewhere (FoveateCore is tested on Linux).
#if canImport(CoreML)
import CoreML
import Foundation
import FoveateCore

public final class CoreMLRunner: MethodRunner {
    public let manifest: Manifest
    private let models: [String: MLModel]
    private var state: MLState?

    init(manifest: Manifest, models: [String: MLModel]) {
        self.manifest = manifest
        self.models = models
    }

    /// Compile (once per build, cached) and load every method of the build in `buildDirectory`.
    public static func load(buildDirectory: URL, manifest: Manifest,
                            computeUnits: MLComputeUnits = .all) async throws -> CoreMLRunner {
        guard manifest.target == "coreml" else {
            throw BuildError("\(manifest.name) is a \(manifest.target) build; the Core ML engine runs coreml builds")
        }
        let config = MLModelConfiguration()
        config.computeUnits = computeUnits
        var models: [String: MLModel] = [:]
        for (name, spec) in manifest.graphs.methods {
            let compiled = try await compiledModel(buildDirectory.appendingPathComponent(spec.file),
                                                   cacheKey: "\(manifest.name)/\(name)")
            models[name] = try MLModel(contentsOf: compiled, configuration: config)
        }
        return CoreMLRunner(manifest: manifest, models: models)
    }

    /// `MLModel.compileModel(at:)` writes to a temporary place: keep the result in Caches, keyed by build
    /// and method, and recompile when the package is newer than the cached copy.
    static func compiledModel(_ package: URL, cacheKey: String) async throws -> URL {
        let fm = FileManager.default
        let caches = try fm.url(for: .cachesDirectory, in: .userDomainMask, appropriateFor: nil, create: true)
        let target = caches.appendingPathComponent("foveate/\(cacheKey).mlmodelc", isDirectory: true)
        let built = (try? fm.attributesOfItem(atPath: package.path)[.modificationDate] as? Date) ?? .distantFuture
        if let cached = try? fm.attributesOfItem(atPath: target.path)[.modificationDate] as? Date, cached >= built {
            return target
        }
        let compiled = try await MLModel.compileModel(at: package)
        try fm.createDirectory(at: target.deletingLastPathComponent(), withIntermediateDirectories: true)
        try? fm.removeItem(at: target)
        try fm.moveItem(at: compiled, to: target)
        return target
    }

    /// A fresh MLState for text_decoder: text K/V zero, the top-k keep mask (if the plan has one) all ones.
    public func reset() throws {
        guard let decoder = models["text_decoder"] else { throw BuildError("the build has no text_decoder") }
        let state = decoder.makeState()
        for s in try manifest.method("text_decoder").states ?? [] where s.name.hasSuffix("topk_keep") {
            state.withMultiArray(for: s.name) { array in
                array.withUnsafeMutableBytes { raw, _ in
                    let one: UInt16 = 0x3c00  // 1.0 in binary16
                    for i in 0..<array.count { raw.storeBytes(of: one, toByteOffset: i * 2, as: UInt16.self) }
                }
            }
        }
        self.state = state
    }

    public func run(_ method: String, _ inputs: [Tensor]) throws -> [Tensor] {
        let spec = try manifest.method(method)
        guard let model = models[method] else { throw BuildError("method \(method) was not loaded") }
        var features: [String: MLFeatureValue] = [:]
        for (declared, tensor) in zip(spec.inputs, inputs) {
            features[declared.name] = MLFeatureValue(multiArray: try Self.multiArray(tensor, as: declared.dtype))
        }
        let provider = try MLDictionaryFeatureProvider(dictionary: features)
        let out: MLFeatureProvider
        if method == "text_decoder" {
            if state == nil { try reset() }
            out = try model.prediction(from: provider, using: state!)
        } else {
            out = try model.prediction(from: provider)
        }
        return try spec.outputs.map { declared in
            guard let array = out.featureValue(for: declared.name)?.multiArrayValue else {
                throw BuildError("\(method) returned no \(declared.name)")
            }
            return Self.tensor(array)
        }
    }

    // MARK: Tensor <-> MLMultiArray

    /// A new contiguous array of the declared dtype (int32, float16 or float32) holding `t`'s values.
    static func multiArray(_ t: Tensor, as dtype: String) throws -> MLMultiArray {
        let kind: MLMultiArrayDataType
        switch dtype {
        case "int32", "int64": kind = .int32
        case "float16": kind = .float16
        case "float32": kind = .float32
        default: throw BuildError("cannot feed a \(dtype) input to Core ML")
        }
        guard (kind == .int32) == !t.isFloat else { throw BuildError("cannot feed \(t.dtype) values as \(dtype)") }
        let array = try MLMultiArray(shape: t.shape.map { NSNumber(value: $0) }, dataType: kind)
        array.withUnsafeMutableBytes { raw, strides in
            switch (kind, t.storage) {
            case (.int32, _):
                let ints = t.ints ?? []
                forEachOffset(shape: t.shape, strides: strides) { i, o in
                    raw.storeBytes(of: Int32(truncatingIfNeeded: ints[i]), toByteOffset: o * 4, as: Int32.self)
                }
            case (.float16, .float16(let bits)):
                forEachOffset(shape: t.shape, strides: strides) { i, o in raw.storeBytes(of: bits[i], toByteOffset: o * 2, as: UInt16.self) }
            case (.float16, _):
                let halves = t.floats.map(floatToHalf)
                forEachOffset(shape: t.shape, strides: strides) { i, o in raw.storeBytes(of: halves[i], toByteOffset: o * 2, as: UInt16.self) }
            default:
                let floats = t.floats
                forEachOffset(shape: t.shape, strides: strides) { i, o in raw.storeBytes(of: floats[i], toByteOffset: o * 4, as: Float.self) }
            }
        }
        return array
    }

    /// The array's values in row-major order (Core ML may pad rows: strides are honoured); float16 stays
    /// float16 (the vision K/V go back in as they came out), int32 becomes int64, the rest float32.
    static func tensor(_ array: MLMultiArray) -> Tensor {
        let shape = array.shape.map(\.intValue)
        let n = shape.reduce(1, *)
        return array.withUnsafeMutableBytes { raw, strides in
            switch array.dataType {
            case .float16:
                var bits = [UInt16](repeating: 0, count: n)
                forEachOffset(shape: shape, strides: strides) { i, o in bits[i] = raw.load(fromByteOffset: o * 2, as: UInt16.self) }
                return Tensor(shape: shape, storage: .float16(bits))
            case .int32:
                var ints = [Int64](repeating: 0, count: n)
                forEachOffset(shape: shape, strides: strides) { i, o in ints[i] = Int64(raw.load(fromByteOffset: o * 4, as: Int32.self)) }
                return Tensor(shape: shape, ints: ints)
            case .double:
                var floats = [Float](repeating: 0, count: n)
                forEachOffset(shape: shape, strides: strides) { i, o in floats[i] = Float(raw.load(fromByteOffset: o * 8, as: Double.self)) }
                return Tensor(shape: shape, floats: floats)
            default:
                var floats = [Float](repeating: 0, count: n)
                forEachOffset(shape: shape, strides: strides) { i, o in floats[i] = raw.load(fromByteOffset: o * 4, as: Float.self) }
                return Tensor(shape: shape, floats: floats)
            }
        }
    }

    /// Calls body(row-major index, element offset under `strides`) for every element.
    static func forEachOffset(shape: [Int], strides: [Int], _ body: (Int, Int) -> Void) {
        let n = shape.reduce(1, *)
        guard n > 0 else { return }
        var index = [Int](repeating: 0, count: shape.count)
        for i in 0..<n {
            body(i, zip(index, strides).reduce(0) { $0 + $1.0 * $1.1 })
            var d = shape.count - 1
            while d >= 0 {
                index[d] += 1
                if index[d] < shape[d] { break }
                index[d] = 0
                d -= 1
            }
        }
    }
}
#endif
