// Every golden case's recorded call sequence (the vectors' `calls` section) replayed through the port's
// Pipeline -> Conversation -> GraphEngine: ReplayRunner returns the recorded outputs and refuses any call
// whose method or inputs differ from the recording (integers exactly, floats within 1e-5).
import XCTest
@testable import FoveateCore

struct RecordedCall {
    let method: String
    let inputs: [(name: String, tensor: Tensor)]
    let outputs: [Tensor]
}

struct ReplayMismatch: Error, CustomStringConvertible {
    let description: String
}

final class ReplayRunner: MethodRunner {
    let calls: [RecordedCall]
    let tolerance: Float
    private(set) var next = 0

    init(_ calls: [RecordedCall], tolerance: Float) {
        self.calls = calls
        self.tolerance = tolerance
    }

    var finished: Bool { next == calls.count }

    func run(_ method: String, _ inputs: [Tensor]) throws -> [Tensor] {
        guard next < calls.count else {
            throw ReplayMismatch(description: "call \(next) (\(method)): the recording has only \(calls.count) calls")
        }
        let want = calls[next]
        let at = "call \(next) (\(want.method))"
        guard want.method == method else { throw ReplayMismatch(description: "\(at): the port called \(method)") }
        guard want.inputs.count == inputs.count else {
            throw ReplayMismatch(description: "\(at): \(inputs.count) inputs, recorded \(want.inputs.count)")
        }
        for ((name, rec), got) in zip(want.inputs, inputs) {
            guard rec.shape == got.shape else {
                throw ReplayMismatch(description: "\(at).\(name): shape \(got.shape), recorded \(rec.shape)")
            }
            if let recInts = rec.ints {
                guard got.ints == recInts else {
                    throw ReplayMismatch(description: "\(at).\(name): \(got.ints ?? []), recorded \(recInts)")
                }
            } else {
                let diff = got.isFloat ? maxAbsDiff(got.floats, rec.floats) : .infinity
                guard diff <= tolerance else {
                    throw ReplayMismatch(description: "\(at).\(name): max diff \(diff) > \(tolerance)")
                }
            }
        }
        next += 1
        return want.outputs
    }
}

/// Seconds that advance by one at every reading: timings become exact.
final class TickingClock: @unchecked Sendable {
    private var now = -1.0
    func read() -> Double { now += 1; return now }
}

final class ReplayTests: XCTestCase {
    struct Case {
        let prompt: String
        let image: RGBAImage
        let imagePath: String
        let maxNewTokens: Int
        let goldenIds: [Int]
        let generatedIds: [Int]
        let text: String
        let calls: [RecordedCall]
    }

    func cases(_ f: Fixture) throws -> [Case] {
        try XCTUnwrap(f.vectors["calls"]).list("cases").map { c in
            let rgba = try c.tensor("rgba")
            let calls = try c.list("calls").map { call in
                RecordedCall(method: try XCTUnwrap(call["method"]?.string),
                             inputs: try call.list("inputs").map { (name: $0["name"]?.string ?? "?", tensor: try $0.decodedTensor()) },
                             outputs: try call.list("outputs").map { try $0.decodedTensor() })
            }
            return Case(prompt: try XCTUnwrap(c["prompt"]?.string),
                        image: RGBAImage(width: rgba.shape[1], height: rgba.shape[0], pixels: try XCTUnwrap(rgba.bytes)),
                        imagePath: c["image"]?.string ?? "?", maxNewTokens: try XCTUnwrap(c["max_new_tokens"]?.int),
                        goldenIds: try XCTUnwrap(c["ids"]?.ints), generatedIds: try XCTUnwrap(c["generated_ids"]?.ints),
                        text: try XCTUnwrap(c["text"]?.string), calls: calls)
        }
    }

    func testLayoutMatchesTheManifest() throws {
        let f = try fixture()
        XCTAssertEqual(f.vectors["calls"]?["layout"]?.string, f.manifest.kv.layout)
    }

    func testEveryGoldenCallSequence() throws {
        let f = try fixture()
        let all = try cases(f)
        XCTAssertFalse(all.isEmpty)
        for (i, c) in all.enumerated() {
            let runner = ReplayRunner(c.calls, tolerance: f.tolerance)
            let pipe = try Pipeline(manifest: f.manifest, tokenizer: f.tokenizer,
                                    engine: GraphEngine(manifest: f.manifest, runner: runner))
            let answer = try pipe.generate(image: c.image, prompt: c.prompt, maxNewTokens: c.maxNewTokens)
            XCTAssertEqual(answer.ids, c.generatedIds, "case \(i)")
            XCTAssertTrue(runner.finished, "case \(i): \(runner.next) of \(c.calls.count) recorded calls made")
            XCTAssertSameText(answer.text, c.text, "case \(i) text")
            XCTAssertEqual(answer.visionTokens, f.manifest.kv.visionTokens)
            let decoderCalls = c.calls.filter { $0.method == "text_decoder" }.suffix(c.generatedIds.count)
            XCTAssertEqual(decoderCalls.map { Sampler.greedy(Array($0.outputs[0].floats.suffix(f.tokenizer.vocabSize))) },
                           c.generatedIds, "case \(i): the recorded logits lead to the generated ids")
        }
    }

    func testGoldenReplayReportsTokenMatchPerCase() throws {
        let f = try fixture()
        let all = try cases(f)
        let runner = ReplayRunner(all.flatMap(\.calls), tolerance: f.tolerance)  // one pipeline, case after case
        let pipe = try Pipeline(manifest: f.manifest, tokenizer: f.tokenizer,
                                engine: GraphEngine(manifest: f.manifest, runner: runner))
        let golden = GoldenFile(maxNewTokens: all[0].maxNewTokens, cases: all.map {
            GoldenCase(image: $0.imagePath, prompt: $0.prompt, ids: $0.goldenIds, text: nil, maxNewTokens: $0.maxNewTokens)
        })
        let images = Dictionary(all.map { ($0.imagePath, $0.image) }, uniquingKeysWith: { a, _ in a })
        let results = try GoldenReplay.run(pipeline: pipe, golden: golden) { try XCTUnwrap(images[$0]) }
        XCTAssertTrue(runner.finished)
        for (r, c) in zip(results, all) {
            XCTAssertEqual(r.generated, c.generatedIds)
            XCTAssertEqual(r.matched, c.goldenIds == c.generatedIds)
        }
        XCTAssertEqual(GoldenReplay.report(results).split(separator: "\n").count, all.count)
    }

    func testStreamedAnswer() async throws {
        let f = try fixture()
        let c = try XCTUnwrap(cases(f).first)
        let runner = ReplayRunner(c.calls, tolerance: f.tolerance)
        let pipe = try Pipeline(manifest: f.manifest, tokenizer: f.tokenizer,
                                engine: GraphEngine(manifest: f.manifest, runner: runner))
        let done = DoneBox()
        var streamed = ""
        for try await delta in pipe.stream(image: c.image, prompt: c.prompt, maxNewTokens: c.maxNewTokens,
                                           onDone: { done.answer = $0 }) {
            streamed += delta
        }
        XCTAssertSameText(streamed, f.tokenizer.decode(c.generatedIds), "streamed text")
        XCTAssertEqual(done.answer?.ids, c.generatedIds)
    }

    func testTimingsFromTheInjectedClock() throws {
        let f = try fixture()
        let c = try XCTUnwrap(cases(f).first)
        let clock = TickingClock()
        let pipe = try Pipeline(manifest: f.manifest, tokenizer: f.tokenizer,
                                engine: GraphEngine(manifest: f.manifest, runner: ReplayRunner(c.calls, tolerance: f.tolerance)),
                                clock: { clock.read() })
        let t = try pipe.generate(image: c.image, prompt: c.prompt, maxNewTokens: c.maxNewTokens).timings
        // readings: start 0, image 1..2, first token 3, decode 4..5
        XCTAssertEqual(t.imageEncodeS, 1)
        XCTAssertEqual(t.ttftS, 3)
        XCTAssertEqual(t.prefillS, 2)
        XCTAssertEqual(t.decodeS, 1)
        XCTAssertEqual(t.decodeTokS, Double(c.generatedIds.count - 1))
    }

    func testReplayRefusesAnInputThatDiffers() throws {
        let f = try fixture()
        let c = try XCTUnwrap(cases(f).first)
        let pipe = try Pipeline(manifest: f.manifest, tokenizer: f.tokenizer,
                                engine: GraphEngine(manifest: f.manifest, runner: ReplayRunner(c.calls, tolerance: f.tolerance)))
        XCTAssertThrowsError(try pipe.generate(image: c.image, prompt: c.prompt + " Now.", maxNewTokens: c.maxNewTokens)) {
            XCTAssertTrue($0 is ReplayMismatch, "\($0)")
        }
        var darker = c.image.pixels
        for i in stride(from: 0, to: darker.count, by: 4) { darker[i] /= 2 }
        let other = RGBAImage(width: c.image.width, height: c.image.height, pixels: darker)
        let again = try Pipeline(manifest: f.manifest, tokenizer: f.tokenizer,
                                 engine: GraphEngine(manifest: f.manifest, runner: ReplayRunner(c.calls, tolerance: f.tolerance)))
        XCTAssertThrowsError(try again.generate(image: other, prompt: c.prompt, maxNewTokens: c.maxNewTokens)) {
            XCTAssertTrue("\($0)".contains("pixels: max diff"), "\($0)")
        }
    }
}

final class DoneBox: @unchecked Sendable {
    var answer: Answer?
}
