// manifest.json, the single source of truth for a build (runtime/manifest.py, runtime/manifest.schema.json).
// `Manifest.load` checks the schema version, then the schema's constraints (`SchemaCheck`), then that every
// file it names is present, and throws BuildError with one line saying what is wrong and where.
import Foundation

public struct Manifest: Decodable, Sendable {
    public static let schemaVersion = 2

    public let schemaVersion: Int
    public let name: String
    public let target: String
    public let dtype: String
    public let plan: Plan
    public let kvLayout: String
    public let image: ImageSpec
    public let prompt: PromptTemplate
    public let tokenizer: String
    public let graphs: Graphs
    public let kv: KVLayout
    public let golden: String?
    public let model: Model

    public struct Plan: Decodable, Sendable {
        public let name: String
        public let modes: [String]
    }

    public struct Model: Decodable, Sendable {
        public let family: String
        public let hiddenSize: Int

        enum CodingKeys: String, CodingKey { case family, config }
        enum ConfigKeys: String, CodingKey { case decoder }
        enum DecoderKeys: String, CodingKey { case hiddenSize = "hidden_size" }

        public init(from decoder: Decoder) throws {
            let c = try decoder.container(keyedBy: CodingKeys.self)
            family = try c.decode(String.self, forKey: .family)
            let dec = try c.nestedContainer(keyedBy: ConfigKeys.self, forKey: .config)
                .nestedContainer(keyedBy: DecoderKeys.self, forKey: .decoder)
            hiddenSize = try dec.decode(Int.self, forKey: .hiddenSize)
        }
    }

    public struct Graphs: Decodable, Sendable {
        public let files: [String]
        public let methods: [String: MethodSpec]
    }

    public struct MethodSpec: Decodable, Sendable {
        public let file: String
        public let inputs: [TensorSpec]
        public let outputs: [TensorSpec]
        /// State the method keeps inside itself (ONNX: passed in and out; Core ML: its MLState).
        public let states: [TensorSpec]?
        /// ONNX builds: declared inputs the graph never reads (not fed).
        public let unreadInputs: [String]?

        enum CodingKeys: String, CodingKey { case file, inputs, outputs, states, unreadInputs = "unread_inputs" }
    }

    /// One declared input or output; a shape entry is a size or a name ("seq": 1 to text_rows - 1).
    public struct TensorSpec: Decodable, Sendable {
        public enum Dim: Decodable, Sendable, Equatable {
            case fixed(Int)
            case named(String)

            public init(from decoder: Decoder) throws {
                let c = try decoder.singleValueContainer()
                if let n = try? c.decode(Int.self) { self = .fixed(n) } else { self = .named(try c.decode(String.self)) }
            }
        }

        public let name: String
        public let shape: [Dim]
        public let dtype: String
    }

    enum CodingKeys: String, CodingKey {
        case schemaVersion = "schema_version", name, target, dtype, plan, kvLayout = "kv_layout", image, prompt,
             tokenizer, graphs, kv, golden, model
    }

    /// The manifest of the build in `directory`, checked.
    public static func load(buildDirectory directory: URL) throws -> Manifest {
        var isDir: ObjCBool = false
        guard FileManager.default.fileExists(atPath: directory.path, isDirectory: &isDir), isDir.boolValue else {
            throw BuildError("build directory not found: \(directory.path)")
        }
        let url = directory.appendingPathComponent("manifest.json")
        guard let data = FileManager.default.contents(atPath: url.path) else {
            throw BuildError("\(directory.path) has no manifest.json: not a complete foveate build")
        }
        let manifest = try decode(data, path: url.path)
        let named = manifest.graphs.files + [manifest.tokenizer]
        let absent = named.filter { !FileManager.default.fileExists(atPath: directory.appendingPathComponent($0).path) }
        if !absent.isEmpty {
            throw BuildError("\(directory.path) is missing \(absent.joined(separator: ", ")) named in its manifest")
        }
        return manifest
    }

    /// Parse manifest JSON: the schema version first (one message for another version), then the schema's
    /// constraints, then the fields.
    public static func decode(_ data: Data, path: String = "manifest.json") throws -> Manifest {
        let json: JSONValue
        do {
            json = try JSONValue.parse(data)
        } catch {
            throw BuildError("\(path) is not valid JSON")
        }
        let version = json["schema_version"]?.int
        guard version == schemaVersion else {
            throw BuildError("\(path) has schema version \(version.map(String.init) ?? "none"); this runtime reads "
                             + "version \(schemaVersion) (rebuild with this foveate)")
        }
        try SchemaCheck(file: path).manifest(json)
        let manifest: Manifest
        do {
            manifest = try JSONDecoder().decode(Manifest.self, from: data)
        } catch let DecodingError.keyNotFound(key, context) {
            let at = (context.codingPath.map(\.stringValue) + [key.stringValue]).joined(separator: ".")
            throw BuildError("\(path) lacks required key \(at)")
        } catch {
            throw BuildError("\(path) is malformed: \(error)")
        }
        return manifest
    }

    /// The declared I/O of a method; one clear error naming the methods the build has.
    public func method(_ name: String) throws -> MethodSpec {
        guard let spec = graphs.methods[name] else {
            throw BuildError("the build has no method \(name); it has \(graphs.methods.keys.sorted().joined(separator: ", "))")
        }
        return spec
    }
}

/// The manifest's prompt section: the template the prompt is split around the image with.
public struct PromptTemplate: Decodable, Sendable {
    public let beforeImage: String
    public let afterImage: String
    public let imageToken: String
    public let stopTokens: [String]

    enum CodingKeys: String, CodingKey {
        case beforeImage = "before_image", afterImage = "after_image", imageToken = "image_token",
             stopTokens = "stop_tokens"
    }

    public init(beforeImage: String, afterImage: String, imageToken: String = "<image>", stopTokens: [String] = []) {
        self.beforeImage = beforeImage
        self.afterImage = afterImage
        self.imageToken = imageToken
        self.stopTokens = stopTokens
    }

    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        self.init(beforeImage: try c.decodeIfPresent(String.self, forKey: .beforeImage) ?? "",
                  afterImage: try c.decodeIfPresent(String.self, forKey: .afterImage) ?? "{prompt}",
                  imageToken: try c.decodeIfPresent(String.self, forKey: .imageToken) ?? "<image>",
                  stopTokens: try c.decodeIfPresent([String].self, forKey: .stopTokens) ?? [])
    }
}

/// The constraints of runtime/manifest.schema.json, checked without a JSON Schema engine, in the schema's
/// order: the first value that breaks one throws one BuildError, "file: path: what", the path dotted as
/// runtime/manifest.py writes it (image.std[0], graphs.methods.text_decoder.inputs[1].dtype).
struct SchemaCheck {
    typealias Object = [String: JSONValue]

    static let topKeys = ["schema_version", "name", "target", "dtype", "model", "weights", "plan", "kv_layout", "image",
                      "prompt", "tokenizer", "graphs", "kv", "runner", "parity", "golden", "cost"]
    static let imageKeys = ["size", "resize_mode", "pad_color", "mean", "std", "channel_order", "resample", "scale",
                        "layout", "dtype"]
    static let promptKeys = ["before_image", "after_image", "image_token", "stop_tokens", "stop_ids"]
    static let kvKeys = ["layout", "text_rows", "vision_tokens", "image_slots", "max_context", "grid", "num_kv_heads",
                     "head_dim", "dtype", "modes", "vision_kv_layers", "vision_kv", "prefix_layers", "text_kv_shape"]
    static let modes = ["full", "cross", "text", "exit"]
    static let tensorDtypes = ["float32", "float16", "int64", "int32"]
    static let shown = 200  // characters of an offending value in a message

    let file: String

    func manifest(_ json: JSONValue) throws {
        guard let m = json.object else { throw fail("", "\(show(json)) is not of type 'object'") }
        try required(m, "", Self.topKeys)
        try string(m["name"], "name", minLength: 1)
        try oneOf(m["target"], "target", ["executorch", "onnx", "coreml"])
        try oneOf(m["dtype"], "dtype", ["fp32", "fp16"])
        if m["quant"] != nil { try oneOf(m["quant"], "quant", ["none", "int8", "8da4w", "int4"]) }
        if m["quant_vision"] != nil { try oneOf(m["quant_vision"], "quant_vision", ["none", "int8"]) }
        let model = try object(m, "", "model", required: ["family", "source", "config"])
        try oneOf(model["family"], "model.family", ["fastvlm", "mobilevlm"])
        try string(model["source"], "model.source")
        let config = try object(model, "model", "config", required: ["family", "vision", "projector", "decoder"])
        let decoder = try object(config, "model.config", "decoder", required: ["hidden_size"])
        try integer(decoder["hidden_size"], "model.config.decoder.hidden_size", minimum: 1)
        try string(m["weights"], "weights")
        try plan(try object(m, "", "plan", required: ["name", "modes"]))
        try oneOf(m["kv_layout"], "kv_layout", KVLayout.layouts)
        try image(try object(m, "", "image", required: Self.imageKeys))
        try prompt(try object(m, "", "prompt", required: Self.promptKeys))
        try string(m["tokenizer"], "tokenizer", minLength: 1)
        let kv = try object(m, "", "kv", required: Self.kvKeys)
        try self.kv(kv)
        try graphs(try object(m, "", "graphs", required: ["files", "methods"]), layout: kv["layout"]?.string ?? "")
        _ = try object(m, "", "runner", required: ["protocol", "layout"])
        let parity = try object(m, "", "parity", required: ["file", "skipped"])
        guard parity["skipped"]?.bool != nil else {
            throw fail("parity.skipped", "\(show(parity["skipped"])) is not of type 'boolean'")
        }
        try string(m["golden"], "golden")
        try string(m["cost"], "cost")
        if m["vectors"] != nil { try string(m["vectors"], "vectors") }
    }

    private func plan(_ plan: Object) throws {
        try string(plan["name"], "plan.name")
        for (i, mode) in try array(plan["modes"], "plan.modes", minItems: 1).enumerated() {
            try oneOf(mode, "plan.modes[\(i)]", Self.modes)
        }
        if plan["window"] != nil { try integer(plan["window"], "plan.window", minimum: 0) }
        if plan["keep_topk"] != nil {
            let topk = try object(plan, "plan", "keep_topk", required: ["from_layer", "k"])
            try integer(topk["from_layer"], "plan.keep_topk.from_layer", minimum: nil)
            try integer(topk["k"], "plan.keep_topk.k", minimum: 1)
        }
        if plan["vision_heads"] != nil { try integers(plan["vision_heads"], "plan.vision_heads", minimum: 0) }
    }

    private func image(_ image: Object) throws {
        try integer(image["size"], "image.size", minimum: 1)
        try oneOf(image["resize_mode"], "image.resize_mode", ["pad", "crop"])
        for (i, c) in try array(image["pad_color"], "image.pad_color", minItems: 3, maxItems: 3).enumerated() {
            try integer(c, "image.pad_color[\(i)]", minimum: 0)
            if let v = c.double, v > 255 { throw fail("image.pad_color[\(i)]", "\(show(c)) is greater than the maximum of 255") }
        }
        for (i, v) in try array(image["mean"], "image.mean", minItems: 3, maxItems: 3).enumerated() {
            try number(v, "image.mean[\(i)]", positive: false)
        }
        for (i, v) in try array(image["std"], "image.std", minItems: 3, maxItems: 3).enumerated() {
            try number(v, "image.std[\(i)]", positive: true)
        }
        try oneOf(image["channel_order"], "image.channel_order", ["RGB", "BGR"])
        try oneOf(image["resample"], "image.resample", ["bicubic", "bilinear"])
        try number(image["scale"], "image.scale", positive: true)
        try oneOf(image["layout"], "image.layout", ["NCHW"])
        try oneOf(image["dtype"], "image.dtype", ["float32"])
    }

    private func prompt(_ prompt: Object) throws {
        try string(prompt["before_image"], "prompt.before_image")
        try string(prompt["after_image"], "prompt.after_image")
        guard prompt["after_image"]?.string?.contains("{prompt}") == true else {
            throw fail("prompt.after_image", "\(show(prompt["after_image"])) does not contain {prompt}")
        }
        try string(prompt["image_token"], "prompt.image_token")
        for (i, t) in try array(prompt["stop_tokens"], "prompt.stop_tokens").enumerated() {
            try string(t, "prompt.stop_tokens[\(i)]")
        }
        try integers(prompt["stop_ids"], "prompt.stop_ids", minimum: nil)
    }

    private func kv(_ kv: Object) throws {
        try oneOf(kv["layout"], "kv.layout", KVLayout.layouts)
        let minimums: [(String, Double)] = [("text_rows", 2), ("vision_tokens", 0), ("image_slots", 0), ("max_context", 1),
                                            ("grid", 0), ("num_kv_heads", 1), ("head_dim", 1)]
        for (key, minimum) in minimums { try integer(kv[key], "kv.\(key)", minimum: minimum) }
        try oneOf(kv["dtype"], "kv.dtype", ["float32", "float16"])
        for (i, mode) in try array(kv["modes"], "kv.modes").enumerated() { try oneOf(mode, "kv.modes[\(i)]", Self.modes) }
        try integers(kv["vision_kv_layers"], "kv.vision_kv_layers", minimum: 0)
        for (i, name) in try array(kv["vision_kv"], "kv.vision_kv").enumerated() { try string(name, "kv.vision_kv[\(i)]") }
        try integer(kv["prefix_layers"], "kv.prefix_layers", minimum: 0)
        try integers(kv["text_kv_shape"], "kv.text_kv_shape", minimum: 0)
        if let shape = kv["vision_kv_shape"], !shape.isNull { try integers(shape, "kv.vision_kv_shape", minimum: 0) }
        if kv["vision_kv_design"] != nil { try oneOf(kv["vision_kv_design"], "kv.vision_kv_design", ["buffers"]) }
    }

    private func graphs(_ graphs: Object, layout: String) throws {
        for (i, f) in try array(graphs["files"], "graphs.files", minItems: 1).enumerated() {
            try string(f, "graphs.files[\(i)]", minLength: 1)
        }
        let needed = ["vision_encoder", "token_embedding"] + (layout == "split" ? ["vision_prefill"] : []) + ["text_decoder"]
        let methods = try object(graphs, "graphs", "methods", required: needed)
        for name in methods.keys.sorted() {
            let at = "graphs.methods.\(name)"
            let method = try object(methods, "graphs.methods", name, required: ["file", "inputs", "outputs"])
            try string(method["file"], "\(at).file", minLength: 1)
            for io in ["inputs", "outputs", "states"] where method[io] != nil {
                for (i, t) in try array(method[io], "\(at).\(io)").enumerated() { try tensor(t, "\(at).\(io)[\(i)]") }
            }
        }
    }

    private func tensor(_ value: JSONValue, _ at: String) throws {
        guard let t = value.object else { throw fail(at, "\(show(value)) is not of type 'object'") }
        try required(t, at, ["name", "shape", "dtype"])
        try string(t["name"], "\(at).name")
        for (i, d) in try array(t["shape"], "\(at).shape").enumerated() {
            if d.string != nil { try string(d, "\(at).shape[\(i)]", minLength: 1) } else { try integer(d, "\(at).shape[\(i)]", minimum: 0) }
        }
        try oneOf(t["dtype"], "\(at).dtype", Self.tensorDtypes)
    }

    // The schema's primitives; `path` is where the value sits ("" at the top).

    private func required(_ o: Object, _ path: String, _ keys: [String]) throws {
        if let key = keys.first(where: { o[$0] == nil }) { throw fail(path, "'\(key)' is a required property") }
    }

    private func object(_ parent: Object, _ at: String, _ key: String, required keys: [String]) throws -> Object {
        let path = at.isEmpty ? key : "\(at).\(key)"
        guard let o = parent[key]?.object else { throw fail(path, "\(show(parent[key])) is not of type 'object'") }
        try required(o, path, keys)
        return o
    }

    private func array(_ value: JSONValue?, _ path: String, minItems: Int = 0, maxItems: Int = .max) throws -> [JSONValue] {
        guard let a = value?.array else { throw fail(path, "\(show(value)) is not of type 'array'") }
        if a.count < minItems { throw fail(path, "\(show(value)) is too short (\(minItems) items needed)") }
        if a.count > maxItems { throw fail(path, "\(show(value)) is too long (\(maxItems) items at most)") }
        return a
    }

    private func string(_ value: JSONValue?, _ path: String, minLength: Int = 0) throws {
        guard let s = value?.string else { throw fail(path, "\(show(value)) is not of type 'string'") }
        if s.count < minLength { throw fail(path, "\(show(value)) is too short") }
    }

    /// An integer (a JSON number without a fraction, as JSON Schema has it) of at least `minimum`.
    private func integer(_ value: JSONValue?, _ path: String, minimum: Double?) throws {
        guard let v = value?.double, v.isFinite, v.rounded() == v else {
            throw fail(path, "\(show(value)) is not of type 'integer'")
        }
        if let minimum, v < minimum { throw fail(path, "\(show(value)) is less than the minimum of \(Int(minimum))") }
    }

    private func integers(_ value: JSONValue?, _ path: String, minimum: Double?) throws {
        for (i, v) in try array(value, path).enumerated() { try integer(v, "\(path)[\(i)]", minimum: minimum) }
    }

    private func number(_ value: JSONValue?, _ path: String, positive: Bool) throws {
        guard let v = value?.double, v.isFinite else { throw fail(path, "\(show(value)) is not of type 'number'") }
        if positive && v <= 0 { throw fail(path, "\(show(value)) is less than or equal to the minimum of 0") }
    }

    private func oneOf(_ value: JSONValue?, _ path: String, _ values: [String]) throws {
        guard let s = value?.string, values.contains(s) else {
            throw fail(path, "\(show(value)) is not one of [\(values.joined(separator: ", "))]")
        }
    }

    private func fail(_ path: String, _ what: String) -> BuildError {
        BuildError("\(file): \(path.isEmpty ? "" : path + ": ")\(what)")
    }

    /// A value as JSON text, cut to one short line.
    private func show(_ value: JSONValue?) -> String {
        let text = value.map(Self.json) ?? "null"
        return text.count <= Self.shown ? text : String(text.prefix(Self.shown - 3)) + "..."
    }

    private static func json(_ value: JSONValue) -> String {
        switch value {
        case .null: return "null"
        case .bool(let b): return b ? "true" : "false"
        case .number(let n): return n.rounded() == n && abs(n) < 1e15 ? String(Int(n)) : String(n)
        case .string(let s):
            let escaped = s.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "\"", with: "\\\"")
                .replacingOccurrences(of: "\n", with: "\\n")
            return "\"\(escaped)\""
        case .array(let a): return "[" + a.map(json).joined(separator: ",") + "]"
        case .object(let o): return "{" + o.keys.sorted().map { "\"\($0)\":" + json(o[$0]!) }.joined(separator: ",") + "}"
        }
    }
}
