package org.foveate.core;

/** An image that cannot be used (empty, or a spec that is malformed). */
public class ImageException extends IllegalArgumentException {
    public ImageException(String message) {
        super(message);
    }
}
