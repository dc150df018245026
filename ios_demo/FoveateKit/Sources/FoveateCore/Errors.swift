// The errors a build, a tokenizer, an image or a prompt can raise: one line each, saying what is wrong
// (runtime/'s BuildError, TokenizerError, ImageError and models/protocol.py's CapacityError).
import Foundation

public struct BuildError: Error, LocalizedError, CustomStringConvertible, Sendable {
    public let description: String
    public init(_ message: String) { description = message }
    public var errorDescription: String? { description }
}

public struct TokenizerError: Error, LocalizedError, CustomStringConvertible, Sendable {
    public let description: String
    public init(_ message: String) { description = message }
    public var errorDescription: String? { description }
}

public struct ImageError: Error, LocalizedError, CustomStringConvertible, Sendable {
    public let description: String
    public init(_ message: String) { description = message }
    public var errorDescription: String? { description }
}

/// The conversation does not fit the build's KV cache.
public struct CapacityError: Error, LocalizedError, CustomStringConvertible, Sendable {
    public let description: String
    public init(_ message: String) { description = message }
    public var errorDescription: String? { description }
}
