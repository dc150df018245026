// The BPE model of a tokenizer.json (Hugging Face `tokenizers`): a word starts as one symbol per character
// (or per UTF-8 byte, `<0xNN>`, with byte_fallback), then the adjacent pair of lowest merge rank, the
// leftmost among equals, is merged until no pair has a merge.
import Foundation

struct BPE {
    let vocab: [String: Int]
    let merges: [Pair: (rank: Int, id: Int)]
    let unkId: Int?
    let fuseUnk: Bool
    let byteFallback: Bool
    let ignoreMerges: Bool
    let prefix: String  // continuing_subword_prefix
    let suffix: String  // end_of_word_suffix

    struct Pair: Hashable {
        let a: Int, b: Int
    }

    init(_ model: JSONValue) throws {
        guard model["type"]?.string ?? "BPE" == "BPE" else {
            throw TokenizerError("tokenizer model \(model["type"]?.string ?? "?") is not supported; this port reads BPE")
        }
        guard let vocabJSON = model["vocab"]?.object else { throw TokenizerError("tokenizer model has no vocab") }
        var vocab: [String: Int] = [:]
        for (token, id) in vocabJSON {
            guard let id = id.int else { throw TokenizerError("vocab entry \(token) has no integer id") }
            vocab[token] = id
        }
        self.vocab = vocab
        prefix = model["continuing_subword_prefix"]?.string ?? ""
        suffix = model["end_of_word_suffix"]?.string ?? ""
        var merges: [Pair: (rank: Int, id: Int)] = [:]
        for (rank, m) in (model["merges"]?.array ?? []).enumerated() {
            let parts: [String]
            if let s = m.string {  // "a b" (older files)
                parts = s.split(separator: " ", maxSplits: 1, omittingEmptySubsequences: false).map(String.init)
            } else {
                parts = m.strings ?? []  // ["a", "b"]
            }
            guard parts.count == 2, let a = vocab[parts[0]], let b = vocab[parts[1]] else {
                throw TokenizerError("merge \(rank) (\(m)) names tokens outside the vocab")
            }
            let merged = parts[0] + String(parts[1].dropFirst(prefix.count))
            guard let id = vocab[merged] else { throw TokenizerError("merge \(rank) makes \(merged), not in the vocab") }
            if merges[Pair(a: a, b: b)] == nil { merges[Pair(a: a, b: b)] = (rank, id) }
        }
        self.merges = merges
        unkId = model["unk_token"]?.string.flatMap { vocab[$0] }
        fuseUnk = model["fuse_unk"]?.bool ?? false
        byteFallback = model["byte_fallback"]?.bool ?? false
        ignoreMerges = model["ignore_merges"]?.bool ?? false
    }

    /// The ids of one pre-tokenized word.
    func tokenize(_ word: String) -> [Int] {
        if ignoreMerges, let id = vocab[word] { return [id] }
        var symbols = initialSymbols(word)
        while symbols.count > 1 {
            var best: (rank: Int, at: Int, id: Int)?
            for i in 0..<(symbols.count - 1) {
                if let m = merges[Pair(a: symbols[i], b: symbols[i + 1])], m.rank < (best?.rank ?? Int.max) {
                    best = (m.rank, i, m.id)
                }
            }
            guard let best else { break }
            symbols[best.at] = best.id
            symbols.remove(at: best.at + 1)
        }
        return symbols
    }

    private func initialSymbols(_ word: String) -> [Int] {
        let scalars = Array(word.unicodeScalars)
        var out: [Int] = []
        var lastWasUnk = false
        for (i, s) in scalars.enumerated() {
            var piece = String(s)
            if i > 0 { piece = prefix + piece }
            if i == scalars.count - 1 { piece += suffix }
            if let id = vocab[piece] {
                out.append(id)
                lastWasUnk = false
                continue
            }
            if byteFallback {
                let bytes = String(s).utf8.map { vocab[String(format: "<0x%02X>", $0)] }
                if bytes.allSatisfy({ $0 != nil }) {
                    out += bytes.map { $0! }
                    lastWasUnk = false
                    continue
                }
            }
            guard let unk = unkId else { continue }  // no unk token: the character is dropped
            if !(fuseUnk && lastWasUnk) { out.append(unk) }
            lastWasUnk = true
        }
        return out
    }
}
