"""Vision-to-LLM projectors: tokens (B, g*g, C) on the encoder's g x g grid -> (B, (g/r)^2, H).

- mlp2x_gelu (LLaVA-1.5, FastVLM): Linear(C, H), exact GELU, Linear(H, H). Keys `linear_1.*`, `linear_2.*`
  (transformers FastVLM `multi_modal_projector.linear_{1,2}`; original release `mm_projector.{0,2}`).
- ldpv2 (MobileVLM V2 `LDPNetV2Projector`): `mlp` = Linear(C, H), GELU, Linear(H, H); 2x2 average pooling of
  the grid (MobileVLM: AdaptiveAvgPool2d 24x24 -> 12x12, the same as avg_pool2d(k) when k divides g); then
  PEG: depthwise 3x3 conv plus residual. Keys `mlp.{0,2}.*`, `peg.*` (MobileVLM: `mlp.mlp.*`, `peg.peg.0.*`).
- stf: Spatial Token Fusion, "Learning Compact Vision Tokens" (seed 004) §3.4 and Table 1(b): `conv1` k x k
  stride-k conv C -> k^2*C (a learnable concatenation of the k^2 neighbours, C2 = k^2*C1), then 1x1 convs
  `conv2` -> 4H and `conv3` -> H. For LLaVA-1.5-7B (C=1024, H=4096, k=2) these are the table's 4096, 16384,
  4096. With MBTF (§3.3, Table 1(a)), the final map and the maps of `mbtf_blocks` (average-pooled down to
  the final grid) are concatenated on channels and fused first by 1x1 convs `mbtf_conv1` -> 4C and
  `mbtf_conv2` -> C. The table lists GELU after every conv; the authors' released code (LLaVA-STF) has none
  after the last projector layer. We put GELU after every conv but the last, so the LLM inputs are not
  squashed into GELU's range, as in mlp2x_gelu.
- pixel_shuffle: space-to-depth by k (no parameters; channel order (c, i, j) as torch's pixel_unshuffle),
  then mlp2x_gelu from C*k^2 to H.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from models.config import ProjectorConfig, VisionConfig


def build_projector(pcfg: ProjectorConfig, vision: VisionConfig, hidden_size: int) -> nn.Module:
    """The projector named by `pcfg.kind`, mapping `vision`'s tokens to `hidden_size`, random weights."""
    kinds = ("ldpv2", "mlp2x_gelu", "pixel_shuffle", "stf")
    if pcfg.kind not in kinds:
        raise ValueError(f"unknown projector kind {pcfg.kind!r}; valid kinds: {', '.join(kinds)}")
    g, r, c = vision.grid, pcfg.reduction, vision.hidden_size
    if r < 1 or g % r:
        raise ValueError(f"projector {pcfg.kind}: the {g}x{g} token grid is not divisible by k={r}")
    if pcfg.mbtf_blocks and pcfg.kind != "stf":
        raise ValueError(f"mbtf_blocks {pcfg.mbtf_blocks} need the 'stf' projector, not {pcfg.kind!r}")
    if pcfg.kind == "mlp2x_gelu":
        return Mlp2xGelu(c, hidden_size)
    if pcfg.kind == "ldpv2":
        return LDPv2(c, hidden_size, g, r)
    if pcfg.kind == "pixel_shuffle":
        return PixelShuffle(c, hidden_size, g, r)
    from models.vision import stage_channels  # MBTF only: channels of the extra encoder stages

    extra_channels = stage_channels(vision, pcfg.mbtf_blocks) if pcfg.mbtf_blocks else []
    return STF(c, hidden_size, g, r, pcfg.mbtf_blocks, extra_channels)


def _check_no_extra(name: str, extra) -> None:
    if len(extra):
        raise ValueError(f"{name} takes no intermediate encoder features (got {len(extra)}); only stf with MBTF does")


def _to_map(tokens: torch.Tensor, grid: int) -> torch.Tensor:
    b, n, c = tokens.shape
    if n != grid * grid:
        raise ValueError(f"expected {grid}x{grid} = {grid * grid} tokens, got {n}")
    return tokens.transpose(1, 2).reshape(b, c, grid, grid)  # (B, C, g, g)


def _to_tokens(x: torch.Tensor) -> torch.Tensor:
    return x.flatten(2).transpose(1, 2)  # (B, C, h, w) -> (B, h*w, C)


class Mlp2xGelu(nn.Module):
    mbtf_blocks: tuple[int, ...] = ()

    def __init__(self, in_channels: int, hidden_size: int):
        super().__init__()
        self.linear_1 = nn.Linear(in_channels, hidden_size)
        self.act = nn.GELU()
        self.linear_2 = nn.Linear(hidden_size, hidden_size)

    def forward(self, tokens: torch.Tensor, extra=()) -> torch.Tensor:
        _check_no_extra("mlp2x_gelu", extra)
        return self.linear_2(self.act(self.linear_1(tokens)))


class LDPv2(nn.Module):
    mbtf_blocks: tuple[int, ...] = ()

    def __init__(self, in_channels: int, hidden_size: int, grid: int, k: int):
        super().__init__()
        self.grid, self.k = grid, k
        self.mlp = nn.Sequential(nn.Linear(in_channels, hidden_size), nn.GELU(), nn.Linear(hidden_size, hidden_size))
        self.peg = nn.Conv2d(hidden_size, hidden_size, 3, 1, 1, groups=hidden_size)

    def forward(self, tokens: torch.Tensor, extra=()) -> torch.Tensor:
        _check_no_extra("ldpv2", extra)
        x = _to_map(self.mlp(tokens), self.grid)  # (B, H, g, g)
        x = F.avg_pool2d(x, self.k)  # (B, H, g/k, g/k)
        x = x + self.peg(x)
        return _to_tokens(x)  # (B, (g/k)^2, H)


class PixelShuffle(nn.Module):
    mbtf_blocks: tuple[int, ...] = ()

    def __init__(self, in_channels: int, hidden_size: int, grid: int, k: int):
        super().__init__()
        self.grid, self.k = grid, k
        self.linear_1 = nn.Linear(in_channels * k * k, hidden_size)
        self.act = nn.GELU()
        self.linear_2 = nn.Linear(hidden_size, hidden_size)

    def forward(self, tokens: torch.Tensor, extra=()) -> torch.Tensor:
        _check_no_extra("pixel_shuffle", extra)
        b, n, c = tokens.shape
        g, k = self.grid, self.k
        if n != g * g:
            raise ValueError(f"expected {g}x{g} = {g * g} tokens, got {n}")
        x = tokens.reshape(b, g // k, k, g // k, k, c)  # (B, h, i, w, j, C): token (h*k+i, w*k+j)
        x = x.permute(0, 1, 3, 5, 2, 4)  # (B, h, w, C, i, j)
        x = x.reshape(b, (g // k) ** 2, c * k * k)  # (B, h*w, C*k*k)
        return self.linear_2(self.act(self.linear_1(x)))


class STF(nn.Module):
    """Spatial Token Fusion with optional Multi-Block Token Fusion (seed 004, §3.3-3.4)."""

    def __init__(self, in_channels: int, hidden_size: int, grid: int, k: int,
                 mbtf_blocks: tuple[int, ...] = (), extra_channels: list[int] = ()):
        super().__init__()
        if len(extra_channels) != len(mbtf_blocks):
            raise ValueError(f"need one channel count per MBTF block: {mbtf_blocks} vs {list(extra_channels)}")
        self.grid, self.k = grid, k
        self.mbtf_blocks = tuple(mbtf_blocks)
        c = in_channels
        if self.mbtf_blocks:
            self.mbtf_conv1 = nn.Conv2d(c + sum(extra_channels), 4 * c, 1)
            self.mbtf_conv2 = nn.Conv2d(4 * c, c, 1)
        self.conv1 = nn.Conv2d(c, k * k * c, k, stride=k)
        self.conv2 = nn.Conv2d(k * k * c, 4 * hidden_size, 1)
        self.conv3 = nn.Conv2d(4 * hidden_size, hidden_size, 1)
        self.act = nn.GELU()

    def forward(self, tokens: torch.Tensor, extra=()) -> torch.Tensor:
        """tokens (B, g*g, C); extra: maps of `mbtf_blocks` in that order, each (B, C_i, H_i, W_i), H_i >= g."""
        if len(extra) != len(self.mbtf_blocks):
            raise ValueError(f"stf expects {len(self.mbtf_blocks)} extra feature maps (mbtf_blocks="
                             f"{self.mbtf_blocks}), got {len(extra)}")
        x = _to_map(tokens, self.grid)  # (B, C, g, g)
        if self.mbtf_blocks:
            x = torch.cat([x] + [self._pool_to_grid(m) for m in extra], dim=1)  # (B, C + sum C_i, g, g)
            x = self.act(self.mbtf_conv1(x))  # (B, 4C, g, g)
            x = self.act(self.mbtf_conv2(x))  # (B, C, g, g)
        x = self.act(self.conv1(x))  # (B, k*k*C, g/k, g/k)
        x = self.act(self.conv2(x))  # (B, 4H, g/k, g/k)
        return _to_tokens(self.conv3(x))  # (B, (g/k)^2, H)

    def _pool_to_grid(self, m: torch.Tensor) -> torch.Tensor:
        h, w = m.shape[-2:]
        if h != w or h % self.grid:
            raise ValueError(f"MBTF feature map {h}x{w} cannot be average-pooled to the {self.grid}x{self.grid} grid")
        return m if h == self.grid else F.avg_pool2d(m, h // self.grid)  # (B, C_i, g, g)
