"""Whole-sequence forward of a planned decoder with explicit masks: no cache, no chunks.

This is the plan's semantics written a second way (docs/design.md §3), one (S, S) mask per layer and head,
so that the chunked, cached path in models/decoder.py can be checked against it, and so calibration
can read every layer's attention over the whole sequence.
"""

from __future__ import annotations

import torch

from .decoder import Decoder, apply_rope
from .plan import VISION_MODES


@torch.no_grad()
def forward_sequence(dec: Decoder, prefix, vision, rest, prompt_rest: int, return_attn: bool = False, observe=None):
    """prefix (1, P, hid), vision (1, N_v, hid) or None, rest (1, R, hid) = question then generated tokens.

    prompt_rest: how many tokens of `rest` belong to the prompt (the last of them picks the top-k).
    Returns logits (1, R, V) of the `rest` positions (and per-layer attention probs (1, H, S, S)).
    observe(x, probs, v) is called for every layer with its input states (1, S, hid), attention probs
    (1, H, S, S) and values (1, H_kv, S, D), then once with the last layer's output and None, None.
    """
    parts = [prefix] + ([vision] if vision is not None else []) + [rest]
    x = torch.cat(parts, dim=1)  # (1, S, hid)
    S, P = x.shape[1], prefix.shape[1]
    nv = vision.shape[1] if vision is not None else 0
    is_vis = torch.zeros(S, dtype=torch.bool)
    is_vis[P:P + nv] = True
    cos, sin = dec.rope_cos[:S], dec.rope_sin[:S]
    causal = torch.tril(torch.ones(S, S, dtype=torch.bool))
    vis_self = torch.zeros(S, S, dtype=torch.bool)
    vis_self[P:P + nv, P:P + nv] = dec.vision_self_bias[:nv, :nv] == 0
    H = dec.cfg.num_heads
    head_ok = torch.ones(H, dtype=torch.bool) if dec.plan.vision_heads is None else torch.zeros(H, dtype=torch.bool)
    if dec.plan.vision_heads is not None:
        head_ok[list(dec.plan.vision_heads)] = True
    keep = torch.ones(S, dtype=torch.bool)
    last_prompt = P + nv + prompt_rest - 1
    attn_maps = []
    for i, layer in enumerate(dec.layers):
        mode = dec.plan.modes[i]
        text_rows = ~is_vis[:, None] & causal  # (S, S)
        text_rows = text_rows & (~is_vis[None, :] | (mode in VISION_MODES))
        mask = text_rows[None].repeat(H, 1, 1)  # (H, S, S)
        mask[~head_ok] &= ~is_vis[None, None, :].expand(int((~head_ok).sum()), S, S)
        vis_rows = (causal & ~is_vis[None, :]) | vis_self if mode == "full" else torch.eye(S, dtype=torch.bool)
        mask[:, is_vis] = vis_rows[is_vis][None].expand(H, -1, -1)
        attn = layer.self_attn
        h = layer.input_layernorm(x)
        q = apply_rope(attn.q_proj(h).view(1, S, H, -1).transpose(1, 2), cos, sin)  # (1, H, S, D)
        k = apply_rope(attn.k_proj(h).view(1, S, attn.n_kv, -1).transpose(1, 2), cos, sin)
        v = attn.v_proj(h).view(1, S, attn.n_kv, -1).transpose(1, 2)
        topk = dec.plan.keep_topk
        if topk is not None and i == topk.from_layer and nv:
            probs = attn.scores(q, k, torch.where(mask, 0.0, float("-inf"))[None])[0, :, last_prompt]  # (H, S)
            chosen = torch.topk(probs[:, P:P + nv].mean(0), topk.k).indices
            keep = ~is_vis.clone()
            keep[P + chosen] = True
        if topk is not None and i >= topk.from_layer:
            mask &= ~(~is_vis[:, None] & ~keep[None, :])[None]  # text rows see kept vision only
        bias = torch.where(mask, 0.0, float("-inf"))[None]  # (1, H, S, S)
        if return_attn or observe is not None:
            attn_maps.append(attn.scores(q, k, bias))
        if observe is not None:
            observe(x, attn_maps[-1], v)
        y = layer.block(x, attn.attend(q, k, v, bias))
        update = torch.ones(S, dtype=torch.bool) if mode == "full" else ~is_vis
        x = torch.where(update[None, :, None], y, x)
    if observe is not None:
        observe(x, None, None)
    logits = dec.logits(x[:, P + nv:])
    return (logits, attn_maps) if return_attn else logits
