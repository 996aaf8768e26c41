"""Experiment: window attention as one Triton kernel that reads and writes the token layout directly.

Measured slower than the pack's batched cuDNN windows on an H200 (about 310-330 against 470-550
useful TFLOP/s, docs/BENCHMARKS.md), so the pack does not use it; it stays here to reproduce those
numbers (bench/window_kernels.py, bench/attention.py --windows fused). It does halve the op's peak memory.

The batched path (:func:`~.dual_branch.windowed_attention`) gathers q, k and v into window-major
copies, runs one attention call per window shape and gathers the output back: four full passes over
memory around the attention itself, and one launch per window shape. At the fast preset's 182x FLOP
cut those passes are a fifth of the op's time. This kernel does the same attention with the gathers
folded into its loads and stores:

- one program per (window, block of query rows, batch x head); all windows of a layout, whatever
  their shapes, in one launch;
- a query row is a token the window *owns* (its segment), so overlapping border windows never
  compute a row twice; keys are the window's whole box;
- q / k / v / out stay in (B, T*H*W, heads * head_dim): a row of one head is head_dim contiguous
  values, so every load is a run of 128 or 256 bytes.

Flash-attention's online softmax in float32; exp2 with the scale folded in. Inference only (no
backward). Needs CUDA and Triton (bundled with PyTorch's CUDA builds); ``available()`` says whether
it can run, and why not.
"""
from __future__ import annotations

import math
import os

import torch

from ultragen_core.attention.windows import WindowLayout

try:
    import triton
    import triton.language as tl
except ImportError:  # CPU-only PyTorch builds ship without Triton
    triton = None

HEAD_DIMS = (64, 128)


def available(device: torch.device, dtype: torch.dtype, head_dim: int) -> str | None:
    """None when the kernel can run on this device / dtype / head size; otherwise the reason."""
    if triton is None:
        return "Triton is not installed (PyTorch's CPU builds do not include it)"
    if device.type != "cuda" and not _interpreted():
        return f"the tensors are on {device.type}, the kernel needs CUDA"
    if dtype not in (torch.bfloat16, torch.float16):
        return f"dtype {dtype} (the kernel runs bfloat16 / float16)"
    if head_dim not in HEAD_DIMS:
        return f"head_dim {head_dim} (the kernel supports {HEAD_DIMS})"
    if device.type == "cuda" and torch.cuda.get_device_capability(device)[0] < 8:
        return "the GPU is older than Ampere (compute capability 8.0)"
    return None


def _interpreted() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def window_table(layout: WindowLayout) -> torch.Tensor:
    """(windows, 12) int32: per window its key box (start t/h/w, size t/h/w) and owned box (same)."""
    rows = []
    for index in _window_indices(layout):
        per_axis = list(zip(layout.axes, index))
        rows.append([a.window_starts[i] for a, i in per_axis] + [a.window_lengths[i] for a, i in per_axis]
                    + [a.segment_bounds[i] for a, i in per_axis]
                    + [a.segment_bounds[i + 1] - a.segment_bounds[i] for a, i in per_axis])
    return torch.tensor(rows, dtype=torch.int32)


def windowed_attention_fused(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, layout: WindowLayout,
                             heads: int, block_m: int = 128, block_n: int = 0, num_warps: int = 8,
                             num_stages: int = 3) -> torch.Tensor:
    """Attention inside each window of ``layout``.

    q, k, v: (B, T*H*W, heads * head_dim), last dimension contiguous, same dtype and device.
    block_m / block_n / num_warps / num_stages: the kernel's tiling (block_n 0: by head size).
    Returns (B, T*H*W, heads * head_dim), contiguous, in token order.
    """
    B, N, C = q.shape
    T, H, W = layout.grid
    if N != T * H * W:
        raise ValueError(f"windowed_attention_fused: {N} tokens do not match the grid {layout.grid}.")
    if C % heads:
        raise ValueError(f"windowed_attention_fused: {C} channels are not divisible by {heads} heads.")
    head_dim = C // heads
    reason = available(q.device, q.dtype, head_dim)
    if reason is not None:
        raise NotImplementedError(f"windowed_attention_fused cannot run: {reason}. Use windowed_attention.")
    for name, t in (("k", k), ("v", v)):
        if t.shape != q.shape or t.dtype != q.dtype:
            raise ValueError(f"windowed_attention_fused: {name} is {tuple(t.shape)} {t.dtype}, "
                             f"q is {tuple(q.shape)} {q.dtype}.")
    q, k, v = (t if t.stride(-1) == 1 else t.contiguous() for t in (q, k, v))
    table = layout.on_device("fused_window_table", q.device, lambda: window_table(layout))
    out = torch.empty((B, N, C), dtype=q.dtype, device=q.device)
    # the most tokens a window owns (owned boxes are products of per-axis segments)
    owned = math.prod(max(hi - lo for lo, hi in zip(a.segment_bounds, a.segment_bounds[1:])) for a in layout.axes)
    q_blocks = triton.cdiv(owned, block_m)
    block_n = block_n or (64 if head_dim == 128 else 128)
    grid = (layout.count * q_blocks, B * heads)
    _window_attention_kernel[grid](
        q, k, v, out, table,
        q.stride(0), q.stride(1), k.stride(0), k.stride(1), v.stride(0), v.stride(1), out.stride(0), out.stride(1),
        H, W, heads, q_blocks, (1.0 / math.sqrt(head_dim)) * 1.4426950408889634,
        HEAD_DIM=head_dim, BLOCK_M=block_m, BLOCK_N=block_n, num_warps=num_warps, num_stages=num_stages,
    )
    return out


def _window_indices(layout: WindowLayout):
    at, ah, aw = layout.axes
    return ((it, ih, iw) for it in range(at.count) for ih in range(ah.count) for iw in range(aw.count))


if triton is not None:
    @triton.jit
    def _tokens(slots, t0, h0, w0, lh, lw, H, W):
        """Flat token index of window slots (row-major inside a box starting at t0, h0, w0)."""
        plane = lh * lw
        t = t0 + slots // plane
        rest = slots % plane
        return ((t * H + h0 + rest // lw) * W + w0 + rest % lw).to(tl.int64)

    @triton.jit
    def _window_attention_kernel(Q, K, V, O, TABLE,
                                 sqb, sqn, skb, skn, svb, svn, sob, son,
                                 H, W, heads, q_blocks, qk_scale,
                                 HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
        window = tl.program_id(0) // q_blocks
        q_block = tl.program_id(0) % q_blocks
        b = tl.program_id(1) // heads
        head = tl.program_id(1) % heads
        meta = TABLE + window * 12
        kt0, kh0, kw0 = tl.load(meta + 0), tl.load(meta + 1), tl.load(meta + 2)
        klt, klh, klw = tl.load(meta + 3), tl.load(meta + 4), tl.load(meta + 5)
        ot0, oh0, ow0 = tl.load(meta + 6), tl.load(meta + 7), tl.load(meta + 8)
        olt, olh, olw = tl.load(meta + 9), tl.load(meta + 10), tl.load(meta + 11)
        owned = olt * olh * olw
        if q_block * BLOCK_M >= owned:
            return
        cols = tl.arange(0, HEAD_DIM)
        rows = q_block * BLOCK_M + tl.arange(0, BLOCK_M)
        row_ok = rows < owned
        q_tok = _tokens(rows, ot0, oh0, ow0, olh, olw, H, W)
        q = tl.load(Q + b * sqb + q_tok[:, None] * sqn + head * HEAD_DIM + cols[None, :], mask=row_ok[:, None], other=0.0)

        K_head = K + b * skb + head * HEAD_DIM
        V_head = V + b * svb + head * HEAD_DIM
        m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
        l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
        acc = tl.zeros([BLOCK_M, HEAD_DIM], dtype=tl.float32)
        keys = klt * klh * klw
        for start in range(0, keys, BLOCK_N):
            slots = start + tl.arange(0, BLOCK_N)
            key_ok = slots < keys
            k_tok = _tokens(slots, kt0, kh0, kw0, klh, klw, H, W)
            k = tl.load(K_head + k_tok[:, None] * skn + cols[None, :], mask=key_ok[:, None], other=0.0)
            s = tl.dot(q, tl.trans(k)) * qk_scale  # (BLOCK_M, BLOCK_N), log2 units
            s = tl.where(key_ok[None, :], s, float("-inf"))
            m_new = tl.maximum(m_i, tl.max(s, 1))
            p = tl.math.exp2(s - m_new[:, None])
            alpha = tl.math.exp2(m_i - m_new)
            l_i = l_i * alpha + tl.sum(p, 1)
            v = tl.load(V_head + k_tok[:, None] * svn + cols[None, :], mask=key_ok[:, None], other=0.0)
            acc = tl.dot(p.to(v.dtype), v, acc * alpha[:, None])
            m_i = m_new
        acc = acc / l_i[:, None]
        tl.store(O + b * sob + q_tok[:, None] * son + head * HEAD_DIM + cols[None, :], acc.to(O.dtype.element_ty),
                 mask=row_ok[:, None])
