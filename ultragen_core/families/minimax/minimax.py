"""MiniMax-H3 (``comfy.ldm.minimax.model.MiniMaxH3Model``, 33B audio + video): the patch of UltraGen Apply.

What is patched, on a clone of the ModelPatcher:
- an object patch on ``blocks.{i}.attn.forward`` (the single-stream self-attention of every block that does not
  keep full attention): it rebuilds the module's q / k / v for the rows it needs (:mod:`.minimax_attention`) and
  runs the generic dual-branch op: the video rows (the last segment of the packed sequence) are the grid, every
  other row (text, keyframe / reference rows, audio) is shared: every window sees it, and it attends to the other
  shared rows and the pooled video. Windows run at the positions of a native frame (:mod:`.positions`);
- a DIFFUSION_MODEL wrapper that works out each call's token grid, its packed layout (ComfyUI's
  ``PackedLayout``: ``transformer_options["minimax_h3_layout"]`` where ComfyUI publishes it, else the one the
  model's conditioning carries, else built by the model's own class) and the sigma gate;
- an OUTER_SAMPLE wrapper that sets the sigma window of each sampling run.

Untouched: the token refiner (text only), the adaLN modulation, the MLPs, the output heads. Calls at or below the
native size run ComfyUI's own forward, bit for bit, as do calls whose layout does not end in the video grid,
calls without RoPE and modules whose rebuild differs from their forward (each logged once).

Memory: the weights stream as ComfyUI streams them (its lowvram / dynamic VRAM loading and block prefetch: the
patch calls the module's own layers, which cast or fetch their weights as usual). Of the activations, the
self-attention streams: q / k / v exist only for the windows in flight (the memory plan's chunk of query rows)
plus the shared rows and the pooled video; the video's attention output (N x heads*head_dim) is the one
sequence-size tensor it adds. The block's other per-row work (norms, modulation, MLP) is ComfyUI's, over the
whole sequence at once.
"""
from __future__ import annotations

import logging
import math
import sys

import torch

from ...adapters.base import (LOG_PREFIX, CallState, PatchHolder, current_call, install, log_once, module_at,
                              remove_forward, replace_forward)
from ...adapters.diffusion_wrapper import CallShape, DiffusionWrapper, MemoryNeed
from ...attention import kernels
from ...config import AttentionSettings
from ...models import MINIMAX_H3, MINIMAX_REFUSED, MINIMAX_SUPPORTED, ModelFamily, native_grid
from .minimax_attention import Sequence, check_module, interface, model_attention, namespace, windowed_attention
from .positions import WindowPositions

log = logging.getLogger(__name__)

FAMILY = "minimax"
SUPPORTED = MINIMAX_SUPPORTED
REFUSED = MINIMAX_REFUSED
TOKENS_IN_FLIGHT = 2**18  # query rows per windowed attention call at most (as Wan)
LAYOUT_KEY = "minimax_h3_layout"  # transformer_options key where newer ComfyUI publishes the packed layout
LAYOUT_CACHE = "minimax layout"  # CallState.cache key of the layout the wrapper found


def token_grid(dm, video: torch.Tensor) -> tuple[int, int, int]:
    """(T, H, W) video tokens of a call; video: (B, 24, T, h, w) latent, padded to the 1x2x2 patch as the model
    pads it."""
    pt, ph, pw = dm.patch_size
    t, h, w = video.shape[2:]
    return -(-t // pt), -(-h // ph), -(-w // pw)


def packed_layout(dm, x, context, payload: dict | None):
    """The PackedLayout of a call (x: [video, audio] latents; context (1, L, C) text), as ``_forward`` finds it:
    the conditioning's prebuilt one when its signature matches, else built by the model's own class."""
    video, audio = x[0], x[1]
    pt, ph, pw = dm.patch_size
    t, h, w = video.shape[2:]
    signature = (context.shape[1], -(-t // pt) * pt, -(-h // ph) * ph, -(-w // pw) * pw, audio.shape[-1])
    payload = payload or {}
    layout = payload.get("layout")
    if layout is None or getattr(layout, "signature", None) != signature:
        layout = sys.modules[type(dm).__module__].PackedLayout(*signature, keyframes=payload.get("keyframes"),
                                                               refs=payload.get("refs"))
    return layout


def model_name(dm, family: ModelFamily) -> str:
    attn = dm.blocks[0].attn
    return (f"{family.name} [{type(dm).__name__}, {dm.hidden_size} wide, {attn.heads} heads x {attn.head_dim}, "
            f"{len(dm.blocks)} blocks]")


class MiniMaxDiffusionWrapper(DiffusionWrapper):
    """DIFFUSION_MODEL wrapper (:class:`..adapters.diffusion_wrapper.DiffusionWrapper`); a changed call also
    finds its packed layout."""

    def shape(self, dm, args, kwargs, options) -> CallShape:
        video = args[0][0]
        return CallShape(video, token_grid(dm, video))

    def model_name(self, dm) -> str:
        return model_name(dm, self.family)

    def memory_need(self, dm, shape, call) -> MemoryNeed:
        attn = dm.blocks[0].attn
        return MemoryNeed(attn.heads * attn.head_dim, 0, 1, tokens_of="video tokens of attention width")

    def model_attention(self, dm):
        attn = dm.blocks[0].attn
        return model_attention(attn), interface(attn)

    def prepare(self, call, args, kwargs, options, run) -> None:
        context = args[2] if len(args) > 2 else kwargs["context"]
        try:
            call.cache[LAYOUT_CACHE] = packed_layout(call.model, args[0], context, kwargs.get("minimax_payload"))
        except Exception as error:  # noqa: BLE001 - a ComfyUI whose PackedLayout takes other arguments
            call.cache[LAYOUT_CACHE] = None  # the attention uses the layout ComfyUI publishes, if any
            log_once(run, ("layout", type(error).__name__), "%s could not build MiniMax-H3's packed layout "
                     "(%s: %s); the self-attention uses the one ComfyUI publishes in transformer_options[%r], "
                     "or keeps full attention.", LOG_PREFIX, type(error).__name__, error, LAYOUT_KEY,
                     level=logging.WARNING)

    def details(self, call) -> list[str]:
        layout = call.cache[LAYOUT_CACHE]
        shared = ", ".join(f"{kind} {b - a}" for a, b, kind in layout.segments
                           if kind != "video") if layout is not None else "as ComfyUI's layout says"
        return [f"shared rows seen by every window: {shared}", "windows at a native frame's positions"]


def sequence_of(call: CallState, layout, native_hw: tuple[int, int], device, dtype) -> Sequence | str:
    """The call's :class:`.minimax_attention.Sequence` (cached for every block), or why its layout cannot be
    windowed."""
    key = ("sequence", id(layout), str(device), dtype)
    if key in call.cache:
        return call.cache[key]
    if layout is None:
        return "no packed layout (ComfyUI published none, and the model's own class could not build one)"
    va, vb, kind = layout.segments[-1]
    n = math.prod(call.plan.grid)
    if kind != "video" or vb != layout.seq_len or vb - va != n:
        found = "; ".join(f"{k} {b - a}" for a, b, k in layout.segments)
        call.cache[key] = f"the packed layout ({found}) does not end in the {n} video rows of the grid {call.plan.grid}"
        return call.cache[key]
    dm = call.model
    rotation = namespace(dm.blocks[0].attn).rope_rotation_table
    positions = WindowPositions(call.plan.grid, native_hw, layout.position_ids[va:vb, 0])
    call.cache[key] = Sequence(va, positions, lambda pos: rotation(dm.rope_freqs(pos, device), dtype))
    return call.cache[key]


class MiniMaxSelfAttentionPatch:
    """Replacement for ``Attention.forward`` of one block's ``attn`` (an object patch)."""

    def __init__(self, holder: PatchHolder, block_index: int, previous=None):
        self.holder = holder
        self.path = ("blocks", block_index, "attn")
        self.block_index = block_index
        self.previous = previous  # another pack's object patch of the same forward, if any

    def original(self, m, x, rope_freqs, transformer_options, extra):
        if self.previous is not None:
            return self.previous(x, rope_freqs=rope_freqs, transformer_options=transformer_options, **extra)
        return type(m).forward(m, x, rope_freqs=rope_freqs, transformer_options=transformer_options, **extra)

    def __call__(self, x, rope_freqs=None, transformer_options={}, **extra):
        call = current_call()
        m = module_at(call, self.path, "a patched MiniMax-H3 self-attention")
        keep, seq = None, None
        if not call.changed:
            keep = ""
        elif self.previous is not None:
            keep = f"another pack patched blocks.{self.block_index}.attn.forward; it runs unchanged"
        elif rope_freqs is None or extra or x.ndim != 2:
            keep = (f"it was called with {'no RoPE table' if rope_freqs is None else sorted(extra) or x.shape}, "
                    "which the model's block self-attention does not have")
        else:
            layout = transformer_options.get(LAYOUT_KEY) or call.cache.get(LAYOUT_CACHE)
            seq = sequence_of(call, layout, self.holder.native[1:], x.device, rope_freqs.dtype)
            if isinstance(seq, str):
                keep = seq
            elif layout.seq_len != x.shape[0]:
                keep = f"{x.shape[0]} rows, the packed layout has {layout.seq_len}"
        attention = None
        if keep is None:
            attention = kernels.choose(model_attention(m), m.heads, transformer_options, x.device, interface(m))
            if not check_module(m, x, rope_freqs, seq.video_start, transformer_options, attention).agrees:
                keep = ""  # the check logged why
        if keep is not None:
            if keep:
                log_once(self.holder, ("keep", keep), "%s block %d self-attention: %s; it runs ComfyUI's full "
                         "attention.", LOG_PREFIX, self.block_index, keep, level=logging.WARNING)
            return self.original(m, x, rope_freqs, transformer_options, extra)
        rows = min(call.memory.chunk_tokens if call.memory is not None else x.shape[0], TOKENS_IN_FLIGHT)
        return windowed_attention(m, x, rope_freqs, call.plan, self.block_index, attention, rows, seq, call.cache)


OURS = (MiniMaxSelfAttentionPatch,)


def apply(model, settings: AttentionSettings):
    """Return a clone of ``model`` (a ComfyUI ModelPatcher holding a MiniMax-H3 model) with the patch."""
    dm = model.get_model_object("diffusion_model")
    native, note = native_grid(MINIMAX_H3, settings.native_resolution)
    blocks = len(dm.blocks)
    holder = PatchHolder(settings, native, blocks, note)
    patched = install(model, holder, MiniMaxDiffusionWrapper(holder, MINIMAX_H3))
    for i in range(blocks):
        path = f"diffusion_model.blocks.{i}.attn"
        if i in holder.full_blocks:
            remove_forward(patched, path, OURS)  # from an earlier Apply
        else:
            replace_forward(patched, path, lambda previous, i=i: MiniMaxSelfAttentionPatch(holder, i, previous), OURS)
    return patched
