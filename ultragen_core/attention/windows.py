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
    """One axis cut into segments; segment i is owned by the window (starts[i], lengths[i])."""

    size: int
    window_starts: tuple[int, ...]
    window_lengths: tuple[int, ...]
    segment_bounds: tuple[int, ...]  # count + 1 boundaries, from 0 to size

    @property
    def count(self) -> int:
        return len(self.window_starts)

    @property
    def window(self) -> int:
        """The largest window length on this axis."""
        return max(self.window_lengths)

    def owner_and_offset(self) -> tuple[list[int], list[int]]:
        """For each position along the axis: the owning window and the position inside it."""
        owner, offset = [], []
        for i, start in enumerate(self.window_starts):
            for x in range(self.segment_bounds[i], self.segment_bounds[i + 1]):
                owner.append(i)
                offset.append(x - start)
        return owner, offset


def tile_axis(size: int, window: int, shift: int = 0) -> AxisTiling:
    """Cut ``range(size)`` into segments at ``shift + k * window`` (window clamped to ``size``).

    Unshifted, every segment gets a window of the full length, clamped inward at the far border (so
    all windows are equal; the last may overlap its neighbour). Shifted, every window is exactly its
    segment: the half-size border segments get half-size windows, as Swin's masked shifted windows
    do, instead of a whole extra row of full windows. A shift only applies when the axis holds more
    than one window.
    """
    if size < 1 or window < 1:
        raise ValueError(f"tile_axis needs size >= 1 and window >= 1, got size={size}, window={window}")
    window = min(window, size)
    shift = shift % window if window < size else 0
    bounds = [0, *range(shift if shift > 0 else window, size, window), size]
    if shift:
        starts = tuple(bounds[:-1])
        lengths = tuple(b - a for a, b in zip(bounds, bounds[1:]))
    else:
        starts = tuple(min(s, size - window) for s in bounds[:-1])
        lengths = (window,) * len(starts)
    return AxisTiling(size, starts, lengths, tuple(bounds))


@dataclass(frozen=True)
class WindowLayout:
    """A 3-D window layout: the product of three axis tilings.

    Windows of equal shape form a *group*; each group runs as one batched attention call. The window
    outputs of all groups, concatenated group after group, are put back in token order by one gather.
    """

    grid: Grid
    axes: tuple[AxisTiling, AxisTiling, AxisTiling]

    @property
    def window(self) -> Grid:
        return tuple(a.window for a in self.axes)  # type: ignore[return-value]

    @property
    def count(self) -> int:
        return math.prod(a.count for a in self.axes)

    @property
    def is_single_window(self) -> bool:
        """True when one window covers the whole grid: the layout is then plain full attention."""
        return self.count == 1

    @cached_property
    def groups(self) -> tuple[tuple[Grid, tuple[tuple[int, int, int], ...]], ...]:
        """((window shape, (window index per axis, ...)), ...), the most numerous shape first."""
        by_shape: dict[Grid, list[tuple[int, int, int]]] = {}
        at, ah, aw = self.axes
        for it in range(at.count):
            for ih in range(ah.count):
                for iw in range(aw.count):
                    shape = (at.window_lengths[it], ah.window_lengths[ih], aw.window_lengths[iw])
                    by_shape.setdefault(shape, []).append((it, ih, iw))
        return tuple(sorted(((s, tuple(w)) for s, w in by_shape.items()), key=lambda g: -len(g[1]) * math.prod(g[0])))

    @property
    def window_tokens(self) -> int:
        """Tokens per window of the main (first) group."""
        return math.prod(self.groups[0][0])

    @property
    def computed_tokens(self) -> int:
        """Query rows the batched calls compute (>= grid tokens; more where border windows overlap)."""
        return sum(len(w) * math.prod(s) for s, w in self.groups)

    def key_tokens(self) -> int:
        """Sum over grid tokens of the keys each one attends to (the useful work of the layout).

        A window is a product of per-axis ranges, so the sum factorises over the axes."""
        return math.prod(sum(a.window_lengths[o] for o in a.owner_and_offset()[0]) for a in self.axes)

    def describe(self) -> str:
        per_axis = "x".join(str(a.count) for a in self.axes)
        shapes = ", ".join(f"{len(w)} of {'x'.join(map(str, s))}" for s, w in self.groups)
        return f"{per_axis} = {self.count} windows ({shapes})"

    def gather_indices(self, device: torch.device | str = "cpu") -> list[torch.Tensor]:
        """Per group: the flat token index of every window slot, window-major, (count_g * L_g,)."""
        return self.on_device("gather", device, lambda: self._indices[0])

    def scatter_index(self, device: torch.device | str = "cpu") -> torch.Tensor:
        """For every grid token, its slot in the concatenated group outputs, shape (T*H*W,)."""
        return self.on_device("scatter", device, lambda: self._indices[1])

    def owned_tokens(self, device: torch.device | str = "cpu") -> list[torch.Tensor]:
        """[tokens, slots]: every grid token and the slot of its owning window, sorted by slot, (T*H*W,)
        each. Windows can overlap (clamped border windows); a token's output is its owner's. The tokens
        owned by the windows of slots [a, b) are ``tokens[lo:hi]`` with lo, hi = bisect(slots, a / b)."""
        def build():
            slots, tokens = torch.sort(self._indices[1], stable=True)
            return [tokens, slots]
        return self.on_device("owned", device, build)

    def on_device(self, name: str, device: torch.device | str, build):
        """``build()`` (a tensor or a list of tensors) moved to ``device``, once per layout and device:
        a copy from host memory on every call would make the host wait for the GPU each time."""
        key = (name, str(torch.device(device)))
        if key not in self._device_copies:
            value = build()
            self._device_copies[key] = ([t.to(device) for t in value] if isinstance(value, list)
                                        else value.to(device))
        return self._device_copies[key]

    @cached_property
    def _device_copies(self) -> dict:
        return {}

    @cached_property
    def _indices(self) -> tuple[list[torch.Tensor], torch.Tensor]:
        T, H, W = self.grid
        at, ah, aw = self.axes
        gathers = []
        slot_of = {}  # window index triple -> first slot of the window in the concatenated groups
        offset = 0
        for (lt, lh, lw), windows in self.groups:
            t = torch.arange(lt)[:, None, None]
            h = torch.arange(lh)[None, :, None]
            w = torch.arange(lw)[None, None, :]
            parts = []
            for it, ih, iw in windows:
                ts, hs, ws = at.window_starts[it], ah.window_starts[ih], aw.window_starts[iw]
                parts.append((((ts + t) * H + hs + h) * W + ws + w).reshape(-1))
                slot_of[(it, ih, iw)] = offset
                offset += lt * lh * lw
            gathers.append(torch.cat(parts))

        first = torch.zeros(at.count, ah.count, aw.count, dtype=torch.long)
        for (it, ih, iw), s in slot_of.items():
            first[it, ih, iw] = s
        (ot, pt), (oh, ph), (ow, pw) = (map(torch.tensor, a.owner_and_offset()) for a in self.axes)
        lh = torch.tensor(ah.window_lengths)[oh]  # (H,) height of the owning window
        lw = torch.tensor(aw.window_lengths)[ow]  # (W,)
        base = first[ot[:, None, None], oh[None, :, None], ow[None, None, :]]  # (T, H, W)
        pos = (pt[:, None, None] * lh[None, :, None] + ph[None, :, None]) * lw[None, None, :] + pw[None, None, :]
        return gathers, (base + pos).reshape(-1)


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
