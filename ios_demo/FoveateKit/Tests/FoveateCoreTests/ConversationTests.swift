// The runner protocol in both KV layouts, on a fake engine that records its calls (no vectors needed).
import XCTest
@testable import FoveateCore

final class RecordingEngine: Engine {
    var log: [String] = []
    let vocab: Int
    let hidden = 4
    init(vocab: Int = 8) { self.vocab = vocab }

    func reset() throws { log.append("reset") }
    func embed(_ ids: [Int]) throws -> Tensor {
        log.append("embed \(ids.count)")
        return Tensor.zeros([1, ids.count, hidden])
    }
    func encodeImage(_ pixels: Tensor) throws -> Tensor {
        log.append("encode")
        return Tensor.zeros([1, 3, hidden])
    }
    func prefillVision(_ visionEmbeds: Tensor, startPos: Int, prefixEmbeds: Tensor?) throws {
        log.append("prefill start=\(startPos) prefix=\(prefixEmbeds?.shape[1] ?? 0)")
    }
    func text(_ embeds: Tensor, pos: Int, slot: Int, select: Bool) throws -> [Float] {
        log.append("text n=\(embeds.shape[1]) pos=\(pos) slot=\(slot) select=\(select)")
        var logits = [Float](repeating: 0, count: vocab)
        logits[(pos + 1) % vocab] = 1  // a token that depends on the position
        return logits
    }
}

final class ConversationTests: XCTestCase {
    func layout(_ name: String, rows: Int = 16) throws -> KVLayout {
        try KVLayout(layout: name, textRows: rows, visionTokens: 3, grid: 1, numKVHeads: 1, headDim: 2,
                     modes: name == "shared" ? ["full", "full"] : ["full", "cross"])
    }

    func testSplitLayoutCallOrder() throws {
        let engine = RecordingEngine()
        let t = try Conversation(engine: engine, kv: layout("split"), stopIds: [])
            .run(before: [1, 2], pixels: Tensor.zeros([1, 3, 2, 2]), after: [3, 4, 5], maxNewTokens: 2)
        XCTAssertEqual(engine.log, [
            "reset", "embed 2", "text n=2 pos=0 slot=0 select=false", "encode", "prefill start=2 prefix=2",
            "embed 3", "text n=3 pos=5 slot=2 select=true", "embed 1", "text n=1 pos=8 slot=5 select=false",
        ])
        XCTAssertEqual(t.ids, [6, 1])  // from the chunk at pos 5, then the token fed at pos 8
    }

    func testSharedLayoutCallOrder() throws {
        let engine = RecordingEngine()
        _ = try Conversation(engine: engine, kv: layout("shared"), stopIds: [])
            .run(before: [1], pixels: Tensor.zeros([1, 3, 2, 2]), after: [3], maxNewTokens: 1)
        XCTAssertEqual(engine.log, [
            "reset", "embed 1", "text n=1 pos=0 slot=0 select=false", "encode", "text n=3 pos=1 slot=1 select=false",
            "embed 1", "text n=1 pos=4 slot=4 select=true",
        ])
    }

    func testNoImageAndStopIds() throws {
        let engine = RecordingEngine()
        let t = try Conversation(engine: engine, kv: layout("split"), stopIds: [4])
            .run(before: [], pixels: nil, after: [1, 2], maxNewTokens: 10)
        XCTAssertEqual(t.ids, [1, 3, 4])  // stops at 4, which is not fed back
        XCTAssertEqual(engine.log.first { $0.hasPrefix("encode") || $0.hasPrefix("prefill") }, nil)
        XCTAssertEqual(engine.log.filter { $0.hasPrefix("text") }.count, 3)
    }

    func testDecodingStopsWhenTheCacheIsFull() throws {
        let engine = RecordingEngine()
        let t = try Conversation(engine: engine, kv: layout("shared", rows: 8), stopIds: [])
            .run(before: [1], pixels: Tensor.zeros([1, 3, 2, 2]), after: [2, 3], maxNewTokens: 100)
        XCTAssertEqual(t.ids.count, 8 - 6 + 1)  // need = 6 rows; every token but the last takes one
    }

    func testPromptOverCapacityIsOneClearError() throws {
        let engine = RecordingEngine()
        XCTAssertThrowsError(try Conversation(engine: engine, kv: layout("shared", rows: 8))
            .run(before: [1, 2], pixels: Tensor.zeros([1, 3, 2, 2]), after: [3, 4, 5], maxNewTokens: 4)) {
            XCTAssertTrue($0 is CapacityError)
            XCTAssertEqual("\($0)", "prompt of 8 tokens does not fit the KV capacity of 8 rows (shared layout)")
        }
        XCTAssertEqual(engine.log, [], "nothing runs for a prompt that cannot fit")
    }

    func testKVLayoutDerivedValues() throws {
        let split = try layout("split"), shared = try layout("shared")
        XCTAssertEqual(split.imageSlots, 0)
        XCTAssertEqual(shared.imageSlots, 3)
        XCTAssertEqual(split.maxContext, 19)
        XCTAssertEqual(split.visionKVNames, ["vision_k_0", "vision_v_0", "vision_k_1", "vision_v_1"])
        XCTAssertEqual(shared.visionKVNames, [])
        XCTAssertEqual(split.prefixLayers, 1)
        XCTAssertThrowsError(try KVLayout(layout: "paged", textRows: 4, visionTokens: 1, grid: 1, numKVHeads: 1,
                                          headDim: 1, modes: []))
    }
}
