// On a simulator or an iPhone (hosted in the app, whose bundle carries the FoveateBuild folder): the build's
// golden.json through the Core ML engine, and the runner protocol's capacity refusal.
import FoveateCore
import FoveateCoreML
@testable import FoveateDemo  // the app target (BuildLocator)
import XCTest

final class GoldenReplayOnDeviceTests: XCTestCase {
    private func pipeline() async throws -> (Pipeline, URL) {
        let dir = try BuildLocator.locate(in: [.main, Bundle(for: Self.self)])
        return (try await BuildLocator.pipeline(directory: dir), dir)
    }

    func testEveryGoldenCaseMatchesOnThisDevice() async throws {
        let (pipe, dir) = try await pipeline()
        let golden = try GoldenFile.load(buildDirectory: dir, manifest: pipe.manifest)
        let results = try GoldenReplay.run(pipeline: pipe, golden: golden) {
            try RGBAImage(contentsOf: dir.appendingPathComponent($0))
        }
        XCTAssertEqual(results.count, golden.cases.count)
        for (i, r) in results.enumerated() {
            XCTAssertTrue(r.matched, "case \(i) (\(r.prompt)): \(r.generated) != golden \(r.expected)")
            XCTAssertGreaterThan(r.timings.ttftS, 0)
        }
        print(GoldenReplay.report(results))
    }

    func testPromptOverCapacityIsRefused() async throws {
        let (pipe, _) = try await pipeline()
        let long = Array(repeating: "word", count: pipe.manifest.kv.textRows).joined(separator: " ")
        XCTAssertThrowsError(try pipe.generate(image: nil, prompt: long)) { XCTAssertTrue($0 is CapacityError) }
    }
}
