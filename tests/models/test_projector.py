"""Tests for models/projector.py: each projector against a reference computed here by hand from its
weights (matmuls, explicit windows and loops), MBTF's dependence on the extra maps, and the errors."""

import math

import pytest
import torch
import torch.nn.functional as F

from models.config import ProjectorConfig, VisionConfig, preset
from models.projector import build_projector
from models.vision import build_vision_encoder

C, H = 12, 20  # vision channels, LLM width
VISION = VisionConfig(kind="clip", image_size=6 * 7, hidden_size=C, stride=7, num_layers=2, num_heads=2,
                      intermediate_size=24)  # a 6x6 grid: divisible by k = 2 and 3


def _gelu(x):  # exact (erf) GELU, written out
    return 0.5 * x * (1 + torch.erf(x / math.sqrt(2)))


def _linear(x, layer):
    return x @ layer.weight.T + layer.bias


def _tokens(batch=2, grid=6, channels=C):
    return torch.randn(batch, grid * grid, channels)


@torch.no_grad()
def test_mlp2x_gelu_is_two_matmuls_with_exact_gelu():
    torch.manual_seed(0)
    proj = build_projector(ProjectorConfig("mlp2x_gelu"), VISION, H)
    x = _tokens()
    expected = _linear(_gelu(_linear(x, proj.linear_1)), proj.linear_2)
    torch.testing.assert_close(proj(x), expected)
    assert proj(x).shape == (2, 36, H) and proj.mbtf_blocks == ()
    assert set(proj.state_dict()) == {"linear_1.weight", "linear_1.bias", "linear_2.weight", "linear_2.bias"}


@torch.no_grad()
def test_ldpv2_is_mlp_then_2x2_mean_then_depthwise_conv_residual():
    torch.manual_seed(0)
    proj = build_projector(ProjectorConfig("ldpv2", k=2), VISION, H)
    x = _tokens()
    y = _linear(_gelu(_linear(x, proj.mlp[0])), proj.mlp[2]).reshape(2, 6, 6, H)  # (B, row, col, H)
    pooled = (y[:, 0::2, 0::2] + y[:, 0::2, 1::2] + y[:, 1::2, 0::2] + y[:, 1::2, 1::2]) / 4  # (B, 3, 3, H)
    padded = F.pad(pooled, (0, 0, 1, 1, 1, 1))  # zero border on rows and cols
    w = proj.peg.weight[:, 0]  # (H, 3, 3)
    conv = proj.peg.bias + sum(padded[:, di:di + 3, dj:dj + 3] * w[:, di, dj] for di in range(3) for dj in range(3))
    expected = (pooled + conv).reshape(2, 9, H)
    out = proj(x)
    assert out.shape == (2, 9, H)  # each grid side halved
    torch.testing.assert_close(out, expected)
    assert {k.split(".")[0] for k in proj.state_dict()} == {"mlp", "peg"}


@pytest.mark.parametrize("k", [2, 3])
@torch.no_grad()
def test_stf_is_window_concat_then_matmuls(k):
    torch.manual_seed(0)
    proj = build_projector(ProjectorConfig("stf", k=k), VISION, H)
    x = _tokens()
    g = 6 // k
    windows = F.unfold(x.reshape(2, 6, 6, C).permute(0, 3, 1, 2), k, stride=k)  # (B, C*k*k, g*g)
    w1 = proj.conv1.weight.reshape(k * k * C, C * k * k)  # conv weight (out, C, kh, kw) flattened
    y = _gelu(windows.transpose(1, 2) @ w1.T + proj.conv1.bias)  # (B, g*g, k*k*C)
    y = _gelu(y @ proj.conv2.weight[:, :, 0, 0].T + proj.conv2.bias)  # (B, g*g, 4H)
    expected = y @ proj.conv3.weight[:, :, 0, 0].T + proj.conv3.bias  # (B, g*g, H)
    out = proj(x)
    assert out.shape == (2, g * g, H)
    torch.testing.assert_close(out, expected)
    assert proj.conv2.out_channels == 4 * H and proj.conv1.out_channels == k * k * C


@pytest.mark.parametrize("k", [2, 3])
@torch.no_grad()
def test_pixel_shuffle_packs_each_window_into_channels(k):
    torch.manual_seed(0)
    proj = build_projector(ProjectorConfig("pixel_shuffle", k=k), VISION, H)
    x = _tokens()
    g = 6 // k
    grid = x.reshape(2, 6, 6, C)  # token r*6+c sits at grid row r, col c
    packed = torch.empty(2, g * g, C * k * k)
    for r in range(g):
        for c in range(g):
            for ch in range(C):
                for i in range(k):
                    for j in range(k):
                        packed[:, r * g + c, ch * k * k + i * k + j] = grid[:, r * k + i, c * k + j, ch]
    nchw = x.reshape(2, 6, 6, C).permute(0, 3, 1, 2)
    torch.testing.assert_close(F.pixel_unshuffle(nchw, k).flatten(2).transpose(1, 2), packed)  # same order
    expected = _linear(_gelu(_linear(packed, proj.linear_1)), proj.linear_2)
    torch.testing.assert_close(proj(x), expected)


@torch.no_grad()
def test_mbtf_output_depends_on_each_extra_map_and_pools_larger_maps():
    torch.manual_seed(0)
    proj = build_projector(ProjectorConfig("stf", k=2, mbtf_blocks=(0, 1)), VISION, H)
    assert proj.mbtf_blocks == (0, 1) and proj.mbtf_conv1.in_channels == 3 * C
    x, a, b = _tokens(), torch.randn(2, C, 6, 6), torch.randn(2, C, 12, 12)
    out = proj(x, [a, b])
    assert out.shape == (2, 9, H)
    assert not torch.allclose(proj(x, [a + 1, b]), out)
    b2 = b.clone()
    b2[:, :, 0, 0] += 1  # one pixel of the larger map
    assert not torch.allclose(proj(x, [a, b2]), out)
    b_mean = F.avg_pool2d(b, 2)
    torch.testing.assert_close(proj(x, [a, b_mean]), out)  # larger maps are average-pooled to the grid
    with pytest.raises(ValueError, match="expects 2 extra"):
        proj(x, [a])


@torch.no_grad()
def test_mbtf_with_fastvit_stage_maps_end_to_end():
    torch.manual_seed(0)
    cfg = preset("fastvlm-tiny")
    enc = build_vision_encoder(cfg.vision)
    proj = build_projector(ProjectorConfig("stf", k=2, mbtf_blocks=(1, 2)), cfg.vision, cfg.decoder.hidden_size)
    assert proj.mbtf_conv1.in_channels == 256 + 32 + 64  # final_conv + stages 1 and 2 of the tiny FastViT
    pixels = torch.randn(1, 3, 128, 128)
    final, *extra = enc.feature_maps(pixels, proj.mbtf_blocks)
    out = proj(final.flatten(2).transpose(1, 2), extra)
    assert out.shape == (1, cfg.vision.num_tokens // 4, cfg.decoder.hidden_size)


@pytest.mark.parametrize("kind", ["ldpv2", "stf", "pixel_shuffle"])
def test_grid_not_divisible_by_k_raises(kind):
    odd = VisionConfig(kind="clip", image_size=35, hidden_size=C, stride=7)  # 5x5 grid
    with pytest.raises(ValueError, match="5x5 token grid is not divisible by k=2"):
        build_projector(ProjectorConfig(kind, k=2), odd, H)
    build_projector(ProjectorConfig("mlp2x_gelu"), odd, H)  # no reduction, any grid


def test_unknown_kind_and_misplaced_mbtf_raise():
    with pytest.raises(ValueError, match="ldpv2, mlp2x_gelu, pixel_shuffle, stf"):
        build_projector(ProjectorConfig("qformer"), VISION, H)
    with pytest.raises(ValueError, match="need the 'stf' projector"):
        build_projector(ProjectorConfig("ldpv2", mbtf_blocks=(1,)), VISION, H)
    with pytest.raises(ValueError, match="no intermediate encoder features"):
        build_projector(ProjectorConfig("mlp2x_gelu"), VISION, H)(_tokens(), [torch.zeros(2, C, 6, 6)])


def test_fastvlm_stf_preset_is_fastvlm_with_a_quarter_of_the_tokens():
    dense, stf = preset("fastvlm-0.5b"), preset("fastvlm-0.5b-stf")
    assert stf.replace(projector=dense.projector) == dense
    assert (dense.num_vision_tokens, stf.num_vision_tokens) == (256, 64)
    proj = build_projector(stf.projector, stf.vision, stf.decoder.hidden_size)
    feats = torch.randn(1, dense.num_vision_tokens, stf.vision.hidden_size)
    assert proj(feats).shape == (1, 64, stf.decoder.hidden_size)
