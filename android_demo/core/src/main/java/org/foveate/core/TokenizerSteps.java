package org.foveate.core;

import java.nio.charset.StandardCharsets;
import java.text.Normalizer;
import java.util.ArrayList;
import java.util.Collections;
import java.util.List;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

import org.json.JSONArray;
import org.json.JSONException;
import org.json.JSONObject;

/**
 * The text steps of a tokenizer.json around its BPE model, as Hugging Face tokenizers runs them: normalizers
 * (Prepend, Replace, NFC...), pre-tokenizers (ByteLevel with GPT-2's regex, Split, Metaspace) and decoders
 * (ByteLevel, Replace, ByteFallback, Fuse, Strip, Metaspace). Only the kinds ByteLevel and SentencePiece-derived
 * (LLaMA, MobileVLM) files use are read; any other is refused by name.
 */
final class TokenizerSteps {
    static final String GPT2_PATTERN =
            "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";
    private static final char[] BYTE_TO_CHAR = new char[256];
    private static final int[] CHAR_TO_BYTE = new int[512];

    static {
        // GPT-2's bytes_to_unicode: printable bytes stand for themselves, the others move to 256 + n.
        java.util.Arrays.fill(CHAR_TO_BYTE, -1);
        int n = 0;
        for (int b = 0; b < 256; b++) {
            boolean printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
            char c = printable ? (char) b : (char) (256 + n++);
            BYTE_TO_CHAR[b] = c;
            CHAR_TO_BYTE[c] = b;
        }
    }

    private TokenizerSteps() {
    }

    /** One step of a chain; normalizers, pre-tokenizers and decoders all map a list of pieces to a list. */
    interface Step {
        /** `first`: whether the pieces begin the original text (Metaspace's prepend_scheme "first"). */
        List<String> apply(List<String> pieces, boolean first);
    }

    static List<String> run(List<Step> steps, List<String> pieces, boolean first) {
        for (Step s : steps) {
            pieces = s.apply(pieces, first);
        }
        return pieces;
    }

    /** Parses one member of a chain (never a "Sequence") into its steps. */
    private interface Member {
        List<Step> parse(JSONObject o, String type) throws JSONException;
    }

    /**
     * The steps of a tokenizer.json chain entry: `none` when the entry is absent, the members of a
     * "Sequence" (listed under `key`) in order, or the one member it is.
     */
    private static List<Step> chain(Object json, String key, Member member, List<Step> none) throws JSONException {
        if (!(json instanceof JSONObject)) {
            return none;
        }
        JSONObject o = (JSONObject) json;
        String type = o.getString("type");
        if (!type.equals("Sequence")) {
            return member.parse(o, type);
        }
        List<Step> out = new ArrayList<>();
        JSONArray a = o.getJSONArray(key);
        for (int i = 0; i < a.length(); i++) {
            out.addAll(chain(a.get(i), key, member, new ArrayList<>()));
        }
        return out;
    }

    static List<Step> normalizers(Object json) throws JSONException {
        return chain(json, "normalizers", TokenizerSteps::normalizer, new ArrayList<>());
    }

    static List<Step> preTokenizers(Object json) throws JSONException {
        return chain(json, "pretokenizers", TokenizerSteps::preTokenizer, new ArrayList<>());
    }

    static List<Step> decoders(Object json) throws JSONException {
        List<Step> join = new ArrayList<>();
        join.add((pieces, first) -> Collections.singletonList(String.join(" ", pieces)));
        return chain(json, "decoders", TokenizerSteps::decoder, join);
    }

    private static List<Step> normalizer(JSONObject o, String type) throws JSONException {
        List<Step> out = new ArrayList<>();
        switch (type) {
            case "Prepend":
                String prefix = o.getString("prepend");
                out.add(map(s -> s.isEmpty() ? s : prefix + s));
                return out;
            case "Replace":
                out.add(replace(o));
                return out;
            case "NFC":
            case "NFD":
            case "NFKC":
            case "NFKD":
                Normalizer.Form form = Normalizer.Form.valueOf(type);
                out.add(map(s -> Normalizer.normalize(s, form)));
                return out;
            default:
                throw unsupported("normalizer", type);
        }
    }

    private static List<Step> preTokenizer(JSONObject o, String type) throws JSONException {
        List<Step> out = new ArrayList<>();
        switch (type) {
            case "ByteLevel":
                boolean prefixSpace = o.optBoolean("add_prefix_space", false);
                if (prefixSpace) {
                    out.add(map(s -> s.startsWith(" ") ? s : " " + s));
                }
                if (o.optBoolean("use_regex", true)) {
                    out.add(split(compile(GPT2_PATTERN)));
                }
                out.add(map(TokenizerSteps::bytesToChars));
                return out;
            case "Split":
                if (!o.optString("behavior", "Isolated").equals("Isolated") || o.optBoolean("invert", false)) {
                    throw unsupported("Split behaviour", o.optString("behavior") + (o.optBoolean("invert") ? " inverted" : ""));
                }
                JSONObject p = o.getJSONObject("pattern");
                out.add(split(p.has("Regex") ? compile(p.getString("Regex")) : Pattern.compile(Pattern.quote(p.getString("String")))));
                return out;
            case "Metaspace":
                out.add(metaspace(o));
                return out;
            default:
                throw unsupported("pre-tokenizer", type);
        }
    }

    private static List<Step> decoder(JSONObject o, String type) throws JSONException {
        List<Step> out = new ArrayList<>();
        switch (type) {
            case "ByteLevel":
                out.add((pieces, first) -> Collections.singletonList(byteLevelDecode(pieces)));
                return out;
            case "Replace":
                out.add(replace(o));
                return out;
            case "ByteFallback":
                out.add((pieces, first) -> byteFallback(pieces));
                return out;
            case "Fuse":
                out.add((pieces, first) -> Collections.singletonList(String.join("", pieces)));
                return out;
            case "Strip":
                out.add(strip(o.getString("content"), o.optInt("start", 0), o.optInt("stop", 0)));
                return out;
            case "Metaspace":
                String rep = o.optString("replacement", "\u2581");
                boolean prepend = !o.optString("prepend_scheme", "always").equals("never");
                out.add((pieces, first) -> {
                    List<String> r = new ArrayList<>();
                    for (int i = 0; i < pieces.size(); i++) {
                        String s = pieces.get(i);
                        if (i == 0 && prepend && s.startsWith(rep)) {
                            s = s.substring(rep.length());
                        }
                        r.add(s.replace(rep, " "));
                    }
                    return r;
                });
                return out;
            default:
                throw unsupported("decoder", type);
        }
    }

    private static Step map(java.util.function.UnaryOperator<String> f) {
        return (pieces, first) -> {
            List<String> r = new ArrayList<>(pieces.size());
            for (String s : pieces) {
                r.add(f.apply(s));
            }
            return r;
        };
    }

    private static Step replace(JSONObject o) throws JSONException {
        JSONObject p = o.getJSONObject("pattern");
        String content = o.getString("content");
        if (p.has("Regex")) {
            Pattern re = compile(p.getString("Regex"));
            return map(s -> re.matcher(s).replaceAll(Matcher.quoteReplacement(content)));
        }
        String from = p.getString("String");
        return map(s -> s.replace(from, content));
    }

    /** Isolated: every match is a piece and so is every stretch between matches. */
    private static Step split(Pattern re) {
        return (pieces, first) -> {
            List<String> r = new ArrayList<>();
            for (String s : pieces) {
                Matcher m = re.matcher(s);
                int last = 0;
                while (m.find()) {
                    if (m.end() == m.start()) {
                        continue;
                    }
                    if (m.start() > last) {
                        r.add(s.substring(last, m.start()));
                    }
                    r.add(m.group());
                    last = m.end();
                }
                if (last < s.length()) {
                    r.add(s.substring(last));
                }
            }
            return r;
        };
    }

    private static Step metaspace(JSONObject o) {
        String rep = o.optString("replacement", "\u2581");
        String scheme = o.optString("prepend_scheme", o.optBoolean("add_prefix_space", true) ? "always" : "never");
        boolean splitWords = o.optBoolean("split", true);
        return (pieces, first) -> {
            List<String> r = new ArrayList<>();
            for (String s : pieces) {
                String t = s.replace(" ", rep);
                boolean prepend = scheme.equals("always") || (scheme.equals("first") && first);
                if (prepend && !t.startsWith(rep) && !t.isEmpty()) {
                    t = rep + t;
                }
                if (!splitWords) {
                    r.add(t);
                    continue;
                }
                int start = 0;
                for (int i = t.indexOf(rep, 1); i > 0; i = t.indexOf(rep, i + 1)) {
                    r.add(t.substring(start, i)); // MergedWithNext: each piece starts with the replacement
                    start = i;
                }
                r.add(t.substring(start));
            }
            return r;
        };
    }

    private static Step strip(String content, int start, int stop) {
        int c = content.codePointAt(0);
        return map(s -> {
            int[] cps = s.codePoints().toArray();
            int from = 0;
            while (from < start && from < cps.length && cps[from] == c) {
                from++;
            }
            int to = cps.length;
            while (cps.length - to < stop && to > from && cps[to - 1] == c) {
                to--;
            }
            return new String(cps, from, to - from);
        });
    }

    /** Unicode classes (\s as White_Space), as the Rust regex engines have them. */
    static Pattern compile(String regex) {
        try {
            return Pattern.compile(regex, Pattern.UNICODE_CHARACTER_CLASS);
        } catch (IllegalArgumentException | UnsupportedOperationException e) {
            return Pattern.compile(regex); // Android's ICU regex refuses the flag; its classes are Unicode already
        }
    }

    static String bytesToChars(String s) {
        byte[] bytes = s.getBytes(StandardCharsets.UTF_8);
        char[] out = new char[bytes.length];
        for (int i = 0; i < bytes.length; i++) {
            out[i] = BYTE_TO_CHAR[bytes[i] & 0xFF];
        }
        return new String(out);
    }

    /** Each token's characters back to bytes (a token with a character outside the map: its UTF-8), then UTF-8. */
    static String byteLevelDecode(List<String> pieces) {
        java.io.ByteArrayOutputStream bytes = new java.io.ByteArrayOutputStream();
        for (String t : pieces) {
            byte[] mapped = new byte[t.length()];
            boolean ok = true;
            for (int i = 0; i < t.length() && ok; i++) {
                char c = t.charAt(i);
                ok = c < CHAR_TO_BYTE.length && CHAR_TO_BYTE[c] >= 0;
                if (ok) {
                    mapped[i] = (byte) CHAR_TO_BYTE[c];
                }
            }
            byte[] b = ok ? mapped : t.getBytes(StandardCharsets.UTF_8);
            bytes.write(b, 0, b.length);
        }
        return Utf8.decodeLossy(bytes.toByteArray());
    }

    /** Runs of `<0xNN>` tokens become their UTF-8 text, or one U+FFFD per byte when not valid UTF-8. */
    static List<String> byteFallback(List<String> pieces) {
        List<String> out = new ArrayList<>();
        java.io.ByteArrayOutputStream run = new java.io.ByteArrayOutputStream();
        for (String t : pieces) {
            if (t.length() == 6 && t.startsWith("<0x") && t.endsWith(">") && isHex(t.substring(3, 5))) {
                run.write(Integer.parseInt(t.substring(3, 5), 16));
                continue;
            }
            flushBytes(run, out);
            out.add(t);
        }
        flushBytes(run, out);
        return out;
    }

    private static boolean isHex(String s) {
        return s.chars().allMatch(c -> Character.digit(c, 16) >= 0);
    }

    private static void flushBytes(java.io.ByteArrayOutputStream run, List<String> out) {
        if (run.size() == 0) {
            return;
        }
        byte[] b = run.toByteArray();
        run.reset();
        try {
            out.add(StandardCharsets.UTF_8.newDecoder().decode(java.nio.ByteBuffer.wrap(b)).toString());
        } catch (java.nio.charset.CharacterCodingException e) {
            for (int i = 0; i < b.length; i++) {
                out.add("\uFFFD");
            }
        }
    }

    private static TokenizerException unsupported(String what, String type) {
        return new TokenizerException("tokenizer.json: " + what + " '" + type + "' is not supported");
    }
}
