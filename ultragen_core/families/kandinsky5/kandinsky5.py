"""Kandinsky 5 Video (Lite and Pro, T2V and I2V): the patch of UltraGen Apply.

What is patched, on a clone of the ModelPatcher:
- an object patch on ``visual_transformer_blocks.{i}.self_attention.forward`` (the visual self-attention over the
  flattened (T, H, W) video tokens) of every visual block that does not keep full attention: it recomputes q / k /
  v with the module's own layers, norms and RoPE (:mod:`.kandinsky5_attention`) and runs the generic dual-branch
  op (:mod:`ultragen_core.adapters.self_attention`) with the model's own ``optimized_attention``;
- a DIFFUSION_MODEL wrapper that works out the (T, H, W) token grid of each call (the latent padded to the 1x2x2
  patch, as the model pads it), the sigma gate and the memory plan;
- an OUTER_SAMPLE wrapper that sets the sigma window for each sampling run.

Untouched: the text blocks, the text cross-attention (``cross_attention``), the feed-forward (ComfyUI chunks it in
four above 8192 tokens; the memory plan here only sizes the attention's query rows, so the two do not fight).
The RoPE table is the one the model computed for the call (its ``rope_scale_factor``, Pro's high-resolution
scale, or ``rope_options``): windows and pooled tokens take their rows of it, so they see the model's positions,
never scaled again. NABLA sparse attention on the model or in a call's options is refused (:mod:`.variants`).
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
from ...models import ModelFamily, native_grid
from .kandinsky5_attention import check_module, freqs_select, model_attention, namespace, output, qkv
from .variants import describe_config, kandinsky5_family, nabla_refusal, variant_of

log = logging.getLogger(__name__)

FAMILY = "kandinsky5"
TOKENS_IN_FLIGHT = 2**18  # query tokens per windowed attention call at most (as Wan)


def token_grid(dm, x: torch.Tensor) -> tuple[int, int, int]:
    """The (T, H, W) token grid of a call; x: the latent (B, C, t, h, w), or (B, C, h, w) for one frame. The
    model pads the latent up to whole patches before its patch embedding."""
    t, h, w = (1, *x.shape[2:]) if x.ndim == 4 else x.shape[2:]
    pt, ph, pw = dm.patch_size
    return math.ceil(t / pt), math.ceil(h / ph), math.ceil(w / pw)


def model_name(dm, family: ModelFamily) -> str:
    blocks = len(dm.visual_transformer_blocks)
    return f"{family.name} [{type(dm).__name__}, {dm.model_dim} wide, {blocks} visual blocks]"


def nabla_error(dm, options: dict) -> None:
    reason = nabla_refusal(dm, options)
    if reason is not None:
        raise NotImplementedError(f"UltraGen Apply on {type(dm).__name__} ({type(dm).__module__}): {reason}.")


class KandinskyDiffusionWrapper(DiffusionWrapper):
    """DIFFUSION_MODEL wrapper (:class:`..adapters.diffusion_wrapper.DiffusionWrapper`); a changed call with NABLA
    sparse attention is refused."""

    def shape(self, dm, args, kwargs, options) -> CallShape:
        rope = "rope_options of this call" if options.get("rope_options") is not None else "the model's RoPE scale"
        return CallShape(args[0], token_grid(dm, args[0]), note=f"; positions: {rope}")

    def model_name(self, dm) -> str:
        return model_name(dm, self.family)

    def memory_need(self, dm, shape, call) -> MemoryNeed:
        ffn = dm.visual_transformer_blocks[0].feed_forward.in_layer.out_features
        return MemoryNeed(dm.model_dim, ffn, shape.latent.shape[0])

    def model_attention(self, dm):
        attn = dm.visual_transformer_blocks[0].self_attention
        return model_attention(attn), kernels.interface_of(namespace(attn), attn)

    def prepare(self, call, args, kwargs, options, run) -> None:
        nabla_error(call.model, options)


def windowed_self_attention(m, x: torch.Tensor, freqs: torch.Tensor, plan: DualBranchPlan, block_index: int,
                            attention, rows: int, cache: dict | None = None) -> torch.Tensor:
    """The dual-branch self-attention of the Kandinsky 5 attention module ``m`` over x (B, T*H*W, C), the video
    grid ``plan.grid`` in (t, h, w) order; freqs: the model's RoPE table of those tokens (1, T*H*W, 1, D/2, 2, 2);
    attention: (q, k, v) (B', n, C) -> (B', n, C), heads bound; rows: query tokens per attention call.
    Returns the module's output (B, T*H*W, C)."""
    b, n, _ = x.shape

    def project(rows_in: torch.Tensor, tokens: torch.Tensor):  # (B, k, C), grid tokens (k,) -> q, k, v (B, k, C)
        return qkv(m, rows_in, freqs_select(freqs, tokens))

    width = m.to_query.out_features if hasattr(m.to_query, "out_features") else x.shape[-1]
    out = torch.empty((b, n, width), dtype=x.dtype, device=x.device)
    dual_branch_self_attention(plan, block_index, VideoTokens(x, project), attention, out, rows, cache=cache)
    return output(m, out, rows)


class KandinskySelfAttentionPatch:
    """Replacement for ``SelfAttention.forward`` of one visual block's ``self_attention`` (an object patch)."""

    def __init__(self, holder: PatchHolder, block_index: int, previous=None):
        self.holder = holder
        self.path = ("visual_transformer_blocks", block_index, "self_attention")
        self.block_index = block_index
        self.previous = previous  # another pack's object patch of the same forward, if any

    def original(self, m, x, freqs, transformer_options, extra):
        if self.previous is not None:
            return self.previous(x, freqs, transformer_options=transformer_options, **extra)
        return type(m).forward(m, x, freqs, transformer_options=transformer_options, **extra)

    def __call__(self, x, freqs, transformer_options={}, **extra):
        call = current_call()
        m = module_at(call, self.path, "a patched Kandinsky 5 self-attention")
        keep = None
        n = math.prod(call.plan.grid) if call.plan is not None else 0
        if not call.changed:
            keep = ""
        elif extra:
            keep = f"it was called with {sorted(extra)}, which the patch does not know"
        elif x.shape[1] != n or freqs.shape[1] != n:
            keep = f"{x.shape[1]} tokens (RoPE table: {freqs.shape[1]}) are not the video grid {call.plan.grid}"
        elif not check_module(m, x, freqs, transformer_options).agrees:
            keep = ""  # the check logged why
        if keep is not None:
            if keep:
                log_once(self.holder, ("keep", keep), "%s visual block %d self-attention: %s; it runs ComfyUI's full "
                         "attention.", LOG_PREFIX, self.block_index, keep, level=logging.WARNING)
            return self.original(m, x, freqs, transformer_options, extra)
        rows = min(call.memory.chunk_tokens if call.memory is not None else n, TOKENS_IN_FLIGHT)
        attention = kernels.choose(model_attention(m), m.num_heads, transformer_options, x.device,
                                   kernels.interface_of(namespace(m), m))
        return windowed_self_attention(m, x, freqs, call.plan, self.block_index, attention, rows, call.cache)


OURS = (KandinskySelfAttentionPatch,)


def apply(model, settings: AttentionSettings):
    """Return a clone of ``model`` (a ComfyUI ModelPatcher holding a Kandinsky 5 video model) with the patch."""
    dm = model.get_model_object("diffusion_model")
    nabla_error(dm, model.model_options.get("transformer_options", {}))
    family = kandinsky5_family(dm)
    native, note = native_grid(family, settings.native_resolution)
    blocks = len(dm.visual_transformer_blocks)
    holder = PatchHolder(settings, native, blocks, note)
    patched = install(model, holder, KandinskyDiffusionWrapper(holder, family))
    log.debug("%s Kandinsky 5 variant %s (%s).", LOG_PREFIX, variant_of(dm).value, describe_config(dm))
    for i in range(blocks):
        path = f"diffusion_model.visual_transformer_blocks.{i}.self_attention"
        if i in holder.full_blocks:
            remove_forward(patched, path, OURS)  # from an earlier Apply
        else:
            replace_forward(patched, path, lambda previous, i=i: KandinskySelfAttentionPatch(holder, i, previous),
                            OURS)
    return patched
