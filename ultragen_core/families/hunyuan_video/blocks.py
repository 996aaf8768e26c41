"""HunyuanVideo's Flux-style blocks recomputed from their own modules, with the joint attention handed in.

ComfyUI's ``DoubleStreamBlock`` / ``SingleStreamBlock`` (comfy.ldm.flux.layers) compute their joint attention
with a module-level ``attention()`` over [text; video], which no object patch can reach. The patch replaces the
block's ``forward`` with :func:`double_block` / :func:`single_block`: the same steps with the block's own
modules (modulation, norms, qkv / linear1, QK norm, projections, MLP) and the layers module's own ``apply_mod``,
and the joint attention as a function of the two streams' projected rows (:class:`Stream`). With
:func:`full_joint` (ComfyUI's own ``attention``) they are the block's forward; :func:`check_block` runs both on a
small slice of a real call, once per block class and dtype, and compares them
(:mod:`ultragen_core.adapters.forward_check`); the patch falls back to ComfyUI's forward when they disagree
(HOUSE_STYLE 13: checked by running, not by reading the source).

What is not recomputed here (the patch runs ComfyUI's forward then): per-token modulation ranges
(``modulation_dims``: the original HunyuanVideo I2V's guiding frame) and ``attn1_patch`` /
``attn1_output_patch`` hooks, which take the whole sequence's q / k / v.
"""
from __future__ import annotations

import logging
import sys
from dataclasses import dataclass
from typing import Callable

import torch

from ...adapters.forward_check import ForwardChecks, Verdict, Wording, compare

log = logging.getLogger(__name__)


@dataclass
class Stream:
    """One stream's attention input. qkv: (B, n, 3*C) rows of the stream's qkv projection, before the QK norm
    (q, k, v of each head side by side as ComfyUI's view(B, n, 3, H, D) reads them); norm: its QKNorm."""

    qkv: torch.Tensor
    norm: torch.nn.Module


# (text stream (B, E, 3C), video stream (B, N, 3C)) -> (text output (B, E, C), video output (B, N, C))
JointAttention = Callable[[Stream, Stream], "tuple[torch.Tensor, torch.Tensor]"]


def namespace_of(module):
    """The Python module that defines a block's class (its ``apply_mod``, ``attention``)."""
    return sys.modules[type(module).__module__]


def split_heads(qkv: torch.Tensor, heads: int):
    """(B, n, 3*H*D) -> q, k, v each (B, H, n, D), as ComfyUI's blocks split them."""
    b, n, _ = qkv.shape
    return qkv.view(b, n, 3, heads, -1).permute(2, 0, 3, 1, 4)


def normed_heads(stream: Stream, heads: int):
    """q, k, v (B, H, n, D) of a stream, q and k through its QK norm (which casts them to v's dtype)."""
    q, k, v = split_heads(stream.qkv, heads)
    q, k = stream.norm(q, k, v)
    return q, k, v


def full_joint(math_ns, pe: torch.Tensor, mask, transformer_options: dict, heads: int,
               preferred=None) -> JointAttention:
    """The blocks' own joint attention: ComfyUI's ``attention`` (RoPE ``pe`` (B, 1, E+N, D/2, 2, 2), additive
    ``mask``; ``preferred``: the layer's preferred attention, ComfyUI 0.38) over [text; video], split back into
    the two streams."""
    extra = {"preferred_attention": preferred} if preferred is not None else {}
    def joint(txt: Stream, img: Stream):
        tq, tk, tv = normed_heads(txt, heads)
        iq, ik, iv = normed_heads(img, heads)
        q, k, v = (torch.cat(pair, dim=2) for pair in ((tq, iq), (tk, ik), (tv, iv)))  # (B, H, E+N, D)
        out = math_ns.attention(q, k, v, pe=pe, mask=mask, transformer_options=transformer_options,
                                **extra)  # (B, E+N, C)
        e = txt.qkv.shape[1]
        return out[:, :e], out[:, e:]
    return joint


def _spans(length: int, rows: int | None):
    """[lo, hi) spans of at most ``rows`` tokens over ``length`` (one span when rows is None)."""
    step = length if rows is None or rows >= length else max(1, rows)
    return [(lo, min(length, lo + step)) for lo in range(0, length, step)]


def double_block(m, img: torch.Tensor, txt: torch.Tensor, vec, joint: JointAttention, rows: int | None = None):
    """DoubleStreamBlock.forward of block ``m`` without modulation ranges or attention hooks.

    img: (B, N, C) video tokens, txt: (B, E, C) text tokens (both updated in place, as ComfyUI does);
    vec: the modulation input; rows: video tokens per step of the per-token work (norms, qkv, projection, MLP),
    None: all at once as ComfyUI (every step is per token: chunks only bound the peak memory); returns (img, txt)."""
    apply_mod = namespace_of(m).apply_mod
    if getattr(m, "modulation", True):
        img_mod1, img_mod2 = m.img_mod(vec)
        txt_mod1, txt_mod2 = m.txt_mod(vec)
    else:
        (img_mod1, img_mod2), (txt_mod1, txt_mod2) = vec
    spans = _spans(img.shape[1], rows)
    img_qkv = None  # (B, N, 3C)
    for lo, hi in spans:
        part = m.img_attn.qkv(apply_mod(m.img_norm1(img[:, lo:hi]), (1 + img_mod1.scale), img_mod1.shift, None))
        if len(spans) == 1:
            img_qkv = part
            break
        if img_qkv is None:
            img_qkv = torch.empty((*img.shape[:2], part.shape[-1]), dtype=part.dtype, device=part.device)
        img_qkv[:, lo:hi] = part
    txt_qkv = m.txt_attn.qkv(apply_mod(m.txt_norm1(txt), (1 + txt_mod1.scale), txt_mod1.shift, None))  # (B, E, 3C)
    txt_attn, img_attn = joint(Stream(txt_qkv, m.txt_attn.norm), Stream(img_qkv, m.img_attn.norm))
    del img_qkv, txt_qkv
    for lo, hi in spans:
        x = img[:, lo:hi]  # a view: updated in place
        x += apply_mod(m.img_attn.proj(img_attn[:, lo:hi]), img_mod1.gate, None, None)
        x += apply_mod(m.img_mlp(apply_mod(m.img_norm2(x), (1 + img_mod2.scale), img_mod2.shift, None)),
                       img_mod2.gate, None, None)
    del img_attn
    txt += apply_mod(m.txt_attn.proj(txt_attn), txt_mod1.gate, None, None)
    del txt_attn
    txt += apply_mod(m.txt_mlp(apply_mod(m.txt_norm2(txt), (1 + txt_mod2.scale), txt_mod2.shift, None)),
                     txt_mod2.gate, None, None)
    if txt.dtype == torch.float16:
        txt = torch.nan_to_num(txt, nan=0.0, posinf=65504, neginf=-65504)
    return img, txt


def single_block(m, x: torch.Tensor, vec, text_tokens: int, joint: JointAttention) -> torch.Tensor:
    """SingleStreamBlock.forward of block ``m`` without modulation ranges or attention hooks.

    x: (B, E+N, C), the text tokens first (updated in place, as ComfyUI does); returns x."""
    apply_mod = namespace_of(m).apply_mod
    mod = m.modulation(vec)[0] if m.modulation else vec
    hidden = m.hidden_size
    first = getattr(m, "mlp_hidden_dim_first", m.mlp_hidden_dim)
    qkv, mlp = torch.split(m.linear1(apply_mod(m.pre_norm(x), (1 + mod.scale), mod.shift, None)),
                           [3 * hidden, first], dim=-1)  # (B, E+N, 3C), (B, E+N, first)
    e = text_tokens
    txt_attn, img_attn = joint(Stream(qkv[:, :e], m.norm), Stream(qkv[:, e:], m.norm))
    del qkv
    attn = torch.cat((txt_attn, img_attn), dim=1)  # (B, E+N, C)
    del txt_attn, img_attn
    if getattr(m, "yak_mlp", False):
        mlp = m.mlp_act(mlp[..., first // 2:]) * mlp[..., :first // 2]
    else:
        mlp = m.mlp_act(mlp)
    output = m.linear2(torch.cat((attn, mlp), 2))
    x += apply_mod(output, mod.gate, None, None)
    if x.dtype == torch.float16:
        x = torch.nan_to_num(x, nan=0.0, posinf=65504, neginf=-65504)
    return x


CHECK_TOKENS = 16  # video tokens of the slice the check runs on (with all the text tokens)

# What the check logs: forward_check's comparison, worded for a whole block.
BLOCK_WORDING = Wording(
    agrees="{what}: the recomputed block equals its own forward on a slice of {n} video tokens (relative difference "
           "{err:.1e}, bound {bound:.0e}); windows run in it.",
    differs="{what}: the recomputed block does not equal its own forward (relative difference {err:.2e}, bound "
            "{bound:.0e}, on a slice of {n} video tokens); these blocks keep ComfyUI's full attention. Please report "
            "your ComfyUI version.",
    raised="{what}: the recomputed block does not equal its own forward (the check on a slice of {n} video tokens "
           "raised {error}); these blocks keep ComfyUI's full attention. Please report your ComfyUI version.")

_CHECKS = ForwardChecks()


def forget_checks() -> None:
    """Drop every cached verdict: the next call runs the check again (tests; a reloaded ComfyUI module)."""
    _CHECKS.clear()


def check_block(kind: str, m, dtype: torch.dtype, n: int, run_both: Callable[[], tuple]) -> Verdict:
    """Whether the recomputed block equals the block's own forward: cached per (block class, kind, dtype); the
    first call runs ``run_both`` -> (the block's forward, the recomputed block) on this call's slice of n video
    tokens under no_grad, each side a tensor or a tuple of them, and compares them
    (:func:`..adapters.forward_check.compare`, which logs)."""
    cls = type(m)
    what = f"{cls.__name__} ({cls.__module__}, {kind} block, {str(dtype).replace('torch.', '')})"

    def run_without_grad():
        with torch.no_grad():
            return run_both()
    return _CHECKS.verdict((cls, kind, dtype), lambda: compare(what, n, dtype, run_without_grad,
                                                                wording=BLOCK_WORDING))


__all__ = ["BLOCK_WORDING", "CHECK_TOKENS", "JointAttention", "Stream", "Verdict", "check_block", "double_block",
           "forget_checks", "full_joint", "namespace_of", "normed_heads", "single_block", "split_heads"]
