"""The global branch's spatial compression: per-frame pooling of tokens and upsampling back.

Pooling is an average over p x p cells of each frame; a grid that p does not divide is padded by
replicating its last row / column (no token is dropped, none is resized). Upsampling is bilinear
(align_corners=False) to the padded size, then cropped to the grid.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from einops import rearrange

from .windows import Grid


def pooled_grid(grid: Grid, factor: int) -> Grid:
    T, H, W = grid
    return (T, math.ceil(H / factor), math.ceil(W / factor))


def pool_tokens(x: torch.Tensor, grid: Grid, factor: int) -> torch.Tensor:
    """Average-pool each frame of a token sequence.

    x: (B, T*H*W, C) row-major over (t, h, w). Returns (B, T*Hp*Wp, C) with Hp = ceil(H / factor).
    """
    T, H, W = grid
    if factor == 1:
        return x
    _, Hp, Wp = pooled_grid(grid, factor)
    frames = rearrange(x, "b (t h w) c -> (b t) c h w", t=T, h=H, w=W)
    frames = F.pad(frames, (0, Wp * factor - W, 0, Hp * factor - H), mode="replicate")
    pooled = F.avg_pool2d(frames, factor)  # (B*T, C, Hp, Wp)
    return rearrange(pooled, "(b t) c h w -> b (t h w) c", t=T)


def upsample_tokens(y: torch.Tensor, grid: Grid, factor: int) -> torch.Tensor:
    """Inverse of :func:`pool_tokens` in shape: (B, T*Hp*Wp, C) -> (B, T*H*W, C), bilinear."""
    T, H, W = grid
    if factor == 1:
        return y
    _, Hp, Wp = pooled_grid(grid, factor)
    frames = rearrange(y, "b (t h w) c -> (b t) c h w", t=T, h=Hp, w=Wp)
    up = F.interpolate(frames, scale_factor=factor, mode="bilinear", align_corners=False)[:, :, :H, :W]
    return rearrange(up, "(b t) c h w -> b (t h w) c", t=T)


def pooled_positions(grid: Grid, factor: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """Flat indices into the full grid of the positions (t, i, j), i < Hp, j < Wp.

    Gathering a per-token positional table (e.g. RoPE frequencies) at these indices gives the pooled
    tokens unit-spaced positions: position interpolation by ``factor``.
    """
    T, H, W = grid
    _, Hp, Wp = pooled_grid(grid, factor)
    t = torch.arange(T, device=device)[:, None, None]
    i = torch.arange(Hp, device=device)[None, :, None]
    j = torch.arange(Wp, device=device)[None, None, :]
    return ((t * H + i) * W + j).reshape(-1)
