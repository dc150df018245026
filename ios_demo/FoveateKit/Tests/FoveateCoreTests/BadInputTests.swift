// Builds and prompts that cannot be used: each refused with one clear error, before any graph runs.
import XCTest
@testable import FoveateCore

final class CountingRunner: MethodRunner {
    var calls = 0
    func run(_ method: String, _ inputs: [Tensor]) throws -> [Tensor] {
        calls += 1
        throw BuildError("no graph should run")
    }
}

final class BadInputTests: XCTestCase {
    private func manifestText(_ f: Fixture) throws -> String {
        try String(contentsOf: f.buildDirectory.appendingPathComponent("manifest.json"), encoding: .utf8)
    }

    private func tempBuild(manifest: String, files: [String]) throws -> URL {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("foveate-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        addTeardownBlock { try? FileManager.default.removeItem(at: dir) }
        try manifest.write(to: dir.appendingPathComponent("manifest.json"), atomically: true, encoding: .utf8)
        for name in files {
            let url = dir.appendingPathComponent(name)
            try FileManager.default.createDirectory(at: url.deletingLastPathComponent(), withIntermediateDirectories: true)
            try Data().write(to: url)
        }
        return dir
    }

    func testAnotherSchemaVersionIsRefused() throws {
        let f = try fixture()
        let text = try manifestText(f).replacingOccurrences(of: "\"schema_version\": 2", with: "\"schema_version\": 1")
        XCTAssertTrue(text.contains("\"schema_version\": 1"), "the manifest's schema_version field was not found")
        XCTAssertThrowsError(try Manifest.decode(Data(text.utf8))) {
            XCTAssertTrue($0 is BuildError)
            XCTAssertEqual("\($0)", "manifest.json has schema version 1; this runtime reads version 2 (rebuild with this foveate)")
        }
    }

    /// Each of the vectors' bad manifests (docs/vectors.md): refused, one line, naming what Python's names.
    func testEveryBadManifestOfTheVectorsIsRefused() throws {
        let cases = try fixture().vectors.list("bad_manifests")
        XCTAssertGreaterThanOrEqual(cases.count, 10, "the vectors hold \(cases.count) bad manifests")
        for c in cases {
            let name = c["name"]?.string ?? "?"
            guard let text = c["text"]?.string, let mentions = c["mentions"]?.strings else {
                return XCTFail("\(name): no text or mentions")
            }
            XCTAssertThrowsError(try Manifest.decode(Data(text.utf8)), "\(name) was accepted") {
                let message = "\($0)"
                XCTAssertTrue($0 is BuildError, "\(name): \(type(of: $0))")
                XCTAssertTrue(message.hasPrefix("manifest.json") && !message.contains("\n"), "\(name): \(message)")
                for m in mentions { XCTAssertTrue(message.contains(m), "\(name): '\(message)' does not mention \(m)") }
            }
        }
    }

    /// The fixture's manifest with one section changed.
    private func edited(_ f: Fixture, _ section: String, _ change: (inout [String: Any]) -> Void) throws -> Data {
        let data = try Data(contentsOf: f.buildDirectory.appendingPathComponent("manifest.json"))
        var m = try XCTUnwrap(JSONSerialization.jsonObject(with: data) as? [String: Any])
        var part = try XCTUnwrap(m[section] as? [String: Any])
        change(&part)
        m[section] = part
        return try JSONSerialization.data(withJSONObject: m)
    }

    func testValueAgainstTheSchemaIsRefusedWithItsPath() throws {
        let f = try fixture()
        XCTAssertThrowsError(try Manifest.decode(try edited(f, "image") { $0["pad_color"] = [0, 300, 0] })) {
            XCTAssertEqual("\($0)", "manifest.json: image.pad_color[1]: 300 is greater than the maximum of 255")
        }
        XCTAssertThrowsError(try Manifest.decode(try edited(f, "parity") { $0["skipped"] = "no" })) {
            XCTAssertEqual("\($0)", "manifest.json: parity.skipped: \"no\" is not of type 'boolean'")
        }
        XCTAssertNoThrow(try Manifest.decode(try edited(f, "kv") { $0["vision_kv_shape"] = NSNull() }))  // a shared build's
    }

    func testMissingFileIsRefused() throws {
        let f = try fixture()
        let graphs = f.manifest.graphs.files
        let dir = try tempBuild(manifest: try manifestText(f), files: graphs)  // no tokenizer.json
        XCTAssertThrowsError(try Manifest.load(buildDirectory: dir)) {
            XCTAssertEqual("\($0)", "\(dir.path) is missing \(f.manifest.tokenizer) named in its manifest")
        }
        let whole = try tempBuild(manifest: try manifestText(f), files: graphs + [f.manifest.tokenizer])
        XCTAssertNoThrow(try Manifest.load(buildDirectory: whole))
    }

    func testMissingBuildOrManifestIsRefused() throws {
        let nowhere = URL(fileURLWithPath: "/nonexistent/foveate-build")
        XCTAssertThrowsError(try Manifest.load(buildDirectory: nowhere)) {
            XCTAssertEqual("\($0)", "build directory not found: /nonexistent/foveate-build")
        }
        let empty = FileManager.default.temporaryDirectory
        XCTAssertThrowsError(try Manifest.load(buildDirectory: empty)) { XCTAssertTrue("\($0)".contains("has no manifest.json")) }
    }

    func testMissingMethodIsRefused() throws {
        let f = try fixture()
        XCTAssertThrowsError(try f.manifest.method("image_decoder")) {
            XCTAssertTrue("\($0)".hasPrefix("the build has no method image_decoder; it has "), "\($0)")
        }
    }

    func testPromptOverCapacityIsRefusedBeforeAnyGraphRuns() throws {
        let f = try fixture()
        let runner = CountingRunner()
        let pipe = try Pipeline(manifest: f.manifest, tokenizer: f.tokenizer,
                                engine: GraphEngine(manifest: f.manifest, runner: runner))
        let long = Array(repeating: "word", count: f.manifest.kv.textRows).joined(separator: " ")
        XCTAssertThrowsError(try pipe.generate(image: nil, prompt: long)) {
            XCTAssertTrue($0 is CapacityError, "\($0)")
            XCTAssertTrue("\($0)".contains("does not fit the KV capacity of \(f.manifest.kv.textRows) rows"), "\($0)")
        }
        XCTAssertEqual(runner.calls, 0)
    }

    func testChunkPastTheCacheIsRefused() throws {
        let f = try fixture()
        let runner = CountingRunner()
        let engine = GraphEngine(manifest: f.manifest, runner: runner)
        try engine.reset()
        let rows = f.manifest.kv.textRows
        XCTAssertThrowsError(try engine.text(Tensor.zeros([1, 2, f.manifest.model.hiddenSize]), pos: rows, slot: rows - 1,
                                             select: false)) {
            XCTAssertEqual("\($0)", "a chunk of 2 tokens at slot \(rows - 1) does not fit the KV cache of \(rows) rows")
        }
        XCTAssertEqual(runner.calls, 0)
    }

    func testWrongInputShapeIsRefused() throws {
        let f = try fixture()
        let runner = CountingRunner()
        let engine = GraphEngine(manifest: f.manifest, runner: runner)
        XCTAssertThrowsError(try engine.encodeImage(Tensor.zeros([1, 3, 7, 7]))) {
            XCTAssertTrue("\($0)".hasPrefix("vision_encoder.pixels: expected float32"), "\($0)")
        }
        XCTAssertEqual(runner.calls, 0)
    }
}
