// SentencePiece-derived BPE as LLaMA / MobileVLM tokenizer.json files have it (byte_fallback, "▁" for spaces,
// the Prepend/Replace normalizer or the Metaspace pre-tokenizer, ByteFallback/Fuse/Strip decoders, a BOS
// post-processor), checked against what Hugging Face tokenizers does: Fixtures/sentencepiece.json, written by
// Fixtures/make_sentencepiece.py. Needs no vectors.
import XCTest
@testable import FoveateCore

final class SentencePieceTests: XCTestCase {
    private func fixtures() throws -> [JSONValue] {
        let url = try XCTUnwrap(Bundle.module.url(forResource: "sentencepiece", withExtension: "json", subdirectory: "Fixtures"))
        return try XCTUnwrap(JSONValue.parse(Data(contentsOf: url))["tokenizers"]?.array)
    }

    private func tokenizer(_ f: JSONValue) throws -> Tokenizer {
        let json = try JSONSerialization.data(withJSONObject: try XCTUnwrap(foundation(f["json"])))
        return try Tokenizer(json: json, prompt: PromptTemplate(beforeImage: "", afterImage: "{prompt}"))
    }

    func testEncodeLikeTheReference() throws {
        for f in try fixtures() {
            let tok = try tokenizer(f), kind = f["kind"]?.string ?? "?"
            for c in try f.list("encode") {
                let text = try XCTUnwrap(c["text"]?.string), add = try XCTUnwrap(c["add_special_tokens"]?.bool)
                XCTAssertEqual(tok.encode(text, addSpecialTokens: add), c["ids"]?.ints, "\(kind): \(text.debugDescription) add=\(add)")
            }
        }
    }

    func testDecodeLikeTheReference() throws {
        for f in try fixtures() {
            let tok = try tokenizer(f), kind = f["kind"]?.string ?? "?"
            for c in try f.list("decode") {
                let ids = try XCTUnwrap(c["ids"]?.ints), skip = try XCTUnwrap(c["skip_special_tokens"]?.bool)
                XCTAssertSameText(tok.decode(ids, skipSpecial: skip), try XCTUnwrap(c["text"]?.string), "\(kind): \(ids) skip=\(skip)")
            }
        }
    }

    func testUnsupportedPartsAreRefusedByName() throws {
        let f = try XCTUnwrap(fixtures().first)
        var json = try XCTUnwrap(foundation(f["json"]) as? [String: Any])
        json["pre_tokenizer"] = ["type": "Whitespace"]
        XCTAssertThrowsError(try Tokenizer(json: JSONSerialization.data(withJSONObject: json),
                                           prompt: PromptTemplate(beforeImage: "", afterImage: "{prompt}"))) {
            XCTAssertEqual("\($0)", "pre-tokenizer Whitespace is not supported")
        }
    }

    private func foundation(_ v: JSONValue?) -> Any? {
        switch v {
        case .none, .some(.null): nil
        case .some(.bool(let b)): b
        case .some(.number(let n)): n.rounded() == n && abs(n) < 1e15 ? Int(n) as Any : n
        case .some(.string(let s)): s
        case .some(.array(let a)): a.map { foundation($0) ?? NSNull() }
        case .some(.object(let o)): o.mapValues { foundation($0) ?? NSNull() }
        }
    }
}
