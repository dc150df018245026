// Tokenizer, prompt split and streaming against the vectors' `tokenizer` and `prompt` sections.
import XCTest
@testable import FoveateCore

final class TokenizerTests: XCTestCase {
    func testVocabularyAndFile() throws {
        let f = try fixture()
        let section = try XCTUnwrap(f.vectors["tokenizer"])
        XCTAssertEqual(f.tokenizer.vocabSize, section["vocab_size"]?.int)
        XCTAssertEqual(f.vectors["manifest_schema_version"]?.int, Manifest.schemaVersion)
        XCTAssertEqual(f.vectors["build"]?.string, f.manifest.name)
    }

    func testEveryEncodeCase() throws {
        let f = try fixture()
        let cases = try XCTUnwrap(f.vectors["tokenizer"]).list("encode")
        XCTAssertFalse(cases.isEmpty)
        for c in cases {
            let text = try XCTUnwrap(c["text"]?.string), add = c["add_special_tokens"]?.bool ?? false
            XCTAssertEqual(f.tokenizer.encode(text, addSpecialTokens: add), c["ids"]?.ints, "encode \(text.debugDescription)")
        }
    }

    func testEveryDecodeCase() throws {
        let f = try fixture()
        let cases = try XCTUnwrap(f.vectors["tokenizer"]).list("decode")
        XCTAssertFalse(cases.isEmpty)
        for c in cases {
            let ids = try XCTUnwrap(c["ids"]?.ints), skip = try XCTUnwrap(c["skip_special_tokens"]?.bool)
            XCTAssertSameText(f.tokenizer.decode(ids, skipSpecial: skip), try XCTUnwrap(c["text"]?.string),
                              "decode \(ids) skip=\(skip)")
        }
    }

    func testEveryStreamCase() throws {
        let f = try fixture()
        let cases = try XCTUnwrap(f.vectors["tokenizer"]).list("stream")
        XCTAssertFalse(cases.isEmpty)
        var heldBack = 0
        for c in cases {
            let ids = try XCTUnwrap(c["ids"]?.ints), expected = try XCTUnwrap(c["pushes"]?.strings)
            let stream = f.tokenizer.streamDecoder(skipSpecial: c["skip_special_tokens"]?.bool ?? true)
            let pushes = ids.map { stream.push($0) }
            XCTAssertEqual(pushes.count, expected.count)
            for (i, (got, want)) in zip(pushes, expected).enumerated() {
                XCTAssertSameText(got, want, "stream \(ids) push \(i)")
            }
            XCTAssertSameText(stream.finish(), try XCTUnwrap(c["finish"]?.string), "stream \(ids) finish")
            XCTAssertSameText(pushes.joined(), f.tokenizer.decode(ids), "stream \(ids) joined")
            heldBack += pushes.filter(\.isEmpty).count
        }
        XCTAssertGreaterThan(heldBack, 0, "no stream case held back a partial character")
    }

    func testEveryPromptSplit() throws {
        let f = try fixture()
        let section = try XCTUnwrap(f.vectors["prompt"])
        XCTAssertEqual(f.tokenizer.stopIds, section["stop_ids"]?.ints)
        let template = try XCTUnwrap(section["template"])
        XCTAssertEqual(f.manifest.prompt.beforeImage, template["before_image"]?.string)
        XCTAssertEqual(f.manifest.prompt.afterImage, template["after_image"]?.string)
        let cases = try section.list("cases")
        XCTAssertFalse(cases.isEmpty)
        for c in cases {
            let prompt = try XCTUnwrap(c["prompt"]?.string), withImage = try XCTUnwrap(c["with_image"]?.bool)
            let (before, after) = f.tokenizer.encodePrompt(prompt, withImage: withImage)
            XCTAssertEqual(before, c["before"]?.ints, "before, \(prompt.debugDescription) image=\(withImage)")
            XCTAssertEqual(after, c["after"]?.ints, "after, \(prompt.debugDescription) image=\(withImage)")
        }
    }
}
