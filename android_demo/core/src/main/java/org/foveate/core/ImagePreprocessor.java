package org.foveate.core;

import org.json.JSONArray;
import org.json.JSONException;
import org.json.JSONObject;

/**
 * ARGB pixels -> the vision encoder's float tensor (1, 3, S, S), exactly as runtime/image.py does it:
 * alpha composited over the pad colour in integers; "pad" centres the image on a square of the pad colour
 * then resizes to S x S, "crop" resizes the short side to S and centre-crops; then x / 255, (x - mean) / std
 * in float32, channel order, NCHW. The resize reproduces PIL's Image.resize (8-bit, two separable passes,
 * fixed-point coefficients, antialiased when shrinking) so the 8-bit image matches PIL's exactly.
 */
public final class ImagePreprocessor {
    private static final int PRECISION_BITS = 32 - 8 - 2;

    public final int size;
    public final String resizeMode;
    public final int[] padColor;
    public final float[] mean;
    public final float[] std;
    public final boolean bgr;
    public final String resample;

    public ImagePreprocessor(JSONObject spec) {
        try {
            size = spec.getInt("size");
            resizeMode = spec.optString("resize_mode", "crop");
            padColor = ints(spec.optJSONArray("pad_color"), new int[] {0, 0, 0});
            mean = floats(spec.optJSONArray("mean"), new float[] {0f, 0f, 0f});
            std = floats(spec.optJSONArray("std"), new float[] {1f, 1f, 1f});
            String order = spec.optString("channel_order", "RGB");
            resample = spec.optString("resample", "bicubic");
            if (size <= 0 || !(resizeMode.equals("pad") || resizeMode.equals("crop"))
                    || !(order.equals("RGB") || order.equals("BGR"))) {
                throw new ImageException("image spec: need size > 0, resize_mode pad|crop, channel_order RGB|BGR; got "
                        + "size=" + size + ", resize_mode=" + resizeMode + ", channel_order=" + order);
            }
            if (padColor.length != 3 || mean.length != 3 || std.length != 3 || std[0] == 0 || std[1] == 0
                    || std[2] == 0) {
                throw new ImageException("image spec: pad_color, mean and std need 3 values each, std non-zero");
            }
            if (!resample.equals("bicubic") && !resample.equals("bilinear")) {
                throw new ImageException("image spec: unsupported resample '" + resample + "'; valid: bicubic, bilinear");
            }
            bgr = order.equals("BGR");
        } catch (JSONException e) {
            throw new ImageException("image spec: missing or malformed field (" + e.getMessage() + ")");
        }
    }

    /** Pixels as Android's Bitmap.getPixels gives them: 0xAARRGGBB, straight alpha, row-major. */
    public Tensor preprocess(int[] argb, int width, int height) {
        return normalize(resizedRgb8(argb, width, height));
    }

    /** The 8-bit S x S x 3 RGB image just before normalisation (vectors' "rgb8"). */
    public int[] resizedRgb8(int[] argb, int width, int height) {
        if (width <= 0 || height <= 0) {
            throw new ImageException("image has zero size (" + width + "x" + height + ")");
        }
        if (argb == null || argb.length != (long) width * height) {
            throw new ImageException("expected " + width + "x" + height + " = " + ((long) width * height)
                    + " pixels, got " + (argb == null ? 0 : argb.length));
        }
        Rgb img = composite(argb, width, height);
        if (resizeMode.equals("pad")) {
            return resize(expandToSquare(img), size, size).data;
        }
        int shortSide = Math.min(width, height);
        int longSide = Math.max(width, height);
        int newLong = Math.max(size, (int) ((double) ((long) size * longSide) / shortSide));
        int nw = width <= height ? size : newLong;
        int nh = width <= height ? newLong : size;
        if (nw != width || nh != height) {
            img = resize(img, nw, nh);
        }
        int left = (nw - size) / 2;
        int top = (nh - size) / 2;
        int[] out = new int[size * size * 3];
        for (int y = 0; y < size; y++) {
            System.arraycopy(img.data, ((y + top) * nw + left) * 3, out, y * size * 3, size * 3);
        }
        return out;
    }

    /** rgb8 (S, S, 3) -> (1, 3, S, S) float32: /255, (x - mean) / std, channel order. */
    public Tensor normalize(int[] rgb8) {
        int plane = size * size;
        float[] out = new float[3 * plane];
        for (int c = 0; c < 3; c++) {
            int dst = (bgr ? 2 - c : c) * plane;
            for (int i = 0; i < plane; i++) {
                float x = rgb8[i * 3 + c] / 255.0f;
                out[dst + i] = (x - mean[c]) / std[c];
            }
        }
        return Tensor.ofFloats(out, 1, 3, size, size);
    }

    /** An 8-bit RGB image, interleaved. */
    static final class Rgb {
        final int width;
        final int height;
        final int[] data;

        Rgb(int width, int height, int[] data) {
            this.width = width;
            this.height = height;
            this.data = data;
        }
    }

    /** out = round((src * a + pad * (255 - a)) / 255) per channel, in integers (never a tie). */
    Rgb composite(int[] argb, int w, int h) {
        int[] out = new int[w * h * 3];
        for (int i = 0; i < w * h; i++) {
            int p = argb[i];
            int a = p >>> 24;
            for (int c = 0; c < 3; c++) {
                int src = (p >>> (16 - 8 * c)) & 0xFF;
                out[i * 3 + c] = (src * a + padColor[c] * (255 - a) + 127) / 255;
            }
        }
        return new Rgb(w, h, out);
    }

    private Rgb expandToSquare(Rgb im) {
        if (im.width == im.height) {
            return im;
        }
        int side = Math.max(im.width, im.height);
        int[] out = new int[side * side * 3];
        for (int i = 0; i < side * side; i++) {
            System.arraycopy(padColor, 0, out, i * 3, 3);
        }
        int ox = (side - im.width) / 2;
        int oy = (side - im.height) / 2;
        for (int y = 0; y < im.height; y++) {
            System.arraycopy(im.data, y * im.width * 3, out, ((y + oy) * side + ox) * 3, im.width * 3);
        }
        return new Rgb(side, side, out);
    }

    /** PIL's ImagingResampleInner: a horizontal pass then a vertical one, each to 8 bits. */
    Rgb resize(Rgb im, int outW, int outH) {
        Rgb out = im;
        if (outW != im.width) {
            out = pass(out, outW, true);
        }
        if (outH != im.height) {
            out = pass(out, outH, false);
        }
        return out;
    }

    private Rgb pass(Rgb in, int outSize, boolean horizontal) {
        int inSize = horizontal ? in.width : in.height;
        Coeffs k = coeffs(inSize, outSize);
        int w = horizontal ? outSize : in.width;
        int h = horizontal ? in.height : outSize;
        int[] out = new int[w * h * 3];
        int step = horizontal ? 3 : in.width * 3; // distance between neighbouring source samples
        for (int y = 0; y < h; y++) {
            for (int x = 0; x < w; x++) {
                int o = horizontal ? x : y; // output index along the resampled axis
                int min = k.bounds[o * 2];
                int n = k.bounds[o * 2 + 1];
                int base = horizontal ? (y * in.width + min) * 3 : (min * in.width + x) * 3;
                for (int c = 0; c < 3; c++) {
                    int ss = 1 << (PRECISION_BITS - 1);
                    for (int i = 0; i < n; i++) {
                        ss += in.data[base + i * step + c] * k.kk[o * k.ksize + i];
                    }
                    out[(y * w + x) * 3 + c] = clip8(ss);
                }
            }
        }
        return new Rgb(w, h, out);
    }

    private static int clip8(int ss) {
        int v = ss >> PRECISION_BITS;
        return v < 0 ? 0 : Math.min(v, 255);
    }

    /** Fixed-point coefficients and bounds per output pixel (PIL's precompute_coeffs + normalize_coeffs_8bpc). */
    static final class Coeffs {
        final int ksize;
        final int[] bounds;
        final int[] kk;

        Coeffs(int ksize, int[] bounds, int[] kk) {
            this.ksize = ksize;
            this.bounds = bounds;
            this.kk = kk;
        }
    }

    Coeffs coeffs(int inSize, int outSize) {
        double support0 = resample.equals("bicubic") ? 2.0 : 1.0;
        double scale = (double) ((float) inSize) / outSize;
        double filterscale = Math.max(scale, 1.0);
        double support = support0 * filterscale;
        int ksize = (int) Math.ceil(support) * 2 + 1;
        int[] bounds = new int[outSize * 2];
        int[] kk = new int[outSize * ksize];
        double[] k = new double[ksize];
        for (int xx = 0; xx < outSize; xx++) {
            double center = (xx + 0.5) * scale;
            double ww = 0.0;
            double ss = 1.0 / filterscale;
            int xmin = Math.max((int) (center - support + 0.5), 0);
            int xmax = Math.min((int) (center + support + 0.5), inSize) - xmin;
            for (int x = 0; x < xmax; x++) {
                double w = filter((x + xmin - center + 0.5) * ss);
                k[x] = w;
                ww += w;
            }
            for (int x = 0; x < ksize; x++) {
                double v = x < xmax ? (ww != 0.0 ? k[x] / ww : k[x]) : 0.0;
                kk[xx * ksize + x] = (int) (v < 0 ? -0.5 + v * (1 << PRECISION_BITS) : 0.5 + v * (1 << PRECISION_BITS));
            }
            bounds[xx * 2] = xmin;
            bounds[xx * 2 + 1] = xmax;
        }
        return new Coeffs(ksize, bounds, kk);
    }

    private double filter(double x) {
        if (x < 0.0) {
            x = -x;
        }
        if (resample.equals("bilinear")) {
            return x < 1.0 ? 1.0 - x : 0.0;
        }
        final double a = -0.5;
        if (x < 1.0) {
            return ((a + 2.0) * x - (a + 3.0)) * x * x + 1;
        }
        if (x < 2.0) {
            return (((x - 5) * x + 8) * x - 4) * a;
        }
        return 0.0;
    }

    private static int[] ints(JSONArray a, int[] fallback) throws JSONException {
        if (a == null) {
            return fallback;
        }
        int[] out = new int[a.length()];
        for (int i = 0; i < out.length; i++) {
            out[i] = a.getInt(i);
        }
        return out;
    }

    private static float[] floats(JSONArray a, float[] fallback) throws JSONException {
        if (a == null) {
            return fallback;
        }
        float[] out = new float[a.length()];
        for (int i = 0; i < out.length; i++) {
            out[i] = (float) a.getDouble(i);
        }
        return out;
    }
}
