package org.foveate.core;

/** A build directory or graph call that cannot be used; the message says why in one line. */
public class BuildException extends IllegalArgumentException {
    public BuildException(String message) {
        super(message);
    }
}
