"""What every model adapter shares: the settings holder, per-run state and the sigma gate.

Adapters work on ComfyUI's ModelPatcher by duck typing (clone, get_model_object, add_object_patch,
add_wrapper_with_key, model_options) and never import ComfyUI.
"""
from __future__ import annotations

import logging
from collections import OrderedDict
from dataclasses import dataclass, field

from ..attention.windows import Grid
from ..config import AttentionSettings, DualBranchPlan, resolve_plan

log = logging.getLogger(__name__)
LOG_PREFIX = "[UltraGen]"

HOLDER_KEY = "ultragen"          # transformer_options key of the PatchHolder
RUN_KEY = "ultragen_run"         # transformer_options key of the RunState of the current sampling run
CALL_KEY = "ultragen_call"       # transformer_options key of the CallState of the current model call
WRAPPER_KEY = "ultragen"         # key of our wrappers in the patcher
CHECKPOINT_HOLDER_KEY = "ultragen_checkpoint"  # transformer_options key of checkpoint mode's holder

# ComfyUI's comfy.patcher_extension.WrappersMP values (plain strings, so no ComfyUI import).
OUTER_SAMPLE = "outer_sample"
DIFFUSION_MODEL = "diffusion_model"


class PatchHolder:
    """Settings of one applied patch plus a small cache of per-grid plans.

    Lives in model_options["transformer_options"]; ModelPatcher.clone() deep-copies model_options, so
    the holder returns itself from __deepcopy__ (its settings are frozen and the cache is shareable).
    """

    def __init__(self, settings: AttentionSettings, family: str, native: Grid, num_blocks: int):
        self.settings = settings
        self.family = family
        self.native = native
        self.num_blocks = num_blocks
        self.full_blocks = settings.full_blocks(num_blocks)
        self._plans: OrderedDict[Grid, DualBranchPlan] = OrderedDict()
        self.relayout = False  # True during a model call the patch changes (see adapters.wan.TokenMajorEmbedding)
        self.logged: set = set()  # keys of messages logged once per applied patch

    def __deepcopy__(self, memo):
        return self

    def plan_for(self, grid: Grid) -> DualBranchPlan:
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
    """One call of the diffusion model: its token grid and whether the patch is active."""

    plan: DualBranchPlan | None  # None: the tokens do not form a grid we can window; run unpatched
    active: bool
    cache: dict = field(default_factory=dict)  # per-call values every block shares (e.g. RoPE tables)


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


def with_call_state(args: list, kwargs: dict, options: dict, call: CallState) -> tuple[list, dict]:
    """Return args / kwargs whose transformer_options is a copy of ``options`` carrying ``call``."""
    new = {**options, CALL_KEY: call}
    if "transformer_options" in kwargs:
        return args, {**kwargs, "transformer_options": new}
    for i in range(len(args) - 1, -1, -1):
        if args[i] is options:
            args[i] = new
            break
    return args, kwargs


def log_once(run: RunState | PatchHolder, key, message: str, *fmt) -> None:
    if key not in run.logged:
        run.logged.add(key)
        log.info(message, *fmt)
