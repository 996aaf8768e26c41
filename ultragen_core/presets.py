"""Named settings. "quality" is the automatic default; "fast" trades some context for speed."""
from __future__ import annotations

import math

from .attention.windows import Grid
from .config import AttentionSettings


def fast_settings(native: Grid) -> AttentionSettings:
    """Temporal windows of a third of the native frames, spatial windows of about 3/8 of the native
    size, no shift; the global branch pools to one window per frame (automatic compression).

    For Wan 14B (native 21x45x80) this is windows 7x17x30, pooled x8 at 4K (21x17x30 global tokens).
    """
    t0, h0, w0 = native
    return AttentionSettings(window=(max(1, math.ceil(t0 / 3)), math.ceil(h0 * 3 / 8), math.ceil(w0 * 3 / 8)),
                             shift="none", global_compression=0)
