"""Proxy-guided attention (AtlaVid's asymmetric global-local attention, HPDM's coarse-to-fine context).

A *proxy* is a native-size version of the video: a token grid (T', H', W') no larger than the video
grid (T, H, W) on any axis, e.g. a first 720p pass (possibly at a lower frame rate) guiding a 4K pass.
Per block:

- proxy queries attend to proxy keys only: full attention at the model's own size (in distribution);
- each window of the video attends to its own keys plus the keys / values of the proxy tokens it
  sees (all of them, or the proxy cells under the window plus a margin, which bounds the cost at 4K);
- the proxy never looks at video tokens (asymmetric).

Positions: a proxy cell covers a box of the video grid; its RoPE position is that box's centre in
video token coordinates (position interpolation), see :func:`proxy_positions` and ``rope.rope_freqs``.

Strength s in [0, 1] blends two attention outputs per window query::

    out = (1 - s) * attn(q, [k_own; k_ext]) + s * attn(q, [k_own; k_ext; k_proxy])

(k_ext: optional keys every window shares, e.g. a reference frame). s = 0 is the unguided windowed
attention bit for bit (the proxy keys are skipped: the same code path); s = 1 is the joint softmax
over own and proxy keys, one batched call per window shape; 0 < s < 1 adds a call over the own keys.
Per query the attention weights are the convex blend of the two softmax distributions. A log(s)
bias on the proxy logits would be the other clean choice, but a constant per-key bias cannot pass
through a (q, k, v) attention callable without a mask (slow kernels) or the softmax normaliser
(which ComfyUI's ``optimized_attention`` does not return), so it would cost as much or more.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from functools import cached_property
from typing import Sequence

import torch

from .dual_branch import AttentionFn, Projector, _as_projector
from .streamed import ProxyKeys, streamed_window_attention
from .windows import Grid, WindowLayout

ALIGNMENTS = ("centres", "ends", "causal")
# Wan's VAE is causal in time (the first latent frame is the lone first frame), cells elsewhere
DEFAULT_ALIGN = ("causal", "centres", "centres")
MODES = ("all", "neighbourhood")
_HALF = Fraction(1, 2)


def axis_cells(size: int, cells: int, align: str) -> tuple[tuple[Fraction, Fraction, Fraction], ...]:
    """Per proxy cell j of an axis: (position, footprint start, footprint end) in video token coordinates.

    Video token i sits at position i and spans [i - 1/2, i + 1/2). ``align`` says how ``cells`` proxy
    cells lie on ``size`` video tokens:
      centres: cells of equal width size/cells tile the axis; each sits at its centre,
        (j + 1/2) * size / cells - 1/2 (align_corners=False; the spatial choice).
      ends: first and last cells on the first and last tokens, j * r with r = (size-1)/(cells-1)
        (align_corners=True: a frame rate r times lower, RoPE positions scaled by r).
      causal: cell 0 on token 0 alone, cell j >= 1 on tokens (j-1)*r + 1 .. j*r and at their centre
        j*r - (r-1)/2 (Wan's causal VAE: the first latent frame holds one frame, the others four).
    A single cell spans the whole axis (at (size-1)/2 for centres, else at 0). With cells == size,
    every alignment puts cell j on token j exactly.
    """
    if align not in ALIGNMENTS:
        raise ValueError(f"proxy alignment must be one of {ALIGNMENTS}, got {align!r}.")
    if not 1 <= cells <= size:
        raise ValueError(f"a proxy axis needs 1 <= cells <= video size, got {cells} cells on {size} tokens: "
                         "a proxy is at most as large as the video on every axis.")
    if cells == 1:
        pos = Fraction(size - 1, 2) if align == "centres" else Fraction(0)
        return ((pos, -_HALF, size - _HALF),)
    out = []
    for j in range(cells):
        if align == "centres":
            width = Fraction(size, cells)
            pos = (j + _HALF) * width - _HALF
        elif align == "ends" or j > 0:
            width = Fraction(size - 1, cells - 1)  # r
            pos = j * width if align == "ends" else j * width - (width - 1) / 2
        else:  # causal, cell 0
            pos, width = Fraction(0), Fraction(1)
        out.append((pos, pos - width / 2, pos + width / 2))
    return tuple(out)


def proxy_positions(video_grid: Grid, proxy_grid: Grid, align: tuple[str, str, str] = DEFAULT_ALIGN,
                    scale: tuple[float, float, float] = (1.0, 1.0, 1.0),
                    shift: tuple[float, float, float] = (0.0, 0.0, 0.0),
                    device: torch.device | str = "cpu") -> torch.Tensor:
    """(t, h, w) positions of the proxy tokens on the video grid: (T'*H'*W', 3) float64, row-major.

    Position u of a proxy cell (see :func:`axis_cells`), mapped as ``shift + scale * u`` per axis: the
    video token i has position ``shift + scale * i`` when ComfyUI's ``rope_options`` (scale_t / y / x,
    shift_t / y / x) are set, and (0, 1) otherwise. Feed the result to ``rope.rope_freqs``.
    """
    axes = []
    for n, m, a, sc, sh in zip(video_grid, proxy_grid, align, scale, shift):
        u = torch.tensor([float(p) for p, _, _ in axis_cells(n, m, a)], dtype=torch.float64)
        axes.append(sh + sc * u)
    t, h, w = torch.meshgrid(*axes, indexing="ij")  # each (T', H', W')
    return torch.stack((t, h, w), dim=-1).reshape(-1, 3).to(device)  # (T'*H'*W', 3)


def _axis_boxes(tiling, cells: int, align: str, radius: int, everything: bool) -> tuple[tuple[int, int], ...]:
    """Per window of one axis: (first proxy cell, cell count) it sees.

    The cells whose footprint meets the window's extent [start - 1/2, start + length - 1/2), plus
    ``radius`` cells each side; all windows of one length get the same count (the largest need,
    at most ``cells``), the box widened symmetrically and clamped inward at the borders (as windows
    are), so a group of equal windows sees equal proxy counts: one batched call, no mask.
    """
    if everything:
        return tuple((0, cells) for _ in tiling.window_starts)
    foot = axis_cells(tiling.size, cells, align)
    spans = []
    for start, length in zip(tiling.window_starts, tiling.window_lengths):
        lo, hi = start - _HALF, start + length - _HALF
        under = [j for j, (_, a, b) in enumerate(foot) if a < hi and lo < b]  # contiguous, never empty
        spans.append((under[0], under[-1] + 1))
    need: dict[int, int] = {}
    for (a, b), length in zip(spans, tiling.window_lengths):
        need[length] = min(cells, max(need.get(length, 0), b - a + 2 * radius))
    boxes = []
    for (a, b), length in zip(spans, tiling.window_lengths):
        count = need[length]
        boxes.append((min(max(a - (count - (b - a)) // 2, 0), cells - count), count))
    return tuple(boxes)


@dataclass(frozen=True)
class ProxyLayout:
    """Which proxy tokens each window of ``layout`` sees: a box of proxy cells per window.

    mode: "all" (every proxy token; P = T'*H'*W' keys more per window) or "neighbourhood" (the cells
        under the window's extent plus ``radius`` cells per axis, see :func:`_axis_boxes`).
    radius: int or (t, h, w) margin in proxy cells (neighbourhood only).
    align: per axis, how the proxy lies on the video grid (see :func:`axis_cells`); use the same in
        :func:`proxy_positions`.
    Windows of one shape (a group of ``layout.groups``) see the same number of proxy keys.
    """

    layout: WindowLayout
    proxy_grid: Grid
    mode: str = "neighbourhood"
    radius: int | tuple[int, int, int] = 1
    align: tuple[str, str, str] = DEFAULT_ALIGN

    def __post_init__(self):
        if self.mode not in MODES:
            raise ValueError(f"proxy mode must be one of {MODES}, got {self.mode!r}.")
        radius = (self.radius,) * 3 if isinstance(self.radius, int) else tuple(self.radius)
        if len(radius) != 3 or any(not isinstance(r, int) or r < 0 for r in radius):
            raise ValueError(f"proxy radius must be an int >= 0 or three of them, got {self.radius!r}.")
        object.__setattr__(self, "radius", radius)
        object.__setattr__(self, "proxy_grid", tuple(int(n) for n in self.proxy_grid))
        object.__setattr__(self, "align", tuple(self.align))
        if len(self.proxy_grid) != 3 or len(self.align) != 3:
            raise ValueError(f"proxy_grid and align need three entries (t, h, w), got {self.proxy_grid}, {self.align}.")
        for n, m, a in zip(self.layout.grid, self.proxy_grid, self.align):
            axis_cells(n, m, a)  # validates sizes and alignment

    @property
    def proxy_tokens(self) -> int:
        return math.prod(self.proxy_grid)

    @cached_property
    def boxes(self) -> tuple[tuple[tuple[int, int], ...], ...]:
        """Per axis, per window index on that axis: (first proxy cell, count)."""
        return tuple(_axis_boxes(tiling, m, a, r, self.mode == "all")
                     for tiling, m, a, r in zip(self.layout.axes, self.proxy_grid, self.align, self.radius))

    @property
    def covers_all(self) -> bool:
        """True when every window sees the whole proxy (in token order)."""
        return all(box == (0, m) for axis, m in zip(self.boxes, self.proxy_grid) for box in axis)

    def window_cells(self, window: tuple[int, int, int]) -> tuple[range, range, range]:
        """The proxy cells (t, h, w ranges) seen by the window with per-axis indices ``window``."""
        return tuple(range(s, s + c) for s, c in (axis[i] for axis, i in zip(self.boxes, window)))  # type: ignore

    @cached_property
    def keys_per_group(self) -> tuple[int, ...]:
        """Proxy keys each window of group g of ``layout.groups`` sees."""
        return tuple(math.prod(len(r) for r in self.window_cells(windows[0])) for _, windows in self.layout.groups)

    def describe(self) -> str:
        parts = ", ".join(f"{len(w)} of {'x'.join(map(str, s))} see {p}"
                          for (s, w), p in zip(self.layout.groups, self.keys_per_group))
        how = "all" if self.mode == "all" else f"neighbourhood r={self.radius}"
        return f"proxy {'x'.join(map(str, self.proxy_grid))} ({how}): windows {parts} proxy keys"

    def gather_indices(self, device: torch.device | str = "cpu") -> list[torch.Tensor]:
        """Per group: the flat proxy token index of every proxy key slot, window-major, (count_g * P_g,)."""
        key = str(torch.device(device))
        if key not in self._device_copies:
            self._device_copies[key] = [t.to(device) for t in self._indices]
        return self._device_copies[key]

    @cached_property
    def _device_copies(self) -> dict:
        return {}

    @cached_property
    def _indices(self) -> list[torch.Tensor]:
        _, Hp, Wp = self.proxy_grid
        gathers = []
        for _, windows in self.layout.groups:
            parts = []
            for window in windows:
                rt, rh, rw = (torch.arange(r.start, r.stop) for r in self.window_cells(window))
                parts.append(((rt[:, None, None] * Hp + rh[None, :, None]) * Wp + rw[None, None, :]).reshape(-1))
            gathers.append(torch.cat(parts))
        return gathers


def proxy_guided_attention(qkv: Sequence[torch.Tensor] | Projector, layout: WindowLayout, attention: AttentionFn,
                           proxy_qkv: Sequence[torch.Tensor | None], proxy_layout: ProxyLayout, strength: float,
                           shared_kv: Sequence[torch.Tensor] | None = None
                           ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Windows attend to their own keys plus their proxy keys; the proxy attends to itself only.

    qkv: video q, k, v, each (B, T*H*W, C) (RoPE at the video grid applied), or a projector.
    layout: the window layout of the video grid (T, H, W).
    attention: (q, k, v) -> out, each (B', L, C) / (B', Lk, C) -> (B', L, C); called once per window
        shape (queries L = window tokens, keys L + E + P_g), once more per shape when 0 < s < 1, and
        once for the proxy's own attention.
    proxy_qkv: proxy q, k, v, each (B, T'*H'*W', C) (RoPE at :func:`proxy_positions`); q may be None
        (no proxy output, e.g. when the proxy's own pass runs elsewhere).
    proxy_layout: a :class:`ProxyLayout` of ``layout``.
    strength: s in [0, 1], see the module docstring (0: unguided, bit for bit).
    shared_kv: optional (k, v), each (B, E, C), every window attends to besides its own tokens.
    Returns the video output (B, T*H*W, C) in token order and the proxy output (B, T'*H'*W', C) or None.
    """
    if not 0.0 <= strength <= 1.0:
        raise ValueError(f"proxy strength must be in [0, 1], got {strength}.")
    if proxy_layout.layout != layout:
        raise ValueError(f"proxy_layout was made for the window layout {proxy_layout.layout.describe()}, "
                         f"not {layout.describe()}: build it from the layout of this call.")
    qp, kp, vp = proxy_qkv
    if kp.shape[1] != proxy_layout.proxy_tokens or vp.shape != kp.shape:
        raise ValueError(f"proxy keys / values {tuple(kp.shape)} / {tuple(vp.shape)} do not hold the proxy grid "
                         f"{proxy_layout.proxy_grid} ({proxy_layout.proxy_tokens} tokens).")
    proxy_out = attention(qp, kp, vp) if qp is not None else None  # (B, P, C)
    q, k, v = (_as_projector(qkv)(i) for i in range(3))  # each (B, T*H*W, C)
    B, N, C = q.shape
    if N != math.prod(layout.grid):
        raise ValueError(f"proxy_guided_attention: {N} tokens do not match the grid {layout.grid}.")
    if kp.shape[0] != B or kp.shape[2] != C:
        raise ValueError(f"proxy keys {tuple(kp.shape)} do not match the video's batch {B} and channels {C}: "
                         "give every batch item (cond, uncond) its own proxy.")
    # every window in one call per window shape: the streamed op with a chunk of the whole grid
    out = torch.empty_like(q)
    streamed_window_attention(lambda tokens: [t.index_select(1, tokens) for t in (q, k, v)], layout, attention,
                              out, N, shared_kv, ProxyKeys(kp, vp, proxy_layout, strength))
    return out, proxy_out  # (B, N, C), (B, P, C) or None
