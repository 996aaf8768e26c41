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


class WindowPositions:
    """The positions (t, h, w) the video tokens of one call get inside their windows.

    grid: the video token grid (T, H, W); native_hw: the native frame in tokens (H, W); t: ComfyUI's time
    coordinate of every video token, (T*H*W,) float64, in the grid's (t, h, w) order.
    """

    def __init__(self, grid: tuple[int, int, int], native_hw: tuple[int, int], t: torch.Tensor):
        if t.numel() != math.prod(grid):
            raise ValueError(f"WindowPositions: {t.numel()} time coordinates for the grid {grid}.")
        self.grid, self.native_hw, self.t = tuple(grid), tuple(native_hw), t.to(torch.float64).cpu()
        self._layouts: dict = {}

    def _groups(self, layout: WindowLayout) -> list[tuple[tuple[int, int, int], torch.Tensor, dict[int, int]]]:
        """Per window group of ``layout``: (shape, its gather index on the CPU, first token -> window number)."""
        found = self._layouts.get(layout)
        if found is None:
            found = []
            for (shape, _), index in zip(layout.groups, layout.gather_indices("cpu")):
                firsts = index[::math.prod(shape)].tolist()
                found.append((shape, index, {token: i for i, token in enumerate(firsts)}))
            self._layouts[layout] = found
        return found

    def of(self, layout: WindowLayout, tokens: torch.Tensor) -> torch.Tensor:
        """(n, 3) float64 positions of ``tokens`` (n,): a run of whole windows of ``layout``, window-major, as
        :func:`..attention.streamed.streamed_window_attention` hands them to the projector (a slice of one
        group's gather index; found by matching it, so overlapping border windows get their own positions)."""
        tokens = tokens.cpu()
        n = tokens.numel()
        for shape, index, firsts in self._groups(layout):
            count = math.prod(shape)
            first = firsts.get(int(tokens[0])) if n and n % count == 0 else None
            if first is not None and torch.equal(index[first * count:first * count + n], tokens):
                break
        else:
            raise ValueError(f"MiniMax-H3 window positions: {n} tokens are not a run of whole windows of the layout "
                             f"{layout.describe()} over the grid {layout.grid}.")
        _, lh, lw = shape
        hs, ws = window_axes(lh, lw, self.native_hw)
        slot = torch.arange(n) % count  # the token's place in its window, row-major (t, h, w)
        pos = torch.empty(n, 3, dtype=torch.float64)
        pos[:, 0] = self.t[tokens]
        pos[:, 1] = hs[(slot // lw) % lh]
        pos[:, 2] = ws[slot % lw]
        return pos


__all__ = ["SPAN", "WindowPositions", "frame_axis", "window_axes"]
