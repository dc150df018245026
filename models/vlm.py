"""The whole VLM, LLaVA-style: vision encoder -> projector -> planned decoder.

    model = VLM(preset("fastvlm-tiny"), plan="dense")
    ids = model.generate(prefix_ids, pixels, question_ids, max_new_tokens=8)

`Cursor` holds the only moving parts of a conversation (RoPE position, text slot, the text before the
image); every chunk goes through `VLM.prefill_text`, `VLM.prefill_image` or `VLM.decode`, which advance
it. `generate` follows the runner protocol (models/protocol.py) through `EagerEngine`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

from .config import ModelConfig
from .decoder import Decoder
from .plan import Plan, load_plan
from .protocol import KVLayout, converse
from .projector import build_projector
from .vision import build_vision_encoder


def resolve_plan(cfg: ModelConfig, spec) -> Plan:
    """A validated plan for this model from "dense", a JSON path, a dict or a Plan."""
    d = cfg.decoder
    return load_plan(spec, d.num_layers, d.num_heads, cfg.num_vision_tokens)


@dataclass
class Cursor:
    pos: int = 0  # RoPE position of the next token in the original sequence
    slot: int = 0  # index of the next text token in the text KV cache
    prefix: torch.Tensor | None = None  # embeddings of the text before the image (vision prefill reads them)


class VLM(nn.Module):
    def __init__(self, cfg: ModelConfig, plan="dense"):
        super().__init__()
        self.cfg = cfg
        self.plan = resolve_plan(cfg, plan)
        self.vision = build_vision_encoder(cfg.vision)
        self.projector = build_projector(cfg.projector, cfg.vision, cfg.decoder.hidden_size)
        self.decoder = Decoder(cfg.decoder, self.plan, cfg.num_vision_tokens, cfg.vision_grid)

    def encode_image(self, pixels):
        """pixels (1, 3, S, S), preprocessed -> vision embeddings (1, N_v, hidden)."""
        stages = self.projector.mbtf_blocks
        if stages:
            maps = self.vision.feature_maps(pixels, stages)
            tokens = maps[0].flatten(2).transpose(1, 2)  # (1, C, h, w) -> (1, h*w, C)
            return self.projector(tokens, maps[1:])
        return self.projector(self.vision(pixels))

    def prefill_text(self, cur: Cursor, ids, select_topk=False, all_logits=False):
        """Text chunk ids (1, T) -> logits of its last position (1, 1, V)."""
        return self.prefill_embeds(cur, self.decoder.embed(ids), select_topk, all_logits)

    def prefill_embeds(self, cur: Cursor, x, select_topk=False, all_logits=False):
        T = x.shape[1]
        self._check_capacity(cur, T)
        pos = torch.arange(cur.pos, cur.pos + T)
        if cur.pos == cur.slot:  # no image yet: the image would attend to this text
            cur.prefix = x if cur.prefix is None else torch.cat([cur.prefix, x], dim=1)
        logits = self.decoder.forward_text(x, pos, torch.tensor(cur.slot), select_topk, all_logits)
        cur.pos, cur.slot = cur.pos + T, cur.slot + T
        return logits

    def prefill_image(self, cur: Cursor, embeds):
        """Vision embeddings (1, N_v, hidden) placed after the text so far; keeps their vision K/V."""
        if cur.pos != cur.slot:
            raise ValueError("only one image per conversation is supported")
        states, kv = self.decoder.forward_vision(embeds, torch.tensor(cur.pos), cur.prefix)
        self.decoder.set_vision_kv(kv)
        cur.pos += self.cfg.num_vision_tokens
        return states

    def decode(self, cur: Cursor, token: int):
        return self.prefill_text(cur, torch.tensor([[token]]))

    def _check_capacity(self, cur: Cursor, n: int):
        cap = self.cfg.decoder.max_seq_len
        if cur.slot + n > cap:
            raise ValueError(f"text of {cur.slot + n} tokens exceeds the KV capacity of {cap} text tokens")

    @torch.no_grad()
    def generate(self, prefix_ids, pixels, question_ids, max_new_tokens: int, stop_ids=(), logits_out=None) -> list[int]:
        """Greedy decoding: prefix, image (or None), question, then new tokens.

        logits_out: a list that receives the logits (V,) each new token was chosen from."""
        before = prefix_ids[0].tolist() if prefix_ids is not None else []
        kv = KVLayout.derive(self.cfg, self.plan, "split")
        pick = _recording_argmax(logits_out)
        return converse(EagerEngine(self), kv, before, pixels, question_ids[0].tolist(), max_new_tokens,
                        pick=pick, stop_ids=stop_ids).ids


def shared_layout_model(vlm: VLM) -> VLM:
    """The dense model re-housed for the shared KV layout: the decoder sees no separate vision tokens and its
    one KV cache holds text and image (rows = text capacity + vision tokens). Weights are shared."""
    cfg = vlm.cfg
    if not vlm.plan.is_dense:
        raise ValueError("the shared KV layout runs the dense plan only")
    shared_cfg = cfg.replace(decoder={"max_seq_len": cfg.decoder.max_seq_len + cfg.num_vision_tokens})
    out = VLM.__new__(VLM)
    nn.Module.__init__(out)
    out.cfg, out.plan, out.vision, out.projector = shared_cfg, vlm.plan, vlm.vision, vlm.projector
    out.decoder = Decoder(shared_cfg.decoder, vlm.plan, num_vision=0, grid=0)
    out.decoder.load_state_dict(vlm.decoder.state_dict())
    return out.eval()


def _recording_argmax(logits_out):
    def pick(logits):
        if logits_out is not None:
            logits_out.append(logits)
        return int(logits.argmax())
    return pick


class EagerEngine:
    """The PyTorch model as a runner-protocol engine (models/protocol.py): torch tensors in and out."""

    def __init__(self, vlm: VLM):
        self.vlm = vlm

    def reset(self):
        self.vlm.decoder.reset()

    def embed(self, ids: list[int]):
        return self.vlm.decoder.embed(torch.tensor([ids]))

    def encode_image(self, pixels):
        return self.vlm.encode_image(torch.as_tensor(pixels))

    def prefill_vision(self, vision_embeds, start_pos: int, prefix_embeds):
        _, kv = self.vlm.decoder.forward_vision(vision_embeds, torch.tensor(start_pos), prefix_embeds)
        self.vlm.decoder.set_vision_kv(kv)

    def text(self, embeds, pos: int, slot: int, select: bool):
        positions = torch.arange(pos, pos + embeds.shape[1])
        return self.vlm.decoder.forward_text(embeds, positions, torch.tensor(slot), select)[0, -1]
