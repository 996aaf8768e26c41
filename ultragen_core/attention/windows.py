"""Window layouts over a (T, H, W) token grid.

A layout cuts every axis into *segments* (the tokens a window owns) and gives each segment a *window*
of fixed length that contains it. Windows are clamped inward at the borders, so every window has the
same length (one batched attention call) and every token is owned by exactly one window, whatever the
grid size (67 and 135 rows, primes): no resizing, no padding, no mask.

Tokens are row-major over (t, h, w), as in the Wan token sequence.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property

import torch

Grid = tuple[int, int, int]


@dataclass(frozen=True)
class AxisTiling:
    """One axis cut into segments, each owned by a window of length ``window`` that contains it."""

    size: int
    window: int
    window_starts: tuple[int, ...]
    segment_bounds: tuple[int, ...]  # len(window_starts) + 1 boundaries, from 0 to size

    @property
    def count(self) -> int:
        return len(self.window_starts)

    def owner_and_offset(self) -> tuple[list[int], list[int]]:
        """For each position along the axis: the owning window and the position inside it."""
        owner, offset = [], []
        for i, start in enumerate(self.window_starts):
            for x in range(self.segment_bounds[i], self.segment_bounds[i + 1]):
                owner.append(i)
                offset.append(x - start)
        return owner, offset


def tile_axis(size: int, window: int, shift: int = 0) -> AxisTiling:
    """Cut ``range(size)`` into windows of length ``min(window, size)``.

    Segment boundaries sit at ``shift + k * window``; the window of a segment starts at the segment
    start, clamped to ``size - window`` so that it stays inside the axis. A shift only applies when
    the axis holds more than one window.
    """
    if size < 1 or window < 1:
        raise ValueError(f"tile_axis needs size >= 1 and window >= 1, got size={size}, window={window}")
    window = min(window, size)
    shift = shift % window if window < size else 0
    first = shift if shift > 0 else window
    bounds = [0, *range(first, size, window), size]
    starts = tuple(min(s, size - window) for s in bounds[:-1])
    return AxisTiling(size, window, starts, tuple(bounds))


@dataclass(frozen=True)
class WindowLayout:
    """A 3-D window layout: the product of three axis tilings."""

    grid: Grid
    axes: tuple[AxisTiling, AxisTiling, AxisTiling]

    @property
    def window(self) -> Grid:
        return tuple(a.window for a in self.axes)  # type: ignore[return-value]

    @property
    def count(self) -> int:
        return math.prod(a.count for a in self.axes)

    @property
    def window_tokens(self) -> int:
        return math.prod(self.window)

    @property
    def is_single_window(self) -> bool:
        """True when one window covers the whole grid: the layout is then plain full attention."""
        return self.count == 1

    @property
    def computed_tokens(self) -> int:
        """Query rows the batched call computes (>= grid tokens; more where border windows overlap)."""
        return self.count * self.window_tokens

    def describe(self) -> str:
        per_axis = "x".join(str(a.count) for a in self.axes)
        return f"{'x'.join(map(str, self.window))} windows ({per_axis} = {self.count})"

    def gather_index(self, device: torch.device | str = "cpu") -> torch.Tensor:
        """Flat token index of every window slot, shape (count * window_tokens,), window-major."""
        return self._indices[0].to(device)

    def scatter_index(self, device: torch.device | str = "cpu") -> torch.Tensor:
        """For every grid token, its slot in the window-major sequence, shape (T*H*W,)."""
        return self._indices[1].to(device)

    @cached_property
    def _indices(self) -> tuple[torch.Tensor, torch.Tensor]:
        T, H, W = self.grid
        at, ah, aw = self.axes
        wt, wh, ww = self.window

        def span(axis: AxisTiling) -> torch.Tensor:  # (count, window) positions along the axis
            return torch.tensor(axis.window_starts)[:, None] + torch.arange(axis.window)[None, :]

        t, h, w = span(at), span(ah), span(aw)
        flat = (t[:, None, None, :, None, None] * H + h[None, :, None, None, :, None]) * W + w[None, None, :, None, None, :]
        gather = flat.reshape(-1)  # (nt, nh, nw, wt, wh, ww) flattened

        (ot, pt), (oh, ph), (ow, pw) = (map(torch.tensor, a.owner_and_offset()) for a in self.axes)
        win = (ot[:, None, None] * ah.count + oh[None, :, None]) * aw.count + ow[None, None, :]
        pos = (pt[:, None, None] * wh + ph[None, :, None]) * ww + pw[None, None, :]
        scatter = (win * self.window_tokens + pos).reshape(-1)  # (T*H*W,)
        return gather, scatter


def make_layout(grid: Grid, window: Grid, shifted: bool) -> WindowLayout:
    """Layout for ``grid`` with ``window`` (each entry clamped to the grid); ``shifted`` moves the
    spatial segment boundaries by half a window on each spatial axis that holds more than one window.

    Temporal borders never move: a shifted temporal tiling would add a whole layer of windows for a
    few frames, and the global branch (over all frames) already carries information across them.
    """
    axes = tuple(tile_axis(n, w, (min(w, n) // 2) if shifted and axis > 0 else 0)
                 for axis, (n, w) in enumerate(zip(grid, window)))
    return WindowLayout(tuple(grid), axes)  # type: ignore[arg-type]


def auto_count(size: int, native: int, tolerance: float = 1.15) -> int:
    """How many windows an axis of ``size`` tokens needs so that each is at most ~``native`` long.

    Sizes up to ``tolerance`` x native stay in one window (a 46-row grid on a 45-row model should not
    be cut into two 23-row halves).
    """
    return max(1, math.ceil(size / (native * tolerance)))


def balanced_window(size: int, count: int) -> int:
    """The window length that cuts ``size`` into ``count`` near-equal windows with the least overlap."""
    return math.ceil(size / max(1, count))
