"""LTX-Video 0.9.x (``LTXVModel``) and LTX-2 (``LTXAVModel``, its video stream): patch the video
self-attention of a loaded model.

What is patched, on a clone of the ModelPatcher:
- an object patch on ``transformer_blocks.{i}.attn1.forward`` (video self-attention) of every block that does
  not keep full attention: it recomputes q / k / v with the module's own layers, norms and RoPE
  (:mod:`.ltx_attention`) and runs the generic dual-branch op (:mod:`ultragen_core.adapters.self_attention`)
  with the model's own ``optimized_attention``;
- a DIFFUSION_MODEL wrapper that works out the (T, H, W) token grid of each call (latent frames minus the guide
  frames that ``LTXVAddGuide`` appends, patch 1) and the sigma gate;
- an OUTER_SAMPLE wrapper that sets the sigma window for each sampling run.

Untouched: text cross-attention (``attn2``), LTX-2's audio stream (``audio_attn1`` / ``audio_attn2``) and its
audio <-> video cross-attention, the feed-forward.

Guide tokens (keyframes / IC-LoRA references appended after the video, positions from ``keyframe_idxs``) are
shared tokens: every window attends to them besides its own tokens; they attend to each other and to the
pooled video; a guide attention mask (guide strength != 1 or a spatial guide mask) biases the guide keys of
every window and the pooled keys of each weighted guide query (:mod:`.ltx_guides`). Calls ComfyUI runs
otherwise stay ComfyUI's: STG's skipped self-attention (``stg_skip_self_attn``: the value passthrough), a mask
or a layout the grid does not explain (logged once).
"""
from __future__ import annotations

import logging
import math

import torch

from ...adapters.base import (LOG_PREFIX, PatchHolder, current_call, install, log_once, module_at, remove_forward,
                              replace_forward)
from ...adapters.diffusion_wrapper import CallShape, DiffusionWrapper, MemoryNeed
from ...adapters.self_attention import VideoTokens, dual_branch_self_attention
from ...attention import kernels
from ...config import AttentionSettings, DualBranchPlan
from ...models import LTX_REFUSED, LTX_SUPPORTED, ModelFamily, ltx_family, native_grid
from .ltx_attention import check_module, model_attention, namespace, output, pe_rows, pe_select, qkv
from .ltx_guides import GuideBias, guide_bias, masked_attention, shared_attention, window_attention

log = logging.getLogger(__name__)

FAMILY = "ltx"
SUPPORTED = LTX_SUPPORTED
REFUSED = LTX_REFUSED
TOKENS_IN_FLIGHT = 2**18  # self-attention: query tokens whose q / k / v exist at once (as Wan)
STG_KEY = "stg_skip_self_attn"  # transformer_options flag of STG's perturbed pass (ComfyUI 0.33)


def model_name(dm, family: ModelFamily) -> str:
    return f"{family.name} [{type(dm).__name__}, dim {dm.inner_dim}, {len(dm.transformer_blocks)} blocks]"


def video_latent(x):
    """The video latent (B, C, F, H, W) of a call's input: the tensor, or the first of LTX-2's [video, audio]."""
    return x[0] if isinstance(x, (list, tuple)) else x


def token_grid(dm, x: torch.Tensor, keyframe_idxs, denoise_mask) -> tuple[tuple[int, int, int] | None, str]:
    """The (T, H, W) grid of the video tokens of one call, or None with the reason.

    x: the video latent (B, C, F, H, W); its F latent frames hold the video, then the guide frames that
    ``keyframe_idxs`` (B, 3, G, 2) places (G tokens, whole latent frames). ComfyUI drops the tokens whose
    denoise mask is negative (dilated IC-LoRA guides); in the video frames that would break the grid.
    """
    pt, ph, pw = getattr(getattr(dm, "patchifier", None), "patch_size", (1, 1, 1))
    f, h, w = x.shape[2:]
    T, H, W = f // pt, h // ph, w // pw
    guides = int(keyframe_idxs.shape[2]) if keyframe_idxs is not None and keyframe_idxs.ndim >= 3 else 0
    if guides:
        if guides % (H * W):
            return None, f"{guides} guide tokens are not whole latent frames of {H}x{W} tokens"
        T -= guides // (H * W)
        if T < 1:
            return None, f"the {guides} guide tokens fill every latent frame"
        if denoise_mask is not None and denoise_mask.ndim == 5 and bool((denoise_mask[:, :, :T * pt] < 0).any()):
            return None, "a negative denoise mask drops tokens of the video frames"
    return (T, H, W), ""


class LtxDiffusionWrapper(DiffusionWrapper):
    """DIFFUSION_MODEL wrapper (:class:`..adapters.diffusion_wrapper.DiffusionWrapper`); the guide frames
    ``LTXVAddGuide`` appends are not part of the grid."""

    def shape(self, dm, args, kwargs, options) -> CallShape:
        x = video_latent(args[0])
        keyframe_idxs = args[6] if len(args) > 6 else kwargs.get("keyframe_idxs")
        grid, reason = token_grid(dm, x, keyframe_idxs, kwargs.get("denoise_mask"))
        guides = keyframe_idxs.shape[2] if keyframe_idxs is not None and keyframe_idxs.ndim >= 3 else 0
        note = f"; {guides} guide tokens after the video, shared by every window" if guides else ""
        return CallShape(x, grid, reason, note)

    def model_name(self, dm) -> str:
        return model_name(dm, self.family)

    def memory_need(self, dm, shape, call) -> MemoryNeed:
        return MemoryNeed(dm.inner_dim, 4 * dm.inner_dim, shape.latent.shape[0])

    def model_attention(self, dm):
        attn = dm.transformer_blocks[0].attn1
        return model_attention(attn), kernels.interface_of(namespace(attn), attn)


def windowed_self_attention(m, x: torch.Tensor, pe, plan: DualBranchPlan, block_index: int, attention, rows: int,
                            cache: dict | None = None, bias: GuideBias | None = None, masked=None) -> torch.Tensor:
    """The dual-branch self-attention of the LTX attention module ``m`` over x (B, L, C), whose first
    T*H*W tokens are the video grid ``plan.grid`` in (t, h, w) order and whose other tokens (guides) are shared.

    pe: the module's RoPE table of all L tokens; attention: (q, k, v) (B', n, D) -> (B', n, D), heads bound;
    rows: query tokens per attention call; bias: the guide attention mask per guide token (:mod:`.ltx_guides`),
    applied with ``masked`` ((q, k, v, mask) -> out). Returns the module's output (B, L, C_out).
    """
    ns = namespace(m)
    n = math.prod(plan.grid)
    b, total = x.shape[:2]
    width = m.heads * m.dim_head
    xv, pev = x[:, :n], pe_rows(pe, 0, n)

    def project(rows_in: torch.Tensor, tokens: torch.Tensor):  # (B, k, C), grid tokens (k,) -> q, k, v (B, k, D)
        return qkv(m, ns, rows_in, pe_select(pev, tokens))

    shared = qkv(m, ns, x[:, n:], pe_rows(pe, n, total)) if total > n else None  # (B, E, D) each
    video_out = torch.empty((b, n, width), dtype=x.dtype, device=x.device)
    guided = {}
    if bias is not None and shared is not None:
        guided = dict(window_attention=window_attention(masked, bias), shared_attention=shared_attention(masked, bias))
    shared_out = dual_branch_self_attention(plan, block_index, VideoTokens(xv, project), attention, video_out, rows,
                                            shared, cache=cache, **guided)
    out = video_out if shared_out is None else torch.cat((video_out, shared_out), dim=1)  # (B, L, D)
    del video_out, shared_out
    return output(m, x, out, rows)


class LtxSelfAttentionPatch:
    """Replacement for ``CrossAttention.forward`` of one block's ``attn1`` (an object patch)."""

    def __init__(self, holder: PatchHolder, block_index: int, previous=None):
        self.holder = holder
        self.path = ("transformer_blocks", block_index, "attn1")
        self.block_index = block_index
        self.previous = previous  # another pack's object patch of the same forward, if any

    def original(self, m, x, context, mask, pe, k_pe, transformer_options, extra):
        kwargs = dict(context=context, mask=mask, pe=pe, transformer_options=transformer_options, **extra)
        if k_pe is not None:  # ComfyUI 0.3.64's CrossAttention has no k_pe
            kwargs["k_pe"] = k_pe
        if self.previous is not None:
            return self.previous(x, **kwargs)
        return type(m).forward(m, x, **kwargs)

    def __call__(self, x, context=None, mask=None, pe=None, k_pe=None, transformer_options={}, **extra):
        call = current_call()
        m = module_at(call, self.path, "a patched LTX self-attention")
        keep = None
        if not call.changed or call.plan.is_identity:
            keep = ""
        elif context is not None or k_pe is not None or pe is None or extra:
            odd = [name for name, value in (("context", context), ("k_pe", k_pe)) if value is not None]
            odd += (["no RoPE table (pe)"] if pe is None else []) + sorted(extra)
            keep = f"it was called with {', '.join(odd)}, which a video self-attention call does not have"
        elif transformer_options.get(STG_KEY, False):
            keep = ""  # STG's perturbed pass: ComfyUI's value passthrough, as without UltraGen
        elif x.shape[1] < math.prod(call.plan.grid):
            keep = f"{x.shape[1]} tokens do not hold the video grid {call.plan.grid}"
        elif not check_module(m, x, pe, transformer_options).agrees:
            keep = ""  # the check logged why
        bias = None
        if keep is None and mask is not None:
            bias = guide_bias(mask, math.prod(call.plan.grid), x.shape[1])
            if bias is None:
                keep = (f"its self-attention mask ({type(mask).__name__}) is not the guide mask of {x.shape[1]} "
                        f"tokens with the guides after the {math.prod(call.plan.grid)} video tokens")
        if keep is not None:
            if keep:
                log_once(self.holder, ("keep", keep), "%s block %d self-attention: %s; it runs ComfyUI's full "
                         "attention.", LOG_PREFIX, self.block_index, keep, level=logging.WARNING)
            return self.original(m, x, context, mask, pe, k_pe, transformer_options, extra)
        rows = min(call.memory.chunk_tokens if call.memory is not None else x.shape[1], TOKENS_IN_FLIGHT)
        attention = kernels.choose(model_attention(m), m.heads, transformer_options, x.device,
                                   kernels.interface_of(namespace(m), m))
        masked = masked_attention(model_attention(m), m.heads, transformer_options) if bias is not None else None
        return windowed_self_attention(m, x, pe, call.plan, self.block_index, attention, rows, call.cache, bias, masked)


OURS = (LtxSelfAttentionPatch,)


def apply(model, settings: AttentionSettings):
    """Return a clone of ``model`` (a ComfyUI ModelPatcher holding an LTX model) with the patch."""
    dm = model.get_model_object("diffusion_model")
    family = ltx_family(dm)
    native, note = native_grid(family, settings.native_resolution)
    blocks = len(dm.transformer_blocks)
    holder = PatchHolder(settings, native, blocks, note)
    patched = install(model, holder, LtxDiffusionWrapper(holder, family))
    for i in range(blocks):
        path = f"diffusion_model.transformer_blocks.{i}.attn1"
        if i in holder.full_blocks:
            remove_forward(patched, path, OURS)  # from an earlier Apply
        else:
            replace_forward(patched, path, lambda previous, i=i: LtxSelfAttentionPatch(holder, i, previous), OURS)
    return patched
