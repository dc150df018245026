package org.foveate.core;

import java.util.ArrayList;
import java.util.Collections;
import java.util.List;

import org.json.JSONArray;
import org.json.JSONException;
import org.json.JSONObject;

/**
 * What the KV cache holds, as the manifest's "kv" section records it (models/protocol.py's KVLayout):
 * derived once at build time, read here, never re-derived.
 */
public final class KVLayout {
    public static final String SPLIT = "split";
    public static final String SHARED = "shared";

    public final String layout;
    public final int textRows;
    public final int visionTokens;
    public final int imageSlots;
    public final int maxContext;
    public final int prefixLayers;
    public final List<String> visionKv;
    public final long[] visionKvShape; // null in the shared layout

    public KVLayout(String layout, int textRows, int visionTokens, int imageSlots, int maxContext, int prefixLayers,
                    List<String> visionKv, long[] visionKvShape) {
        if (!SPLIT.equals(layout) && !SHARED.equals(layout)) {
            throw new BuildException("unknown KV layout '" + layout + "'; valid layouts: split, shared");
        }
        this.layout = layout;
        this.textRows = textRows;
        this.visionTokens = visionTokens;
        this.imageSlots = imageSlots;
        this.maxContext = maxContext;
        this.prefixLayers = prefixLayers;
        this.visionKv = Collections.unmodifiableList(new ArrayList<>(visionKv));
        this.visionKvShape = visionKvShape;
    }

    static KVLayout fromJson(JSONObject kv) throws JSONException {
        List<String> names = new ArrayList<>();
        JSONArray a = kv.optJSONArray("vision_kv");
        for (int i = 0; a != null && i < a.length(); i++) {
            names.add(a.getString(i));
        }
        long[] shape = null;
        JSONArray s = kv.optJSONArray("vision_kv_shape");
        if (s != null) {
            shape = new long[s.length()];
            for (int i = 0; i < shape.length; i++) {
                shape[i] = s.getLong(i);
            }
        }
        return new KVLayout(kv.getString("layout"), kv.getInt("text_rows"), kv.getInt("vision_tokens"),
                kv.getInt("image_slots"), kv.getInt("max_context"), kv.optInt("prefix_layers", 0), names, shape);
    }

    public boolean isShared() {
        return SHARED.equals(layout);
    }

    /** Rows a prompt of `textTokens` takes; CapacityException when nothing could be generated after it. */
    public int checkFits(int textTokens, boolean withImage) {
        int need = textTokens + (withImage ? imageSlots : 0);
        if (need >= textRows) {
            throw new CapacityException("prompt of " + need + " tokens does not fit the KV capacity of " + textRows
                    + " rows (" + layout + " layout)");
        }
        return need;
    }

    /** Refuse a chunk of n rows at `slot` that the text cache cannot hold, before any graph runs. */
    public void checkSlots(int slot, int n) {
        if (slot < 0 || slot + n > textRows) {
            throw new BuildException("a chunk of " + n + " tokens at slot " + slot + " does not fit the KV cache of "
                    + textRows + " rows");
        }
    }
}
