package org.foveate.core;

/**
 * UTF-8 to text with one U+FFFD per maximal ill-formed subsequence (the Unicode "maximal subpart" practice,
 * Rust's from_utf8_lossy, what Hugging Face tokenizers' decoders do), the same on every JVM and on Android.
 */
final class Utf8 {
    private Utf8() {
    }

    static String decodeLossy(byte[] b) {
        StringBuilder out = new StringBuilder(b.length);
        int i = 0;
        while (i < b.length) {
            int b0 = b[i] & 0xFF;
            if (b0 < 0x80) {
                out.append((char) b0);
                i++;
                continue;
            }
            int len;
            int lo = 0x80;
            int hi = 0xBF; // the valid range of the second byte
            if (b0 >= 0xC2 && b0 <= 0xDF) {
                len = 2;
            } else if (b0 >= 0xE0 && b0 <= 0xEF) {
                len = 3;
                lo = b0 == 0xE0 ? 0xA0 : 0x80;
                hi = b0 == 0xED ? 0x9F : 0xBF;
            } else if (b0 >= 0xF0 && b0 <= 0xF4) {
                len = 4;
                lo = b0 == 0xF0 ? 0x90 : 0x80;
                hi = b0 == 0xF4 ? 0x8F : 0xBF;
            } else {
                out.append('\uFFFD');
                i++;
                continue;
            }
            int cp = b0 & (0xFF >> (len + 1));
            int k = 1;
            for (; k < len && i + k < b.length; k++) {
                int c = b[i + k] & 0xFF;
                if (k == 1 ? c < lo || c > hi : c < 0x80 || c > 0xBF) {
                    break;
                }
                cp = (cp << 6) | (c & 0x3F);
            }
            if (k == len) {
                out.appendCodePoint(cp);
            } else {
                out.append('\uFFFD'); // the lead byte and the continuation bytes that were valid so far
            }
            i += k;
        }
        return out.toString();
    }
}
