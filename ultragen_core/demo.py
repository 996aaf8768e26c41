"""The demo model that ships with the pack: the fidelity bench's small Wan (bench/fidelity/, docs/FIDELITY.md),
its weights in bench/fidelity/weights/, and the fixed latent space it was trained in, which the demo nodes decode
(nodes/demo.py: UltraGen Demo Model / Demo Latent / Demo Decode; the template "UltraGen demo (no download)").

The latent space: pixels placed in Wan 2.1's latent statistics, exactly invertible, 16 channels. Each RGB pixel
becomes one latent pixel (PIXELS = 1) whose first 3 channels carry ``GAIN * (2 * rgb - 1)`` *after* ComfyUI's
Wan 2.1 latent format normalises them (``process_in``: (z - mean) / std per channel); the other 13 channels are 0
after that normalisation. So the model sees data of about unit spread, as Wan sees its VAE's normalised latents.
(Until issue 24 the values went in unscaled: after the normalisation the content had a spread of 0.18 against
noise of 1, and the scene was decided in the last one or two sampling steps; objects went missing.) One latent
frame per video frame (no temporal compression). With Wan's patch (1, 2, 2), one token is 2 x 2 pixels of one
frame: the native 64 x 64 frame is 64 x 64 latent pixels, 32 x 32 tokens.

Latents are (B, C, T, H, W) as ComfyUI's video latents are (``encode`` returns them in ComfyUI's space, before its
normalisation; ``decode`` takes what ComfyUI's sampler returns). Pure torch; no ComfyUI.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

CHANNELS = 16
PIXELS = 1  # pixels per latent pixel, per side
PATCH = 2  # Wan's patch, latent pixels per token per side
PIXELS_PER_TOKEN = PIXELS * PATCH
USED = 3 * PIXELS * PIXELS  # channels that carry pixels; the rest are 0 after the normalisation
GAIN = 2.0  # normalised value = GAIN * (2 * rgb - 1): the scenes' values then spread about 1, like Wan's latents
# names this space in the weights' metadata (bench/fidelity/train.py): evaluate / --resume and the demo refuse
# other spaces. The name predates this module (it was bench/fidelity/latents.py): kept, since trained weights
# carry it.
SPACE = f"bench/fidelity/latents.py: {PIXELS} px per latent pixel, gain {GAIN:g}, Wan 2.1 stats"
# ComfyUI's Wan 2.1 latent format (comfy/latent_formats.py, Wan21): per-channel mean and std of the VAE's
# latents. tests/comfyui/test_fidelity_bench_comfyui.py checks by running process_in that they are ComfyUI's.
WAN21_MEAN = (-0.7571, -0.7089, -0.9113, 0.1075, -0.1745, 0.9653, -0.1517, 1.5508,
              0.4134, -0.0715, 0.5517, -0.3632, -0.1922, -0.9497, 0.2503, -0.2921)
WAN21_STD = (2.8184, 1.4541, 2.3275, 2.6558, 1.2196, 1.7708, 2.6052, 2.0743,
             3.2687, 2.1526, 2.8652, 1.5579, 1.6382, 1.1253, 2.8251, 1.9160)


def _stats(like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    shape = (1, CHANNELS, 1, 1, 1)
    mean = torch.tensor(WAN21_MEAN, device=like.device, dtype=torch.float32).view(shape)
    std = torch.tensor(WAN21_STD, device=like.device, dtype=torch.float32).view(shape)
    return mean, std


def normalised(frames: torch.Tensor) -> torch.Tensor:
    """What the model sees: (B, T, 3, H, W) in [0, 1] -> (B, 16, T, H, W), GAIN * (2 rgb - 1) then zeros."""
    B, T, C, H, W = frames.shape
    if C != 3 or H % PIXELS or W % PIXELS:
        raise ValueError(f"encode takes RGB frames whose sides are multiples of {PIXELS}, got shape "
                         f"{tuple(frames.shape)}.")
    z = GAIN * (frames.transpose(1, 2).float() * 2 - 1)  # (B, 3, T, H, W)
    return torch.cat([z, z.new_zeros(B, CHANNELS - USED, T, H, W)], 1)  # (B, 16, T, H, W)


def encode(frames: torch.Tensor) -> torch.Tensor:
    """(B, T, 3, H, W) in [0, 1] -> (B, 16, T, H, W) in ComfyUI's latent space (Wan21.process_in of it is
    ``normalised(frames)``)."""
    mean, std = _stats(frames)
    return normalised(frames) * std + mean


def decode(latent: torch.Tensor) -> torch.Tensor:
    """(B, 16, T, h, w) in ComfyUI's latent space -> (B, T, 3, h, w) in [0, 1] (clamped; the 13 unused
    channels are ignored)."""
    B, C, T, h, w = latent.shape
    if C != CHANNELS:
        raise ValueError(f"decode takes latents of {CHANNELS} channels, got {C} (shape {tuple(latent.shape)}).")
    mean, std = _stats(latent)
    z = ((latent.float() - mean) / std)[:, :USED] / GAIN  # (B, 3, T, h, w) in about [-1, 1]
    return ((z.transpose(1, 2) + 1) / 2).clamp(0, 1).contiguous()  # (B, T, 3, h, w)


# --- the demo ------------------------------------------------------------------------------------------------

WEIGHTS_DIR = Path(__file__).resolve().parents[1] / "bench" / "fidelity" / "weights"  # the bundled weights
NATIVE = 64  # the native frame, pixels per side (= latent pixels)
FRAMES = 8  # the frames it was trained on
TEXT_DIM = 4096  # Wan's T5 width: the model was trained with one token of zeros as its context
SHIFT = 3.0  # ModelSamplingSD3's shift it was trained with


def weights_problem(path) -> str | None:
    """Why ``path`` is not a demo model (read from its metadata, never its tensors); or None."""
    from safetensors import safe_open
    if not str(path).lower().endswith(".safetensors"):
        return f"{Path(path).name} is not a .safetensors file; the demo model is one."
    try:
        with safe_open(str(path), "pt") as f:
            meta = f.metadata() or {}
    except Exception as e:  # noqa: BLE001  (a damaged or foreign file: say so at the input)
        return f"{Path(path).name} could not be read as safetensors ({e})."
    space = meta.get("latent_space")
    if space != SPACE:
        what = "no latent space in its metadata" if space is None else f"the latent space {space!r}"
        return (f"{Path(path).name} has {what}: it is not a demo model (one trained in the demo's latent space), "
                "and its samples would be noise. Pick ultragen_fidelity_wan.safetensors.")
    return None


def trained_facts(path) -> dict:
    """The demo weights' training facts from their metadata (steps, seconds, config)."""
    from safetensors import safe_open
    with safe_open(str(path), "pt") as f:
        meta = f.metadata() or {}
    return {"config": json.loads(meta.get("config", "{}")), "steps": int(meta.get("steps", 0)),
            "shift": float(meta.get("shift", SHIFT))}


def context() -> torch.Tensor:
    """The conditioning the demo model was trained with: (1, 1, TEXT_DIM) zeros (it is unconditional)."""
    return torch.zeros(1, 1, TEXT_DIM)


def empty_latent(scale: int, frames: int = FRAMES, batch: int = 1) -> torch.Tensor:
    """(batch, 16, frames, 64 scale, 64 scale) zeros in ComfyUI's latent space: the sampler's start at ``scale``
    times the native size per side."""
    side = NATIVE * scale // PIXELS
    return torch.zeros(batch, CHANNELS, frames, side, side)


def frames_of(latent: torch.Tensor) -> torch.Tensor:
    """A sampled demo latent (B, 16, T, h, w) as ComfyUI's IMAGE: (B * T, h, w, 3) in [0, 1]."""
    video = decode(latent)  # (B, T, 3, h, w)
    B, T, _, h, w = video.shape
    return video.permute(0, 1, 3, 4, 2).reshape(B * T, h, w, 3)
