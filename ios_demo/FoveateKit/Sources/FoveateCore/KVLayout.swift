// What the KV cache holds (models/protocol.py KVLayout), read from the manifest's `kv` section.
//   split:  text K/V of every layer (`textRows` rows) apart from the vision K/V of full/cross layers,
//           which vision_prefill returns and text_decoder takes as inputs.
//   shared: the dense plan only; the image takes N_v rows of one cache per layer, like text.
import Foundation

public struct KVLayout: Decodable, Sendable, Equatable {
    public static let layouts = ["split", "shared"]

    public let layout: String
    public let textRows: Int  // rows of each layer's text K/V cache
    public let visionTokens: Int
    public let grid: Int
    public let numKVHeads: Int
    public let headDim: Int
    public let modes: [String]

    enum CodingKeys: String, CodingKey {
        case layout, textRows = "text_rows", visionTokens = "vision_tokens", grid, numKVHeads = "num_kv_heads",
             headDim = "head_dim", modes
    }

    public init(layout: String, textRows: Int, visionTokens: Int, grid: Int, numKVHeads: Int, headDim: Int,
                modes: [String]) throws {
        guard Self.layouts.contains(layout) else {
            throw BuildError("unknown KV layout \(layout); valid layouts: \(Self.layouts.joined(separator: ", "))")
        }
        (self.layout, self.textRows, self.visionTokens, self.grid) = (layout, textRows, visionTokens, grid)
        (self.numKVHeads, self.headDim, self.modes) = (numKVHeads, headDim, modes)
    }

    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        try self.init(layout: c.decode(String.self, forKey: .layout), textRows: c.decode(Int.self, forKey: .textRows),
                      visionTokens: c.decode(Int.self, forKey: .visionTokens), grid: c.decode(Int.self, forKey: .grid),
                      numKVHeads: c.decode(Int.self, forKey: .numKVHeads), headDim: c.decode(Int.self, forKey: .headDim),
                      modes: c.decode([String].self, forKey: .modes))
    }

    /// Text-cache rows the image takes: N_v in the shared layout, none in the split one.
    public var imageSlots: Int { layout == "shared" ? visionTokens : 0 }

    /// Most positions one conversation holds, image included.
    public var maxContext: Int { textRows + (layout == "split" ? visionTokens : 0) }

    /// Layers whose vision K/V travel from vision_prefill to text_decoder (split layout).
    public var visionKVLayers: [Int] {
        layout == "shared" ? [] : modes.indices.filter { ["full", "cross"].contains(modes[$0]) }
    }

    /// Leading layers vision_prefill runs the text before the image through (up to the last full one).
    public var prefixLayers: Int {
        guard layout == "split", let last = modes.lastIndex(of: "full") else { return 0 }
        return last + 1
    }

    public var visionKVNames: [String] {
        visionKVLayers.flatMap { ["vision_k_\($0)", "vision_v_\($0)"] }
    }

    public var visionKVShape: [Int] { [1, numKVHeads, visionTokens, headDim] }

    /// Rows a prompt of `textTokens` takes; CapacityError when nothing could be generated after it.
    @discardableResult
    public func checkFits(textTokens: Int, withImage: Bool) throws -> Int {
        let need = textTokens + (withImage ? imageSlots : 0)
        if need >= textRows {
            throw CapacityError("prompt of \(need) tokens does not fit the KV capacity of \(textRows) rows (\(layout) layout)")
        }
        return need
    }

    /// A chunk of `n` rows at `slot` that the text cache cannot hold is refused before any graph runs.
    public func checkSlots(slot: Int, count n: Int) throws {
        if slot < 0 || slot + n > textRows {
            throw CapacityError("a chunk of \(n) tokens at slot \(slot) does not fit the KV cache of \(textRows) rows")
        }
    }
}
