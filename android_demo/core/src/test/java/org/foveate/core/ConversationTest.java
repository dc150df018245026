package org.foveate.core;

import static org.junit.Assert.assertArrayEquals;
import static org.junit.Assert.assertEquals;
import static org.junit.Assert.assertTrue;

import java.util.ArrayList;
import java.util.List;

import org.json.JSONArray;
import org.json.JSONObject;
import org.junit.BeforeClass;
import org.junit.Test;

/**
 * Every golden case's recorded call sequence, replayed: the pipeline (tokenizer, preprocessing, the
 * conversation) must make the same calls with the same inputs and so produce the same ids and text.
 */
public class ConversationTest {
    private static JSONObject vectors;
    private static Manifest manifest;

    @BeforeClass
    public static void load() throws Exception {
        vectors = Vectors.load();
        manifest = Manifest.load(Vectors.buildDir());
    }

    /** A clock that advances 1 ms per reading. */
    private static java.util.function.LongSupplier fakeClock() {
        long[] now = {0};
        return () -> now[0] += 1_000_000L;
    }

    @Test
    public void everyGoldenCaseCallSequence() throws Exception {
        JSONObject calls = vectors.getJSONObject("calls");
        assertEquals(manifest.kv.layout, calls.getString("layout"));
        JSONArray cases = calls.getJSONArray("cases");
        assertTrue(cases.length() >= 1);
        for (int i = 0; i < cases.length(); i++) {
            JSONObject c = cases.getJSONObject(i);
            ReplayEngine engine = new ReplayEngine(manifest, c.getJSONArray("calls"), vectors.getDouble("tolerance"));
            Pipeline pipe = new Pipeline(manifest, engine, fakeClock());
            StringBuilder streamed = new StringBuilder();
            List<String> deltas = new ArrayList<>();
            Pipeline.Result r = pipe.generate(Vectors.rgbaImage(c.getJSONObject("rgba")), c.getString("prompt"),
                    c.getInt("max_new_tokens"), Sampler.greedy(), d -> {
                        deltas.add(d);
                        streamed.append(d);
                    });
            String what = "case " + i + " (" + c.getString("image") + ")";
            assertEquals(what + ": every recorded call made", engine.callsRecorded(), engine.callsMade());
            assertArrayEquals(what, Vectors.ints(c.getJSONArray("generated_ids")), r.ids);
            assertEquals(what, c.getString("text"), r.text);
            assertEquals(manifest.kv.visionTokens, r.visionTokens);
            assertTrue(r.timings.ttftS > 0 && r.timings.imageEncodeS > 0 && r.timings.prefillS > 0);
            assertEquals(r.ids.length + 1, deltas.size()); // one delta per token, then finish()
        }
    }

    @Test
    public void timingsComeFromTheInjectedClock() throws Exception {
        JSONObject c = vectors.getJSONObject("calls").getJSONArray("cases").getJSONObject(0);
        ReplayEngine engine = new ReplayEngine(manifest, c.getJSONArray("calls"), vectors.getDouble("tolerance"));
        Pipeline pipe = new Pipeline(manifest, engine, fakeClock());
        Pipeline.Result r = pipe.generate(Vectors.rgbaImage(c.getJSONObject("rgba")), c.getString("prompt"),
                c.getInt("max_new_tokens"), Sampler.greedy(), null);
        // readings: t0, image start, image end, TTFT end, decode start, decode end (1 ms apart)
        assertEquals(0.001, r.timings.imageEncodeS, 1e-12);
        assertEquals(0.003, r.timings.ttftS, 1e-12);
        assertEquals(0.002, r.timings.prefillS, 1e-12);
        assertEquals(0.001, r.timings.decodeS, 1e-12);
        assertEquals((r.ids.length - 1) / 0.001, r.timings.decodeTokS, 1e-6);
    }

    @Test
    public void aPromptOverCapacityIsRefusedBeforeAnyCall() throws Exception {
        ReplayEngine engine = new ReplayEngine(manifest, new JSONArray(), 0.0);
        Conversation conv = new Conversation(engine, manifest.kv);
        int[] after = new int[manifest.kv.textRows];
        try {
            conv.run(new int[0], null, after, 4, Sampler.greedy(), new int[0], null);
            throw new AssertionError("a prompt of " + after.length + " tokens was accepted");
        } catch (CapacityException e) {
            assertTrue(e.getMessage(), e.getMessage().contains("does not fit the KV capacity"));
        }
        assertEquals(0, engine.callsMade());
    }

    @Test
    public void aChunkPastTheCacheIsRefusedBeforeAnyCall() throws Exception {
        ReplayEngine engine = new ReplayEngine(manifest, new JSONArray(), 0.0);
        Tensor embeds = Tensor.zeros(1, 2, manifest.hiddenSize());
        try {
            engine.text(embeds, 0, manifest.kv.textRows - 1, false);
            throw new AssertionError("a chunk past the cache was accepted");
        } catch (BuildException e) {
            assertTrue(e.getMessage(), e.getMessage().contains("does not fit the KV cache"));
        }
        assertEquals(0, engine.callsMade());
    }

    @Test
    public void wrongInputShapesAreRefusedBeforeAnyCall() throws Exception {
        ReplayEngine engine = new ReplayEngine(manifest, new JSONArray(), 0.0);
        try {
            engine.encodeImage(Tensor.zeros(1, 3, 7, 7));
            throw new AssertionError("pixels of the wrong size were accepted");
        } catch (BuildException e) {
            assertTrue(e.getMessage(), e.getMessage().startsWith("vision_encoder.pixels: expected float32"));
        }
        assertEquals(0, engine.callsMade());
    }
}
