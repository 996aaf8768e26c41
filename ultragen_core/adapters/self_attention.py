"""The patched self-attention of one call, written once for every family: the shifted windows over the video
grid, the global branch over pooled video tokens, their fusion, and the tokens that are not video (text,
reference frames, guide tokens, context latents), which every window shares.

A family's patch finds the video span in its sequence and how its module computes q / k / v with positions
(RoPE) applied; this module does the rest:

    video = VideoTokens(x_video, project)       # x: (B, N, C) input of the grid tokens; project: see below
    shared_out = dual_branch_self_attention(plan, block_index, video, attention, out, rows,
                                            shared_qkv=(q_e, k_e, v_e), cache=call.cache)

What each token attends to:
- a video token: the tokens of its window, then every shared token (after the window's own keys, as
  :func:`..attention.streamed.streamed_window_attention` lays them out), then (proxy guidance) its proxy
  neighbourhood; the global branch's output over the pooled video is fused in (band / gate);
- a shared token: every shared token, plus the pooled video tokens when the plan has a global branch, so
  text conditioning stays global without a full-size attention.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

import torch

from ..attention.dual_branch import AttentionFn, fuse
from ..attention.global_branch import pool_tokens, pooled_positions
from ..attention.streamed import ProxyKeys, streamed_window_attention
from ..config import DualBranchPlan

# (x rows (B, n, C), the grid-token index of each row (n,)) -> q, k, v of those rows, each (B, n, heads*head_dim),
# with the positions of those grid tokens applied (RoPE), as the family's module computes them
RowProjector = Callable[[torch.Tensor, torch.Tensor], Sequence[torch.Tensor]]


def rows_of(x, lo: int, hi: int) -> torch.Tensor:
    """Tokens lo..hi of x (B, L, C): a tensor, or an object that computes its rows on demand (``rows(lo, hi)``,
    e.g. the Wan block's modulated input)."""
    rows = getattr(x, "rows", None)
    return rows(lo, hi) if callable(rows) else x[:, lo:hi]


def pooled_input(x, grid, factor: int, rows: int) -> torch.Tensor:
    """pool_tokens of the video input x (B, T*H*W, C): (B, T*Hp*Wp, C). A rows-on-demand input is pooled frame
    by frame (pooling is per frame), about ``rows`` tokens at a time, so it never exists whole."""
    if isinstance(x, torch.Tensor):
        return pool_tokens(x, grid, factor)
    T, H, W = grid
    per = max(1, rows // (H * W))  # frames per step
    parts = [pool_tokens(rows_of(x, t * H * W, min(T, t + per) * H * W), (min(T, t + per) - t, H, W), factor)
             for t in range(0, T, per)]
    return parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)


@dataclass
class VideoTokens:
    """The video part of one self-attention call.

    x: the input of the grid tokens (B, T*H*W, C) in the grid's (t, h, w) order, or a rows-on-demand input;
    project: see :data:`RowProjector`;
    windows: optional q, k, v of given grid tokens (n,) -> each (B, n, D), when the family has them cheaper
        than ``project(x.index_select(1, tokens), tokens)`` (e.g. projected once for ComfyUI's attn1_patch).
    """

    x: object
    project: RowProjector
    windows: Callable[[torch.Tensor], Sequence[torch.Tensor]] | None = None

    def window_qkv(self, tokens: torch.Tensor) -> Sequence[torch.Tensor]:
        """q, k, v (B, n, D) of the grid tokens ``tokens`` (n,)."""
        if self.windows is not None:
            return self.windows(tokens)
        return self.project(self.x.index_select(1, tokens), tokens)


def global_qkv(plan: DualBranchPlan, video: VideoTokens, rows: int, cache: dict | None = None):
    """q, k, v (B, T*Hp*Wp, D) of the pooled video tokens, each at the position of its pooling cell's
    representative grid token (:func:`pooled_positions`), or None when the plan has no global branch."""
    if not plan.factor:
        return None
    cache = {} if cache is None else cache
    x = video.x  # a tensor, or rows on demand (with .device, .rows, .index_select)
    key = ("pooled positions", plan.grid, plan.factor, str(x.device))
    if key not in cache:  # the same for every block of a call
        cache[key] = pooled_positions(plan.grid, plan.factor, x.device)
    return video.project(pooled_input(x, plan.grid, plan.factor, rows), cache[key])


def dual_branch_self_attention(plan: DualBranchPlan, block_index: int, video: VideoTokens, attention: AttentionFn,
                               out: torch.Tensor, rows: int, shared_qkv: Sequence[torch.Tensor] | None = None,
                               proxy_keys: ProxyKeys | None = None, cache: dict | None = None,
                               window_attention: AttentionFn | None = None,
                               shared_attention: AttentionFn | None = None):
    """The dual-branch attention of the video tokens, written into ``out``; the shared tokens' attention.

    plan: the call's window plan (``plan.layout(block_index)``: this block's windows, shifted or not).
    attention: q, k, v (B', L, D) -> (B', L, D), the model's own attention function (heads bound).
    out: (B, T*H*W, D), the video tokens' attention output before the output projection, written in place.
    rows: query tokens per attention call (the memory plan's chunk), at least one window.
    shared_qkv: q, k, v (B, E, D) of the tokens outside the grid, or None: every window attends to their
        keys; their queries attend to each other and to the pooled video (see the module docstring).
    proxy_keys: proxy guidance's keys (:class:`ProxyKeys`), which windows also see.
    window_attention / shared_attention: what the windows' queries (keys: the window's own, then the shared
        ones) / the shared tokens' queries (keys: the shared ones, then the pooled video) attend with instead of
        ``attention``, e.g. with an additive bias on some keys (LTX's guide attention mask); None: ``attention``.
    Returns the shared tokens' output (B, E, D), or None without shared tokens.
    """
    if out.shape[1] != math.prod(plan.grid):
        raise ValueError(f"dual_branch_self_attention: out holds {out.shape[1]} tokens, the grid {plan.grid} "
                         f"has {math.prod(plan.grid)}.")
    layout = plan.layout(block_index)
    shared_kv = shared_qkv[1:] if shared_qkv is not None else None
    streamed_window_attention(video.window_qkv, layout, window_attention or attention, out, rows, shared_kv,
                              proxy_keys)
    pooled = global_qkv(plan, video, rows, cache)
    if pooled is not None and plan.fusion != "local_only":
        fuse(out, attention(*pooled), plan.grid, plan.factor, plan.fusion, plan.strength)
    if shared_qkv is None:
        return None
    q, k, v = shared_qkv
    if pooled is not None:  # the shared tokens see the pooled video besides each other
        k, v = torch.cat((k, pooled[1]), dim=1), torch.cat((v, pooled[2]), dim=1)
    return (shared_attention or attention)(q, k, v)  # (B, E, D)


__all__ = ["RowProjector", "VideoTokens", "dual_branch_self_attention", "global_qkv", "pooled_input", "rows_of"]
