"""What the fidelity bench measures in decoded videos, per video (aggregated with error bars by evaluate.py).

Objects are found by colour: a pixel belongs to palette colour k when each of its channels is within TOL of
that colour (the backgrounds are far less saturated), and the 8-connected components of those pixels,
larger than MIN_AREA_FRACTION of the smallest object the scenes can hold, are the objects. Every training
scene holds 1-3 objects, each colour at most once, moving at most SPEED[1] units per frame. Per video:

- ``count_error``: per frame, extra blobs of one colour (a duplicated object) + missing objects below 1 +
  objects beyond 3, averaged over frames (ground truth: 0).
- ``duplication``: fraction of frames in which some colour appears as two or more blobs (ground truth: 0).
- ``size``: mean sqrt(area) / scale of the largest blob of each colour, in native units; evaluate.py
  divides it by the same number measured on ground-truth renders at the same scale (1 = right size).
- ``continuity``: per colour seen in the video, the share of consecutive frame pairs in which it keeps one
  blob, present in both frames, whose centre moves at most MAX_STEP units (ground truth: 1). NaN when no
  object is seen (count_error counts that video).

Per set of videos (a cell), ``set_distances``: the Jensen-Shannon divergence (base 2, 0..1) between the
pooled histograms of the set and of ground-truth renders at the same scale, with a bootstrap error over the
set's videos: ``colour_js``, joint RGB (4 bins per channel); ``edge_js``, the luminance gradient magnitude
per native unit (blur, ringing and tiling artefacts move it); ``orientation_js``, the orientation of the
gradients (mostly object outlines and the horizon), folded into 0-90 degrees: staircase edges, the jaggies of
an upscaler that keeps the native pixel grid, pile up at 0 and 90 degrees, which the magnitude cannot see.
Scenes differ a lot from each other, so a single video's histogram says little: only pooled histograms are
compared.
"""
from __future__ import annotations

import math

import cv2
import numpy as np
import torch

from scenes import PALETTE, RADIUS, SPEED

TOL = 0.22
MIN_AREA_FRACTION = 0.15
SMALLEST_AREA = 3 * math.sqrt(3) / 4 * RADIUS[0] ** 2  # the smallest triangle, square units
MAX_STEP = 2 * SPEED[1]  # units per frame
COLOUR_BINS = 4
EDGE_BINS = np.linspace(0.0, 0.6, 25)  # luminance change per native unit
ORIENTATION_BINS = 9  # 10 degrees each over 0-90
EDGE_FLOOR = 0.1  # luminance change per native unit from which a gradient counts for the orientation


def detect(frame: np.ndarray, scale: int) -> dict[str, list[tuple[float, float, float]]]:
    """Blobs per palette colour in one frame (H, W, 3) float in [0, 1]: [(area px, cx units, cy units)]."""
    min_area = MIN_AREA_FRACTION * SMALLEST_AREA * scale * scale
    out = {}
    for name, rgb in PALETTE.items():
        mask = (np.abs(frame - np.asarray(rgb, np.float32)).max(-1) < TOL).astype(np.uint8)
        n, _, stats, centroids = cv2.connectedComponentsWithStats(mask, connectivity=8)
        out[name] = [(float(stats[i, cv2.CC_STAT_AREA]), float(centroids[i, 0] + 0.5) / scale,
                      float(centroids[i, 1] + 0.5) / scale)
                     for i in range(1, n) if stats[i, cv2.CC_STAT_AREA] >= min_area]
    return out


def video_objects(video: np.ndarray, scale: int) -> list[dict[str, list]]:
    """detect() for every frame of a (T, H, W, 3) video."""
    return [detect(frame, scale) for frame in video]


def colour_histogram(video: np.ndarray) -> np.ndarray:
    """Joint RGB histogram of a (..., 3) array in [0, 1], normalised."""
    idx = np.clip((video.reshape(-1, 3) * COLOUR_BINS).astype(np.int64), 0, COLOUR_BINS - 1)
    flat = (idx[:, 0] * COLOUR_BINS + idx[:, 1]) * COLOUR_BINS + idx[:, 2]
    h = np.bincount(flat, minlength=COLOUR_BINS ** 3).astype(np.float64)
    return h / h.sum()


def edge_histogram(video: np.ndarray, scale: int) -> np.ndarray:
    """Histogram of the luminance gradient magnitude per native unit of a (T, H, W, 3) video, normalised."""
    lum = video @ np.asarray([0.299, 0.587, 0.114], np.float32)  # (T, H, W)
    gx, gy = np.diff(lum, axis=2)[:, :-1, :], np.diff(lum, axis=1)[:, :, :-1]
    mag = np.sqrt(gx * gx + gy * gy) * scale  # per unit: comparable across scales
    h, _ = np.histogram(np.clip(mag, 0, EDGE_BINS[-1] - 1e-6), bins=EDGE_BINS)
    return h / max(h.sum(), 1)


def orientation_histogram(video: np.ndarray, scale: int) -> np.ndarray:
    """Histogram of the luminance gradient's orientation, folded into 0-90 degrees and weighted by its magnitude,
    over gradients of at least EDGE_FLOOR per unit, of a (T, H, W, 3) video (central differences, so both
    components sit on one pixel), normalised; uniform where the video has no such gradient."""
    lum = video @ np.asarray([0.299, 0.587, 0.114], np.float32)  # (T, H, W)
    gx = (lum[:, 1:-1, 2:] - lum[:, 1:-1, :-2]) / 2
    gy = (lum[:, 2:, 1:-1] - lum[:, :-2, 1:-1]) / 2
    mag = np.sqrt(gx * gx + gy * gy) * scale
    edge = mag >= EDGE_FLOOR
    angle = np.degrees(np.arctan2(np.abs(gy[edge]), np.abs(gx[edge])))
    h, _ = np.histogram(angle, bins=ORIENTATION_BINS, range=(0.0, 90.0), weights=mag[edge])
    return h / h.sum() if h.sum() else np.full(ORIENTATION_BINS, 1 / ORIENTATION_BINS)


def js_divergence(p: np.ndarray, q: np.ndarray) -> float:
    """Jensen-Shannon divergence in bits (0 = same distribution, 1 = disjoint)."""
    m = (p + q) / 2

    def kl(a):
        nz = a > 0
        return float((a[nz] * np.log2(a[nz] / m[nz])).sum())

    return 0.5 * kl(p) + 0.5 * kl(q)


def per_video(video: np.ndarray, scale: int) -> dict[str, float]:
    """The per-video metrics of one (T, H, W, 3) video in [0, 1] rendered / generated at ``scale``."""
    objects = video_objects(video, scale)
    errors, dup, sizes = [], [], []
    for frame in objects:
        counts = {k: len(v) for k, v in frame.items()}
        total = sum(counts.values())
        errors.append(sum(max(0, n - 1) for n in counts.values()) + max(0, 1 - total) + max(0, total - 3))
        dup.append(any(n >= 2 for n in counts.values()))
        sizes += [math.sqrt(max(b[0] for b in blobs)) / scale for blobs in frame.values() if blobs]
    pairs = breaks = 0
    for colour in PALETTE:
        seen = [f[colour] for f in objects]
        if not any(seen):
            continue
        for a, b in zip(seen[:-1], seen[1:]):
            pairs += 1
            if len(a) != 1 or len(b) != 1 or math.dist(a[0][1:], b[0][1:]) > MAX_STEP:
                breaks += 1
    return {"count_error": float(np.mean(errors)), "duplication": float(np.mean(dup)),
            "size": float(np.mean(sizes)) if sizes else float("nan"),
            "continuity": 1 - breaks / pairs if pairs else float("nan")}


FAILURE_KINDS = {  # kind -> what it counts (per frame, or per frame pair of one colour)
    "fragment": "frames in which a colour shows a second blob under a quarter of its largest's area (one object "
                "broken up: its colour strays from the palette inside it)",
    "second_object": "frames in which a colour shows a second blob of at least a quarter of its largest's area (the "
                     "object drawn twice)",
    "no_object": "frames without any object",
    "appears_or_vanishes": "frame pairs in which a colour seen in the video is missing from one or both frames",
    "split": "frame pairs in which a colour seen in both frames is more than one blob in one of them",
    "jump": "frame pairs in which a colour's one blob moves more than MAX_STEP units",
}


PAIR_KINDS = ("appears_or_vanishes", "split", "jump")


def failure_kinds(video: np.ndarray, scale: int) -> dict[str, int]:
    """What the per-video metrics count against one (T, H, W, 3) video, by kind (FAILURE_KINDS), with the
    ``frames`` and the ``colour_pairs`` (consecutive frames of each colour seen) they are counted over:
    duplication and count error come from the frame kinds, continuity's breaks from the pair kinds."""
    objects = video_objects(video, scale)
    kinds = dict.fromkeys(FAILURE_KINDS, 0)
    kinds.update(frames=len(objects), colour_pairs=0)
    for frame in objects:
        for blobs in frame.values():
            if len(blobs) >= 2:
                areas = sorted((b[0] for b in blobs), reverse=True)
                kinds["fragment" if areas[1] < 0.25 * areas[0] else "second_object"] += 1
        kinds["no_object"] += not any(frame.values())
    for colour in PALETTE:
        seen = [f[colour] for f in objects]
        if not any(seen):
            continue
        kinds["colour_pairs"] += len(seen) - 1
        for a, b in zip(seen[:-1], seen[1:]):
            if not a or not b:
                kinds["appears_or_vanishes"] += 1
            elif len(a) != 1 or len(b) != 1:
                kinds["split"] += 1
            elif math.dist(a[0][1:], b[0][1:]) > MAX_STEP:
                kinds["jump"] += 1
    return kinds


def histograms(videos: np.ndarray, scale: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per video of (N, T, H, W, 3): colour, edge and edge orientation histograms, (N, 64), (N, 24) and (N, 9)."""
    return (np.stack([colour_histogram(v) for v in videos]), np.stack([edge_histogram(v, scale) for v in videos]),
            np.stack([orientation_histogram(v, scale) for v in videos]))


def set_distances(videos: np.ndarray, scale: int, reference: dict, boot: int = 50, seed: int = 0) -> dict:
    """colour_js / edge_js / orientation_js of a set of videos against reference_stats(), each as (value,
    bootstrap std)."""
    hists = histograms(videos, scale)
    rng = np.random.default_rng(seed)
    out = {}
    for name, h, ref in (("colour_js", hists[0], reference["colour_hist"]),
                         ("edge_js", hists[1], reference["edge_hist"]),
                         ("orientation_js", hists[2], reference["orientation_hist"])):
        value = js_divergence(h.mean(0), ref)
        draws = [js_divergence(h[rng.integers(0, len(h), len(h))].mean(0), ref) for _ in range(boot)]
        out[name] = (value, float(np.std(draws)))
    return out


def reference_stats(videos: np.ndarray, scale: int) -> dict:
    """Pooled histograms and mean object size of ground-truth videos (N, T, H, W, 3) at ``scale``."""
    colour, edge, orientation = histograms(videos, scale)
    still, moving = spectra(videos, scale)
    return {"colour_hist": colour.mean(0), "edge_hist": edge.mean(0), "orientation_hist": orientation.mean(0),
            "spectrum": still.mean(0),
            "flicker": moving.mean(0),
            "size": float(np.nanmean([per_video(v, scale)["size"] for v in videos]))}


def to_numpy(frames: torch.Tensor) -> np.ndarray:
    """(B, T, 3, H, W) tensor -> (B, T, H, W, 3) float32 numpy."""
    return frames.permute(0, 1, 3, 4, 2).float().cpu().numpy()


# --- detail and seams (issue 24) ---------------------------------------------------------------------------
#
# Detail: the luminance power spectrum per radial band, in cycles per *native unit* (comparable across
# scales), pooled over a set's videos, against ground truth's. Real detail has the truth's power in every
# band (ratio 1); blur lowers the high bands, grain raises them. Grain also flickers: it is not carried from
# frame to frame as content is, so the power of frame-to-frame differences in the high bands rises too.
# Seams: luminance steps across the window borders against next to them (1: no seam).

DETAIL_BANDS = (0.0, 0.125, 0.25, 0.5, 1.0, 1.5)  # cycles per native unit; a scale s resolves up to s / 2
HIGH_FROM = 0.25  # bands from here on are "high" for the flicker measure


def _luminance(video: np.ndarray) -> np.ndarray:
    """(T, H, W, 3) -> (T, H, W) float64, each frame's mean removed."""
    lum = video.astype(np.float64) @ np.asarray([0.299, 0.587, 0.114])
    return lum - lum.mean((-2, -1), keepdims=True)


def band_power(frames: np.ndarray, scale: int) -> np.ndarray:
    """Power per DETAIL_BANDS band of (T, H, W) zero-mean frames at ``scale`` pixels per unit; NaN for a
    band above the scale's Nyquist limit (s / 2 cycles per unit). The bands sum to the frames' variance."""
    T, H, W = frames.shape
    power = (np.abs(np.fft.fft2(frames)) ** 2).mean(0) / (H * W) ** 2  # (H, W): sums to the variance
    fy, fx = np.fft.fftfreq(H)[:, None] * scale, np.fft.fftfreq(W)[None, :] * scale  # cycles per unit
    radius = np.sqrt(fx * fx + fy * fy)
    out = []
    for lo, hi in zip(DETAIL_BANDS, DETAIL_BANDS[1:]):
        out.append(float(power[(radius >= lo) & (radius < hi)].sum()) if lo < scale / 2 else float("nan"))
    return np.asarray(out)


def spectra(videos: np.ndarray, scale: int) -> tuple[np.ndarray, np.ndarray]:
    """Per video of (N, T, H, W, 3): band power of the frames and of the frame-to-frame differences,
    each (N, bands)."""
    still, moving = [], []
    for v in videos:
        lum = _luminance(v)
        still.append(band_power(lum, scale))
        moving.append(band_power(np.diff(lum, axis=0), scale) if len(lum) > 1 else np.full(len(still[-1]), np.nan))
    return np.stack(still), np.stack(moving)


def detail(videos: np.ndarray, scale: int, reference: dict) -> dict:
    """A set's spectrum against ground truth's (reference_stats()).

    ``spectrum_ratio``: power per band over the truth's (NaN above what the scale resolves). Sets of
    scenes differ in overall contrast, so the rest compares shapes: each band's ratio over the lowest
    band's. ``detail_error``: mean |log2| of those relative ratios (0: the truth's spectrum; blur and grain
    both raise it); ``hf_log2``: the highest resolved band's (< 0 blur, > 0 grain); ``flicker``: log2 of
    the high bands' share of power in frame-to-frame differences, over the truth's (> 0: detail that does
    not move with the content, as grain does not)."""
    still, moving = spectra(videos, scale)
    ratio = still.mean(0) / reference["spectrum"]
    resolved = ~np.isnan(ratio)
    logs = np.log2(np.maximum(ratio[resolved], 1e-12) / max(ratio[0], 1e-12))
    high = np.asarray([lo >= HIGH_FROM for lo in DETAIL_BANDS[:-1]]) & resolved
    if high.any() and len(videos[0]) > 1:
        share = np.nansum(moving.mean(0)[high]) / max(np.nansum(moving.mean(0)[resolved]), 1e-12)
        truth = np.nansum(reference["flicker"][high]) / max(np.nansum(reference["flicker"][resolved]), 1e-12)
        flick = float(np.log2(max(share, 1e-12) / max(truth, 1e-12)))
    else:
        flick = float("nan")
    return {"spectrum_ratio": [float(r) for r in ratio], "detail_error": float(np.abs(logs[1:]).mean()),
            "hf_log2": float(logs[-1]), "flicker": flick}


SEAM_NEIGHBOURS = 3  # columns / rows on each side of a border that it is compared with
SEAM_CLIP = 0.02  # luminance steps count up to this: seams are small steps; object edges must not dominate


def seam_ratio(video: np.ndarray, cols: list[int], rows: list[int]) -> float:
    """Luminance steps across window borders against their neighbourhood, for a (T, H, W, 3) video
    (seam_parts' on / off; a set pools the parts over its videos: seam_of_set).

    cols / rows: pixel positions b of vertical / horizontal borders (between pixel b - 1 and b). The
    squared luminance step across each border (columns b - 1 -> b, rows likewise), averaged, over the same
    average of the steps 1-3 pixels to either side of it: content is about the same there, so a value near 1
    means no seam and a seam raises it (steps are clipped at SEAM_CLIP: on ground truth a border then
    measures 0.92-0.93 of its neighbourhood, a 0.02 brightness step along it 2.4-2.6). NaN without borders."""
    on, off = seam_parts(video, cols, rows)
    return on / max(off, 1e-12) if not math.isnan(on) else float("nan")


def seam_parts(video: np.ndarray, cols: list[int], rows: list[int]) -> tuple[float, float]:
    """(mean luminance step across the borders, the same 1-3 pixels beside them), each step clipped at
    SEAM_CLIP; NaNs without borders. See seam_ratio."""
    lum = video.astype(np.float64) @ np.asarray([0.299, 0.587, 0.114])  # (T, H, W)
    gx = np.minimum(np.abs(np.diff(lum, axis=2)), SEAM_CLIP)  # (T, H, W - 1): index c - 1: column c - 1 -> c
    gy = np.minimum(np.abs(np.diff(lum, axis=1)), SEAM_CLIP)  # (T, H - 1, W)
    on, off = [], []
    for g, borders, axis in ((gx, cols, 2), (gy, rows, 1)):
        n = g.shape[axis]
        for b in borders:
            if not 0 < b <= n:
                continue
            on.append(np.take(g, b - 1, axis=axis).mean())
            near = [b - 1 + d for d in range(-SEAM_NEIGHBOURS, SEAM_NEIGHBOURS + 1) if d and 0 <= b - 1 + d < n]
            off.append(np.take(g, near, axis=axis).mean())
    if not on:
        return float("nan"), float("nan")
    return float(np.mean(on)), float(np.mean(off))


def seam_of_set(videos: np.ndarray, cols: list[int], rows: list[int], boot: int = 50, seed: int = 0) -> tuple:
    """The seam ratio of a set of (N, T, H, W, 3) videos, pooled (sum of on over sum of off: a single
    video's borders seldom cross an edge), and its bootstrap std over the videos."""
    parts = np.asarray([seam_parts(v, cols, rows) for v in videos])  # (N, 2)
    if np.isnan(parts).any():
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    draws = [parts[i, 0].sum() / max(parts[i, 1].sum(), 1e-12)
             for i in (rng.integers(0, len(parts), len(parts)) for _ in range(boot))]
    return float(parts[:, 0].sum() / max(parts[:, 1].sum(), 1e-12)), float(np.std(draws))


def lanczos_sharpen(frames: torch.Tensor, scale: int, amount: float = 0.5, sigma: float = 0.5) -> torch.Tensor:
    """The upscaler chain users run instead of native high resolution: Lanczos (OpenCV's 8 x 8 kernel) to
    ``scale`` times the size, then an unsharp mask, out + amount * (out - gaussian(out, sigma * scale px)).
    (N, T, 3, H, W) in [0, 1] -> (N, T, 3, scale H, scale W) in [0, 1]."""
    n, t, c, h, w = frames.shape
    out = np.empty((n * t, scale * h, scale * w, c), np.float32)
    for i, img in enumerate(frames.flatten(0, 1).permute(0, 2, 3, 1).float().cpu().numpy()):
        big = cv2.resize(img, (scale * w, scale * h), interpolation=cv2.INTER_LANCZOS4)
        soft = cv2.GaussianBlur(big, (0, 0), sigma * scale)
        out[i] = np.clip(big + amount * (big - soft), 0, 1)
    return torch.from_numpy(out).permute(0, 3, 1, 2).unflatten(0, (n, t))
