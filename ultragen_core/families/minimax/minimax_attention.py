"""MiniMax-H3's self-attention (``comfy.ldm.minimax.model.Attention``) rebuilt from its own parts for any rows,
the windowed version of it, and the check that the rebuild equals the module's own forward.

The module works on one packed sequence without a batch axis: x (S, C) = [text | condition / reference rows |
audio | video], ``rope_freqs`` (1, S, 1, R/2, 2, 2) rotation matrices of partial RoPE (the first R channels of
each head). Its forward: ``qkv_proj`` -> per-head RMS norms of q and k fused with the split-half RoPE (the
``comfy_kitchen`` kernel ComfyUI calls) -> ``optimized_attention`` over the whole sequence (q / k / v in
``AttentionTensorContainer``s where ComfyUI has them) -> ``out_proj``. Every step but the attention is per row,
so the rebuild projects only the rows a window needs; the kernel, the norms' weights and the attention function
are looked up at call time through the module's own Python module (packs that replace them still apply).

No source is read (HOUSE_STYLE 13): :func:`check_module` runs the rebuild and the module's own forward on the shared
rows and the first video rows of the first call of each (class, dtype) and compares them
(:mod:`ultragen_core.adapters.forward_check`); a class that computes something else keeps ComfyUI's forward, and
the log says why.
"""
from __future__ import annotations

import logging
import math
import sys
from dataclasses import dataclass
from typing import Callable

import torch

from ...adapters.forward_check import ForwardChecks, Verdict, compare
from ...adapters.self_attention import VideoTokens, dual_branch_self_attention
from ...attention import kernels
from ...config import DualBranchPlan
from .positions import WindowPositions

log = logging.getLogger(__name__)

CHECK_TOKENS = 48  # video rows of the slice the check runs on (with every shared row)


def namespace(m):
    """The Python module that defines the attention class (its ``comfy``, ``optimized_attention``,
    ``rope_rotation_table``, ``AttentionTensorContainer``)."""
    return sys.modules[type(m).__module__]


def model_attention(m):
    return namespace(m).optimized_attention


def interface(m) -> kernels.ModelAttention:
    """How the module calls its attention: containers where its module has them, a per-layer preferred
    attention where the layer holds one (newer ComfyUI)."""
    return kernels.interface_of(namespace(m), m)


def project_rows(m, x: torch.Tensor, table: torch.Tensor) -> list[torch.Tensor]:
    """q, k, v of rows x (n, C), each (1, n, heads * head_dim): the module's qkv projection, its q / k RMS norms
    and partial RoPE with ``table`` (1, n, 1, R/2, 2, 2), as its forward computes them."""
    ns = namespace(m)
    n, width = x.shape[0], m.heads * m.head_dim
    q, k, v = m.qkv_proj(x).split(width, dim=-1)  # (n, H*D) views of one (n, 3*H*D) buffer
    q, k = q.view(1, n, m.heads, m.head_dim), k.view(1, n, m.heads, m.head_dim)
    qw = ns.comfy.model_management.cast_to(m.q_norm.weight, device=x.device)
    kw = ns.comfy.model_management.cast_to(m.k_norm.weight, device=x.device)
    kernel, rot = ns.comfy.quant_ops.ck, table.shape[-3] * 2
    if ns.comfy.model_management.in_training:
        q, k = kernel.rms_rope_split_half(q, k, table, qw, kw, epsilon=m.q_norm.eps, rot_dim=rot)
    else:  # in place on the fresh projection, as the module does
        kernel.rms_rope_split_half_(q, k, table, qw, kw, epsilon=m.q_norm.eps, rot_dim=rot)
    return [q.reshape(1, n, width), k.reshape(1, n, width), v.reshape(1, n, width)]


@dataclass
class Sequence:
    """The packed sequence of one call as the patch sees it: video rows last.

    video_start: first video row; positions: the window positions of the video tokens; table: builds RoPE
    tables from (n, 3) float64 positions with the model's own frequencies (the model's ``rope_freqs`` and its
    module's ``rope_rotation_table``)."""

    video_start: int
    positions: WindowPositions
    table: Callable[[torch.Tensor], torch.Tensor]


def windowed_attention(m, x: torch.Tensor, rope: torch.Tensor, plan: DualBranchPlan, block_index: int,
                       attention, rows: int, seq: Sequence, cache: dict | None = None) -> torch.Tensor:
    """The module's forward with the video rows as the window grid ``plan.grid`` and every other row shared.

    x: (S, C) the packed sequence, video rows last ((T*H*W) rows from ``seq.video_start``); rope: the module's
    RoPE table (1, S, 1, R/2, 2, 2); attention: (q, k, v) (B', L, H*D) -> (B', L, H*D), heads bound; rows: query
    rows per attention call. Windows run at :mod:`.positions`' window positions, the pooled video and the
    shared rows at ComfyUI's. Returns (S, C), the module's output.
    """
    va, S = seq.video_start, x.shape[0]
    n = math.prod(plan.grid)
    if S - va != n:
        raise ValueError(f"MiniMax-H3 windowed attention: {S - va} video rows, the grid {plan.grid} has {n}.")
    video_rope = rope[:, va:]
    xv = x[va:].unsqueeze(0)  # (1, N, C)

    def project(x_rows: torch.Tensor, tokens: torch.Tensor):  # (1, k, C), grid tokens (k,): ComfyUI's positions
        return project_rows(m, x_rows[0], video_rope.index_select(1, tokens))

    def windows(tokens: torch.Tensor):  # whole windows' grid tokens (k,), window-major: the window positions
        table = seq.table(seq.positions.of(plan.layout(block_index), tokens)).to(rope.device, rope.dtype)
        return project_rows(m, xv[0].index_select(0, tokens), table)

    shared = project_rows(m, x[:va], rope[:, :va]) if va else None  # (1, E, H*D) each
    out = torch.empty((1, S, m.heads * m.head_dim), dtype=x.dtype, device=x.device)  # shared rows, then video
    shared_out = dual_branch_self_attention(plan, block_index, VideoTokens(xv, project, windows), attention,
                                            out[:, va:], rows, shared, cache=cache)  # writes the video rows
    if shared_out is not None:
        out[:, :va] = shared_out
        del shared_out
    return m.out_proj(out[0])


def full_attention(m, x: torch.Tensor, rope: torch.Tensor, attention) -> torch.Tensor:
    """The module's forward through :func:`project_rows` and ``attention`` (no windows): x (S, C) -> (S, C)."""
    return m.out_proj(attention(*project_rows(m, x, rope))[0])


_CHECKS = ForwardChecks()


def forget_checks() -> None:
    """Drop every cached verdict: the next call runs the check again (tests; a reloaded ComfyUI module)."""
    _CHECKS.clear()


def check_module(m, x: torch.Tensor, rope: torch.Tensor, video_start: int, options: dict, attention) -> Verdict:
    """Whether the rebuild of ``m`` (:func:`full_attention` with ``attention``) equals the module's own forward:
    cached per (class, dtype); the first call runs :func:`_run_check` on a slice of these inputs and logs."""
    return _CHECKS.verdict((type(m), x.dtype), lambda: _run_check(m, x, rope, video_start, options, attention))


def _run_check(m, x: torch.Tensor, rope: torch.Tensor, video_start: int, options: dict, attention) -> Verdict:
    """Run the rebuild and ``type(m).forward`` on the shared rows and the first :data:`CHECK_TOKENS` video rows of
    this call (x (S, C), rope (1, S, 1, R/2, 2, 2)), under no_grad, and compare."""
    cls = type(m)
    what = f"{cls.__name__} ({cls.__module__}, {str(x.dtype).replace('torch.', '')})"
    stop = min(x.shape[0], video_start + CHECK_TOKENS)

    def run_both():
        xs, rs = x[:stop].clone(), rope[:, :stop]
        with torch.no_grad():
            mine = full_attention(m, xs, rs, attention)
            return cls.forward(m, xs.clone(), rope_freqs=rs, transformer_options=options), mine
    return compare(what, stop, x.dtype, run_both)


__all__ = ["CHECK_TOKENS", "Sequence", "Verdict", "check_module", "forget_checks", "full_attention", "interface",
           "model_attention", "namespace", "project_rows", "windowed_attention"]
