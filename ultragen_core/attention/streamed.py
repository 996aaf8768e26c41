"""Windowed attention with a bounded working set: q / k / v exist only for the windows in flight.

:func:`.dual_branch.windowed_attention` projects q, k and v of the whole grid and tiles them, so at 4K
the 14B model holds several full-size copies of the sequence at once (7 GB each in bf16). Here the
caller's ``project`` computes q, k and v of a set of token indices (the tokens of a few windows), the
windows attend, and their outputs are written into ``out`` in token order: the only full-size tensor is
the output. Per window the keys are the same as in the batched ops (its own tokens, then the shared
keys, then its proxy keys), so each window's result is the same computation; only the batching differs.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Sequence

import torch

from .dual_branch import AttentionFn
from .kernels import accepts_containers, hand_over
from .windows import WindowLayout

if TYPE_CHECKING:
    from .proxy import ProxyLayout

# token indices (n,) into the grid -> q, k, v of those tokens, each (B, n, C), positions applied
ChunkProjector = Callable[[torch.Tensor], Sequence[torch.Tensor]]


@dataclass(frozen=True)
class ProxyKeys:
    """The proxy's keys / values (B, T'*H'*W', C), which windows see, and the guidance strength (0..1;
    see :mod:`.proxy`)."""

    k: torch.Tensor
    v: torch.Tensor
    layout: ProxyLayout
    strength: float


def _keys(own: torch.Tensor, shared: torch.Tensor | None, proxy: torch.Tensor | None, index: torch.Tensor | None,
          B: int, n: int, L: int) -> torch.Tensor:
    """[own; shared; proxy] keys (or values) per window: (B*n, L + E + P, C).

    own: (B, n*L, C); shared: (B, E, C) or None; proxy: (B, P_total, C) or None; index: the proxy token
    of every proxy slot of the n windows, window-major (n*P,), or None when every window sees all.
    """
    if shared is None and proxy is None:
        return own.view(B * n, L, own.shape[-1])
    C = own.shape[-1]
    E = 0 if shared is None else shared.shape[1]
    P = 0 if proxy is None else (proxy.shape[1] if index is None else index.numel() // n)
    buf = torch.empty((B, n, L + E + P, C), dtype=own.dtype, device=own.device)
    buf[:, :, :L] = own.view(B, n, L, C)
    if E:
        buf[:, :, L:L + E] = shared[:, None]
    if P:
        buf[:, :, L + E:] = proxy[:, None] if index is None else proxy.index_select(1, index).view(B, n, P, C)
    return buf.view(B * n, L + E + P, C)


def streamed_window_attention(project: ChunkProjector, layout: WindowLayout, attention: AttentionFn,
                              out: torch.Tensor, chunk_tokens: int,
                              shared_kv: Sequence[torch.Tensor] | None = None,
                              proxy: ProxyKeys | None = None,
                              slot_range: tuple[int, int] | None = None) -> torch.Tensor:
    """Attention inside each window of ``layout``, a few windows at a time, written into ``out``.

    project: q, k, v of given grid tokens (see :data:`ChunkProjector`).
    out: (B, T*H*W, C), filled in place (any layout ``index_copy_`` accepts) and returned.
    chunk_tokens: query tokens per attention call; at least one whole window runs per call, windows of
        one shape are never split across calls of different shapes.
    shared_kv: optional (k, v), each (B, E, C), that every window attends to besides its own tokens.
    proxy: optional proxy keys (see :class:`ProxyKeys`); strength 0 skips them (the unguided op).
    slot_range: only the queries of the slots in [first, stop) run (see :func:`.split.split_slots`): the
        tokens they own are written, no other token of ``out``. A window the range cuts attends with
        all its keys, as whole.
    An ``attention`` that :func:`.kernels.accepts_containers` gets each call's q / k / v handed over (their
    last use, except with a proxy strength below 1), so the backend may free them as it goes.
    Equals :func:`.dual_branch.windowed_attention` (and the video output of
    :func:`.proxy.proxy_guided_attention`) up to the batching of the attention calls.
    """
    B, N, C = out.shape
    handover = accepts_containers(attention)
    if N != math.prod(layout.grid):
        raise ValueError(f"streamed_window_attention: out holds {N} tokens, the grid {layout.grid} has "
                         f"{math.prod(layout.grid)}.")
    guided = proxy is not None and proxy.strength > 0.0
    if guided and proxy.layout.layout != layout:
        raise ValueError("streamed_window_attention: the proxy layout was made for another window layout.")
    pk = pv = None
    pindices = [None] * len(layout.groups)
    if guided:
        pk, pv = proxy.k, proxy.v
        if not proxy.layout.covers_all:
            pindices = proxy.layout.gather_indices(out.device)
    sk, sv = shared_kv if shared_kv is not None else (None, None)
    tokens_by_slot, slots = layout.owned_tokens(out.device)  # windows can overlap: write owners only
    slots_host = layout.owned_tokens("cpu")[1]
    first_slot, stop_slot = slot_range if slot_range is not None else (0, layout.computed_tokens)
    base = 0  # first slot of the group
    for g, ((shape, windows), index, pindex) in enumerate(zip(layout.groups, layout.gather_indices(out.device),
                                                             pindices)):
        L, count = math.prod(shape), len(windows)
        P = proxy.layout.keys_per_group[g] if pindex is not None else 0
        per = max(1, chunk_tokens // L)  # windows per call
        # whole windows in the slot range run in batches; a window the range cuts runs alone, with the
        # queries of its slots in the range (and all its keys)
        full_lo = min(count, max(0, -(-(first_slot - base) // L)))
        full_hi = max(full_lo, min(count, max(0, (stop_slot - base) // L)))
        runs = [(a, min(per, full_hi - a), 0, L) for a in range(full_lo, full_hi, per)]
        for w in range(min(count, max(0, (first_slot - base) // L)), min(count, max(0, -(-(stop_slot - base) // L)))):
            s0 = base + w * L
            q0, q1 = max(first_slot, s0) - s0, min(stop_slot, s0 + L) - s0
            if not full_lo <= w < full_hi and q0 < q1:
                runs.append((w, 1, q0, q1))
        for a, n, q0, q1 in runs:
            q, k, v = project(index[a * L:(a + n) * L])  # each (B, n*L, C), window-major
            slots_of = pindex[a * P:(a + n) * P] if pindex is not None else None
            q = q.reshape(B * n, L, C)
            if q1 - q0 < L:
                q = q[:, q0:q1].contiguous()
            k = _keys(k, sk, pk, slots_of, B, n, L)  # (B*n, L + E + P, C)
            v = _keys(v, sv, pv, slots_of, B, n, L)
            if guided and proxy.strength < 1.0:
                result = attention(q, k, v)  # (B*n, q1 - q0, C)
                own = L + (0 if sk is None else sk.shape[1])
                result = attention(q, k[:, :own], v[:, :own]).lerp_(result, proxy.strength)
                del q, k, v
            elif handover:  # the last use: the attention owns q / k / v and may free them early
                qkv = hand_over(q, k, v)
                del q, k, v
                result = attention(*qkv)
                del qkv
            else:
                result = attention(q, k, v)
                del q, k, v
            first, stop = base + a * L + q0, base + (a + n - 1) * L + q1
            lo, hi = torch.searchsorted(slots_host, torch.tensor([first, stop])).tolist()
            result = result.reshape(B, n * (q1 - q0), C).index_select(1, slots[lo:hi] - first)  # owned queries
            out.index_copy_(1, tokens_by_slot[lo:hi], result)
            del result
        base += count * L
    return out
