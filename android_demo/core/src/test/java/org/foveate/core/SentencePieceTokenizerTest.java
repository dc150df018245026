package org.foveate.core;

import static org.junit.Assert.assertArrayEquals;
import static org.junit.Assert.assertEquals;
import static org.junit.Assert.assertTrue;

import java.io.File;

import org.json.JSONArray;
import org.json.JSONObject;
import org.junit.Test;

/**
 * SentencePiece-derived tokenizer.json files (LLaMA, MobileVLM: metaspace, byte fallback, a BOS from the
 * post-processor) against Hugging Face tokenizers' own output. The directories in -Dfoveate.sp (comma
 * separated) each hold a tokenizer.json and a cases.json written by tests/apps/test_android.py.
 */
public class SentencePieceTokenizerTest {
    @Test
    public void matchesHuggingFaceTokenizers() throws Exception {
        String dirs = System.getProperty("foveate.sp");
        if (dirs == null) {
            throw new IllegalStateException("set -Dfoveate.sp=DIR[,DIR...]");
        }
        int checked = 0;
        for (String d : dirs.split(",")) {
            File dir = new File(d);
            JSONObject prompt = new JSONObject().put("after_image", "{prompt}");
            Tokenizer tok = new Tokenizer(new File(dir, "tokenizer.json"), prompt);
            JSONObject file = new JSONObject(Manifest.readText(new File(dir, "cases.json")));
            assertEquals(dir + ": vocab size", file.getInt("vocab_size"), tok.vocabSize());
            JSONArray cases = file.getJSONArray("cases");
            for (int i = 0; i < cases.length(); i++) {
                JSONObject c = cases.getJSONObject(i);
                String what = dir.getName() + " " + JSONObject.quote(c.getString("text"));
                boolean special = c.getBoolean("add_special_tokens");
                int[] ids = Vectors.ints(c.getJSONArray("ids"));
                assertArrayEquals(what + " special=" + special, ids, tok.encode(c.getString("text"), special));
                assertEquals(what + " decode", c.getString("decode_skip"), tok.decode(ids, true));
                assertEquals(what + " decode, specials kept", c.getString("decode_keep"), tok.decode(ids, false));
                JSONArray pushes = c.getJSONArray("pushes");
                Tokenizer.StreamDecoder s = tok.stream();
                for (int k = 0; k < ids.length; k++) {
                    assertEquals(what + " push " + k, pushes.getString(k), s.push(ids[k]));
                }
                assertEquals(what + " finish", c.getString("finish"), s.finish());
                checked++;
            }
        }
        assertTrue(checked >= 10);
    }
}
