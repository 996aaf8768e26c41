"""One model call over several devices, shared out by windows.

A window needs nothing from outside itself, so the windows of a layout can be dealt out: each device (a
*rank*) computes one contiguous range of slots (the queries of whole windows, and part of a window at
each end of the range, so that the shares are equal), then the per-token work (output projection,
cross-attention, feed-forward) of the tokens owned there. After each block the ranks
swap their rows, so every rank holds the whole next input (:class:`RowExchange`, an all-gather by
device-to-device copies). The global branch's pooled tokens come from that whole input on every rank
(1 / factor^2 of the tokens, cheap).

The split changes which device computes a window, not what it computes: the union of the ranks'
outputs is the one-device output up to the batching of the attention calls.
"""
from __future__ import annotations

import math
import threading
from dataclasses import dataclass

import torch

from .windows import WindowLayout


def slot_costs(layout: WindowLayout, token_cost: float) -> torch.Tensor:
    """The work of every slot (one query of one window), float64 (computed_tokens,).

    A query of a window of L tokens costs L key-query pairs (keys every window shares are the same for
    all and left out), plus ``token_cost`` in the same unit when its token is owned there: the per-token
    work of the block (projections, cross-attention, feed-forward) follows ownership.
    """
    lengths = torch.cat([torch.full((len(windows) * math.prod(shape),), float(math.prod(shape)), dtype=torch.float64)
                         for shape, windows in layout.groups])
    owned = torch.zeros_like(lengths)
    owned[layout.owned_tokens("cpu")[1]] = token_cost
    return lengths + owned


def split_slots(layout: WindowLayout, ranks: int, token_cost: float = 0.0) -> tuple[tuple[int, int], ...]:
    """Cut the slots of ``layout`` into ``ranks`` contiguous ranges of equal work (to one slot).

    Returns one slot range [first, stop) per rank. A range can start or end inside a window: both ranks
    then compute that window's keys, each its own queries. A range is empty only with more ranks than slots.
    """
    if ranks < 1:
        raise ValueError(f"split_slots needs at least one rank, got {ranks}.")
    def build():
        work = slot_costs(layout, token_cost).cumsum(0)
        targets = work[-1] * torch.arange(1, ranks, dtype=torch.float64) / ranks
        return torch.searchsorted(work, targets).clamp(max=work.numel())
    cuts = [0, *layout.on_device(f"cuts {ranks} {token_cost:g}", "cpu", build).tolist(), layout.computed_tokens]
    return tuple(zip(cuts, cuts[1:]))


@dataclass(frozen=True)
class Share:
    """What one rank computes in one layout: its slot range and the grid tokens it owns (slot order)."""

    slots: tuple[int, int]
    tokens: torch.Tensor  # (n,) flat token indices


def shares(layout: WindowLayout, ranks: int, token_cost: float, device) -> list[Share]:
    """Every rank's :class:`Share` of ``layout``, the token indices on ``device`` (cached per layout)."""
    def build():
        tokens, slots = layout.owned_tokens("cpu")
        out = []
        for first, stop in split_slots(layout, ranks, token_cost):
            lo, hi = torch.searchsorted(slots, torch.tensor([first, stop])).tolist()
            out.append(tokens[lo:hi])
        return out

    ranges = split_slots(layout, ranks, token_cost)
    tokens = layout.on_device(f"split {ranks} {token_cost:g}", device, build)
    return [Share(r, t) for r, t in zip(ranges, tokens)]


class PeerFailed(RuntimeError):
    """Raised in a rank whose exchange another rank aborted (that rank's own error says what failed)."""


class RowExchange:
    """All-gather of token rows between ranks that run in threads of one process, one device each.

    Every rank calls :meth:`all_gather` once per block with the rows it computed; each returns with the
    whole sequence on its own device. Copies between devices run on the source device's stream after
    the work that made the rows (PyTorch orders cross-device copies), so only the threads meet here.
    """

    def __init__(self, ranks: int):
        self.ranks = ranks
        self._barrier = threading.Barrier(ranks)
        self._parts: list[torch.Tensor | None] = [None] * ranks
        self._sums: list[torch.Tensor | None] = [None] * ranks
        self.received = [0] * ranks  # bytes each rank got from the others (copied between devices)

    def all_gather(self, rank: int, rows: torch.Tensor, indices: list[torch.Tensor], out: torch.Tensor) -> torch.Tensor:
        """rows: (B, n_rank, C), the rows of tokens ``indices[rank]``; indices: every rank's token
        indices, on ``out``'s device. Fills ``out`` (B, L, C) with every rank's rows and returns it."""
        self._parts[rank] = rows
        self._wait()
        for r, part in enumerate(self._parts):
            if part.shape[1] == 0:
                continue
            if r != rank:
                self.received[rank] += part.numel() * part.element_size()
                part = part.to(out.device)
            out.index_copy_(1, indices[r], part)
        self._wait()  # nobody reads a part any more: the next block may replace them
        self._parts[rank] = None
        return out

    def all_reduce(self, rank: int, part: torch.Tensor) -> torch.Tensor:
        """The sum of every rank's ``part`` (same shape), on this rank's device. Each rank sums one slice of
        the values over all ranks, in rank order, then the slices are all-gathered: every rank gets the
        same values, and receives 2 (N-1) / N of a part instead of N-1 parts."""
        flat = part.reshape(-1)
        cuts = [flat.numel() * r // self.ranks for r in range(self.ranks + 1)]
        self._parts[rank] = flat
        self._wait()
        a, b = cuts[rank], cuts[rank + 1]
        total = None
        for r, other in enumerate(self._parts):
            piece = other[a:b]
            if r != rank:
                self.received[rank] += piece.numel() * piece.element_size()
                piece = piece.to(flat.device)
            total = piece.clone() if total is None else total.add_(piece)
        self._sums[rank] = total
        self._wait()
        out = torch.empty_like(flat)
        for r, piece in enumerate(self._sums):
            if r != rank:
                self.received[rank] += piece.numel() * piece.element_size()
            out[cuts[r]:cuts[r + 1]] = piece
        self._wait()  # nobody reads a part or a sum any more
        self._parts[rank] = self._sums[rank] = None
        return out.view_as(part)

    def _wait(self) -> None:
        try:
            self._barrier.wait()
        except threading.BrokenBarrierError:
            raise PeerFailed("UltraGen: another GPU's part of this model call failed; see its error.") from None

    def abort(self) -> None:
        """Release the ranks waiting here (a rank failed): each raises instead of waiting forever."""
        self._barrier.abort()
