package org.foveate.core;

import java.util.Arrays;

import org.json.JSONArray;
import org.json.JSONException;
import org.json.JSONObject;

/**
 * An engine that returns the outputs recorded in the vectors, call by call, and fails on any call whose
 * method or inputs differ from the recording (integers exactly, floats within the tolerance).
 */
final class ReplayEngine extends GraphEngine {
    private final JSONArray calls;
    private final double tolerance;
    private int next;

    ReplayEngine(Manifest manifest, JSONArray calls, double tolerance) {
        super(manifest);
        this.calls = calls;
        this.tolerance = tolerance;
    }

    int callsMade() {
        return next;
    }

    int callsRecorded() {
        return calls.length();
    }

    @Override
    protected Tensor[] run(String method, Tensor[] inputs) {
        try {
            return replay(method, inputs);
        } catch (JSONException e) {
            throw new AssertionError("unreadable recording: " + e.getMessage());
        }
    }

    private Tensor[] replay(String method, Tensor[] inputs) throws JSONException {
        if (next >= calls.length()) {
            throw new AssertionError("call " + next + " (" + method + ") was not recorded: the recording has "
                    + calls.length());
        }
        JSONObject call = calls.getJSONObject(next);
        String where = "call " + next + " (" + call.getString("method") + ")";
        next++;
        if (!call.getString("method").equals(method)) {
            throw new AssertionError(where + ": the port called " + method);
        }
        JSONArray recorded = call.getJSONArray("inputs");
        if (recorded.length() != inputs.length) {
            throw new AssertionError(where + ": " + inputs.length + " inputs, recorded " + recorded.length());
        }
        for (int i = 0; i < inputs.length; i++) {
            JSONObject want = recorded.getJSONObject(i);
            Tensor got = inputs[i];
            String name = where + " input " + want.getString("name");
            if (!Arrays.equals(Vectors.shape(want), got.shape())) {
                throw new AssertionError(name + ": shape " + Arrays.toString(got.shape()) + ", recorded "
                        + Arrays.toString(Vectors.shape(want)));
            }
            if (want.getString("dtype").equals("float32")) {
                float[] w = Vectors.floats(want);
                float[] g = got.floats();
                for (int k = 0; k < w.length; k++) {
                    if (!(Math.abs(w[k] - g[k]) <= tolerance)) {
                        throw new AssertionError(name + "[" + k + "] = " + g[k] + ", recorded " + w[k]);
                    }
                }
            } else if (!Arrays.equals(Vectors.longs(want), got.longs())) {
                throw new AssertionError(name + " = " + Arrays.toString(got.longs()) + ", recorded "
                        + Arrays.toString(Vectors.longs(want)));
            }
        }
        JSONArray outputs = call.getJSONArray("outputs");
        Tensor[] out = new Tensor[outputs.length()];
        for (int i = 0; i < out.length; i++) {
            out[i] = Vectors.tensor(outputs.getJSONObject(i));
        }
        return out;
    }
}
