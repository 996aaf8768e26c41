"""The demo model that ships with the pack: the fidelity bench's small Wan (bench/fidelity/, docs/FIDELITY.md),
its weights in bench/fidelity/weights/, the fixed latent space it was trained in, which the demo nodes decode, and
its captions, the prompts it understands (nodes/demo.py: UltraGen Demo Model / Demo Latent / Demo Decode; the
template "UltraGen demo (no download)").

The latent spaces: pixels placed in Wan 2.1's latent statistics, 16 channels. Each latent pixel stands for
``pixels`` x ``pixels`` RGB pixels, averaged, and its first 3 channels carry ``GAIN * (2 * rgb - 1)`` *after*
ComfyUI's Wan 2.1 latent format normalises them (``process_in``: (z - mean) / std per channel); the other 13
channels are 0 after that normalisation. So the model sees data of about unit spread, as Wan sees its VAE's
normalised latents. (Until issue 24 the values went in unscaled: after the normalisation the content had a spread
of 0.18 against noise of 1, and the scene was decided in the last one or two sampling steps; objects went missing.)
One latent frame per video frame (no temporal compression). Two spaces, named in the weights' metadata
(``space_name``):
- ``pixels`` 1 (PIXELS, the bench's first): one latent pixel per pixel, exactly invertible. With Wan's patch
  (1, 2, 2) one token is 2 x 2 pixels: the native 64 x 64 frame is 64 x 64 latent pixels, 32 x 32 tokens.
- ``pixels`` 2 (DEMO_PIXELS, the demo's): a lossy space, as a VAE's is (Wan's compresses 8 x 8): 2 x 2 pixels
  averaged per latent pixel, and decoded by bilinear upsampling. The native frame is 32 x 32 latent pixels,
  16 x 16 tokens of 4 x 4 pixels. A pixels-1 model trained at half size (frames averaged 2 x 2,
  bench/fidelity/train.py) learnt exactly this space's native latents.

Latents are (B, C, T, H, W) as ComfyUI's video latents are (``encode`` returns them in ComfyUI's space, before its
normalisation; ``decode`` takes what ComfyUI's sampler returns). Pure torch; no ComfyUI.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import torch

CHANNELS = 16
PIXELS = 1  # the bench's first space: pixels per latent pixel, per side
PATCH = 2  # Wan's patch, latent pixels per token per side
PIXELS_PER_TOKEN = PIXELS * PATCH
USED = 3  # channels that carry pixels; the rest are 0 after the normalisation
GAIN = 2.0  # normalised value = GAIN * (2 * rgb - 1): the scenes' values then spread about 1, like Wan's latents


def space_name(pixels: int) -> str:
    """The space's name in the weights' metadata (bench/fidelity/train.py): evaluate, --resume and the demo refuse
    other spaces. The name of pixels 1 predates this module (it was bench/fidelity/latents.py): kept, since trained
    weights carry it."""
    if pixels == 1:
        return f"bench/fidelity/latents.py: 1 px per latent pixel, gain {GAIN:g}, Wan 2.1 stats"
    return (f"bench/fidelity/latents.py: {pixels} x {pixels} px averaged per latent pixel, decoded bilinear, "
            f"gain {GAIN:g}, Wan 2.1 stats")


SPACES = {space_name(p): p for p in (1, 2)}  # name -> pixels per latent pixel
SPACE = space_name(PIXELS)


def pixels_of(space: str | None) -> int | None:
    """Pixels per latent pixel of the space named ``space`` (weights' metadata); None for an unknown space."""
    return SPACES.get(space)
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


def _check_pixels(pixels: int) -> None:
    if pixels not in SPACES.values():
        raise ValueError(f"pixels per latent pixel must be one of {sorted(SPACES.values())}, got {pixels!r}.")


def normalised(frames: torch.Tensor, pixels: int = PIXELS) -> torch.Tensor:
    """What the model sees: (B, T, 3, H, W) in [0, 1] -> (B, 16, T, H / pixels, W / pixels), GAIN * (2 rgb - 1)
    of each ``pixels`` x ``pixels`` average, then zeros."""
    _check_pixels(pixels)
    B, T, C, H, W = frames.shape
    if C != 3 or H % pixels or W % pixels:
        raise ValueError(f"encode takes RGB frames whose sides are multiples of {pixels}, got shape "
                         f"{tuple(frames.shape)}.")
    rgb = frames.float()
    if pixels > 1:
        rgb = torch.nn.functional.avg_pool2d(rgb.flatten(0, 1), pixels).unflatten(0, (B, T))
    z = GAIN * (rgb.transpose(1, 2) * 2 - 1)  # (B, 3, T, h, w)
    return torch.cat([z, z.new_zeros(B, CHANNELS - USED, *z.shape[2:])], 1)  # (B, 16, T, h, w)


def encode(frames: torch.Tensor, pixels: int = PIXELS) -> torch.Tensor:
    """(B, T, 3, H, W) in [0, 1] -> (B, 16, T, H / pixels, W / pixels) in ComfyUI's latent space
    (Wan21.process_in of it is ``normalised(frames, pixels)``)."""
    mean, std = _stats(frames)
    return normalised(frames, pixels) * std + mean


def decode(latent: torch.Tensor, pixels: int = PIXELS) -> torch.Tensor:
    """(B, 16, T, h, w) in ComfyUI's latent space -> (B, T, 3, h * pixels, w * pixels) in [0, 1] (bilinear
    upsampling for pixels > 1; clamped; the 13 unused channels are ignored)."""
    _check_pixels(pixels)
    B, C, T, h, w = latent.shape
    if C != CHANNELS:
        raise ValueError(f"decode takes latents of {CHANNELS} channels, got {C} (shape {tuple(latent.shape)}).")
    mean, std = _stats(latent)
    z = ((latent.float() - mean) / std)[:, :USED] / GAIN  # (B, 3, T, h, w) in about [-1, 1]
    rgb = (z.transpose(1, 2) + 1) / 2  # (B, T, 3, h, w)
    if pixels > 1:
        rgb = torch.nn.functional.interpolate(rgb.flatten(0, 1), scale_factor=pixels, mode="bilinear",
                                              align_corners=False).unflatten(0, (B, T))
    return rgb.clamp(0, 1).contiguous()


def through_space(frames: torch.Tensor, pixels: int) -> torch.Tensor:
    """(B, T, 3, H, W) frames as a perfect latent of them decodes: the floor of what a model in the space can
    draw (the frames themselves for pixels 1, up to rounding)."""
    return decode(encode(frames, pixels), pixels)


# --- the demo ------------------------------------------------------------------------------------------------

WEIGHTS_DIR = Path(__file__).resolve().parents[1] / "bench" / "fidelity" / "weights"  # the bundled weights
DEMO_PIXELS = 2  # the demo's latent space: 2 x 2 pixels per latent pixel (its model passed the gate in it)
DEMO_SPACE = space_name(DEMO_PIXELS)
NATIVE = 64  # the native frame, pixels per side (32 latent pixels, 16 tokens)
FRAMES = 8  # the frames it was trained on
TEXT_DIM = 4096  # Wan's T5 width
SHIFT = 3.0  # ModelSamplingSD3's shift it was trained with

# Captions (bench/fidelity/captions.py encodes the bench's with these): one token per object, a one-hot colour,
# a one-hot shape and a size, zero tokens after; the empty caption is all zeros.
COLOURS = ("red", "green", "blue", "yellow")
SHAPES = ("disc", "square", "triangle")
TOKENS = 3  # the most objects a scene holds
SIZE_UNIT = 10.0  # the size feature: log(1 + radius / SIZE_UNIT), the radius in frame units (the frame: 64)
SIZES = {"small": 5.5, "mid-sized": 7.0, "large": 8.5}  # radii the demo model learnt (5-9 units)
PROMPT_EXAMPLE = "a large red disc, a small blue square"


def caption_tokens(captions) -> torch.Tensor:
    """(B, TOKENS, TEXT_DIM) float32 of B captions, each a sequence of (colour, shape, radius) objects: per object
    one token, colour one-hot, shape one-hot, size; the rest zeros. An empty caption gives the all-zero context."""
    out = torch.zeros(len(captions), TOKENS, TEXT_DIM)
    for b, cap in enumerate(captions):
        if len(cap) > TOKENS:
            raise ValueError(f"a caption holds at most {TOKENS} objects, got {len(cap)}: {cap}")
        for k, (colour, shape, radius) in enumerate(cap):
            out[b, k, COLOURS.index(colour)] = 1.0
            out[b, k, len(COLOURS) + SHAPES.index(shape)] = 1.0
            out[b, k, len(COLOURS) + len(SHAPES)] = math.log1p(radius / SIZE_UNIT)
    return out


def parse_caption(text: str) -> tuple[tuple[str, str, float], ...]:
    """The demo's prompt in words, up to TOKENS objects separated by commas, each a colour and a shape with an
    optional size and article ("a large red disc, a small blue square"; "" or "empty": no objects) -> (colour,
    shape, radius) per object. ValueError naming the words it does not know, and the ones it does."""
    text = " ".join(str(text).lower().split())
    if text in ("", "empty"):
        return ()
    parts = [p.strip() for p in text.split(",") if p.strip()]
    if len(parts) > TOKENS:
        raise ValueError(f"names {len(parts)} objects; the demo model's scenes hold at most {TOKENS}. Example: "
                         f"'{PROMPT_EXAMPLE}'.")
    out = []
    for part in parts:
        words = [w for w in part.split() if w not in ("a", "an", "one")]
        colours = [w for w in words if w in COLOURS]
        shapes = [w for w in words if w in SHAPES]
        sizes = [w for w in words if w in SIZES]
        unknown = [w for w in words if w not in COLOURS + SHAPES + tuple(SIZES)]
        if unknown or len(colours) != 1 or len(shapes) != 1 or len(sizes) > 1:
            why = (f"the demo model does not know {', '.join(repr(w) for w in unknown)}" if unknown else
                   "each object needs one colour and one shape" if len(colours) != 1 or len(shapes) != 1 else
                   "one object with two sizes")
            raise ValueError(f"'{part}': {why}. Each object, separated by commas: an optional size "
                             f"({', '.join(SIZES)}), a colour ({', '.join(COLOURS)}) and a shape "
                             f"({', '.join(SHAPES)}), e.g. '{PROMPT_EXAMPLE}'.")
        out.append((colours[0], shapes[0], SIZES[sizes[0] if sizes else "mid-sized"]))
    if len({c for c, _, _ in out}) < len(out):
        raise ValueError("names one colour twice; the demo model's scenes hold one object per colour. Example: "
                         f"'{PROMPT_EXAMPLE}'.")
    return tuple(out)


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
    if space == SPACE:
        return (f"{Path(path).name} is a bench model of the first latent space (one latent pixel per pixel); the demo "
                f"samples the space of {DEMO_PIXELS} x {DEMO_PIXELS} pixels per latent pixel, in which its model "
                "passed the fidelity gate. Pick ultragen_fidelity_wan.safetensors.")
    if space != DEMO_SPACE:
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


def context(caption: str = "") -> torch.Tensor:
    """The conditioning of a prompt in the demo's words (parse_caption): (1, TOKENS, TEXT_DIM); "" gives the empty
    caption, all zeros, the negative of classifier-free guidance."""
    return caption_tokens([parse_caption(caption)])


def empty_latent(scale: int, frames: int = FRAMES, batch: int = 1) -> torch.Tensor:
    """(batch, 16, frames, 32 scale, 32 scale) zeros in ComfyUI's latent space: the sampler's start at ``scale``
    times the native 64 px per side (2 x 2 pixels per latent pixel)."""
    side = NATIVE * scale // DEMO_PIXELS
    return torch.zeros(batch, CHANNELS, frames, side, side)


def frames_of(latent: torch.Tensor) -> torch.Tensor:
    """A sampled demo latent (B, 16, T, h, w) as ComfyUI's IMAGE: (B * T, 2 h, 2 w, 3) in [0, 1]."""
    video = decode(latent, DEMO_PIXELS)  # (B, T, 3, 2 h, 2 w)
    B, T, _, h, w = video.shape
    return video.permute(0, 1, 3, 4, 2).reshape(B * T, h, w, 3)
