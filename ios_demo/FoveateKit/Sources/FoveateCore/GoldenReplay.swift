// The self-check: golden.json's cases (the PyTorch model's greedy ids for a few pictures and questions)
// run through a Pipeline, with the token match reported per case.
import Foundation

public struct GoldenCase: Decodable, Sendable {
    public let image: String  // path inside the build
    public let prompt: String
    public let ids: [Int]
    public let text: String?
    public let maxNewTokens: Int?

    enum CodingKeys: String, CodingKey { case image, prompt, ids, text, maxNewTokens = "max_new_tokens" }
}

public struct GoldenFile: Decodable, Sendable {
    public let maxNewTokens: Int
    public let cases: [GoldenCase]

    enum CodingKeys: String, CodingKey { case maxNewTokens = "max_new_tokens", cases }

    public static func load(buildDirectory: URL, manifest: Manifest) throws -> GoldenFile {
        let url = buildDirectory.appendingPathComponent(manifest.golden ?? "golden.json")
        guard let data = FileManager.default.contents(atPath: url.path) else {
            throw BuildError("\(url.path): golden file not found")
        }
        do {
            return try JSONDecoder().decode(GoldenFile.self, from: data)
        } catch {
            throw BuildError("\(url.path) is malformed: \(error)")
        }
    }
}

public struct GoldenResult: Sendable {
    public let prompt: String
    public let image: String
    public let expected: [Int]
    public let generated: [Int]
    public let text: String
    public let timings: Timings

    public var matched: Bool { expected == generated }
    /// Leading ids that agree.
    public var matchingPrefix: Int { zip(expected, generated).prefix { $0 == $1 }.count }
}

public enum GoldenReplay {
    /// Every case, greedily; `loadImage` decodes a picture of the build (the app: CoreGraphics).
    public static func run(pipeline: Pipeline, golden: GoldenFile,
                           loadImage: (String) throws -> RGBAImage) throws -> [GoldenResult] {
        try golden.cases.map { c in
            let answer = try pipeline.generate(image: loadImage(c.image), prompt: c.prompt,
                                               maxNewTokens: c.maxNewTokens ?? golden.maxNewTokens)
            return GoldenResult(prompt: c.prompt, image: c.image, expected: c.ids, generated: answer.ids,
                                text: answer.text, timings: answer.timings)
        }
    }

    /// One line per case, as the self-check screen shows them.
    public static func report(_ results: [GoldenResult]) -> String {
        results.enumerated().map { i, r in
            "case \(i) \(r.matched ? "match" : "MISMATCH") (\(r.matchingPrefix)/\(r.expected.count) ids): \(r.prompt)"
        }.joined(separator: "\n")
    }
}
