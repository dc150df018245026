package org.foveate.core;

import static org.junit.Assert.assertArrayEquals;
import static org.junit.Assert.assertEquals;
import static org.junit.Assert.assertTrue;

import org.json.JSONArray;
import org.json.JSONObject;
import org.junit.BeforeClass;
import org.junit.Test;

/** SplitMix64 and every seeded sampler case of the vectors, bit for bit. */
public class SamplerTest {
    private static JSONObject sampler;

    @BeforeClass
    public static void load() throws Exception {
        sampler = Vectors.load().getJSONObject("sampler");
    }

    @Test
    public void splitMix64() throws Exception {
        assertEquals(0xe220a8397b1dcdafL, new Sampler.SplitMix64(0).nextU64());
        JSONArray cases = sampler.getJSONArray("splitmix64");
        for (int i = 0; i < cases.length(); i++) {
            JSONObject c = cases.getJSONObject(i);
            Sampler.SplitMix64 rng = new Sampler.SplitMix64(c.getLong("seed"));
            JSONArray u64 = c.getJSONArray("u64");
            for (int k = 0; k < u64.length(); k++) {
                assertEquals(Long.parseUnsignedLong(u64.getString(k)), rng.nextU64());
            }
            JSONArray doubles = c.getJSONArray("next_doubles");
            for (int k = 0; k < doubles.length(); k++) {
                assertEquals(doubles.getDouble(k), rng.nextDouble(), 0.0);
            }
        }
    }

    @Test
    public void everySamplerCase() throws Exception {
        JSONArray cases = sampler.getJSONArray("cases");
        assertTrue(cases.length() >= 10);
        for (int i = 0; i < cases.length(); i++) {
            JSONObject c = cases.getJSONObject(i);
            float[] logits = Vectors.floats(c.getJSONObject("logits"));
            Sampler s = new Sampler(c.getDouble("temperature"), c.getDouble("top_p"), c.getLong("seed"));
            JSONArray picks = c.getJSONArray("picks");
            int[] got = new int[picks.length()];
            for (int k = 0; k < got.length; k++) {
                got[k] = s.pick(logits);
            }
            assertArrayEquals(c.getString("logits_name") + " t=" + c.get("temperature") + " p=" + c.get("top_p")
                    + " seed=" + c.get("seed"), Vectors.ints(picks), got);
        }
    }

    @Test
    public void greedyTakesTheLowestIdOnTies() throws Exception {
        assertEquals(1, Sampler.greedy().pick(new float[] {0f, 3f, 3f, -1f}));
    }
}
