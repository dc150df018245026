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
 * manifest alone; anything unusable (another schema version, a missing key, method or file) is refused
 * with one {@link BuildException} saying what is wrong.
 */
public final class Manifest {
    public static final int SCHEMA_VERSION = 2;
    static final String[] REQUIRED = {"schema_version", "name", "target", "dtype", "model", "plan", "kv_layout",
            "image", "prompt", "tokenizer", "graphs", "kv", "parity"};

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
        List<String> missing = new ArrayList<>();
        for (String key : REQUIRED) {
            if (!m.has(key)) {
                missing.add(key);
            }
        }
        if (!missing.isEmpty()) {
            throw new BuildException(where + " lacks required keys: " + String.join(", ", missing));
        }
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
        List<String> absent = new ArrayList<>();
        for (String method : Protocol.methodsFor(kv.layout)) {
            if (!methods.containsKey(method)) {
                absent.add(method);
            }
        }
        if (!absent.isEmpty()) {
            throw new BuildException(where + " declares no method " + String.join(", ", absent) + " (a "
                    + kv.layout + " build needs " + String.join(", ", Protocol.methodsFor(kv.layout))
                    + "); it has " + String.join(", ", methods.keySet()));
        }
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
}
