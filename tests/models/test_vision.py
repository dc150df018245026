"""Tests for models/vision.py: token counts of the real encoders, equality with the libraries' own
models (transformers' TimmWrapperModel as FastVLM uses it; CLIPVisionModel hidden_states[-2]), stage
maps for MBTF, and torch.export of the tiny encoders.

Full-size shapes: fastvit_mci3 runs for real at 384 px; at 1024 px, and CLIP ViT-L/14-336 (300M params,
~12 s to build and run here), run on the meta device, which propagates shapes through the real code
without allocating or computing.
"""

import re
from dataclasses import replace as _with

import pytest
import timm
import torch
from transformers import CLIPVisionConfig, CLIPVisionModel, TimmWrapperConfig, TimmWrapperModel

from models.config import TINY_FASTVIT_ARGS, VisionConfig, preset
from models.vision import build_vision_encoder, stage_channels

FASTVLM = preset("fastvlm-0.5b").vision
MOBILEVLM = preset("mobilevlm-v2-1.7b").vision
TINY_FASTVIT = preset("fastvlm-tiny").vision
TINY_CLIP = preset("mobilevlm-tiny").vision


def _pixels(cfg: VisionConfig, batch: int = 2) -> torch.Tensor:
    return torch.randn(batch, 3, cfg.image_size, cfg.image_size)


def test_unknown_kind_lists_valid_kinds():
    with pytest.raises(ValueError, match="clip.*fastvit"):
        build_vision_encoder(_with(TINY_CLIP, kind="siglip"))


def test_fastvit_config_mismatch_is_reported():
    with pytest.raises(ValueError, match="256 channels at stride 32"):
        build_vision_encoder(_with(TINY_FASTVIT, hidden_size=512))


@torch.no_grad()
def test_fastvit_mci3_at_384px_gives_36_tokens_of_3072():
    torch.manual_seed(0)
    enc = build_vision_encoder(_with(FASTVLM, image_size=384))
    tokens = enc(_pixels(_with(FASTVLM, image_size=384), batch=1))
    assert tokens.shape == (1, 36, 3072)
    assert torch.isfinite(tokens).all() and tokens.abs().mean() > 1e-3  # timm's init, not ~0
    assert (enc.grid, enc.out_channels) == (6, 3072)


def test_fastvit_mci3_at_1024px_gives_256_tokens_of_3072():
    with torch.device("meta"):
        enc = build_vision_encoder(FASTVLM)
        tokens = enc(_pixels(FASTVLM, batch=1))
        maps = enc.feature_maps(_pixels(FASTVLM, batch=1), (3, -2, 0))
    assert tokens.shape == (1, 256, 3072)
    # stages of FastViTHD: strides 4, 8, 16, 32, 64 with 96..1536 channels; final_conv doubles to 3072
    assert [tuple(m.shape[1:]) for m in maps] == [(3072, 16, 16), (768, 32, 32), (768, 32, 32), (96, 256, 256)]
    assert stage_channels(FASTVLM, (0, 1, 2, 3, 4)) == [96, 192, 384, 768, 1536]


def test_clip_vit_l14_at_336px_gives_576_tokens_of_1024():
    with torch.device("meta"):
        enc = build_vision_encoder(MOBILEVLM)
        tokens = enc(_pixels(MOBILEVLM, batch=1))
    assert tokens.shape == (1, 576, 1024)
    assert enc.num_layers_kept == 23  # hidden_states[-2] is the output of layer 23 of 24
    assert len(enc.clip.encoder.layers) == 23
    params = sum(p.numel() for p in enc.parameters())
    assert 290e6 < params < 300e6  # ViT-L/14-336 is ~303M with its 24th layer (12.6M) and post-LN


@pytest.mark.parametrize("cfg", [TINY_FASTVIT, TINY_CLIP], ids=["fastvlm-tiny", "mobilevlm-tiny"])
@torch.no_grad()
def test_tiny_presets_token_counts(cfg):
    torch.manual_seed(0)
    enc = build_vision_encoder(cfg)
    tokens = enc(_pixels(cfg))
    assert tokens.shape == (2, cfg.num_tokens, cfg.hidden_size)
    assert (enc.grid, enc.out_channels) == (cfg.grid, cfg.hidden_size)
    assert torch.isfinite(tokens).all()


@torch.no_grad()
def test_fastvit_equals_transformers_timm_wrapper_as_fastvlm_uses_it():
    torch.manual_seed(0)
    enc = build_vision_encoder(TINY_FASTVIT)
    wrapper = TimmWrapperModel(TimmWrapperConfig(
        architecture=TINY_FASTVIT.timm_name, model_args={"inference_mode": True, **TINY_FASTVIT_ARGS})).eval()
    wrapper.load_state_dict(enc.state_dict(), strict=True)  # same `timm_model.*` keys
    x = _pixels(TINY_FASTVIT)
    hidden = wrapper(pixel_values=x).last_hidden_state  # (B, C, h, w)
    expected = hidden.flatten(2).permute(0, 2, 1)  # FastVlmModel.get_image_features
    torch.testing.assert_close(enc(x), expected, rtol=0, atol=0)


@torch.no_grad()
def test_fastvit_feature_maps_are_timm_stage_outputs():
    torch.manual_seed(0)
    enc = build_vision_encoder(TINY_FASTVIT)
    x = _pixels(TINY_FASTVIT)
    h, outs = enc.timm_model.stem(x), []
    for stage in enc.timm_model.stages:
        h = stage(h)
        outs.append(h)
    maps = enc.feature_maps(x, (2, 0, -1))
    assert [tuple(m.shape[1:]) for m in maps] == [(256, 4, 4), (64, 8, 8), (16, 32, 32), (128, 4, 4)]
    for got, want in zip(maps[1:], [outs[2], outs[0], outs[3]]):
        torch.testing.assert_close(got, want)
    torch.testing.assert_close(maps[0].flatten(2).transpose(1, 2), enc(x))
    with pytest.raises(ValueError, match="stages 0..3"):
        enc.feature_maps(x, (4,))


def _reference_clip(cfg: VisionConfig) -> CLIPVisionModel:
    return CLIPVisionModel(CLIPVisionConfig(
        hidden_size=cfg.hidden_size, num_hidden_layers=cfg.num_layers, num_attention_heads=cfg.num_heads,
        intermediate_size=cfg.intermediate_size, image_size=cfg.image_size, patch_size=cfg.stride)).eval()


def _load_from_reference(enc, ref: CLIPVisionModel) -> list[str]:
    """Load the full CLIPVisionModel's weights into `enc`; return the keys the encoder discarded."""
    full = {f"clip.{k}": v for k, v in ref.state_dict().items()}
    dropped = sorted(k for k in full if enc.unused_checkpoint_key(k))
    enc.load_state_dict({k: v for k, v in full.items() if k not in dropped}, strict=True)
    return dropped


@pytest.mark.parametrize("select_layer", [-2, -1, 1])
@torch.no_grad()
def test_clip_equals_clip_vision_model_hidden_state(select_layer):
    torch.manual_seed(0)
    cfg = _with(TINY_CLIP, select_layer=select_layer)
    ref, enc = _reference_clip(cfg), build_vision_encoder(cfg)
    dropped = _load_from_reference(enc, ref)
    kept = select_layer % (cfg.num_layers + 1)
    assert {int(m.group(1)) for k in dropped if (m := re.match(r"clip\.encoder\.layers\.(\d+)\.", k))} \
        == set(range(kept, cfg.num_layers))
    assert any(k.startswith("clip.post_layernorm.") for k in dropped)
    x = _pixels(cfg)
    expected = ref(pixel_values=x, output_hidden_states=True).hidden_states[select_layer][:, 1:]
    torch.testing.assert_close(enc(x), expected, rtol=0, atol=0)


@torch.no_grad()
def test_clip_feature_maps_are_hidden_states_on_the_grid():
    torch.manual_seed(0)
    ref, enc = _reference_clip(TINY_CLIP), build_vision_encoder(TINY_CLIP)
    _load_from_reference(enc, ref)
    x = _pixels(TINY_CLIP)
    states = ref(pixel_values=x, output_hidden_states=True).hidden_states
    g, c = TINY_CLIP.grid, TINY_CLIP.hidden_size
    maps = enc.feature_maps(x, (1, 0))
    for got, index in zip(maps, [-2, 1, 0]):
        want = states[index][:, 1:].reshape(2, g, g, c).permute(0, 3, 1, 2)  # token (r, col) -> map[:, :, r, col]
        torch.testing.assert_close(got, want, rtol=0, atol=0)
    with pytest.raises(ValueError, match="after the selected layer"):
        enc.feature_maps(x, (3,))


@pytest.mark.parametrize("cfg", [TINY_FASTVIT, TINY_CLIP], ids=["fastvlm-tiny", "mobilevlm-tiny"])
def test_torch_export_matches_eager(cfg):
    torch.manual_seed(0)
    enc = build_vision_encoder(cfg)
    x = _pixels(cfg)
    program = torch.export.export(enc, (x,))
    x2 = _pixels(cfg)  # a different input than the one exported with
    with torch.no_grad():
        torch.testing.assert_close(program.module()(x2), enc(x2), rtol=1e-5, atol=1e-6)


def test_exported_fastvit_attention_has_no_masking_guard():
    """The attention stage exports as matmul + softmax: no fused SDPA, whose decomposition guards
    all-masked rows with any/eq/where, ops that XNNPACK leaves to the portable kernels."""
    enc = build_vision_encoder(TINY_FASTVIT).eval()
    x = _pixels(TINY_FASTVIT, 1)
    targets = {str(n.target) for n in torch.export.export(enc, (x,)).run_decompositions().graph.nodes
               if n.op == "call_function"}
    assert any("softmax" in t for t in targets), targets  # the tiny MCi has an attention stage
    assert not any(re.search(r"scaled_dot_product|aten\.(any|where)\.", t) for t in targets), targets
