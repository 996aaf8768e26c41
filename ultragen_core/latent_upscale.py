"""Coarse to fine: a high-resolution Wan video latent initialised from a native-size proxy latent (HPDM's
coarse level, the usual two-pass pattern).

Pure PyTorch. The high-resolution pass then re-noises this latent to a chosen step (ComfyUI's
KSamplerAdvanced with add_noise on and start_at_step k of N) and denoises it, usually guided by the same
proxy (UltraGen Proxy Guidance).

Time axis of Wan's causal VAE: latent frame 0 encodes video frame 0 alone, latent frame i >= 1 encodes video
frames 4i-3 .. 4i, so T latent frames are 4 (T - 1) + 1 video frames. Resizing in time therefore

- keeps latent frame 0 as frame 0 (it is an image latent, a different distribution from the others; it is
  never mixed into later frames);
- places every later latent frame at the centre of its four video frames (4i - 1.5), maps the target
  frames onto the source video's time by the ratio of the two durations (same clip, another frame rate)
  and interpolates among source frames 1 .. T-1 only, held at their ends (no extrapolation).

``attention.proxy``'s "causal" alignment places the proxy's RoPE positions by the same rule, counted in
latent frames instead of video frames (the two agree within 1/8 latent frame).

Space: ``torch.nn.functional.interpolate`` per frame with ``align_corners=False`` (cell centres, as the
proxy guidance places its spatial positions); antialiased when a side shrinks.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

GiB = 1024**3
TEMPORAL_STEP = 4  # video frames per latent frame after the first (Wan 2.1 and 2.2 VAEs)
# Wan VAEs by latent channels: pixels per latent cell (16: Wan 2.1 VAE, also Wan 2.2-A14B; 48: Wan 2.2 VAE, 5B)
SPATIAL_STEP = {16: 8, 48: 16}
# method -> (F.interpolate mode in space, mode in time)
METHODS = {"bilinear": ("bilinear", "linear"), "bicubic": ("bicubic", "linear"),
           "nearest-exact": ("nearest-exact", "nearest"), "area": ("area", "linear")}


def video_frames(latent_frames: int) -> int:
    """Video frames of ``latent_frames`` Wan latent frames: 4 (T - 1) + 1."""
    return TEMPORAL_STEP * (latent_frames - 1) + 1


def length_problem(length: int, named: bool = True) -> str | None:
    """Why ``length`` video frames is no Wan length (None if it is one); ``named``: the message starts with the
    input's name (not where ComfyUI puts the name in front itself)."""
    if length < 1 or (length - 1) % TEMPORAL_STEP:
        lower = max(1, length - (length - 1) % TEMPORAL_STEP) if length >= 1 else 1
        return (f"{'length ' if named else ''}must be 4n+1 video frames (Wan's VAE: the first latent frame holds "
                f"one frame, each later one four), got {length}; use {lower} or {lower + TEMPORAL_STEP}.")
    return None


@dataclass(frozen=True)
class LatentSize:
    """A Wan video latent's size in latent cells: frames, height, width."""

    frames: int
    height: int
    width: int

    def __post_init__(self):
        for name in ("frames", "height", "width"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"the target latent {name} must be a whole number >= 1, got {value!r}.")

    @classmethod
    def from_pixels(cls, channels: int, width: int, height: int, length: int) -> "LatentSize":
        """The latent size of a ``width`` x ``height`` x ``length`` video for a Wan latent of ``channels``."""
        step = SPATIAL_STEP.get(channels)
        if step is None:
            raise ValueError(f"the latent has {channels} channels; the pixel size of a latent cell is known for Wan "
                             f"latents only ({', '.join(f'{c} channels: {s} px' for c, s in SPATIAL_STEP.items())}). "
                             "Connect a reference latent of the target size instead of width / height / length.")
        for name, value in (("width", width), ("height", height)):
            if value < step or value % step:
                lower = max(step, value - value % step)
                raise ValueError(f"{name} must be a multiple of {step} px for this {channels}-channel Wan latent, got "
                                 f"{value}; use {lower} or {lower + step} (UltraGen Resolution gives valid sizes).")
        problem = length_problem(length)
        if problem:
            raise ValueError(problem)
        return cls((length - 1) // TEMPORAL_STEP + 1, height // step, width // step)


LTX_CHANNELS = 128  # LTX-Video / LTX-2 latents: 32 px and 8 video frames per latent cell


def ltx_problem(latent, what: str = "latent") -> str | None:
    """Why an LTX latent (128 channels, or LTX-2's joint audio-video latent) is not resized here, or None."""
    if getattr(latent, "is_nested", False):
        return (f"the {what} is a joint audio-video latent (LTX-2); UltraGen Upscale Latent resizes Wan video "
                "latents only. For LTX-2's refine stage, split it with LTXVSeparateAVLatent, upscale the video with "
                "ComfyUI's LTXV Latent Upsampler (the LTX spatial upscaler model), join them again with "
                "LTXVConcatAVLatent, then sample with UltraGen Apply.")
    if latent.ndim == 5 and latent.shape[1] == LTX_CHANNELS:
        return (f"the {what} has {LTX_CHANNELS} channels, an LTX-Video / LTX-2 latent (32 px x 8 video frames per "
                "latent cell); UltraGen Upscale Latent resizes Wan latents only (its time axis is Wan's, 4 video "
                "frames per latent frame). For LTX's two-stage recipe use ComfyUI's LTXV Latent Upsampler with the "
                "LTX spatial upscaler model, then sample the refine stage with UltraGen Apply.")
    return None


def check_video_latent(latent: torch.Tensor, what: str = "latent") -> None:
    problem = ltx_problem(latent, what)
    if problem:
        raise ValueError(problem)
    if latent.ndim != 5 or latent.numel() == 0:
        raise ValueError(f"the {what} must be a video latent (batch, channels, frames, height, width), got shape "
                         f"{tuple(latent.shape)}: connect the LATENT of a video sampler or an empty video latent.")
    if not latent.is_floating_point():
        raise TypeError(f"the {what} must hold floating-point values, got {latent.dtype}.")


def upscale_bytes(batch: int, channels: int, size: LatentSize, itemsize: int) -> int:
    """Peak bytes :func:`upscale_video_latent` allocates at the target size: its float32 working copy and the
    output in the latent's dtype."""
    return batch * channels * size.frames * size.height * size.width * (4 + itemsize)


def size_problem(batch: int, channels: int, size: LatentSize, itemsize: int, available: int,
                 cell_px: int | None = None) -> str | None:
    """Why a ``size`` output does not fit in ``available`` bytes, with what fits; or None. ``cell_px``: pixels
    per latent cell, to say the size in pixels too."""
    need = upscale_bytes(batch, channels, size, itemsize)
    if need <= available:
        return None
    per_frame = need // size.frames
    wanted = f"{batch} x {channels} x {size.frames} x {size.height} x {size.width} latent cells"
    if cell_px:
        wanted += f" ({size.width * cell_px}x{size.height * cell_px} px, {video_frames(size.frames)} frames)"
    frames = available // per_frame
    if frames >= 2:
        fits = (f"at this width and height, up to {video_frames(frames)} frames (length) fit"
                if cell_px else f"at this height and width, up to {frames} latent frames fit")
    else:
        side = math.sqrt(max(available, 0) / (2 * batch * channels * (4 + itemsize)))  # two latent frames
        fits = (f"2 latent frames fit up to about {int(side) * cell_px} px square (width x height)" if cell_px
                else f"2 latent frames fit up to about {int(side)} x {int(side)} latent cells")
    return (f"the upscaled latent would be {wanted}, {need / GiB:.1f} GiB while resizing, but only "
            f"{max(available, 0) / GiB:.1f} GiB of memory is free: {fits}. Lower width, height or length (or "
            "the batch).")


def causal_frame_sources(src_frames: int, dst_frames: int) -> torch.Tensor:
    """Per target latent frame, its position on the source's latent frame axis: (dst_frames,) float64.

    Frame 0 -> 0. Frame i >= 1 sits at video time (4i - 1.5) / (4 (dst - 1)) of the clip; the source frame
    j >= 1 at (4j - 1.5) / (4 (src - 1)); solved for j and held within [1, src - 1]. Equal counts give
    0, 1, 2, ... exactly.
    """
    if src_frames < 1 or dst_frames < 1:
        raise ValueError(f"frame counts must be >= 1, got {src_frames} -> {dst_frames}.")
    out = torch.zeros(dst_frames, dtype=torch.float64)
    if dst_frames == 1:
        return out
    if src_frames == 1:
        raise ValueError("the latent has one frame (a single image): it cannot be stretched in time into a video. "
                         "Give the first pass at least 2 latent frames (5 video frames).")
    i = torch.arange(1, dst_frames, dtype=torch.float64)
    centre = TEMPORAL_STEP * i - 1.5  # in target video frames
    src_centre = centre * (src_frames - 1) / (dst_frames - 1)  # the same time in source video frames
    out[1:] = ((src_centre + 1.5) / TEMPORAL_STEP).clamp(1, src_frames - 1)
    return out


def _resize_time(latent: torch.Tensor, frames: int, mode: str) -> torch.Tensor:
    """(B, C, T, H, W) -> (B, C, frames, H, W) along the causal time axis."""
    pos = causal_frame_sources(latent.shape[2], frames).to(latent.device)
    if mode == "nearest":
        # ties go up (j + 0.5 -> j + 1), as nearest-exact does in space
        return latent.index_select(2, torch.floor(pos + 0.5).long())
    lo = pos.floor().long().clamp(max=latent.shape[2] - 1)
    hi = (lo + 1).clamp(max=latent.shape[2] - 1)
    frac = (pos - lo).to(latent.dtype).view(1, 1, -1, 1, 1)  # (1, 1, frames, 1, 1)
    return latent.index_select(2, lo) * (1 - frac) + latent.index_select(2, hi) * frac


def _resize_space(latent: torch.Tensor, height: int, width: int, mode: str) -> torch.Tensor:
    b, c, t, h, w = latent.shape
    frames = latent.permute(0, 2, 1, 3, 4).reshape(b * t, c, h, w)  # (B*T, C, H, W)
    kwargs = {}
    if mode in ("bilinear", "bicubic"):
        kwargs = dict(align_corners=False, antialias=height < h or width < w)
    frames = F.interpolate(frames, size=(height, width), mode=mode, **kwargs)
    return frames.reshape(b, t, c, height, width).permute(0, 2, 1, 3, 4)  # (B, C, T, H', W')


def upscale_video_latent(latent: torch.Tensor, size: LatentSize, method: str = "bilinear") -> torch.Tensor:
    """A Wan video latent (B, C, T, H, W) resized to (B, C, size.frames, size.height, size.width).

    Time first (at the small size), then space; computed in float32 (float64 for float64 input), returned
    in the input's dtype and device. Axes already at their size are left untouched (the same size returns an exact copy).
    """
    check_video_latent(latent)
    if method not in METHODS:
        raise ValueError(f"upscale_method must be one of {list(METHODS)}, got {method!r}.")
    space_mode, time_mode = METHODS[method]
    x = latent if latent.dtype == torch.float64 else latent.float()
    if size.frames != x.shape[2]:
        x = _resize_time(x, size.frames, time_mode)
    if (size.height, size.width) != tuple(x.shape[3:]):
        x = _resize_space(x, size.height, size.width, space_mode)
    return x.to(latent.dtype).contiguous() if x is not latent else latent.clone()
