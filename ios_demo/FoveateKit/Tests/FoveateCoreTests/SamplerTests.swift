// SplitMix64 and seeded nucleus sampling against the vectors' `sampler` section: exact picks and draws.
import XCTest
@testable import FoveateCore

final class SamplerTests: XCTestCase {
    func testSplitMix64() throws {
        let f = try fixture()
        let cases = try XCTUnwrap(f.vectors["sampler"]).list("splitmix64")
        XCTAssertFalse(cases.isEmpty)
        for c in cases {
            var rng = SplitMix64(seed: try XCTUnwrap(c["seed"]?.int))
            let u64 = (0..<5).map { _ in String(rng.nextU64()) }
            XCTAssertEqual(u64, c["u64"]?.strings)
            let doubles = (0..<5).map { _ in rng.nextDouble() }
            XCTAssertEqual(doubles, c["next_doubles"]?.array?.compactMap(\.double))
        }
        var zero = SplitMix64(seed: 0)
        XCTAssertEqual(zero.nextU64(), 0xe220_a839_7b1d_cdaf)
    }

    func testEverySamplerCase() throws {
        let f = try fixture()
        let cases = try XCTUnwrap(f.vectors["sampler"]).list("cases")
        XCTAssertGreaterThanOrEqual(cases.count, 15)
        for c in cases {
            let logits = try c.tensor("logits").floats
            let temperature = try XCTUnwrap(c["temperature"]?.double), topP = try XCTUnwrap(c["top_p"]?.double)
            let seed = try XCTUnwrap(c["seed"]?.int)
            let label = "\(c["logits_name"]?.string ?? "?") T=\(temperature) top_p=\(topP) seed=\(seed)"
            let sampler = Sampler(temperature: temperature, topP: topP, seed: seed)
            XCTAssertEqual((0..<20).map { _ in sampler.pick(logits) }, c["picks"]?.ints, label)
            var replay = SplitMix64(seed: seed)
            let uniforms = try XCTUnwrap(c["uniforms"]?.array).compactMap(\.double)
            XCTAssertEqual(uniforms.map { _ in replay.nextDouble() }, uniforms, label)
            XCTAssertEqual(sampler.rng.state, temperature > 0 ? replay.state : SplitMix64(seed: seed).state,
                           "\(label): one draw per sampled token, none when greedy")
        }
    }

    func testGreedyTakesTheLowestIdOnTies() {
        XCTAssertEqual(Sampler.greedy([1, 3, 3, 2]), 1)
        XCTAssertEqual(Sampler().pick([0, -1, 0]), 0)
    }
}
