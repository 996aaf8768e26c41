"""The check every family runs before it rebuilds part of a ComfyUI forward from the module's own parts (HOUSE_STYLE
rule 13: check by running): the rebuild and the module's own forward on a slice of the first real call, compared
within twice the dtype's epsilon; one verdict per key (class, dtype, ...), cached, logged once.

    checks = ForwardChecks()
    verdict = checks.verdict((type(m), x.dtype), lambda: compare(what, n, x.dtype, run_both, missing))
    if not verdict.agrees: ...  # run ComfyUI's own forward

The log sentences are about a rebuilt self-attention; a family that rebuilds something else (HunyuanVideo: whole
blocks) passes its own :class:`Wording`.
"""
from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from types import MappingProxyType
from typing import Callable, Mapping

import torch

from .base import LOG_PREFIX

log = logging.getLogger(__name__)


def tolerance(dtype: torch.dtype) -> float:
    """Bound on ||rebuilt - ComfyUI's|| / ||ComfyUI's||: twice the dtype's machine epsilon (the two paths round
    differently: other row counts per matmul, q and k roped apart instead of together, an op fused or not), at
    least 1e-5."""
    return max(2 * torch.finfo(dtype).eps, 1e-5) if dtype.is_floating_point else 1e-5


@dataclass(frozen=True)
class Verdict:
    """What the check found for one key: whether the rebuild may run, and why (the logged line)."""

    agrees: bool
    found: str


class ForwardChecks:
    """Verdicts by key, each found once (under a lock: threads of a multi-GPU run reach the same verdict). A family
    may cache a subclass of :class:`Verdict` that also carries what its rebuild needs (Wan: the ``modulate`` found)."""

    def __init__(self):
        self._verdicts: dict[tuple, Verdict] = {}
        self._lock = threading.Lock()

    def verdict(self, key: tuple, find: Callable[[], Verdict]) -> Verdict:
        verdict = self._verdicts.get(key)
        if verdict is None:
            with self._lock:
                verdict = self._verdicts.get(key)
                if verdict is None:
                    verdict = self._verdicts[key] = find()
                    log.log(logging.INFO if verdict.agrees else logging.WARNING, "%s %s", LOG_PREFIX, verdict.found)
        return verdict

    @property
    def verdicts(self) -> Mapping[tuple, Verdict]:
        """Every verdict found so far, by key: a read-only view that follows the cache (also after :meth:`clear`)."""
        return MappingProxyType(self._verdicts)

    def clear(self) -> None:
        """Drop every cached verdict (tests; a reloaded ComfyUI module)."""
        with self._lock:
            self._verdicts.clear()


@dataclass(frozen=True)
class Wording:
    """The sentences :func:`compare` logs, as ``str.format`` templates over ``what`` (the module, its class and
    dtype), ``n`` (tokens checked), ``err`` / ``bound`` (the relative difference and :func:`tolerance`),
    ``error`` (the exception: its type and message) and ``missing`` (the absent module parts)."""

    agrees: str = ("{what}: UltraGen's rebuild of this self-attention equals ComfyUI's forward on {n} tokens "
                   "(relative difference {err:.1e}, bound {bound:.0e}).")
    differs: str = ("{what}: UltraGen's rebuild of this self-attention differs from ComfyUI's forward by {err:.2e} "
                    "(relative, bound {bound:.0e}) on {n} tokens: this ComfyUI computes it another way, so it keeps "
                    "ComfyUI's full attention (no windows). Please report your ComfyUI version.")
    raised: str = ("{what}: the check on {n} tokens raised {error}; this attention keeps ComfyUI's full "
                   "attention.")
    missing: str = ("{what} has no {missing}: UltraGen's windows are built from those parts, so this attention keeps "
                    "ComfyUI's full attention.")


SELF_ATTENTION = Wording()


def _relative_difference(ref: torch.Tensor, mine: torch.Tensor) -> float:
    """||mine - ref|| / ||ref|| in float32 (NaN when either holds one)."""
    ref, mine = ref.float(), mine.float()
    return ((mine - ref).norm() / ref.norm().clamp_min(1e-30)).item()


def compare(what: str, n: int, dtype: torch.dtype, run_both: Callable[[], tuple],
            missing: list[str] = (), wording: Wording = SELF_ATTENTION) -> Verdict:
    """Run ``run_both`` -> (ComfyUI's output, the rebuild's) on n tokens and compare them within
    :func:`tolerance`; any exception, or a missing module part, keeps ComfyUI's forward. A module with several
    outputs (a block's two streams) returns a tuple from each side: every pair must agree, the largest relative
    difference is the one logged."""
    if missing:
        return Verdict(False, wording.missing.format(what=what, missing=", ".join(missing)))
    try:
        ref, mine = run_both()
        if isinstance(ref, torch.Tensor):
            ref, mine = (ref,), (mine,)
        if len(ref) != len(mine):
            raise ValueError(f"{len(mine)} outputs from the rebuild, {len(ref)} from ComfyUI's forward")
        diffs = [_relative_difference(r, m) for r, m in zip(ref, mine)]
    except Exception as error:  # noqa: BLE001 - any failure means: keep ComfyUI's forward
        return Verdict(False, wording.raised.format(what=what, n=n, error=f"{type(error).__name__} ({error})"))
    err = float("nan") if any(d != d for d in diffs) else max(diffs)  # a NaN is the worst difference
    bound = tolerance(dtype)
    if not err <= bound:
        return Verdict(False, wording.differs.format(what=what, n=n, err=err, bound=bound))
    return Verdict(True, wording.agrees.format(what=what, n=n, err=err, bound=bound))


__all__ = ["SELF_ATTENTION", "ForwardChecks", "Verdict", "Wording", "compare", "tolerance"]
