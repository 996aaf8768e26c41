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

from ...adapters.base import (LOG_PREFIX, RUN_KEY, CallState, PatchHolder, RunState, current_call, install,
                              log_once, module_at, remove_forward, replace_forward, run_with_call, split_wrapper_args)
from ...attention import kernels
from ...config import AttentionSettings
from ...memory import GiB, plan_memory
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


class MiniMaxDiffusionWrapper:
    """DIFFUSION_MODEL wrapper: run the call with its CallState (model, grid plan, layout, sigma gate, memory)."""

    def __init__(self, holder: PatchHolder, family: ModelFamily):
        self.holder = holder
        self.family = family
        self.fallback_run = RunState()

    def __call__(self, executor, *args, **kwargs):
        args, kwargs, options = split_wrapper_args(args, kwargs)
        dm = executor.class_obj
        x = args[0]
        run = options.get(RUN_KEY) or self.fallback_run
        grid = token_grid(dm, x[0])
        call = CallState(dm, self.holder.plan_for(grid), run.is_active(options.get("sigmas")))
        if call.changed:
            context = args[2] if len(args) > 2 else kwargs["context"]
            try:
                call.cache[LAYOUT_CACHE] = packed_layout(dm, x, context, kwargs.get("minimax_payload"))
            except Exception as error:  # noqa: BLE001 - a ComfyUI whose PackedLayout takes other arguments
                call.cache[LAYOUT_CACHE] = None  # the attention uses the layout ComfyUI publishes, if any
                log_once(run, ("layout", type(error).__name__), "%s could not build MiniMax-H3's packed layout "
                         "(%s: %s); the self-attention uses the one ComfyUI publishes in transformer_options[%r], "
                         "or keeps full attention.", LOG_PREFIX, type(error).__name__, error, LAYOUT_KEY,
                         level=logging.WARNING)
            attn = dm.blocks[0].attn
            width = attn.heads * attn.head_dim
            call.memory = plan_memory(math.prod(grid), 1, width, 0, x[0].element_size(), x[0].device,
                                      self.holder.settings.memory_budget_gb, math.prod(call.plan.window))
            if not call.memory.fits:
                log_once(run, ("memory too small", grid), "%s the memory budget (%.1f GiB for this call) is below "
                         "what %d video tokens of attention width %d need even in the smallest chunks: sampling may "
                         "run out of memory. Raise memory_budget_gb, lower the resolution, or use preset fast "
                         "(smaller windows).", LOG_PREFIX, call.memory.budget / GiB, math.prod(grid), width,
                         level=logging.WARNING)
        if call.active:
            plan, extra = call.plan, ""
            if call.changed:
                layout = call.cache[LAYOUT_CACHE]
                shared = ", ".join(f"{kind} {b - a}" for a, b, kind in layout.segments
                                   if kind != "video") if layout is not None else "as ComfyUI's layout says"
                attn = dm.blocks[0].attn
                extra = (f"; shared rows seen by every window: {shared}; windows at a native frame's positions; "
                         f"{call.memory.describe()}; "
                         + kernels.pick(model_attention(attn), options, x[0].device, interface(attn))[1])
            log_once(run, ("plan", grid), "%s %s, %s: %s; %s; active %g%%-%g%% of sampling%s.", LOG_PREFIX,
                     model_name(dm, self.family), self.holder.native_note,
                     "unchanged (grid within one window, no global branch)" if plan.is_identity else plan.describe(),
                     self.holder.describe_blocks(), 100 * self.holder.settings.start_percent,
                     100 * self.holder.settings.end_percent, extra)
        return run_with_call(call, executor, *args, **kwargs)


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
