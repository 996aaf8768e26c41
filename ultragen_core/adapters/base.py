"""What every model adapter shares: the adapter protocol, the settings holder, per-run and per-call
state, and the patcher mechanics (clone, object patches, keyed wrappers).

Adapters work on ComfyUI's ModelPatcher by duck typing (clone, get_model_object, add_object_patch,
add_wrapper_with_key, model_options) and never import ComfyUI.

Nothing here holds a module of the model. ComfyUI 0.33's multi-GPU engine runs deep clones of one
patched model on several devices at the same time (one thread each) and copies object patches by
reference, so a patch object finds its module at call time, in the model the diffusion-model wrapper
is running (:class:`CallState`, kept in a context variable: per thread, per call).
"""
from __future__ import annotations

import contextvars
import logging
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Callable, Protocol

from ..attention.windows import Grid
from ..config import AttentionSettings, DualBranchPlan, resolve_plan

log = logging.getLogger(__name__)
LOG_PREFIX = "[UltraGen]"

HOLDER_KEY = "ultragen"          # transformer_options key of the PatchHolder
RUN_KEY = "ultragen_run"         # transformer_options key of the RunState of the current sampling run
WRAPPER_KEY = "ultragen"         # key of our wrappers in the patcher
CHECKPOINT_HOLDER_KEY = "ultragen_checkpoint"  # transformer_options key of checkpoint mode's holder

# ComfyUI's comfy.patcher_extension.WrappersMP values (plain strings, so no ComfyUI import).
OUTER_SAMPLE = "outer_sample"
DIFFUSION_MODEL = "diffusion_model"


class Adapter(Protocol):
    """One model family: the patch module of a folder under ``families/`` with these names."""

    FAMILY: str
    SUPPORTED: tuple[str, ...]  # diffusion-model class names it patches

    def claims(self, diffusion_model) -> bool:
        """True when the model belongs to this family (supported or refused with a reason)."""

    def refusal(self, diffusion_model) -> str | None:
        """Why this family member is not patched, or None when it is."""

    def apply(self, model, settings: AttentionSettings):
        """Return a patched clone of the ModelPatcher ``model``."""


class PatchHolder:
    """Settings of one applied patch plus a small cache of per-grid plans.

    Lives in model_options["transformer_options"]; ModelPatcher.clone() deep-copies model_options, so
    the holder returns itself from __deepcopy__ (its settings are frozen, the cache is locked: clones
    on other devices share it from their own threads).
    """

    def __init__(self, settings: AttentionSettings, native: Grid, num_blocks: int, native_note: str = ""):
        self.settings = settings
        self.native = native
        self.native_note = native_note
        self.num_blocks = num_blocks
        self.full_blocks = settings.full_blocks(num_blocks)
        self._plans: OrderedDict[Grid, DualBranchPlan] = OrderedDict()
        self._lock = threading.Lock()
        self.logged: set = set()  # keys of messages logged once per applied patch

    def __deepcopy__(self, memo):
        return self

    def plan_for(self, grid: Grid) -> DualBranchPlan:
        with self._lock:
            plan = self._plans.get(grid)
            if plan is None:
                plan = resolve_plan(self.settings, grid, self.native)
                self._plans[grid] = plan
                while len(self._plans) > 4:
                    self._plans.popitem(last=False)
            return plan

    def describe_blocks(self) -> str:
        full = sorted(self.full_blocks)
        return f"full attention in blocks {full}" if full else "dual-branch attention in every block"


@dataclass
class RunState:
    """One sampling run: the sigma window in which the patch is active, and what was logged."""

    sigma_start: float | None = None  # None: no sampler told us; active at every sigma
    sigma_end: float | None = None
    logged: set = field(default_factory=set)

    def is_active(self, sigmas) -> bool:
        if self.sigma_start is None or sigmas is None:
            return True
        sigma = float(sigmas.max()) if hasattr(sigmas, "max") else float(sigmas)
        return self.sigma_end <= sigma <= self.sigma_start


@dataclass
class CallState:
    """One call of the diffusion model, on one device.

    model: the diffusion model being called (its modules are the ones to run).
    plan: the window plan of the video grid; None: the tokens do not form a grid we can window.
    prefix: tokens before the video grid (e.g. a reference frame), which are not windowed.
    proxy: the proxy of proxy guidance (families.wan.wan_proxy.ProxyCall), whose tokens end the sequence.
    memory: how many tokens the call works on at once (memory.MemoryPlan), or None: all of them.
    split: this device's part when the call is shared out over several (families.wan.wan_split.RankCall).
    changed: the patch changes this call (else every patched module runs ComfyUI's own code).
    cache: per-call values every block shares (e.g. RoPE tables).
    """

    model: object
    plan: DualBranchPlan | None
    active: bool
    prefix: int = 0
    proxy: object | None = None
    memory: object | None = None
    split: object | None = None
    cache: dict = field(default_factory=dict)

    @property
    def changed(self) -> bool:
        return self.active and self.plan is not None and not self.plan.is_identity


_CALL: contextvars.ContextVar[CallState | None] = contextvars.ContextVar("ultragen_call", default=None)


def current_call() -> CallState | None:
    """The CallState of the diffusion-model call running in this thread, or None."""
    return _CALL.get()


def run_with_call(call: CallState, fn: Callable, *args, **kwargs):
    """Run ``fn`` with ``call`` as this thread's current call."""
    token = _CALL.set(call)
    try:
        return fn(*args, **kwargs)
    finally:
        _CALL.reset(token)


def module_at(call: CallState | None, path: tuple, what: str):
    """The module at ``path`` (attribute names and indices) of the model this call runs."""
    if call is None:
        raise RuntimeError(f"UltraGen: {what} ran outside a call of the patched model (no UltraGen call state). "
                           "A node that calls the model's blocks directly bypasses ComfyUI's model wrappers; "
                           "remove UltraGen Apply from that model.")
    module = call.model
    for step in path:
        module = module[step] if isinstance(step, int) else getattr(module, step)
    return module


def outer_sample_wrapper(executor, *args, **kwargs):
    """OUTER_SAMPLE wrapper: give this sampling run a fresh RunState with its sigma window."""
    guider = executor.class_obj
    original = guider.model_options
    holder: PatchHolder = original["transformer_options"][HOLDER_KEY]
    sampling = guider.model_patcher.model.model_sampling
    run = RunState(float(sampling.percent_to_sigma(holder.settings.start_percent)),
                   float(sampling.percent_to_sigma(holder.settings.end_percent)))
    options = dict(original)
    options["transformer_options"] = {**original["transformer_options"], RUN_KEY: run}
    guider.model_options = options
    try:
        return executor(*args, **kwargs)
    finally:
        guider.model_options = original


def split_wrapper_args(args: tuple, kwargs: dict) -> tuple[list, dict, dict]:
    """Find transformer_options in a DIFFUSION_MODEL wrapper call; returns (args, kwargs, options)."""
    args = list(args)
    if "transformer_options" in kwargs:
        return args, kwargs, kwargs["transformer_options"]
    for i in range(len(args) - 1, -1, -1):
        if isinstance(args[i], dict):
            return args, kwargs, args[i]
    raise TypeError("UltraGen: the diffusion model was called without transformer_options; "
                    "this ComfyUI version is not supported.")


_LOG_LOCK = threading.Lock()


def log_once(owner: RunState | PatchHolder, key, message: str, *fmt, level: int = logging.INFO) -> None:
    with _LOG_LOCK:
        if key in owner.logged:
            return
        owner.logged.add(key)
    log.log(level, message, *fmt)


def replace_forward(patched, path: str, make: Callable, ours: tuple[type, ...]) -> None:
    """Object-patch ``<path>.forward`` with ``make(previous)``. ``previous`` is another pack's patch of
    that forward, if any; one of ``ours`` (from an earlier Apply) is replaced, not chained."""
    key = f"{path}.forward"
    previous = patched.object_patches.get(key)
    if isinstance(previous, ours):
        previous = previous.previous
    patched.add_object_patch(key, make(previous))


def remove_forward(patched, path: str, ours: tuple[type, ...]) -> None:
    """Undo our object patch of ``<path>.forward`` (keeping another pack's patch it chained)."""
    key = f"{path}.forward"
    current = patched.object_patches.get(key)
    if isinstance(current, ours):
        if current.previous is None:
            del patched.object_patches[key]
        else:
            patched.object_patches[key] = current.previous


def install(model, holder: PatchHolder, diffusion_wrapper) -> object:
    """Clone ``model``, put ``holder`` in its transformer_options and register our keyed wrappers.

    Returns the clone; the adapter then adds its object patches to it.
    """
    patched = model.clone()
    options = patched.model_options.setdefault("transformer_options", {})
    if CHECKPOINT_HOLDER_KEY in options:
        raise ValueError("UltraGen: this model already runs the published UltraGen checkpoint (UltraGen Load "
                         "Weights), which has its own attention. Remove UltraGen Apply from this model, or "
                         "connect UltraGen Apply to the model before UltraGen Load Weights is added.")
    if HOLDER_KEY in options:
        log.info("%s the model already had UltraGen attention; the new settings replace the old ones.", LOG_PREFIX)
    options[HOLDER_KEY] = holder
    for kind, wrapper in ((OUTER_SAMPLE, outer_sample_wrapper), (DIFFUSION_MODEL, diffusion_wrapper)):
        patched.remove_wrappers_with_key(kind, WRAPPER_KEY)  # from an earlier Apply on this model
        patched.add_wrapper_with_key(kind, WRAPPER_KEY, wrapper)
    return patched
