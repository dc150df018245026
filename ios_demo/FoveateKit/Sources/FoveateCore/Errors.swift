// The errors a build, a tokenizer, an image or a prompt can raise: one line each, saying what is wrong
// (runtime/'s BuildError, TokenizerError, ImageError and models/protocol.py's CapacityError).
import Foundation

/// An error whose whole text is one line, `description`, which is also what `localizedDescription` shows.
public protocol OneLineError: Error, LocalizedError, CustomStringConvertible, Sendable {
    var description: String { get }
}

extension OneLineError {
    public var errorDescription: String? { description }
}

public struct BuildError: OneLineError {
    public let description: String
    public init(_ message: String) { description = message }
}

public struct TokenizerError: OneLineError {
    public let description: String
    public init(_ message: String) { description = message }
}

public struct ImageError: OneLineError {
    public let description: String
    public init(_ message: String) { description = message }
}

/// The conversation does not fit the build's KV cache.
public struct CapacityError: OneLineError {
    public let description: String
    public init(_ message: String) { description = message }
}
