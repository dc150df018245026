package org.foveate.core;

import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;

/**
 * The engine calls in terms of the build's declared methods (runtime/backends.py's GraphCalls); a subclass
 * runs one method by name ({@link #run}), e.g. through ExecuTorch. Inputs are checked against the manifest's
 * declarations before every call, and a chunk that would write past the text cache is refused before any
 * graph runs. The vision K/V that vision_prefill returns are kept here and fed to every text_decoder call.
 */
public abstract class GraphEngine implements Engine {
    protected final Manifest manifest;
    protected final KVLayout kv;
    private final int hidden;
    private List<Tensor> visionKv = new ArrayList<>();

    protected GraphEngine(Manifest manifest) {
        this.manifest = manifest;
        this.kv = manifest.kv;
        this.hidden = manifest.hiddenSize();
        for (String method : Protocol.methodsFor(kv.layout)) {
            List<String> declared = manifest.method(method).inputNames();
            List<String> fed = Protocol.inputsFor(method, kv);
            if (!declared.equals(fed)) {
                throw new BuildException(manifest.name + ": " + method + " declares inputs " + declared
                        + ", the runner protocol feeds " + fed);
            }
        }
        reset();
    }

    /** Run `method` on inputs in declared order; return its outputs in declared order. */
    protected abstract Tensor[] run(String method, Tensor[] inputs);

    /** Check inputs against the declaration, run, and check that an output came back. */
    protected final Tensor[] call(String method, Tensor... inputs) {
        checkInputs(manifest, method, inputs);
        Tensor[] out = run(method, inputs);
        if (out == null || out.length == 0) {
            throw new BuildException(method + ": the engine returned no outputs");
        }
        return out;
    }

    /** BuildException when inputs do not match the method's declared inputs (count, rank, dims, dtypes). */
    public static void checkInputs(Manifest manifest, String method, Tensor[] inputs) {
        List<Manifest.IOSpec> declared = manifest.method(method).inputs;
        if (inputs.length != declared.size()) {
            throw new BuildException(method + ": expected " + declared.size() + " inputs, got " + inputs.length);
        }
        for (int i = 0; i < inputs.length; i++) {
            Manifest.IOSpec spec = declared.get(i);
            Tensor t = inputs[i];
            boolean ok = t.rank() == spec.shape.length && dtypeName(t).equals(spec.dtype);
            for (int d = 0; ok && d < spec.shape.length; d++) {
                ok = spec.shape[d] < 0 ? t.dim(d) >= 1 : t.dim(d) == spec.shape[d];
            }
            if (!ok) {
                throw new BuildException(method + "." + spec.name + ": expected " + spec.dtype
                        + Arrays.toString(spec.shape).replace("-1", "seq") + ", got " + t.describe());
            }
        }
    }

    static String dtypeName(Tensor t) {
        return t.dtype == Tensor.DType.FLOAT32 ? "float32" : "int64";
    }

    @Override
    public void reset() {
        visionKv = new ArrayList<>();
        for (int i = 0; i < kv.visionKv.size(); i++) {
            visionKv.add(Tensor.zeros(kv.visionKvShape));
        }
    }

    @Override
    public Tensor encodeImage(Tensor pixels) {
        return call(Protocol.VISION_ENCODER, pixels)[0];
    }

    @Override
    public Tensor embed(long[] ids) {
        return call(Protocol.TOKEN_EMBEDDING, Tensor.ofLongs(ids.clone(), 1, ids.length))[0];
    }

    @Override
    public void prefillVision(Tensor visionEmbeds, int startPos, Tensor prefixEmbeds) {
        if (prefixEmbeds == null) { // the method takes at least one row; start_pos = 0 masks it
            prefixEmbeds = Tensor.zeros(1, 1, hidden);
        }
        Tensor[] out = call(Protocol.VISION_PREFILL, visionEmbeds, scalar(startPos), prefixEmbeds);
        if (out.length != 1 + kv.visionKv.size()) {
            throw new BuildException("vision_prefill returned " + out.length + " outputs, the manifest declares "
                    + (1 + kv.visionKv.size()));
        }
        visionKv = new ArrayList<>(Arrays.asList(out).subList(1, out.length));
    }

    @Override
    public float[] text(Tensor embeds, int pos, int slot, boolean select) {
        int n = (int) embeds.dim(1);
        kv.checkSlots(slot, n);
        Tensor[] out;
        if (kv.isShared()) {
            out = call(Protocol.TEXT_DECODER, embeds, scalar(pos));
        } else {
            long[] positions = new long[n];
            for (int i = 0; i < n; i++) {
                positions[i] = pos + i;
            }
            List<Tensor> in = new ArrayList<>(Arrays.asList(embeds, Tensor.ofLongs(positions, n), scalar(slot),
                    scalar(select ? 1 : 0)));
            in.addAll(visionKv);
            out = call(Protocol.TEXT_DECODER, in.toArray(new Tensor[0]));
        }
        return out[0].lastRow();
    }

    static Tensor scalar(long v) {
        return Tensor.ofLongs(new long[] {v}, 1);
    }

    @Override
    public void close() {
    }
}
