"""LLaMA-family decoder (Qwen2, LLaMA, MobileLLaMA) with a baked-in vision plan and a split static KV cache.

RMSNorm, RoPE (rotate-half, as in transformers), grouped-query attention, SwiGLU; Qwen2 adds qkv bias
and a large rope theta. Module names follow the checkpoints (`q_proj`, `gate_proj`, `input_layernorm`).

The sequence is fed in chunks: text before the image, the image, the question, then one token per
decode step (models/protocol.py). Text K/V and vision K/V are kept apart:
  text_k/text_v (1, H_kv, max_seq_len, D)  buffers of every layer; slot = index among text tokens
  vision K/V    (1, H_kv, N_vision, D)     of full/cross layers only: `forward_vision` returns them and
                                           `forward_text` takes them, so no state crosses the two
RoPE positions stay those of the original sequence, so a text token's position is its slot, plus
N_vision when it follows the image. That offset is how a text query knows the image precedes it:
no state has to say whether an image was given.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from .config import DecoderConfig
from .plan import VISION_MODES, Plan

NEG_INF = float("-inf")


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x):
        h = x.float()
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * h.to(x.dtype)


def rope_tables(head_dim: int, max_pos: int, theta: float) -> tuple[torch.Tensor, torch.Tensor]:
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.int64).float() / head_dim))
    freqs = torch.outer(torch.arange(max_pos).float(), inv_freq)  # (P, D/2)
    emb = torch.cat([freqs, freqs], dim=-1)  # (P, D)
    return emb.cos(), emb.sin()


def apply_rope(x, cos, sin):
    """x (B, H, T, D); cos/sin (T, D)."""
    x1, x2 = x.chunk(2, dim=-1)
    return x * cos + torch.cat([-x2, x1], dim=-1) * sin


def write_cache(cache: torch.Tensor, start: torch.Tensor, value: torch.Tensor) -> None:
    """Write value (1, H_kv, T, D) into cache (1, H_kv, S, D) at slots start .. start+T-1."""
    idx = start + torch.arange(value.shape[2], device=value.device)
    cache.index_copy_(2, idx, value.to(cache.dtype))


def write_cache_slice(cache: torch.Tensor, start: torch.Tensor, value: torch.Tensor) -> None:
    """Same write as slice assignment at a tensor start (Core ML converts this, not index_copy_)."""
    cache[:, :, start:start + value.shape[2]] = value.to(cache.dtype)


class Attention(nn.Module):
    def __init__(self, cfg: DecoderConfig):
        super().__init__()
        self.n_heads, self.n_kv, self.head_dim = cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
        self.q_proj = nn.Linear(cfg.hidden_size, cfg.num_heads * cfg.head_dim, bias=cfg.qkv_bias)
        self.k_proj = nn.Linear(cfg.hidden_size, cfg.num_kv_heads * cfg.head_dim, bias=cfg.qkv_bias)
        self.v_proj = nn.Linear(cfg.hidden_size, cfg.num_kv_heads * cfg.head_dim, bias=cfg.qkv_bias)
        self.o_proj = nn.Linear(cfg.num_heads * cfg.head_dim, cfg.hidden_size, bias=False)

    def query(self, h, cos, sin):
        q = self.q_proj(h).view(1, -1, self.n_heads, self.head_dim).transpose(1, 2)  # (1, H, T, D)
        return apply_rope(q, cos, sin)

    def key_value(self, h, cos, sin):
        k = self.k_proj(h).view(1, -1, self.n_kv, self.head_dim).transpose(1, 2)  # (1, H_kv, T, D)
        v = self.v_proj(h).view(1, -1, self.n_kv, self.head_dim).transpose(1, 2)
        return apply_rope(k, cos, sin), v

    def scores(self, q, k, bias):
        """Attention probabilities (1, H, T, S) for keys k (1, H_kv, S, D) under an additive bias.

        The G = H / H_kv query heads that share a K/V head are stacked along the rows, (1, H_kv, G*T, D),
        so one matmul per K/V head serves them all: the K/V cache is never copied G times (a repeat of
        the whole cache per layer and step was a quarter of the exported decode step)."""
        t = q.shape[2]
        grouped = q.reshape(1, self.n_kv, -1, self.head_dim)  # heads h = kv * G + g, rows g * T + t
        logits = (grouped @ k.transpose(-1, -2)).view(1, self.n_heads, t, -1) * self.head_dim ** -0.5 + bias
        return torch.softmax(logits.float(), dim=-1).to(q.dtype)

    def attend(self, q, k, v, bias):
        probs = self.scores(q, k, bias)
        t = q.shape[2]
        out = (probs.reshape(1, self.n_kv, -1, probs.shape[-1]) @ v).view(1, self.n_heads, t, self.head_dim)
        return self.o_proj(out.transpose(1, 2).reshape(1, -1, self.n_heads * self.head_dim))


    def attend_repeated(self, q, k, v, bias):
        """`attend` with the K/V repeated per query head: for the text before the image, whose keys are as
        many as its queries (a dynamic length on both sides, which the stacked form's views turn into
        shape guards torch.export cannot prove)."""
        g = self.n_heads // self.n_kv
        k, v = k.repeat_interleave(g, dim=1), v.repeat_interleave(g, dim=1)  # (1, H, P, D)
        logits = q @ k.transpose(-1, -2) * self.head_dim ** -0.5 + bias
        out = torch.softmax(logits.float(), dim=-1).to(q.dtype) @ v  # (1, H, P, D)
        return self.o_proj(out.transpose(1, 2).reshape(1, q.shape[2], self.n_heads * self.head_dim))


class MLP(nn.Module):
    def __init__(self, cfg: DecoderConfig):
        super().__init__()
        self.gate_proj = nn.Linear(cfg.hidden_size, cfg.intermediate_size, bias=False)
        self.up_proj = nn.Linear(cfg.hidden_size, cfg.intermediate_size, bias=False)
        self.down_proj = nn.Linear(cfg.intermediate_size, cfg.hidden_size, bias=False)

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class Masks(NamedTuple):
    """Additive attention biases shared by every layer of one chunk."""

    text: torch.Tensor  # (T, S_text) text keys a query may see
    vision: torch.Tensor  # (1 or H, T, N_v) vision keys a query may see (before top-k)
    select_topk: torch.Tensor  # bool scalar: this chunk ends the prompt, so the top-k layer picks anew


class DecoderLayer(nn.Module):
    """One transformer block. `mode` picks, once, how it treats vision (see models/plan.py)."""

    def __init__(self, cfg: DecoderConfig, mode: str, uses_topk: bool, select_k: int = 0):
        super().__init__()
        self.mode = mode
        self.input_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_eps)
        self.self_attn = Attention(cfg)
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_eps)
        self.mlp = MLP(cfg)
        kv = (1, cfg.num_kv_heads, cfg.max_seq_len, cfg.head_dim)
        self.register_buffer("text_k", torch.zeros(kv), persistent=False)
        self.register_buffer("text_v", torch.zeros(kv), persistent=False)
        self.attends_vision = mode in VISION_MODES
        self.uses_topk = uses_topk
        self.write = write_cache  # swapped by use_slice_cache_writes()
        self.select_k = select_k  # > 0: this layer picks the top-k vision tokens for itself and later layers
        self.vision_step = {"full": self._vision_full, "cross": self._vision_cross}.get(mode, _vision_frozen)

    def block(self, x, attn_out):
        x = x + attn_out
        return x + self.mlp(self.post_attention_layernorm(x))

    def forward(self, x, cos, sin, slot, masks: Masks, keep: torch.Tensor, vision_kv):
        """Text chunk x (1, T, hidden) -> (1, T, hidden); writes this chunk's text K/V.

        vision_kv: this layer's (k, v) of the image, or None in text/exit layers.
        keep (N_v,) marks the kept vision tokens of layers from keep_topk.from_layer on."""
        h = self.input_layernorm(x)
        q = self.self_attn.query(h, cos, sin)
        k, v = self.self_attn.key_value(h, cos, sin)
        self.write(self.text_k, slot, k)
        self.write(self.text_v, slot, v)
        if vision_kv is None:
            return self.block(x, self.self_attn.attend(q, self.text_k, self.text_v, masks.text))
        vision_k, vision_v = vision_kv
        if self.select_k:
            _select_topk(self.self_attn, q, vision_k, self.text_k, masks, keep, self.select_k)
        vision_bias = masks.vision + torch.where(keep > 0, 0.0, NEG_INF) if self.uses_topk else masks.vision
        keys = torch.cat([vision_k, self.text_k], dim=2)
        values = torch.cat([vision_v, self.text_v], dim=2)
        bias = torch.cat([vision_bias, masks.text.expand(vision_bias.shape[0], -1, -1)], dim=-1)
        return self.block(x, self.self_attn.attend(q, keys, values, bias))

    def _vision_full(self, x, cos, sin, prefix_kv, bias):
        """Vision chunk through the whole layer: attends the text before it and (windowed) vision.
        -> (states, k, v)."""
        h = self.input_layernorm(x)
        q = self.self_attn.query(h, cos, sin)
        k, v = self.self_attn.key_value(h, cos, sin)
        keys = torch.cat([k, prefix_kv[0]], dim=2)
        values = torch.cat([v, prefix_kv[1]], dim=2)
        return self.block(x, self.self_attn.attend(q, keys, values, bias)), k, v

    def _vision_cross(self, x, cos, sin, prefix_kv, bias):
        """Vision states stay frozen; only their K/V are computed."""
        k, v = self.self_attn.key_value(self.input_layernorm(x), cos, sin)
        return x, k, v


def _vision_frozen(x, cos, sin, prefix_kv, bias):
    return x, None, None


def _select_topk(attn: Attention, q, vision_k, text_k, masks: Masks, keep: torch.Tensor, k: int) -> None:
    """When masks.select_topk, put into `keep` the k vision tokens the chunk's last query attends to
    most (mean over heads); otherwise leave `keep` as it is (no data-dependent branch)."""
    keys = torch.cat([vision_k, text_k], dim=2)
    bias = torch.cat([masks.vision, masks.text.expand(masks.vision.shape[0], -1, -1)], dim=-1)
    probs = attn.scores(q[:, :, -1:], keys, bias[:, -1:])  # (1, H, 1, N_v + S)
    weight = probs[0, :, 0, :vision_k.shape[2]].mean(0)  # (N_v,)
    chosen = torch.zeros_like(keep).scatter(0, torch.topk(weight, k).indices, 1.0)
    keep[:] = torch.where(masks.select_topk, chosen, keep)  # slice write: Core ML converts it, not copy_


class Decoder(nn.Module):
    """Token embedding, the planned layers, final norm and LM head, with the chunked-prefill API.

    forward_text(x, pos, slot, select, vision_kv)   text chunk; returns logits of the last position (or all)
    forward_vision(x, start_pos, prefix)            image chunk; runs only the layers that still use vision
                                                    and returns its states and vision K/V
    The eager model keeps the image's vision K/V in `vision_kv` (set_vision_kv); exported graphs pass them.
    """

    def __init__(self, cfg: DecoderConfig, plan: Plan, num_vision: int, grid: int):
        super().__init__()
        if len(plan.modes) != cfg.num_layers:
            raise ValueError(f"plan has {len(plan.modes)} layers, decoder has {cfg.num_layers}")
        self.cfg, self.plan, self.num_vision = cfg, plan, num_vision
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        topk = plan.keep_topk
        self.layers = nn.ModuleList(
            DecoderLayer(cfg, mode, uses_topk=topk is not None and i >= topk.from_layer,
                         select_k=topk.k if topk is not None and i == topk.from_layer else 0)
            for i, mode in enumerate(plan.modes))
        self.norm = RMSNorm(cfg.hidden_size, cfg.rms_eps)
        self.lm_head = None if cfg.tie_embeddings else nn.Linear(cfg.hidden_size, cfg.vocab_size, bias=False)
        cos, sin = rope_tables(cfg.head_dim, cfg.max_seq_len + num_vision, cfg.rope_theta)
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)
        self.register_buffer("vision_self_bias", vision_self_bias(grid, plan.window), persistent=False)
        self.register_buffer("head_bias", vision_head_bias(cfg.num_heads, plan.vision_heads), persistent=False)
        self.register_buffer("topk_keep", torch.ones(num_vision), persistent=False)
        self.vision_layers = tuple(i for i, layer in enumerate(self.layers) if layer.attends_vision)
        full = [i for i, m in enumerate(plan.modes) if m == "full"]
        self.prefix_depth = full[-1] + 1 if full else 0  # layers the text before the image must pass
        self.vision_kv: list[torch.Tensor] = []  # eager state: k, v of each vision layer, in order
        self.set_vision_kv(None)

    def embed(self, ids):
        return self.embed_tokens(ids)

    def logits(self, x):
        h = self.norm(x)
        if self.lm_head is not None:
            return self.lm_head(h)
        return F.linear(h, self.embed_tokens.weight)  # tied; as a linear (not a bare mm) XNNPACK delegates it

    def set_vision_kv(self, kv):
        """Keep the image's vision K/V (flat [k, v, ...] of `vision_layers`) for later text; None: zeros."""
        shape = (1, self.cfg.num_kv_heads, self.num_vision, self.cfg.head_dim)
        self.vision_kv = list(kv) if kv is not None else [torch.zeros(shape) for _ in range(2 * len(self.vision_layers))]

    def _per_layer(self, vision_kv):
        """Flat [k, v, ...] of the vision layers -> one (k, v) or None per layer."""
        pairs = dict(zip(self.vision_layers, zip(vision_kv[0::2], vision_kv[1::2])))
        return [pairs.get(i) for i in range(len(self.layers))]

    def forward_text(self, x, pos, slot, select_topk=False, all_logits: bool = False, vision_kv=None):
        """x (1, T, hidden) at RoPE positions pos (T,) and text slots slot .. slot+T-1 (slot: int64 scalar).

        select_topk (bool or bool scalar tensor) marks the chunk that ends the prompt: its last token
        chooses the kept vision tokens. vision_kv: flat [k, v, ...] of the vision layers (default: the
        eager model's own).
        """
        T = x.shape[1]
        slots = slot + torch.arange(T)
        masks = self._text_masks(pos, slots, torch.as_tensor(select_topk, dtype=torch.bool))
        cos, sin = self.rope_cos[pos], self.rope_sin[pos]
        per_layer = self._per_layer(self.vision_kv if vision_kv is None else vision_kv)
        for layer, kv in zip(self.layers, per_layer):
            x = layer(x, cos, sin, slot, masks, self.topk_keep, kv)
        return self.logits(x if all_logits else x[:, -1:])

    def _text_masks(self, pos, slots, select_topk: torch.Tensor) -> Masks:
        text = torch.where(torch.arange(self.cfg.max_seq_len)[None, :] <= slots[:, None], 0.0, NEG_INF)  # (T, S)
        after_image = (pos - slots) == self.num_vision  # (T,) the image precedes this token
        vision = torch.where(after_image[:, None], 0.0, NEG_INF).expand(-1, self.num_vision)  # (T, N_v)
        vision = vision[None] + self.head_bias  # (1 or H, T, N_v)
        return Masks(text, vision, select_topk)

    def forward_vision(self, x, start_pos, prefix=None):
        """Image embeddings x (1, N_v, hidden) following start_pos text tokens (int64 scalar), whose
        embeddings `prefix` (1, P >= start_pos, hidden) are (rows from start_pos on are ignored; None: no
        text before the image).

        Returns (vision states after the last vision layer, flat [k, v, ...] of every full/cross layer).
        The text before the image is run again through the layers up to the last `full` one: there the
        image attends to it, and no state is shared with the text decoder."""
        pos = start_pos + torch.arange(self.num_vision)
        cos, sin = self.rope_cos[pos], self.rope_sin[pos]
        prefix_kv = self._prefix_kv(prefix)
        if prefix is None:
            bias = self.vision_self_bias
        else:
            seen = torch.where(torch.arange(prefix.shape[1]) < start_pos, 0.0, NEG_INF)  # (P,)
            bias = torch.cat([self.vision_self_bias, seen.expand(self.num_vision, -1)], dim=-1)  # (N_v, N_v + P)
        kv = []
        for i, layer in enumerate(self.layers[:self.plan.vision_depth]):
            x, k, v = layer.vision_step(x, cos, sin, prefix_kv[i], bias)
            if k is not None:
                kv += [k, v]
        return x, kv

    def _prefix_kv(self, prefix):
        """(k, v) of the text before the image in each of the first prefix_depth layers (empty (1, H_kv, 0,
        D) when there is none), else None."""
        empty = torch.zeros(1, self.cfg.num_kv_heads, 0, self.cfg.head_dim)
        out = [None] * len(self.layers)
        if prefix is None:
            for i in range(self.prefix_depth):
                out[i] = (empty, empty)
            return out
        n = prefix.shape[1]
        idx = torch.arange(n)
        causal = torch.where(idx[None, :] <= idx[:, None], 0.0, NEG_INF)  # (P, P)
        cos, sin = self.rope_cos[:n], self.rope_sin[:n]
        x = prefix
        for i, layer in enumerate(self.layers[:self.prefix_depth]):  # as text: it attends only itself
            h = layer.input_layernorm(x)
            out[i] = layer.self_attn.key_value(h, cos, sin)
            if i + 1 < self.prefix_depth:
                x = layer.block(x, layer.self_attn.attend_repeated(layer.self_attn.query(h, cos, sin), *out[i], causal))
        return out

    def reset(self):
        for name, buf in self.named_buffers():
            if name.endswith(("_k", "_v")):
                buf.zero_()
        self.topk_keep.fill_(1.0)
        self.set_vision_kv(None)


def vision_self_bias(grid: int, window: int | None) -> torch.Tensor:
    """(N, N) additive bias among vision tokens: causal in raster order, and within Chebyshev distance
    `window` on the grid when a window is set."""
    n = grid * grid
    idx = torch.arange(n)
    allowed = idx[None, :] <= idx[:, None]
    if window is not None:
        row, col = idx // grid, idx % grid
        near = torch.maximum((row[:, None] - row[None, :]).abs(), (col[:, None] - col[None, :]).abs()) <= window
        allowed = allowed & near
    return torch.where(allowed, 0.0, NEG_INF)


def vision_head_bias(num_heads: int, heads: tuple[int, ...] | None) -> torch.Tensor:
    """(H or 1, 1, 1) additive bias: heads outside `heads` never see vision keys."""
    if heads is None:
        return torch.zeros(1, 1, 1)
    allowed = torch.zeros(num_heads, dtype=torch.bool)
    allowed[list(heads)] = True
    return torch.where(allowed, 0.0, NEG_INF)[:, None, None]


def use_slice_cache_writes(decoder: Decoder) -> Decoder:
    """Transform: write the text KV cache by slice assignment instead of index_copy_ (for Core ML)."""
    for layer in decoder.layers:
        layer.write = write_cache_slice
    return decoder
