"""Vision encoders: pixels (B, 3, S, S) -> tokens (B, N, C), wrapping the libraries' own models.

- "fastvit": FastVLM's FastViTHD is timm's `fastvit_mci3` (hybrid conv/attention, 5 stages, stride 64),
  built in its reparameterised inference form, as the FastVLM release and transformers' `FastVlm*` do.
  The feature is timm's `forward_features` output (after `final_conv`, 3072 channels for mci3), which is
  what transformers' `TimmWrapperModel` returns as `last_hidden_state`; `FastVlmModel.get_image_features`
  flattens it row-major to (B, H*W, C). Keys: `timm_model.*` (transformers: `model.vision_tower.timm_model.*`).
- "clip": MobileVLM V2's CLIP ViT-L/14-336 is transformers' `CLIPVisionModel`. The feature is
  hidden_states[select_layer] (-2: output of layer 23 of 24) with CLS dropped; post_layernorm is unused
  (LLaVA / MobileVLM `feature_select`). Layers after the selected one are never run, so they are not
  built: `num_layers_kept` says how many remain, and `unused_checkpoint_key` names the checkpoint keys
  a loader must discard. Keys: `clip.embeddings.*`, `clip.pre_layrnorm.*`, `clip.encoder.layers.i.*`
  (transformers 5 `CLIPVisionModel` has no `vision_model.` level; its own loader strips that prefix).

Every encoder has `forward(pixels) -> (B, grid*grid, out_channels)`, `feature_maps(pixels, stages)`
-> [final map, *stage maps] each (B, C_i, H_i, W_i) (for MBTF), `grid`, `out_channels` and
`stage_channels(stages)`.
"""

from __future__ import annotations

import re

import timm
import torch
from torch import nn
from transformers import CLIPVisionConfig, CLIPVisionModel

from models.config import VisionConfig


def build_vision_encoder(cfg: VisionConfig) -> nn.Module:
    """The encoder named by `cfg.kind`, random weights, in eval mode (both VLMs keep it frozen)."""
    builders = {"fastvit": FastVitEncoder, "clip": ClipEncoder}
    if cfg.kind not in builders:
        raise ValueError(f"unknown vision encoder kind {cfg.kind!r}; valid kinds: {', '.join(sorted(builders))}")
    if cfg.image_size % cfg.stride:
        raise ValueError(f"image_size {cfg.image_size} is not a multiple of the encoder stride {cfg.stride}")
    return builders[cfg.kind](cfg).eval()


def stage_channels(cfg: VisionConfig, stages: tuple[int, ...]) -> list[int]:
    """Channels of the given stages without building weights (FastViT is built on the meta device)."""
    if cfg.kind == "clip":
        return [cfg.hidden_size for _ in stages]
    with torch.device("meta"):
        return build_vision_encoder(cfg).stage_channels(stages)


def create_timm_fastvit(cfg: VisionConfig, inference_mode: bool = True) -> nn.Module:
    """timm FastViT / MCi; inference_mode=False gives the train-time multi-branch form (models/train.py)."""
    return timm.create_model(cfg.timm_name, pretrained=False, num_classes=0, inference_mode=inference_mode,
                             **cfg.timm_args)


class FastVitEncoder(nn.Module):
    """timm FastViT / MCi (reparameterised); tokens = forward_features flattened row-major."""

    def __init__(self, cfg: VisionConfig):
        super().__init__()
        if not cfg.timm_name:
            raise ValueError("fastvit encoder needs VisionConfig.timm_name, e.g. 'fastvit_mci3'")
        self.timm_model = create_timm_fastvit(cfg)
        for module in self.timm_model.modules():
            # Attention as matmul, softmax, matmul: exported, the fused scaled_dot_product_attention
            # decomposes into a softmax guarded against all-masked rows (any, eq, where), ops XNNPACK
            # does not take; they ran outside the delegate, 5% of the int8 encoder's time at 384 px.
            if hasattr(module, "fused_attn"):
                module.fused_attn = False
        info = self.timm_model.feature_info  # one dict per stage: num_chs, reduction
        channels, stride = self.timm_model.num_features, info[-1]["reduction"]
        if (channels, stride) != (cfg.hidden_size, cfg.stride):
            raise ValueError(f"timm {cfg.timm_name} {cfg.timm_args} gives {channels} channels at stride {stride}; "
                             f"the config says hidden_size={cfg.hidden_size}, stride={cfg.stride}")
        self._stage_chs = [f["num_chs"] for f in info]
        self.grid = cfg.grid
        self.out_channels = cfg.hidden_size

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        x = self.timm_model.forward_features(pixels)  # (B, C, g, g), after final_conv
        return x.flatten(2).transpose(1, 2)  # (B, g*g, C)

    def stage_channels(self, stages: tuple[int, ...]) -> list[int]:
        return [self._stage_chs[self._stage_index(s)] for s in stages]

    def feature_maps(self, pixels: torch.Tensor, stages: tuple[int, ...] = ()) -> list[torch.Tensor]:
        """[final map (B, C, g, g), *outputs of timm stages `stages` (B, C_s, H_s, W_s)]."""
        wanted = [self._stage_index(s) for s in stages]
        taken = sorted(set(wanted))
        final, maps = self.timm_model.forward_intermediates(pixels, indices=taken)  # maps in stage order
        by_stage = dict(zip(taken, maps))
        return [final] + [by_stage[s] for s in wanted]

    def unused_checkpoint_key(self, key: str) -> bool:
        """Every `timm_model.*` key of a num_classes=0 model is used."""
        return False

    def _stage_index(self, stage: int) -> int:
        n = len(self._stage_chs)
        if not -n <= stage < n:
            raise ValueError(f"stage {stage} out of range: this FastViT has stages 0..{n - 1}")
        return stage % n


class ClipEncoder(nn.Module):
    """transformers CLIPVisionModel, run up to hidden_states[select_layer]; tokens = that state minus CLS."""

    def __init__(self, cfg: VisionConfig):
        super().__init__()
        config = CLIPVisionConfig(hidden_size=cfg.hidden_size, num_hidden_layers=cfg.num_layers,
                                  num_attention_heads=cfg.num_heads, intermediate_size=cfg.intermediate_size,
                                  image_size=cfg.image_size, patch_size=cfg.stride)
        self.clip = CLIPVisionModel(config)
        # hidden_states[0] is the embedding (after pre_layrnorm), hidden_states[i] the output of layer i.
        self.num_layers_total = cfg.num_layers
        self.num_layers_kept = self._state_index(cfg.select_layer)
        self.clip.encoder.layers = self.clip.encoder.layers[: self.num_layers_kept]
        del self.clip.post_layernorm  # only feeds the pooled CLS output, which the VLMs do not use
        self.grid = cfg.grid
        self.out_channels = cfg.hidden_size

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self._hidden_states(pixels)[-1][:, 1:]  # (B, g*g, C): CLS dropped

    def stage_channels(self, stages: tuple[int, ...]) -> list[int]:
        return [self.out_channels for _ in stages]

    def feature_maps(self, pixels: torch.Tensor, stages: tuple[int, ...] = ()) -> list[torch.Tensor]:
        """[final map, *hidden_states[s] for s in stages], each (B, C, g, g); s indexes hidden_states."""
        wanted = [self._state_index(s) for s in stages]
        too_deep = [s for s, i in zip(stages, wanted) if i > self.num_layers_kept]
        if too_deep:
            raise ValueError(f"hidden states {too_deep} come after the selected layer: the encoder keeps "
                             f"only {self.num_layers_kept} of {self.num_layers_total} layers")
        states = self._hidden_states(pixels)
        return [self._to_map(states[-1])] + [self._to_map(states[i]) for i in wanted]

    def unused_checkpoint_key(self, key: str) -> bool:
        """True for keys of the layers after the selected one and of post_layernorm (never run)."""
        layer = re.match(r"clip\.encoder\.layers\.(\d+)\.", key)
        return key.startswith("clip.post_layernorm.") or bool(layer and int(layer.group(1)) >= self.num_layers_kept)

    def _hidden_states(self, pixels: torch.Tensor) -> list[torch.Tensor]:
        h = self.clip.pre_layrnorm(self.clip.embeddings(pixels))  # (B, 1 + g*g, C)
        states = [h]
        for layer in self.clip.encoder.layers:
            h = layer(h, None)  # no attention mask: every patch sees every patch
            states.append(h)
        return states

    def _to_map(self, state: torch.Tensor) -> torch.Tensor:
        b, _, c = state.shape
        return state[:, 1:].transpose(1, 2).reshape(b, c, self.grid, self.grid)  # (B, C, g, g)

    def _state_index(self, index: int) -> int:
        n = self.num_layers_total + 1  # number of hidden states
        if not -n <= index < n:
            raise ValueError(f"hidden state {index} out of range: CLIP with {n - 1} layers has states 0..{n - 1}")
        return index % n
