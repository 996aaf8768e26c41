"""The bench's fixed latent space: pixels rearranged, exactly invertible, 16 channels like Wan 2.1's.

Each 2 x 2 pixel block of an RGB frame becomes one latent pixel of 12 values (pixel-unshuffle of 2 * rgb - 1,
so values lie in [-1, 1]) plus 4 channels that are always 0, for 16 channels; one latent frame per video
frame (no temporal compression). With Wan's patch (1, 2, 2), one token is 4 x 4 pixels of one frame: the
native 64 x 64 frame is 32 x 32 latent pixels, 16 x 16 tokens.

Latents are (B, 16, T, H / 2, W / 2) as ComfyUI's video latents are; ComfyUI's Wan 2.1 latent format
normalises them per channel before the model sees them (training does the same: bench/fidelity/train.py).
Pure torch; no ComfyUI.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

CHANNELS = 16
PIXELS = 2  # pixels per latent pixel, per side
USED = 3 * PIXELS * PIXELS  # 12 channels carry pixels; the rest are 0


def encode(frames: torch.Tensor) -> torch.Tensor:
    """(B, T, 3, H, W) in [0, 1], H and W even -> (B, 16, T, H / 2, W / 2)."""
    B, T, C, H, W = frames.shape
    if C != 3 or H % PIXELS or W % PIXELS:
        raise ValueError(f"encode takes RGB frames of even height and width, got shape {tuple(frames.shape)}.")
    z = F.pixel_unshuffle(frames.reshape(B * T, 3, H, W) * 2 - 1, PIXELS)  # (B*T, 12, H/2, W/2)
    z = torch.cat([z, z.new_zeros(B * T, CHANNELS - USED, H // PIXELS, W // PIXELS)], 1)
    return z.reshape(B, T, CHANNELS, H // PIXELS, W // PIXELS).transpose(1, 2).contiguous()  # (B, 16, T, h, w)


def decode(latent: torch.Tensor) -> torch.Tensor:
    """(B, 16, T, h, w) -> (B, T, 3, 2h, 2w) in [0, 1] (clamped; the 4 unused channels are ignored)."""
    B, C, T, h, w = latent.shape
    if C != CHANNELS:
        raise ValueError(f"decode takes latents of {CHANNELS} channels, got {C} (shape {tuple(latent.shape)}).")
    z = latent.transpose(1, 2).reshape(B * T, C, h, w)[:, :USED].float()
    frames = F.pixel_shuffle(z, PIXELS).reshape(B, T, 3, h * PIXELS, w * PIXELS)  # (B, T, 3, H, W)
    return ((frames + 1) / 2).clamp(0, 1)
