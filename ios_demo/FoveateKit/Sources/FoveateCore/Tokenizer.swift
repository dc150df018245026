// Prompt tokenization and streaming detokenization over a tokenizer.json (runtime/tokenizer.py).
//
//     let tok = try Tokenizer(contentsOf: buildDir.appendingPathComponent(manifest.tokenizer), prompt: manifest.prompt)
//     let (before, after) = try tok.encodePrompt("What is this?", withImage: true)
//
// Added tokens (special or not) typed in the text are matched first, leftmost-longest, as the Rust library
// does; the rest is normalized, pre-tokenized and run through BPE. The prompt is split around the image as
// LLaVA's `tokenizer_image_token` does: only the first piece gets the post-processor (a LLaMA BOS once).
import Foundation

public final class Tokenizer: Sendable {
    struct AddedToken: Sendable {
        let id: Int
        let content: [Unicode.Scalar]
        let special, normalized, lstrip, rstrip, singleWord: Bool
    }

    enum Piece {
        case added(Int)
        case text(String, atStart: Bool)
    }

    public let prompt: PromptTemplate
    public let stopIds: [Int]  // the prompt's stop tokens present in the vocabulary
    let bpe: BPE
    let added: [AddedToken]
    let idToToken: [Int: String]
    let specialIds: Set<Int>
    let normalizer: Normalizer?
    let preTokenizer: PreTokenizer?
    let decoder: TokenDecoder?
    let postProcessor: PostProcessor

    public convenience init(contentsOf url: URL, prompt: PromptTemplate) throws {
        guard let data = FileManager.default.contents(atPath: url.path) else {
            throw TokenizerError("\(url.path): tokenizer file not found")
        }
        try self.init(json: data, prompt: prompt, path: url.path)
    }

    public init(json data: Data, prompt: PromptTemplate, path: String = "tokenizer.json") throws {
        guard let json = try? JSONValue.parse(data), let model = json["model"] else {
            throw TokenizerError("\(path): not a valid tokenizer.json")
        }
        guard prompt.afterImage.contains("{prompt}") else {
            throw TokenizerError("prompt template after_image must contain '{prompt}': \(prompt.afterImage)")
        }
        self.prompt = prompt
        bpe = try BPE(model)
        added = (json["added_tokens"]?.array ?? []).compactMap { t in
            guard let id = t["id"]?.int, let content = t["content"]?.string else { return nil }
            return AddedToken(id: id, content: Array(content.unicodeScalars), special: t["special"]?.bool ?? false,
                              normalized: t["normalized"]?.bool ?? false, lstrip: t["lstrip"]?.bool ?? false,
                              rstrip: t["rstrip"]?.bool ?? false, singleWord: t["single_word"]?.bool ?? false)
        }
        var idToToken = Dictionary(bpe.vocab.map { ($1, $0) }, uniquingKeysWith: { a, _ in a })
        for t in added { idToToken[t.id] = String(String.UnicodeScalarView(t.content)) }
        self.idToToken = idToToken
        specialIds = Set(added.filter(\.special).map(\.id))
        normalizer = try Normalizer.from(json["normalizer"])
        preTokenizer = try PreTokenizer.from(json["pre_tokenizer"])
        decoder = try TokenDecoder.from(json["decoder"])
        let lookup = Dictionary(added.map { (String(String.UnicodeScalarView($0.content)), $0.id) },
                                uniquingKeysWith: { a, _ in a })
        let vocab = bpe.vocab
        postProcessor = try PostProcessor.from(json["post_processor"]) { lookup[$0] ?? vocab[$0] }
        stopIds = prompt.stopTokens.compactMap { lookup[$0] ?? vocab[$0] }
    }

    /// Vocabulary size, added tokens included.
    public var vocabSize: Int { idToToken.count }

    public func tokenId(_ token: String) -> Int? {
        added.first { String(String.UnicodeScalarView($0.content)) == token }?.id ?? bpe.vocab[token]
    }

    public func encode(_ text: String, addSpecialTokens: Bool = false) -> [Int] {
        var ids: [Int] = []
        for piece in split(text, tokens: added.filter { !$0.normalized }, atStart: true) {
            switch piece {
            case .added(let id): ids.append(id)
            case .text(let raw, let atStart):
                let normalized = normalizer?.apply(raw) ?? raw
                for inner in split(normalized, tokens: added.filter(\.normalized), atStart: atStart) {
                    switch inner {
                    case .added(let id): ids.append(id)
                    case .text(let s, let first):
                        let words = preTokenizer?.apply([s], first: first) ?? [s]
                        for w in words where !w.isEmpty { ids += bpe.tokenize(w) }
                    }
                }
            }
        }
        return addSpecialTokens ? postProcessor.apply(ids) : ids
    }

    /// The template filled with `text`: (ids before the image, ids after it). Without an image the whole
    /// template is one piece, returned in `after` with `before` empty.
    public func encodePrompt(_ text: String, withImage: Bool) -> (before: [Int], after: [Int]) {
        let after = replaceScalars(prompt.afterImage, "{prompt}", text)
        if !withImage { return ([], encode(prompt.beforeImage + after, addSpecialTokens: true)) }
        return (encode(prompt.beforeImage, addSpecialTokens: true), encode(after))
    }

    public func decode(_ ids: [Int], skipSpecial: Bool = true) -> String {
        let tokens = ids.compactMap { id in skipSpecial && specialIds.contains(id) ? nil : idToToken[id] }
        guard let decoder else { return tokens.joined(separator: " ") }
        return decoder.apply(tokens).joined()
    }

    public func streamDecoder(skipSpecial: Bool = true) -> StreamDecoder {
        StreamDecoder(self, skipSpecial: skipSpecial)
    }

    /// `text` cut at the added tokens: leftmost match first, the longest at that place.
    func split(_ text: String, tokens: [AddedToken], atStart: Bool) -> [Piece] {
        let s = Array(text.unicodeScalars)
        guard !tokens.isEmpty else { return s.isEmpty ? [] : [.text(text, atStart: atStart)] }
        var pieces: [Piece] = []
        var textStart = 0, i = 0
        func flush(_ end: Int) {
            if end > textStart {
                pieces.append(.text(String(String.UnicodeScalarView(s[textStart..<end])), atStart: atStart && textStart == 0))
            }
        }
        while i < s.count {
            guard let (token, start, end) = longestMatch(s, at: i, tokens: tokens, after: textStart) else {
                i += 1
                continue
            }
            flush(start)
            pieces.append(.added(token.id))
            textStart = end
            i = end
        }
        flush(s.count)
        return pieces
    }

    private func longestMatch(_ s: [Unicode.Scalar], at i: Int, tokens: [AddedToken], after floor: Int)
        -> (AddedToken, Int, Int)?
    {
        var best: AddedToken?
        for t in tokens where !t.content.isEmpty && i + t.content.count <= s.count
            && (best == nil || t.content.count > best!.content.count) && s[i..<i + t.content.count].elementsEqual(t.content)
        {
            if t.singleWord {
                let end = i + t.content.count
                let wordBefore = i > 0 && Self.isWordChar(s[i - 1]), wordAfter = end < s.count && Self.isWordChar(s[end])
                if wordBefore || wordAfter { continue }
            }
            best = t
        }
        guard let best else { return nil }
        var start = i, end = i + best.content.count
        if best.lstrip { while start > floor && s[start - 1].properties.isWhitespace { start -= 1 } }
        if best.rstrip { while end < s.count && s[end].properties.isWhitespace { end += 1 } }
        return (best, start, end)
    }

    private static func isWordChar(_ c: Unicode.Scalar) -> Bool {
        c.properties.isAlphabetic || c.properties.numericType != nil || c == "_"
    }
}

/// Text deltas as ids arrive (runtime/tokenizer.py StreamDecoder): decodes all ids so far and emits the
/// new suffix; text ending in U+FFFD (a character whose bytes have not all arrived) is held back until
/// the next id completes it. All pushes plus `finish()` equal `decode(all ids)`.
public final class StreamDecoder {
    public let tokenizer: Tokenizer
    public let skipSpecial: Bool
    public private(set) var ids: [Int] = []
    private var emitted: [Unicode.Scalar] = []

    init(_ tokenizer: Tokenizer, skipSpecial: Bool) {
        self.tokenizer = tokenizer
        self.skipSpecial = skipSpecial
    }

    /// Add ids; return the text that is now complete.
    public func push(_ newIds: [Int]) -> String {
        ids += newIds
        let text = tokenizer.decode(ids, skipSpecial: skipSpecial)
        if text.unicodeScalars.last == "\u{FFFD}" { return "" }
        return emit(text)
    }

    public func push(_ id: Int) -> String { push([id]) }

    /// The rest of the text, incomplete characters included.
    public func finish() -> String { emit(tokenizer.decode(ids, skipSpecial: skipSpecial)) }

    /// The text past the longest common prefix (in code points) with what was already emitted.
    private func emit(_ text: String) -> String {
        let now = Array(text.unicodeScalars)
        var common = 0
        while common < min(now.count, emitted.count) && now[common] == emitted[common] { common += 1 }
        emitted = now
        return String(String.UnicodeScalarView(now[common...]))
    }
}
