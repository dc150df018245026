package org.foveate.core;

import java.io.File;
import java.util.ArrayList;
import java.util.Collections;
import java.util.HashMap;
import java.util.HashSet;
import java.util.List;
import java.util.Map;
import java.util.Set;

import org.json.JSONArray;
import org.json.JSONException;
import org.json.JSONObject;

/**
 * Prompt tokenization and streaming detokenization over a tokenizer.json (runtime/tokenizer.py). Added
 * (special) tokens are matched first, leftmost-longest, also when typed inside the user's text; the rest goes
 * through the normalizer, the pre-tokenizer and the BPE model. The prompt is split around the image as the
 * manifest's template says: each piece tokenized on its own, only the first with the post-processor (a LLaMA
 * BOS), and without an image before_image + after_image is one piece.
 */
public final class Tokenizer {
    private static final class Added {
        final int id;
        final String content;
        final boolean special;
        final boolean lstrip;
        final boolean rstrip;

        Added(JSONObject o) throws JSONException {
            id = o.getInt("id");
            content = o.getString("content");
            special = o.optBoolean("special", false);
            lstrip = o.optBoolean("lstrip", false);
            rstrip = o.optBoolean("rstrip", false);
        }
    }

    private final Bpe bpe;
    private final List<Added> added = new ArrayList<>();
    private final Map<Integer, String> idToToken = new HashMap<>();
    private final Set<Integer> specialIds = new HashSet<>();
    private final List<TokenizerSteps.Step> normalizers;
    private final List<TokenizerSteps.Step> preTokenizers;
    private final List<TokenizerSteps.Step> decoders;
    private final int[] bosIds;
    private final int[] eosIds;
    private final int vocabSize;

    public final String beforeImage;
    public final String afterImage;
    public final String imageToken;
    public final int[] stopIds;

    /** tokenizer.json at `path`; `prompt` is the manifest's prompt section. */
    public Tokenizer(File path, JSONObject prompt) {
        if (!path.isFile()) {
            throw new TokenizerException(path + ": tokenizer file not found");
        }
        try {
            JSONObject t = new JSONObject(Manifest.readText(path));
            bpe = new Bpe(t.getJSONObject("model"));
            for (Map.Entry<String, Integer> e : bpe.vocab.entrySet()) {
                idToToken.put(e.getValue(), e.getKey());
            }
            JSONArray a = t.optJSONArray("added_tokens");
            for (int i = 0; a != null && i < a.length(); i++) {
                Added tok = new Added(a.getJSONObject(i));
                added.add(tok);
                idToToken.put(tok.id, tok.content);
                if (tok.special) {
                    specialIds.add(tok.id);
                }
            }
            vocabSize = idToToken.size();
            normalizers = TokenizerSteps.normalizers(t.opt("normalizer"));
            preTokenizers = TokenizerSteps.preTokenizers(t.opt("pre_tokenizer"));
            decoders = TokenizerSteps.decoders(t.opt("decoder"));
            int[][] wrap = postProcessor(t.opt("post_processor"));
            bosIds = wrap[0];
            eosIds = wrap[1];
            beforeImage = prompt.optString("before_image", "");
            afterImage = prompt.optString("after_image", "{prompt}");
            imageToken = prompt.optString("image_token", "<image>");
            List<Integer> stops = new ArrayList<>();
            JSONArray st = prompt.optJSONArray("stop_tokens");
            for (int i = 0; st != null && i < st.length(); i++) {
                Integer id = tokenToId(st.getString(i));
                if (id != null) {
                    stops.add(id); // stop tokens present in the vocab
                }
            }
            stopIds = stops.stream().mapToInt(Integer::intValue).toArray();
        } catch (JSONException | ClassCastException e) {
            throw new TokenizerException(path + ": not a valid tokenizer.json (" + e.getMessage() + ")");
        }
        if (!afterImage.contains("{prompt}")) {
            throw new TokenizerException("prompt template after_image must contain '{prompt}': '" + afterImage + "'");
        }
    }

    /** The ids the single-sequence post-processor puts before and after the text: {before, after}. */
    private int[][] postProcessor(Object json) throws JSONException {
        int[][] none = {new int[0], new int[0]};
        if (!(json instanceof JSONObject)) {
            return none;
        }
        JSONObject o = (JSONObject) json;
        switch (o.getString("type")) {
            case "ByteLevel":
                return none;
            case "Sequence":
                List<Integer> pre = new ArrayList<>();
                List<Integer> post = new ArrayList<>();
                JSONArray a = o.getJSONArray("processors");
                for (int i = 0; i < a.length(); i++) {
                    int[][] w = postProcessor(a.get(i));
                    for (int id : w[0]) {
                        pre.add(id);
                    }
                    for (int id : w[1]) {
                        post.add(id);
                    }
                }
                return new int[][] {ints(pre), ints(post)};
            case "TemplateProcessing":
                return template(o);
            case "BertProcessing":
            case "RobertaProcessing":
                return new int[][] {{o.getJSONArray("cls").getInt(1)}, {o.getJSONArray("sep").getInt(1)}};
            default:
                throw new TokenizerException("tokenizer.json: post-processor '" + o.getString("type") + "' is not supported");
        }
    }

    private static int[][] template(JSONObject o) throws JSONException {
        JSONArray single = o.getJSONArray("single");
        JSONObject specials = o.optJSONObject("special_tokens");
        List<Integer> pre = new ArrayList<>();
        List<Integer> post = new ArrayList<>();
        boolean seen = false;
        for (int i = 0; i < single.length(); i++) {
            JSONObject piece = single.getJSONObject(i);
            if (piece.has("Sequence")) {
                seen = true;
                continue;
            }
            String name = piece.getJSONObject("SpecialToken").getString("id");
            JSONArray ids = specials.getJSONObject(name).getJSONArray("ids");
            for (int k = 0; k < ids.length(); k++) {
                (seen ? post : pre).add(ids.getInt(k));
            }
        }
        return new int[][] {ints(pre), ints(post)};
    }

    private static int[] ints(List<Integer> list) {
        return list.stream().mapToInt(Integer::intValue).toArray();
    }

    public int vocabSize() {
        return vocabSize;
    }

    public Integer tokenToId(String token) {
        for (Added a : added) {
            if (a.content.equals(token)) {
                return a.id;
            }
        }
        return bpe.vocab.get(token);
    }

    public int[] encode(String text, boolean addSpecialTokens) {
        List<Integer> ids = new ArrayList<>();
        if (addSpecialTokens) {
            for (int id : bosIds) {
                ids.add(id);
            }
        }
        int start = 0;
        int i = 0;
        while (i < text.length()) {
            Added match = matchAt(text, i);
            if (match == null) {
                i++;
                continue;
            }
            int from = i;
            int to = i + match.content.length();
            if (match.lstrip) {
                while (from > start && Character.isWhitespace(text.charAt(from - 1))) {
                    from--;
                }
            }
            if (match.rstrip) {
                while (to < text.length() && Character.isWhitespace(text.charAt(to))) {
                    to++;
                }
            }
            encodeSegment(text.substring(start, from), start == 0, ids);
            ids.add(match.id);
            start = i = to;
        }
        encodeSegment(text.substring(start), start == 0, ids);
        if (addSpecialTokens) {
            for (int id : eosIds) {
                ids.add(id);
            }
        }
        return ints(ids);
    }

    /** The longest added token starting at text[i], or null. */
    private Added matchAt(String text, int i) {
        Added best = null;
        for (Added a : added) {
            if (!a.content.isEmpty() && text.startsWith(a.content, i)
                    && (best == null || a.content.length() > best.content.length())) {
                best = a;
            }
        }
        return best;
    }

    private void encodeSegment(String segment, boolean first, List<Integer> ids) {
        if (segment.isEmpty()) {
            return;
        }
        List<String> pieces = TokenizerSteps.run(normalizers, Collections.singletonList(segment), first);
        pieces = TokenizerSteps.run(preTokenizers, pieces, first);
        for (String word : pieces) {
            bpe.tokenize(word, ids);
        }
    }

    public String decode(int[] ids, boolean skipSpecialTokens) {
        List<String> tokens = new ArrayList<>();
        for (int id : ids) {
            String t = idToToken.get(id);
            if (t != null && !(skipSpecialTokens && specialIds.contains(id))) {
                tokens.add(t);
            }
        }
        return String.join("", TokenizerSteps.run(decoders, tokens, true));
    }

    public String decode(int[] ids) {
        return decode(ids, true);
    }

    /** The template filled with `text`: {ids before the image, ids after it}. */
    public int[][] encodePrompt(String text, boolean withImage) {
        String after = afterImage.replace("{prompt}", text);
        if (!withImage) {
            return new int[][] {new int[0], encode(beforeImage + after, true)};
        }
        return new int[][] {encode(beforeImage, true), encode(after, false)};
    }

    public StreamDecoder stream() {
        return new StreamDecoder(this, true);
    }

    /**
     * Text deltas as ids arrive: decode all ids so far; if the text ends in U+FFFD (a character whose bytes have
     * not all arrived) return "" and hold it back; else return the text past what was already emitted.
     */
    public static final class StreamDecoder {
        private final Tokenizer tokenizer;
        private final boolean skip;
        private final List<Integer> ids = new ArrayList<>();
        private String text = "";

        public StreamDecoder(Tokenizer tokenizer, boolean skipSpecialTokens) {
            this.tokenizer = tokenizer;
            this.skip = skipSpecialTokens;
        }

        public String push(int id) {
            ids.add(id);
            String now = tokenizer.decode(ints(ids), skip);
            if (now.endsWith("\uFFFD")) {
                return "";
            }
            return emit(now);
        }

        /** The rest of the text, incomplete characters included. */
        public String finish() {
            return emit(tokenizer.decode(ints(ids), skip));
        }

        private String emit(String now) {
            int common = 0;
            int n = Math.min(now.length(), text.length());
            while (common < n && now.charAt(common) == text.charAt(common)) {
                common++;
            }
            if (common > 0 && common < now.length() && Character.isHighSurrogate(now.charAt(common - 1))) {
                common--; // never split a character in two
            }
            String delta = now.substring(common);
            text = now;
            return delta;
        }
    }
}
