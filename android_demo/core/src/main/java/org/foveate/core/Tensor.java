package org.foveate.core;

import java.util.Arrays;

/** A dense row-major tensor of float32 or int64: what the graph methods take and return. */
public final class Tensor {
    public enum DType { FLOAT32, INT64 }

    public final DType dtype;
    private final long[] shape;
    private final float[] floats;
    private final long[] longs;

    private Tensor(DType dtype, long[] shape, float[] floats, long[] longs) {
        long n = numel(shape);
        long have = floats != null ? floats.length : longs.length;
        if (n != have) {
            throw new IllegalArgumentException("shape " + Arrays.toString(shape) + " holds " + n
                    + " elements, the data has " + have);
        }
        this.dtype = dtype;
        this.shape = shape.clone();
        this.floats = floats;
        this.longs = longs;
    }

    public static Tensor ofFloats(float[] data, long... shape) {
        return new Tensor(DType.FLOAT32, shape, data, null);
    }

    public static Tensor ofLongs(long[] data, long... shape) {
        return new Tensor(DType.INT64, shape, null, data);
    }

    public static Tensor zeros(long... shape) {
        return ofFloats(new float[Math.toIntExact(numel(shape))], shape);
    }

    public static long numel(long[] shape) {
        long n = 1;
        for (long d : shape) {
            if (d < 0) {
                throw new IllegalArgumentException("negative dimension in " + Arrays.toString(shape));
            }
            n *= d;
        }
        return n;
    }

    public long[] shape() {
        return shape.clone();
    }

    public int rank() {
        return shape.length;
    }

    public long dim(int i) {
        return shape[i];
    }

    public long numel() {
        return numel(shape);
    }

    /** The float32 data (not a copy). */
    public float[] floats() {
        if (floats == null) {
            throw new IllegalStateException("an int64 tensor has no float data");
        }
        return floats;
    }

    /** The int64 data (not a copy). */
    public long[] longs() {
        if (longs == null) {
            throw new IllegalStateException("a float32 tensor has no int64 data");
        }
        return longs;
    }

    /** The last row of a (..., T, V) tensor: V floats. */
    public float[] lastRow() {
        int v = Math.toIntExact(shape[shape.length - 1]);
        float[] f = floats();
        return Arrays.copyOfRange(f, f.length - v, f.length);
    }

    /** "float32[1, 3, 128, 128]", as error messages name a tensor. */
    public String describe() {
        return dtype.name().toLowerCase() + Arrays.toString(shape);
    }

    @Override
    public String toString() {
        return "Tensor(" + describe() + ")";
    }
}
