package org.foveate.core;

import static org.junit.Assert.assertArrayEquals;
import static org.junit.Assert.assertEquals;
import static org.junit.Assert.assertTrue;

import org.json.JSONArray;
import org.json.JSONObject;
import org.junit.BeforeClass;
import org.junit.Test;

/** The build's tokenizer against the vectors: encode, decode, streaming, the prompt split. */
public class TokenizerTest {
    private static JSONObject vectors;
    private static Tokenizer tok;

    @BeforeClass
    public static void load() throws Exception {
        vectors = Vectors.load();
        Manifest m = Manifest.load(Vectors.buildDir());
        tok = new Tokenizer(m.file(m.tokenizerFile), m.prompt);
    }

    @Test
    public void vocabSize() throws Exception {
        assertEquals(vectors.getJSONObject("tokenizer").getInt("vocab_size"), tok.vocabSize());
    }

    @Test
    public void everyEncodeCase() throws Exception {
        JSONArray cases = vectors.getJSONObject("tokenizer").getJSONArray("encode");
        assertTrue(cases.length() >= 10);
        for (int i = 0; i < cases.length(); i++) {
            JSONObject c = cases.getJSONObject(i);
            assertArrayEquals("encode " + JSONObject.quote(c.getString("text")), Vectors.ints(c.getJSONArray("ids")),
                    tok.encode(c.getString("text"), c.getBoolean("add_special_tokens")));
        }
    }

    @Test
    public void everyDecodeCase() throws Exception {
        JSONArray cases = vectors.getJSONObject("tokenizer").getJSONArray("decode");
        assertTrue(cases.length() >= 10);
        for (int i = 0; i < cases.length(); i++) {
            JSONObject c = cases.getJSONObject(i);
            int[] ids = Vectors.ints(c.getJSONArray("ids"));
            assertEquals("decode " + c.getJSONArray("ids"), c.getString("text"),
                    tok.decode(ids, c.getBoolean("skip_special_tokens")));
        }
    }

    @Test
    public void everyStreamCase() throws Exception {
        JSONArray cases = vectors.getJSONObject("tokenizer").getJSONArray("stream");
        boolean heldBack = false;
        for (int i = 0; i < cases.length(); i++) {
            JSONObject c = cases.getJSONObject(i);
            int[] ids = Vectors.ints(c.getJSONArray("ids"));
            JSONArray pushes = c.getJSONArray("pushes");
            Tokenizer.StreamDecoder s = new Tokenizer.StreamDecoder(tok, c.getBoolean("skip_special_tokens"));
            StringBuilder all = new StringBuilder();
            for (int k = 0; k < ids.length; k++) {
                String got = s.push(ids[k]);
                assertEquals("push " + k + " of " + c.getJSONArray("ids"), pushes.getString(k), got);
                heldBack |= got.isEmpty() && k + 1 < ids.length;
                all.append(got);
            }
            String fin = s.finish();
            assertEquals(c.getString("finish"), fin);
            assertEquals(tok.decode(ids), all + fin);
        }
        assertTrue("some case holds back a split character", heldBack);
    }

    @Test
    public void promptSplit() throws Exception {
        JSONObject p = vectors.getJSONObject("prompt");
        assertArrayEquals(Vectors.ints(p.getJSONArray("stop_ids")), tok.stopIds);
        JSONArray cases = p.getJSONArray("cases");
        for (int i = 0; i < cases.length(); i++) {
            JSONObject c = cases.getJSONObject(i);
            int[][] split = tok.encodePrompt(c.getString("prompt"), c.getBoolean("with_image"));
            String what = JSONObject.quote(c.getString("prompt")) + " with_image=" + c.getBoolean("with_image");
            assertArrayEquals("before, " + what, Vectors.ints(c.getJSONArray("before")), split[0]);
            assertArrayEquals("after, " + what, Vectors.ints(c.getJSONArray("after")), split[1]);
        }
    }

    @Test(expected = TokenizerException.class)
    public void missingFileIsRefused() throws Exception {
        new Tokenizer(new java.io.File("/nonexistent/tokenizer.json"), new JSONObject());
    }
}
