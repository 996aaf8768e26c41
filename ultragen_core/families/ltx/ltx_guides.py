"""LTX's guide attention mask under windows: the additive bias ComfyUI 0.33 puts between the video and the guide
tokens (``GuideAttentionMask``: a guide strength other than 1, or a spatial guide mask), carried over to the keys
each query sees in the dual-branch op.

ComfyUI's mask, for a sequence of N video tokens followed by E guide tokens (the first ``tracked`` of them
weighted, log-weights ``b`` (tracked,)):
- a video query sees the tracked guide keys with the bias ``b`` (every other key: 0);
- tracked guide query i sees every video key with the bias ``b[i]`` (every guide key: 0); the others: no bias.

Under windows a video query's keys are its window's video tokens, then the E guide tokens (shared): the bias of
the guide keys is the same ``b`` (a (1, 1, 1, L + E) mask). A guide query's keys are the E guide tokens, then the
pooled video: its bias ``b[i]`` goes on the pooled keys, each standing for the video tokens of its cell.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class GuideBias:
    """The guide mask of one call, per guide token: ``key`` (E,): the bias of each guide key for video queries;
    ``query`` (E,): the bias of each guide query on video keys."""

    key: torch.Tensor
    query: torch.Tensor


def guide_bias(mask, video_tokens: int, total: int) -> GuideBias | None:
    """The per-guide-token biases of ComfyUI's guide mask ``mask`` for a sequence of ``video_tokens`` video tokens
    then ``total - video_tokens`` guides, or None when the mask is not of that form (then ComfyUI's own attention
    runs the call). Read from the mask's tensors: the video queries' row (1, 1, 1, total) and the tracked
    guides' rows (1, 1, tracked, total)."""
    start = getattr(mask, "guide_start", None)
    tracked = getattr(mask, "tracked_count", None)
    noisy, rows = getattr(mask, "noisy_mask", None), getattr(mask, "tracked_mask", None)
    if start != video_tokens or not isinstance(noisy, torch.Tensor) or not isinstance(rows, torch.Tensor):
        return None
    guides = total - video_tokens
    if noisy.shape[-1] != total or rows.shape[-1] != total or not 0 <= tracked <= guides or video_tokens < 1:
        return None
    key = noisy.reshape(-1)[video_tokens:total]  # (E,)
    query = torch.zeros_like(key)
    query[:tracked] = rows.reshape(tracked, total)[:, 0]  # (tracked,): every video column holds the row's bias
    return GuideBias(key, query)


def masked_attention(fn, heads: int, options: dict):
    """(q, k, v, mask) -> out with the model's attention ``fn`` and an additive mask, as ComfyUI's guide-masked
    calls run it (``low_precision_attention=False``: no SageAttention for masked calls)."""
    def run(q, k, v, mask):
        return fn(q, k, v, heads=heads, mask=mask, transformer_options=options, low_precision_attention=False)
    return run


def window_attention(masked, bias: GuideBias):
    """Window queries (B', Lq, D) over [own L; guides E] keys: the guide keys get ``bias.key``."""
    def run(q, k, v):
        mask = torch.zeros((1, 1, 1, k.shape[1]), dtype=q.dtype, device=q.device)
        mask[..., k.shape[1] - bias.key.numel():] = bias.key.to(q.dtype)
        return masked(q, k, v, mask)
    return run


def shared_attention(masked, bias: GuideBias):
    """Guide queries (B, E, D) over [guides E; pooled video P] keys: row i gets ``bias.query[i]`` on the pooled
    keys."""
    def run(q, k, v):
        E = bias.query.numel()
        mask = torch.zeros((1, 1, E, k.shape[1]), dtype=q.dtype, device=q.device)
        mask[..., E:] = bias.query.to(q.dtype).view(1, 1, E, 1)
        return masked(q, k, v, mask)
    return run


__all__ = ["GuideBias", "guide_bias", "masked_attention", "shared_attention", "window_attention"]
