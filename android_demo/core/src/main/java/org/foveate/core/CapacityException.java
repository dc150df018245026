package org.foveate.core;

/** A conversation that does not fit the build's KV cache. */
public class CapacityException extends IllegalArgumentException {
    public CapacityException(String message) {
        super(message);
    }
}
