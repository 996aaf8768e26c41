"""Rotary position embedding applied as one complex multiply per element.

ComfyUI stores RoPE tables as 2 x 2 rotation matrices per frequency, ``(..., D/2, 2, 2)`` in float32,
and applies them with several strided float32 passes over q and k. The same rotation, written as a
complex multiply, is three contiguous passes (to float32, multiply, back to the model's dtype) and
gives the same float32 result up to rounding order.
"""
from __future__ import annotations

import torch


def complex_table(freqs: torch.Tensor) -> torch.Tensor | None:
    """freqs (..., D/2, 2, 2) holding [[cos, -sin], [sin, cos]] -> (..., D/2) complex (cos + i sin).

    Returns None when the table is not made of rotations (then the caller keeps its own RoPE).
    """
    if freqs.ndim < 3 or tuple(freqs.shape[-2:]) != (2, 2) or not freqs.is_floating_point():
        return None
    cos, sin = freqs[..., 0, 0], freqs[..., 1, 0]
    if not (torch.equal(freqs[..., 1, 1], cos) and torch.equal(freqs[..., 0, 1], -sin)):
        return None
    if cos.dtype not in (torch.float32, torch.float64):
        cos, sin = cos.float(), sin.float()
    return torch.complex(cos, sin)


def apply_complex(x: torch.Tensor, table: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """Rotate x (..., D) by ``table`` (broadcastable to (..., D/2), complex), computed in the table's
    precision; the result is written to ``out`` (any dtype, same shape as x) or returned in x's dtype."""
    real = table.real.dtype
    xc = torch.view_as_complex(x.to(real, copy=True).unflatten(-1, (-1, 2)))  # never rotates x in place
    xc.mul_(table)
    rotated = torch.view_as_real(xc).flatten(-2)
    if out is None:
        return rotated.to(x.dtype)
    return out.copy_(rotated)
