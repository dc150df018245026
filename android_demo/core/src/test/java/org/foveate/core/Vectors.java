package org.foveate.core;

import java.io.File;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.util.Base64;

import org.json.JSONArray;
import org.json.JSONException;
import org.json.JSONObject;

/** The ports' test vectors (docs/vectors.md), read from the path in the system property foveate.vectors. */
final class Vectors {
    private Vectors() {
    }

    static JSONObject load() throws JSONException {
        String path = System.getProperty("foveate.vectors");
        if (path == null) {
            throw new IllegalStateException("set -Dfoveate.vectors=PATH/vectors.json");
        }
        JSONObject v = new JSONObject(Manifest.readText(new File(path)));
        if (v.getInt("format") != 1) {
            throw new IllegalStateException(path + ": vectors format " + v.get("format") + ", this port reads 1");
        }
        return v;
    }

    /** The build directory beside the vectors (its manifest and tokenizer). */
    static File buildDir() throws JSONException {
        return new File(System.getProperty("foveate.vectors")).getAbsoluteFile().getParentFile();
    }

    static ByteBuffer bytes(JSONObject array) throws JSONException {
        return ByteBuffer.wrap(Base64.getDecoder().decode(array.getString("b64"))).order(ByteOrder.LITTLE_ENDIAN);
    }

    static long[] shape(JSONObject array) throws JSONException {
        JSONArray s = array.getJSONArray("shape");
        long[] out = new long[s.length()];
        for (int i = 0; i < out.length; i++) {
            out[i] = s.getLong(i);
        }
        return out;
    }

    static float[] floats(JSONObject array) throws JSONException {
        String dtype = array.getString("dtype");
        if (!dtype.equals("float32")) {
            throw new IllegalArgumentException("expected float32, got " + dtype);
        }
        ByteBuffer b = bytes(array);
        float[] out = new float[b.remaining() / 4];
        b.asFloatBuffer().get(out);
        return out;
    }

    static long[] longs(JSONObject array) throws JSONException {
        String dtype = array.getString("dtype");
        ByteBuffer b = bytes(array);
        if (dtype.equals("int64")) {
            long[] out = new long[b.remaining() / 8];
            b.asLongBuffer().get(out);
            return out;
        }
        if (dtype.equals("int32")) {
            long[] out = new long[b.remaining() / 4];
            for (int i = 0; i < out.length; i++) {
                out[i] = b.getInt();
            }
            return out;
        }
        throw new IllegalArgumentException("expected an integer array, got " + dtype);
    }

    static int[] uint8(JSONObject array) throws JSONException {
        ByteBuffer b = bytes(array);
        int[] out = new int[b.remaining()];
        for (int i = 0; i < out.length; i++) {
            out[i] = b.get() & 0xFF;
        }
        return out;
    }

    static Tensor tensor(JSONObject array) throws JSONException {
        return array.getString("dtype").equals("float32") ? Tensor.ofFloats(floats(array), shape(array))
                : Tensor.ofLongs(longs(array), shape(array));
    }

    static ArgbImage rgbaImage(JSONObject array) throws JSONException {
        long[] s = shape(array); // (H, W, 4)
        return ArgbImage.fromRgba(Base64.getDecoder().decode(array.getString("b64")), (int) s[1], (int) s[0]);
    }

    static int[] ints(JSONArray a) throws JSONException {
        int[] out = new int[a.length()];
        for (int i = 0; i < out.length; i++) {
            out[i] = a.getInt(i);
        }
        return out;
    }
}
