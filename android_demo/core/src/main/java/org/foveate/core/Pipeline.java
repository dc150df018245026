package org.foveate.core;

import java.util.ArrayList;
import java.util.List;
import java.util.function.LongSupplier;

/**
 * One pipeline over any engine (runtime/pipeline.py): preprocess, tokenize, the runner protocol, stream, time.
 *
 * <pre>
 *   Pipeline pipe = new Pipeline(Manifest.load(dir), engine);
 *   Pipeline.Result r = pipe.generate(image, "What is this?", 32, Sampler.greedy(), System.out::print);
 * </pre>
 */
public final class Pipeline implements AutoCloseable {
    /** Receives each piece of text as soon as it is complete (the last call: what finish() held back). */
    public interface TextListener {
        void onText(String delta);
    }

    public static final class Result {
        public final String text;
        public final int[] ids;
        public final int visionTokens;
        public final Conversation.Timings timings;

        Result(String text, int[] ids, int visionTokens, Conversation.Timings timings) {
            this.text = text;
            this.ids = ids;
            this.visionTokens = visionTokens;
            this.timings = timings;
        }
    }

    public final Manifest manifest;
    public final Tokenizer tokenizer;
    public final ImagePreprocessor preprocessor;
    public final Engine engine;
    private final LongSupplier clockNanos;

    public Pipeline(Manifest manifest, Engine engine, LongSupplier clockNanos) {
        this.manifest = manifest;
        this.tokenizer = new Tokenizer(manifest.file(manifest.tokenizerFile), manifest.prompt);
        this.preprocessor = new ImagePreprocessor(manifest.image);
        this.engine = engine;
        this.clockNanos = clockNanos;
    }

    public Pipeline(Manifest manifest, Engine engine) {
        this(manifest, engine, System::nanoTime);
    }

    /** image may be null (text only); onText may be null. */
    public Result generate(ArgbImage image, String prompt, int maxNewTokens, Sampler sampler, TextListener onText) {
        Tensor pixels = image == null ? null : preprocessor.preprocess(image.argb, image.width, image.height);
        int[][] split = tokenizer.encodePrompt(prompt, pixels != null);
        Tokenizer.StreamDecoder stream = tokenizer.stream();
        Conversation.TokenListener onToken = onText == null ? null : id -> onText.onText(stream.push(id));
        Conversation.Transcript t = new Conversation(engine, manifest.kv, clockNanos)
                .run(split[0], pixels, split[1], maxNewTokens, sampler, tokenizer.stopIds, onToken);
        if (onText != null) {
            onText.onText(stream.finish());
        }
        List<Integer> textIds = new ArrayList<>();
        for (int id : t.ids) {
            if (!Conversation.contains(tokenizer.stopIds, id)) {
                textIds.add(id);
            }
        }
        String text = tokenizer.decode(textIds.stream().mapToInt(Integer::intValue).toArray());
        return new Result(text, t.idArray(), pixels != null ? manifest.kv.visionTokens : 0, t.timings);
    }

    @Override
    public void close() {
        engine.close();
    }
}
