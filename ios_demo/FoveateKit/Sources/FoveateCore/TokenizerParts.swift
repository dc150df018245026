// The stages of a tokenizer.json around its BPE model, as Hugging Face `tokenizers` runs them:
// normalizer -> pre-tokenizer -> model -> post-processor, and decoder on the way back. The kinds here
// are the ones byte-level (GPT-2, Qwen2 without its Split) and SentencePiece-derived (LLaMA, MobileVLM)
// files use; any other kind is refused by name when the file is read.
import Foundation

enum Normalizer {
    case sequence([Normalizer])
    case prepend(String)
    case replace(String, String)
    case nfc, nfd, nfkc, nfkd, lowercase

    static func from(_ json: JSONValue?) throws -> Normalizer? {
        guard let json, !json.isNull else { return nil }
        switch json["type"]?.string {
        case "Sequence": return .sequence(try (json["normalizers"]?.array ?? []).compactMap(from))
        case "Prepend": return .prepend(json["prepend"]?.string ?? "")
        case "Replace": return .replace(try stringPattern(json, "normalizer"), json["content"]?.string ?? "")
        case "NFC": return .nfc
        case "NFD": return .nfd
        case "NFKC": return .nfkc
        case "NFKD": return .nfkd
        case "Lowercase": return .lowercase
        case let other: throw TokenizerError("normalizer \(other ?? "?") is not supported")
        }
    }

    func apply(_ s: String) -> String {
        switch self {
        case .sequence(let all): return all.reduce(s) { $1.apply($0) }
        case .prepend(let p): return s.isEmpty ? s : p + s
        case .replace(let pattern, let content): return replaceScalars(s, pattern, content)
        case .nfc: return s.precomposedStringWithCanonicalMapping
        case .nfd: return s.decomposedStringWithCanonicalMapping
        case .nfkc: return s.precomposedStringWithCompatibilityMapping
        case .nfkd: return s.decomposedStringWithCompatibilityMapping
        case .lowercase: return s.lowercased()
        }
    }
}

/// A Replace's pattern: a plain string ({"String": ...}); a regex pattern is refused.
func stringPattern(_ json: JSONValue, _ kind: String) throws -> String {
    if let s = json["pattern"]?["String"]?.string { return s }
    throw TokenizerError("\(kind) Replace with a regex pattern is not supported")
}

/// Replace every occurrence of `pattern`, compared scalar by scalar (Swift's String comparison would
/// treat canonically equivalent text as equal, the Rust library does not).
func replaceScalars(_ s: String, _ pattern: String, _ content: String) -> String {
    let p = Array(pattern.unicodeScalars), src = Array(s.unicodeScalars)
    guard !p.isEmpty else { return s }
    var out = String.UnicodeScalarView()
    var i = 0
    while i < src.count {
        if i + p.count <= src.count && Array(src[i..<i + p.count]) == p {
            out.append(contentsOf: content.unicodeScalars)
            i += p.count
        } else {
            out.append(src[i])
            i += 1
        }
    }
    return String(out)
}

enum PreTokenizer {
    case sequence([PreTokenizer])
    case byteLevel(addPrefixSpace: Bool, useRegex: Bool)
    case split(SplitPattern)  // a known regex, its matches isolated (Qwen2)
    case metaspace(replacement: String, prepend: String, split: Bool)  // prepend: always | first | never

    static func from(_ json: JSONValue?) throws -> PreTokenizer? {
        guard let json, !json.isNull else { return nil }
        switch json["type"]?.string {
        case "Sequence": return .sequence(try (json["pretokenizers"]?.array ?? []).compactMap(from))
        case "ByteLevel":
            return .byteLevel(addPrefixSpace: json["add_prefix_space"]?.bool ?? true, useRegex: json["use_regex"]?.bool ?? true)
        case "Split":
            let regex = json["pattern"]?["Regex"]?.string ?? ""
            guard let pattern = SplitPattern(regex: regex), json["behavior"]?.string == "Isolated",
                  json["invert"]?.bool != true else {
                throw TokenizerError("Split pre-tokenizer \(regex) (\(json["behavior"]?.string ?? "?")) is not supported; "
                                     + "this port knows GPT-2's and Qwen2's patterns, isolated")
            }
            return .split(pattern)
        case "Metaspace":
            let scheme = json["prepend_scheme"]?.string ?? ((json["add_prefix_space"]?.bool ?? true) ? "always" : "never")
            return .metaspace(replacement: json["replacement"]?.string ?? "\u{2581}", prepend: scheme,
                              split: json["split"]?.bool ?? true)
        case let other: throw TokenizerError("pre-tokenizer \(other ?? "?") is not supported")
        }
    }

    /// Words of a piece; `first`: the piece starts the text (Metaspace's "first" scheme).
    func apply(_ words: [String], first: Bool) -> [String] {
        switch self {
        case .sequence(let all):
            return all.reduce(words) { $1.apply($0, first: first) }
        case .byteLevel(let addPrefixSpace, let useRegex):
            return words.flatMap { w -> [String] in
                let word = addPrefixSpace && !w.hasPrefix(" ") ? " " + w : w
                let scalars = Array(word.unicodeScalars)
                let ranges = useRegex ? SplitPattern.gpt2.split(scalars) : [0..<scalars.count]
                return ranges.map { ByteLevel.encode(String(String.UnicodeScalarView(scalars[$0]))) }
            }
        case .split(let pattern):
            return words.flatMap { w -> [String] in
                let scalars = Array(w.unicodeScalars)
                return pattern.split(scalars).map { String(String.UnicodeScalarView(scalars[$0])) }
            }
        case .metaspace(let replacement, let prepend, let split):
            return words.enumerated().flatMap { i, w -> [String] in
                var s = replaceScalars(w, " ", replacement)
                let add = prepend == "always" || (prepend == "first" && first && i == 0)
                if add && !s.unicodeScalars.starts(with: replacement.unicodeScalars) { s = replacement + s }
                return split ? Self.splitBefore(s, replacement) : [s]
            }
        }
    }

    /// "a▁▁b" -> ["a", "▁", "▁b"]: each delimiter starts a new word (MergedWithNext).
    private static func splitBefore(_ s: String, _ delimiter: String) -> [String] {
        guard let d = delimiter.unicodeScalars.first else { return [s] }
        var words: [String] = []
        var current = String.UnicodeScalarView()
        for c in s.unicodeScalars {
            if c == d && !current.isEmpty {
                words.append(String(current))
                current = String.UnicodeScalarView()
            }
            current.append(c)
        }
        if !current.isEmpty { words.append(String(current)) }
        return words
    }
}

enum TokenDecoder {
    case sequence([TokenDecoder])
    case byteLevel
    case byteFallback
    case fuse
    case strip(content: String, start: Int, stop: Int)
    case replace(String, String)
    case metaspace(replacement: String, stripFirst: Bool)

    static func from(_ json: JSONValue?) throws -> TokenDecoder? {
        guard let json, !json.isNull else { return nil }
        switch json["type"]?.string {
        case "Sequence": return .sequence(try (json["decoders"]?.array ?? []).compactMap(from))
        case "ByteLevel": return .byteLevel
        case "ByteFallback": return .byteFallback
        case "Fuse": return .fuse
        case "Strip":
            return .strip(content: json["content"]?.string ?? " ", start: json["start"]?.int ?? 0, stop: json["stop"]?.int ?? 0)
        case "Replace": return .replace(try stringPattern(json, "decoder"), json["content"]?.string ?? "")
        case "Metaspace":
            let scheme = json["prepend_scheme"]?.string ?? ((json["add_prefix_space"]?.bool ?? true) ? "always" : "never")
            return .metaspace(replacement: json["replacement"]?.string ?? "\u{2581}", stripFirst: scheme != "never")
        case let other: throw TokenizerError("decoder \(other ?? "?") is not supported")
        }
    }

    /// One stage of the decode chain: tokens in, tokens out.
    func apply(_ tokens: [String]) -> [String] {
        switch self {
        case .sequence(let all):
            return all.reduce(tokens) { $1.apply($0) }
        case .byteLevel:  // every token's bytes, then one lossy UTF-8 decode
            let bytes = tokens.flatMap { ByteLevel.bytes(of: $0) ?? Array($0.utf8) }
            return [String(decoding: bytes, as: UTF8.self)]
        case .byteFallback:
            return Self.byteFallback(tokens)
        case .fuse:
            return [tokens.joined()]
        case .strip(let content, let start, let stop):
            return tokens.map { Self.strip($0, content, start, stop) }
        case .replace(let pattern, let content):
            return tokens.map { replaceScalars($0, pattern, content) }
        case .metaspace(let replacement, let stripFirst):  // the first token loses every replacement character
            return tokens.enumerated().map { i, t in replaceScalars(t, replacement, i == 0 && stripFirst ? "" : " ") }
        }
    }

    /// Runs of `<0xNN>` tokens become their UTF-8 text, or one U+FFFD per byte when not valid UTF-8.
    private static func byteFallback(_ tokens: [String]) -> [String] {
        var out: [String] = []
        var pending: [UInt8] = []
        func flush() {
            guard !pending.isEmpty else { return }
            if let s = String(validating: pending, as: UTF8.self) {
                out.append(s)
            } else {
                out += Array(repeating: "\u{FFFD}", count: pending.count)
            }
            pending = []
        }
        for t in tokens {
            if t.count == 6, t.hasPrefix("<0x"), t.hasSuffix(">"), let b = UInt8(t.dropFirst(3).prefix(2), radix: 16) {
                pending.append(b)
            } else {
                flush()
                out.append(t)
            }
        }
        flush()
        return out
    }

    private static func strip(_ t: String, _ content: String, _ start: Int, _ stop: Int) -> String {
        var s = Array(t.unicodeScalars)
        let c = content.unicodeScalars.first
        var n = 0
        while n < start, let first = s.first, first == c { s.removeFirst(); n += 1 }
        n = 0
        while n < stop, let last = s.last, last == c { s.removeLast(); n += 1 }
        return String(String.UnicodeScalarView(s))
    }
}

/// What `add_special_tokens` adds around a single sequence.
enum PostProcessor {
    case none
    case template(before: [Int], after: [Int])

    static func from(_ json: JSONValue?, tokenId: (String) -> Int?) throws -> PostProcessor {
        guard let json, !json.isNull else { return .none }
        switch json["type"]?.string {
        case "ByteLevel": return .none  // offsets only
        case "Sequence":
            let parts = try (json["processors"]?.array ?? []).map { try from($0, tokenId: tokenId) }
            return parts.reduce(.none) { acc, p in
                switch (acc, p) {
                case (.none, _): p
                case (_, .none): acc
                case let (.template(b1, a1), .template(b2, a2)): .template(before: b2 + b1, after: a1 + a2)
                }
            }
        case "TemplateProcessing":
            return try template(json, tokenId: tokenId)
        case "RobertaProcessing", "BertProcessing":
            guard let cls = json["cls"]?.array?.last?.int, let sep = json["sep"]?.array?.last?.int else {
                throw TokenizerError("post-processor without cls/sep ids")
            }
            return .template(before: [cls], after: [sep])
        case let other: throw TokenizerError("post-processor \(other ?? "?") is not supported")
        }
    }

    private static func template(_ json: JSONValue, tokenId: (String) -> Int?) throws -> PostProcessor {
        var before: [Int] = [], after: [Int] = [], seenSequence = false
        for piece in json["single"]?.array ?? [] {
            if piece["Sequence"] != nil {
                seenSequence = true
            } else if let name = piece["SpecialToken"]?["id"]?.string {
                let ids = json["special_tokens"]?[name]?["ids"]?.ints ?? tokenId(name).map { [$0] }
                guard let ids else { throw TokenizerError("post-processor special token \(name) has no id") }
                if seenSequence { after += ids } else { before += ids }
            }
        }
        return .template(before: before, after: after)
    }

    func apply(_ ids: [Int]) -> [Int] {
        switch self {
        case .none: ids
        case .template(let before, let after): before + ids + after
        }
    }
}
