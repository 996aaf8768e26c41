"""Which (t, h, w) positions MiniMax-H3's RoPE gets inside the windows: a documented choice, tested.

H3 places a frame's tokens by *area-normalised* coordinates (ComfyUI's ``_axis_from_sqrt_area``): along an axis
of ``n`` tokens in a frame of ``H x W`` tokens, token ``i`` sits at ``(i * ratio / n + (1 - ratio) / 2) * 32``
with ``ratio = n / sqrt(H * W)``. A frame of any size spans about 32 units around 16, and neighbouring tokens are
``32 / sqrt(H * W)`` apart. At 2x the trained size per side the model's own coordinates put tokens half as far
apart as in training (the frame is compressed 2x into the same span): a window cut from that frame would see
neighbours at distances the model never saw.

The choice: **each window gets the coordinates a frame of the native size would give its tokens.** A window of
``lh x lw`` tokens is laid out as the centre of a frame of area ``max(lh * lw, native area)``:

- a window of the native size gets exactly the native frame's coordinates (the positions the model knows), and
  relates to the shared tokens as a native frame does (text at h = w = 0, audio pinned to the frame's w
  extremes, which depend on the aspect ratio only);
- a smaller window (the fast preset, the half windows at the border of a shifted layout) is a centre crop of a
  native frame: the native spacing, not stretched;
- a window over the whole frame (larger than native) gets ComfyUI's own coordinates of that frame, so the
  full-attention limit is the unpatched model.

The time coordinate is ComfyUI's (it is not area-normalised). The global branch's pooled tokens keep ComfyUI's
coordinates of the whole frame: pooled by ``f`` at ``f`` x the native size, they are ``f`` tokens apart, i.e.
the native spacing again. The shared tokens (text, keyframe / reference rows, audio) keep ComfyUI's.
"""
from __future__ import annotations

import math

import torch

from ...attention.windows import WindowLayout

SPAN = 32.0  # H3's coordinate range of a frame


def frame_axis(n: int, sqrt_area: float) -> torch.Tensor:
    """H3's area-normalised coordinates of ``n`` tokens along one axis of a frame of ``sqrt_area ** 2`` tokens:
    (n,) float64, computed in the model's own order of operations (so a whole frame's are bit-for-bit ComfyUI's)."""
    ratio = n / sqrt_area
    return (torch.arange(n, dtype=torch.float64) * (ratio / n) + (1.0 - ratio) / 2.0) * SPAN


def window_axes(lh: int, lw: int, native_hw: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """(h, w) coordinates, (lh,) and (lw,) float64, of the tokens of an ``lh x lw`` window (the module
    docstring's choice): the centre of a frame of area max(lh * lw, native area)."""
    sqrt_area = math.sqrt(max(lh * lw, native_hw[0] * native_hw[1]))
    return frame_axis(lh, sqrt_area), frame_axis(lw, sqrt_area)


def group_shape(layout: WindowLayout, tokens: torch.Tensor) -> tuple[int, int, int]:
    """The window shape of a run of whole windows (``tokens``: their grid tokens, window-major, as
    :func:`..attention.streamed.streamed_window_attention` hands them to the projector). Found by checking which
    of the layout's window shapes the tokens follow; ValueError when none does."""
    T, H, W = layout.grid
    for shape, _ in layout.groups:
        lt, lh, lw = shape
        count = math.prod(shape)
        if tokens.numel() % count:
            continue
        t = torch.arange(lt, device=tokens.device)[:, None, None]
        h = torch.arange(lh, device=tokens.device)[None, :, None]
        w = torch.arange(lw, device=tokens.device)[None, None, :]
        local = ((t * H + h) * W + w).reshape(-1)  # (L,) offsets of a window's tokens from its first token
        if torch.equal(tokens.view(-1, count), tokens.view(-1, count)[:, :1] + local[None]):
            return shape
    raise ValueError(f"MiniMax-H3 window positions: {tokens.numel()} tokens are not whole windows of the layout "
                     f"{layout.describe()} over the grid {layout.grid}.")


class WindowPositions:
    """The positions (t, h, w) the video tokens of one call get inside their windows.

    grid: the video token grid (T, H, W); native_hw: the native frame in tokens (H, W); t: ComfyUI's time
    coordinate of every video token, (T*H*W,) float64, in the grid's (t, h, w) order.
    """

    def __init__(self, grid: tuple[int, int, int], native_hw: tuple[int, int], t: torch.Tensor):
        if t.numel() != math.prod(grid):
            raise ValueError(f"WindowPositions: {t.numel()} time coordinates for the grid {grid}.")
        self.grid, self.native_hw, self.t = tuple(grid), tuple(native_hw), t.to(torch.float64)

    def of(self, layout: WindowLayout, tokens: torch.Tensor) -> torch.Tensor:
        """(n, 3) float64 positions of ``tokens`` (n,), whole windows of ``layout`` in window-major order."""
        tokens = tokens.cpu()
        shape = group_shape(layout, tokens)
        hs, ws = window_axes(shape[1], shape[2], self.native_hw)
        _, H, W = self.grid
        h, w = (tokens // W) % H, tokens % W
        count = math.prod(shape)
        first = torch.arange(tokens.numel()) // count * count  # the first token of each token's window
        pos = torch.empty(tokens.numel(), 3, dtype=torch.float64)
        pos[:, 0] = self.t[tokens]
        pos[:, 1] = hs[h - h[first]]
        pos[:, 2] = ws[w - w[first]]
        return pos


__all__ = ["SPAN", "WindowPositions", "frame_axis", "group_shape", "window_axes"]
