package org.foveate.core;

import java.io.File;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;

import org.json.JSONArray;
import org.json.JSONException;
import org.json.JSONObject;

/**
 * The build's golden.json replayed through a pipeline: each case's picture and prompt, greedy, must give the
 * golden ids exactly. The report says per case what came out and how long it took.
 */
public final class GoldenReplay {
    /** Decodes a golden picture (Android: BitmapFactory; desktop: ImageIO). */
    public interface ImageLoader {
        ArgbImage load(File file);
    }

    public static final class CaseReport {
        public final String image;
        public final String prompt;
        public final String reference; // "golden" (the PyTorch model's ids) or "vectors" (ExecuTorch's, quantized)
        public final int[] expected;
        public final int[] got;
        public final String text;
        public final Conversation.Timings timings;

        CaseReport(String image, String prompt, String reference, int[] expected, int[] got, String text,
                   Conversation.Timings timings) {
            this.image = image;
            this.prompt = prompt;
            this.reference = reference;
            this.expected = expected;
            this.got = got;
            this.text = text;
            this.timings = timings;
        }

        public boolean match() {
            return Arrays.equals(expected, got);
        }

        @Override
        public String toString() {
            return (match() ? "PASS " : "FAIL ") + image + " \"" + prompt + "\": " + got.length + " tokens"
                    + (match() ? "" : " " + Arrays.toString(got) + " != " + reference + " " + Arrays.toString(expected))
                    + "; " + timings;
        }
    }

    public static final class Report {
        public final String build;
        public final List<CaseReport> cases;

        Report(String build, List<CaseReport> cases) {
            this.build = build;
            this.cases = cases;
        }

        public boolean allMatch() {
            for (CaseReport c : cases) {
                if (!c.match()) {
                    return false;
                }
            }
            return !cases.isEmpty();
        }

        @Override
        public String toString() {
            int passed = 0;
            StringBuilder sb = new StringBuilder();
            for (CaseReport c : cases) {
                passed += c.match() ? 1 : 0;
                sb.append("  ").append(c).append('\n');
            }
            return build + ": " + passed + "/" + cases.size() + " golden cases token-exact"
                    + (!cases.isEmpty() && cases.get(0).reference.equals("vectors")
                    ? " (quantized: against the ids ExecuTorch gave when the build was made)" : "") + "\n" + sb;
        }
    }

    private GoldenReplay() {
    }

    /**
     * Each golden case greedy through the pipeline. The ids to match are golden.json's (the PyTorch model's);
     * for a quantized build, whose parity is judged by fidelity rather than token match, they are the ids
     * ExecuTorch produced when the build was made (vectors.json's generated_ids), when the build has them.
     */
    public static Report run(Pipeline pipe, ImageLoader loader) {
        Manifest m = pipe.manifest;
        File file = m.file(m.goldenFile);
        if (!file.isFile()) {
            throw new BuildException(m.dir + " has no " + m.goldenFile);
        }
        List<CaseReport> out = new ArrayList<>();
        try {
            JSONObject golden = new JSONObject(Manifest.readText(file));
            JSONArray cases = golden.getJSONArray("cases");
            JSONArray recorded = quantizedReference(m);
            for (int i = 0; i < cases.length(); i++) {
                JSONObject c = cases.getJSONObject(i);
                int maxNew = c.optInt("max_new_tokens", golden.optInt("max_new_tokens", 16));
                boolean vectors = recorded != null && i < recorded.length();
                int[] expected = ints(vectors ? recorded.getJSONObject(i).getJSONArray("generated_ids") : c.getJSONArray("ids"));
                ArgbImage image = loader.load(m.file(c.getString("image")));
                Pipeline.Result r = pipe.generate(image, c.getString("prompt"), maxNew, Sampler.greedy(), null);
                out.add(new CaseReport(c.getString("image"), c.getString("prompt"), vectors ? "vectors" : "golden",
                        expected, r.ids, r.text, r.timings));
            }
        } catch (JSONException e) {
            throw new BuildException(file + " is not a valid golden file (" + e.getMessage() + ")");
        }
        return new Report(m.name, out);
    }

    /** vectors.json's recorded cases for a quantized build that has them, else null. */
    private static JSONArray quantizedReference(Manifest m) throws JSONException {
        String name = m.json.optString("vectors", "");
        if (m.quant.equals("none") || name.isEmpty() || !m.file(name).isFile()) {
            return null;
        }
        return new JSONObject(Manifest.readText(m.file(name))).getJSONObject("calls").getJSONArray("cases");
    }

    private static int[] ints(JSONArray a) throws JSONException {
        int[] out = new int[a.length()];
        for (int i = 0; i < out.length; i++) {
            out[i] = a.getInt(i);
        }
        return out;
    }
}
