"""The bench's latent spaces (pixels placed in Wan 2.1's latent statistics, 16 channels: one latent pixel per
pixel, exactly invertible, or per 2 x 2 pixels averaged, decoded bilinear; the weights name theirs), which live
in ultragen_core/demo.py with the rest of what the demo nodes need to sample the bench's model (its shift, its
context's width): the pack's demo nodes decode the first too. This module is what the bench's scripts import them
as."""
from __future__ import annotations

import sys
from pathlib import Path

PACK = Path(__file__).resolve().parents[2]
if str(PACK) not in sys.path:
    sys.path.append(str(PACK))  # last: the pack's nodes/ package must not hide ComfyUI's nodes module

from ultragen_core.demo import (CHANNELS, GAIN, PATCH, PIXELS, PIXELS_PER_TOKEN, SHIFT, SPACE,  # noqa: E402,F401
                                SPACES, TEXT_DIM, USED, WAN21_MEAN, WAN21_STD, decode, encode, normalised, pixels_of,
                                space_name, through_space)
