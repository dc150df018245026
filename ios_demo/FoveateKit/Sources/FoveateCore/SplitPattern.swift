// The pre-tokenizer regexes of byte-level BPE tokenizers, matched by hand over Unicode scalars
// (alternatives tried in order at each position, with the backtracking a regex engine would do), so no
// regex library is needed. Each is recognised by its exact pattern text in tokenizer.json:
//   gpt2   's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+   (ByteLevel use_regex)
//   qwen2  (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+
//          (Qwen2's Split pre-tokenizer, before a ByteLevel without its own regex)
import Foundation

enum SplitPattern: Sendable {
    case gpt2, qwen2

    static let qwen2Regex = #"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"#
    static let gpt2Regex = #"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"#

    init?(regex: String) {
        switch regex {
        case Self.gpt2Regex: self = .gpt2
        case Self.qwen2Regex: self = .qwen2
        default: return nil
        }
    }

    /// Ranges (in scalar indices) of the pieces the regex cuts `text` into; together they cover it.
    func split(_ text: [Unicode.Scalar]) -> [Range<Int>] {
        var pieces: [Range<Int>] = []
        var i = 0
        while i < text.count {
            let end = Scanner(s: text, i: i).match(self)
            pieces.append(i..<end)
            i = end
        }
        return pieces
    }

    private struct Scanner {
        let s: [Unicode.Scalar]
        let i: Int

        func run(from j: Int, _ pred: (Unicode.Scalar) -> Bool) -> Int {
            var k = j
            while k < s.count && pred(s[k]) { k += 1 }
            return k
        }

        func match(_ pattern: SplitPattern) -> Int {
            switch pattern {
            case .gpt2: gpt2()
            case .qwen2: qwen2()
            }
        }

        /// 's|'t|'re|'ve|'m|'ll|'d, optionally ignoring case.
        func contraction(ignoringCase: Bool) -> Int? {
            guard s[i] == "'", i + 1 < s.count else { return nil }
            func lower(_ c: Unicode.Scalar) -> String { ignoringCase ? String(c).lowercased() : String(c) }
            if ["s", "t", "m", "d"].contains(lower(s[i + 1])) { return i + 2 }
            if i + 2 < s.count, ["re", "ve", "ll"].contains(lower(s[i + 1]) + lower(s[i + 2])) { return i + 3 }
            return nil
        }

        /// \s+(?!\S) then \s+: the whitespace run, less its last character when a non-space follows it.
        func trailingSpace() -> Int? {
            let end = run(from: i, isSpace)
            guard end > i else { return nil }
            return end == s.count || end - 1 == i ? end : end - 1
        }

        func gpt2() -> Int {
            if let end = contraction(ignoringCase: false) { return end }
            let j = s[i] == " " && i + 1 < s.count ? i + 1 : i  //  ?\p{L}+ |  ?\p{N}+ |  ?[^\s\p{L}\p{N}]+
            for pred in [isLetter, isNumber, isOther] where pred(s[j]) { return run(from: j, pred) }
            return trailingSpace() ?? i + 1
        }

        func qwen2() -> Int {
            if let end = contraction(ignoringCase: true) { return end }
            // [^\r\n\p{L}\p{N}]?\p{L}+
            if isLetter(s[i]) { return run(from: i, isLetter) }
            if !isNewline(s[i]) && !isNumber(s[i]) && i + 1 < s.count && isLetter(s[i + 1]) { return run(from: i + 1, isLetter) }
            if isNumber(s[i]) { return i + 1 }  // \p{N}
            //  ?[^\s\p{L}\p{N}]+[\r\n]*
            let j = s[i] == " " && i + 1 < s.count ? i + 1 : i
            if isOther(s[j]) { return run(from: run(from: j, isOther), isNewline) }
            // \s*[\r\n]+: up to the last newline of the whitespace run
            let end = run(from: i, isSpace)
            if let last = s[i..<end].lastIndex(where: isNewline) { return last + 1 }
            return trailingSpace() ?? i + 1
        }
    }
}

func isLetter(_ s: Unicode.Scalar) -> Bool {
    switch s.properties.generalCategory {
    case .uppercaseLetter, .lowercaseLetter, .titlecaseLetter, .modifierLetter, .otherLetter: true
    default: false
    }
}

func isNumber(_ s: Unicode.Scalar) -> Bool {
    switch s.properties.generalCategory {
    case .decimalNumber, .letterNumber, .otherNumber: true
    default: false
    }
}

func isSpace(_ s: Unicode.Scalar) -> Bool { s.properties.isWhitespace }
func isNewline(_ s: Unicode.Scalar) -> Bool { s == "\r" || s == "\n" }
func isOther(_ s: Unicode.Scalar) -> Bool { !isSpace(s) && !isLetter(s) && !isNumber(s) }
