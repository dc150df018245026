package org.foveate.core;

/**
 * Greedy or nucleus (top-p) sampling, bit for bit as runtime/sampler.py's docstring specifies: SplitMix64,
 * float64 softmax with sums added in order, a stable descending sort, the top-p prefix, one draw per token.
 */
public final class Sampler implements Conversation.Picker {
    /** SplitMix64 (Steele, Lea and Flood 2014): one 64-bit state, wrapping arithmetic, logical shifts. */
    public static final class SplitMix64 {
        private long state;

        public SplitMix64(long seed) {
            state = seed;
        }

        public long nextU64() {
            state += 0x9E3779B97F4A7C15L;
            long z = state;
            z = (z ^ (z >>> 30)) * 0xBF58476D1CE4E5B9L;
            z = (z ^ (z >>> 27)) * 0x94D049BB133111EBL;
            return z ^ (z >>> 31);
        }

        /** 53 random bits in [0, 1). */
        public double nextDouble() {
            return (nextU64() >>> 11) * 0x1.0p-53;
        }
    }

    /** The kept ids, most probable first, and the running sums of their probabilities. */
    public static final class Nucleus {
        public final int[] ids;
        public final double[] running;

        Nucleus(int[] ids, double[] running) {
            this.ids = ids;
            this.running = running;
        }
    }

    private final double temperature;
    private final double topP;
    private final SplitMix64 rng;

    public Sampler(double temperature, double topP, long seed) {
        if (Double.isNaN(temperature) || Double.isNaN(topP)) {
            throw new IllegalArgumentException("temperature and top_p must be numbers, got " + temperature + ", "
                    + topP);
        }
        this.temperature = temperature;
        this.topP = topP;
        this.rng = new SplitMix64(seed);
    }

    public static Sampler greedy() {
        return new Sampler(0.0, 1.0, 0);
    }

    @Override
    public int pick(float[] logits) {
        if (logits.length == 0) {
            throw new IllegalArgumentException("cannot pick from empty logits");
        }
        if (temperature <= 0) {
            return argmax(logits);
        }
        Nucleus n = nucleus(logits);
        double u = rng.nextDouble() * n.running[n.running.length - 1];
        for (int j = 0; j < n.running.length; j++) {
            if (n.running[j] > u) {
                return n.ids[j];
            }
        }
        return n.ids[n.ids.length - 1];
    }

    /** The first index of the largest value: the lowest id on ties. */
    public static int argmax(float[] x) {
        int best = 0;
        for (int i = 1; i < x.length; i++) {
            if (x[i] > x[best]) {
                best = i;
            }
        }
        return best;
    }

    /** Steps 2-4 of the algorithm. */
    public Nucleus nucleus(float[] logits) {
        int v = logits.length;
        double[] y = new double[v];
        double m = Double.NEGATIVE_INFINITY;
        for (int i = 0; i < v; i++) {
            y[i] = (double) logits[i] / temperature;
            m = Math.max(m, y[i]);
        }
        double[] e = new double[v];
        double s = 0.0;
        for (int i = 0; i < v; i++) {
            e[i] = StrictMath.exp(y[i] - m);
            s += e[i];
        }
        double[] p = new double[v];
        Integer[] order = new Integer[v];
        for (int i = 0; i < v; i++) {
            p[i] = e[i] / s;
            order[i] = i;
        }
        java.util.Arrays.sort(order, (a, b) -> Double.compare(p[b], p[a])); // stable: equal p keep id order
        double[] running = new double[v];
        double c = 0.0;
        int keep = v;
        for (int k = 0; k < v; k++) {
            c += p[order[k]];
            running[k] = c;
            if (keep == v && c >= topP) {
                keep = k + 1;
            }
        }
        int[] ids = new int[keep];
        for (int k = 0; k < keep; k++) {
            ids[k] = order[k];
        }
        return new Nucleus(ids, java.util.Arrays.copyOf(running, keep));
    }
}
