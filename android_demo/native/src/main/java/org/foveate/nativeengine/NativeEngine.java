package org.foveate.nativeengine;

import java.io.File;
import java.util.Arrays;
import java.util.List;

import org.foveate.core.BuildException;
import org.foveate.core.GraphEngine;
import org.foveate.core.Manifest;
import org.foveate.core.Tensor;

/**
 * The build's .pte through ExecuTorch's C++ runtime (libfoveate_engine.so, android_demo/native/build.sh), each
 * method with memory of its own as on the phone. Anything the native side cannot do (a missing or truncated
 * .pte, a missing kernel, inputs of the wrong shape) arrives as one {@link BuildException}.
 */
public final class NativeEngine extends GraphEngine {
    private static boolean loaded;

    private long handle;

    /** Loads the library from -Dfoveate.native.lib=PATH, else System.loadLibrary("foveate_engine"). */
    public static synchronized void loadLibrary() {
        if (!loaded) {
            String path = System.getProperty("foveate.native.lib");
            if (path != null) {
                System.load(new File(path).getAbsolutePath());
            } else {
                System.loadLibrary("foveate_engine");
            }
            loaded = true;
        }
    }

    public NativeEngine(Manifest manifest) {
        super(manifest);
        loadLibrary();
        handle = nativeLoad(manifest.file(manifest.graphFiles.get(0)).getPath());
        List<String> methods = Arrays.asList(nativeMethods(handle));
        for (String m : manifest.methods.keySet()) {
            if (!methods.contains(m)) {
                close();
                throw new BuildException(manifest.name + ": the .pte has no method " + m + " (it has " + methods + ")");
            }
        }
    }

    /** A .pte on its own, without a manifest: for running methods directly ({@link #execute}). */
    public static long open(File pte) {
        loadLibrary();
        return nativeLoad(pte.getPath());
    }

    public List<String> methodNames() {
        return Arrays.asList(nativeMethods(handle));
    }

    @Override
    protected Tensor[] run(String method, Tensor[] inputs) {
        return execute(method, inputs);
    }

    /** Run a method as ExecuTorch's Module.execute does: no manifest check, only the native one. */
    public Tensor[] execute(String method, Tensor... inputs) {
        return execute(handle, method, inputs);
    }

    public static Tensor[] execute(long handle, String method, Tensor... inputs) {
        Object[] data = new Object[inputs.length];
        long[][] shapes = new long[inputs.length][];
        for (int i = 0; i < inputs.length; i++) {
            data[i] = inputs[i].dtype == Tensor.DType.FLOAT32 ? inputs[i].floats() : inputs[i].longs();
            shapes[i] = inputs[i].shape();
        }
        Object[] out = nativeRun(handle, method, data, shapes);
        Tensor[] tensors = new Tensor[out.length / 2];
        for (int i = 0; i < tensors.length; i++) {
            long[] shape = (long[]) out[2 * i + 1];
            tensors[i] = out[2 * i] instanceof float[] ? Tensor.ofFloats((float[]) out[2 * i], shape)
                    : Tensor.ofLongs((long[]) out[2 * i], shape);
        }
        return tensors;
    }

    public static void close(long handle) {
        nativeClose(handle);
    }

    @Override
    public synchronized void close() {
        if (handle != 0) {
            nativeClose(handle);
            handle = 0;
        }
    }

    private static native long nativeLoad(String path);

    private static native String[] nativeMethods(long handle);

    private static native Object[] nativeRun(long handle, String method, Object[] data, long[][] shapes);

    private static native void nativeClose(long handle);
}
