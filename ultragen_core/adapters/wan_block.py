"""A Wan block whose per-token work runs in chunks of rows, for calls that stream their tokens.

ComfyUI's ``WanAttentionBlock.forward`` holds several sequence-size tensors at once: the residual, the
modulated self-attention input, the self-attention output, the new residual, the cross-attention's
queries and output, the feed-forward's input and output. Everything but self-attention is per token,
so this replacement computes it over chunks of rows and writes each chunk's new residual into the
self-attention output's memory: the block then holds its input, the modulated input and one output
(the input and the output once self-attention is done), plus a chunk.

The math is ComfyUI's, step for step (the same modules, the same elementwise ops in the same order);
only the row count of each call differs. It runs only for the block versions whose ``forward`` it was
checked against (:data:`KNOWN_FORWARDS`, ComfyUI 0.3.64 and 0.33.0), and only when the call streams
(a memory budget below what the whole sequence needs); otherwise ComfyUI's own forward runs.
"""
from __future__ import annotations

import hashlib
import inspect
import io
import tokenize

import torch

from .base import LOG_PREFIX, current_call, log_once, module_at
from .wan_proxy import proxy_tokens

# sha256 (first 16 hex digits) of the tokens of WanAttentionBlock.forward, see forward_fingerprint
KNOWN_FORWARDS = {
    "fc5b215294a75871": "ComfyUI 0.3.64",
    "94743eb4e5a84d47": "ComfyUI 0.33.0",
}
_FINGERPRINTS: dict[type, str | None] = {}
_LAYOUT = (tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT, tokenize.ENDMARKER)


def forward_fingerprint(cls: type) -> str | None:
    """The fingerprint of ``cls.forward`` (see :data:`KNOWN_FORWARDS`): its source's tokens without comments,
    line breaks and indentation (the same on every Python version), or None without source."""
    if cls not in _FINGERPRINTS:
        try:
            source = inspect.getsource(cls.forward)
            tokens = [t.string for t in tokenize.generate_tokens(io.StringIO(source).readline) if t.type not in _LAYOUT]
        except (OSError, TypeError, tokenize.TokenError, SyntaxError):
            tokens = None
        _FINGERPRINTS[cls] = None if tokens is None else hashlib.sha256(" ".join(tokens).encode()).hexdigest()[:16]
    return _FINGERPRINTS[cls]


def known_block(block) -> bool:
    """A plain WanAttentionBlock whose forward is one this module reproduces."""
    cls = type(block)
    return cls.__name__ == "WanAttentionBlock" and forward_fingerprint(cls) in KNOWN_FORWARDS


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
        if call.split is not None and not kwargs and self.previous is None and known_block(block) \
                and "attn2_patch" not in transformer_options.get("patches", {}):
            return split_forward(block, x, e, freqs, context, context_img_len, transformer_options, rows,
                                 call.split, self.path[1])
        streams = call.changed and rows < x.shape[1] and not kwargs
        if streams and self.previous is not None:
            log_once(self.holder, ("block-previous", self.path), "%s block %d's forward is patched by another pack: "
                     "it runs whole, not in chunks of rows.", LOG_PREFIX, self.path[1])
            streams = False
        if streams and "attn2_patch" in transformer_options.get("patches", {}):
            log_once(self.holder, "block-attn2", "%s an attn2_patch works on the whole sequence: the blocks run "
                     "whole, not in chunks of rows (more memory).", LOG_PREFIX)
            streams = False
        if streams and not known_block(block):
            log_once(self.holder, ("block-unknown", type(block)), "%s this ComfyUI's %s.forward is not one the pack "
                     "was checked against: it runs whole, not in chunks of rows (more memory). Please report your "
                     "ComfyUI version.", LOG_PREFIX, type(block).__name__)
            streams = False
        if not streams:
            run = self.previous if self.previous is not None else (lambda *a, **k: type(block).forward(block, *a, **k))
            return run(x, e, freqs, context, context_img_len=context_img_len, transformer_options=transformer_options,
                       **kwargs)
        log_once(self.holder, ("block-streams", rows, x.shape[1]), "%s the blocks run their per-token work in chunks "
                 "of %d of %d tokens.", LOG_PREFIX, rows, x.shape[1])
        return streamed_forward(block, x, e, freqs, context, context_img_len, transformer_options, rows)


def _modulation(block, x: torch.Tensor, e: torch.Tensor):
    """The block's six modulation rows (shift, scale, gate of self-attention; shift, scale, gate of the
    feed-forward), each (B, 1 or F, C)."""
    modulation = block.modulation.to(device=x.device, dtype=x.dtype)
    if e.ndim < 4:
        return (modulation + e).chunk(6, dim=1)  # each (B, 1, C)
    return (modulation.unsqueeze(0) + e).unbind(2)  # each (B, F, C)


def _self_attention_input(block, x: torch.Tensor, e, spans) -> torch.Tensor:
    """norm1(x) * (1 + scale) + shift, (B, L, C), computed per span of rows."""
    length = x.shape[1]
    modulated = None
    for lo, hi in spans:
        part = torch.addcmul(rows_of(e[0], length, lo, hi), block.norm1(x[:, lo:hi]), 1 + rows_of(e[1], length, lo, hi))
        if modulated is None:
            modulated = torch.empty((x.shape[0], length, part.shape[-1]), dtype=part.dtype, device=part.device)
        modulated[:, lo:hi] = part
    return modulated


def _rest(block, x_rows: torch.Tensor, y_rows: torch.Tensor, mod, context, context_img_len,
          transformer_options: dict) -> torch.Tensor:
    """The block after self-attention, for some rows: residual, cross-attention, feed-forward.
    mod(i): modulation row i at these rows."""
    h = torch.addcmul(x_rows, y_rows, mod(2))
    h = h + block.cross_attn(block.norm3(h), context, context_img_len=context_img_len,
                             transformer_options=transformer_options)
    return torch.addcmul(h, block.ffn(torch.addcmul(mod(3), block.norm2(h), 1 + mod(4))), mod(5))


def streamed_forward(block, x: torch.Tensor, e: torch.Tensor, freqs, context, context_img_len,
                     transformer_options: dict, rows: int) -> torch.Tensor:
    """WanAttentionBlock.forward over chunks of ``rows`` tokens: x (B, L, C), e (B, 6, C) or (B, F, 6, C)."""
    e = _modulation(block, x, e)
    length = x.shape[1]
    spans = [(lo, min(lo + rows, length)) for lo in range(0, length, rows)]
    modulated = _self_attention_input(block, x, e, spans)
    y = block.self_attn(modulated, freqs, transformer_options=transformer_options)  # (B, L, C)
    del modulated
    return _rest_over_spans(block, x, y, e, spans, context, context_img_len, transformer_options)


def _rest_over_spans(block, x: torch.Tensor, y: torch.Tensor, e, spans, context, context_img_len,
                     transformer_options: dict) -> torch.Tensor:
    """The block after self-attention for the whole sequence (x, y: (B, L, C)), per span of rows."""
    length = x.shape[1]
    out = None
    for lo, hi in spans:
        h = _rest(block, x[:, lo:hi], y[:, lo:hi], lambda i: rows_of(e[i], length, lo, hi), context,
                  context_img_len, transformer_options)
        if out is None:  # the new residual goes where y's consumed rows were, when the dtypes agree
            out = y if h.dtype == y.dtype and y.is_contiguous() else torch.empty(
                (x.shape[0], length, h.shape[-1]), dtype=h.dtype, device=h.device)
        out[:, lo:hi] = h
    return out


def split_forward(block, x: torch.Tensor, e: torch.Tensor, freqs, context, context_img_len,
                  transformer_options: dict, rows: int, split, index: int) -> torch.Tensor:
    """This rank's part of WanAttentionBlock.forward in a call shared out over devices (see wan_split).

    The self-attention returns the rows of the tokens this rank's windows own; the rest of the block runs
    for those rows, and the ranks all-gather the new residual. When the self-attention ran whole (a block
    that keeps full attention) every rank computes the whole block, the same on each.
    """
    e = _modulation(block, x, e)
    length = x.shape[1]
    spans = [(lo, min(lo + rows, length)) for lo in range(0, length, rows)]
    modulated = _self_attention_input(block, x, e, spans)
    split.pending = index
    try:
        y = block.self_attn(modulated, freqs, transformer_options=transformer_options)
    finally:
        split.pending = None
    shares, split.shares = split.shares, None
    del modulated
    if shares is None:  # y (B, L, C), the same on every rank
        return _rest_over_spans(block, x, y, e, spans, context, context_img_len, transformer_options)
    mine = shares[split.rank].tokens  # y: (B, n, C), the rows of these tokens
    n = mine.numel()
    part = None
    for lo in range(0, n, rows):
        tokens = mine[lo:lo + rows]
        h = _rest(block, x.index_select(1, tokens), y[:, lo:lo + rows], lambda i: rows_at(e[i], length, tokens),
                  context, context_img_len, transformer_options)
        if part is None:
            part = torch.empty((x.shape[0], n, h.shape[-1]), dtype=h.dtype, device=h.device)
        part[:, lo:lo + rows] = h
    if part is None:  # a rank without windows (more ranks than windows)
        part = x[:, :0]
    del y
    out = torch.empty((x.shape[0], length, part.shape[-1]), dtype=part.dtype, device=x.device)
    return split.exchange.all_gather(split.rank, part, [s.tokens for s in shares], out)
