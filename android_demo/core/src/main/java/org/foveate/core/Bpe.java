package org.foveate.core;

import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;

import org.json.JSONArray;
import org.json.JSONException;
import org.json.JSONObject;

/**
 * The BPE model of a tokenizer.json: vocab, merges by rank, unknown pieces by byte fallback (`<0xNN>`, as
 * SentencePiece-derived files have it) or the unk token. Merging follows Hugging Face tokenizers: the
 * lowest-ranked adjacent pair first, the leftmost on ties, until no pair has a rank.
 */
final class Bpe {
    final Map<String, Integer> vocab = new HashMap<>();
    private final Map<Long, int[]> merges = new HashMap<>(); // (left id, right id) -> {rank, merged id}
    private final Integer unkId;
    private final boolean fuseUnk;
    private final boolean byteFallback;
    private final boolean ignoreMerges;

    Bpe(JSONObject model) throws JSONException {
        String type = model.optString("type", "BPE");
        if (!type.equals("BPE")) {
            throw new TokenizerException("tokenizer model " + type + " is not supported; supported: BPE");
        }
        if (affix(model, "continuing_subword_prefix") || affix(model, "end_of_word_suffix")) {
            throw new TokenizerException("BPE with continuing_subword_prefix or end_of_word_suffix is not supported");
        }
        JSONObject v = model.getJSONObject("vocab");
        for (String token : Manifest.keys(v)) {
            vocab.put(token, v.getInt(token));
        }
        JSONArray m = model.getJSONArray("merges");
        for (int rank = 0; rank < m.length(); rank++) {
            String a;
            String b;
            Object entry = m.get(rank);
            if (entry instanceof JSONArray) {
                a = ((JSONArray) entry).getString(0);
                b = ((JSONArray) entry).getString(1);
            } else {
                String s = (String) entry;
                int space = s.indexOf(' ', 1);
                if (space < 0) {
                    throw new TokenizerException("merge " + rank + " is not a pair: '" + s + "'");
                }
                a = s.substring(0, space);
                b = s.substring(space + 1);
            }
            Integer ia = vocab.get(a);
            Integer ib = vocab.get(b);
            Integer merged = vocab.get(a + b);
            if (ia == null || ib == null || merged == null) {
                throw new TokenizerException("merge " + rank + " ('" + a + "', '" + b + "') uses a token not in the vocab");
            }
            merges.putIfAbsent(pair(ia, ib), new int[] {rank, merged});
        }
        String unk = model.isNull("unk_token") ? null : model.getString("unk_token");
        unkId = unk == null ? null : vocab.get(unk);
        fuseUnk = model.optBoolean("fuse_unk", false);
        byteFallback = model.optBoolean("byte_fallback", false);
        ignoreMerges = model.optBoolean("ignore_merges", false);
    }

    private static long pair(int a, int b) {
        return ((long) a << 32) | (b & 0xFFFFFFFFL);
    }

    /** The ids of one pre-tokenized word. */
    void tokenize(String word, List<Integer> out) {
        if (word.isEmpty()) {
            return;
        }
        if (ignoreMerges && vocab.containsKey(word)) {
            out.add(vocab.get(word));
            return;
        }
        List<Integer> symbols = new ArrayList<>();
        Integer pendingUnk = null;
        for (int i = 0; i < word.length(); ) {
            int cp = word.codePointAt(i);
            String ch = new String(Character.toChars(cp));
            i += ch.length();
            Integer id = vocab.get(ch);
            if (id != null) {
                if (pendingUnk != null) {
                    symbols.add(pendingUnk);
                    pendingUnk = null;
                }
                symbols.add(id);
                continue;
            }
            if (byteFallback && addBytes(ch, symbols, pendingUnk)) {
                pendingUnk = null;
                continue;
            }
            if (unkId != null) {
                if (pendingUnk != null && !fuseUnk) {
                    symbols.add(pendingUnk);
                }
                pendingUnk = unkId;
            }
        }
        if (pendingUnk != null) {
            symbols.add(pendingUnk);
        }
        mergeAll(symbols);
        out.addAll(symbols);
    }

    private boolean addBytes(String ch, List<Integer> symbols, Integer pendingUnk) {
        byte[] bytes = ch.getBytes(StandardCharsets.UTF_8);
        int[] ids = new int[bytes.length];
        for (int j = 0; j < bytes.length; j++) {
            Integer id = vocab.get(String.format("<0x%02X>", bytes[j] & 0xFF));
            if (id == null) {
                return false;
            }
            ids[j] = id;
        }
        if (pendingUnk != null) {
            symbols.add(pendingUnk);
        }
        for (int id : ids) {
            symbols.add(id);
        }
        return true;
    }

    private void mergeAll(List<Integer> symbols) {
        while (symbols.size() > 1) {
            int best = -1;
            int[] bestMerge = null;
            for (int i = 0; i + 1 < symbols.size(); i++) {
                int[] merge = merges.get(pair(symbols.get(i), symbols.get(i + 1)));
                if (merge != null && (bestMerge == null || merge[0] < bestMerge[0])) {
                    best = i;
                    bestMerge = merge;
                }
            }
            if (bestMerge == null) {
                return;
            }
            symbols.set(best, bestMerge[1]);
            symbols.remove(best + 1);
        }
    }

    /** Whether the BPE model sets `key` to a non-empty string: "" (Qwen2's files write it) is the same as null. */
    private static boolean affix(JSONObject model, String key) throws JSONException {
        return !model.isNull(key) && !model.getString(key).isEmpty();
    }
}
