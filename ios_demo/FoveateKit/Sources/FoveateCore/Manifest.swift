// manifest.json, the single source of truth for a build (runtime/manifest.py, runtime/manifest.schema.json).
// `Manifest.load` checks the schema version, the required keys and that every file it names is present,
// and throws BuildError with one line saying what is wrong.
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

    /// Parse manifest JSON: the schema version first (one message for another version), then the fields.
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
        let manifest: Manifest
        do {
            manifest = try JSONDecoder().decode(Manifest.self, from: data)
        } catch let DecodingError.keyNotFound(key, context) {
            let at = (context.codingPath.map(\.stringValue) + [key.stringValue]).joined(separator: ".")
            throw BuildError("\(path) lacks required key \(at)")
        } catch {
            throw BuildError("\(path) is malformed: \(error)")
        }
        let needed = ["vision_encoder", "token_embedding", "text_decoder"] + (manifest.kv.layout == "split" ? ["vision_prefill"] : [])
        let missing = needed.filter { manifest.graphs.methods[$0] == nil }
        if !missing.isEmpty {
            throw BuildError("\(path) declares no method \(missing.joined(separator: ", ")) (a \(manifest.kv.layout) build needs it)")
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
