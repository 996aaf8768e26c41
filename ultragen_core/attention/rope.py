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


def wan_axes_dim(head_dim: int) -> tuple[int, int, int]:
    """Rotary dimensions per axis (t, h, w) of Wan's ``EmbedND``: (44, 42, 42) for head_dim 128."""
    if head_dim < 6 or head_dim % 2:
        raise ValueError(f"wan_axes_dim needs an even head_dim >= 6, got {head_dim}.")
    side = 2 * (head_dim // 6)
    return (head_dim - 2 * side, side, side)


def rope_freqs(positions: torch.Tensor, axes_dim: tuple[int, ...], theta: float = 10000.0,
               dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The RoPE table of tokens at arbitrary (fractional) positions, in ComfyUI's Wan layout.

    positions: (N, A) positions per axis (float; A = len(axes_dim), e.g. (t, h, w) on the video grid).
    axes_dim: rotary dimensions per axis, each even (see :func:`wan_axes_dim`).
    Returns (1, N, 1, sum(axes_dim) / 2, 2, 2) of [[cos, -sin], [sin, cos]] in ``dtype``, the layout
    ``WanModel.rope_encode`` returns (``EmbedND`` over ``rope``: frequencies theta^(-2i/dim) per axis,
    the axes concatenated). The angles, cosines and sines are computed in float64 and cast once, as
    ComfyUI does; at integer positions the table is the model's own, bit for bit. Devices without
    float64 (MPS) compute on the CPU.
    """
    if positions.ndim != 2 or positions.shape[1] != len(axes_dim):
        raise ValueError(f"rope_freqs needs positions of shape (N, {len(axes_dim)}), got {tuple(positions.shape)}.")
    if any(d % 2 for d in axes_dim):
        raise ValueError(f"rope_freqs needs even rotary dimensions per axis, got {tuple(axes_dim)}.")
    device = positions.device
    work = torch.device("cpu") if device.type == "mps" else device
    pos = positions.to(device=work, dtype=torch.float64)
    angles = []
    for axis, dim in enumerate(axes_dim):
        scale = torch.linspace(0, (dim - 2) / dim, steps=dim // 2, dtype=torch.float64, device=work)
        omega = 1.0 / (theta ** scale)  # (dim/2,), as comfy.ldm.flux.math.rope
        angles.append(pos[:, axis, None] * omega)  # (N, dim/2)
    angle = torch.cat(angles, dim=-1)  # (N, D/2)
    cos, sin = angle.cos(), angle.sin()
    table = torch.stack([cos, -sin, sin, cos], dim=-1).unflatten(-1, (2, 2))  # (N, D/2, 2, 2)
    return table.to(device=device, dtype=dtype)[None, :, None]  # (1, N, 1, D/2, 2, 2)
