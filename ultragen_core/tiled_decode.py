"""Tiled decode of a video latent: spatial (and, for whole-clip VAEs, temporal) tiles with feathered overlap.

The decoder is a plain callable ``decode(latent_tile) -> pixels``; nothing here knows ComfyUI. Causal VAEs
(Wan 2.1 / 2.2: one latent frame at a time with a cache) are tiled in space only: every tile spans all
frames, so the causal cache never restarts (a restart makes the video blink). VAEs that decode whole clips
may also be tiled in time.

Blending: along every axis a tile's weight ramps up linearly over the overlap with its neighbour, and the
weights of all tiles are normalised to sum to one per position. The tile grid is a Cartesian product, so
this normalisation is separable: one weight vector per axis and tile, their outer product a tile's weight
plane (never per channel). Positions seen by one tile only get weight exactly 1: a single tile reproduces
an untiled decode bit for bit. Each tile's weighted contribution is added into one preallocated output on
the output device, channels last (B, T, H, W, C), the layout of a ComfyUI IMAGE batch.
"""
from __future__ import annotations

import logging
import math
import traceback
from dataclasses import dataclass, replace
from typing import Callable, Sequence

import torch

log = logging.getLogger(__name__)
PREFIX = "[UltraGen]"
GIB = 1024 ** 3
EDGE_MARGIN = 0.25  # part of an overlap, at each tile's edge, that gets (almost) no weight
MIN_WEIGHT = 1e-3  # keeps every weight positive, so the normalisation never divides by zero
CHUNK_ELEMENTS = 1 << 25  # elements per post-processing chunk on the decode device (128 MiB in float32)

Shape5 = tuple[int, int, int, int, int]


@dataclass(frozen=True)
class TiledDecodeConfig:
    """How to cut the latent. All sizes in latent units (pixels / the VAE's compression).

    tile: (h, w) tile size; 0 = from ``budget_bytes`` (largest tiles whose estimate fits).
    overlap: (h, w) overlap between neighbouring tiles, at most half a tile.
    causal: the VAE decodes frame by frame with a cache: every tile spans all frames (no temporal tiles).
    temporal_tile / temporal_overlap: latent frames per temporal tile (0 = all), only when causal is False.
    budget_bytes: decode-device memory a tile may use (weights excluded); 0 = unlimited.
    """

    tile: tuple[int, int] = (0, 0)
    overlap: tuple[int, int] = (1, 1)
    causal: bool = True
    temporal_tile: int = 0
    temporal_overlap: int = 0
    budget_bytes: int = 0

    def __post_init__(self):
        problem = self.problem()
        if problem:
            raise ValueError(problem)

    def problem(self) -> str | None:
        """A message naming what is wrong and how to fix it, or None."""
        if len(self.tile) != 2 or any(int(t) != t or t < 0 for t in self.tile):
            return f"tile must be two whole numbers >= 0 (0 = from the memory budget), got {self.tile}."
        if len(self.overlap) != 2 or any(int(o) != o or o < 0 for o in self.overlap):
            return f"overlap must be two whole numbers >= 0, got {self.overlap}."
        for t, o, axis in zip(self.tile, self.overlap, ("height", "width")):
            if t and 2 * o > t:
                return (f"overlap ({o}) is more than half the tile {axis} ({t}) in latent units: lower the overlap "
                        f"to at most {t // 2} or raise the tile size to at least {2 * o}.")
        if self.temporal_tile < 0 or self.temporal_overlap < 0:
            return (f"temporal_tile and temporal_overlap must be >= 0, got {self.temporal_tile} and "
                    f"{self.temporal_overlap}.")
        if self.causal and self.temporal_tile:
            return (f"temporal_tile={self.temporal_tile}, but this VAE is causal (it decodes frame by frame with a "
                    "cache): its tiles must span all frames. Set temporal_tile to 0.")
        if self.temporal_tile and 2 * self.temporal_overlap > self.temporal_tile:
            return (f"temporal_overlap ({self.temporal_overlap}) is more than half of temporal_tile "
                    f"({self.temporal_tile}): lower it to at most {self.temporal_tile // 2}.")
        if self.budget_bytes < 0:
            return f"budget_bytes must be >= 0 (0 = unlimited), got {self.budget_bytes}."
        return None

    def min_side(self, axis: int) -> int:
        """The smallest tile side worth decoding along spatial axis 0 (h) or 1 (w)."""
        return max(2 * self.overlap[axis], 4)


@dataclass(frozen=True)
class Scale:
    """How latent positions map to pixels.

    spatial: pixels per latent row / column (8 for Wan 2.1, 16 for Wan 2.2).
    frames: number of output frames for n latent frames (Wan: 1 + 4 (n - 1)).
    frame_stride: output frames per latent frame, used to place temporal tiles (Wan: 4).
    channels: output channels (3).
    """

    spatial: int
    frames: Callable[[int], int]
    frame_stride: int = 1
    channels: int = 3


@dataclass(frozen=True)
class Axis:
    """Tiles along one axis: latent intervals, pixel intervals and normalised blend weights."""

    latent: tuple[tuple[int, int], ...]
    pixel: tuple[tuple[int, int], ...]
    weights: tuple[torch.Tensor, ...]  # one (pixel length,) float32 vector per tile; they sum to 1 per pixel


@dataclass(frozen=True)
class TilePlan:
    t: Axis
    h: Axis
    w: Axis

    @property
    def count(self) -> int:
        return len(self.t.latent) * len(self.h.latent) * len(self.w.latent)

    def tiles(self):
        """(i_t, i_h, i_w) of every tile, row-major."""
        for i in range(len(self.t.latent)):
            for j in range(len(self.h.latent)):
                for k in range(len(self.w.latent)):
                    yield i, j, k

    @property
    def tile_shape(self) -> tuple[int, int, int]:
        """Largest latent tile (t, h, w)."""
        return tuple(max(b - a for a, b in ax.latent) for ax in (self.t, self.h, self.w))


def axis_starts(size: int, tile: int, overlap: int) -> list[int]:
    """Starts of tiles of length ``min(tile, size)`` covering ``range(size)`` with at least ``overlap``, spread evenly."""
    if tile <= 0 or tile >= size:
        return [0]
    count = math.ceil((size - overlap) / (tile - overlap))
    return [round(i * (size - tile) / (count - 1)) for i in range(count)]


def _ramp(n: int, margin: float) -> torch.Tensor:
    """Rising weights over an overlap of n positions: ~0 over the first ``margin`` of it (the tile's own edge,
    where its context is cut off), linear across the middle, 1 over the last ``margin``."""
    x = (torch.arange(n, dtype=torch.float64) + 0.5) / n
    return ((x - margin) / (1 - 2 * margin)).clamp(MIN_WEIGHT, 1)


def blend_weights(intervals: Sequence[tuple[int, int]], length: int,
                  margin: float = EDGE_MARGIN) -> tuple[torch.Tensor, ...]:
    """Per tile (pixel interval [a, b)), a weight vector ramping over overlaps (see _ramp); normalised to sum 1."""
    raw = []
    for i, (a, b) in enumerate(intervals):
        w = torch.ones(b - a, dtype=torch.float64)
        if i > 0 and intervals[i - 1][1] > a:  # overlap with the previous tile: ramp up
            n = min(intervals[i - 1][1], b) - a
            w[:n] *= _ramp(n, margin)
        if i + 1 < len(intervals) and intervals[i + 1][0] < b:  # overlap with the next tile: ramp down
            n = b - max(intervals[i + 1][0], a)
            w[b - a - n:] *= _ramp(n, margin).flip(0)
        raw.append(w)
    total = torch.zeros(length, dtype=torch.float64)
    for (a, b), w in zip(intervals, raw):
        total[a:b] += w
    return tuple((w / total[a:b]).float() for (a, b), w in zip(intervals, raw))


def _axis(size: int, tile: int, overlap: int, to_pixels: Callable[[int, int], tuple[int, int]], length: int) -> Axis:
    tile = min(tile, size) if tile > 0 else size
    latent = tuple((s, s + tile) for s in axis_starts(size, tile, overlap))
    pixel = tuple(to_pixels(a, b) for a, b in latent)
    return Axis(latent, pixel, blend_weights(pixel, length))


def plan_tiles(shape: Shape5, cfg: TiledDecodeConfig, scale: Scale, tile: tuple[int, int]) -> TilePlan:
    """Tiles of latent size ``tile`` (h, w) over a latent of ``shape`` (B, C, T, H, W)."""
    _, _, T, H, W = shape
    s = scale.spatial
    frames = scale.frames(T)

    def to_frames(a: int, b: int) -> tuple[int, int]:
        start = 0 if a == 0 else scale.frame_stride * a
        return start, min(frames, start + scale.frames(b - a))

    t_axis = _axis(T, 0 if cfg.causal else cfg.temporal_tile, cfg.temporal_overlap, to_frames, frames)
    h_axis = _axis(H, tile[0], cfg.overlap[0], lambda a, b: (a * s, b * s), H * s)
    w_axis = _axis(W, tile[1], cfg.overlap[1], lambda a, b: (a * s, b * s), W * s)
    return TilePlan(t_axis, h_axis, w_axis)


def fit_overlap(size: tuple[int, int], tile: tuple[int, int], overlap: tuple[int, int]) -> tuple[int, int]:
    """The overlap (h, w) that tiles of ``tile`` over a latent of ``size`` (H, W) can have: none along an axis
    that one tile covers, at most half a tile along the others (a tile cut to a small latent shrinks it)."""
    return tuple(0 if t >= n else min(o, t // 2) for n, t, o in zip(size, tile, overlap))


def _lengths(size: int, overlap: int, min_side: int) -> list[int]:
    """Candidate tile lengths along an axis, longest first: for each tile count, the shortest length that
    covers ``size`` with ``overlap``; never below ``min_side`` (or the axis)."""
    out = {size}
    for count in range(2, size + 1):
        length = max(math.ceil((size + (count - 1) * overlap) / count), min(min_side, size))
        out.add(length)
        if length <= min_side:
            break
    return sorted(out, reverse=True)


def choose_tile(shape: Shape5, cfg: TiledDecodeConfig, estimate: Callable[[Shape5], float]) -> tuple[int, int]:
    """Latent tile (h, w): the user's ``cfg.tile``, or the tile grid with the least decoded area whose
    per-tile ``estimate`` (bytes for a latent tile shape (B, C, T, h, w)) fits ``cfg.budget_bytes``."""
    B, C, T, H, W = shape
    t = T if cfg.causal or not cfg.temporal_tile else min(T, cfg.temporal_tile)
    if cfg.tile[0] and cfg.tile[1]:
        return min(cfg.tile[0], H), min(cfg.tile[1], W)
    budget = cfg.budget_bytes
    fixed_h, fixed_w = cfg.tile
    if not budget or estimate((B, C, t, fixed_h or H, fixed_w or W)) <= budget:
        return fixed_h or H, fixed_w or W
    best = None
    lengths_h = [min(fixed_h, H)] if fixed_h else _lengths(H, cfg.overlap[0], cfg.min_side(0))
    lengths_w = [min(fixed_w, W)] if fixed_w else _lengths(W, cfg.overlap[1], cfg.min_side(1))
    for lh in lengths_h:
        for lw in lengths_w:  # longest first: the first that fits is the best for this lh
            if estimate((B, C, t, lh, lw)) <= budget:
                area = len(axis_starts(H, lh, cfg.overlap[0])) * lh * len(axis_starts(W, lw, cfg.overlap[1])) * lw
                if best is None or area < best[0]:
                    best = (area, lh, lw)
                break
    if best is None:
        smallest = (B, C, t, min(fixed_h or cfg.min_side(0), H), min(fixed_w or cfg.min_side(1), W))
        raise MemoryError(
            f"{PREFIX} tiled decode: even the smallest tile {smallest[3]}x{smallest[4]} (latent units, overlap "
            f"{cfg.overlap}) needs about {estimate(smallest) / GIB:.2f} GiB, more than the budget of "
            f"{budget / GIB:.2f} GiB. Raise max_vram_gb (or free VRAM), or lower the overlap.")
    return best[1], best[2]


def default_is_oom(exc: BaseException) -> bool:
    return isinstance(exc, torch.OutOfMemoryError)


@dataclass
class _Run:
    """What one tiled_decode call passes around (not user configuration)."""

    decode: Callable[[torch.Tensor], torch.Tensor]
    scale: Scale
    estimate: Callable[[Shape5], float]
    output_device: torch.device
    postprocess: Callable[[torch.Tensor], torch.Tensor] | None
    check_interrupt: Callable[[], None] | None
    empty_cache: Callable[[], None] | None
    is_oom: Callable[[BaseException], bool]
    requested: TiledDecodeConfig  # the caller's config: its overlap, before fitting it to a tile grid
    max_tile: tuple[int, int] | None = None  # set after an out-of-memory: tiles above it are sub-tiled


def tiled_decode(latent: torch.Tensor, decode: Callable[[torch.Tensor], torch.Tensor], cfg: TiledDecodeConfig,
                 scale: Scale, *, estimate: Callable[[Shape5], float] = lambda shape: 0.0,
                 output_device: torch.device | str = "cpu",
                 postprocess: Callable[[torch.Tensor], torch.Tensor] | None = None,
                 on_tile: Callable[[int, int], None] | None = None,
                 check_interrupt: Callable[[], None] | None = None,
                 empty_cache: Callable[[], None] | None = None,
                 is_oom: Callable[[BaseException], bool] = default_is_oom) -> torch.Tensor:
    """Decode ``latent`` (B, C, T, H, W) tile by tile; returns float32 pixels (B, T', H * s, W * s, C') on
    ``output_device`` (T' = scale.frames(T), C' = scale.channels).

    decode: latent tile (B, C, t, h, w) -> pixels (B, C', scale.frames(t), h * s, w * s), any device / dtype.
    estimate: decode-device bytes for decoding a latent tile of a given shape, its output included.
    postprocess: applied to float32 pixel chunks (B, C', f, h, w) before blending (e.g. clamp to 0..1).
    on_tile(done, total): after every tile (progress). check_interrupt(): before every tile; it may raise.
    empty_cache(): frees cached device memory after an out-of-memory or an interruption.
    is_oom(exc): which exceptions are out-of-memory. On one, the tile is decoded again in smaller tiles
    (and so are later tiles of the same size), with a warning.
    """
    if latent.ndim != 5:
        raise ValueError(f"tiled_decode needs a video latent (B, C, T, H, W), got shape {tuple(latent.shape)}.")
    run = _Run(decode, scale, estimate, torch.device(output_device), postprocess, check_interrupt, empty_cache,
               is_oom, cfg)
    tile = choose_tile(tuple(latent.shape), cfg, estimate)
    cfg = replace(cfg, tile=tile, overlap=fit_overlap(tuple(latent.shape[-2:]), tile, cfg.overlap))
    plan = plan_tiles(tuple(latent.shape), cfg, scale, tile)
    log.info("%s tiled VAE decode: latent %s -> %d tile(s) (%d x %d x %d), tile %dx%d px, overlap %dx%d px, "
             "tile estimate %.2f GiB, budget %s.", PREFIX, tuple(latent.shape), plan.count, len(plan.t.latent),
             len(plan.h.latent), len(plan.w.latent), tile[0] * scale.spatial, tile[1] * scale.spatial,
             cfg.overlap[0] * scale.spatial, cfg.overlap[1] * scale.spatial,
             estimate((*latent.shape[:2], *plan.tile_shape)) / GIB,
             f"{cfg.budget_bytes / GIB:.2f} GiB" if cfg.budget_bytes else "unlimited")
    return _decode_plan(latent, cfg, run, on_tile)


def _decode_plan(latent: torch.Tensor, cfg: TiledDecodeConfig, run: _Run,
                 on_tile: Callable[[int, int], None] | None) -> torch.Tensor:
    B, _, T, H, W = latent.shape
    plan = plan_tiles(tuple(latent.shape), cfg, run.scale, cfg.tile)
    s = run.scale.spatial
    out = torch.zeros(B, run.scale.frames(T), H * s, W * s, run.scale.channels, dtype=torch.float32,
                      device=run.output_device)  # (B, T', H', W', C')
    total = plan.count
    try:
        for done, (i, j, k) in enumerate(plan.tiles()):
            if run.check_interrupt is not None:
                run.check_interrupt()
            (t0, t1), (h0, h1), (w0, w1) = plan.t.latent[i], plan.h.latent[j], plan.w.latent[k]
            (pt0, pt1), (ph0, ph1), (pw0, pw1) = plan.t.pixel[i], plan.h.pixel[j], plan.w.pixel[k]
            weight = (plan.t.weights[i], plan.h.weights[j][:, None] * plan.w.weights[k][None, :])  # (t',), (h', w')
            crop = latent[:, :, t0:t1, h0:h1, w0:w1]  # (B, C, t, h, w)
            target = out[:, pt0:pt1, ph0:ph1, pw0:pw1]  # (B, t', h', w', C')
            _decode_tile(crop, cfg, run, weight, target)
            if on_tile is not None:
                on_tile(done + 1, total)
    except BaseException as exc:
        # the traceback keeps these frames alive: drop the output and tile tensors before re-raising
        out = target = crop = None
        traceback.clear_frames(exc.__traceback__)  # locals of the finished deeper frames (skips running ones)
        if run.empty_cache is not None:
            run.empty_cache()
        raise
    return out


Weight = tuple[torch.Tensor, torch.Tensor]  # time weights (t',) and blend-weight plane (h', w')


def _decode_tile(crop: torch.Tensor, cfg: TiledDecodeConfig, run: _Run, weight: Weight,
                 target: torch.Tensor) -> None:
    """Add weight * decode(crop) into target (B, t', h', w', C'), sub-tiling after an out-of-memory."""
    h, w = crop.shape[-2:]
    if run.max_tile is not None and (h > run.max_tile[0] or w > run.max_tile[1]):
        return _decode_subtiled(crop, cfg, run, weight, target)
    failed = False
    try:
        with torch.no_grad():
            pixels = run.decode(crop)  # (B, C', t', h', w')
            expected = (target.shape[0], target.shape[-1], *target.shape[1:4])
            if tuple(pixels.shape) != expected:
                raise RuntimeError(
                    f"{PREFIX} tiled decode: the decoder returned shape {tuple(pixels.shape)} for the latent tile "
                    f"{tuple(crop.shape)}, expected {expected}: the VAE's scale factors do not match its output.")
            _accumulate(pixels, run, weight, target)
            del pixels
    except BaseException as exc:
        if not run.is_oom(exc):
            raise
        failed = True  # handled below, once the exception (and the tensors it holds) is gone
    if failed:
        if run.empty_cache is not None:
            run.empty_cache()
        target.zero_()  # a partly written tile is rewritten in full
        want = run.requested  # sub-tiles overlap as asked, also along an axis this tile covered alone
        half = (max(want.min_side(0), math.ceil((h + want.overlap[0]) / 2)),
                max(want.min_side(1), math.ceil((w + want.overlap[1]) / 2)))
        if half[0] >= h and half[1] >= w:
            raise MemoryError(
                f"{PREFIX} tiled decode: out of memory on a {h}x{w} latent tile, the smallest this overlap "
                f"{want.overlap} allows. Free VRAM (unload models), lower the overlap, or lower max_vram_gb.")
        run.max_tile = (min(half[0], h), min(half[1], w))
        log.warning("%s tiled VAE decode: out of memory on a %dx%d latent tile; freed the cache and retrying it "
                    "(and later tiles) as tiles of at most %dx%d.", PREFIX, h, w, *run.max_tile)
        _decode_subtiled(crop, cfg, run, weight, target)


def _decode_subtiled(crop: torch.Tensor, cfg: TiledDecodeConfig, run: _Run, weight: Weight,
                     target: torch.Tensor) -> None:
    tile = (min(run.max_tile[0], crop.shape[-2]), min(run.max_tile[1], crop.shape[-1]))
    overlap = fit_overlap(tuple(crop.shape[-2:]), tile, run.requested.overlap)
    sub_cfg = replace(cfg, tile=tile, overlap=overlap, budget_bytes=0)
    pixels = _decode_plan(crop, sub_cfg, run, on_tile=None)  # (B, t', h', w', C') on the output device
    _weigh(pixels, weight, 0)
    target += pixels


def _weigh(chunk: torch.Tensor, weight: Weight, f0: int) -> None:
    """chunk (B, f, h', w', C') *= time weights[f0 : f0 + f] x plane, in place."""
    time, plane = weight
    chunk.mul_(plane.to(chunk.device)[:, :, None])
    time = time[f0:f0 + chunk.shape[1]]
    if not bool((time == 1).all()):
        chunk.mul_(time.to(chunk.device)[None, :, None, None, None])


def _accumulate(pixels: torch.Tensor, run: _Run, weight: Weight, target: torch.Tensor) -> None:
    """target (B, t', h', w', C') += postprocess(pixels (B, C', t', h', w')) * weight, in frame chunks."""
    B, C, F, h, w = pixels.shape
    step = max(1, CHUNK_ELEMENTS // max(1, B * C * h * w))
    for f0 in range(0, F, step):
        chunk = pixels[:, :, f0:f0 + step].float()  # (B, C', f, h', w')
        if run.postprocess is not None:
            chunk = run.postprocess(chunk)
        chunk = chunk.movedim(1, -1).contiguous()  # (B, f, h', w', C')
        _weigh(chunk, weight, f0)
        target[:, f0:f0 + step] += chunk.to(target.device)


def postprocess_bytes(shape: Shape5, scale: Scale) -> int:
    """Decode-device bytes the post-processing of one tile adds (float32 chunks), for budget estimates."""
    B, _, _, h, w = shape
    per_frame = B * scale.channels * h * w * scale.spatial ** 2
    return 3 * 4 * min(per_frame * scale.frames(shape[2]), max(per_frame, CHUNK_ELEMENTS))
