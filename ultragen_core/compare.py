"""Compare two videos: align them, lay them out side by side or as a split wipe, and measure them.

Videos are ComfyUI IMAGE batches: float tensors (F, H, W, C) in 0..1, C = 3 (a 4th alpha channel is
dropped). Metrics use OpenCV on one frame at a time (memory stays at a few frames):

- sharpness: variance of the Laplacian of the luma in 8-bit units (higher = more fine detail);
- high-frequency energy: share of the luma variance that a Gaussian low-pass (sigma 1.5 px) removes;
- flicker: for each pair of consecutive frames, Farneback optical flow from frame t to t-1, frame t-1
  warped onto frame t, mean absolute error in 8-bit levels (lower = steadier), on frames scaled so that
  their long side is at most ``flow_max_side``;
- PSNR (dB, inf for identical frames) and SSIM (Wang et al. 2004, Gaussian 11x11, sigma 1.5, on luma)
  between the aligned videos.

A frame with NaN or infinite pixels (e.g. from a NaN latent) is unusable: it is left out of every metric
that needs it, and the report lists such frames per video.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import cv2
import numpy as np
import torch
import torch.nn.functional as F

SIZE_MODES = ("first", "second", "larger", "smaller")
LENGTH_MODES = ("trim", "stretch")
LAYOUTS = ("side_by_side", "split_wipe", "stacked")


def _rgb(video: torch.Tensor, name: str) -> torch.Tensor:
    if video.ndim != 4 or video.shape[-1] not in (1, 3, 4):
        raise ValueError(f"{name} must be an IMAGE batch (frames, height, width, channels), got shape "
                         f"{tuple(video.shape)}. Connect a decoded video (IMAGE).")
    if 0 in video.shape[:3]:
        raise ValueError(f"{name} is empty (shape {tuple(video.shape)}: {video.shape[0]} frames of "
                         f"{video.shape[2]}x{video.shape[1]} px): there is nothing to compare. Connect a video with "
                         "at least one frame.")
    if video.shape[-1] == 1:
        return video.expand(-1, -1, -1, 3)
    return video[..., :3]


def _resize(video: torch.Tensor, size: tuple[int, int], chunk: int = 8) -> torch.Tensor:
    """(F, H, W, 3) -> (F, h, w, 3), bicubic with antialiasing, chunked over frames."""
    if tuple(video.shape[1:3]) == size:
        return video
    out = torch.empty((video.shape[0], *size, 3), dtype=video.dtype)
    for i in range(0, video.shape[0], chunk):
        x = video[i:i + chunk].movedim(-1, 1).float()  # (f, 3, H, W)
        y = F.interpolate(x, size=size, mode="bicubic", antialias=True, align_corners=False)
        y = torch.where(torch.isfinite(y), y.clamp(0, 1), y)  # NaN / inf stay visible as unusable
        out[i:i + chunk] = y.movedim(1, -1).to(video.dtype)
    return out


def align(a: torch.Tensor, b: torch.Tensor, size_mode: str = "first", length_mode: str = "trim"):
    """Bring both videos to one size and one length.

    size_mode: which video's size both take ("larger" / "smaller" by pixel count).
    length_mode: "trim" drops the extra frames of the longer video; "stretch" resamples the second video
    to the first one's length by nearest frame (for clips rendered at different frame rates).
    Returns (a, b) as (F, H, W, 3) tensors on the CPU.
    """
    if size_mode not in SIZE_MODES:
        raise ValueError(f"size_mode must be one of {SIZE_MODES}, got {size_mode!r}.")
    if length_mode not in LENGTH_MODES:
        raise ValueError(f"length_mode must be one of {LENGTH_MODES}, got {length_mode!r}.")
    a, b = _rgb(a, "video_a").cpu().float(), _rgb(b, "video_b").cpu().float()
    if length_mode == "trim":
        n = min(a.shape[0], b.shape[0])
        a, b = a[:n], b[:n]
    elif b.shape[0] != a.shape[0]:
        idx = torch.clamp(((torch.arange(a.shape[0]) + 0.5) * b.shape[0] / a.shape[0]).long(), max=b.shape[0] - 1)
        b = b[idx]
    sa, sb = tuple(a.shape[1:3]), tuple(b.shape[1:3])
    target = {"first": sa, "second": sb,
              "larger": sa if sa[0] * sa[1] >= sb[0] * sb[1] else sb,
              "smaller": sa if sa[0] * sa[1] <= sb[0] * sb[1] else sb}[size_mode]
    return _resize(a, target), _resize(b, target)


def _label(frame: np.ndarray, text: str, right: bool) -> None:
    """Draw ``text`` (white, black outline) into a float RGB frame, in place, at the top left / right."""
    if not text:
        return
    h, w = frame.shape[:2]
    scale = max(0.4, h / 720)
    thick = max(1, round(scale * 2))
    (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thick + 2)
    bw, bh = min(w, tw + 8), min(h, th + base + 8)
    mask = np.zeros((bh, bw), np.uint8)  # OpenCV draws text into 8-bit images only
    org = (4, th + 4)
    cv2.putText(mask, text, org, cv2.FONT_HERSHEY_SIMPLEX, scale, 1, thick + 2, cv2.LINE_AA)
    cv2.putText(mask, text, org, cv2.FONT_HERSHEY_SIMPLEX, scale, 2, thick, cv2.LINE_8)
    x0 = max(0, w - bw - 6) if right else min(6, w - bw)
    y0 = min(6, h - bh)
    region = frame[y0:y0 + bh, x0:x0 + bw]
    region[mask == 1] = 0.0
    region[mask == 2] = 1.0


def wipe_position(i: int, n: int) -> float:
    """Split position (0..1 of the width) of frame i in a split wipe: one sweep left to right and back."""
    if n <= 1:
        return 0.5
    phase = i / (n - 1)  # 0..1
    return 0.05 + 0.9 * (1 - abs(2 * phase - 1))


def compose(a: torch.Tensor, b: torch.Tensor, layout: str = "side_by_side", label_a: str = "A",
            label_b: str = "B") -> torch.Tensor:
    """One video from two aligned ones, (F, H, W, 3) each.

    side_by_side: (F, H, 2W, 3); stacked: (F, 2H, W, 3); split_wipe: (F, H, W, 3) with A left of a moving
    split line and B right of it.
    """
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}.")
    if a.shape != b.shape:
        raise ValueError(f"compose needs aligned videos, got {tuple(a.shape)} and {tuple(b.shape)}; call align().")
    n, h, w, _ = a.shape
    if layout == "side_by_side":
        out = torch.cat([a, b], dim=2)
    elif layout == "stacked":
        out = torch.cat([a, b], dim=1)
    else:
        out = b.clone()
        line = max(1, w // 400)
        for i in range(n):
            x = round(wipe_position(i, n) * w)
            out[i, :, :x] = a[i, :, :x]
            out[i, :, max(0, x - line // 2 - 1):min(w, x + line // 2 + 1)] = 1.0
    if label_a or label_b:
        for i in range(n):
            frame = out[i].numpy()  # shares memory: labels are drawn in place
            if layout == "stacked":
                _label(frame[:h], label_a, right=False)
                _label(frame[h:], label_b, right=False)
            else:
                _label(frame, label_a, right=False)
                _label(frame, label_b, right=True)
    return out


def _luma(frame: torch.Tensor) -> np.ndarray:
    """(H, W, 3) in 0..1 -> (H, W) float64 luma in 0..1."""
    return cv2.cvtColor(np.ascontiguousarray(frame.numpy(), dtype=np.float32), cv2.COLOR_RGB2GRAY).astype(np.float64)


def sharpness(gray: np.ndarray) -> float:
    """Variance of the Laplacian of a luma frame, in 8-bit units."""
    return float(cv2.Laplacian(gray * 255.0, cv2.CV_64F, ksize=3).var())


def high_frequency_energy(gray: np.ndarray, sigma: float = 1.5) -> float:
    """Share (0..1) of the frame's variance above a Gaussian low-pass of ``sigma`` pixels."""
    total = gray.var()
    if total <= 1e-12:
        return 0.0
    high = gray - cv2.GaussianBlur(gray, (0, 0), sigma, borderType=cv2.BORDER_REFLECT)
    return float(min(1.0, (high ** 2).mean() / total))


def psnr(x: np.ndarray, y: np.ndarray) -> float:
    """PSNR in dB of two frames in 0..1; inf when they are identical."""
    mse = float(np.mean((x.astype(np.float64) - y.astype(np.float64)) ** 2))
    if not math.isfinite(mse):
        raise ValueError("psnr needs finite pixels: a frame holds NaN or infinite values.")
    return math.inf if mse == 0.0 else 10.0 * math.log10(1.0 / mse)


def ssim(x: np.ndarray, y: np.ndarray) -> float:
    """Mean SSIM of two luma frames in 0..1 (Gaussian window 11x11, sigma 1.5)."""
    c1, c2 = 0.01 ** 2, 0.03 ** 2

    def blur(z):
        return cv2.GaussianBlur(z, (11, 11), 1.5, borderType=cv2.BORDER_REFLECT)

    mx, my = blur(x), blur(y)
    vx, vy, cxy = blur(x * x) - mx * mx, blur(y * y) - my * my, blur(x * y) - mx * my
    num = (2 * mx * my + c1) * (2 * cxy + c2)
    den = (mx * mx + my * my + c1) * (vx + vy + c2)
    return float(np.mean(num / den))


def _flow_frame(frame: torch.Tensor, max_side: int) -> np.ndarray:
    """(H, W, 3) in 0..1 -> float32 RGB 0..255, scaled so the long side is at most max_side (0 = keep)."""
    img = np.ascontiguousarray(frame.numpy(), dtype=np.float32) * 255.0
    h, w = img.shape[:2]
    if max_side and max(h, w) > max_side:
        s = max_side / max(h, w)
        img = cv2.resize(img, (max(8, round(w * s)), max(8, round(h * s))), interpolation=cv2.INTER_AREA)
    return img


def warp_error(prev: np.ndarray, cur: np.ndarray) -> float:
    """Mean absolute error (8-bit levels) between ``cur`` and ``prev`` warped onto it by optical flow."""
    g0 = cv2.cvtColor(prev, cv2.COLOR_RGB2GRAY).astype(np.uint8)
    g1 = cv2.cvtColor(cur, cv2.COLOR_RGB2GRAY).astype(np.uint8)
    # flow[y, x] = where pixel (x, y) of cur sits in prev
    flow = cv2.calcOpticalFlowFarneback(g1, g0, None, 0.5, 3, 15, 3, 5, 1.2, 0)
    h, w = g1.shape
    gx, gy = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    warped = cv2.remap(prev, gx + flow[..., 0], gy + flow[..., 1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    return float(np.mean(np.abs(warped - cur)))


@dataclass
class VideoStats:
    sharpness: list[float] = field(default_factory=list)
    hf_energy: list[float] = field(default_factory=list)
    flicker: list[float] = field(default_factory=list)  # one per consecutive pair


@dataclass
class Cost:
    """What producing one branch took; 0 = not given."""
    seconds: float = 0.0
    peak_vram_gb: float = 0.0


@dataclass
class Comparison:
    labels: tuple[str, str]
    sources: tuple[tuple[int, int, int], tuple[int, int, int]]  # (frames, height, width) before alignment
    size: tuple[int, int, int]  # (frames, height, width) compared
    a: VideoStats
    b: VideoStats
    psnr: list[float]  # NaN where a frame of either video is unusable
    ssim: list[float]
    costs: tuple[Cost, Cost] = (Cost(), Cost())
    unusable: tuple[tuple[int, ...], tuple[int, ...]] = ((), ())  # frames with NaN / inf pixels, per video

    def report(self) -> str:
        la, lb = self.labels
        (fa, ha, wa), (fb, hb, wb) = self.sources
        n, h, w = self.size

        def known(v):
            return [x for x in v if not math.isnan(x)]

        def mean(v):
            v = known(v)
            return sum(v) / len(v) if v else float("nan")

        def row(name, x, y, unit=""):
            return f"{name:<28}{x:>14}{y:>14}  {unit}"

        def num(v, fmt="{:.4g}"):
            return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else fmt.format(v)

        lines = [f"UltraGen Compare: A = {la} ({wa}x{ha}, {fa} frames), B = {lb} ({wb}x{hb}, {fb} frames)",
                 f"compared at {w}x{h}, {n} frames"]
        if any(self.unusable):
            listed = [", ".join(map(str, frames)) or "none" for frames in self.unusable]
            lines.append(f"unusable frames (NaN or infinite pixels, left out of every metric): A: {listed[0]}; "
                         f"B: {listed[1]}")
        lines += [row("", "A", "B"),
                  row("sharpness (Laplacian var)", num(mean(self.a.sharpness)), num(mean(self.b.sharpness)),
                      "higher = more fine detail"),
                  row("high-frequency energy", num(mean(self.a.hf_energy), "{:.4f}"),
                      num(mean(self.b.hf_energy), "{:.4f}"), "share of variance above sigma 1.5 px"),
                  row("flicker (flow warp error)", num(mean(self.a.flicker), "{:.3f}"),
                      num(mean(self.b.flicker), "{:.3f}"), "8-bit levels, lower = steadier")]
        ca, cb = self.costs
        if ca.seconds or cb.seconds:
            lines.append(row("wall time", num(ca.seconds or None, "{:.1f} s"), num(cb.seconds or None, "{:.1f} s")))
        if ca.peak_vram_gb or cb.peak_vram_gb:
            lines.append(row("peak VRAM", num(ca.peak_vram_gb or None, "{:.1f} GB"),
                             num(cb.peak_vram_gb or None, "{:.1f} GB")))
        psnrs, ssims = known(self.psnr), known(self.ssim)
        finite = [p for p in psnrs if math.isfinite(p)]
        p_mean = mean(finite) if finite else (math.inf if psnrs else float("nan"))  # identical frames: inf
        lines.append(f"A vs B: PSNR mean {num(p_mean, '{:.2f}')} dB (min {num(min(psnrs, default=None), '{:.2f}')}), "
                     f"SSIM mean {num(mean(ssims), '{:.4f}')} (min {num(min(ssims, default=None), '{:.4f}')})")
        if len(finite) not in (0, len(psnrs)):
            lines.append(f"  ({len(psnrs) - len(finite)} identical frames with infinite PSNR left out of the mean)")
        lines.append("")
        lines.append(f"{'frame':>5} {'sharp A':>9} {'sharp B':>9} {'flick A':>8} {'flick B':>8} {'PSNR':>7} {'SSIM':>7}")
        for i in range(n):
            fl_a = num(self.a.flicker[i - 1], "{:.2f}") if i else "-"
            fl_b = num(self.b.flicker[i - 1], "{:.2f}") if i else "-"
            lines.append(f"{i:>5} {num(self.a.sharpness[i], '{:.2f}'):>9} {num(self.b.sharpness[i], '{:.2f}'):>9} "
                         f"{fl_a:>8} {fl_b:>8} {num(self.psnr[i], '{:.2f}'):>7} {num(self.ssim[i], '{:.4f}'):>7}")
        return "\n".join(lines)


def usable_frames(video: torch.Tensor) -> list[bool]:
    """Per frame of (F, H, W, C): True when every pixel is finite."""
    return torch.isfinite(video).flatten(1).all(1).tolist()


def measure(a: torch.Tensor, b: torch.Tensor, labels: tuple[str, str] = ("A", "B"),
            sources: tuple | None = None, costs: tuple[Cost, Cost] = (Cost(), Cost()),
            flow_max_side: int = 512, on_frame: Callable[[], None] | None = None) -> Comparison:
    """Metrics of two aligned videos (F, H, W, 3); ``on_frame`` is called once per frame (progress).
    A metric that needs an unusable frame (NaN / inf pixels) is NaN there."""
    if a.shape != b.shape:
        raise ValueError(f"measure needs aligned videos, got {tuple(a.shape)} and {tuple(b.shape)}; call align().")
    n, h, w, _ = a.shape
    nan = float("nan")
    usable = (usable_frames(a), usable_frames(b))
    stats = (VideoStats(), VideoStats())
    p_list, s_list = [], []
    prev = (None, None)
    for i in range(n):
        lumas, cur = [], []
        for video, st, pv, ok in zip((a, b), stats, prev, usable):
            if not ok[i]:
                st.sharpness.append(nan)
                st.hf_energy.append(nan)
                if i:
                    st.flicker.append(nan)
                lumas.append(None)
                cur.append(None)
                continue
            g = _luma(video[i])
            lumas.append(g)
            st.sharpness.append(sharpness(g))
            st.hf_energy.append(high_frequency_energy(g))
            f = _flow_frame(video[i], flow_max_side)
            if i:
                st.flicker.append(nan if pv is None else warp_error(pv, f))
            cur.append(f)
        prev = tuple(cur)
        if usable[0][i] and usable[1][i]:
            identical = torch.equal(a[i], b[i])
            p_list.append(math.inf if identical else psnr(a[i].numpy(), b[i].numpy()))
            s_list.append(1.0 if identical else ssim(*lumas))
        else:
            p_list.append(nan)
            s_list.append(nan)
        if on_frame is not None:
            on_frame()
    sources = sources or ((n, h, w), (n, h, w))
    unusable = tuple(tuple(i for i, ok in enumerate(u) if not ok) for u in usable)
    return Comparison(labels, sources, (n, h, w), stats[0], stats[1], p_list, s_list, costs, unusable)


def compare(a: torch.Tensor, b: torch.Tensor, layout: str = "side_by_side", size_mode: str = "first",
            length_mode: str = "trim", labels: tuple[str, str] = ("A", "B"), costs: tuple[Cost, Cost] = (Cost(), Cost()),
            flow_max_side: int = 512, on_frame: Callable[[], None] | None = None) -> tuple[torch.Tensor, Comparison]:
    """Align, measure and compose: (comparison video, metrics)."""
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}.")
    for branch, cost in zip("ab", costs):
        for name, value in ((f"wall_time_{branch}", cost.seconds), (f"peak_vram_{branch}", cost.peak_vram_gb)):
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be a finite number >= 0 (0 = not given), got {value}: type the "
                                 "measured value from the console, or 0.")
    if flow_max_side < 0:
        raise ValueError(f"flow_max_side must be >= 0 (0 = full size), got {flow_max_side}.")
    sources = tuple((v.shape[0], v.shape[1], v.shape[2]) for v in (a, b))
    a, b = align(a, b, size_mode, length_mode)
    result = measure(a, b, labels, sources, costs, flow_max_side, on_frame)
    return compose(a, b, layout, *labels), result
