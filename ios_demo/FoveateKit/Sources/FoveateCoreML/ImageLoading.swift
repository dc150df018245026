// Pictures to RGBA8 for the preprocessor, through ImageIO and CoreGraphics (Apple platforms only):
// the EXIF orientation applied as a gallery shows the photo, straight (not premultiplied) alpha, and no
// colour conversion (the image's own RGB space is kept, as PIL keeps the stored values).
#if canImport(CoreGraphics) && canImport(ImageIO)
import CoreGraphics
import Foundation
import FoveateCore
import ImageIO

extension RGBAImage {
    /// Image file bytes (PNG, JPEG, HEIC, ...).
    public init(imageData data: Data) throws {
        guard let source = CGImageSourceCreateWithData(data as CFData, nil) else {
            throw ImageError("image bytes: not an image (unrecognised format)")
        }
        try self.init(source: source, name: "image bytes")
    }

    public init(contentsOf url: URL) throws {
        guard let source = CGImageSourceCreateWithURL(url as CFURL, nil) else {
            throw ImageError("\(url.path): no such file or not an image")
        }
        try self.init(source: source, name: url.path)
    }

    init(source: CGImageSource, name: String) throws {
        guard let props = CGImageSourceCopyPropertiesAtIndex(source, 0, nil) as? [CFString: Any],
              let w = props[kCGImagePropertyPixelWidth] as? Int, let h = props[kCGImagePropertyPixelHeight] as? Int,
              w > 0, h > 0
        else { throw ImageError("\(name): corrupt or truncated image") }
        let options: [CFString: Any] = [
            kCGImageSourceCreateThumbnailFromImageAlways: true,
            kCGImageSourceCreateThumbnailWithTransform: true,  // EXIF orientation
            kCGImageSourceThumbnailMaxPixelSize: max(w, h),  // full size
        ]
        guard let image = CGImageSourceCreateThumbnailAtIndex(source, 0, options as CFDictionary) else {
            throw ImageError("\(name): corrupt or truncated image")
        }
        try self.init(cgImage: image)
    }

    public init(cgImage image: CGImage) throws {
        let (w, h) = (image.width, image.height)
        let space = image.colorSpace?.model == .rgb ? image.colorSpace! : CGColorSpace(name: CGColorSpace.sRGB)!
        var px = [UInt8](repeating: 0, count: w * h * 4)
        let drawn = px.withUnsafeMutableBytes { buf -> Bool in
            guard let ctx = CGContext(data: buf.baseAddress, width: w, height: h, bitsPerComponent: 8, bytesPerRow: w * 4,
                                      space: space, bitmapInfo: CGImageAlphaInfo.premultipliedLast.rawValue)
            else { return false }
            ctx.draw(image, in: CGRect(x: 0, y: 0, width: w, height: h))
            return true
        }
        guard drawn else { throw ImageError("image \(w)x\(h): could not be drawn to RGBA8") }
        for i in stride(from: 0, to: px.count, by: 4) {  // CoreGraphics draws premultiplied alpha only
            let a = Int(px[i + 3])
            guard a > 0 && a < 255 else { continue }
            for c in 0..<3 { px[i + c] = UInt8(min(255, (Int(px[i + c]) * 255 + a / 2) / a)) }
        }
        self.init(width: w, height: h, pixels: px)
    }
}
#endif
