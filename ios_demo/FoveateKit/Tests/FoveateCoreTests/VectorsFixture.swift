// The test vectors (docs/vectors.md) named by the environment variable FOVEATE_VECTORS, with the build's
// manifest.json and tokenizer.json beside them, loaded once. An unset variable fails every test that needs
// them (it does not skip): `python -m runtime.vectors` or a build writes the file.
import Foundation
import XCTest
@testable import FoveateCore

struct Fixture: Sendable {
    let url: URL
    let vectors: JSONValue
    let manifest: Manifest
    let tokenizer: Tokenizer
    let tolerance: Float

    var buildDirectory: URL { url.deletingLastPathComponent() }
}

struct FixtureError: Error, CustomStringConvertible {
    let description: String
}

private let loaded: Result<Fixture, FixtureError> = {
    guard let path = ProcessInfo.processInfo.environment["FOVEATE_VECTORS"], !path.isEmpty else {
        return .failure(FixtureError(description: "FOVEATE_VECTORS is not set: point it at a build's vectors.json "
                                     + "(python export/build.py --target onnx writes build/<name>/vectors.json)"))
    }
    let url = URL(fileURLWithPath: path)
    do {
        guard let data = FileManager.default.contents(atPath: url.path) else {
            throw FixtureError(description: "FOVEATE_VECTORS=\(path): no such file")
        }
        let vectors = try JSONValue.parse(data)
        guard vectors["format"]?.int == 1 else {
            throw FixtureError(description: "\(path): vectors format \(vectors["format"].map { "\($0)" } ?? "none"), this port reads 1")
        }
        let dir = url.deletingLastPathComponent()
        let manifest = try Manifest.load(buildDirectory: dir)
        let tokFile = vectors["tokenizer"]?["file"]?.string ?? manifest.tokenizer
        let tokenizer = try Tokenizer(contentsOf: dir.appendingPathComponent(tokFile), prompt: manifest.prompt)
        let tolerance = Float(vectors["tolerance"]?.double ?? 1e-5)
        return .success(Fixture(url: url, vectors: vectors, manifest: manifest, tokenizer: tokenizer, tolerance: tolerance))
    } catch let e as FixtureError {
        return .failure(e)
    } catch {
        return .failure(FixtureError(description: "\(path): \(error)"))
    }
}()

func fixture() throws -> Fixture { try loaded.get() }

extension JSONValue {
    /// An encoded array field.
    func tensor(_ key: String) throws -> Tensor {
        guard let a = self[key] else { throw FixtureError(description: "vectors: no array \(key)") }
        return try a.decodedTensor()
    }

    func decodedTensor() throws -> Tensor { try EncodedArray(json: self).tensor() }

    func list(_ key: String) throws -> [JSONValue] {
        guard let a = self[key]?.array else { throw FixtureError(description: "vectors: no list \(key)") }
        return a
    }
}

/// Exact comparison of two strings, code point by code point (Swift's == treats canonically equivalent
/// strings as equal; the vectors are exact).
func XCTAssertSameText(_ a: String, _ b: String, _ message: @autoclosure () -> String = "",
                       file: StaticString = #filePath, line: UInt = #line) {
    XCTAssertEqual(Array(a.unicodeScalars), Array(b.unicodeScalars),
                   "\(message()): \(a.debugDescription) != \(b.debugDescription)", file: file, line: line)
}

func maxAbsDiff(_ a: [Float], _ b: [Float]) -> Float {
    zip(a, b).reduce(0) { max($0, abs($1.0 - $1.1)) }
}
