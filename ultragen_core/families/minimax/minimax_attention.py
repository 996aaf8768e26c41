"""MiniMax-H3's self-attention (``comfy.ldm.minimax.model.Attention``) rebuilt from its own parts for any rows,
the windowed version of it, and the check that the rebuild equals the module's own forward.

The module works on one packed sequence without a batch axis: x (S, C) = [text | condition / reference rows |
audio | video], ``rope_freqs`` (1, S, 1, R/2, 2, 2) rotation matrices of partial RoPE (the first R channels of
each head). Its forward: ``qkv_proj`` -> per-head RMS norms of q and k fused with the split-half RoPE (the
``comfy_kitchen`` kernel ComfyUI calls) -> ``optimized_attention`` over the whole sequence (q / k / v in
``AttentionTensorContainer``s where ComfyUI has them) -> ``out_proj``. Every step but the attention is per row,
so the rebuild projects only the rows a window needs; the kernel, the norms' weights and the attention function
are looked up at call time through the module's own Python module (packs that replace them still apply).
"""
from __future__ import annotations

import logging
import math
import sys
from dataclasses import dataclass
from typing import Callable

import torch

from ...adapters.base import LOG_PREFIX
from ...adapters.self_attention import VideoTokens, dual_branch_self_attention
from ...attention import kernels
from ...config import DualBranchPlan
from .positions import WindowPositions

log = logging.getLogger(__name__)

CHECK_TOKENS = 48  # video rows of the slice the check runs on (with every shared row)
TOLERANCE = {torch.float32: 1e-5, torch.float64: 1e-10}  # else (bf16 / fp16): 2e-2, relative to the output's scale


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


_CHECKED: dict[tuple, str | None] = {}


def forget_checks() -> None:
    """Run the check again on the next call (tests)."""
    _CHECKED.clear()


def _difference(mine: torch.Tensor, theirs: torch.Tensor) -> str | None:
    if torch.equal(mine, theirs):
        return None
    scale = max(1.0, float(theirs.abs().max()))
    diff = float((mine.float() - theirs.float()).abs().max())
    tol = TOLERANCE.get(theirs.dtype, 2e-2) * scale
    return None if diff <= tol else f"largest difference {diff:.3g} (tolerance {tol:.3g})"


def check_module(m, x: torch.Tensor, rope: torch.Tensor, video_start: int, options: dict, attention) -> bool:
    """Whether the rebuild equals the module's own forward, run on the shared rows and the first
    :data:`CHECK_TOKENS` video rows of this call; once per class and dtype, logged."""
    key = (type(m), x.dtype)
    if key not in _CHECKED:
        stop = min(x.shape[0], video_start + CHECK_TOKENS)
        xs, rs = x[:stop].clone(), rope[:, :stop]
        with torch.no_grad():
            try:
                _CHECKED[key] = _difference(full_attention(m, xs, rs, attention),
                                            type(m).forward(m, xs.clone(), rope_freqs=rs, transformer_options=options))
            except Exception as error:  # noqa: BLE001 - a module we cannot rebuild keeps ComfyUI's forward
                _CHECKED[key] = f"raised {type(error).__name__}: {error}"
        what = f"{type(m).__name__} ({type(m).__module__}, {str(x.dtype).replace('torch.', '')})"
        if _CHECKED[key] is None:
            log.info("%s %s: the rebuilt self-attention equals its own forward on %d rows; windows run in it.",
                     LOG_PREFIX, what, stop)
        else:
            log.warning("%s %s: the rebuilt self-attention differs from ComfyUI's forward (%s); these blocks keep "
                        "ComfyUI's full attention. Please report your ComfyUI version.", LOG_PREFIX, what,
                        _CHECKED[key])
    return _CHECKED[key] is None


__all__ = ["CHECK_TOKENS", "Sequence", "check_module", "forget_checks", "full_attention", "interface",
           "model_attention", "namespace", "project_rows", "windowed_attention"]
