// GPT-2's byte-level pieces: the byte <-> printable-character map, and its pre-tokenizer regex
//   's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
// matched by hand over Unicode scalars (alternatives tried in order at each position, as a backtracking
// regex engine does), so no regex library is needed.
import Foundation

enum ByteLevel {
    /// Byte b -> the character GPT-2 shows it as: printable Latin-1 stays, the rest moves to U+0100...
    static let byteToScalar: [Unicode.Scalar] = {
        var printable = Set<Int>()
        for r in [0x21...0x7e, 0xa1...0xac, 0xae...0xff] { printable.formUnion(r) }
        var next = 256
        return (0..<256).map { b in
            if printable.contains(b) { return Unicode.Scalar(UInt32(b))! }
            defer { next += 1 }
            return Unicode.Scalar(UInt32(next))!
        }
    }()

    static let scalarToByte: [Unicode.Scalar: UInt8] = {
        Dictionary(uniqueKeysWithValues: byteToScalar.enumerated().map { ($1, UInt8($0)) })
    }()

    static func encode(_ text: String) -> String {
        var out = String.UnicodeScalarView()
        for b in text.utf8 { out.append(byteToScalar[Int(b)]) }
        return String(out)
    }

    /// The token's bytes when every character is a byte-level one; nil otherwise.
    static func bytes(of token: String) -> [UInt8]? {
        var out: [UInt8] = []
        for s in token.unicodeScalars {
            guard let b = scalarToByte[s] else { return nil }
            out.append(b)
        }
        return out
    }

    // MARK: the GPT-2 split

    static func isLetter(_ s: Unicode.Scalar) -> Bool {
        switch s.properties.generalCategory {
        case .uppercaseLetter, .lowercaseLetter, .titlecaseLetter, .modifierLetter, .otherLetter: true
        default: false
        }
    }

    static func isNumber(_ s: Unicode.Scalar) -> Bool {
        switch s.properties.generalCategory {
        case .decimalNumber, .letterNumber, .otherNumber: true
        default: false
        }
    }

    static func isSpace(_ s: Unicode.Scalar) -> Bool { s.properties.isWhitespace }

    static func isOther(_ s: Unicode.Scalar) -> Bool { !isSpace(s) && !isLetter(s) && !isNumber(s) }

    /// Ranges (in scalar indices) of the pieces the regex cuts `text` into; together they cover it.
    static func split(_ text: [Unicode.Scalar]) -> [Range<Int>] {
        var pieces: [Range<Int>] = []
        var i = 0
        while i < text.count {
            let end = match(text, at: i)
            pieces.append(i..<end)
            i = end
        }
        return pieces
    }

    private static func match(_ s: [Unicode.Scalar], at i: Int) -> Int {
        let n = s.count
        func run(from j: Int, _ pred: (Unicode.Scalar) -> Bool) -> Int {
            var k = j
            while k < n && pred(s[k]) { k += 1 }
            return k
        }
        // 's|'t|'re|'ve|'m|'ll|'d
        if s[i] == "'" && i + 1 < n {
            if "stmd".unicodeScalars.contains(s[i + 1]) { return i + 2 }
            if i + 2 < n, ["re", "ve", "ll"].contains(String(String.UnicodeScalarView(s[i + 1...i + 2]))) { return i + 3 }
        }
        //  ?\p{L}+ |  ?\p{N}+ |  ?[^\s\p{L}\p{N}]+
        let j = s[i] == " " && i + 1 < n ? i + 1 : i
        for pred in [isLetter, isNumber, isOther] {
            if pred(s[j]) { return run(from: j, pred) }
        }
        // \s+(?!\S): the whitespace run, less its last character when a non-space follows it
        let end = run(from: i, isSpace)
        if end > i {
            if end == n { return end }
            if end - 1 > i { return end - 1 }
            return end  // \s+ (a single space before a non-space)
        }
        return i + 1  // unreachable: every scalar is a letter, number, space or other
    }
}
