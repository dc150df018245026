// Any JSON value, for the files whose shape is open-ended (tokenizer.json, the test vectors).
import Foundation

public enum JSONValue: Decodable, Equatable, Sendable {
    case null
    case bool(Bool)
    case number(Double)
    case string(String)
    case array([JSONValue])
    case object([String: JSONValue])

    public init(from decoder: Decoder) throws {
        let c = try decoder.singleValueContainer()
        if c.decodeNil() {
            self = .null
        } else if let b = try? c.decode(Bool.self) {
            self = .bool(b)
        } else if let n = try? c.decode(Double.self) {
            self = .number(n)
        } else if let s = try? c.decode(String.self) {
            self = .string(s)
        } else if let a = try? c.decode([JSONValue].self) {
            self = .array(a)
        } else {
            self = .object(try c.decode([String: JSONValue].self))
        }
    }

    public static func parse(_ data: Data) throws -> JSONValue {
        try JSONDecoder().decode(JSONValue.self, from: data)
    }

    public subscript(key: String) -> JSONValue? {
        if case .object(let o) = self { return o[key] }
        return nil
    }

    public var string: String? { if case .string(let s) = self { return s }; return nil }
    public var double: Double? { if case .number(let n) = self { return n }; return nil }
    public var bool: Bool? { if case .bool(let b) = self { return b }; return nil }
    public var array: [JSONValue]? { if case .array(let a) = self { return a }; return nil }
    public var object: [String: JSONValue]? { if case .object(let o) = self { return o }; return nil }
    public var isNull: Bool { self == .null }

    /// An integral number (JSON numbers arrive as doubles; ids and sizes are well under 2^53).
    public var int: Int? {
        guard let n = double, n.rounded() == n, abs(n) < 9.0e15 else { return nil }
        return Int(n)
    }

    public var ints: [Int]? {
        guard let a = array else { return nil }
        let out = a.compactMap(\.int)
        return out.count == a.count ? out : nil
    }

    public var strings: [String]? {
        guard let a = array else { return nil }
        let out = a.compactMap(\.string)
        return out.count == a.count ? out : nil
    }
}
