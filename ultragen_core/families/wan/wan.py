"""Wan 2.1 / 2.2 (T2V, I2V, TI2V-5B, A14B experts, VACE, Camera): patch the self-attention of a
loaded model.

What is patched, on a clone of the ModelPatcher:
- an object patch on ``blocks.{i}.self_attn.forward`` (and ``vace_blocks.{i}``) for every block that
  does not keep full attention: it recomputes q / k / v with the block's own layers and runs the
  dual-branch op, calling the model's own ``optimized_attention`` as the model's layer does (so kernel
  patches still apply; containers and the layer's ``preferred_attention`` where the model uses them, as
  ComfyUI 0.38 does; ComfyUI's stock PyTorch attention on Hopper runs cuDNN first, see attention/kernels.py);
- a DIFFUSION_MODEL wrapper that works out the token grid of each call (latent frames, frames added
  by ``time_dim_concat``, the reference tokens that ``reference_latent`` prepends) and the sigma gate;
- an OUTER_SAMPLE wrapper that sets the sigma window for each sampling run;
- object patches that change no value, only memory: chunked feed-forward for long sequences, and a
  channels-last patch embedding (contiguous tokens for every block).

Tokens outside the video grid (a reference frame prepended by ``ref_conv``; in-context latents appended
after the video) are never windowed with the video: every window attends to
them besides its own tokens, and they attend to each other and to the pooled video tokens.
"""
from __future__ import annotations

import logging
import math
import sys
from dataclasses import dataclass

import torch

from ...adapters.base import (LOG_PREFIX, CallState, PatchHolder, current_call, install, log_once, module_at,
                              remove_forward, replace_forward, run_with_call)
from ...adapters.diffusion_wrapper import CallShape, DiffusionWrapper, MemoryNeed
from ...adapters.self_attention import VideoTokens, dual_branch_self_attention, global_qkv
from ...attention import kernels
from ...attention.dual_branch import fuse
from ...attention.global_branch import pool_tokens
from ...attention.split import shares
from ...attention.streamed import ProxyKeys, streamed_window_attention
from ...attention.rope import apply_complex, complex_table
from ...config import AttentionSettings
from ...models import WAN_REFUSED, WAN_SUPPORTED, ModelFamily, native_grid, wan_family
from .wan_block import ModulatedRows, StreamedWanBlock, whole
from .wan_proxy import PROXY_KEY, ProxyHeadCut, add_proxy
from .wan_split import RANK_KEY, SPLIT_KEY, log_single, run_for, split_call, why_not_split
from .wan_split import describe as describe_split

log = logging.getLogger(__name__)

FAMILY = "wan"
SUPPORTED = WAN_SUPPORTED
PROJECTION_CHUNK_ELEMENTS = 2**28  # tokens x channels per projection chunk (1 GiB of float32)
FFN_CHUNK_ELEMENTS = 2**30  # tokens x hidden channels per feed-forward chunk (2 GiB in bf16)
TOKENS_IN_FLIGHT = 2**18  # self-attention: tokens whose q / k / v exist at once, even when all would fit
# (at 4K three windows of the quality preset: the same speed as all nine, 6.8 GiB less at the peak; run 36)


def claims(diffusion_model) -> bool:
    name = type(diffusion_model).__name__
    return name in SUPPORTED or name in WAN_REFUSED or type(diffusion_model).__module__.startswith("comfy.ldm.wan")


def refusal(diffusion_model) -> str | None:
    name = type(diffusion_model).__name__
    if name in SUPPORTED:
        return None
    return WAN_REFUSED.get(name, "it is a Wan variant this version of the pack does not know")


def model_name(dm, family: ModelFamily) -> str:
    return f"{family.name} [{type(dm).__name__}, dim {dm.dim}, {len(dm.blocks)} blocks]"


def token_grid(dm, x: torch.Tensor, time_dim_concat, kwargs: dict) -> tuple[tuple[int, int, int], int]:
    """The (T, H, W) grid of the video tokens of one call, and how many tokens come before them.

    x: (B, C, t, h, w) latent. ``time_dim_concat`` frames extend the grid in time; a reference latent
    (models with ``ref_conv``) is prepended as tokens of its own.
    """
    pt, ph, pw = dm.patch_size
    t, h, w = x.shape[2:]
    T, H, W = math.ceil(t / pt), math.ceil(h / ph), math.ceil(w / pw)
    if time_dim_concat is not None:
        T += math.ceil(time_dim_concat.shape[2] / pt)
    prefix = 0
    ref = kwargs.get("reference_latent")
    if getattr(dm, "ref_conv", None) is not None and ref is not None:
        prefix = (ref.shape[-2] // ph) * (ref.shape[-1] // pw)
    return (T, H, W), prefix


_NAMESPACES: dict[type, object] = {}


def wan_namespace(attention_module):
    """The module that defines a Wan attention class; its apply_rope1 / optimized_attention are what the
    model itself calls (looked up at call time, so packs that replace them still apply)."""
    cls = type(attention_module)
    namespace = _NAMESPACES.get(cls)
    if namespace is None:
        namespace = sys.modules[cls.__module__]
        if not hasattr(namespace, "apply_rope1") or not hasattr(namespace, "optimized_attention"):
            raise NotImplementedError(
                f"UltraGen: {namespace.__name__} has no apply_rope1 / optimized_attention; this ComfyUI "
                "version's Wan attention is not supported. Please report your ComfyUI version.")
        _NAMESPACES[cls] = namespace
    return namespace


def attention_function(dm):
    """The attention function the model's self-attention calls (its module's ``optimized_attention``)."""
    return wan_namespace(dm.blocks[0].self_attn).optimized_attention


_RUNS_ATTN1: dict[type, bool] = {}


def runs_attn1_patch(attention_module, x, freqs) -> bool:
    """Whether this Wan self-attention class itself runs ``patches["attn1_patch"]`` after attention
    (ComfyUI 0.33 does, 0.3.64 does not): the patch then runs them the same way, else never.

    Found by running, once per class: the class's own forward on two tokens of this call (x: (B, L, C) or
    :class:`.wan_block.ModulatedRows`, freqs of its tokens), with one attn1 patch that only notes it ran.
    """
    cls = type(attention_module)
    if cls not in _RUNS_ATTN1:
        ran = []

        def note(args):
            ran.append(True)
            return args["x"]
        try:
            with torch.no_grad():
                cls.forward(attention_module, _rows(x, 0, 2)[:1], freqs[:1, :2],
                            transformer_options={"patches": {"attn1_patch": [note]}})
            found = f"runs attn1_patch: {'yes' if ran else 'no'}"
        except Exception as error:  # noqa: BLE001 - then the patch runs no attn1_patch
            found = f"raised {type(error).__name__} ({error}) on two tokens: attn1 patches are not run"
        _RUNS_ATTN1[cls] = bool(ran)
        log.info("%s %s.forward (%s) %s.", LOG_PREFIX, cls.__name__, cls.__module__, found)
    return _RUNS_ATTN1[cls]


class WanDiffusionWrapper(DiffusionWrapper):
    """DIFFUSION_MODEL wrapper (:class:`..adapters.diffusion_wrapper.DiffusionWrapper`); a changed call also gets
    proxy guidance's proxy, and a call may be shared out over several GPUs (:mod:`.wan_split`)."""

    def shape(self, dm, args, kwargs, options) -> CallShape:
        x = args[0]
        time_dim_concat = args[4] if len(args) > 4 else kwargs.get("time_dim_concat")
        grid, prefix = token_grid(dm, x, time_dim_concat, kwargs)
        note = f"; {prefix} reference tokens before the video, not windowed" if prefix else ""
        return CallShape(x, grid, note=note, prefix=prefix)

    def model_name(self, dm) -> str:
        return model_name(dm, self.family)

    def memory_need(self, dm, shape, call) -> MemoryNeed:
        tokens = call.prefix + math.prod(call.plan.grid) + (call.proxy.tokens if call.proxy is not None else 0)
        ffn_dim = getattr(dm.blocks[0], "ffn_dim", 4 * dm.dim)
        return MemoryNeed(dm.dim, ffn_dim, shape.latent.shape[0], tokens,
                          smallest=" (the block's input and output, one window)")

    def model_attention(self, dm):
        attn = dm.blocks[0].self_attn
        return attention_function(dm), kernels.interface_of(wan_namespace(attn), attn)

    def prepare(self, call, args, kwargs, options, run) -> None:
        proxy = options.get(PROXY_KEY)
        if proxy is not None:  # proxy guidance: the call's kwargs gain the proxy as an in-context latent
            added, call.proxy = add_proxy(proxy, call.model, args[0], kwargs, options.get("sigmas"),
                                          options.get("cond_or_uncond"))
            kwargs.update(added)

    def run(self, call, executor, args, kwargs, options):
        rank = options.get(RANK_KEY)
        if rank is not None:  # another GPU's part of a split call (wan_split)
            call.split = rank
            return run_with_call(call, executor, *args, **kwargs)
        split = run_for(options.get(SPLIT_KEY), args[0].device)
        if split is not None and split.ranks > 1:
            reason = why_not_split(call, call.model, options)
            if reason is None:
                log_once(split, ("split", call.plan.grid), "%s %s.", LOG_PREFIX, describe_split(split))
                return split_call(split, call, call.model, executor, args, kwargs, options)
            log_single(split, reason)
        return run_with_call(call, executor, *args, **kwargs)


def _rows(t, lo: int, hi: int) -> torch.Tensor:
    """Tokens lo..hi of t (B, L, ...), a tensor or :class:`ModulatedRows` (then computed)."""
    return t.rows(lo, hi) if isinstance(t, ModulatedRows) else t[:, lo:hi]


def _narrow(t, lo: int, hi: int):
    """Tokens lo..hi of t (B, L, ...); of a :class:`ModulatedRows` still not computed."""
    return t.narrow(lo, hi) if isinstance(t, ModulatedRows) else t[:, lo:hi]


def _outside(t, start: int, stop: int) -> torch.Tensor:
    """The tokens of t (B, L, ...) before ``start`` and from ``stop`` on, joined along dim 1."""
    if isinstance(t, ModulatedRows):
        return torch.cat((t.rows(0, start), t.rows(stop, t.shape[1])), dim=1)
    if start == 0:
        return t[:, stop:]
    if stop == t.shape[1]:
        return t[:, :start]
    return torch.cat((t[:, :start], t[:, stop:]), dim=1)


class WanSelfAttentionPatch:
    """Replacement for ``WanSelfAttention.forward`` of one block (an object patch).

    Its input is a tensor (B, L, C) or, from a streamed block, :class:`.wan_block.ModulatedRows`: the rows
    are then computed per chunk of windows, and the whole modulated input only for ComfyUI's own code.
    """

    takes_modulated_rows = True

    def __init__(self, holder: PatchHolder, group: str, block_index: int, previous=None):
        self.holder = holder
        self.path = (group, block_index, "self_attn")
        self.block_index = block_index
        self.previous = previous  # another pack's object patch of the same forward, if any

    def original(self, module, x, freqs, transformer_options):
        x = whole(x)
        if self.previous is not None:
            return self.previous(x, freqs, transformer_options=transformer_options)
        return type(module).forward(module, x, freqs, transformer_options=transformer_options)

    def rope_table(self, namespace, freqs: torch.Tensor, call: CallState):
        """ComfyUI's RoPE table as complex numbers (shared by all blocks of a call), or None to call the
        model's own ``apply_rope1`` (another pack replaced it, or the table is not made of rotations)."""
        rope = namespace.apply_rope1
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
        return table

    @staticmethod
    def project(m, namespace, x: torch.Tensor, freqs: torch.Tensor, index: int,
                table: torch.Tensor | None = None) -> torch.Tensor:
        """q (0), k (1) or v (2) of x (B, L, C) as the module ``m`` computes them: (B, L, C).

        Computed in chunks of tokens (every step is per token): RoPE works in float32, so one pass
        over a 4K grid would hold several float32 copies of the whole sequence. ``table``: RoPE as
        complex numbers (see :meth:`rope_table`), else the model's ``apply_rope1`` runs.
        """
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
                dst.copy_(namespace.apply_rope1(t, freqs[:, i:i + step]))
        return out

    def plan_of(self, call: CallState, transformer_options: dict):
        """The call's plan, re-made when ComfyUI says the video grid is another (0.33's ``grid_sizes``)."""
        sizes = transformer_options.get("grid_sizes")
        if sizes is None:
            return call.plan
        grid = tuple(int(v) for v in sizes)
        if grid == call.plan.grid:
            return call.plan
        log_once(self.holder, ("grid_sizes", grid), "%s ComfyUI reports the video grid %s (computed %s): "
                 "windowing %s.", LOG_PREFIX, grid, call.plan.grid, grid)
        return self.holder.plan_for(grid)

    def __call__(self, x, freqs, transformer_options={}):
        call = current_call()
        m = module_at(call, self.path, "a patched Wan self-attention")
        if not call.changed:
            return self.original(m, x, freqs, transformer_options)
        plan = self.plan_of(call, transformer_options)
        if plan.is_identity:
            return self.original(m, x, freqs, transformer_options)
        proxy = call.proxy  # its tokens are the last of the sequence
        total = x.shape[1] - (proxy.tokens if proxy is not None else 0)  # tokens before the proxy
        start, stop = call.prefix, call.prefix + math.prod(plan.grid)
        # freqs: of every token, or (the proxy appended by the first block) of those before the proxy
        if stop > total or freqs.shape[1] not in (x.shape[1], total) or proxy is not None and stop != total:
            log_once(self.holder, ("layout", plan.grid, start, total), "%s %d tokens (%d before the video) do not "
                     "hold the video grid %s: full attention for these calls.", LOG_PREFIX, total, start, plan.grid)
            return self.original(m, x, freqs, transformer_options)
        namespace = wan_namespace(m)
        heads = m.num_heads
        rows = min(call.memory.chunk_tokens if call.memory is not None else x.shape[1], TOKENS_IN_FLIGHT)

        attention = kernels.choose(namespace.optimized_attention, heads, transformer_options, x.device,
                                   kernels.interface_of(namespace, m))
        table = self.rope_table(namespace, freqs[:, :total], call)
        inputs = self.video_inputs(m, namespace, _narrow(x, 0, total), freqs[:, :total], table, (start, stop),
                                   transformer_options)
        out = torch.empty((x.shape[0], x.shape[1], heads * m.head_dim), dtype=x.dtype, device=x.device)
        video_out = out[:, start:stop]  # (B, T*H*W, C)
        if not video_out.is_contiguous():  # a prefix with batch > 1: fuse in a buffer of its own
            video_out = torch.empty_like(video_out)
        layout = plan.layout(self.block_index)
        proxy_keys = proxy_qkv = None
        if proxy is not None:  # the windows also see their proxy neighbourhood; the proxy attends to itself only
            ptab = proxy.rope(plan.grid, m.head_dim, transformer_options, x.device, table is not None, call.cache)
            complex_form = table is not None
            xp = _rows(x, total, x.shape[1])
            proxy_qkv = [self.project(m, namespace, xp, None if complex_form else ptab, i,
                                      ptab if complex_form else None) for i in range(3)]
            proxy_keys = ProxyKeys(proxy_qkv[1], proxy_qkv[2], proxy.layout(layout, call.cache),
                                   proxy.settings.strength)
        extras_qkv = inputs.extras
        split = call.split if call.split is not None and call.split.pending == self.block_index else None
        if split is not None and (extras_qkv is not None or proxy is not None or inputs.full is not None):
            split = None  # not a video-only sequence (wan_split.why_not_split keeps these calls whole)
        if split is not None:
            return self.split_part(m, split, layout, plan, inputs, call, attention, video_out, rows)
        extras_out = dual_branch_self_attention(plan, self.block_index, inputs.video, attention, video_out, rows,
                                                extras_qkv, proxy_keys, call.cache)
        if video_out.data_ptr() != out[:, start:stop].data_ptr():
            out[:, start:stop] = video_out
        del video_out
        if extras_out is not None:  # (B, E, C): the tokens before the video, then those after it
            out[:, :start] = extras_out[:, :start]
            out[:, stop:total] = extras_out[:, start:]
        if proxy_qkv is not None:
            out[:, total:] = attention(*proxy_qkv)
        if inputs.full is not None:  # ComfyUI's attn1_patch: q and k of the whole sequence
            q, k = inputs.full
            if proxy_qkv is not None:
                q, k = torch.cat((q, proxy_qkv[0]), dim=1), torch.cat((k, proxy_qkv[1]), dim=1)
            q, k = (t.view(x.shape[0], x.shape[1], heads, m.head_dim) for t in (q, k))
            for p in transformer_options["patches"]["attn1_patch"]:
                out = p({"x": out, "q": q, "k": k, "transformer_options": transformer_options})
        return self.output(m, out, rows)

    def split_part(self, m, split, layout, plan, inputs: "VideoInputs", call: CallState, attention, video_out,
                   rows: int) -> torch.Tensor:
        """This rank's part of a split call (see wan_split): the windows of its slot range, its share of the
        global branch's queries, the fusion, and the output projection of the tokens it owns: (B, n, C)."""
        everyone = shares(layout, split.ranks, split.token_cost, video_out.device)
        mine = everyone[split.rank]
        video_out.zero_()  # the band fusion pools this rank's rows only, the others' are summed in
        streamed_window_attention(inputs.video.window_qkv, layout, attention, video_out, rows, slot_range=mine.slots)
        pooled = global_qkv(plan, inputs.video, rows, call.cache)
        if pooled is not None and plan.fusion != "local_only":
            q, k, v = pooled
            cuts = [q.shape[1] * r // split.ranks for r in range(split.ranks + 1)]
            part = attention(q[:, cuts[split.rank]:cuts[split.rank + 1]], k, v)
            indices = [torch.arange(a, b, device=q.device) for a, b in zip(cuts, cuts[1:])]
            global_out = split.exchange.all_gather(split.rank, part, indices, torch.empty_like(q))

            def pool(t, grid, factor):
                return split.exchange.all_reduce(split.rank, pool_tokens(t, grid, factor))
            fuse(video_out, global_out, plan.grid, plan.factor, plan.fusion, plan.strength, pool)
        split.shares = everyone
        out = None
        for lo in range(0, mine.tokens.numel(), rows):
            o = m.o(video_out.index_select(1, mine.tokens[lo:lo + rows]))
            if out is None:
                out = torch.empty((o.shape[0], mine.tokens.numel(), o.shape[-1]), dtype=o.dtype, device=o.device)
            out[:, lo:lo + rows] = o
        return out if out is not None else video_out[:, :0]

    def video_inputs(self, m, namespace, x, freqs, table, span, transformer_options) -> "VideoInputs":
        """How this block gets q / k / v: per chunk of grid tokens, and for the tokens outside the grid."""
        start, stop = span
        total = x.shape[1]
        attn1 = transformer_options.get("patches", {}).get("attn1_patch") and runs_attn1_patch(m, x, freqs)
        if attn1:
            x = whole(x)  # the patch gets q and k of the whole sequence anyway
        # ComfyUI's attn1_patch gets the whole sequence's q and k: project them once, then gather
        full = [self.project(m, namespace, x, freqs, i, table) for i in range(2)] if attn1 else None
        xv, fv = _narrow(x, start, stop), freqs[:, start:stop]
        tv = table[:, start:stop] if table is not None else None

        def project(rows, tokens):  # q, k, v of input rows at the given grid tokens' positions, (B, n, C) each
            tc = tv.index_select(1, tokens) if tv is not None else None
            fc = fv.index_select(1, tokens) if tv is None else None
            return [self.project(m, namespace, rows, fc, i, tc) for i in range(3)]

        def projected(tokens):  # q and k projected once already (attn1_patch); v of the window's tokens
            return [t[:, start:stop].index_select(1, tokens) for t in full] + [m.v(xv.index_select(1, tokens))]

        extras = None
        if stop - start < total:
            xe, fe = _outside(x, start, stop), _outside(freqs, start, stop)
            te = _outside(table, start, stop) if table is not None else None
            if full is not None:
                extras = [_outside(t, start, stop) for t in full] + [m.v(xe)]
            else:
                extras = [self.project(m, namespace, xe, fe, i, te) for i in range(3)]
        return VideoInputs(VideoTokens(xv, project, projected if full is not None else None), extras, full)

    @staticmethod
    def output(m, out: torch.Tensor, rows: int) -> torch.Tensor:
        """The output projection; over chunks of rows in place when the call streams its tokens."""
        if rows >= out.shape[1]:
            return m.o(out)
        for i in range(0, out.shape[1], rows):
            out[:, i:i + rows] = m.o(out[:, i:i + rows])
        return out


@dataclass
class VideoInputs:
    """A Wan self-attention input split for the patch: the video tokens (input rows, computed on demand from a
    :class:`.wan_block.ModulatedRows`, and how their q / k / v come out of the module), q, k, v of the tokens
    outside the grid (or None), and q and k of the whole sequence when ComfyUI's attn1_patch needs them."""

    video: VideoTokens
    extras: list | None
    full: list | None


def hidden_width(ffn, width: int) -> int:
    """The hidden width of a feed-forward module: the first linear layer's output features (a Sequential
    as in ComfyUI 0.3.64, 0.33's WanFeedForward, or any module holding its layers), else 4 x ``width``."""
    return next((m.out_features for m in ffn.modules() if isinstance(getattr(m, "out_features", None), int)),
                4 * width)


class ChunkedFeedForward:
    """Replacement for a block's ``ffn.forward`` that runs long sequences in chunks of tokens.

    The feed-forward is per token, so chunking changes nothing but the peak memory: at 4K the 14B
    model's hidden activation alone is 680,400 x 13,824 values, twice (before and after GELU).
    Sequences whose hidden activation is small run the module unchanged.
    """

    def __init__(self, block_index: int, previous=None):
        self.path = ("blocks", block_index, "ffn")
        self.previous = previous

    def __call__(self, x):
        module = module_at(current_call(), self.path, "a patched Wan feed-forward")
        run = self.previous if self.previous is not None else (lambda t: type(module).forward(module, t))
        hidden = hidden_width(module, x.shape[-1])
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
    residual adds run unvectorized (about 0.2 s per block for the 14B at 4K; ComfyUI 0.33 copies once
    per block instead). A channels-last embedding makes the token view contiguous from the first block
    on. Only for calls the patch changes: other calls stay bit for bit what ComfyUI computes.
    """

    path = ("patch_embedding",)

    def __init__(self, previous=None):
        self.previous = previous

    def __call__(self, x):
        call = current_call()
        module = module_at(call, self.path, "the patched Wan patch embedding")
        run = self.previous if self.previous is not None else (lambda t: type(module).forward(module, t))
        if x.ndim != 5 or not call.changed:
            return run(x)
        out = run(x.contiguous(memory_format=torch.channels_last_3d))
        return out.contiguous(memory_format=torch.channels_last_3d) if out.ndim == 5 else out


OURS = (WanSelfAttentionPatch, ChunkedFeedForward, TokenMajorEmbedding, StreamedWanBlock, ProxyHeadCut)


def apply(model, settings: AttentionSettings):
    """Return a clone of ``model`` (a ComfyUI ModelPatcher holding a Wan model) with the patch."""
    dm = model.get_model_object("diffusion_model")
    family = wan_family(dm)
    native, note = native_grid(family, settings.native_resolution)
    holder = PatchHolder(settings, native, len(dm.blocks), note)
    patched = install(model, holder, WanDiffusionWrapper(holder, family))

    targets = [("blocks", i) for i in range(len(dm.blocks)) if i not in holder.full_blocks]
    targets += [("vace_blocks", i) for i in range(len(getattr(dm, "vace_blocks", None) or ()))]
    for group, i in targets:
        replace_forward(patched, f"diffusion_model.{group}.{i}.self_attn",
                        lambda previous: WanSelfAttentionPatch(holder, group, i, previous), OURS)
    for i in holder.full_blocks:  # from an earlier Apply
        remove_forward(patched, f"diffusion_model.blocks.{i}.self_attn", OURS)
    for i in range(len(dm.blocks)):
        replace_forward(patched, f"diffusion_model.blocks.{i}.ffn", lambda previous: ChunkedFeedForward(i, previous), OURS)
        replace_forward(patched, f"diffusion_model.blocks.{i}",
                        lambda previous: StreamedWanBlock(holder, i, previous), OURS)
    if getattr(dm, "patch_embedding", None) is not None:
        replace_forward(patched, "diffusion_model.patch_embedding", TokenMajorEmbedding, OURS)
    if getattr(dm, "head", None) is not None:
        replace_forward(patched, "diffusion_model.head", ProxyHeadCut, OURS)
    return patched
