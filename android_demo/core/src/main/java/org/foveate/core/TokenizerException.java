package org.foveate.core;

/** A tokenizer file or prompt template that cannot be used. */
public class TokenizerException extends IllegalArgumentException {
    public TokenizerException(String message) {
        super(message);
    }
}
