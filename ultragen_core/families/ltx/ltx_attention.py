"""LTX's self-attention (``attn1``, a ``CrossAttention`` of ``comfy.ldm.lightricks.model``) rebuilt from the
module's own parts, for any subset of its tokens, and the check that the rebuild computes what the module does.

The patch needs q / k / v of chosen tokens (a few windows, the pooled video, the guide tokens), each with its
own RoPE position, and the output projection of chunks of rows. It takes them from the module: ``to_q`` /
``to_k`` / ``to_v``, ``q_norm`` / ``k_norm`` (RMS norms over all heads), the RoPE function of the module's
own Python module (``apply_rotary_emb``, looked up at call time, so a pack that replaces it still applies),
the optional per-head gate (``to_gate_logits``, LTX-2.3) and ``to_out``.

RoPE tables: ComfyUI 0.33 passes ``pe = (rotation matrices (B, L, heads, d/2, 2, 2), split flag)``, 0.3.64
``pe = (cos (B, L, C), sin (B, L, C))``; both are per token along dim 1, so :func:`pe_rows` /
:func:`pe_select` cut every tensor of the tuple along dim 1 and keep the rest.

No source is read (HOUSE_STYLE 13): :func:`check_module` runs the module's own forward on a slice of the
first call of each (class, dtype) and compares; a class that computes something else runs ComfyUI's own
forward (full attention), and the log says why.
"""
from __future__ import annotations

import logging
import sys

import torch

from ...adapters.forward_check import ForwardChecks, Verdict, compare, tolerance

log = logging.getLogger(__name__)

CHECK_TOKENS = 48  # tokens of the slice the check runs
OPTIONS_LEFT_OUT = ("patches", "patches_replace", "optimized_attention_override")  # stateful hooks: not run
MODULE_PARTS = ("to_q", "to_k", "to_v", "q_norm", "k_norm", "to_out", "heads", "dim_head")


def _cut(pe, cut):
    """``cut`` applied to every tensor of the RoPE table ``pe`` (a tensor or a tuple / list holding tensors)."""
    if isinstance(pe, torch.Tensor):
        return cut(pe)
    return type(pe)(cut(p) if isinstance(p, torch.Tensor) and p.ndim >= 2 else p for p in pe)


def pe_rows(pe, lo: int, hi: int):
    """The RoPE table of tokens lo..hi (each tensor of ``pe`` cut along dim 1)."""
    return _cut(pe, lambda p: p[:, lo:hi])


def pe_select(pe, tokens: torch.Tensor):
    """The RoPE table of the tokens ``tokens`` (n,) (each tensor of ``pe`` gathered along dim 1)."""
    return _cut(pe, lambda p: p.index_select(1, tokens.to(p.device)))


def pe_first(pe):
    """The RoPE table of batch item 0 (for the check's slice)."""
    return _cut(pe, lambda p: p[:1])


def namespace(module):
    """The Python module that defines the attention class: its ``apply_rotary_emb`` is the RoPE the model runs."""
    found = sys.modules.get(type(module).__module__)
    if found is None or not callable(getattr(found, "apply_rotary_emb", None)):
        raise NotImplementedError(
            f"UltraGen: {type(module).__module__} has no apply_rotary_emb; this ComfyUI version's LTX attention is "
            "not supported. Sample without UltraGen Apply, and please report your ComfyUI version.")
    return found


def model_attention(module):
    """The attention function the LTX attention module calls (``comfy.ldm.modules.attention
    .optimized_attention`` as its own module sees it, looked up at call time), with the module's
    ``attn_precision`` bound when it has one."""
    attention_module = sys.modules.get("comfy.ldm.modules.attention")
    fn = getattr(attention_module, "optimized_attention", None)
    if fn is None:
        raise NotImplementedError("UltraGen: comfy.ldm.modules.attention.optimized_attention is missing; this "
                                  "ComfyUI version is not supported for LTX. Sample without UltraGen Apply.")
    precision = getattr(module, "attn_precision", None)
    if precision is None:
        return fn

    def with_precision(q, k, v, heads, **kwargs):
        return fn(q, k, v, heads, attn_precision=precision, **kwargs)
    with_precision.__name__ = getattr(fn, "__name__", "optimized_attention")
    return with_precision


def qkv(m, ns, x: torch.Tensor, pe) -> list[torch.Tensor]:
    """q, k, v of the rows x (B, n, C) at the positions ``pe`` (the RoPE table of those n tokens), as the
    module ``m`` computes them: each (B, n, heads * dim_head)."""
    q = m.q_norm(m.to_q(x))
    k = m.k_norm(m.to_k(x))
    v = m.to_v(x)
    return [ns.apply_rotary_emb(q, pe), ns.apply_rotary_emb(k, pe), v]


def output(m, x: torch.Tensor, out: torch.Tensor, rows: int) -> torch.Tensor:
    """The module's output of its attention result ``out`` (B, L, heads * dim_head) for the input rows x
    (B, L, C): the optional per-head gate from x, then ``to_out``; (B, L, C_out), ``rows`` tokens at a time."""
    gate = getattr(m, "to_gate_logits", None)

    def one(lo: int, hi: int) -> torch.Tensor:
        o = out[:, lo:hi]
        if gate is not None:
            b, t, _ = o.shape
            gates = 2.0 * torch.sigmoid(gate(x[:, lo:hi]))  # (b, t, heads)
            o = (o.reshape(b, t, m.heads, m.dim_head) * gates.unsqueeze(-1)).reshape(b, t, m.heads * m.dim_head)
        return m.to_out(o)

    if rows >= out.shape[1]:
        return one(0, out.shape[1])
    first = one(0, rows)
    result = torch.empty((*out.shape[:2], first.shape[-1]), dtype=first.dtype, device=first.device)
    result[:, :rows] = first
    for lo in range(rows, out.shape[1], rows):
        result[:, lo:lo + rows] = one(lo, lo + rows)
    return result


_CHECKS = ForwardChecks()


def forget_checks() -> None:
    """Drop every cached verdict (tests; a reloaded ComfyUI module)."""
    _CHECKS.clear()


def check_module(m, x: torch.Tensor, pe, transformer_options: dict) -> Verdict:
    """Whether the rebuild of ``m`` (q / k / v, RoPE, attention, gate, output) equals the module's own forward:
    cached per (class, dtype); the first call runs :func:`_run_check` on a slice of these inputs and logs."""
    return _CHECKS.verdict((type(m), x.dtype), lambda: _run_check(m, x, pe, transformer_options))


def _run_check(m, x: torch.Tensor, pe, transformer_options: dict) -> Verdict:
    """Run ``type(m).forward`` and the rebuild on the first tokens of batch item 0 (full attention over the
    slice, the model's attention function, no stateful hooks, under no_grad, the random state restored)."""
    cls = type(m)
    what = f"{cls.__name__} ({cls.__module__}, {str(x.dtype).replace('torch.', '')})"
    n = min(CHECK_TOKENS, x.shape[1])

    def run_both():
        xs, ps = x[:1, :n].clone(), pe_rows(pe_first(pe), 0, n)
        options = {k: v for k, v in transformer_options.items() if k not in OPTIONS_LEFT_OUT}
        devices = [x.device] if x.device.type == "cuda" else []
        with torch.no_grad(), torch.random.fork_rng(devices=devices):
            ref = cls.forward(m, xs, pe=ps, transformer_options=options)
            q, k, v = qkv(m, namespace(m), xs, ps)
            attn = model_attention(m)(q, k, v, heads=m.heads, transformer_options=options)
            return ref, output(m, xs, attn, n)
    return compare(what, n, x.dtype, run_both, [name for name in MODULE_PARTS if not hasattr(m, name)])


__all__ = ["CHECK_TOKENS", "Verdict", "check_module", "forget_checks", "model_attention", "namespace", "output",
           "pe_rows", "pe_select", "qkv", "tolerance"]
