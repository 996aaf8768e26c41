"""The dual-branch attention op: batched windows (local) plus attention over pooled tokens (global).

Everything here works on the layout attention entry points use, (B, L, heads * head_dim), and calls
attention through a callable, so the host framework's attention (and any kernel patch installed in
it) runs our window batches. No (N x N) tensor is ever formed here.
"""
from __future__ import annotations

import math
from typing import Callable, Sequence

import torch

from .global_branch import pool_tokens, upsample_tokens
from .windows import Grid, WindowLayout

# (q, k, v), each (B, L, heads * head_dim) -> (B, L, heads * head_dim)
AttentionFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
# Returns q, k or v (index 0, 1, 2) as (B, N, heads * head_dim). Called once per index, in order,
# so the caller can build one projection at a time and the full-size tensor is freed after tiling.
Projector = Callable[[int], torch.Tensor]


def _as_projector(qkv: Sequence[torch.Tensor] | Projector) -> Projector:
    return qkv if callable(qkv) else (lambda i: qkv[i])


def windowed_attention(qkv: Sequence[torch.Tensor] | Projector, layout: WindowLayout, attention: AttentionFn,
                       extra: Sequence[torch.Tensor] | None = None,
                       shared_kv: Sequence[torch.Tensor] | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Attention inside each window of ``layout``: one batched call per window shape (usually one).

    qkv: q, k, v of shape (B, T*H*W, C), or a projector returning them one at a time.
    extra: optional (q, k, v) of shape (Bg, Lw, C) with Lw = layout.window_tokens, appended to the
        main group's call as Bg more batch entries (the global branch, when its length matches).
    shared_kv: optional (k, v) of shape (B, E, C): keys / values every window of batch item b attends
        to besides its own (tokens outside the grid, e.g. a reference frame). Not with ``extra``.
    Returns the attention output (B, T*H*W, C) in token order, and the output for ``extra`` or None.
    """
    if extra is not None and shared_kv is not None:
        raise ValueError("windowed_attention: extra batch entries and shared keys cannot share one call.")
    project = _as_projector(qkv)
    groups = [(math.prod(shape), len(windows)) for shape, windows in layout.groups]
    tiles: list[list[torch.Tensor]] = [[] for _ in groups]
    n_tokens = layout.grid[0] * layout.grid[1] * layout.grid[2]
    for i in range(3):
        t = project(i)
        B, N, C = t.shape
        if N != n_tokens:
            raise ValueError(f"windowed_attention: {N} tokens do not match the grid {layout.grid}.")
        for g, ((L, count), index) in enumerate(zip(groups, layout.gather_indices(t.device))):
            if shared_kv is not None and i > 0:
                shared = shared_kv[i - 1]  # (B, E, C)
                E = shared.shape[1]
                buf = torch.empty((B, count, L + E, C), dtype=t.dtype, device=t.device)
                buf[:, :, :L] = t.index_select(1, index).view(B, count, L, C)
                buf[:, :, L:] = shared[:, None]
                tiles[g].append(buf.view(B * count, L + E, C))  # (B*count, L + E, C)
                continue
            rows = B * count + (extra[i].shape[0] if extra is not None and g == 0 else 0)
            buf = torch.empty((rows, L, C), dtype=t.dtype, device=t.device)  # (B*count [+ Bg], L, C)
            torch.index_select(t, 1, index, out=buf[: B * count].view(B, count * L, C))
            if rows > B * count:
                buf[B * count:] = extra[i]
            tiles[g].append(buf)
        del t
    outs, extra_out = [], None
    for g, (L, count) in enumerate(groups):
        out = attention(*tiles[g])  # (B*count [+ Bg], L, C)
        tiles[g] = []
        if g == 0 and extra is not None:
            extra_out = out[B * count:]
        outs.append(out[: B * count].reshape(B, count * L, C))
    joined = outs[0] if len(outs) == 1 else torch.cat(outs, dim=1)  # (B, sum_g count_g * L_g, C)
    del outs
    local = joined.index_select(1, layout.scatter_index(joined.device))  # (B, N, C)
    return local, extra_out


def _band(local: torch.Tensor, global_out: torch.Tensor, grid: Grid, factor: int, strength: float,
          pool=pool_tokens) -> torch.Tensor:
    """local + s * up(global - pool(local)): the global branch replaces the low spatial frequencies of the
    local output (s = 1) or part of them."""
    low = global_out - pool(local, grid, factor)  # (B, T*Hp*Wp, C)
    return upsample_tokens(low, grid, factor, out=local, alpha=strength, beta=1.0)


def _gate(local: torch.Tensor, global_out: torch.Tensor, grid: Grid, factor: int, strength: float,
          pool=None) -> torch.Tensor:
    """(1 - s) * local + s * up(global)."""
    return upsample_tokens(global_out, grid, factor, out=local, alpha=strength, beta=1.0 - strength)


def _local_only(local: torch.Tensor, global_out: torch.Tensor, grid: Grid, factor: int,
                 strength: float, pool=None) -> torch.Tensor:
    """The windows alone (the global branch is not computed at all; see dual_branch_attention)."""
    return local


# The fusion modes: name -> fn(local (B, N, C), global (B, T*Hp*Wp, C), grid, factor, strength, pool), in
# place on local; ``pool`` pools the local output (pool_tokens, or a sum of the parts several devices
# hold). The one list of names: the settings check and the node's combo read it.
FUSIONS: dict[str, Callable[..., torch.Tensor]] = {"band": _band, "gate": _gate, "local_only": _local_only}


def fuse(local: torch.Tensor, global_out: torch.Tensor, grid: Grid, factor: int, fusion: str,
         strength: float, pool=pool_tokens) -> torch.Tensor:
    """Combine the local output (B, N, C) with the global output (B, T*Hp*Wp, C) by ``FUSIONS[fusion]``.

    pool: how the local output is pooled (:func:`pool_tokens`; a split call sums its devices' parts)."""
    try:
        fn = FUSIONS[fusion]
    except KeyError:
        raise ValueError(f"fusion must be one of {tuple(FUSIONS)}, got {fusion!r}.") from None
    return fn(local, global_out, grid, factor, strength, pool)


def dual_branch_attention(qkv: Sequence[torch.Tensor] | Projector, layout: WindowLayout, attention: AttentionFn,
                          global_qkv: Sequence[torch.Tensor] | None = None, factor: int = 0,
                          fusion: str = "local_only", strength: float = 1.0,
                          shared_kv: Sequence[torch.Tensor] | None = None) -> torch.Tensor:
    """Local windows plus an optional global branch over pooled tokens, fused.

    qkv: q, k, v (B, T*H*W, C) for the local branch (positional encoding already applied), or a
        projector (see :data:`Projector`).
    layout: the window layout of the grid.
    global_qkv: q, k, v (B, T*Hp*Wp, C) of the pooled tokens (see :func:`pool_tokens`), or None.
    factor: the pooling factor that produced global_qkv.
    shared_kv: optional (k, v), each (B, E, C), that every window attends to besides its own tokens
        (see :func:`windowed_attention`).
    Returns (B, T*H*W, C).
    """
    if global_qkv is None or fusion == "local_only":
        local, _ = windowed_attention(qkv, layout, attention, shared_kv=shared_kv)
        return local
    grid = layout.grid
    shared = global_qkv[0].shape[1] == layout.window_tokens and shared_kv is None
    local, global_out = windowed_attention(qkv, layout, attention, extra=global_qkv if shared else None,
                                           shared_kv=shared_kv)
    if not shared:
        global_out = attention(*global_qkv)
    return fuse(local, global_out, grid, factor, fusion, strength)
