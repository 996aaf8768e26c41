"""Kandinsky 5's visual self-attention (``SelfAttention`` of ``comfy.ldm.kandinsky5.model``) rebuilt from the
module's own parts for any subset of its tokens, and the check that the rebuild computes what the module does.

The patch needs q / k / v of chosen tokens (a few windows, the pooled video), each at its own RoPE position, and
the output projection of chunks of rows. It takes them from the module: ``to_query`` / ``to_key`` /
``to_value``, the per-head RMS norms ``query_norm`` / ``key_norm``, the RoPE function of the module's own Python
module (``apply_rope1``, looked up at call time, so a pack that replaces it still applies) and ``out_layer``.

RoPE: the model computes one table per call, ``freqs`` (1, L, 1, head_dim / 2, 2, 2), per token along dim 1,
from the call's grid, its ``rope_scale_factor`` (Pro at high resolution: another one) or, when
transformer_options carry ``rope_options``, from those. The rebuild cuts that table to the tokens it needs, so
the windows see exactly the positions the model computed for this call: nothing is scaled a second time.

ComfyUI computes q and k in two chunks of tokens above 8192 tokens (and the feed-forward in four): the same
per-token work in other row counts. :func:`check_module` runs the module's own forward and the rebuild on a
slice of the first call of each (class, dtype), and once more on a slice longer than 8192 tokens the first time
a call is longer than that, so both of ComfyUI's paths are compared (HOUSE_STYLE 13: no source is read); a class
that computes something else keeps ComfyUI's forward, and the log says why.
"""
from __future__ import annotations

import logging
import sys

import torch

from ...adapters.forward_check import ForwardChecks, Verdict, compare, tolerance

log = logging.getLogger(__name__)

CHECK_TOKENS = 48  # tokens of the check's slice
CHUNKED_ABOVE = 8192  # ComfyUI chunks q / k (and the feed-forward) of longer sequences
OPTIONS_LEFT_OUT = ("patches", "patches_replace", "optimized_attention_override")  # stateful hooks: not run
MODULE_PARTS = ("to_query", "to_key", "to_value", "query_norm", "key_norm", "out_layer", "num_heads")


def namespace(module):
    """The Python module that defines the attention class: its ``apply_rope1`` / ``optimized_attention`` are the
    ones the model runs."""
    found = sys.modules.get(type(module).__module__)
    missing = [name for name in ("apply_rope1", "optimized_attention") if not callable(getattr(found, name, None))]
    if missing:
        raise NotImplementedError(
            f"UltraGen: {type(module).__module__} has no {', '.join(missing)}; this ComfyUI version's Kandinsky 5 "
            "attention is not supported. Sample without UltraGen Apply, and please report your ComfyUI version.")
    return found


def model_attention(module):
    """The attention function the module's forward calls (``optimized_attention`` as its module sees it)."""
    return namespace(module).optimized_attention


def freqs_select(freqs: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """The RoPE table (1 or B, n, ...) of the tokens ``tokens`` (n,)."""
    return freqs.index_select(1, tokens.to(freqs.device))


def qkv(m, x: torch.Tensor, freqs: torch.Tensor) -> list[torch.Tensor]:
    """q, k, v of the rows x (B, n, C) at the positions ``freqs`` (their RoPE table, (1 or B, n, 1, D/2, 2, 2)),
    as the module ``m`` computes them: each (B, n, heads * head_dim)."""
    rope = namespace(m).apply_rope1
    heads = (*x.shape[:-1], m.num_heads, -1)
    q = rope(m.query_norm(m.to_query(x).view(heads)), freqs)  # (B, n, H, D)
    k = rope(m.key_norm(m.to_key(x).view(heads)), freqs)
    v = m.to_value(x)
    return [q.flatten(2), k.flatten(2), v]


def output(m, out: torch.Tensor, rows: int) -> torch.Tensor:
    """``out_layer`` of the attention result ``out`` (B, L, C), ``rows`` tokens at a time -> (B, L, C)."""
    if rows >= out.shape[1]:
        return m.out_layer(out)
    first = m.out_layer(out[:, :rows])
    result = torch.empty((*out.shape[:2], first.shape[-1]), dtype=first.dtype, device=first.device)
    result[:, :rows] = first
    for lo in range(rows, out.shape[1], rows):
        result[:, lo:lo + rows] = m.out_layer(out[:, lo:lo + rows])
    return result


_CHECKS = ForwardChecks()


def forget_checks() -> None:
    """Drop every cached verdict (tests; a reloaded ComfyUI module)."""
    _CHECKS.clear()


def check_module(m, x: torch.Tensor, freqs: torch.Tensor, transformer_options: dict) -> Verdict:
    """Whether the rebuild of ``m`` equals the module's own forward for a call over x (B, L, C): cached per
    (class, dtype, L above ComfyUI's chunking threshold); the first such call runs :func:`_run_check` and logs."""
    chunked = x.shape[1] > CHUNKED_ABOVE
    n = min(CHUNKED_ABOVE + CHECK_TOKENS if chunked else CHECK_TOKENS, x.shape[1])
    return _CHECKS.verdict((type(m), x.dtype, chunked), lambda: _run_check(m, x, freqs, transformer_options, n))


def _run_check(m, x: torch.Tensor, freqs: torch.Tensor, transformer_options: dict, n: int) -> Verdict:
    """Run ``type(m).forward`` and the rebuild on the first n tokens of batch item 0 (full attention over the
    slice, the model's attention function, no stateful hooks, under no_grad)."""
    cls = type(m)
    what = f"{cls.__name__} ({cls.__module__}, {str(x.dtype).replace('torch.', '')})"

    def run_both():
        xs, fs = x[:1, :n].clone(), freqs[:1, :n]
        options = {k: v for k, v in transformer_options.items() if k not in OPTIONS_LEFT_OUT}
        with torch.no_grad():
            ref = cls.forward(m, xs, fs, transformer_options=options)
            q, k, v = qkv(m, xs, fs)
            return ref, output(m, model_attention(m)(q, k, v, heads=m.num_heads, transformer_options=options), n)
    return compare(what, n, x.dtype, run_both, [name for name in MODULE_PARTS if not hasattr(m, name)])


__all__ = ["CHECK_TOKENS", "CHUNKED_ABOVE", "Verdict", "check_module", "forget_checks", "freqs_select",
           "model_attention", "namespace", "output", "qkv", "tolerance"]
