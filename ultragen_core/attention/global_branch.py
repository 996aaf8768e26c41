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


# F.pad / F.interpolate index with 32-bit math: keep each piece under 2**31 elements.
_MAX_ELEMENTS = 2**31 - 1


def _frames_per_chunk(B: int, T: int, per_frame: int) -> int:
    return max(1, min(B * T, _MAX_ELEMENTS // max(1, per_frame)))


def pool_tokens(x: torch.Tensor, grid: Grid, factor: int) -> torch.Tensor:
    """Average-pool each frame of a token sequence.

    x: (B, T*H*W, C) row-major over (t, h, w). Returns (B, T*Hp*Wp, C) with Hp = ceil(H / factor).
    """
    T, H, W = grid
    if factor == 1:
        return x
    B, C = x.shape[0], x.shape[-1]
    _, Hp, Wp = pooled_grid(grid, factor)
    frames = x.view(B * T, H, W, C)
    out = torch.empty((B * T, Hp, Wp, C), dtype=x.dtype, device=x.device)
    step = _frames_per_chunk(B, T, Hp * factor * Wp * factor * C)
    for s in range(0, B * T, step):
        f = frames[s:s + step]
        if Hp * factor != H or Wp * factor != W:  # repeat the last row / column (only when needed)
            f = F.pad(f.permute(0, 3, 1, 2), (0, Wp * factor - W, 0, Hp * factor - H), mode="replicate")
            f = f.permute(0, 2, 3, 1)
        # (n, Hp, p, Wp, p, C) -> mean over the two p axes
        out[s:s + step] = f.reshape(-1, Hp, factor, Wp, factor, C).mean(dim=(2, 4))
    return out.view(B, T * Hp * Wp, C)


def upsample_tokens(y: torch.Tensor, grid: Grid, factor: int) -> torch.Tensor:
    """Inverse of :func:`pool_tokens` in shape: (B, T*Hp*Wp, C) -> (B, T*H*W, C), bilinear."""
    T, H, W = grid
    if factor == 1:
        return y
    B, C = y.shape[0], y.shape[-1]
    _, Hp, Wp = pooled_grid(grid, factor)
    frames = rearrange(y, "b (t h w) c -> (b t) c h w", t=T, h=Hp, w=Wp)
    out = torch.empty((B * T, H, W, C), dtype=y.dtype, device=y.device)
    step = _frames_per_chunk(B, T, Hp * factor * Wp * factor * C)
    for s in range(0, B * T, step):
        up = F.interpolate(frames[s:s + step], scale_factor=factor, mode="bilinear", align_corners=False)
        out[s:s + step] = up[:, :, :H, :W].permute(0, 2, 3, 1)
    return out.view(B, T * H * W, C)


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
