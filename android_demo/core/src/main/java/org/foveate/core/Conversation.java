package org.foveate.core;

import java.util.ArrayList;
import java.util.List;
import java.util.function.LongSupplier;

/**
 * One conversation of the runner protocol (models/protocol.py's converse, line for line): the text before
 * the image, the image (or none), the question, then one token per step until a stop id, the token limit
 * or a full cache. Positions count every token, image included; slots count text-cache rows (the image
 * takes rows only in the shared layout). Timings come from an injected nanosecond clock.
 */
public final class Conversation {
    /** Picks the next token from the logits of the last position. */
    public interface Picker {
        int pick(float[] logits);
    }

    /** Called with each new token id as soon as it is picked (before the next step runs). */
    public interface TokenListener {
        void onToken(int id);
    }

    /** Image encode, prefill (text before and after the image), time to first token, decode, in seconds. */
    public static final class Timings {
        public double imageEncodeS;
        public double prefillS;
        public double ttftS;
        public double decodeS;
        public double decodeTokS;

        @Override
        public String toString() {
            return String.format(java.util.Locale.ROOT,
                    "image encode %.1f ms, prefill %.1f ms, TTFT %.1f ms, decode %.1f tok/s",
                    imageEncodeS * 1e3, prefillS * 1e3, ttftS * 1e3, decodeTokS);
        }
    }

    /** What one conversation produced. */
    public static final class Transcript {
        public final List<Integer> ids = new ArrayList<>();
        public final Timings timings = new Timings();
        public float[] prefillLogits;

        public int[] idArray() {
            int[] out = new int[ids.size()];
            for (int i = 0; i < out.length; i++) {
                out[i] = ids.get(i);
            }
            return out;
        }
    }

    private final Engine engine;
    private final KVLayout kv;
    private final LongSupplier clockNanos;

    public Conversation(Engine engine, KVLayout kv, LongSupplier clockNanos) {
        this.engine = engine;
        this.kv = kv;
        this.clockNanos = clockNanos;
    }

    public Conversation(Engine engine, KVLayout kv) {
        this(engine, kv, System::nanoTime);
    }

    public Transcript run(int[] before, Tensor pixels, int[] after, int maxNewTokens, Picker picker, int[] stopIds,
                          TokenListener listener) {
        int need = kv.checkFits(before.length + after.length, pixels != null);
        if (after.length == 0) {
            throw new IllegalArgumentException("the question chunk is empty: the prompt template puts nothing "
                    + "after the image");
        }
        Transcript out = new Transcript();
        engine.reset();
        long t0 = clockNanos.getAsLong();
        int pos = 0;
        int slot = 0;
        Tensor prefix = null;
        if (before.length > 0) {
            prefix = engine.embed(toLongs(before));
            engine.text(prefix, pos, slot, false);
            pos += before.length;
            slot += before.length;
        }
        if (pixels != null) {
            long tImg = clockNanos.getAsLong();
            Tensor vision = engine.encodeImage(pixels);
            out.timings.imageEncodeS = seconds(clockNanos.getAsLong() - tImg);
            if (kv.isShared()) {
                engine.text(vision, pos, slot, false);
            } else {
                engine.prefillVision(vision, pos, prefix);
            }
            pos += kv.visionTokens;
            slot += kv.imageSlots;
        }
        float[] logits = engine.text(engine.embed(toLongs(after)), pos, slot, true);
        out.prefillLogits = logits;
        pos += after.length;
        slot += after.length;
        out.timings.ttftS = seconds(clockNanos.getAsLong() - t0);
        out.timings.prefillS = out.timings.ttftS - out.timings.imageEncodeS;
        int limit = Math.min(maxNewTokens, kv.textRows - need + 1); // every token but the last is fed back
        long t1 = clockNanos.getAsLong();
        while (out.ids.size() < limit) {
            int token = picker.pick(logits);
            out.ids.add(token);
            if (listener != null) {
                listener.onToken(token);
            }
            if (contains(stopIds, token) || out.ids.size() == limit) {
                break;
            }
            logits = engine.text(engine.embed(new long[] {token}), pos, slot, false);
            pos += 1;
            slot += 1;
        }
        out.timings.decodeS = seconds(clockNanos.getAsLong() - t1);
        int n = out.ids.size();
        out.timings.decodeTokS = n > 1 && out.timings.decodeS > 0 ? (n - 1) / out.timings.decodeS : 0.0;
        return out;
    }

    static long[] toLongs(int[] ids) {
        long[] out = new long[ids.length];
        for (int i = 0; i < ids.length; i++) {
            out[i] = ids[i];
        }
        return out;
    }

    static boolean contains(int[] ids, int id) {
        for (int i : ids) {
            if (i == id) {
                return true;
            }
        }
        return false;
    }

    private static double seconds(long nanos) {
        return nanos / 1e9;
    }
}
