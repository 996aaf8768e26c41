"""The presets' automatic windows. "quality" (the default) windows the grid at about the model's
native training size (config.resolve_plan); "fast" trades some context for speed.
"""
from __future__ import annotations

import math

from .attention.windows import Grid

PRESETS = ("quality", "fast")


def fast_window(native: Grid) -> Grid:
    """The fast preset's window: a third of the native frames, about 3/8 of the native height and width.

    With no shift and the automatic global branch (pooled to about one window per frame), this is the
    `fast` preset of docs/BENCHMARKS.md: for Wan 14B (native 21x45x80), windows 7x17x30, pooled x8 at 4K
    (21x17x30 global tokens).
    """
    t0, h0, w0 = native
    return max(1, math.ceil(t0 / 3)), math.ceil(h0 * 3 / 8), math.ceil(w0 * 3 / 8)
