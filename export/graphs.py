"""The graphs (methods) a build exports, each a thin wrapper over one VLM, with its declared I/O.

Two KV layouts:
  split   (any plan)  vision_encoder, token_embedding, vision_prefill, text_decoder(embeds, pos, slot, select)
  shared  (dense only) vision_encoder, token_embedding, text_decoder(embeds, input_pos) — ExecuTorch's stock
                       MultimodalRunner protocol: image embeddings go through text_decoder like text.
Every wrapper reaches the decoder through the same attribute path (`self.vlm.decoder`), so state
buffers carry the same names in every method and ExecuTorch can share them.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

from models.config import ModelConfig
from models.vlm import VLM


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
    """Split layout: text chunk at positions `pos`, text slots from slot[0]; select[0] ends the prompt."""

    def __init__(self, vlm: VLM):
        super().__init__()
        self.vlm = vlm

    def forward(self, embeds, pos, slot, select):
        return self.vlm.decoder.forward_text(embeds, pos, slot[0], select[0])


class VisionPrefill(nn.Module):
    """Split layout: image embeddings after start_pos[0] text tokens; writes vision K/V."""

    def __init__(self, vlm: VLM):
        super().__init__()
        self.vlm = vlm

    def forward(self, embeds, start_pos):
        # A copy: under a plan whose vision layers are all cross, the states come back unchanged, and an
        # ExecuTorch method that returns its own input lost the vision K/V it wrote (parity failed).
        return self.vlm.decoder.forward_vision(embeds, start_pos[0]).clone()


class SharedTextDecoder(nn.Module):
    """Shared layout (dense plan, no vision K/V of its own): one cache where slot == position."""

    def __init__(self, vlm: VLM):
        super().__init__()
        self.vlm = vlm

    def forward(self, embeds, input_pos):
        pos = input_pos[0] + torch.arange(embeds.shape[1])
        return self.vlm.decoder.forward_text(embeds, pos, input_pos[0])


def shared_layout_model(vlm: VLM) -> VLM:
    """The dense model re-housed for the shared layout: the decoder sees no separate vision tokens and its
    one KV cache holds text and image (capacity = text capacity + vision tokens). Weights are shared."""
    cfg = vlm.cfg
    if not vlm.plan.is_dense:
        raise ValueError("the shared KV layout runs the dense plan only")
    shared_cfg = cfg.replace(decoder={"max_seq_len": cfg.decoder.max_seq_len + cfg.num_vision_tokens})
    out = VLM.__new__(VLM)
    nn.Module.__init__(out)
    out.cfg, out.plan, out.vision, out.projector = shared_cfg, vlm.plan, vlm.vision, vlm.projector
    from models.decoder import Decoder

    out.decoder = Decoder(shared_cfg.decoder, vlm.plan, num_vision=0, grid=0)
    out.decoder.load_state_dict(vlm.decoder.state_dict())
    return out.eval()


def methods(cfg: ModelConfig, layout: str, hidden: int) -> dict[str, Method]:
    """Declared I/O of every method, by layout. "seq" is the dynamic chunk length (1 .. capacity)."""
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
    common["vision_prefill"] = Method(
        "vision_prefill", (Tensor("vision_embeds", (1, nv, hidden), "float32"), Tensor("start_pos", (1,), "int64")),
        (Tensor("vision_states", (1, nv, hidden), "float32"),))
    common["text_decoder"] = Method(
        "text_decoder", (Tensor("embeds", (1, "seq", hidden), "float32"), Tensor("pos", ("seq",), "int64"),
                         Tensor("slot", (1,), "int64"), Tensor("select_topk", (1,), "bool")), (logits,))
    return common


def wrappers(vlm: VLM, layout: str) -> dict[str, nn.Module]:
    if layout == "shared":
        return {"vision_encoder": VisionEncoder(vlm), "token_embedding": TokenEmbedding(vlm),
                "text_decoder": SharedTextDecoder(vlm)}
    return {"vision_encoder": VisionEncoder(vlm), "token_embedding": TokenEmbedding(vlm),
            "vision_prefill": VisionPrefill(vlm), "text_decoder": TextDecoder(vlm)}


_DTYPES = {"float32": torch.float32, "int64": torch.int64, "bool": torch.bool}


def example_inputs(method: Method, seq: int = 3, seed: int = 0) -> tuple[torch.Tensor, ...]:
    """Distinct example tensors for export (the same tensor twice would be taken as aliased)."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for t in method.inputs:
        shape = tuple(seq if isinstance(d, str) else d for d in t.shape)
        if t.dtype == "float32":
            out.append(torch.rand(shape, generator=g))
        elif t.dtype == "bool":
            out.append(torch.zeros(shape, dtype=torch.bool))
        elif t.name == "pos":
            out.append(torch.arange(seq))
        else:
            out.append(torch.randint(0, 3, shape, generator=g, dtype=_DTYPES[t.dtype]))
    return tuple(out)


def dynamic_shapes(method: Method, seq_dim) -> tuple | None:
    specs = tuple({i: seq_dim for i, d in enumerate(t.shape) if isinstance(d, str)} or None for t in method.inputs)
    return specs if any(specs) else None
