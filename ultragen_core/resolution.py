"""Video sizes that a model family can take, the token grid they give, and what attention costs there.

A family's VAE compresses space by ``vae_spatial`` and time by ``vae_temporal``; its transformer cuts
the latent into ``patch`` (t, h, w) patches. So width / height must be multiples of
``vae_spatial * patch_h`` (16 px for Wan 2.1: 1080 -> 1088) and the frame count must be
``vae_temporal * n + 1`` (Wan: 4n + 1, LTX-Video: 8n + 1).

Attention cost is counted in FLOPs of the attention products only (q k^T and p v: 4 * Lq * Lk * dim per
call), per sampling step and batch item, summed over the transformer blocks. The UltraGen figure uses
the same plan as the attention patch (:func:`ultragen_core.config.resolve_plan`): every window of the
batched call, the pooled global branch, and full attention in blocks / steps that keep it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from .config import AttentionSettings, resolve_plan
from .models import FAMILIES, Grid, ModelFamily, native_grid

ROUNDINGS = ("nearest", "up", "down")
ORIENTATIONS = ("landscape", "portrait", "square")

# Target presets as (long side, short side) in pixels, landscape.
TARGETS: dict[str, tuple[int, int]] = {
    "720p (1280x720)": (1280, 720),
    "1080p (1920x1080)": (1920, 1080),
    "1440p / 2K (2560x1440)": (2560, 1440),
    "4K UHD (3840x2160)": (3840, 2160),
    "DCI 4K (4096x2160)": (4096, 2160),
    "custom": (0, 0),
}

# What a request may ask for (the node's widget limits; values arriving through links are checked here).
MAX_FRAMES = 1025
MIN_SIDE, MAX_SIDE = 16, 8192

# Assumed dense-attention throughput for the time estimate (cuDNN, head_dim 128, H200; DESIGN.md 6).
REFERENCE_TFLOPS = 500.0


def round_to(value: int, step: int, rounding: str) -> int:
    """``value`` rounded to a positive multiple of ``step`` (ties round up: never fewer pixels)."""
    if rounding not in ROUNDINGS:
        raise ValueError(f"rounding must be one of {ROUNDINGS}, got {rounding!r}.")
    if rounding == "up":
        n = math.ceil(value / step)
    elif rounding == "down":
        n = value // step
    else:
        n = math.floor(value / step + 0.5)
    return max(1, n) * step


def round_frames(frames: int, temporal: int) -> int:
    """The nearest count of the form ``temporal * n + 1`` (ties up), at least 1."""
    n = math.floor((frames - 1) / temporal + 0.5)
    return max(0, n) * temporal + 1


@dataclass(frozen=True)
class ResolutionRequest:
    """What the user asked for. width / height are used only for target "custom"; a size below one pixel
    step of the family (16 px for a 32-px family) becomes one step."""

    family: str
    target: str
    orientation: str = "landscape"
    frames: int = 81
    width: int = 1920
    height: int = 1080
    rounding: str = "nearest"

    def __post_init__(self):
        problem = self.problem()
        if problem:
            raise ValueError(problem)

    def problem(self) -> str | None:
        if self.family not in FAMILIES:
            return f"model_family {self.family!r} is unknown; pick one of {list(FAMILIES)}."
        if self.target not in TARGETS:
            return f"target {self.target!r} is unknown; pick one of {list(TARGETS)}."
        if self.orientation not in ORIENTATIONS:
            return f"orientation must be one of {ORIENTATIONS}, got {self.orientation!r}."
        if self.rounding not in ROUNDINGS:
            return f"rounding must be one of {ROUNDINGS}, got {self.rounding!r}."
        if not 1 <= self.frames <= MAX_FRAMES:
            return f"frames must be 1 to {MAX_FRAMES}, got {self.frames}; set frames in that range."
        if self.target == "custom":
            for name, value in (("custom_width", self.width), ("custom_height", self.height)):
                if not MIN_SIDE <= value <= MAX_SIDE:
                    return (f"{name} must be {MIN_SIDE} to {MAX_SIDE} px, got {value} (custom size "
                            f"{self.width}x{self.height}); pick a size in that range.")
        return None


@dataclass(frozen=True)
class AttentionCost:
    """Attention FLOPs per sampling step and batch item (all blocks)."""

    full_flops: float
    ultragen_flops: float
    plan: str

    @property
    def speedup(self) -> float:
        return self.full_flops / self.ultragen_flops if self.ultragen_flops else 1.0

    def seconds(self, flops: float, tflops: float = REFERENCE_TFLOPS) -> float:
        return flops / (tflops * 1e12)


@dataclass(frozen=True)
class Resolution:
    family: ModelFamily
    width: int
    height: int
    frames: int
    requested: tuple[int, int, int]
    grid: Grid
    cost: AttentionCost

    @property
    def tokens(self) -> int:
        return math.prod(self.grid)

    def report(self) -> str:
        f, c = self.family, self.cost
        rw, rh, rf = self.requested
        lines = [f"{f.name}: {self.width}x{self.height}, {self.frames} frames"]
        if (rw, rh, rf) != (self.width, self.height, self.frames):
            lines.append(f"  (asked {rw}x{rh}, {rf} frames; sizes step {f.pixel_step} px, "
                         f"frames {f.vae_temporal}n+1)")
        nt, nh, nw = f.native_grid
        lines.append(f"token grid {'x'.join(map(str, self.grid))} = {self.tokens:,} tokens "
                     f"({self.tokens / (nt * nh * nw):.1f}x the native {f.native[0]}x{f.native[1]} "
                     f"x {f.native[2]} frames)")
        lines.append(f"attention per step and batch item, {f.blocks} blocks x {f.heads} heads:")
        lines.append(f"  full attention  {c.full_flops / 1e15:9.2f} PFLOP  ~{c.seconds(c.full_flops):8.1f} s")
        lines.append(f"  UltraGen        {c.ultragen_flops / 1e15:9.2f} PFLOP  ~{c.seconds(c.ultragen_flops):8.1f} s"
                     f"  ({c.speedup:.1f}x less)")
        lines.append(f"  UltraGen plan: {c.plan}")
        lines.append(f"  (seconds at {REFERENCE_TFLOPS:g} TFLOP/s, attention only; CFG doubles them)")
        if not f.ultragen:
            lines.append(f"  note: UltraGen Apply does not patch {f.name} yet; the UltraGen figure is what the "
                         "same plan would cost.")
        return "\n".join(lines)


def attention_cost(family: ModelFamily, grid: Grid, settings: AttentionSettings | None = None) -> AttentionCost:
    """Full vs. UltraGen attention FLOPs for one step on ``grid`` (see the module docstring)."""
    settings = settings or AttentionSettings()
    n = math.prod(grid)
    per_pair = 4.0 * family.dim  # q k^T and p v, over all heads
    full_block = per_pair * n * n
    plan = resolve_plan(settings, grid, native_grid(family, settings.native_resolution)[0])
    full_blocks = settings.full_blocks(family.blocks)
    patched = 0.0
    for b in range(family.blocks):
        if b in full_blocks or plan.is_identity:
            patched += full_block
            continue
        layout = plan.layout(b)
        patched += per_pair * layout.count * layout.window_tokens ** 2
        if plan.pooled:
            m = math.prod(plan.pooled)
            patched += per_pair * m * m
    active = settings.end_percent - settings.start_percent
    ultragen = active * patched + (1.0 - active) * full_block * family.blocks
    return AttentionCost(full_block * family.blocks, ultragen, plan.describe())


def pick_resolution(request: ResolutionRequest, settings: AttentionSettings | None = None) -> Resolution:
    """The valid size nearest to the request, its token grid and attention cost."""
    family = FAMILIES[request.family]
    if request.target == "custom":
        w, h = request.width, request.height
    else:
        long_side, short_side = TARGETS[request.target]
        if request.orientation == "landscape":
            w, h = long_side, short_side
        elif request.orientation == "portrait":
            w, h = short_side, long_side
        else:
            w = h = short_side
    step = family.pixel_step
    width, height = round_to(w, step, request.rounding), round_to(h, step, request.rounding)
    frames = round_frames(request.frames, family.vae_temporal)
    grid = family.grid(width, height, frames)
    return Resolution(family, width, height, frames, (w, h, request.frames), grid,
                      attention_cost(family, grid, settings))
