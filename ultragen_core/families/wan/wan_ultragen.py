"""Checkpoint mode for Wan: run the published UltraGen model (base Wan + extra weights) in ComfyUI.

What is attached, on a clone of the ModelPatcher:
- an object patch on ``blocks.{l}.self_attn.forward`` for every block the checkpoint has extras for
  (the others keep ComfyUI's full attention, as in the published model); it runs
  :func:`ultragen_core.checkpoint.forward.ultragen_attention` with the block's own q / k / v / o /
  norms, the model's own ``apply_rope1`` and ``optimized_attention`` (kernel patches still apply);
- a DIFFUSION_MODEL wrapper that records the token grid and the raw timestep of each call;
- the extra weights as an nn.Module wrapped in its own ModelPatcher and registered with
  ``set_additional_models``.

Why an additional model and not submodules of the diffusion model: ComfyUI's sampler loads
``model.get_nested_additional_models()`` together with the model (``load_models_gpu``), so the extras
are moved to the GPU, counted in the memory estimate and offloaded with it, while the shared
diffusion model (cached by the loader, maybe used by other branches of the graph) is never mutated.
Object patches cannot add a module (``set_attr`` needs the attribute to exist), and attaching
submodules would change the shared model and leave ModelPatcher's cached size stale. Under lowvram a
plain module may stay on the offload device: the forward reads every extra weight through
``modules.cast`` (to the activation's device / dtype), as ComfyUI's manual-cast layers do.
"""
from __future__ import annotations

import copy
import os
import threading
import weakref
from dataclasses import dataclass

import torch

from ...adapters.base import (CHECKPOINT_HOLDER_KEY, DIFFUSION_MODEL, HOLDER_KEY, LOG_PREFIX, log,
                              split_wrapper_args)
from ...attention import kernels
from ...checkpoint.forward import BaseAttention, check_grid, ultragen_attention
from ...checkpoint.loader import prepare_checkpoint
from ...checkpoint.modules import UltraGenExtras
from ...models import wan_family

# ComfyUI 0.33's comfy.patcher_extension.CallbacksMP values (plain strings: no ComfyUI import; 0.3.64
# stores them and never calls them)
ON_DEEPCLONE_MULTIGPU = "on_deepclone_multigpu"
ON_MATCH_MULTIGPU_CLONES = "on_match_multigpu_clones"
from .wan import WanSelfAttentionPatch, model_name, token_grid, wan_namespace

SUPPORTED = ("WanModel",)
CKPT_HOLDER_KEY = CHECKPOINT_HOLDER_KEY        # transformer_options key of the CheckpointHolder
CKPT_CALL_KEY = "ultragen_checkpoint_call"    # transformer_options key of the CheckpointCall
WRAPPER_KEY = "ultragen_checkpoint"           # wrapper key and additional-models key


class CheckpointHolder:
    """The extras of one loaded checkpoint; shared by clones (``__deepcopy__`` returns itself).

    ComfyUI 0.33's multi-GPU engine deep-clones the model and its additional models (our extras) per
    extra device; :func:`register_device_clone` records which extras belong to which clone's diffusion
    model, so each device runs its own copy.
    """

    def __init__(self, extras: UltraGenExtras, source: str):
        self.extras = extras
        self.source = source
        self.logged: set = set()
        self._clones: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # diffusion model -> extras
        self._lock = threading.Lock()

    def __deepcopy__(self, memo):
        return self

    def extras_for(self, diffusion_model) -> UltraGenExtras:
        with self._lock:
            return self._clones.get(diffusion_model, self.extras)

    def remember(self, diffusion_model, extras: UltraGenExtras) -> None:
        with self._lock:
            self._clones[diffusion_model] = extras

    def log_once(self, key, message: str, *fmt) -> None:
        if key not in self.logged:
            self.logged.add(key)
            log.info(message, *fmt)


@dataclass
class CheckpointCall:
    """One call of the diffusion model: the model being run, its token grid (None: not a plain grid),
    the raw timestep (B,) and the extras of this model's device."""

    model: object
    grid: tuple[int, int, int] | None
    timestep: torch.Tensor
    extras: UltraGenExtras | None = None


def window_positions(grid, sub, device) -> torch.Tensor:
    """Flat indices into ``grid`` (T, H, W) of positions (t, i, j), t < T', i < h, j < w of ``sub``."""
    _, H, W = grid
    T, h, w = sub
    t = torch.arange(T, device=device)[:, None, None]
    i = torch.arange(h, device=device)[None, :, None]
    j = torch.arange(w, device=device)[None, None, :]
    return ((t * H + i) * W + j).reshape(-1)


class CheckpointWrapper:
    """DIFFUSION_MODEL wrapper: attach a CheckpointCall (grid, raw timestep) to transformer_options."""

    def __init__(self, holder: CheckpointHolder):
        self.holder = holder

    def __call__(self, executor, *args, **kwargs):
        args, kwargs, options = split_wrapper_args(args, kwargs)
        dm = executor.class_obj
        timestep = args[1] if len(args) > 1 else kwargs["timestep"]
        time_dim_concat = args[4] if len(args) > 4 else kwargs.get("time_dim_concat")
        grid, prefix = token_grid(dm, args[0], time_dim_concat, kwargs)
        is_grid = prefix == 0  # the published model knows no tokens outside the video grid
        if is_grid:
            check_grid(grid)
            self.holder.log_once(("grid", grid), "%s %s: UltraGen checkpoint attention (%s) on a %dx%dx%d token "
                                 "grid in blocks %s; full attention in the others.", LOG_PREFIX,
                                 model_name(dm, wan_family(dm)), self.holder.source, *grid,
                                 self.holder.extras.block_ids)
        call = CheckpointCall(dm, grid if is_grid else None, timestep, self.holder.extras_for(dm))
        new = {**options, CKPT_CALL_KEY: call}
        if "transformer_options" in kwargs:
            kwargs = {**kwargs, "transformer_options": new}
        else:
            args = [new if a is options else a for a in args]
        return executor(*args, **kwargs)


class CheckpointSelfAttention:
    """Replacement for ``WanSelfAttention.forward`` of one block that has UltraGen extras."""

    def __init__(self, holder: CheckpointHolder, block_index: int, module_index: int | None = None):
        """block_index: the block's number in the checkpoint (its extras, its window counts);
        module_index: the block of the running model it replaces (the same number, except in bench/)."""
        self.holder = holder
        self.block_index = block_index
        self.module_index = block_index if module_index is None else module_index

    def __call__(self, x, freqs, transformer_options={}):
        call: CheckpointCall | None = transformer_options.get(CKPT_CALL_KEY)
        if call is None:
            raise RuntimeError("UltraGen: the checkpoint's self-attention ran outside a call of the patched model. "
                               "A node that calls the model's blocks directly bypasses ComfyUI's model wrappers.")
        m = call.model.blocks[self.module_index].self_attn  # the running model's own (each device its own)
        namespace = wan_namespace(m)
        if call.grid is None:
            self.holder.log_once("nogrid", "%s the tokens do not form a plain video grid (reference latent?): "
                                 "full attention for these calls.", LOG_PREFIX)
            return type(m).forward(m, x, freqs, transformer_options=transformer_options)
        grid, heads = call.grid, m.num_heads
        table = freqs[:1]  # (1, N, 1, d/2, 2, 2); positions are the same for every batch item

        def rope(t, sub):
            f = table.index_select(1, window_positions(grid, sub, t.device))
            b, n = t.shape[:2]
            return namespace.apply_rope1(t.view(b, n, heads, -1), f).view(b, n, -1)

        attention = kernels.choose(namespace.optimized_attention, heads, transformer_options, x.device)
        base = BaseAttention(m.q, m.k, m.v, m.o, m.norm_q, m.norm_k, rope, attention)
        extras = (call.extras or self.holder.extras).blocks[str(self.block_index)]
        return ultragen_attention(x, grid, self.block_index, extras, call.timestep, base)


def check_model(dm) -> None:
    if type(dm).__name__ not in SUPPORTED:
        raise NotImplementedError(
            f"UltraGen checkpoint mode supports {', '.join(SUPPORTED)} (Wan2.1-T2V), not {type(dm).__name__} "
            f"({type(dm).__module__}). Connect the MODEL output of Load Diffusion Model with Wan2.1-T2V-1.3B.")


def attach(model, extras: UltraGenExtras, source: str, base_patches: dict[str, torch.Tensor] | None = None,
           patcher_factory=None):
    """Return a clone of ``model`` running the UltraGen checkpoint.

    base_patches: base weights (keys of the diffusion model's state dict) to take from the checkpoint.
    patcher_factory(module, load_device=, offload_device=): builds the ModelPatcher of the extras
    (ComfyUI's ModelPatcher class; defaults to the class of ``model``).
    """
    dm = model.get_model_object("diffusion_model")
    check_model(dm)
    patched = model.clone()
    options = patched.model_options.setdefault("transformer_options", {})
    stale = [k for k, p in patched.object_patches.items() if isinstance(p, (WanSelfAttentionPatch, CheckpointSelfAttention))]
    if HOLDER_KEY in options or (stale and CKPT_HOLDER_KEY not in options):
        raise ValueError("UltraGen: this model already has UltraGen Apply's training-free attention. The checkpoint "
                         "brings its own attention: connect UltraGen Load Weights directly to the model loader.")
    for key in stale:  # from an earlier UltraGen Load Weights on this model
        del patched.object_patches[key]
    options[CKPT_HOLDER_KEY] = holder = CheckpointHolder(extras, source)
    if base_patches:
        patched.add_patches({f"diffusion_model.{k}": ("set", (t,)) for k, t in base_patches.items()}, 1.0, 1.0)
    for i in extras.block_ids:
        key = f"diffusion_model.blocks.{i}.self_attn.forward"
        if key in patched.object_patches:
            log.warning("%s block %d's self-attention was patched by another node; UltraGen replaces it.", LOG_PREFIX, i)
        patched.add_object_patch(key, CheckpointSelfAttention(holder, i))
    patched.remove_wrappers_with_key(DIFFUSION_MODEL, WRAPPER_KEY)
    patched.add_wrapper_with_key(DIFFUSION_MODEL, WRAPPER_KEY, CheckpointWrapper(holder))
    factory = patcher_factory or type(model)
    extras_patcher = factory(extras, load_device=model.load_device, offload_device=model.offload_device)
    # what ComfyUI 0.33's multi-GPU engine rebuilds a fresh copy from, for each extra device
    extras_patcher.cached_patcher_init = (fresh_extras_patcher, (factory, extras, model.load_device,
                                                                 model.offload_device))
    patched.set_additional_models(WRAPPER_KEY, [extras_patcher])
    for kind in (ON_DEEPCLONE_MULTIGPU, ON_MATCH_MULTIGPU_CLONES):
        patched.remove_callbacks_with_key(kind, WRAPPER_KEY)
        patched.add_callback_with_key(kind, WRAPPER_KEY, lambda _, clone: register_device_clone(holder, clone))
    return patched


def fresh_extras_patcher(factory, extras: UltraGenExtras, load_device, offload_device, disable_dynamic=False):
    """A new patcher over a copy of ``extras`` (ComfyUI's ``cached_patcher_init`` protocol)."""
    return factory(copy.deepcopy(extras), load_device=load_device, offload_device=offload_device)


def register_device_clone(holder: CheckpointHolder, clone) -> None:
    """ON_DEEPCLONE_MULTIGPU / ON_MATCH_MULTIGPU_CLONES: the clone for another device runs the extras
    ComfyUI cloned with it (its additional model), not the original's."""
    copies = clone.get_additional_models_with_key(WRAPPER_KEY)
    if copies:
        holder.remember(clone.get_model_object("diffusion_model"), copies[0].model)


def load_ultragen(model, path: str, patcher_factory=None):
    """Clone ``model`` and attach the UltraGen checkpoint at ``path``; returns (patched, report)."""
    dm = model.get_model_object("diffusion_model")
    check_model(dm)
    extras, base, report = prepare_checkpoint(model, dm, path)
    return attach(model, extras, os.path.basename(path), base, patcher_factory), report
