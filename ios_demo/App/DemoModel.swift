// The app's state: the build found in the bundle (or Documents), its Pipeline over the Core ML engine,
// the streamed answer with its figures, and the self-check's per-case results.
import FoveateCore
import FoveateCoreML
import Foundation
import Observation
import UIKit

/// Where a foveate Core ML build is looked for: a folder reference named FoveateBuild in the app bundle
/// (the build directory itself, or a folder holding it), else the app's Documents folder.
enum BuildLocator {
    static let folderName = "FoveateBuild"

    static func locate(in bundles: [Bundle] = [.main]) throws -> URL {
        let fm = FileManager.default
        var roots = bundles.compactMap { $0.url(forResource: folderName, withExtension: nil) }
        roots += fm.urls(for: .documentDirectory, in: .userDomainMask)
        for root in roots {
            if fm.fileExists(atPath: root.appendingPathComponent("manifest.json").path) { return root }
            let children = (try? fm.contentsOfDirectory(at: root, includingPropertiesForKeys: nil)) ?? []
            if let build = children.sorted(by: { $0.path < $1.path })
                .first(where: { fm.fileExists(atPath: $0.appendingPathComponent("manifest.json").path) }) {
                return build
            }
        }
        throw BuildError("no foveate build found: add the directory `python export/build.py --target coreml` wrote "
                         + "as a folder reference named \(folderName) (ios_demo/README.md)")
    }

    /// Manifest, tokenizer and the Core ML engine of the build in `directory`, ready to answer.
    static func pipeline(directory: URL) async throws -> Pipeline {
        let manifest = try Manifest.load(buildDirectory: directory)
        let tokenizer = try Tokenizer(contentsOf: directory.appendingPathComponent(manifest.tokenizer),
                                      prompt: manifest.prompt)
        let runner = try await CoreMLRunner.load(buildDirectory: directory, manifest: manifest)
        return try Pipeline(manifest: manifest, tokenizer: tokenizer, engine: GraphEngine(manifest: manifest, runner: runner))
    }
}

@MainActor @Observable
final class DemoModel {
    static let refreshEvery = 4  // UI updates every few deltas, not every token: a redraw per token costs ~15% of decode

    var status = "Loading the build…"
    var buildName = ""
    var planName = ""
    var visionTokens = 0
    var question = "What is in the image?"
    var answer = ""
    var timings: Timings?
    var newTokens = 0
    var isBusy = true
    var image: RGBAImage?
    var preview: UIImage?
    var checkLines: [String] = []
    var checkPassed: Bool?
    var samples: [GoldenCase] = []  // golden.json's pictures and questions, for a first try

    private var pipeline: Pipeline?
    private var buildDirectory: URL?

    func load() async {
        do {
            let dir = try BuildLocator.locate()
            let pipe = try await BuildLocator.pipeline(directory: dir)
            (pipeline, buildDirectory) = (pipe, dir)
            buildName = pipe.manifest.name
            planName = pipe.manifest.plan.name
            visionTokens = pipe.manifest.kv.visionTokens
            samples = (try? GoldenFile.load(buildDirectory: dir, manifest: pipe.manifest).cases) ?? []
            status = "Ready: \(pipe.manifest.kv.layout) KV layout, \(pipe.manifest.kv.textRows) text rows"
        } catch {
            status = "Could not load the build: \(error.localizedDescription)"
        }
        isBusy = false
    }

    func setPhoto(_ data: Data) {
        do {
            image = try RGBAImage(imageData: data)
            preview = UIImage(data: data)
        } catch {
            status = error.localizedDescription
        }
    }

    /// A golden case's picture and question (the default model knows the generated shapes, not photos).
    func useSample(_ sample: GoldenCase) {
        guard let dir = buildDirectory else { return }
        let url = dir.appendingPathComponent(sample.image)
        do {
            image = try RGBAImage(contentsOf: url)
            preview = UIImage(contentsOfFile: url.path)
            question = sample.prompt
        } catch {
            status = error.localizedDescription
        }
    }

    func ask() async {
        guard let pipeline, !isBusy else { return }
        (isBusy, answer, timings, newTokens) = (true, "", nil, 0)
        defer { isBusy = false }
        var pending = "", deltas = 0
        let done: @Sendable (Answer) -> Void = { answer in Task { @MainActor in self.finish(answer) } }
        do {
            for try await delta in pipeline.stream(image: image, prompt: question, maxNewTokens: 128, onDone: done) {
                pending += delta
                deltas += 1
                if deltas % Self.refreshEvery == 0 {
                    answer += pending
                    pending = ""
                }
            }
            answer += pending
        } catch {
            answer += pending
            status = "Error: \(error.localizedDescription)"
        }
    }

    private func finish(_ result: Answer) {
        timings = result.timings
        newTokens = result.ids.count
        visionTokens = result.visionTokens
    }

    /// golden.json through the same pipeline: one line per case.
    func selfCheck() async {
        guard let pipeline, let dir = buildDirectory, !isBusy else { return }
        (isBusy, checkLines, checkPassed) = (true, ["Running golden.json…"], nil)
        defer { isBusy = false }
        do {
            let results = try await Task.detached {
                let golden = try GoldenFile.load(buildDirectory: dir, manifest: pipeline.manifest)
                return try GoldenReplay.run(pipeline: pipeline, golden: golden) {
                    try RGBAImage(contentsOf: dir.appendingPathComponent($0))
                }
            }.value
            checkLines = GoldenReplay.report(results).split(separator: "\n").map(String.init)
            checkPassed = results.allSatisfy(\.matched)
        } catch {
            checkLines = ["Self-check failed: \(error.localizedDescription)"]
            checkPassed = false
        }
    }
}
