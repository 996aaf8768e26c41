"""Procedural videos with known content, at any scale (pure torch / numpy; no ComfyUI).

A scene: a sky and a textured ground split by a horizon, and 1-3 objects (disc, square, triangle), each in
its own saturated colour from PALETTE, moving in straight lines without touching each other. Everything is
defined in *native units* (the native frame is NATIVE x NATIVE units); rendering at scale s samples it with
s x s pixels per unit, so the scene at scale 2 is the scene at scale 1 with twice the pixels per side and
objects twice as large: the correct high-resolution content is known.

    params = sample_scenes(seed, count)                       # list of Scene (numbers only)
    frames = render(params, scale=2, frames=8)                # (B, T, 3, 2*NATIVE, 2*NATIVE) float in [0, 1]
    truth = ground_truth(params, frames=8)                    # per video: objects, per frame centre / size
    views = sample_views(seed, count)                         # training framings: (zoom (B,), origin (B, 2))
    crops = render(params, 1, 8, zoom=views[0], origin=views[1])  # each video zoomed into a part of its scene

Training shows the model the same world at many framings (bench/fidelity/train.py): whole scenes, and crops
zoomed 1.25-4x (what a window of a 2x-4x sample sees), with objects of a wider range of sizes
(TRAIN_RADIUS); the evaluation renders whole scenes only.

Two worlds (WORLDS). In ``plain`` every texture is far below the native frame's resolution, so a scene at 2x or
3x holds nothing its native frame does not determine: an upscaler can in principle reach the truth from a perfect
native pass, and no native high-resolution method can beat that there (docs/FIDELITY.md). ``detailed`` adds fine
waves to the ground (FINE: 0.35-1.4 cycles per unit) that each scale shows only as far as its pixels resolve
them, as a camera with an anti-aliasing filter does: faint in the native whole scene (a mean change of 0.002 per
pixel; 0.006 at 2x, 0.008 at 3x), clear at 2x and 3x and in the training crops that zoom in. Real video is like
that (a close-up shows detail a wide shot cannot), and it is what native 4K is for. The same seed gives the same
scene in both worlds but for the fine waves (drawn from their own generator).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np
import torch

NATIVE = 64  # native frame size in units (= pixels at scale 1)
FRAMES = 8  # video frames of the bench (one latent frame each)
SHAPES = ("disc", "square", "triangle")
# Object colours (RGB in 0..1): saturated, far from every background colour (backgrounds stay below
# a saturation of about 0.3), so objects are found by colour alone (metrics.detect).
PALETTE = {"red": (0.92, 0.12, 0.12), "green": (0.12, 0.78, 0.18), "blue": (0.15, 0.25, 0.95),
           "yellow": (0.95, 0.85, 0.08)}
COLOURS = tuple(PALETTE)
RADIUS = (5.0, 9.0)  # object half-size in units (disc radius, half the square's side, triangle circumradius)
TRAIN_RADIUS = (3.0, 14.0)  # the training scenes' wider range (objects of many sizes)
ZOOM = (1.25, 4.0)  # training crops: zoom range (log-uniform), pixels per unit at scale 1
WHOLE_SHARE = 0.5  # share of training videos that show the whole scene (zoom 1), as the evaluation does
SPEED = (0.8, 2.5)  # units per frame
TEXTURE_WAVES = 3
WORLDS = ("plain", "detailed")
FINE_WAVES = 4
FINE = (0.35, 1.4)  # fine waves' frequency, cycles per unit (log-uniform): native Nyquist is 0.5, 3x's 1.5
FINE_AMPLITUDE = (0.03, 0.06)
PREFILTER_PX = 0.5  # std of the Gaussian each render applies to the fine waves, in its own pixels


@dataclass(frozen=True)
class Obj:
    shape: str
    colour: str
    radius: float  # units
    start: tuple[float, float]  # centre (x, y) at frame 0, units
    velocity: tuple[float, float]  # units per frame

    def centre(self, t: int) -> tuple[float, float]:
        return self.start[0] + self.velocity[0] * t, self.start[1] + self.velocity[1] * t

    @property
    def area(self) -> float:
        """Area in square units (scale s: s^2 times as many pixels)."""
        r = self.radius
        return {"disc": math.pi * r * r, "square": 4 * r * r, "triangle": 3 * math.sqrt(3) / 4 * r * r}[self.shape]


@dataclass(frozen=True)
class Scene:
    horizon: float  # y of the horizon, units
    sky: tuple[float, float, float]
    ground: tuple[float, float, float]
    waves: tuple[tuple[float, float, float, float], ...]  # ground texture: (kx, ky, phase, amplitude)
    objects: tuple[Obj, ...]
    fine: tuple[tuple[float, float, float, float], ...] = ()  # the detailed world's fine waves: (fx, fy, phase, amp)


def _pale(rng: np.random.Generator, base: float, spread: float) -> tuple[float, float, float]:
    grey = base + rng.uniform(-spread, spread)
    return tuple(float(np.clip(grey + rng.uniform(-0.07, 0.07), 0, 1)) for _ in range(3))


def _objects(rng: np.random.Generator, frames: int, radius=RADIUS) -> tuple[Obj, ...]:
    """1-3 objects of distinct colours that stay inside the frame and never come closer than 2 units."""
    n = int(rng.integers(1, 4))
    colours = rng.permutation(len(COLOURS))[:n]
    placed: list[Obj] = []
    for colour in colours:
        for _ in range(100):  # rejection sampling; a scene keeps the objects that fit
            r = float(rng.uniform(*radius))
            speed, angle = rng.uniform(*SPEED), rng.uniform(0, 2 * math.pi)
            v = (speed * math.cos(angle), speed * math.sin(angle))
            lo, hi = r + 1, NATIVE - r - 1
            # the whole path inside [lo, hi]: pick the start among the allowed ones
            xs = (max(lo, lo - v[0] * (frames - 1)), min(hi, hi - v[0] * (frames - 1)))
            ys = (max(lo, lo - v[1] * (frames - 1)), min(hi, hi - v[1] * (frames - 1)))
            if xs[0] >= xs[1] or ys[0] >= ys[1]:
                continue
            obj = Obj(SHAPES[int(rng.integers(len(SHAPES)))], COLOURS[colour], r,
                      (float(rng.uniform(*xs)), float(rng.uniform(*ys))), v)
            if all(math.dist(obj.centre(t), o.centre(t)) > 1.2 * (obj.radius + o.radius) + 2
                   for o in placed for t in range(frames)):
                placed.append(obj)
                break
    return tuple(placed)


def sample_scenes(seed: int, count: int, frames: int = FRAMES, radius: tuple[float, float] = RADIUS,
                  world: str = "plain") -> list[Scene]:
    """``count`` scenes, a deterministic function of ``seed`` (and ``radius``, the objects' size range, and
    ``world``: the detailed world's scenes are the plain world's plus fine waves on the ground)."""
    if world not in WORLDS:
        raise ValueError(f"world must be one of {', '.join(WORLDS)}, got {world!r}")
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(count):
        waves = tuple((float(rng.uniform(-0.35, 0.35)), float(rng.uniform(0.1, 0.6)), float(rng.uniform(0, 2 * math.pi)),
                       float(rng.uniform(0.03, 0.08))) for _ in range(TEXTURE_WAVES))
        out.append(Scene(horizon=float(rng.uniform(0.3, 0.6) * NATIVE), sky=_pale(rng, 0.72, 0.12),
                         ground=_pale(rng, 0.38, 0.12), waves=waves, objects=_objects(rng, frames, radius)))
    if world == "detailed":
        fine_rng = np.random.default_rng([seed, 1])
        out = [replace(sc, fine=tuple(_fine_wave(fine_rng) for _ in range(FINE_WAVES))) for sc in out]
    return out


def _fine_wave(rng: np.random.Generator) -> tuple[float, float, float, float]:
    f, angle = math.exp(rng.uniform(math.log(FINE[0]), math.log(FINE[1]))), rng.uniform(0, math.pi)
    return (f * math.cos(angle), f * math.sin(angle), float(rng.uniform(0, 2 * math.pi)),
            float(rng.uniform(*FINE_AMPLITUDE)))


def sample_views(seed: int, count: int, whole_share: float = WHOLE_SHARE,
                 zoom: tuple[float, float] = ZOOM) -> tuple[torch.Tensor, torch.Tensor]:
    """Training framings: (zoom (B,), origin (B, 2) in units). A ``whole_share`` of them frame the whole scene
    (zoom 1, origin 0); the others zoom log-uniformly into ``zoom`` and frame a uniformly placed crop."""
    rng = np.random.default_rng(seed)
    z = np.exp(rng.uniform(math.log(zoom[0]), math.log(zoom[1]), count))
    z = np.where(rng.uniform(size=count) < whole_share, 1.0, z)
    origin = rng.uniform(size=(count, 2)) * (NATIVE - NATIVE / z)[:, None]  # the crop stays inside the scene
    return torch.tensor(z, dtype=torch.float32), torch.tensor(origin, dtype=torch.float32)


def _coverage(sd: torch.Tensor, scale: float) -> torch.Tensor:
    """Anti-aliased inside-ness from a signed distance in units: one pixel of soft edge at every scale."""
    return (0.5 - sd * scale).clamp(0, 1)


def _sdf(shape: torch.Tensor, x: torch.Tensor, y: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    """Signed distance (units, < 0 inside) to each object's shape centred at the origin.

    shape: (...) index into SHAPES; x, y: (..., S, S) offsets from the centre; r: (...) radius."""
    r = r[..., None, None]
    disc = torch.sqrt(x * x + y * y) - r
    square = torch.maximum(x.abs(), y.abs()) - r
    # upright equilateral triangle of circumradius r: three half-planes at distance r / 2 from the centre
    # (outward normals: down, and the two upper sides at 210 and 330 degrees; y grows downwards)
    sides = [y - r / 2] + [x * math.cos(a) + y * math.sin(a) - r / 2 for a in (math.radians(210), math.radians(330))]
    triangle = torch.maximum(torch.maximum(sides[0], sides[1]), sides[2])
    shape = shape[..., None, None]
    return torch.where(shape == 0, disc, torch.where(shape == 1, square, triangle))


def render(scenes: list[Scene], scale: int = 1, frames: int = FRAMES, device="cpu",
           zoom: torch.Tensor | None = None, origin: torch.Tensor | None = None) -> torch.Tensor:
    """The videos at ``scale``: (B, T, 3, S, S) float32 in [0, 1], S = scale * NATIVE.

    Without ``zoom`` / ``origin`` each frame shows its whole scene at ``scale`` pixels per unit. With them
    (zoom (B,), origin (B, 2) in units: sample_views) video b shows the square of side NATIVE / zoom[b] at
    origin[b], at scale * zoom[b] pixels per unit (its edges as sharp as a whole scene's at that scale).
    Batched over videos, frames and objects (the training loop renders its batches on the GPU)."""
    B, K, size = len(scenes), 3, NATIVE * scale
    f32 = dict(device=device, dtype=torch.float32)
    ppu = torch.full((B,), float(scale), **f32) if zoom is None else scale * zoom.to(**f32)  # pixels per unit
    at = torch.zeros(B, 2, **f32) if origin is None else origin.to(**f32)
    coords = (torch.arange(size, **f32) + 0.5)[None] / ppu[:, None]  # (B, S) pixel centres, units
    y = (coords + at[:, 1, None])[:, :, None]  # (B, S, 1)
    x = (coords + at[:, 0, None])[:, None, :]  # (B, 1, S)
    scale = ppu[:, None, None]  # (B, 1, 1): the anti-aliasing width per video
    # background: (B, 3, S, S)
    waves = torch.tensor([sc.waves for sc in scenes], **f32)  # (B, N, 4)
    kx, ky, ph, amp = (waves[..., i, None, None] for i in range(4))  # (B, N, 1, 1)
    texture = (amp * torch.sin(2 * math.pi * (kx * x[:, None] + ky * y[:, None]) / 8 + ph)).sum(1)  # (B, S, S)
    if any(sc.fine for sc in scenes):  # the detailed world: each wave as far as this render's pixels resolve it
        fine = torch.tensor([sc.fine or [(0.0, 0.0, 0.0, 0.0)] * FINE_WAVES for sc in scenes], **f32)  # (B, N, 4)
        fx, fy, ph, amp = (fine[..., i, None, None] for i in range(4))
        per_px = torch.sqrt(fx * fx + fy * fy) / scale[:, None]  # cycles per pixel (B, N, 1, 1)
        gain = torch.exp(-2 * (math.pi * PREFILTER_PX * per_px) ** 2)  # the Gaussian prefilter's response
        texture = texture + (gain * amp * torch.sin(2 * math.pi * (fx * x[:, None] + fy * y[:, None]) + ph)).sum(1)
    horizon = torch.tensor([sc.horizon for sc in scenes], **f32)[:, None, None]
    ground_mix = _coverage(horizon - y, scale)[:, None]  # (B, 1, S, S): 1 below the horizon
    sky = torch.tensor([sc.sky for sc in scenes], **f32)[:, :, None, None] * (0.9 + 0.2 * y[:, None] / NATIVE)
    ground = torch.tensor([sc.ground for sc in scenes], **f32)[:, :, None, None] * (1 + texture[:, None])
    video = (sky * (1 - ground_mix) + ground * ground_mix).clamp(0, 1)[:, None].repeat(1, frames, 1, 1, 1)
    # objects, padded to K per video: (B, K) tensors
    pad = Obj("disc", COLOURS[0], 0.0, (0.0, 0.0), (0.0, 0.0))
    objs = [list(sc.objects) + [pad] * (K - len(sc.objects)) for sc in scenes]
    present = torch.tensor([[i < len(sc.objects) for i in range(K)] for sc in scenes], device=device)
    shape = torch.tensor([[SHAPES.index(o.shape) for o in row] for row in objs], device=device)
    radius = torch.tensor([[o.radius for o in row] for row in objs], **f32)
    colour = torch.tensor([[PALETTE[o.colour] for o in row] for row in objs], **f32)  # (B, K, 3)
    start = torch.tensor([[o.start for o in row] for row in objs], **f32)  # (B, K, 2)
    vel = torch.tensor([[o.velocity for o in row] for row in objs], **f32)
    t = torch.arange(frames, **f32)
    centre = start[:, :, None] + vel[:, :, None] * t[None, None, :, None]  # (B, K, T, 2)
    for k in range(K):
        cx, cy = centre[:, k, :, 0, None, None], centre[:, k, :, 1, None, None]  # (B, T, 1, 1)
        sd = _sdf(shape[:, k, None].expand(B, frames), x[:, None] - cx, y[:, None] - cy,
                  radius[:, k, None].expand(B, frames))  # (B, T, S, S)
        cov = (_coverage(sd, scale[:, None]) * present[:, k, None, None, None])[:, :, None]  # (B, T, 1, S, S)
        video = video * (1 - cov) + colour[:, k, None, :, None, None] * cov
    return video


def ground_truth(scenes: list[Scene], frames: int = FRAMES) -> list[dict]:
    """Per video: the objects (shape, colour, area in square units) and their centres per frame (units)."""
    return [{"count": len(sc.objects),
             "objects": [{"shape": o.shape, "colour": o.colour, "radius": o.radius, "area": o.area,
                          "centres": [o.centre(t) for t in range(frames)]} for o in sc.objects]}
            for sc in scenes]
