"""HunyuanVideo 1.5 (480p / 720p, T2V and I2V) and the original HunyuanVideo T2V: the patch of UltraGen Apply.

What is patched, on a clone of the ModelPatcher:
- an object patch on ``double_blocks.{i}.forward`` and ``single_blocks.{i}.forward`` for every block that does
  not keep full attention: it recomputes the block from its own modules (:mod:`.blocks`) and runs the joint
  attention as the generic dual-branch op (:func:`..adapters.self_attention.dual_branch_self_attention`): the
  video tokens are the grid (T, H, W), the text tokens (and the vision / ByT5 tokens ComfyUI puts in the text
  stream) are the shared tokens every window sees; the text queries attend to the kept text keys and the
  pooled video, so text conditioning stays global. Blocks are numbered double first, then single (the
  window shift alternates over that order; ``full_attention_blocks`` counts the same way);
- a DIFFUSION_MODEL wrapper that works out each call's token grid and the sigma gate;
- an OUTER_SAMPLE wrapper that sets the sigma window of each sampling run.

The additive text mask keeps working: its padding keys are dropped (:mod:`.text_mask`); batch items whose
masks differ run one at a time. Calls at or below the native size (the plan is one window and no global
branch) run ComfyUI's own forward, bit for bit. So do blocks the patch cannot recompute (modulation ranges,
attn1 patches, a mask that is not padding, another pack's object patch of the block), each with a log line.
A block another pack replaced through ``patches_replace`` still runs through this patch when the replacement
calls ComfyUI's ``original_block``, and only then.
"""
from __future__ import annotations

import logging
import math
import sys

import torch

from ...adapters.base import (LOG_PREFIX, PatchHolder, current_call, install, log_once, module_at, remove_forward,
                              replace_forward)
from ...adapters.diffusion_wrapper import CallShape, DiffusionWrapper, MemoryNeed
from ...adapters.self_attention import VideoTokens, dual_branch_self_attention
from ...attention import kernels
from ...config import AttentionSettings
from ...models import native_grid
from .blocks import CHECK_TOKENS, Stream, check_block, double_block, full_joint, normed_heads, single_block
from .text_mask import KeptKeys, kept_text_keys
from .variants import describe_config, hunyuan_family, variant_of

log = logging.getLogger(__name__)

FAMILY = "hunyuan_video"
TOKENS_IN_FLIGHT = 2**18  # query tokens per windowed attention call at most (as Wan)
MLP_CHUNK_ELEMENTS = 2**30  # tokens x hidden channels per step of a double block's per-token work (2 GiB in bf16)


def token_grid(dm, x: torch.Tensor) -> tuple[int, int, int]:
    """The (T, H, W) grid of the video tokens of a call, x: (B, C, t, h, w) latent (the patch embedding pads
    to whole patches)."""
    return tuple(math.ceil(n / p) for n, p in zip(x.shape[2:], dm.patch_size))


def model_name(dm) -> str:
    return (f"{variant_of(dm).value} [{type(dm).__name__}, {dm.hidden_size} wide, "
            f"{len(dm.double_blocks)} double + {len(dm.single_blocks)} single blocks]")


def flux_math(m):
    """The module whose ``attention`` / ``apply_rope`` / ``optimized_attention`` the block calls (looked up at
    call time through the block's own module, so packs that replace them still apply)."""
    layers = sys.modules[type(m).__module__]
    attention = getattr(layers, "attention", None)
    return sys.modules[getattr(attention, "__module__", "comfy.ldm.flux.math")]


def attention_interface(m) -> kernels.ModelAttention:
    """How the block calls its attention: containers when its attention module uses them, and the per-layer
    ``comfy_attention`` (ComfyUI 0.38's preferred attention) of the block or its video attention, if any."""
    holder = next((c for c in (m, getattr(m, "img_attn", None)) if getattr(c, "comfy_attention", None) is not None), m)
    return kernels.interface_of(flux_math(m), holder)


class HunyuanDiffusionWrapper(DiffusionWrapper):
    """DIFFUSION_MODEL wrapper (:class:`..adapters.diffusion_wrapper.DiffusionWrapper`)."""

    def shape(self, dm, args, kwargs, options) -> CallShape:
        return CallShape(args[0], token_grid(dm, args[0]), note="; text tokens shared by every window")

    def model_name(self, dm) -> str:
        return model_name(dm)

    def memory_need(self, dm, shape, call) -> MemoryNeed:
        hidden = int(getattr(first_block(dm), "mlp_hidden_dim", 4 * dm.hidden_size))
        return MemoryNeed(dm.hidden_size, hidden, shape.latent.shape[0], tokens_of="video tokens of width",
                          smallest=" (the blocks' inputs and outputs, one window)")

    def model_attention(self, dm):
        block = first_block(dm)
        return flux_math(block).optimized_attention, attention_interface(block)


def first_block(dm):
    """The first block of the model (double, or single when it has none)."""
    return dm.double_blocks[0] if len(dm.double_blocks) else dm.single_blocks[0]


def windowed_joint(plan, block_index: int, m, pe: torch.Tensor, kept: KeptKeys, attention, rows: int,
                   cache: dict):
    """The joint attention of a patched block: windows + global branch over the video stream, the text stream
    as shared tokens (its kept keys seen by every window; its queries over the kept text keys and the pooled
    video). pe: RoPE (B or 1, 1, E+N, D/2, 2, 2) of [text; video]."""
    math_ns = flux_math(m)
    heads = m.num_heads

    def rows_qkv(stream: Stream, qkv: torch.Tensor, pe_rows: torch.Tensor):  # -> q, k, v (B, n, H*D)
        q, k, v = normed_heads(Stream(qkv, stream.norm), heads)  # (B, H, n, D)
        q, k = math_ns.apply_rope(q, k, pe_rows)
        return [t.transpose(1, 2).flatten(2) for t in (q, k, v)]

    def one(txt: Stream, img: Stream, pe_b: torch.Tensor, keep: torch.Tensor | None):
        e = txt.qkv.shape[1]
        pe_img = pe_b[:, :, e:]
        tq, tk, tv = rows_qkv(txt, txt.qkv, pe_b[:, :, :e])
        if keep is not None:  # padding keys weigh exactly 0 under ComfyUI's mask: leave them out
            tk, tv = tk.index_select(1, keep), tv.index_select(1, keep)

        def project(x_rows, tokens):  # video rows (B, n, 3C) at grid tokens (n,) -> q, k, v (B, n, H*D)
            return rows_qkv(img, x_rows, pe_img.index_select(2, tokens))
        b, n, _ = img.qkv.shape
        out = torch.empty((b, n, tq.shape[-1]), dtype=tq.dtype, device=tq.device)
        txt_out = dual_branch_self_attention(plan, block_index, VideoTokens(img.qkv, project), attention, out, rows,
                                             (tq, tk, tv), cache=cache)
        return txt_out, out

    def joint(txt: Stream, img: Stream):
        if kept.shared:
            return one(txt, img, pe, kept.for_item(0))
        parts = [one(Stream(txt.qkv[b:b + 1], txt.norm), Stream(img.qkv[b:b + 1], img.norm),
                     pe[b:b + 1] if pe.shape[0] > 1 else pe, kept.for_item(b)) for b in range(img.qkv.shape[0])]
        return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])
    return joint


class BlockPatch:
    """Replacement for one HunyuanVideo block's ``forward`` (an object patch); see the module docstring."""

    kind = ""

    def __init__(self, holder: PatchHolder, index: int, block_index: int, previous=None):
        self.holder = holder
        self.path = (f"{self.kind}_blocks", index)
        self.block_index = block_index  # double blocks first, then single: the window shift's parity
        self.previous = previous

    def original(self, m, *args, **kwargs):
        if self.previous is not None:
            return self.previous(*args, **kwargs)
        return type(m).forward(m, *args, **kwargs)

    def why_not(self, call, m, video_tokens: int, modulation_dims, options: dict, extra: dict) -> str | None:
        """Why this call of the block keeps ComfyUI's forward (for the log), or None (the mask is looked at
        after: :meth:`prepare`)."""
        if self.previous is not None:
            return f"another pack patched {self.kind}_blocks.{self.path[1]}.forward; it runs unchanged"
        if extra:
            return f"the block was called with arguments the patch does not know ({sorted(extra)})"
        if getattr(m, "flipped_img_txt", False):
            return "the block puts the video before the text (flipped_img_txt), which the patch does not recompute"
        if any(d is not None for d in modulation_dims):
            return "per-token modulation ranges (the guiding frame of HunyuanVideo I2V) are not recomputed"
        patches = options.get("patches", {})
        if patches.get("attn1_patch") or patches.get("attn1_output_patch"):
            return "attn1_patch / attn1_output_patch hooks take the whole sequence's q / k / v"
        if video_tokens != math.prod(call.plan.grid):
            return (f"{video_tokens} video tokens do not form the grid {call.plan.grid} (reference-latent tokens "
                    "before the video are not supported)")
        return None

    def attention_of(self, m, options, device):
        math_ns = flux_math(m)
        return kernels.choose(math_ns.optimized_attention, m.num_heads, options, device,
                              attention_interface(m))

    def rows(self, call, total: int) -> int:
        return min(call.memory.chunk_tokens if call.memory is not None else total, TOKENS_IN_FLIGHT)

    def prepare(self, call, m, text_tokens: int, video_tokens: int, mask, modulation_dims, options, extra, batch):
        """The kept text keys (:class:`.text_mask.KeptKeys`) when the windowed block runs, else None (logged once)."""
        reason = self.why_not(call, m, video_tokens, modulation_dims, options, extra)
        kept = None
        if reason is None:
            kept = kept_text_keys(mask, batch, text_tokens, text_tokens + video_tokens)
            if isinstance(kept, str):
                reason, kept = kept, None
        if reason is not None:
            log_once(self.holder, (self.kind, reason), "%s %s blocks: %s; full attention there.", LOG_PREFIX,
                     self.kind, reason)
        return kept


class DoubleBlockPatch(BlockPatch):
    kind = "double"

    def __call__(self, img, txt, vec, pe, attn_mask=None, modulation_dims_img=None, modulation_dims_txt=None,
                 transformer_options={}, **extra):
        call = current_call()
        m = module_at(call, self.path, "a patched HunyuanVideo double block")
        args = (img, txt, vec, pe)
        kwargs = dict(attn_mask=attn_mask, modulation_dims_img=modulation_dims_img,
                      modulation_dims_txt=modulation_dims_txt, transformer_options=transformer_options, **extra)
        if not call.changed:
            return self.original(m, *args, **kwargs)
        e, n = txt.shape[1], img.shape[1]
        kept = self.prepare(call, m, e, n, attn_mask, (modulation_dims_img, modulation_dims_txt),
                            transformer_options, extra, img.shape[0])
        if kept is None or not self.checked(m, img, txt, vec, pe, attn_mask, transformer_options):
            return self.original(m, *args, **kwargs)
        rows = self.rows(call, n)
        joint = windowed_joint(call.plan, self.block_index, m, pe, kept,
                               self.attention_of(m, transformer_options, img.device), rows, call.cache)
        hidden = next((layer.out_features for layer in m.img_mlp.modules()
                       if isinstance(getattr(layer, "out_features", None), int)), 4 * img.shape[-1])
        per_token = min(rows, max(1, MLP_CHUNK_ELEMENTS // (img.shape[0] * hidden)))  # video tokens per MLP step
        return double_block(m, img, txt, vec, joint, per_token)

    def checked(self, m, img, txt, vec, pe, mask, options) -> bool:
        """Whether the recomputed block equals ComfyUI's on all the text tokens and the first
        :data:`.blocks.CHECK_TOKENS` video tokens of this call (checked once per class and dtype)."""
        e, n = txt.shape[1], min(img.shape[1], CHECK_TOKENS)

        def run_both():  # -> ((img, txt) of ComfyUI's forward, (img, txt) recomputed)
            pe_s, mask_s = pe[:, :, :e + n], None if mask is None else mask[..., :e + n]
            full = full_joint(flux_math(m), pe_s, mask_s, options, m.num_heads, attention_interface(m).preferred)
            mine = double_block(m, img[:, :n].clone(), txt.clone(), vec, full)
            return type(m).forward(m, img[:, :n].clone(), txt.clone(), vec, pe_s, attn_mask=mask_s,
                                   transformer_options=options), mine
        return check_block("double", m, img.dtype, n, run_both).agrees


class SingleBlockPatch(BlockPatch):
    kind = "single"

    def __call__(self, x, vec, pe, attn_mask=None, modulation_dims=None, transformer_options={}, **extra):
        call = current_call()
        m = module_at(call, self.path, "a patched HunyuanVideo single block")
        kwargs = dict(attn_mask=attn_mask, modulation_dims=modulation_dims, transformer_options=transformer_options,
                      **extra)
        if not call.changed:
            return self.original(m, x, vec, pe, **kwargs)
        n = math.prod(call.plan.grid)
        img_slice = transformer_options.get("img_slice")  # [text tokens, all tokens]: ComfyUI says where the video is
        if not img_slice or int(img_slice[1]) != x.shape[1]:
            log_once(self.holder, ("single", "img_slice"), "%s single blocks: ComfyUI does not say where the video "
                     "tokens are (no transformer_options img_slice; ComfyUI 0.3.64's HunyuanVideo puts them before "
                     "the text); full attention there.", LOG_PREFIX)
            return self.original(m, x, vec, pe, **kwargs)
        e = int(img_slice[0])
        kept = self.prepare(call, m, e, x.shape[1] - e, attn_mask, (modulation_dims,), transformer_options, extra,
                            x.shape[0])
        if kept is None or not self.checked(m, x, e, vec, pe, attn_mask, transformer_options):
            return self.original(m, x, vec, pe, **kwargs)
        joint = windowed_joint(call.plan, self.block_index, m, pe, kept,
                               self.attention_of(m, transformer_options, x.device), self.rows(call, n), call.cache)
        return single_block(m, x, vec, e, joint)

    def checked(self, m, x, e, vec, pe, mask, options) -> bool:
        """Whether the recomputed block equals ComfyUI's on the e text tokens and the first
        :data:`.blocks.CHECK_TOKENS` video tokens of this call (checked once per class and dtype)."""
        n = min(x.shape[1] - e, CHECK_TOKENS)

        def run_both():  # -> (ComfyUI's forward (B, e+n, C), recomputed (B, e+n, C))
            pe_s, mask_s = pe[:, :, :e + n], None if mask is None else mask[..., :e + n]
            full = full_joint(flux_math(m), pe_s, mask_s, options, m.num_heads, attention_interface(m).preferred)
            mine = single_block(m, x[:, :e + n].clone(), vec, e, full)
            return type(m).forward(m, x[:, :e + n].clone(), vec, pe_s, attn_mask=mask_s,
                                   transformer_options=options), mine
        return check_block("single", m, x.dtype, n, run_both).agrees


OURS = (DoubleBlockPatch, SingleBlockPatch)


def apply(model, settings: AttentionSettings):
    """Return a clone of ``model`` (a ComfyUI ModelPatcher holding a HunyuanVideo model the registry patches)
    with the patch."""
    dm = model.get_model_object("diffusion_model")
    family = hunyuan_family(dm)
    native, note = native_grid(family, settings.native_resolution)
    doubles, singles = len(dm.double_blocks), len(dm.single_blocks)
    holder = PatchHolder(settings, native, doubles + singles, note)
    patched = install(model, holder, HunyuanDiffusionWrapper(holder, family))
    log.debug("%s HunyuanVideo variant %s (%s).", LOG_PREFIX, variant_of(dm).value, describe_config(dm))
    for kind, count, offset, cls in (("double", doubles, 0, DoubleBlockPatch), ("single", singles, doubles,
                                                                                SingleBlockPatch)):
        for i in range(count):
            path = f"diffusion_model.{kind}_blocks.{i}"
            if offset + i in holder.full_blocks:
                remove_forward(patched, path, OURS)  # from an earlier Apply
            else:
                replace_forward(patched, path, lambda previous: cls(holder, i, offset + i, previous), OURS)
    return patched
