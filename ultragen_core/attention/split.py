"""One model call over several devices, shared out by windows.

A window needs nothing from outside itself, so the windows of a layout can be dealt out: each device (a
*rank*) computes the windows of one contiguous range of slots, then the per-token work (output
projection, cross-attention, feed-forward) of the tokens those windows own. After each block the ranks
swap their rows, so every rank holds the whole next input (:class:`RowExchange`, an all-gather by
device-to-device copies). The global branch's pooled tokens come from that whole input on every rank
(1 / factor^2 of the tokens, cheap).

The split changes which device computes a window, not what it computes: the union of the ranks'
outputs is the one-device output up to the batching of the attention calls.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass

import torch

from .windows import WindowLayout


def window_costs(layout: WindowLayout, token_cost: float) -> tuple[list[int], list[float]]:
    """The first slot of every window (slot order, then the end slot) and its work.

    A window of L tokens owning n of them costs L x (L + E) key-query pairs (E: keys every window
    shares, ignored here) plus ``token_cost`` per owned token for the per-token work, in the same unit.
    """
    starts, costs = [], []
    slots = layout.owned_tokens("cpu")[1]
    slot = 0
    for shape, windows in layout.groups:
        L = shape[0] * shape[1] * shape[2]
        for _ in windows:
            starts.append(slot)
            slot += L
    starts.append(slot)
    owned = torch.searchsorted(slots, torch.tensor(starts)).tolist()
    for j in range(len(starts) - 1):
        L = starts[j + 1] - starts[j]
        costs.append(float(L * L + token_cost * (owned[j + 1] - owned[j])))
    return starts, costs


def split_windows(layout: WindowLayout, ranks: int, token_cost: float = 0.0) -> tuple[tuple[int, int], ...]:
    """Cut the windows of ``layout`` (in slot order) into ``ranks`` contiguous ranges of about equal work.

    Returns one slot range [first, stop) per rank; a range may be empty when there are more ranks than
    windows. The largest share is as small as a contiguous cut allows (binary search on the limit).
    """
    if ranks < 1:
        raise ValueError(f"split_windows needs at least one rank, got {ranks}.")
    starts, costs = window_costs(layout, token_cost)

    def cuts_under(limit: float) -> list[int] | None:
        cuts, load = [0], 0.0
        for j, c in enumerate(costs):
            if load + c > limit and load > 0:
                cuts.append(j)
                load = 0.0
            load += c
        return cuts if len(cuts) <= ranks else None

    lo, hi = max(costs), sum(costs)
    for _ in range(60):  # the limit to within 1e-18 of the total: past the float resolution
        mid = (lo + hi) / 2
        if cuts_under(mid) is None:
            lo = mid
        else:
            hi = mid
    cuts = cuts_under(hi) + [len(costs)]
    cuts += [len(costs)] * (ranks + 1 - len(cuts))  # ranks without windows
    return tuple((starts[a], starts[b]) for a, b in zip(cuts, cuts[1:]))


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
        for first, stop in split_windows(layout, ranks, token_cost):
            lo, hi = torch.searchsorted(slots, torch.tensor([first, stop])).tolist()
            out.append(tokens[lo:hi])
        return out

    ranges = split_windows(layout, ranks, token_cost)
    tokens = layout.on_device(f"split {ranks} {token_cost:g}", device, build)
    return [Share(r, t) for r, t in zip(ranges, tokens)]


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
        """The sum of every rank's ``part`` (same shape), on this rank's device, added in rank order (so
        every rank gets the same values)."""
        self._parts[rank] = part
        self._wait()
        total = None
        for r, other in enumerate(self._parts):
            if r != rank:
                self.received[rank] += other.numel() * other.element_size()
                other = other.to(part.device)
            total = other.clone() if total is None else total.add_(other)
        self._wait()
        self._parts[rank] = None
        return total

    def _wait(self) -> None:
        try:
            self._barrier.wait()
        except threading.BrokenBarrierError:
            raise RuntimeError("UltraGen: another GPU's part of this model call failed; see its error.") from None

    def abort(self) -> None:
        """Release the ranks waiting here (a rank failed): each raises instead of waiting forever."""
        self._barrier.abort()
