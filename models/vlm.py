"""The whole VLM, LLaVA-style: vision encoder -> projector -> planned decoder.

    model = VLM(preset("fastvlm-tiny"), plan="dense")
    ids = model.generate(prefix_ids, pixels, question_ids, max_new_tokens=8)

`Cursor` holds the only moving parts of a conversation (RoPE position and text slot); every chunk
goes through `VLM.prefill_text`, `VLM.prefill_image` or `VLM.decode`, which advance it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

from .config import ModelConfig
from .decoder import Decoder
from .plan import Plan, load_plan
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
        logits = self.decoder.forward_text(x, pos, torch.tensor(cur.slot), select_topk, all_logits)
        cur.pos, cur.slot = cur.pos + T, cur.slot + T
        return logits

    def prefill_image(self, cur: Cursor, embeds):
        """Vision embeddings (1, N_v, hidden) placed after the text so far."""
        if cur.pos != cur.slot:
            raise ValueError("only one image per conversation is supported")
        out = self.decoder.forward_vision(embeds, torch.tensor(cur.pos))
        cur.pos += self.cfg.num_vision_tokens
        return out

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
        self.decoder.reset()
        cur = Cursor()
        if prefix_ids is not None and prefix_ids.shape[1]:
            self.prefill_text(cur, prefix_ids)
        if pixels is not None:
            self.prefill_image(cur, self.encode_image(pixels))
        logits = self.prefill_text(cur, question_ids, select_topk=True)
        out = []
        for _ in range(max_new_tokens):
            token = int(logits[0, -1].argmax())
            out.append(token)
            if logits_out is not None:
                logits_out.append(logits[0, -1])
            if token in stop_ids or len(out) == max_new_tokens:
                break
            logits = self.decode(cur, token)
        return out
