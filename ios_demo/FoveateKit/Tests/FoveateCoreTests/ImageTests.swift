// Image preprocessing against the vectors' `image` section: the 8-bit image exactly, pixels within 1e-5.
import XCTest
@testable import FoveateCore

final class ImageTests: XCTestCase {
    func testEveryImageCase() throws {
        let f = try fixture()
        let section = try XCTUnwrap(f.vectors["image"])
        let cases = try section.list("cases")
        XCTAssertGreaterThanOrEqual(cases.count, 7)
        let tolerance = Float(section["tolerance"]?.double ?? 1e-5)
        for c in cases {
            let name = c["name"]?.string ?? "?"
            let spec = try imageSpec(XCTUnwrap(c["spec"]))
            let pre = try ImagePreprocessor(spec: spec)
            let (w, h) = (try XCTUnwrap(c["width"]?.int), try XCTUnwrap(c["height"]?.int))
            let rgba = try XCTUnwrap(c.tensor("rgba").bytes)
            let rgb8 = try pre.rgb8(rgba: rgba, width: w, height: h)
            let want8 = try XCTUnwrap(c.tensor("rgb8").bytes)
            let wrong = zip(rgb8.pixels, want8).filter { $0 != $1 }.count
            XCTAssertEqual(wrong, 0, "\(name): \(wrong) of \(want8.count) 8-bit values differ from PIL's")
            let pixels = try pre.preprocess(rgba: rgba, width: w, height: h)
            let want = try c.tensor("pixels")
            XCTAssertEqual(pixels.shape, want.shape, name)
            XCTAssertLessThanOrEqual(maxAbsDiff(pixels.floats, want.floats), tolerance, name)
        }
    }

    /// A 1x1 picture works: every output pixel is its colour, composited over the pad colour, normalised.
    func testOneByOneImage() throws {
        let f = try fixture()
        for mode in ["pad", "crop"] {
            var spec = f.manifest.image
            spec.resizeMode = mode
            spec.mean = [0.5, 0.25, 0.125]
            spec.std = [0.5, 2, 0.25]
            spec.padColor = [10, 20, 30]
            let pixels = try ImagePreprocessor(spec: spec).preprocess(rgba: [200, 100, 50, 128], width: 1, height: 1)
            let s = spec.size
            XCTAssertEqual(pixels.shape, [1, 3, s, s])
            let composited = [200, 100, 50].enumerated().map { c, v in (v * 128 + spec.padColor[c] * 127 + 127) / 255 }
            let values = pixels.floats
            for c in 0..<3 {
                let want = (Float(composited[c]) / 255 - Float(spec.mean[c])) / Float(spec.std[c])
                let plane = values[c * s * s..<(c + 1) * s * s]
                XCTAssertTrue(plane.allSatisfy { $0 == want }, "\(mode) channel \(c): want \(want) everywhere")
            }
        }
    }

    func testBadImagesAreRefused() throws {
        let pre = try ImagePreprocessor(spec: ImageSpec(size: 8))
        XCTAssertThrowsError(try pre.preprocess(rgba: [], width: 0, height: 3)) { XCTAssertTrue("\($0)".contains("zero size")) }
        XCTAssertThrowsError(try pre.preprocess(rgba: [1, 2, 3], width: 1, height: 1)) { XCTAssertTrue("\($0)".contains("needs 4 bytes")) }
        XCTAssertThrowsError(try ImagePreprocessor(spec: ImageSpec(size: 8, resample: "nearest"))) {
            XCTAssertTrue("\($0)".contains("unknown resample nearest"))
        }
    }

    private func imageSpec(_ v: JSONValue) throws -> ImageSpec {
        ImageSpec(size: try XCTUnwrap(v["size"]?.int), resizeMode: try XCTUnwrap(v["resize_mode"]?.string),
                  padColor: try XCTUnwrap(v["pad_color"]?.ints), mean: try XCTUnwrap(v["mean"]?.array).compactMap(\.double),
                  std: try XCTUnwrap(v["std"]?.array).compactMap(\.double),
                  channelOrder: try XCTUnwrap(v["channel_order"]?.string), resample: try XCTUnwrap(v["resample"]?.string))
    }
}
