"""The DIFFUSION_MODEL wrapper every family registers, written once.

Each call of the diffusion model it: takes the sampling run's state (its sigma window), works out the call's
video token grid, builds the :class:`.base.CallState` the patched modules read (the holder's plan for that
grid, the sigma gate), makes the memory plan of a call the patch changes (warning once when even the smallest
chunks do not fit), logs the plan line once per grid, and runs the call with that state.

A family subclasses :class:`DiffusionWrapper` and supplies only what differs:

    shape(dm, args, kwargs, options) -> CallShape    the video latent, grid and what the plan line says of it
    model_name(dm) -> str                            the model, for log lines
    memory_need(dm, shape, call) -> MemoryNeed       the widths the memory plan sizes, and the warning's words
    model_attention(dm) -> (function, interface)     the attention the windows call (for the plan line's kernel)
    prepare(call, args, kwargs, options, run)        optional: per-call work of a changed call (e.g. a layout)
    details(call) -> list[str]                       optional: more of the plan line for a changed call
    run(call, executor, args, kwargs, options)       optional: how the call runs (Wan may share it out over GPUs)
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import torch

from ..attention import kernels
from ..attention.windows import Grid
from ..memory import GiB, MemoryPlan, plan_memory
from ..models import ModelFamily
from .base import LOG_PREFIX, RUN_KEY, CallState, PatchHolder, RunState, log_once, run_with_call, split_wrapper_args


@dataclass(frozen=True)
class CallShape:
    """What a family reads off one call of its diffusion model.

    latent: the video latent (B, C, T, H, W); its batch, dtype and device size the memory plan.
    grid: the (T, H, W) video tokens, or None: they form no grid (``reason`` says why; the call keeps full
        attention).
    note: what the plan line says of the call's layout after the blocks (e.g. "; 4 guide tokens after the
        video, shared by every window"), or "". The plan line is logged once per grid and note.
    prefix: tokens before the video grid, not windowed (:attr:`.base.CallState.prefix`).
    """

    latent: torch.Tensor
    grid: Grid | None
    reason: str = ""
    note: str = ""
    prefix: int = 0


@dataclass(frozen=True)
class MemoryNeed:
    """What the memory plan (:func:`..memory.plan_memory`) sizes for a call, and how its warning says it.

    width / hidden: channels per token of the sequence-size tensors / of the feed-forward (0: not sized).
    batch: the batch the plan sizes.
    tokens: the tokens of the sequence, or None: the video grid's.
    tokens_of: the warning's words before the width ("tokens of width", "video tokens of attention width").
    smallest: what the smallest chunks hold, in the warning (e.g. " (the blocks' inputs and outputs, one
        window)"), or "".
    """

    width: int
    hidden: int
    batch: int
    tokens: int | None = None
    tokens_of: str = "tokens of width"
    smallest: str = ""


class DiffusionWrapper:
    """DIFFUSION_MODEL wrapper: run the call with its CallState (model, grid plan, sigma gate, memory plan)."""

    def __init__(self, holder: PatchHolder, family: ModelFamily):
        self.holder = holder
        self.family = family
        self.fallback_run = RunState()

    # -- what a family supplies (see the module docstring) --

    def shape(self, dm, args: list, kwargs: dict, options: dict) -> CallShape:
        raise NotImplementedError

    def model_name(self, dm) -> str:
        raise NotImplementedError

    def memory_need(self, dm, shape: CallShape, call: CallState) -> MemoryNeed:
        raise NotImplementedError

    def model_attention(self, dm) -> tuple[object, kernels.ModelAttention]:
        raise NotImplementedError

    def prepare(self, call: CallState, args: list, kwargs: dict, options: dict, run: RunState) -> None:
        """Per-call work of a call the patch changes, before its memory plan (nothing by default). It may set
        fields of ``call`` and add to ``kwargs`` (this call's own dict, passed on to the model)."""

    def details(self, call: CallState) -> list[str]:
        """What the plan line says of a changed call before its memory plan (nothing by default)."""
        return []

    # -- the shared part --

    def __call__(self, executor, *args, **kwargs):
        args, kwargs, options = split_wrapper_args(args, kwargs)
        dm = executor.class_obj
        run = options.get(RUN_KEY) or self.fallback_run
        active = run.is_active(options.get("sigmas"))
        shape = self.shape(dm, args, kwargs, options)
        call = CallState(dm, self.holder.plan_for(shape.grid) if shape.grid is not None else None, active,
                         shape.prefix)
        if active and shape.grid is None:
            log_once(run, ("no grid", shape.reason), "%s %s: %s, so these calls keep full attention.", LOG_PREFIX,
                     self.model_name(dm), shape.reason, level=logging.WARNING)
        if call.changed:
            self.prepare(call, args, kwargs, options, run)
            call.memory = self.memory_plan(dm, shape, call, run)
        if active and shape.grid is not None:
            self.log_plan(dm, shape, call, options, run)
        return self.run(call, executor, args, kwargs, options)

    def run(self, call: CallState, executor, args: list, kwargs: dict, options: dict):
        """Run the model call with ``call`` as this thread's call state."""
        return run_with_call(call, executor, *args, **kwargs)

    def memory_plan(self, dm, shape: CallShape, call: CallState, run: RunState) -> MemoryPlan:
        """How many tokens the call works on at once, from the memory budget (see memory.py); warns once per
        grid when even the smallest chunks do not fit."""
        need = self.memory_need(dm, shape, call)
        tokens = math.prod(call.plan.grid) if need.tokens is None else need.tokens
        x = shape.latent
        memory = plan_memory(tokens, need.batch, need.width, need.hidden, x.element_size(), x.device,
                             self.holder.settings.memory_budget_gb, math.prod(call.plan.window))
        if not memory.fits:
            log_once(run, ("memory too small", tokens, need.batch, call.plan.grid), "%s the memory budget (%.1f GiB "
                     "for this call) is below what %d %s %d need even in the smallest chunks%s: sampling may run "
                     "out of memory. Raise memory_budget_gb, lower the resolution, or use preset fast (smaller "
                     "windows).", LOG_PREFIX, memory.budget / GiB, tokens, need.tokens_of, need.width,
                     need.smallest, level=logging.WARNING)
        return memory

    def log_plan(self, dm, shape: CallShape, call: CallState, options: dict, run: RunState) -> None:
        """The plan line of a grid, once per sampling run: the model, the plan, the blocks, the layout, the sigma
        window, and for a changed call its memory plan and the attention kernel."""
        plan, settings = call.plan, self.holder.settings
        extra = ""
        if call.changed:
            function, interface = self.model_attention(dm)
            kernel = kernels.pick(function, options, shape.latent.device, interface)[1]
            extra = "; " + "; ".join([*self.details(call), call.memory.describe(), kernel])
        log_once(run, ("plan", shape.grid, shape.note), "%s %s, %s: %s; %s%s; active %g%%-%g%% of sampling%s.",
                 LOG_PREFIX, self.model_name(dm), self.holder.native_note,
                 "unchanged (grid within one window, no global branch)" if plan.is_identity else plan.describe(),
                 self.holder.describe_blocks(), shape.note, 100 * settings.start_percent, 100 * settings.end_percent,
                 extra)


__all__ = ["CallShape", "DiffusionWrapper", "MemoryNeed"]
