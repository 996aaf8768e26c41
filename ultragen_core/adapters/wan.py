"""Wan 2.1 / 2.2 (T2V, I2V, TI2V-5B, A14B experts, VACE): patch the self-attention of a loaded model.

What is patched, on a clone of the ModelPatcher:
- an object patch on ``blocks.{i}.self_attn.forward`` (and ``vace_blocks.{i}``) for every block that
  does not keep full attention: it recomputes q / k / v with the block's own layers and runs the
  dual-branch op, calling the model's own ``optimized_attention`` (so kernel patches still apply);
- a DIFFUSION_MODEL wrapper that works out the token grid of each call (latent frames, frames added
  by ``time_dim_concat``, the reference frame that ``reference_latent`` prepends) and the sigma gate;
- an OUTER_SAMPLE wrapper that sets the sigma window for each sampling run;
- object patches that change no value, only memory: chunked feed-forward for long sequences, and a
  channels-last patch embedding (contiguous tokens for every block).
"""
from __future__ import annotations

import math
import sys

import torch

from ..attention.dual_branch import dual_branch_attention
from ..attention.global_branch import pool_tokens, pooled_positions
from ..attention.rope import apply_complex, complex_table
from ..config import AttentionSettings
from .base import (CALL_KEY, CHECKPOINT_HOLDER_KEY, DIFFUSION_MODEL, HOLDER_KEY, LOG_PREFIX, OUTER_SAMPLE, RUN_KEY, WRAPPER_KEY,
                   CallState, PatchHolder, RunState, log, log_once, outer_sample_wrapper, split_wrapper_args,
                   with_call_state)

FAMILY = "wan"
PROJECTION_CHUNK_ELEMENTS = 2**28  # tokens x channels per projection chunk (1 GiB of float32)
FFN_CHUNK_ELEMENTS = 2**30  # tokens x hidden channels per feed-forward chunk (2 GiB in bf16)
SUPPORTED = ("WanModel", "VaceWanModel")


def matches(diffusion_model) -> bool:
    return type(diffusion_model).__name__ in SUPPORTED


def native_grid(dm) -> tuple[int, int, int]:
    """Token grid (t, h, w) the model was trained at (81 frames; 121 for the 5B)."""
    if getattr(dm, "out_dim", 16) == 48:       # Wan2.2-TI2V-5B, 16x16 VAE: 1280x704
        return (31, 22, 40)
    if dm.dim >= 5120:                          # 14B, each Wan2.2-A14B expert: 1280x720
        return (21, 45, 80)
    return (21, 30, 52)                         # 1.3B (and tiny test models): 832x480


def model_name(dm) -> str:
    kind = "Wan2.2-TI2V-5B" if getattr(dm, "out_dim", 16) == 48 else f"Wan (dim {dm.dim})"
    return f"{kind} [{type(dm).__name__}, {len(dm.blocks)} blocks]"


def token_grid(dm, x: torch.Tensor, time_dim_concat, kwargs: dict) -> tuple[tuple[int, int, int], bool]:
    """The (T, H, W) grid of the token sequence for one call, and whether it is a plain grid.

    x: (B, C, t, h, w) latent. A reference latent prepends one frame of tokens when its size matches.
    """
    pt, ph, pw = dm.patch_size
    t, h, w = x.shape[2:]
    T, H, W = math.ceil(t / pt), math.ceil(h / ph), math.ceil(w / pw)
    if time_dim_concat is not None:
        T += math.ceil(time_dim_concat.shape[2] / pt)
    ok = True
    if getattr(dm, "ref_conv", None) is not None and kwargs.get("reference_latent") is not None:
        ref = kwargs["reference_latent"]
        T += 1
        ok = (ref.shape[-2] // ph) * (ref.shape[-1] // pw) == H * W
    return (T, H, W), ok


def wan_namespace(attention_module):
    """The module that defines a Wan attention class; its apply_rope1 / optimized_attention are what the
    model itself calls (looked up at call time, so packs that replace them still apply)."""
    namespace = sys.modules[type(attention_module).__module__]
    if not hasattr(namespace, "apply_rope1") or not hasattr(namespace, "optimized_attention"):
        raise NotImplementedError(
            f"UltraGen: {namespace.__name__} has no apply_rope1 / optimized_attention; this ComfyUI "
            "version's Wan attention is not supported. Please report your ComfyUI version.")
    return namespace


class WanDiffusionWrapper:
    """DIFFUSION_MODEL wrapper: attach a CallState (grid plan, sigma gate) to transformer_options."""

    def __init__(self, holder: PatchHolder):
        self.holder = holder
        self.fallback_run = RunState()

    def __call__(self, executor, *args, **kwargs):
        args, kwargs, options = split_wrapper_args(args, kwargs)
        dm = executor.class_obj
        x = args[0]
        time_dim_concat = args[4] if len(args) > 4 else kwargs.get("time_dim_concat")
        run = options.get(RUN_KEY) or self.fallback_run
        active = run.is_active(options.get("sigmas"))
        grid, is_grid = token_grid(dm, x, time_dim_concat, kwargs)
        plan = self.holder.plan_for(grid) if is_grid else None
        if active and plan is None:
            log_once(run, ("nogrid", grid), "%s reference tokens do not match the video grid %s: "
                     "full attention for these calls.", LOG_PREFIX, grid)
        elif active:
            log_once(run, ("plan", grid), "%s %s: %s; %s; active %g%%-%g%% of sampling.", LOG_PREFIX,
                     model_name(dm), "unchanged (grid within one window, no global branch)"
                     if plan.is_identity else plan.describe(), self.holder.describe_blocks(),
                     100 * self.holder.settings.start_percent, 100 * self.holder.settings.end_percent)
        args, kwargs = with_call_state(args, kwargs, options, CallState(plan, active))
        self.holder.relayout = bool(active and plan is not None and not plan.is_identity)
        try:
            return executor(*args, **kwargs)
        finally:
            self.holder.relayout = False


class WanSelfAttentionPatch:
    """Replacement for ``WanSelfAttention.forward`` of one block (an object patch)."""

    def __init__(self, holder: PatchHolder, module, block_index: int, previous=None):
        self.holder = holder
        self.module = module
        self.block_index = block_index
        self.previous = previous  # another pack's object patch of the same forward, if any
        self.namespace = wan_namespace(module)

    def original(self, x, freqs, transformer_options):
        if self.previous is not None:
            return self.previous(x, freqs, transformer_options=transformer_options)
        return type(self.module).forward(self.module, x, freqs, transformer_options=transformer_options)

    def rope_table(self, freqs: torch.Tensor, call: CallState, positions: torch.Tensor | None = None):
        """ComfyUI's RoPE table as complex numbers (shared by all blocks of a call), or None to call the
        model's own ``apply_rope1`` (another pack replaced it, or the table is not made of rotations)."""
        rope = self.namespace.apply_rope1
        where = (getattr(rope, "__module__", None), getattr(rope, "__name__", None))
        if where != ("comfy.ldm.flux.math", "apply_rope1"):
            log_once(self.holder, "rope-replaced", "%s apply_rope1 is %s.%s (another pack): the patch calls it instead "
                     "of its complex-multiply RoPE.", LOG_PREFIX, *where)
            return None
        key = ("rope", freqs.data_ptr(), tuple(freqs.shape))
        if key not in call.cache:
            call.cache[key] = complex_table(freqs)
        table = call.cache[key]
        if table is None:
            log_once(self.holder, "rope-table", "%s the RoPE table is not made of rotations: the patch calls the "
                     "model's apply_rope1 instead of its complex-multiply RoPE.", LOG_PREFIX)
        if table is None or positions is None:
            return table
        pooled = key + ("pooled", len(positions))
        if pooled not in call.cache:
            call.cache[pooled] = table.index_select(1, positions)
        return call.cache[pooled]

    def project(self, x: torch.Tensor, freqs: torch.Tensor, index: int, table: torch.Tensor | None = None) -> torch.Tensor:
        """q (0), k (1) or v (2) of x (B, L, C) as the model computes them: (B, L, C).

        Computed in chunks of tokens (every step is per token): RoPE works in float32, so one pass
        over a 4K grid would hold several float32 copies of the whole sequence. ``table``: RoPE as
        complex numbers (see :meth:`rope_table`), else the model's ``apply_rope1`` runs.
        """
        m = self.module
        b, s, c = x.shape
        if index == 2:
            return m.v(x)
        lin, norm = (m.q, m.norm_q) if index == 0 else (m.k, m.norm_k)
        out = torch.empty((b, s, m.num_heads * m.head_dim), dtype=x.dtype, device=x.device)
        step = max(1, PROJECTION_CHUNK_ELEMENTS // max(1, b * c))
        for i in range(0, s, step):
            t = norm(lin(x[:, i:i + step])).view(b, -1, m.num_heads, m.head_dim)
            dst = out[:, i:i + step].view(b, -1, m.num_heads, m.head_dim)
            if table is not None:
                apply_complex(t, table[:, i:i + step], out=dst)
            else:
                dst.copy_(self.namespace.apply_rope1(t, freqs[:, i:i + step]))
        return out

    def __call__(self, x, freqs, transformer_options={}):
        call: CallState | None = transformer_options.get(CALL_KEY)
        if call is None or not call.active or call.plan is None or call.plan.is_identity:
            return self.original(x, freqs, transformer_options)
        plan = call.plan
        layout = plan.layout(self.block_index)
        m = self.module

        def attention(q, k, v):
            return self.namespace.optimized_attention(q, k, v, heads=m.num_heads,
                                                      transformer_options=transformer_options)

        table = self.rope_table(freqs, call)
        global_qkv = None
        if plan.factor:
            key = ("pooled positions", plan.grid, plan.factor)
            if key not in call.cache:  # the same for every block of the call
                call.cache[key] = pooled_positions(plan.grid, plan.factor, freqs.device)
            positions = call.cache[key]
            xp = pool_tokens(x, plan.grid, plan.factor)  # (B, T*Hp*Wp, C)
            tp = None if table is None else self.rope_table(freqs, call, positions)
            fp = freqs.index_select(1, positions) if tp is None else None
            global_qkv = [self.project(xp, fp, i, tp) for i in range(3)]
            del xp
        out = dual_branch_attention(lambda i: self.project(x, freqs, i, table), layout, attention, global_qkv,
                                    plan.factor, plan.fusion, plan.strength)
        return m.o(out)


class ChunkedFeedForward:
    """Replacement for a block's ``ffn.forward`` that runs long sequences in chunks of tokens.

    The feed-forward is per token, so chunking changes nothing but the peak memory: at 4K the 14B
    model's hidden activation alone is 680,400 x 13,824 values, twice (before and after GELU).
    Sequences whose hidden activation is small run the module unchanged.
    """

    def __init__(self, module, previous=None):
        self.module = module
        self.previous = previous

    def __call__(self, x):
        run = self.previous if self.previous is not None else (lambda t: type(self.module).forward(self.module, t))
        hidden = self.module[0].out_features if hasattr(self.module[0], "out_features") else x.shape[-1] * 4
        step = max(1, FFN_CHUNK_ELEMENTS // max(1, x.shape[0] * hidden))
        if x.shape[1] <= step:
            return run(x)
        first = run(x[:, :step])
        out = torch.empty((*x.shape[:2], first.shape[-1]), dtype=first.dtype, device=first.device)
        out[:, :step] = first
        del first
        for i in range(step, x.shape[1], step):
            out[:, i:i + step] = run(x[:, i:i + step])
        return out


class TokenMajorEmbedding:
    """Replacement for ``patch_embedding.forward``: the same values, laid out channels-last.

    WanModel turns the embedding (B, C, T, H, W) into tokens with ``flatten(2).transpose(1, 2)``. On a
    channels-first conv output that is a strided view, and every later elementwise op keeps its
    layout, so each block's LayerNorms copy the whole residual stream to contiguous memory and the
    residual adds run unvectorized (about 0.2 s per block for the 14B at 4K). A channels-last
    embedding makes the token view contiguous from the first block on. Only for calls the patch
    changes (``holder.relayout``, set by the diffusion-model wrapper): other calls stay bit for bit
    what ComfyUI computes.
    """

    def __init__(self, holder: PatchHolder, module, previous=None):
        self.holder = holder
        self.module = module
        self.previous = previous

    def __call__(self, x):
        run = self.previous if self.previous is not None else (lambda t: type(self.module).forward(self.module, t))
        if x.ndim != 5 or not self.holder.relayout:
            return run(x)
        out = run(x.contiguous(memory_format=torch.channels_last_3d))
        return out.contiguous(memory_format=torch.channels_last_3d) if out.ndim == 5 else out


def _replace_forward(patched, path: str, make) -> None:
    """Object-patch ``<path>.forward`` with ``make(module, previous)``. ``previous`` is another pack's
    patch of that forward, if any (ours from an earlier Apply is replaced, not chained)."""
    key = f"{path}.forward"
    previous = patched.object_patches.get(key)
    if isinstance(previous, (WanSelfAttentionPatch, ChunkedFeedForward, TokenMajorEmbedding)):
        previous = previous.previous
    patched.add_object_patch(key, make(patched.get_model_object(path), previous))


def apply(model, settings: AttentionSettings):
    """Return a clone of ``model`` (a ComfyUI ModelPatcher holding a Wan model) with the patch."""
    dm = model.get_model_object("diffusion_model")
    holder = PatchHolder(settings, FAMILY, native_grid(dm), len(dm.blocks))
    patched = model.clone()
    options = patched.model_options.setdefault("transformer_options", {})
    if CHECKPOINT_HOLDER_KEY in options:
        raise ValueError("UltraGen: this model already runs the published UltraGen checkpoint (UltraGen Load "
                         "Weights), which has its own attention. Remove UltraGen Apply from this model, or "
                         "connect UltraGen Apply to the model before UltraGen Load Weights is added.")
    if HOLDER_KEY in options:
        log.info("%s the model already had UltraGen attention; the new settings replace the old ones.", LOG_PREFIX)
    options[HOLDER_KEY] = holder

    targets = [("blocks", i) for i in range(len(dm.blocks)) if i not in holder.full_blocks]
    targets += [("vace_blocks", i) for i in range(len(getattr(dm, "vace_blocks", None) or ()))]
    for group, i in targets:
        path = f"diffusion_model.{group}.{i}.self_attn"
        _replace_forward(patched, path, lambda module, previous: WanSelfAttentionPatch(holder, module, i, previous))
    for i in range(len(dm.blocks)):
        _replace_forward(patched, f"diffusion_model.blocks.{i}.ffn", ChunkedFeedForward)
    if getattr(dm, "patch_embedding", None) is not None:
        _replace_forward(patched, "diffusion_model.patch_embedding",
                         lambda module, previous: TokenMajorEmbedding(holder, module, previous))
    for name in (f"diffusion_model.blocks.{i}.self_attn.forward" for i in holder.full_blocks):
        if isinstance(patched.object_patches.get(name), WanSelfAttentionPatch):  # from an earlier Apply
            previous = patched.object_patches[name].previous
            if previous is None:
                del patched.object_patches[name]
            else:
                patched.object_patches[name] = previous

    for kind, wrapper in ((OUTER_SAMPLE, outer_sample_wrapper), (DIFFUSION_MODEL, WanDiffusionWrapper(holder))):
        patched.remove_wrappers_with_key(kind, WRAPPER_KEY)  # from an earlier Apply on this model
        patched.add_wrapper_with_key(kind, WRAPPER_KEY, wrapper)
    return patched
