"""Named settings. "quality" is the automatic default; "fast" trades some context for speed."""
from __future__ import annotations

import math

from .attention.windows import Grid
from .config import AttentionSettings


def fast_settings(native: Grid) -> AttentionSettings:
    """Shorter temporal windows (a third of the native frames), spatial windows at 60% of the native
    size, no shift, and a global branch pooled to the same window count per side.

    For Wan 14B (native 21x45x80) this is windows 7x27x48 with pooling x5 at 4K.
    """
    t0, h0, w0 = native
    return AttentionSettings(window=(max(1, math.ceil(t0 / 3)), math.ceil(h0 * 0.6), math.ceil(w0 * 0.6)),
                             shift="none", global_compression=0)
