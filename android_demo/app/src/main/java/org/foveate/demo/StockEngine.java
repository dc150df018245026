package org.foveate.demo;

import java.io.File;

import org.foveate.core.ArgbImage;
import org.foveate.core.BuildException;
import org.foveate.core.ImagePreprocessor;
import org.foveate.core.Manifest;
import org.foveate.core.Pipeline;
import org.pytorch.executorch.extension.llm.LlmCallback;
import org.pytorch.executorch.extension.llm.LlmModule;

/**
 * The baseline: a dense (shared KV layout) build through ExecuTorch's stock MultimodalRunner (LlmModule),
 * with its own tokenizer and sampler. The same picture and question as the foveate path; timed by the same
 * clock around the same steps (prefill of the text before the image, the image, then generation).
 */
public final class StockEngine implements AutoCloseable {
    /** What the stock runner produced: text, timings in seconds, the runner's own stats JSON. */
    public static final class Result {
        public String text = "";
        public double imageEncodeAndPrefillS;
        public double ttftS;
        public double decodeTokS;
        public int callbacks;
        public String stats = "";
    }

    private final Manifest manifest;
    private final ImagePreprocessor preprocessor;
    private final LlmModule llm;
    private volatile boolean stopped;

    public StockEngine(Manifest manifest) {
        if (!manifest.kv.isShared()) {
            throw new BuildException("the stock MultimodalRunner runs dense builds (shared KV layout) only; "
                    + manifest.name + " has the " + manifest.kv.layout + " layout");
        }
        this.manifest = manifest;
        this.preprocessor = new ImagePreprocessor(manifest.image);
        File pte = manifest.file(manifest.graphFiles.get(0));
        File tokenizer = manifest.file(manifest.tokenizerFile);
        llm = new LlmModule(LlmModule.MODEL_TYPE_MULTIMODAL, pte.getAbsolutePath(), tokenizer.getAbsolutePath(), 0.0f);
        llm.load();
    }

    /**
     * The stock runner's text callbacks carry one or more tokens each (it buffers until the text is valid
     * UTF-8), so `maxCallbacks` bounds the pieces, not exactly the tokens; decode tok/s counts callbacks.
     */
    public Result generate(ArgbImage image, String question, int maxCallbacks, Pipeline.TextListener onText) {
        Result r = new Result();
        stopped = false;
        String before = manifest.prompt.optString("before_image", "");
        String after = manifest.prompt.optString("after_image", "{prompt}").replace("{prompt}", question);
        float[] pixels = preprocessor.preprocess(image.argb, image.width, image.height).floats();
        llm.resetContext();
        long t0 = System.nanoTime();
        llm.prefillPrompt(before);
        llm.prefillImages(pixels, preprocessor.size, preprocessor.size, 3);
        long tPrefill = System.nanoTime();
        long[] first = {0};
        long[] last = {0};
        StringBuilder text = new StringBuilder();
        llm.generate(after, manifest.kv.maxContext, new LlmCallback() {
            @Override
            public void onResult(String piece) {
                long now = System.nanoTime();
                if (first[0] == 0) {
                    first[0] = now;
                }
                last[0] = now;
                r.callbacks++;
                text.append(piece);
                if (onText != null) {
                    onText.onText(piece);
                }
                if (r.callbacks >= maxCallbacks && !stopped) {
                    stopped = true;
                    llm.stop();
                }
            }

            @Override
            public void onStats(String stats) {
                r.stats = stats;
            }
        }, false);
        r.text = text.toString();
        r.imageEncodeAndPrefillS = (tPrefill - t0) / 1e9;
        r.ttftS = first[0] == 0 ? 0 : (first[0] - t0) / 1e9;
        double decodeS = (last[0] - first[0]) / 1e9;
        r.decodeTokS = r.callbacks > 1 && decodeS > 0 ? (r.callbacks - 1) / decodeS : 0;
        return r;
    }

    @Override
    public void close() {
        llm.close();
    }
}
