// A small tensor (shape + flat row-major storage) and the test vectors' array encoding (docs/vectors.md):
// {"name", "dtype", "shape", "b64"}, the little-endian raw bytes in base64.
import Foundation

public struct Tensor: Equatable, Sendable {
    public enum Storage: Equatable, Sendable {
        case float32([Float])
        case float16([UInt16])  // IEEE binary16 bit patterns (Core ML's vision K/V); no arithmetic here
        case float64([Double])
        case int64([Int64])
        case uint8([UInt8])
    }

    public var shape: [Int]
    public var storage: Storage

    public init(shape: [Int], storage: Storage) {
        self.shape = shape
        self.storage = storage
        precondition(shape.reduce(1, *) == count, "shape \(shape) does not hold \(count) elements")
    }

    public init(shape: [Int], floats: [Float]) { self.init(shape: shape, storage: .float32(floats)) }
    public init(shape: [Int], ints: [Int64]) { self.init(shape: shape, storage: .int64(ints)) }

    public static func zeros(_ shape: [Int]) -> Tensor {
        Tensor(shape: shape, floats: [Float](repeating: 0, count: shape.reduce(1, *)))
    }

    public var count: Int {
        switch storage {
        case .float32(let v): v.count
        case .float16(let v): v.count
        case .float64(let v): v.count
        case .int64(let v): v.count
        case .uint8(let v): v.count
        }
    }

    public var dtype: String {
        switch storage {
        case .float32: "float32"
        case .float16: "float16"
        case .float64: "float64"
        case .int64: "int64"
        case .uint8: "uint8"
        }
    }

    public var isFloat: Bool {
        switch storage {
        case .float32, .float16, .float64: true
        case .int64, .uint8: false
        }
    }

    /// The values as Float (float16 widened exactly, float64 rounded).
    public var floats: [Float] {
        switch storage {
        case .float32(let v): v
        case .float16(let v): v.map(halfToFloat)
        case .float64(let v): v.map(Float.init)
        case .int64(let v): v.map(Float.init)
        case .uint8(let v): v.map(Float.init)
        }
    }

    /// The values as Int64; nil for floating-point storage.
    public var ints: [Int64]? {
        switch storage {
        case .int64(let v): v
        case .uint8(let v): v.map(Int64.init)
        default: nil
        }
    }

    public var bytes: [UInt8]? {
        if case .uint8(let v) = storage { return v }
        return nil
    }
}

/// binary16 bits -> Float, exactly (subnormals, infinities and NaN included).
public func halfToFloat(_ h: UInt16) -> Float {
    let sign = UInt32(h >> 15) << 31
    let exp = Int((h >> 10) & 0x1f), frac = UInt32(h & 0x3ff)
    if exp == 0 {
        let magnitude = Float(frac) * 0x1p-24  // subnormal (or zero)
        return sign == 0 ? magnitude : -magnitude
    }
    let bits = exp == 31 ? (sign | 0x7f80_0000 | (frac << 13)) : (sign | UInt32(exp - 15 + 127) << 23 | (frac << 13))
    return Float(bitPattern: bits)
}

/// Float -> binary16 bits, rounding to nearest even (what Core ML does when it casts an input).
public func floatToHalf(_ f: Float) -> UInt16 {
    let bits = f.bitPattern
    let sign = UInt16((bits >> 16) & 0x8000)
    if f.isNaN { return sign | 0x7e00 }
    let a = abs(f)
    if a >= 65520 { return sign | 0x7c00 }  // rounds to infinity
    if a < 0x1p-14 {  // subnormal half: a multiple of 2^-24
        return sign | UInt16((a * 0x1p24).rounded(.toNearestOrEven))
    }
    let e = Int((a.bitPattern >> 23) & 0xff) - 127 + 15
    let mant = a.bitPattern & 0x7f_ffff
    var h = UInt32(e) << 10 | mant >> 13
    let rest = mant & 0x1fff
    if rest > 0x1000 || (rest == 0x1000 && h & 1 == 1) { h += 1 }  // carries into the exponent correctly
    return sign | UInt16(h)
}

/// One array of the vectors file.
public struct EncodedArray: Decodable, Sendable {
    public let name: String?
    public let dtype: String
    public let shape: [Int]
    public let b64: String

    public init(name: String? = nil, dtype: String, shape: [Int], b64: String) {
        (self.name, self.dtype, self.shape, self.b64) = (name, dtype, shape, b64)
    }

    /// From an already parsed {"name", "dtype", "shape", "b64"} object.
    public init(json: JSONValue) throws {
        guard let dtype = json["dtype"]?.string, let shape = json["shape"]?.ints, let b64 = json["b64"]?.string else {
            throw VectorsError("not an encoded array (needs dtype, shape, b64)")
        }
        self.init(name: json["name"]?.string, dtype: dtype, shape: shape, b64: b64)
    }

    public func tensor() throws -> Tensor {
        guard let data = Data(base64Encoded: b64) else {
            throw VectorsError("array \(name ?? "?"): invalid base64")
        }
        let n = shape.reduce(1, *)
        let width = ["float32": 4, "float64": 8, "int64": 8, "int32": 4, "uint8": 1, "bool": 1][dtype]
        guard let width else {
            throw VectorsError("array \(name ?? "?"): unknown dtype \(dtype); known: float32, float64, int64, int32, uint8, bool")
        }
        guard data.count == n * width else {
            throw VectorsError("array \(name ?? "?"): \(data.count) bytes for \(dtype)\(shape)")
        }
        let storage: Tensor.Storage = data.withUnsafeBytes { raw in
            func load<T: FixedWidthInteger>(_: T.Type) -> [T] {
                (0..<n).map { T(littleEndian: raw.loadUnaligned(fromByteOffset: $0 * width, as: T.self)) }
            }
            switch dtype {
            case "float32": return .float32(load(UInt32.self).map(Float.init(bitPattern:)))
            case "float64": return .float64(load(UInt64.self).map(Double.init(bitPattern:)))
            case "int64": return .int64(load(Int64.self))
            case "int32": return .int64(load(Int32.self).map(Int64.init))
            default: return .uint8(Array(raw))
            }
        }
        return Tensor(shape: shape, storage: storage)
    }
}

public struct VectorsError: Error, CustomStringConvertible, Sendable {
    public let description: String
    public init(_ message: String) { description = message }
}
