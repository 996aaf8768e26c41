"""The variant loop of bench/dit.py's families beside Wan (``--family hunyuan15`` / ``kandinsky5`` / ``minimax``).

For each resolution the family builds its random model once (a :class:`Case`); each variant (unpatched, UltraGen
default, UltraGen fast) is then patched as UltraGen Apply patches it (:func:`patched`), loaded as the sampler loads
it, timed, scaled to the model's depth and printed as one table row. The family files say only what differs: the
model, its inputs, how it is called and what the row's note adds. Wan's loop in dit.py shares :data:`VARIANTS` and
:func:`patched`; its extra variants (--windows, --proxy, --checkpoint, --sol-attn) stay there.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Callable

import torch

from ultragen_core import api
from ultragen_core.config import AttentionSettings, resolve_plan

# (label, settings) of every family's rows; None: the unpatched model
VARIANTS = (("unpatched", None), ("UltraGen default", AttentionSettings()),
            ("UltraGen fast", AttentionSettings(preset="fast")))


@dataclasses.dataclass(kw_only=True)
class Case:
    """One resolution of a family's table: the built model, how one step calls it, and what its rows say."""
    model: str                     # the rows' model column, e.g. "HunyuanVideo 1.5"
    res: str                       # the rows' resolution column, a key of the family's RES
    grid: tuple[int, int, int]     # token grid (T, H, W): the plan is made for it
    native: tuple[int, int, int]   # the real model's native grid (smoke: shrunk)
    layers: int                    # blocks built and run
    depth: int                     # the real model's blocks: a time is scaled by depth / layers
    blocks: str                    # what --blocks counts, in the note: "double blocks", "visual blocks", "blocks"
    base: object                   # the random model as ComfyUI's loader returns it (a ModelPatcher)
    call: Callable                 # call(diffusion_model, transformer_options): one step on this case's inputs
    note: str = ""                 # note text after the scaling (with its leading "; "), before the plan


def smoke_windows(settings, grid, native):
    """--smoke: the windows the settings give on the real model, with the smoke model's shrunk native grid
    (the api reads the native size from the model: a Wan of width 128 gets the real 1.3B's)."""
    return dataclasses.replace(settings, window=resolve_plan(settings, grid, native).window)


def patched(base, settings: AttentionSettings, label: str, args, grid, native):
    """(``base`` patched with ``settings`` as UltraGen Apply patches it, the row's label). --smoke: the windows
    resolved on the shrunk native grid (:func:`smoke_windows`); --memory-budget: memory_budget_gb, named in the
    label."""
    if args.smoke:
        settings = smoke_windows(settings, grid, native)
    if args.memory_budget:
        settings = dataclasses.replace(settings, memory_budget_gb=args.memory_budget)
        label += f", budget {args.memory_budget:g} GB"
    return api.apply(base, settings), label  # UltraGen Apply


def run(args, device, case_at: Callable[[str], Case], loaded, unload, measure, step_options,
        not_run_rows: bool = False):
    """The table rows of every resolution in ``args.res``: ``case_at(res)`` builds that resolution's Case (one at a
    time: the previous model is freed first). The helpers are bench/dit.py's: ``loaded`` / ``unload`` /
    ``measure`` and the transformer_options each call gets. not_run_rows: an unpatched variant left out by
    --skip-unpatched-above or --full-depth prints a "not run" row instead of none."""
    for res in args.res.split(","):
        case = case_at(res)
        rows(args, device, case, loaded, unload, measure, step_options, not_run_rows)
        del case
        if device.type == "cuda":
            torch.cuda.empty_cache()


def rows(args, device, case: Case, loaded, unload, measure, step_options, not_run_rows: bool):
    """One row per variant of ``case`` that --only and --skip-unpatched-above / --full-depth leave in."""
    n, scale, base_secs = math.prod(case.grid), case.depth / case.layers, None
    grid = "x".join(map(str, case.grid))
    for label, settings in VARIANTS:
        if args.only and args.only not in label:
            continue
        if settings is None and (n > args.skip_unpatched_above or args.full_depth):
            if not_run_rows:
                print(f"| {case.model} | {case.res} | {grid} | {case.layers} | {label} | not run | | n/a | | "
                      f"{n} tokens > --skip-unpatched-above |", flush=True)
            continue
        plan = None
        patcher = case.base
        if settings is not None:
            patcher, label = patched(case.base, settings, label, args, case.grid, case.native)
            plan = api.plan_for(patcher, case.grid)
        model, options = loaded(patcher)

        def call():
            with torch.inference_mode():
                return case.call(model, step_options(options))
        secs, peak = measure(call, device, reps=1 if n > 500_000 else 2, warmup=not args.full_depth)
        secs *= scale
        base_secs = secs if settings is None else base_secs
        speed = f"{base_secs / secs:.1f}x" if base_secs else ""
        note = (f"measured on {case.layers} {case.blocks}, scaled x{scale:g}" if scale != 1 else "all blocks") + \
            case.note + (f"; {plan.describe()}" if plan else "")
        print(f"| {case.model} | {case.res} | {grid} | {case.layers} | {label} | {secs:.2f} | {speed} | n/a | "
              f"{peak:.1f} | {note} |", flush=True)
        del model, options, patcher
        unload()
