package org.foveate.core;

import java.io.File;
import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.util.ArrayList;
import java.util.Collections;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

import org.json.JSONArray;
import org.json.JSONException;
import org.json.JSONObject;

/**
 * manifest.json, the single source of truth of a build (runtime/manifest.py). A build is loaded from its
 * manifest alone; anything unusable (another schema version, a value against runtime/manifest.schema.json,
 * a missing file) is refused with one {@link BuildException} saying what is wrong and where.
 */
public final class Manifest {
    public static final int SCHEMA_VERSION = 2;

    /** One declared graph input or output; a symbolic dimension ("seq") is -1 in {@link #shape}. */
    public static final class IOSpec {
        public final String name;
        public final String dtype;
        public final long[] shape;

        IOSpec(JSONObject o) throws JSONException {
            name = o.getString("name");
            dtype = o.getString("dtype");
            JSONArray s = o.getJSONArray("shape");
            shape = new long[s.length()];
            for (int i = 0; i < shape.length; i++) {
                shape[i] = s.get(i) instanceof String ? -1 : s.getLong(i);
            }
        }
    }

    /** A method of the build: its file and its inputs and outputs in order. */
    public static final class MethodSpec {
        public final String name;
        public final String file;
        public final List<IOSpec> inputs;
        public final List<IOSpec> outputs;

        MethodSpec(String name, JSONObject o) throws JSONException {
            this.name = name;
            file = o.optString("file", "");
            inputs = ioList(o.getJSONArray("inputs"));
            outputs = ioList(o.getJSONArray("outputs"));
        }

        public List<String> inputNames() {
            List<String> names = new ArrayList<>();
            for (IOSpec s : inputs) {
                names.add(s.name);
            }
            return names;
        }

        private static List<IOSpec> ioList(JSONArray a) throws JSONException {
            List<IOSpec> out = new ArrayList<>();
            for (int i = 0; i < a.length(); i++) {
                out.add(new IOSpec(a.getJSONObject(i)));
            }
            return Collections.unmodifiableList(out);
        }
    }

    public final File dir;
    public final JSONObject json;
    public final String name;
    public final String target;
    public final String quant;
    public final String planName;
    public final KVLayout kv;
    public final JSONObject image;
    public final JSONObject prompt;
    public final String tokenizerFile;
    public final String goldenFile;
    public final List<String> graphFiles;
    public final Map<String, MethodSpec> methods;

    private Manifest(File dir, JSONObject m, String where) throws JSONException {
        this.dir = dir;
        json = m;
        Object version = m.opt("schema_version");
        if (!(version instanceof Number) || ((Number) version).doubleValue() != SCHEMA_VERSION) {
            throw new BuildException(where + " has schema version " + (version == null ? "None" : version)
                    + "; this runtime reads version " + SCHEMA_VERSION + " (rebuild with this foveate)");
        }
        new SchemaCheck(where).manifest(m);
        name = m.getString("name");
        target = m.getString("target");
        quant = m.optString("quant", "none");
        planName = m.getJSONObject("plan").optString("name", "?");
        kv = KVLayout.fromJson(m.getJSONObject("kv"));
        image = m.getJSONObject("image");
        prompt = m.getJSONObject("prompt");
        tokenizerFile = m.getString("tokenizer");
        goldenFile = m.optString("golden", "golden.json");
        JSONObject graphs = m.getJSONObject("graphs");
        JSONArray files = graphs.getJSONArray("files");
        List<String> fileList = new ArrayList<>();
        for (int i = 0; i < files.length(); i++) {
            fileList.add(files.getString(i));
        }
        graphFiles = Collections.unmodifiableList(fileList);
        JSONObject ms = graphs.getJSONObject("methods");
        Map<String, MethodSpec> map = new LinkedHashMap<>();
        for (String method : keys(ms)) {
            map.put(method, new MethodSpec(method, ms.getJSONObject(method)));
        }
        methods = Collections.unmodifiableMap(map);
    }

    /** Load dir/manifest.json and check that every file it names is there. */
    public static Manifest load(File dir) {
        File path = new File(dir, "manifest.json");
        if (!dir.isDirectory()) {
            throw new BuildException("build directory not found: " + dir);
        }
        if (!path.isFile()) {
            throw new BuildException(dir + " has no manifest.json: not a complete foveate build");
        }
        Manifest m = parse(readText(path), dir, path.toString());
        List<String> absent = new ArrayList<>();
        List<String> named = new ArrayList<>(m.graphFiles);
        named.add(m.tokenizerFile);
        for (String f : named) {
            if (!new File(dir, f).exists()) {
                absent.add(f);
            }
        }
        if (!absent.isEmpty()) {
            throw new BuildException(dir + " is missing " + String.join(", ", absent) + " named in its manifest");
        }
        return m;
    }

    /** A manifest from its JSON text; `where` names it in error messages. No files are checked. */
    public static Manifest parse(String text, File dir, String where) {
        try {
            return new Manifest(dir, new JSONObject(text), where);
        } catch (JSONException e) {
            throw new BuildException(where + " is not a valid manifest (" + e.getMessage() + ")");
        }
    }

    public MethodSpec method(String method) {
        MethodSpec spec = methods.get(method);
        if (spec == null) {
            throw new BuildException("the build has no method '" + method + "'; it has "
                    + String.join(", ", methods.keySet()));
        }
        return spec;
    }

    public File file(String relative) {
        return new File(dir, relative);
    }

    /** The decoder's hidden size (the last dimension of every embedding). */
    public int hiddenSize() {
        try {
            return json.getJSONObject("model").getJSONObject("config").getJSONObject("decoder").getInt("hidden_size");
        } catch (JSONException e) {
            throw new BuildException(name + ": manifest lacks model.config.decoder.hidden_size");
        }
    }

    static List<String> keys(JSONObject o) {
        List<String> out = new ArrayList<>();
        java.util.Iterator<String> it = o.keys();
        while (it.hasNext()) {
            out.add(it.next());
        }
        return out;
    }

    static String readText(File f) {
        try {
            return new String(Files.readAllBytes(f.toPath()), StandardCharsets.UTF_8);
        } catch (IOException e) {
            throw new BuildException(f + ": cannot read (" + e.getMessage() + ")");
        }
    }

    /**
     * The constraints of runtime/manifest.schema.json, checked without a JSON Schema engine, in the schema's
     * order: the first value that breaks one is refused with one {@link BuildException}, "where: path: what",
     * the path dotted as runtime/manifest.py writes it (image.std[0], graphs.methods.text_decoder.inputs[1]).
     */
    static final class SchemaCheck {
        static final String[] TOP = {"schema_version", "name", "target", "dtype", "model", "weights", "plan",
                "kv_layout", "image", "prompt", "tokenizer", "graphs", "kv", "runner", "parity", "golden", "cost"};
        static final String[] IMAGE = {"size", "resize_mode", "pad_color", "mean", "std", "channel_order",
                "resample", "scale", "layout", "dtype"};
        static final String[] PROMPT = {"before_image", "after_image", "image_token", "stop_tokens", "stop_ids"};
        static final String[] KV = {"layout", "text_rows", "vision_tokens", "image_slots", "max_context", "grid",
                "num_kv_heads", "head_dim", "dtype", "modes", "vision_kv_layers", "vision_kv", "prefix_layers",
                "text_kv_shape"};
        static final String[] MODES = {"full", "cross", "text", "exit"};
        static final String[] TENSOR_DTYPES = {"float32", "float16", "int64", "int32"};
        static final int SHOWN = 200; // characters of an offending value in a message

        private final String where;

        SchemaCheck(String where) {
            this.where = where;
        }

        void manifest(JSONObject m) {
            required(m, "", TOP);
            string(m, "", "name", 1);
            oneOf(m, "", "target", "executorch", "onnx", "coreml");
            oneOf(m, "", "dtype", "fp32", "fp16");
            if (m.has("quant")) {
                oneOf(m, "", "quant", "none", "int8", "8da4w", "int4");
            }
            if (m.has("quant_vision")) {
                oneOf(m, "", "quant_vision", "none", "int8");
            }
            JSONObject model = object(m, "", "model", "family", "source", "config");
            oneOf(model, "model", "family", "fastvlm", "mobilevlm");
            string(model, "model", "source", 0);
            JSONObject config = object(model, "model", "config", "family", "vision", "projector", "decoder");
            integer(object(config, "model.config", "decoder", "hidden_size"), "model.config.decoder", "hidden_size", 1);
            string(m, "", "weights", 0);
            plan(object(m, "", "plan", "name", "modes"));
            oneOf(m, "", "kv_layout", KVLayout.SPLIT, KVLayout.SHARED);
            image(object(m, "", "image", IMAGE));
            prompt(object(m, "", "prompt", PROMPT));
            string(m, "", "tokenizer", 1);
            JSONObject kv = object(m, "", "kv", KV);
            kv(kv);
            graphs(object(m, "", "graphs", "files", "methods"), kv.optString("layout"));
            object(m, "", "runner", "protocol", "layout");
            isBoolean(object(m, "", "parity", "file", "skipped"), "parity", "skipped");
            string(m, "", "golden", 0);
            string(m, "", "cost", 0);
            if (m.has("vectors")) {
                string(m, "", "vectors", 0);
            }
        }

        private void plan(JSONObject plan) {
            string(plan, "plan", "name", 0);
            JSONArray modes = array(plan, "plan", "modes", 1, Integer.MAX_VALUE);
            for (int i = 0; i < modes.length(); i++) {
                enumValue(modes.opt(i), "plan.modes[" + i + "]", MODES);
            }
            if (plan.has("window")) {
                integer(plan, "plan", "window", 0);
            }
            if (plan.has("keep_topk")) {
                JSONObject topk = object(plan, "plan", "keep_topk", "from_layer", "k");
                integer(topk, "plan.keep_topk", "from_layer", Long.MIN_VALUE);
                integer(topk, "plan.keep_topk", "k", 1);
            }
            if (plan.has("vision_heads")) {
                integers(plan, "plan", "vision_heads", 0);
            }
        }

        private void image(JSONObject image) {
            integer(image, "image", "size", 1);
            oneOf(image, "image", "resize_mode", "pad", "crop");
            JSONArray pad = array(image, "image", "pad_color", 3, 3);
            for (int i = 0; i < pad.length(); i++) {
                integer(pad.opt(i), "image.pad_color[" + i + "]", 0);
                if (((Number) pad.opt(i)).doubleValue() > 255) {
                    fail("image.pad_color[" + i + "]", show(pad.opt(i)) + " is greater than the maximum of 255");
                }
            }
            JSONArray mean = array(image, "image", "mean", 3, 3);
            for (int i = 0; i < mean.length(); i++) {
                number(mean.opt(i), "image.mean[" + i + "]", false);
            }
            JSONArray std = array(image, "image", "std", 3, 3);
            for (int i = 0; i < std.length(); i++) {
                number(std.opt(i), "image.std[" + i + "]", true);
            }
            oneOf(image, "image", "channel_order", "RGB", "BGR");
            oneOf(image, "image", "resample", "bicubic", "bilinear");
            number(image.opt("scale"), "image.scale", true);
            oneOf(image, "image", "layout", "NCHW");
            oneOf(image, "image", "dtype", "float32");
        }

        private void prompt(JSONObject prompt) {
            string(prompt, "prompt", "before_image", 0);
            string(prompt, "prompt", "after_image", 0);
            if (!prompt.optString("after_image").contains("{prompt}")) {
                fail("prompt.after_image", show(prompt.opt("after_image")) + " does not contain {prompt}");
            }
            string(prompt, "prompt", "image_token", 0);
            JSONArray stops = array(prompt, "prompt", "stop_tokens", 0, Integer.MAX_VALUE);
            for (int i = 0; i < stops.length(); i++) {
                string(stops.opt(i), "prompt.stop_tokens[" + i + "]", 0);
            }
            integers(prompt, "prompt", "stop_ids", Long.MIN_VALUE);
        }

        private void kv(JSONObject kv) {
            oneOf(kv, "kv", "layout", KVLayout.SPLIT, KVLayout.SHARED);
            integer(kv, "kv", "text_rows", 2);
            integer(kv, "kv", "vision_tokens", 0);
            integer(kv, "kv", "image_slots", 0);
            integer(kv, "kv", "max_context", 1);
            integer(kv, "kv", "grid", 0);
            integer(kv, "kv", "num_kv_heads", 1);
            integer(kv, "kv", "head_dim", 1);
            oneOf(kv, "kv", "dtype", "float32", "float16");
            JSONArray modes = array(kv, "kv", "modes", 0, Integer.MAX_VALUE);
            for (int i = 0; i < modes.length(); i++) {
                enumValue(modes.opt(i), "kv.modes[" + i + "]", MODES);
            }
            integers(kv, "kv", "vision_kv_layers", 0);
            JSONArray names = array(kv, "kv", "vision_kv", 0, Integer.MAX_VALUE);
            for (int i = 0; i < names.length(); i++) {
                string(names.opt(i), "kv.vision_kv[" + i + "]", 0);
            }
            integer(kv, "kv", "prefix_layers", 0);
            integers(kv, "kv", "text_kv_shape", 0);
            if (kv.has("vision_kv_shape") && !kv.isNull("vision_kv_shape")) {
                integers(kv, "kv", "vision_kv_shape", 0);
            }
            if (kv.has("vision_kv_design")) {
                oneOf(kv, "kv", "vision_kv_design", "buffers");
            }
        }

        private void graphs(JSONObject graphs, String layout) {
            JSONArray files = array(graphs, "graphs", "files", 1, Integer.MAX_VALUE);
            for (int i = 0; i < files.length(); i++) {
                string(files.opt(i), "graphs.files[" + i + "]", 1);
            }
            List<String> needed = Protocol.methodsFor(layout);
            JSONObject methods = object(graphs, "graphs", "methods", needed.toArray(new String[0]));
            for (String name : keys(methods)) {
                String at = "graphs.methods." + name;
                JSONObject method = object(methods, "graphs.methods", name, "file", "inputs", "outputs");
                string(method, at, "file", 1);
                for (String io : new String[] {"inputs", "outputs", "states"}) {
                    if (!method.has(io)) {
                        continue; // states are optional; inputs and outputs were required above
                    }
                    JSONArray tensors = array(method, at, io, 0, Integer.MAX_VALUE);
                    for (int i = 0; i < tensors.length(); i++) {
                        tensor(tensors.opt(i), at + "." + io + "[" + i + "]");
                    }
                }
            }
        }

        private void tensor(Object value, String at) {
            if (!(value instanceof JSONObject)) {
                fail(at, show(value) + " is not of type 'object'");
            }
            JSONObject t = (JSONObject) value;
            required(t, at, "name", "shape", "dtype");
            string(t, at, "name", 0);
            JSONArray shape = array(t, at, "shape", 0, Integer.MAX_VALUE);
            for (int i = 0; i < shape.length(); i++) {
                Object d = shape.opt(i);
                if (d instanceof String) {
                    string(d, at + ".shape[" + i + "]", 1);
                } else {
                    integer(d, at + ".shape[" + i + "]", 0);
                }
            }
            oneOf(t, at, "dtype", TENSOR_DTYPES);
        }

        // The schema's primitives. `at` is the path of the object holding `key` ("" at the top).

        private void required(JSONObject o, String at, String... keys) {
            for (String key : keys) {
                if (!o.has(key)) {
                    fail(at, "'" + key + "' is a required property");
                }
            }
        }

        private JSONObject object(JSONObject parent, String at, String key, String... requiredKeys) {
            Object value = parent.opt(key);
            if (!(value instanceof JSONObject)) {
                fail(join(at, key), show(value) + " is not of type 'object'");
            }
            required((JSONObject) value, join(at, key), requiredKeys);
            return (JSONObject) value;
        }

        private JSONArray array(JSONObject parent, String at, String key, int minItems, int maxItems) {
            Object value = parent.opt(key);
            String path = join(at, key);
            if (!(value instanceof JSONArray)) {
                fail(path, show(value) + " is not of type 'array'");
            }
            JSONArray a = (JSONArray) value;
            if (a.length() < minItems) {
                fail(path, show(a) + " is too short (" + minItems + " items needed)");
            }
            if (a.length() > maxItems) {
                fail(path, show(a) + " is too long (" + maxItems + " items at most)");
            }
            return a;
        }

        private void string(JSONObject parent, String at, String key, int minLength) {
            string(parent.opt(key), join(at, key), minLength);
        }

        private void string(Object value, String path, int minLength) {
            if (!(value instanceof String)) {
                fail(path, show(value) + " is not of type 'string'");
            }
            if (((String) value).length() < minLength) {
                fail(path, show(value) + " is too short");
            }
        }

        private void integer(JSONObject parent, String at, String key, long minimum) {
            integer(parent.opt(key), join(at, key), minimum);
        }

        /** An integer (a JSON number without a fraction, as JSON Schema has it) of at least `minimum`. */
        private void integer(Object value, String path, long minimum) {
            boolean integral = value instanceof Number && !(value instanceof Boolean)
                    && ((Number) value).doubleValue() == Math.rint(((Number) value).doubleValue());
            if (!integral) {
                fail(path, show(value) + " is not of type 'integer'");
            }
            if (((Number) value).doubleValue() < minimum) {
                fail(path, show(value) + " is less than the minimum of " + minimum);
            }
        }

        private void integers(JSONObject parent, String at, String key, long minimum) {
            JSONArray a = array(parent, at, key, 0, Integer.MAX_VALUE);
            for (int i = 0; i < a.length(); i++) {
                integer(a.opt(i), join(at, key) + "[" + i + "]", minimum);
            }
        }

        private void number(Object value, String path, boolean positive) {
            if (!(value instanceof Number) || !Double.isFinite(((Number) value).doubleValue())) {
                fail(path, show(value) + " is not of type 'number'");
            }
            if (positive && ((Number) value).doubleValue() <= 0) {
                fail(path, show(value) + " is less than or equal to the minimum of 0");
            }
        }

        private void isBoolean(JSONObject parent, String at, String key) {
            if (!(parent.opt(key) instanceof Boolean)) {
                fail(join(at, key), show(parent.opt(key)) + " is not of type 'boolean'");
            }
        }

        private void oneOf(JSONObject parent, String at, String key, String... values) {
            enumValue(parent.opt(key), join(at, key), values);
        }

        private void enumValue(Object value, String path, String... values) {
            for (String v : values) {
                if (v.equals(value)) {
                    return;
                }
            }
            fail(path, show(value) + " is not one of [" + String.join(", ", values) + "]");
        }

        private void fail(String path, String what) {
            throw new BuildException(where + ": " + (path.isEmpty() ? "" : path + ": ") + what);
        }

        private static String join(String at, String key) {
            return at.isEmpty() ? key : at + "." + key;
        }

        /** A value as JSON text, cut to one short line. */
        private static String show(Object value) {
            String text = value instanceof String ? JSONObject.quote((String) value) : String.valueOf(value);
            text = text.replace('\n', ' ');
            return text.length() <= SHOWN ? text : text.substring(0, SHOWN - 3) + "...";
        }
    }
}
