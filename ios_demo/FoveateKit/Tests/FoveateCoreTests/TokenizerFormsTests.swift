// The tokenizer.json forms of the checkpoints foveate ports, checked against what Hugging Face tokenizers
// does (Fixtures/, written by the make_*.py beside them); no vectors needed.
//   SentencePiece-derived BPE (LLaMA / MobileVLM): byte_fallback, "▁" for spaces, the Prepend/Replace
//   normalizer or the Metaspace pre-tokenizer, ByteFallback/Fuse/Strip decoders, a BOS post-processor.
//   Qwen2 (FastVLM): NFC, its Split regex, then ByteLevel without a regex of its own.
import XCTest
@testable import FoveateCore

final class TokenizerFormsTests: XCTestCase {
    private func fixture(_ name: String) throws -> JSONValue {
        let url = try XCTUnwrap(Bundle.module.url(forResource: name, withExtension: "json", subdirectory: "Fixtures"))
        return try JSONValue.parse(Data(contentsOf: url))
    }

    private func fixtures() throws -> [JSONValue] { try XCTUnwrap(fixture("sentencepiece")["tokenizers"]?.array) }

    private func tokenizer(_ f: JSONValue) throws -> Tokenizer {
        let json = try JSONSerialization.data(withJSONObject: try XCTUnwrap(foundation(f["json"])))
        return try Tokenizer(json: json, prompt: PromptTemplate(beforeImage: "", afterImage: "{prompt}"))
    }

    func testSentencePieceEncodeLikeTheReference() throws {
        for f in try fixtures() {
            let tok = try tokenizer(f), kind = f["kind"]?.string ?? "?"
            for c in try f.list("encode") {
                let text = try XCTUnwrap(c["text"]?.string), add = try XCTUnwrap(c["add_special_tokens"]?.bool)
                XCTAssertEqual(tok.encode(text, addSpecialTokens: add), c["ids"]?.ints, "\(kind): \(text.debugDescription) add=\(add)")
            }
        }
    }

    func testSentencePieceDecodeLikeTheReference() throws {
        for f in try fixtures() {
            let tok = try tokenizer(f), kind = f["kind"]?.string ?? "?"
            for c in try f.list("decode") {
                let ids = try XCTUnwrap(c["ids"]?.ints), skip = try XCTUnwrap(c["skip_special_tokens"]?.bool)
                XCTAssertSameText(tok.decode(ids, skipSpecial: skip), try XCTUnwrap(c["text"]?.string), "\(kind): \(ids) skip=\(skip)")
            }
        }
    }

    func testQwen2FormLikeTheReference() throws {
        let f = try fixture("qwen2")
        let tok = try tokenizer(f)
        for c in try f.list("encode") {
            let text = try XCTUnwrap(c["text"]?.string)
            XCTAssertEqual(tok.encode(text), c["ids"]?.ints, "qwen2: \(text.debugDescription)")
        }
        for c in try f.list("decode") {
            let ids = try XCTUnwrap(c["ids"]?.ints)
            XCTAssertSameText(tok.decode(ids, skipSpecial: false), try XCTUnwrap(c["text"]?.string), "qwen2: \(ids)")
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
