"""A Wan block whose per-token work runs in chunks of rows, for calls that stream their tokens.

ComfyUI's ``WanAttentionBlock.forward`` holds several sequence-size tensors at once: the residual, the
modulated self-attention input, the self-attention output, the new residual, the cross-attention's
queries and output, the feed-forward's input and output. Everything but self-attention is per token,
so this replacement computes it over chunks of rows and writes each chunk's new residual into the
self-attention output's memory. The modulated self-attention input is not held whole either: the pack's
self-attention computes its rows per chunk of windows (:class:`ModulatedRows`). The block then holds
its input and one output, plus a chunk (at 4K, 14B: 13 GiB instead of 19.5).

The streamed path is built from the block's own parts (``norm1`` / ``norm2`` / ``norm3``, ``self_attn``,
``cross_attn``, ``ffn``, ``modulation``, and the ``modulate`` function of the block's module when it has
one, as ComfyUI 0.38 does); the glue re-implemented here is the modulation rows (``repeat_e``), the
residual gates and, for blocks without a ``modulate``, ``norm(x) * (1 + scale) + shift``. Whether that
equals the block's own ``forward`` is checked by running both (:func:`check_block`): the first time a
block class streams in a dtype, ComfyUI's forward and the streamed path run on a small slice of that
call's real inputs, and the class streams only when they agree within the dtype's tolerance (else it
runs whole, and the log says why). No source is read: a refactored ComfyUI that computes the same thing
streams, one that computes something else does not.
"""
from __future__ import annotations

import logging
import sys
from dataclasses import dataclass
from typing import Callable

import torch

from ...adapters import forward_check
from ...adapters.base import LOG_PREFIX, CallState, current_call, log_once, module_at, run_with_call
from ...adapters.forward_check import ForwardChecks, tolerance
from .wan_proxy import proxy_tokens

log = logging.getLogger(__name__)

BLOCK_PARTS = ("norm1", "norm2", "norm3", "self_attn", "cross_attn", "ffn", "modulation")
CHECK_TOKENS = 48  # tokens of the slice the check runs (per-frame modulation: two frames of 24)
CHECK_ROWS = 20  # rows per chunk in the check: chunk edges fall inside frames and mid-sequence
OPTIONS_LEFT_OUT = ("patches", "patches_replace", "optimized_attention_override")  # stateful hooks: not run

# modulate(x, norm, shift, scale): norm(x) * (1 + scale) + shift over some rows, shift / scale (B, 1 or n, C)
Modulate = Callable[[torch.Tensor, Callable, torch.Tensor, torch.Tensor], torch.Tensor]


def modulate_unfused(x: torch.Tensor, norm, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """norm(x) * (1 + scale) + shift as ComfyUI 0.3.64 / 0.33 write it (x (B, n, C); shift, scale (B, 1 or n, C))."""
    return torch.addcmul(shift, norm(x), 1 + scale)


@dataclass(frozen=True)
class Verdict(forward_check.Verdict):
    """What the check found for one block class and dtype: whether it streams (``agrees``), with which
    ``modulate`` (None when it does not), and a sentence for the log (``found``)."""

    modulate: Modulate | None = None

    @property
    def streams(self) -> bool:
        return self.agrees


# The check's verdicts, found once per key under one lock (split ranks must all reach the same verdict) and
# logged once. Its bound is forward_check's tolerance: twice the dtype's epsilon, at least 1e-5.
_CHECKS = ForwardChecks()
_VERDICTS = _CHECKS.verdicts  # read-only view: known_block, tests


def missing_parts(block) -> list[str]:
    """The parts of :data:`BLOCK_PARTS` the block lacks."""
    return [name for name in BLOCK_PARTS if getattr(block, name, None) is None]


def known_block(block) -> bool:
    """The block has the parts the streamed path is built from, and no check refused its class."""
    cls = type(block)
    return not missing_parts(block) and not any(key[0] is cls and not v.streams for key, v in list(_VERDICTS.items()))


def forget_verdicts() -> None:
    """Drop every cached verdict (tests; a reloaded ComfyUI module)."""
    _CHECKS.clear()


def check_block(block, x: torch.Tensor, e: torch.Tensor, freqs, context, context_img_len,
                transformer_options: dict, call: CallState) -> Verdict:
    """Whether ``block`` streams: cached per (block class, activation dtype, modulation layout); the first
    call runs :func:`_run_check` on a slice of these inputs and logs what it found."""
    return _CHECKS.verdict((type(block), x.dtype, e.ndim), lambda: _run_check(
        block, x, e, freqs, context, context_img_len, transformer_options, call))


def _candidates(block) -> list[tuple[str, Modulate]]:
    """The modulations to try: the block's module's own ``modulate`` (ComfyUI 0.38: fused on large CUDA
    inputs) when it has one, then the unfused formula."""
    own = getattr(sys.modules.get(type(block).__module__), "modulate", None)
    found = [(f"{type(block).__module__}.modulate", own)] if callable(own) else []
    return found + [("norm(x) * (1 + scale) + shift", modulate_unfused)]


def _run_check(block, x: torch.Tensor, e: torch.Tensor, freqs, context, context_img_len,
               transformer_options: dict, call: CallState) -> Verdict:
    """Run the block's own forward and the streamed path on the first tokens of batch item 0 and compare.

    x: (B, L, C); e: (B, 6, C) or per frame (B, F, 6, C), of which two frames are kept (the slice then
    has two frames' worth of tokens). Every patched module runs ComfyUI's code (a call state that the
    patch does not change), without ``patches`` and attention overrides (hooks that may keep state), under
    no_grad, with the random state restored: the check leaves no trace but its verdict.

    Not :func:`forward_check.compare`: this check tries each candidate modulation in turn, compares in float64
    and names what every candidate gave when none agrees.
    """
    cls = type(block)
    what = f"{cls.__name__} ({cls.__module__}, {str(x.dtype).replace('torch.', '')})"
    missing = missing_parts(block)
    if missing:
        return Verdict(False, f"{what} has no {', '.join(missing)}: the streamed path is built from "
                       f"{', '.join(BLOCK_PARTS)}, so the block runs whole (more memory).")
    available = min(x.shape[1], freqs.shape[1])
    frames = min(e.shape[1], 2) if e.ndim == 4 else 1
    if available < 2 * frames:
        frames = 1
    n = frames * min(CHECK_TOKENS // frames, available // frames)
    xs, fs = x[:1, :n].clone(), freqs[:1, :n]
    es = e[:1, :frames] if e.ndim == 4 else e[:1]
    cs = context[:1] if context is not None else None
    options = {k: v for k, v in transformer_options.items() if k not in OPTIONS_LEFT_OUT}
    probe = CallState(call.model, None, False)  # every patched module runs ComfyUI's code
    devices = [x.device] if x.device.type == "cuda" else []
    bound = tolerance(x.dtype)
    with torch.no_grad(), torch.random.fork_rng(devices=devices):
        try:
            ref = run_with_call(probe, cls.forward, block, xs, es, fs, cs, context_img_len=context_img_len,
                                transformer_options=options)
        except Exception as error:  # noqa: BLE001 - any failure means: do not stream this class
            return Verdict(False, f"{what}.forward raised {type(error).__name__} ({error}) on a slice of "
                           "this call: the block runs whole, not in chunks of rows (more memory).")
        tried = []
        for name, modulate in _candidates(block):
            try:
                ours = run_with_call(probe, streamed_forward, block, xs, es, fs, cs, context_img_len, options,
                                     CHECK_ROWS, modulate)
            except Exception as error:  # noqa: BLE001
                tried.append(f"with {name}: raised {type(error).__name__} ({error})")
                continue
            if not isinstance(ref, torch.Tensor) or ours.shape != ref.shape:
                tried.append(f"with {name}: shape {tuple(ours.shape)}, ComfyUI's {getattr(ref, 'shape', type(ref))}")
                continue
            reference = ref.double()
            diff = float((ours.double() - reference).norm() / reference.norm().clamp_min(1e-30))
            if diff <= bound:
                return Verdict(True, f"{what}: the streamed path (modulation: {name}) equals the block's own "
                               f"forward on a {n}-token slice of this call (relative difference {diff:.1e}, "
                               f"tolerance {bound:.1e}): its per-token work runs in chunks of rows.", modulate)
            tried.append(f"with {name}: relative difference {diff:.2g} (tolerance {bound:.1e})")
    return Verdict(False, f"{what}: the streamed path does not compute what the block's own forward does "
                   f"on a {n}-token slice of this call ({'; '.join(tried)}): the block runs whole, not in chunks "
                   "of rows (more memory). Please report your ComfyUI version.")


def _repeats(frames: int, length: int) -> int:
    """How many consecutive tokens share one of ``frames`` modulation rows in ComfyUI's ``repeat_e`` for a
    sequence of ``length`` tokens (1: one row per token): ``length // frames``, once more when that does
    not fill the sequence (the repeated rows are then cropped)."""
    repeats = length // frames
    if repeats == 1 or repeats * frames == length:
        return repeats
    return repeats + 1


def rows_of(e: torch.Tensor, length: int, lo: int, hi: int) -> torch.Tensor:
    """``repeat_e(e, x)[:, lo:hi]`` for x of ``length`` tokens, without the full-length copy.

    e: (B, F, C), one row for all tokens (F = 1) or per frame (see :func:`_repeats`).
    """
    if e.shape[1] == 1:
        return e
    repeats = _repeats(e.shape[1], length)
    if repeats == 1:
        return e[:, lo:hi]
    return e.index_select(1, torch.arange(lo, hi, device=e.device) // repeats)


def rows_at(e: torch.Tensor, length: int, tokens: torch.Tensor) -> torch.Tensor:
    """``repeat_e(e, x)[:, tokens]`` for x of ``length`` tokens, any token indices (see :func:`rows_of`)."""
    if e.shape[1] == 1:
        return e
    repeats = _repeats(e.shape[1], length)
    return e.index_select(1, tokens if repeats == 1 else tokens // repeats)


class ModulatedRows:
    """The self-attention input of a streamed block, ``modulate(x, norm1, shift, scale)``, computed for the
    rows asked for instead of held whole: at 4K the 14B model's modulated input is a 6.5 GiB tensor.

    The pack's self-attention (``WanSelfAttentionPatch``, which says so with ``takes_modulated_rows``) takes
    this object and gathers rows per chunk of windows; any other self-attention gets :meth:`whole`.

    x: (B, L, C), the block's input (alive anyway); shift, scale: the modulation rows for all L tokens,
    (B, 1 or F, C) (see :func:`rows_of`); lo, hi: the token range this object stands for (:meth:`narrow`).
    """

    def __init__(self, x: torch.Tensor, norm, shift: torch.Tensor, scale: torch.Tensor, modulate: Modulate,
                 lo: int = 0, hi: int | None = None, dtype: torch.dtype | None = None):
        self.x, self.norm, self.shift, self.scale, self.modulate = x, norm, shift, scale, modulate
        self.lo, self.hi = lo, x.shape[1] if hi is None else hi
        self.device = x.device
        self.dtype = dtype if dtype is not None else self._at(torch.arange(0, 1, device=x.device)).dtype

    @property
    def shape(self) -> torch.Size:
        return torch.Size((self.x.shape[0], self.hi - self.lo, self.x.shape[-1]))

    def _at(self, tokens: torch.Tensor) -> torch.Tensor:
        """Rows of the given absolute token indices, (B, n, C)."""
        length = self.x.shape[1]
        return self.modulate(self.x.index_select(1, tokens), self.norm, rows_at(self.shift, length, tokens),
                             rows_at(self.scale, length, tokens))

    def rows(self, lo: int, hi: int) -> torch.Tensor:
        """Rows lo..hi (relative to this range), (B, hi - lo, C)."""
        a, b, length = self.lo + lo, self.lo + min(hi, self.hi - self.lo), self.x.shape[1]
        return self.modulate(self.x[:, a:b], self.norm, rows_of(self.shift, length, a, b),
                             rows_of(self.scale, length, a, b))

    def index_select(self, dim: int, tokens: torch.Tensor) -> torch.Tensor:
        """Rows at the given token indices (relative to this range), like ``Tensor.index_select(1, tokens)``."""
        if dim != 1:
            raise ValueError(f"UltraGen: ModulatedRows.index_select selects tokens (dim 1), not dim {dim}.")
        return self._at(tokens + self.lo if self.lo else tokens)

    def narrow(self, lo: int, hi: int) -> "ModulatedRows":
        """The rows lo..hi of this range, still not computed."""
        return ModulatedRows(self.x, self.norm, self.shift, self.scale, self.modulate, self.lo + lo,
                             self.lo + hi, self.dtype)

    def whole(self, chunk: int = 2**16) -> torch.Tensor:
        """All rows as one tensor (B, hi - lo, C), computed ``chunk`` rows at a time."""
        n = self.hi - self.lo
        out = torch.empty(self.shape, dtype=self.dtype, device=self.device)
        for i in range(0, n, chunk):
            out[:, i:i + chunk] = self.rows(i, i + chunk)
        return out


def whole(x) -> torch.Tensor:
    """A tensor for ``x``, which is one or a :class:`ModulatedRows`."""
    return x.whole() if isinstance(x, ModulatedRows) else x


def takes_modulated_rows(module) -> bool:
    """The module's forward is the pack's self-attention (an object patch that accepts :class:`ModulatedRows`)."""
    return getattr(module.__dict__.get("forward"), "takes_modulated_rows", False)


class StreamedWanBlock:
    """Replacement for ``blocks.{i}.forward`` (an object patch): ComfyUI's block, per-token work in chunks."""

    def __init__(self, holder, block_index: int, previous=None):
        self.holder = holder
        self.path = ("blocks", block_index)
        self.previous = previous  # another pack's object patch of the same forward, if any

    def __call__(self, x, e, freqs, context, context_img_len=257, transformer_options={}, **kwargs):
        call = current_call()
        block = module_at(call, self.path, "a patched Wan block")
        if self.path[1] == 0 and call.proxy is not None and call.proxy.latent is not None:
            x = torch.cat((x, proxy_tokens(call.model, call.proxy, x)), dim=1)  # cut off by ProxyHeadCut
        memory = call.memory
        rows = memory.chunk_tokens if memory is not None else x.shape[1]
        attn2 = "attn2_patch" in transformer_options.get("patches", {})
        if call.split is not None and not kwargs and self.previous is None and not attn2 and known_block(block):
            verdict = check_block(block, x, e, freqs, context, context_img_len, transformer_options, call)
            if verdict.streams:
                return split_forward(block, x, e, freqs, context, context_img_len, transformer_options, rows,
                                     call.split, self.path[1], verdict.modulate)
        streams = call.changed and rows < x.shape[1] and not kwargs
        if streams and self.previous is not None:
            log_once(self.holder, ("block-previous", self.path), "%s block %d's forward is patched by another pack: "
                     "it runs whole, not in chunks of rows.", LOG_PREFIX, self.path[1])
            streams = False
        if streams and attn2:
            log_once(self.holder, "block-attn2", "%s an attn2_patch works on the whole sequence: the blocks run "
                     "whole, not in chunks of rows (more memory).", LOG_PREFIX)
            streams = False
        verdict = None
        if streams:
            verdict = check_block(block, x, e, freqs, context, context_img_len, transformer_options, call)
            if not verdict.streams:
                log_once(self.holder, ("block-refused", type(block), x.dtype), "%s %s", LOG_PREFIX, verdict.found,
                         level=logging.WARNING)
                streams = False
        if not streams:
            run = self.previous if self.previous is not None else (lambda *a, **k: type(block).forward(block, *a, **k))
            return run(x, e, freqs, context, context_img_len=context_img_len, transformer_options=transformer_options,
                       **kwargs)
        log_once(self.holder, ("block-streams", rows, x.shape[1]), "%s the blocks run their per-token work in chunks "
                 "of %d of %d tokens.", LOG_PREFIX, rows, x.shape[1])
        return streamed_forward(block, x, e, freqs, context, context_img_len, transformer_options, rows,
                                verdict.modulate)


def _modulation(block, x: torch.Tensor, e: torch.Tensor):
    """The block's six modulation rows (shift, scale, gate of self-attention; shift, scale, gate of the
    feed-forward), each (B, 1 or F, C)."""
    modulation = block.modulation.to(device=x.device, dtype=x.dtype)
    if e.ndim < 4:
        return (modulation + e).chunk(6, dim=1)  # each (B, 1, C)
    return (modulation.unsqueeze(0) + e).unbind(2)  # each (B, F, C)


def _self_attention(block, x: torch.Tensor, e, freqs, transformer_options: dict, rows: int,
                    modulate: Modulate) -> torch.Tensor:
    """block.self_attn of modulate(x, norm1, shift, scale): the pack's self-attention gets the modulated rows
    per chunk (:class:`ModulatedRows`), any other the whole modulated input, computed ``rows`` at a time."""
    source = ModulatedRows(x, block.norm1, e[0], e[1], modulate)
    attention_input = source if takes_modulated_rows(block.self_attn) else source.whole(rows)
    return block.self_attn(attention_input, freqs, transformer_options=transformer_options)  # (B, L, C)


def _rest(block, x_rows: torch.Tensor, y_rows: torch.Tensor, mod, context, context_img_len,
          transformer_options: dict, modulate: Modulate) -> torch.Tensor:
    """The block after self-attention, for some rows: residual, cross-attention, feed-forward.
    mod(i): modulation row i at these rows."""
    h = torch.addcmul(x_rows, y_rows, mod(2))
    h = h + block.cross_attn(block.norm3(h), context, context_img_len=context_img_len,
                             transformer_options=transformer_options)
    return torch.addcmul(h, block.ffn(modulate(h, block.norm2, mod(3), mod(4))), mod(5))


def streamed_forward(block, x: torch.Tensor, e: torch.Tensor, freqs, context, context_img_len,
                     transformer_options: dict, rows: int, modulate: Modulate = modulate_unfused) -> torch.Tensor:
    """WanAttentionBlock.forward over chunks of ``rows`` tokens: x (B, L, C), e (B, 6, C) or (B, F, 6, C)."""
    e = _modulation(block, x, e)
    length = x.shape[1]
    spans = [(lo, min(lo + rows, length)) for lo in range(0, length, rows)]
    y = _self_attention(block, x, e, freqs, transformer_options, rows, modulate)  # (B, L, C)
    return _rest_over_spans(block, x, y, e, spans, context, context_img_len, transformer_options, modulate)


def _rest_over_spans(block, x: torch.Tensor, y: torch.Tensor, e, spans, context, context_img_len,
                     transformer_options: dict, modulate: Modulate) -> torch.Tensor:
    """The block after self-attention for the whole sequence (x, y: (B, L, C)), per span of rows."""
    length = x.shape[1]
    out = None
    for lo, hi in spans:
        h = _rest(block, x[:, lo:hi], y[:, lo:hi], lambda i: rows_of(e[i], length, lo, hi), context,
                  context_img_len, transformer_options, modulate)
        if out is None:  # the new residual goes where y's consumed rows were, when the dtypes agree
            out = y if h.dtype == y.dtype and y.is_contiguous() else torch.empty(
                (x.shape[0], length, h.shape[-1]), dtype=h.dtype, device=h.device)
        out[:, lo:hi] = h
    return out


def split_forward(block, x: torch.Tensor, e: torch.Tensor, freqs, context, context_img_len,
                  transformer_options: dict, rows: int, split, index: int,
                  modulate: Modulate = modulate_unfused) -> torch.Tensor:
    """This rank's part of WanAttentionBlock.forward in a call shared out over devices (see wan_split).

    The self-attention returns the rows of the tokens this rank's windows own; the rest of the block runs
    for those rows, and the ranks all-gather the new residual. When the self-attention ran whole (a block
    that keeps full attention) every rank computes the whole block, the same on each.
    """
    e = _modulation(block, x, e)
    length = x.shape[1]
    spans = [(lo, min(lo + rows, length)) for lo in range(0, length, rows)]
    split.pending = index
    try:
        y = _self_attention(block, x, e, freqs, transformer_options, rows, modulate)
    finally:
        split.pending = None
    shares, split.shares = split.shares, None
    if shares is None:  # y (B, L, C), the same on every rank
        return _rest_over_spans(block, x, y, e, spans, context, context_img_len, transformer_options, modulate)
    mine = shares[split.rank].tokens  # y: (B, n, C), the rows of these tokens
    n = mine.numel()
    part = None
    for lo in range(0, n, rows):
        tokens = mine[lo:lo + rows]
        h = _rest(block, x.index_select(1, tokens), y[:, lo:lo + rows], lambda i: rows_at(e[i], length, tokens),
                  context, context_img_len, transformer_options, modulate)
        if part is None:
            part = torch.empty((x.shape[0], n, h.shape[-1]), dtype=h.dtype, device=h.device)
        part[:, lo:lo + rows] = h
    if part is None:  # a rank without windows (more ranks than windows)
        part = x[:, :0]
    del y
    out = torch.empty((x.shape[0], length, part.shape[-1]), dtype=part.dtype, device=x.device)
    return split.exchange.all_gather(split.rank, part, [s.tokens for s in shares], out)
