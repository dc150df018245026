package org.foveate.nativeengine;

import static org.junit.Assert.assertEquals;
import static org.junit.Assert.assertTrue;
import static org.junit.Assert.fail;

import java.io.File;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.util.ArrayList;
import java.util.Base64;
import java.util.List;

import org.foveate.core.ArgbImage;
import org.foveate.core.BuildException;
import org.foveate.core.CapacityException;
import org.foveate.core.GoldenReplay;
import org.foveate.core.Manifest;
import org.foveate.core.Pipeline;
import org.foveate.core.Sampler;
import org.foveate.core.Tensor;
import org.json.JSONArray;
import org.json.JSONObject;
import org.junit.BeforeClass;
import org.junit.Test;

/**
 * The conversation over the native ExecuTorch engine, one memory per method: golden.json token-exact on
 * every build in -Dfoveate.builds (comma separated), the recorded calls reproduced, bad input refused.
 * -Dfoveate.report=PATH receives the per-build golden reports with timings, as JSON.
 */
public class NativeEngineTest {
    private static final List<File> builds = new ArrayList<>();

    @BeforeClass
    public static void load() {
        String dirs = System.getProperty("foveate.builds");
        if (dirs == null) {
            throw new IllegalStateException("set -Dfoveate.builds=DIR[,DIR...]");
        }
        for (String d : dirs.split(",")) {
            builds.add(new File(d));
        }
        NativeEngine.loadLibrary();
    }

    @Test
    public void goldenReplayIsTokenExactOnEveryBuild() throws Exception {
        JSONArray reports = new JSONArray();
        StringBuilder failures = new StringBuilder();
        for (File dir : builds) {
            Manifest m = Manifest.load(dir);
            try (Pipeline pipe = new Pipeline(m, new NativeEngine(m))) {
                GoldenReplay.Report r = GoldenReplay.run(pipe, new PngLoader());
                System.out.print(r);
                if (!r.allMatch()) {
                    failures.append(r);
                }
                reports.put(json(m, r));
            }
        }
        String out = System.getProperty("foveate.report");
        if (out != null) {
            Files.write(new File(out).toPath(), reports.toString(1).getBytes(StandardCharsets.UTF_8));
        }
        assertEquals("", failures.toString());
    }

    private static JSONObject json(Manifest m, GoldenReplay.Report r) throws Exception {
        JSONArray cases = new JSONArray();
        for (GoldenReplay.CaseReport c : r.cases) {
            cases.put(new JSONObject().put("image", c.image).put("match", c.match()).put("reference", c.reference)
                    .put("tokens", c.got.length)
                    .put("image_encode_s", c.timings.imageEncodeS).put("prefill_s", c.timings.prefillS)
                    .put("ttft_s", c.timings.ttftS).put("decode_tok_s", c.timings.decodeTokS));
        }
        return new JSONObject().put("build", m.name).put("layout", m.kv.layout).put("plan", m.planName)
                .put("quant", m.quant).put("all_match", r.allMatch()).put("cases", cases);
    }

    /** Each recorded call of the vectors, fed to the engine in order, gives the recorded outputs. */
    @Test
    public void recordedCallsAreReproduced() throws Exception {
        int checked = 0;
        for (File dir : builds) {
            File vectors = new File(dir, "vectors.json");
            if (!vectors.isFile()) {
                continue;
            }
            JSONObject v = new JSONObject(new String(Files.readAllBytes(vectors.toPath()), StandardCharsets.UTF_8));
            Manifest m = Manifest.load(dir);
            try (NativeEngine engine = new NativeEngine(m)) {
                JSONArray cases = v.getJSONObject("calls").getJSONArray("cases");
                for (int c = 0; c < cases.length(); c++) {
                    JSONArray calls = cases.getJSONObject(c).getJSONArray("calls");
                    for (int k = 0; k < calls.length(); k++) {
                        JSONObject call = calls.getJSONObject(k);
                        JSONArray in = call.getJSONArray("inputs");
                        Tensor[] inputs = new Tensor[in.length()];
                        for (int i = 0; i < inputs.length; i++) {
                            inputs[i] = tensor(in.getJSONObject(i));
                        }
                        Tensor[] out = engine.execute(call.getString("method"), inputs);
                        JSONArray want = call.getJSONArray("outputs");
                        for (int i = 0; i < want.length(); i++) {
                            String where = dir.getName() + " case " + c + " call " + k + " " + call.getString("method")
                                    + "." + want.getJSONObject(i).getString("name");
                            assertClose(where, tensor(want.getJSONObject(i)).floats(), out[i].floats(), 1e-4f);
                        }
                        checked++;
                    }
                }
            }
        }
        assertTrue("no build with vectors.json", checked > 0);
    }

    private static void assertClose(String where, float[] want, float[] got, float tol) {
        assertEquals(where + ": size", want.length, got.length);
        for (int i = 0; i < want.length; i++) {
            if (!(Math.abs(want[i] - got[i]) <= tol * Math.max(1f, Math.abs(want[i])))) {
                fail(where + "[" + i + "] = " + got[i] + ", recorded " + want[i]);
            }
        }
    }

    private static Tensor tensor(JSONObject a) throws Exception {
        java.nio.ByteBuffer b = java.nio.ByteBuffer.wrap(Base64.getDecoder().decode(a.getString("b64")))
                .order(java.nio.ByteOrder.LITTLE_ENDIAN);
        JSONArray s = a.getJSONArray("shape");
        long[] shape = new long[s.length()];
        for (int i = 0; i < shape.length; i++) {
            shape[i] = s.getLong(i);
        }
        if (a.getString("dtype").equals("float32")) {
            float[] f = new float[b.remaining() / 4];
            b.asFloatBuffer().get(f);
            return Tensor.ofFloats(f, shape);
        }
        long[] l = new long[b.remaining() / 8];
        b.asLongBuffer().get(l);
        return Tensor.ofLongs(l, shape);
    }

    private static String refusal(Runnable r) {
        try {
            r.run();
        } catch (BuildException e) {
            return e.getMessage();
        }
        fail("no BuildException");
        return null;
    }

    @Test
    public void aMissingPteIsRefused() throws Exception {
        String msg = refusal(() -> NativeEngine.open(new File("/nonexistent/model.pte")));
        assertTrue(msg, msg.contains("no such file"));
    }

    @Test
    public void aTruncatedPteIsRefused() throws Exception {
        File pte = Manifest.load(builds.get(0)).file("model.pte");
        byte[] whole = Files.readAllBytes(pte.toPath());
        for (int keep : new int[] {whole.length / 2, 64, 0}) {
            File cut = File.createTempFile("truncated", ".pte");
            try {
                Files.write(cut.toPath(), java.util.Arrays.copyOf(whole, keep));
                String msg = refusal(() -> NativeEngine.open(cut));
                assertTrue(msg, msg.contains("ExecuTorch cannot load"));
            } finally {
                cut.delete();
            }
        }
    }

    @Test
    public void wrongInputsAreRefusedByTheNativeCheck() throws Exception {
        Manifest m = Manifest.load(builds.get(0));
        try (NativeEngine engine = new NativeEngine(m)) {
            int s = new org.foveate.core.ImagePreprocessor(m.image).size;
            String msg = refusal(() -> engine.execute("vision_encoder", Tensor.zeros(1, 3, s + 1, s)));
            assertTrue(msg, msg.startsWith("vision_encoder input 0: expected float32[1, 3, " + s + ", " + s + "]"));
            msg = refusal(() -> engine.execute("vision_encoder", Tensor.zeros(1, 3, s)));
            assertTrue(msg, msg.contains("got float32[1, 3, " + s + "]"));
            msg = refusal(() -> engine.execute("token_embedding", Tensor.zeros(1, 2)));
            assertTrue(msg, msg.contains("expected int64"));
            msg = refusal(() -> engine.execute("token_embedding"));
            assertTrue(msg, msg.contains("expected 1 inputs, got 0"));
            msg = refusal(() -> engine.execute("no_such_method"));
            assertTrue(msg, msg.contains("no method 'no_such_method'"));
            msg = refusal(() -> engine.encodeImage(Tensor.zeros(1, 3, s, s + 1))); // the manifest's check first
            assertTrue(msg, msg.startsWith("vision_encoder.pixels: expected float32"));
            assertEquals(1, engine.execute("token_embedding", Tensor.ofLongs(new long[] {1, 2}, 1, 2)).length);
        }
    }

    @Test
    public void aClosedEngineIsRefused() throws Exception {
        Manifest m = Manifest.load(builds.get(0));
        NativeEngine engine = new NativeEngine(m);
        engine.close();
        engine.close();
        String msg = refusal(() -> engine.embed(new long[] {1}));
        assertTrue(msg, msg.contains("closed"));
    }

    @Test
    public void oddImagesAndLongPromptsEndCleanly() throws Exception {
        Manifest m = Manifest.load(builds.get(0));
        try (Pipeline pipe = new Pipeline(m, new NativeEngine(m))) {
            Pipeline.Result r = pipe.generate(new ArgbImage(1, 1, new int[] {0x80FF0000}), "What?", 3,
                    Sampler.greedy(), null);
            assertTrue(r.ids.length >= 1);
            StringBuilder longPrompt = new StringBuilder();
            for (int i = 0; i < m.kv.textRows; i++) {
                longPrompt.append(" cat");
            }
            try {
                pipe.generate(null, longPrompt.toString(), 3, Sampler.greedy(), null);
                fail("a prompt over the capacity was accepted");
            } catch (CapacityException e) {
                assertTrue(e.getMessage(), e.getMessage().contains("does not fit the KV capacity"));
            }
            Pipeline.Result again = pipe.generate(null, "Hi", 4, new Sampler(0.8, 0.9, 7), null);
            assertTrue(again.ids.length >= 1); // the engine still works after a refusal
        }
    }

    @Test
    public void everyDeclaredMethodIsInThePte() throws Exception {
        for (File dir : builds) {
            Manifest m = Manifest.load(dir);
            try (NativeEngine engine = new NativeEngine(m)) {
                List<String> names = engine.methodNames();
                assertTrue(names + " lacks one of " + m.methods.keySet(), names.containsAll(m.methods.keySet()));
                assertTrue(names.contains("get_max_seq_len")); // the stock runner's metadata, for dense builds
            }
        }
    }
}
