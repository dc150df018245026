package org.foveate.core;

import static org.junit.Assert.assertEquals;

import org.junit.Test;

/** Lossy UTF-8 decoding against Python's bytes.decode("utf-8", "replace") (the same maximal-subpart rule). */
public class Utf8Test {
    private static final String[][] CASES = {
        {"\u0061\u0062\u0063", "616263"},
        {"\ufffd", "e78c"},
        {"\u732b", "e78cab"},
        {"\ufffd", "f09f99"},
        {"\ud83d\ude42\u0021", "f09f998221"},
        {"\ufffd\ufffd", "c0af"},
        {"\ufffd\ufffd\ufffd", "eda080"},
        {"\ufffd\ufffd\ufffd", "e080af"},
        {"\ufffd\ufffd\ufffd\ufffd", "f4908080"},
        {"\ufffd\u0061", "f561"},
        {"\ufffd\ufffd", "8080"},
        {"\u0061\ufffd", "61e381"},
        {"\ufffd\u0061\u3042", "e38161e38182"},
        {"\ufffd\ufffd", "fffe"},
        {"\ufffd", "f09080"},
        {"", ""},
    };

    @Test
    public void maximalSubparts() {
        for (String[] c : CASES) {
            byte[] b = new byte[c[1].length() / 2];
            for (int i = 0; i < b.length; i++) {
                b[i] = (byte) Integer.parseInt(c[1].substring(2 * i, 2 * i + 2), 16);
            }
            assertEquals(c[1], c[0], Utf8.decodeLossy(b));
        }
    }
}
