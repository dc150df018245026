package org.foveate.core;

/**
 * An engine of the runner protocol (models/protocol.py): the five calls a {@link Conversation} makes.
 * Arrays are {@link Tensor}s; logits come back as the V floats of the chunk's last position.
 */
public interface Engine extends AutoCloseable {
    /** Forget the previous conversation. */
    void reset();

    /** ids -> embeds (1, T, hidden). */
    Tensor embed(long[] ids);

    /** pixels (1, 3, S, S) -> vision embeds (1, N_v, hidden). */
    Tensor encodeImage(Tensor pixels);

    /** Split layout: the image after `startPos` text tokens (their embeddings, or null); keeps the vision K/V. */
    void prefillVision(Tensor visionEmbeds, int startPos, Tensor prefixEmbeds);

    /** A chunk at positions pos.., text-cache rows slot..; `select` marks the chunk that ends the prompt. */
    float[] text(Tensor embeds, int pos, int slot, boolean select);

    @Override
    void close();
}
