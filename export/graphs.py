"""The graphs (methods) a build exports, each a thin wrapper over one VLM, with its declared I/O.

Two KV layouts (models/protocol.py, docs/runner-protocol.md):
  split   (any plan)  vision_encoder, token_embedding,
                      vision_prefill(vision_embeds, start_pos, prefix_embeds) -> vision_states, vision K/V,
                      text_decoder(embeds, pos, slot, select_topk, vision K/V...) -> logits
  shared  (dense only) vision_encoder, token_embedding, text_decoder(embeds, input_pos) — ExecuTorch's stock
                       MultimodalRunner protocol: image embeddings go through text_decoder like text.
No state crosses methods: each method's buffers (text_decoder's text K/V and top-k mask) are its own, as
the phone runtimes require (ExecuTorch's Android binding gives each method its own memory). Integer
inputs are int64, flags included (no bool inputs: the Android binding cannot make them).

`vision_kv="buffers"` builds the earlier design instead, for comparison only: vision_prefill writes the
vision K/V into buffers that text_decoder reads, which needs memory shared between methods.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

from models.config import ModelConfig
from models.protocol import KVLayout
from models.vlm import VLM, shared_layout_model  # noqa: F401 (re-exported for the exporters)


@dataclass(frozen=True)
class Tensor:
    """Declared tensor: name, shape (a str names the dynamic sequence dimension), dtype."""

    name: str
    shape: tuple
    dtype: str

    def to_dict(self) -> dict:
        return {"name": self.name, "shape": list(self.shape), "dtype": self.dtype}


@dataclass(frozen=True)
class Method:
    name: str
    inputs: tuple[Tensor, ...]
    outputs: tuple[Tensor, ...]

    def to_dict(self) -> dict:
        return {"inputs": [t.to_dict() for t in self.inputs], "outputs": [t.to_dict() for t in self.outputs]}


class VisionEncoder(nn.Module):
    def __init__(self, vlm: VLM):
        super().__init__()
        self.vlm = vlm

    def forward(self, pixels):
        return self.vlm.encode_image(pixels)


class TokenEmbedding(nn.Module):
    def __init__(self, vlm: VLM):
        super().__init__()
        self.vlm = vlm

    def forward(self, ids):
        return self.vlm.decoder.embed(ids)


class TextDecoder(nn.Module):
    """Split layout: text chunk at positions `pos`, text slots from slot[0]; select_topk[0] != 0 ends the
    prompt; then the vision K/V of every full/cross layer (k, v per layer) as vision_prefill returned them."""

    def __init__(self, vlm: VLM):
        super().__init__()
        self.vlm = vlm

    def forward(self, embeds, pos, slot, select, *vision_kv):
        return self.vlm.decoder.forward_text(embeds, pos, slot[0], select[0] != 0, vision_kv=list(vision_kv))


class VisionPrefill(nn.Module):
    """Split layout: image embeddings after start_pos[0] text tokens, whose embeddings are the first
    start_pos[0] rows of prefix_embeds (at least one row: a zero row when no text precedes the image)."""

    def __init__(self, vlm: VLM):
        super().__init__()
        self.vlm = vlm

    def forward(self, embeds, start_pos, prefix_embeds):
        states, kv = self.vlm.decoder.forward_vision(embeds, start_pos[0], prefix_embeds)
        # A copy: under a plan whose vision layers are all cross, the states come back unchanged, and an
        # ExecuTorch method that returns its own input loses what else it computed.
        return (states.clone(), *kv)


class VisionKVBuffers(nn.Module):
    """The earlier design's vision K/V: buffers written by vision_prefill, read by text_decoder."""

    def __init__(self, vlm: VLM):
        super().__init__()
        dec = vlm.decoder
        shape = (1, dec.cfg.num_kv_heads, dec.num_vision, dec.cfg.head_dim)
        self.names = [f"vision_{kv}_{i}" for i in dec.vision_layers for kv in ("k", "v")]
        for name in self.names:
            self.register_buffer(name, torch.zeros(shape), persistent=False)

    def tensors(self) -> list[torch.Tensor]:
        return [getattr(self, name) for name in self.names]


class BufferedVisionPrefill(nn.Module):
    def __init__(self, vlm: VLM, store: VisionKVBuffers):
        super().__init__()
        self.vlm, self.store = vlm, store

    def forward(self, embeds, start_pos, prefix_embeds):
        states, kv = self.vlm.decoder.forward_vision(embeds, start_pos[0], prefix_embeds)
        for buf, value in zip(self.store.tensors(), kv):
            buf.copy_(value)
        return states.clone()


class BufferedTextDecoder(nn.Module):
    def __init__(self, vlm: VLM, store: VisionKVBuffers):
        super().__init__()
        self.vlm, self.store = vlm, store

    def forward(self, embeds, pos, slot, select):
        return self.vlm.decoder.forward_text(embeds, pos, slot[0], select[0] != 0, vision_kv=self.store.tensors())


class SharedTextDecoder(nn.Module):
    """Shared layout (dense plan, no vision K/V of its own): one cache where slot == position."""

    def __init__(self, vlm: VLM):
        super().__init__()
        self.vlm = vlm

    def forward(self, embeds, input_pos):
        pos = input_pos[0] + torch.arange(embeds.shape[1])
        return self.vlm.decoder.forward_text(embeds, pos, input_pos[0])


def methods(cfg: ModelConfig, kv: KVLayout, vision_kv: str = "io") -> dict[str, Method]:
    """Declared I/O of every method, by layout. "seq" is the dynamic chunk length (1 .. capacity).
    cfg is the model's own config (not the shared layout's re-housed one)."""
    layout, hidden = kv.layout, cfg.decoder.hidden_size
    s, nv, V = cfg.vision.image_size, cfg.num_vision_tokens, cfg.decoder.vocab_size
    common = {
        "vision_encoder": Method("vision_encoder", (Tensor("pixels", (1, 3, s, s), "float32"),),
                                 (Tensor("vision_embeds", (1, nv, hidden), "float32"),)),
        "token_embedding": Method("token_embedding", (Tensor("ids", (1, "seq"), "int64"),),
                                  (Tensor("embeds", (1, "seq", hidden), "float32"),)),
    }
    logits = Tensor("logits", (1, 1, V), "float32")
    if layout == "shared":
        common["text_decoder"] = Method("text_decoder", (Tensor("embeds", (1, "seq", hidden), "float32"),
                                                         Tensor("input_pos", (1,), "int64")), (logits,))
        return common
    kv_io = tuple(Tensor(name, tuple(kv.vision_kv_shape()), "float32") for name in kv.vision_kv_names())
    if vision_kv == "buffers":
        kv_io = ()
    common["vision_prefill"] = Method(
        "vision_prefill", (Tensor("vision_embeds", (1, nv, hidden), "float32"), Tensor("start_pos", (1,), "int64"),
                           Tensor("prefix_embeds", (1, "seq", hidden), "float32")),
        (Tensor("vision_states", (1, nv, hidden), "float32"),) + kv_io)
    common["text_decoder"] = Method(
        "text_decoder", (Tensor("embeds", (1, "seq", hidden), "float32"), Tensor("pos", ("seq",), "int64"),
                         Tensor("slot", (1,), "int64"), Tensor("select_topk", (1,), "int64")) + kv_io, (logits,))
    return common


VISION_KV = ("io", "buffers")  # how the vision K/V travel from vision_prefill to text_decoder


def wrappers(vlm: VLM, layout: str, vision_kv: str = "io") -> dict[str, nn.Module]:
    if vision_kv not in VISION_KV:
        raise ValueError(f"unknown vision K/V design {vision_kv!r}; valid: {', '.join(VISION_KV)}")
    common = {"vision_encoder": VisionEncoder(vlm), "token_embedding": TokenEmbedding(vlm)}
    if layout == "shared":
        return {**common, "text_decoder": SharedTextDecoder(vlm)}
    if vision_kv == "buffers":
        store = VisionKVBuffers(vlm)
        return {**common, "vision_prefill": BufferedVisionPrefill(vlm, store),
                "text_decoder": BufferedTextDecoder(vlm, store)}
    return {**common, "vision_prefill": VisionPrefill(vlm), "text_decoder": TextDecoder(vlm)}


_DTYPES = {"float32": torch.float32, "int64": torch.int64}


def example_inputs(method: Method, seq: int = 3, seed: int = 0) -> tuple[torch.Tensor, ...]:
    """Distinct example tensors for export (the same tensor twice would be taken as aliased)."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for t in method.inputs:
        shape = tuple(seq if isinstance(d, str) else d for d in t.shape)
        if t.dtype == "float32":
            out.append(torch.rand(shape, generator=g))
        elif t.name == "pos":
            out.append(torch.arange(seq))
        else:
            out.append(torch.randint(0, 3, shape, generator=g, dtype=_DTYPES[t.dtype]))
    return tuple(out)


def dynamic_shapes(method: Method, seq_dim, flat: bool = False) -> tuple | None:
    """torch.export's dynamic_shapes for a wrapper's forward: one spec per named argument, and the split
    text_decoder's vision K/V (its `*vision_kv`) as one tuple, unless `flat` (a forward taking *args)."""
    specs = tuple({i: seq_dim for i, d in enumerate(t.shape) if isinstance(d, str)} or None for t in method.inputs)
    if not any(specs):
        return None
    if not flat and method.name == "text_decoder" and len(specs) > 4 and method.inputs[3].name == "select_topk":
        return specs[:4] + (specs[4:],)
    return specs
