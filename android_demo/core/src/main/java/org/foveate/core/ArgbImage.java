package org.foveate.core;

/** Decoded pixels, 0xAARRGGBB with straight alpha, row-major: what Android's Bitmap.getPixels gives. */
public final class ArgbImage {
    public final int width;
    public final int height;
    public final int[] argb;

    public ArgbImage(int width, int height, int[] argb) {
        this.width = width;
        this.height = height;
        this.argb = argb;
    }

    /** From RGBA bytes (H, W, 4), as the test vectors store images. */
    public static ArgbImage fromRgba(byte[] rgba, int width, int height) {
        int[] argb = new int[width * height];
        for (int i = 0; i < argb.length; i++) {
            int r = rgba[i * 4] & 0xFF;
            int g = rgba[i * 4 + 1] & 0xFF;
            int b = rgba[i * 4 + 2] & 0xFF;
            int a = rgba[i * 4 + 3] & 0xFF;
            argb[i] = (a << 24) | (r << 16) | (g << 8) | b;
        }
        return new ArgbImage(width, height, argb);
    }
}
