package org.foveate.core;

import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;

/**
 * The method and input names of the runner protocol (docs/runner-protocol.md), per KV layout. Every engine
 * speaks these names; {@link GraphEngine} checks them against the manifest's declarations when it starts.
 */
public final class Protocol {
    public static final String VISION_ENCODER = "vision_encoder";
    public static final String TOKEN_EMBEDDING = "token_embedding";
    public static final String VISION_PREFILL = "vision_prefill";
    public static final String TEXT_DECODER = "text_decoder";

    private Protocol() {
    }

    public static List<String> methodsFor(String layout) {
        if (KVLayout.SHARED.equals(layout)) {
            return Arrays.asList(VISION_ENCODER, TOKEN_EMBEDDING, TEXT_DECODER);
        }
        return Arrays.asList(VISION_ENCODER, TOKEN_EMBEDDING, VISION_PREFILL, TEXT_DECODER);
    }

    /** The inputs, in order, that the engine feeds `method` of a build with this KV layout. */
    public static List<String> inputsFor(String method, KVLayout kv) {
        switch (method) {
            case VISION_ENCODER:
                return Arrays.asList("pixels");
            case TOKEN_EMBEDDING:
                return Arrays.asList("ids");
            case VISION_PREFILL:
                return Arrays.asList("vision_embeds", "start_pos", "prefix_embeds");
            case TEXT_DECODER:
                if (kv.isShared()) {
                    return Arrays.asList("embeds", "input_pos");
                }
                List<String> names = new ArrayList<>(Arrays.asList("embeds", "pos", "slot", "select_topk"));
                names.addAll(kv.visionKv);
                return names;
            default:
                throw new BuildException("the runner protocol has no method '" + method + "'");
        }
    }
}
