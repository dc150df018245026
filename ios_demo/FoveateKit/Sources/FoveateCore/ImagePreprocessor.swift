// Image preprocessing from raw RGBA8 pixels (runtime/image.py `preprocess`): alpha composited over the pad
// colour, pad to a centred square (LLaVA's expand2square) or resize the short side and centre-crop
// (CLIPImageProcessor), PIL's resampling (Resample.swift), then /255, (x - mean) / std, CHW, BGR if asked.
import Foundation

/// The manifest's image section.
public struct ImageSpec: Codable, Sendable, Equatable {
    public var size: Int
    public var resizeMode: String  // pad | crop
    public var padColor: [Int]
    public var mean: [Double]
    public var std: [Double]
    public var channelOrder: String  // RGB | BGR
    public var resample: String

    enum CodingKeys: String, CodingKey {
        case size, resizeMode = "resize_mode", padColor = "pad_color", mean, std, channelOrder = "channel_order", resample
    }

    public init(size: Int, resizeMode: String = "crop", padColor: [Int] = [0, 0, 0], mean: [Double] = [0, 0, 0],
                std: [Double] = [1, 1, 1], channelOrder: String = "RGB", resample: String = "bicubic") {
        (self.size, self.resizeMode, self.padColor, self.mean) = (size, resizeMode, padColor, mean)
        (self.std, self.channelOrder, self.resample) = (std, channelOrder, resample)
    }

    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        self.init(size: try c.decode(Int.self, forKey: .size),
                  resizeMode: try c.decodeIfPresent(String.self, forKey: .resizeMode) ?? "crop",
                  padColor: try c.decodeIfPresent([Int].self, forKey: .padColor) ?? [0, 0, 0],
                  mean: try c.decodeIfPresent([Double].self, forKey: .mean) ?? [0, 0, 0],
                  std: try c.decodeIfPresent([Double].self, forKey: .std) ?? [1, 1, 1],
                  channelOrder: try c.decodeIfPresent(String.self, forKey: .channelOrder) ?? "RGB",
                  resample: try c.decodeIfPresent(String.self, forKey: .resample) ?? "bicubic")
    }
}

public struct ImagePreprocessor: Sendable {
    public let spec: ImageSpec
    let filter: ResampleFilter

    public init(spec: ImageSpec) throws {
        guard spec.size > 0, ["pad", "crop"].contains(spec.resizeMode), ["RGB", "BGR"].contains(spec.channelOrder) else {
            throw ImageError("image spec: need size > 0, resize_mode pad|crop, channel_order RGB|BGR; got size=\(spec.size), "
                             + "resize_mode=\(spec.resizeMode), channel_order=\(spec.channelOrder)")
        }
        guard spec.padColor.count == 3, spec.mean.count == 3, spec.std.count == 3, !spec.std.contains(0) else {
            throw ImageError("image spec: pad_color, mean and std need 3 values each, std non-zero")
        }
        guard let filter = ResampleFilter(rawValue: spec.resample) else {
            throw ImageError("image spec: unknown resample \(spec.resample); valid: "
                             + ResampleFilter.allCases.map(\.rawValue).joined(separator: ", "))
        }
        self.spec = spec
        self.filter = filter
    }

    /// RGBA8 pixels (straight alpha, row-major, `width * height * 4` bytes) -> pixels (1, 3, S, S) float32.
    public func preprocess(rgba: [UInt8], width: Int, height: Int) throws -> Tensor {
        normalize(try rgb8(rgba: rgba, width: width, height: height))
    }

    /// The 8-bit S x S RGB image just before normalisation (after compositing, padding or cropping, resizing).
    public func rgb8(rgba: [UInt8], width: Int, height: Int) throws -> RGBImage {
        guard width > 0, height > 0 else { throw ImageError("image has zero size (\(width)x\(height))") }
        guard rgba.count == width * height * 4 else {
            throw ImageError("RGBA image \(width)x\(height) needs \(width * height * 4) bytes, got \(rgba.count)")
        }
        let rgb = composite(rgba, width: width, height: height)
        let s = spec.size
        if spec.resizeMode == "pad" {
            return Resampler.resize(expandToSquare(rgb), width: s, height: s, filter: filter)
        }
        let short = min(width, height), long = max(width, height)
        let newLong = max(s, Int(Double(s * long) / Double(short)))  // CLIPImageProcessor's truncation
        let (w, h) = width <= height ? (s, newLong) : (newLong, s)
        let resized = Resampler.resize(rgb, width: w, height: h, filter: filter)
        return crop(resized, left: (w - s) / 2, top: (h - s) / 2, size: s)
    }

    /// out = round((src * a + pad * (255 - a)) / 255) per channel, in integers (never a tie: 255 is odd).
    func composite(_ rgba: [UInt8], width: Int, height: Int) -> RGBImage {
        var px = [UInt8](repeating: 0, count: width * height * 3)
        for i in 0..<width * height {
            let a = Int(rgba[i * 4 + 3])
            for c in 0..<3 {
                px[i * 3 + c] = UInt8((Int(rgba[i * 4 + c]) * a + spec.padColor[c] * (255 - a) + 127) / 255)
            }
        }
        return RGBImage(width: width, height: height, pixels: px)
    }

    func expandToSquare(_ im: RGBImage) -> RGBImage {
        guard im.width != im.height else { return im }
        let side = max(im.width, im.height)
        var out = RGBImage(width: side, height: side, fill: spec.padColor.map { UInt8(clamping: $0) })
        let (x0, y0) = ((side - im.width) / 2, (side - im.height) / 2)
        for y in 0..<im.height {
            let src = y * im.width * 3, dst = ((y + y0) * side + x0) * 3
            out.pixels.replaceSubrange(dst..<dst + im.width * 3, with: im.pixels[src..<src + im.width * 3])
        }
        return out
    }

    func crop(_ im: RGBImage, left: Int, top: Int, size: Int) -> RGBImage {
        var px: [UInt8] = []
        px.reserveCapacity(size * size * 3)
        for y in top..<top + size {
            let row = (y * im.width + left) * 3
            px += im.pixels[row..<row + size * 3]
        }
        return RGBImage(width: size, height: size, pixels: px)
    }

    /// x / 255, (x - mean) / std in float32, HWC -> CHW, BGR last if asked.
    func normalize(_ im: RGBImage) -> Tensor {
        let s = spec.size, plane = s * s
        let mean = spec.mean.map(Float.init), std = spec.std.map(Float.init)
        var out = [Float](repeating: 0, count: 3 * plane)
        for c in 0..<3 {
            let src = spec.channelOrder == "BGR" ? 2 - c : c
            for i in 0..<plane {
                let x = Float(im.pixels[i * 3 + src]) / 255
                out[c * plane + i] = (x - mean[src]) / std[src]
            }
        }
        return Tensor(shape: [1, 3, s, s], floats: out)
    }
}
