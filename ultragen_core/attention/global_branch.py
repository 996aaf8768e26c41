"""The global branch's spatial compression: per-frame pooling of tokens and upsampling back.

Pooling is an average over p x p cells of each frame; a grid that p does not divide is padded by
replicating its last row / column (no token is dropped, none is resized). Upsampling is bilinear
(align_corners=False, as ``F.interpolate`` with ``scale_factor=p``) to the padded size, then cropped
to the grid.

Both are separable linear maps, so each runs as two batched matrix products on the token layout
(B, T*H*W, C) itself: no permute, no padded copy, one read of the full-size tensor. The weights are
small integers (exact in any dtype); the 1/p scales go in as the GEMM's alpha, applied in float32.
Upsampling can add its result into an existing tensor (``out=``), which is how the fusion runs.
"""
from __future__ import annotations

import functools
import math

import torch

from .windows import Grid


def pooled_grid(grid: Grid, factor: int) -> Grid:
    T, H, W = grid
    return (T, math.ceil(H / factor), math.ceil(W / factor))


@functools.lru_cache(maxsize=64)
def _pool_counts(n: int, p: int) -> torch.Tensor:
    """(ceil(n/p), n): how many of cell i's p positions (padded by repeating the last) are position j."""
    m = torch.zeros(math.ceil(n / p), n, dtype=torch.float64)
    for r in range(math.ceil(n / p) * p):
        m[r // p, min(r, n - 1)] += 1
    return m


@functools.lru_cache(maxsize=64)
def _bilinear_weights(n: int, p: int) -> torch.Tensor:
    """(n, ceil(n/p)) bilinear weights times 2p (integers): output x of the p-fold upsampling, cropped
    to n, from input i. Source position (x + 0.5) / p - 0.5, clamped at 0, as PyTorch computes it."""
    m_in = math.ceil(n / p)
    m = torch.zeros(n, m_in, dtype=torch.float64)
    for x in range(n):
        src2p = max(2 * x + 1 - p, 0)            # 2p * source position
        i0 = src2p // (2 * p)
        frac = src2p - 2 * p * i0                # 2p * (source - i0)
        m[x, i0] += 2 * p - frac
        m[x, min(i0 + 1, m_in - 1)] += frac
    return m


@functools.lru_cache(maxsize=128)
def _device_weights(kind: str, n: int, p: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    table = _pool_counts(n, p) if kind == "pool" else _bilinear_weights(n, p)
    rows, cols = table.shape
    # rows start at multiples of 8 elements: cuBLAS then picks its vectorized kernels (an odd row
    # stride, e.g. 17 or 135, sends the product to slow unaligned kernels)
    padded = torch.zeros(rows, -(-cols // 8) * 8, dtype=dtype)
    padded[:, :cols] = table
    return padded.to(device)[:, :cols]


_WIDE, _FEW = 2**16, 256  # see _apply


def _weights(kind: str, n: int, p: int, like: torch.Tensor) -> torch.Tensor:
    return _device_weights(kind, n, p, like.device, like.dtype)


def _apply(weights: torch.Tensor, x: torch.Tensor, alpha: float, out: torch.Tensor | None = None,
           beta: float = 0.0) -> torch.Tensor:
    """out = beta * out + alpha * (weights @ x[i]) for each i; weights (m, k), x (batch, k, n)."""
    batch, _, n = x.shape
    if out is None:
        out = torch.empty((batch, weights.shape[0], n), dtype=x.dtype, device=x.device)
        beta = 0.0
    if n >= _WIDE and batch <= _FEW:  # a few wide products: one plain GEMM each (cuBLAS sends the
        for i in range(batch):        # batched form with a broadcast operand to a slow kernel)
            out[i].addmm_(weights, x[i], beta=beta, alpha=alpha)
        return out
    return out.baddbmm_(weights.expand(batch, *weights.shape), x, beta=beta, alpha=alpha)


def pool_tokens(x: torch.Tensor, grid: Grid, factor: int) -> torch.Tensor:
    """Average-pool each frame of a token sequence.

    x: (B, T*H*W, C) row-major over (t, h, w). Returns (B, T*Hp*Wp, C) with Hp = ceil(H / factor).
    """
    T, H, W = grid
    if factor == 1:
        return x
    B, C = x.shape[0], x.shape[-1]
    _, Hp, Wp = pooled_grid(grid, factor)
    rows = _apply(_weights("pool", W, factor, x), x.reshape(B * T * H, W, C), 1.0 / factor)  # (BTH, Wp, C)
    out = _apply(_weights("pool", H, factor, x), rows.view(B * T, H, Wp * C), 1.0 / factor)   # (BT, Hp, Wp*C)
    return out.view(B, T * Hp * Wp, C)


def upsample_tokens(y: torch.Tensor, grid: Grid, factor: int, out: torch.Tensor | None = None,
                    alpha: float = 1.0, beta: float = 0.0) -> torch.Tensor:
    """Inverse of :func:`pool_tokens` in shape: (B, T*Hp*Wp, C) -> (B, T*H*W, C), bilinear.

    With ``out`` (B, T*H*W, C) given, computes ``out = beta * out + alpha * up(y)`` in place.
    """
    T, H, W = grid
    B, C = y.shape[0], y.shape[-1]
    if factor == 1:
        return y.clone() if out is None else out.mul_(beta).add_(y, alpha=alpha)
    _, Hp, Wp = pooled_grid(grid, factor)
    scale = 1.0 / (2 * factor)
    rows = _apply(_weights("up", W, factor, y), y.reshape(B * T * Hp, Wp, C), scale)  # (BTHp, W, C)
    target = None if out is None else out.view(B * T, H, W * C)
    result = _apply(_weights("up", H, factor, y), rows.view(B * T, Hp, W * C), alpha * scale,
                    target, beta)
    return result.view(B, T * H * W, C)


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
