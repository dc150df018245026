// PIL's `Image.resize` for 8-bit RGB, reproduced exactly (Pillow's libImaging/Resample.c): a separable
// convolution, horizontal pass then vertical, each rounding to 8 bits; the filter is widened by the scale
// when shrinking (antialiasing); coefficients normalised to sum 1, then fixed point with 22 fractional bits.
import Foundation

/// An 8-bit RGB image, row-major, 3 bytes per pixel.
public struct RGBImage: Equatable, Sendable {
    public let width: Int
    public let height: Int
    public var pixels: [UInt8]

    public init(width: Int, height: Int, pixels: [UInt8]) {
        precondition(pixels.count == width * height * 3, "RGB image \(width)x\(height) needs \(width * height * 3) bytes")
        (self.width, self.height, self.pixels) = (width, height, pixels)
    }

    public init(width: Int, height: Int, fill: [UInt8]) {
        self.init(width: width, height: height,
                  pixels: [UInt8]((0..<width * height).lazy.flatMap { _ in fill }))
    }
}

public enum ResampleFilter: String, Sendable, CaseIterable {
    case bilinear, bicubic, lanczos

    var support: Double {
        switch self {
        case .bilinear: 1
        case .bicubic: 2
        case .lanczos: 3
        }
    }

    func weight(_ t: Double) -> Double {
        switch self {
        case .bilinear:
            let x = abs(t)
            return x < 1 ? 1 - x : 0
        case .bicubic:  // Keys' cubic convolution, a = -0.5
            let a = -0.5, x = abs(t)
            if x < 1 { return ((a + 2) * x - (a + 3)) * x * x + 1 }
            if x < 2 { return (((x - 5) * x + 8) * x - 4) * a }
            return 0
        case .lanczos:
            return -3 <= t && t < 3 ? Self.sinc(t) * Self.sinc(t / 3) : 0
        }
    }

    private static func sinc(_ t: Double) -> Double {
        if t == 0 { return 1 }
        let x = t * Double.pi
        return sin(x) / x
    }
}

enum Resampler {
    static let precisionBits = 32 - 8 - 2

    /// Per output index: the first input index, and the fixed-point weights of the inputs from there.
    struct Coefficients {
        var start: [Int] = []
        var weights: [[Int]] = []
    }

    static func coefficients(inSize: Int, outSize: Int, filter: ResampleFilter) -> Coefficients {
        let scale = Double(inSize) / Double(outSize)
        let filterScale = max(scale, 1.0)
        let support = filter.support * filterScale
        let ss = 1.0 / filterScale  // Pillow multiplies by the reciprocal (not a division: rounding differs)
        var out = Coefficients()
        for xx in 0..<outSize {
            let center = (Double(xx) + 0.5) * scale
            let xmin = max(Int(center - support + 0.5), 0)  // C's (int): truncation toward zero
            let xmax = min(Int(center + support + 0.5), inSize)
            var k = (xmin..<max(xmax, xmin)).map { filter.weight((Double($0) - center + 0.5) * ss) }
            let total = k.reduce(0, +)
            if total != 0 { k = k.map { $0 / total } }
            let one = Double(1 << precisionBits)
            out.start.append(xmin)
            out.weights.append(k.map { $0 < 0 ? Int(-0.5 + $0 * one) : Int(0.5 + $0 * one) })
        }
        return out
    }

    static func clip8(_ acc: Int) -> UInt8 {
        UInt8(clamping: acc >> precisionBits)  // arithmetic shift: floor, then clamp to 0...255
    }

    static func resize(_ im: RGBImage, width: Int, height: Int, filter: ResampleFilter) -> RGBImage {
        var out = im
        if width != im.width {
            out = horizontal(out, width: width, filter: filter)
        }
        if height != im.height {
            out = vertical(out, height: height, filter: filter)
        }
        return out
    }

    private static func horizontal(_ im: RGBImage, width: Int, filter: ResampleFilter) -> RGBImage {
        let c = coefficients(inSize: im.width, outSize: width, filter: filter)
        var px = [UInt8](repeating: 0, count: width * im.height * 3)
        let half = 1 << (precisionBits - 1)
        for y in 0..<im.height {
            let row = y * im.width * 3
            for xx in 0..<width {
                let k = c.weights[xx], x0 = c.start[xx]
                for ch in 0..<3 {
                    var acc = half
                    for i in k.indices { acc += Int(im.pixels[row + (x0 + i) * 3 + ch]) * k[i] }
                    px[(y * width + xx) * 3 + ch] = clip8(acc)
                }
            }
        }
        return RGBImage(width: width, height: im.height, pixels: px)
    }

    private static func vertical(_ im: RGBImage, height: Int, filter: ResampleFilter) -> RGBImage {
        let c = coefficients(inSize: im.height, outSize: height, filter: filter)
        var px = [UInt8](repeating: 0, count: im.width * height * 3)
        let half = 1 << (precisionBits - 1)
        for yy in 0..<height {
            let k = c.weights[yy], y0 = c.start[yy]
            for x in 0..<im.width {
                for ch in 0..<3 {
                    var acc = half
                    for i in k.indices { acc += Int(im.pixels[((y0 + i) * im.width + x) * 3 + ch]) * k[i] }
                    px[(yy * im.width + x) * 3 + ch] = clip8(acc)
                }
            }
        }
        return RGBImage(width: im.width, height: height, pixels: px)
    }
}
