"""Settings of the dual-branch attention, and the per-grid plan derived from them."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import cached_property

from .attention.dual_branch import FUSIONS
from .attention.global_branch import pooled_grid
from .attention.windows import Grid, WindowLayout, auto_count, balanced_window, make_layout
from .models import NATIVE_RESOLUTIONS
from .presets import PRESETS, fast_window

SHIFTS = ("auto", "alternate", "none")


def parse_block_list(text: str) -> tuple[int, ...]:
    """Parse "0, 1, -1" into (0, 1, -1). Negative entries count from the last block."""
    items = [s.strip() for s in text.replace(";", ",").split(",")]
    out = []
    for item in items:
        if not item:
            continue
        try:
            out.append(int(item))
        except ValueError:
            raise ValueError(
                f"full_attention_blocks: {item!r} is not a block number. "
                f"Write block indices separated by commas, e.g. \"0,1,-1\" (negative counts from the end)."
            ) from None
    return tuple(out)


@dataclass(frozen=True)
class AttentionSettings:
    """What the user chose. Zero means automatic for windows and compression.

    preset: "quality" (automatic windows of about the native size, shifted on odd blocks) or "fast"
        (smaller automatic windows, never shifted; see presets.py). It only fills in what is automatic:
        a window entry of 0 and shift "auto".
    window: (t, h, w) window size in tokens (latent frames / patch rows / patch columns).
    shift: "alternate" moves window borders by half a window on odd blocks; "none" never does; "auto"
        is "alternate" with the quality preset and "none" with the fast one.
    global_branch: add the pooled global branch.
    global_compression: pooling factor p of the global branch.
    fusion: "band" (global replaces the low frequencies of the local output), "gate" (convex mix),
        "local_only" (windows alone). global_branch off and fusion "local_only" are two switches for
        the same thing: either one alone runs the windows without a global branch (see
        ``uses_global_branch``), so no pair of the two is contradictory.
    global_strength: weight of the global branch in the fusion, 0..1.
    full_attention_blocks: blocks that keep full attention; negative indices count from the end.
    start_percent / end_percent: part of the sampling schedule in which the patch is active.
    native_resolution: the size the model was trained at, a key of models.NATIVE_RESOLUTIONS; "auto"
        takes it from the model family (the weights cannot tell Wan 2.1 I2V-14B 480P from 720P).
    memory_budget_gb: VRAM (GB) a model call may use; 0 = automatic (the free VRAM). Below what the whole
        sequence needs, the patch streams its tokens in chunks (see memory.py); results are unchanged.
    """

    window: Grid = (0, 0, 0)
    shift: str = "auto"
    global_branch: bool = True
    global_compression: int = 0
    fusion: str = "band"
    global_strength: float = 1.0
    full_attention_blocks: tuple[int, ...] = field(default=())
    start_percent: float = 0.0
    end_percent: float = 1.0
    preset: str = "quality"
    native_resolution: str = "auto"
    memory_budget_gb: float = 0.0

    def __post_init__(self):
        problem = self.problem()
        if problem:
            raise ValueError(problem)

    def problem(self) -> str | None:
        """A message naming what is wrong and how to fix it, or None."""
        if len(self.window) != 3 or any(int(w) != w or w < 0 for w in self.window):
            return f"window must be three whole numbers >= 0 (0 = automatic), got {self.window}."
        if self.preset not in PRESETS:
            return f"preset must be one of {PRESETS}, got {self.preset!r}."
        if self.native_resolution not in NATIVE_RESOLUTIONS:
            return f"native_resolution must be one of {list(NATIVE_RESOLUTIONS)}, got {self.native_resolution!r}."
        if self.shift not in SHIFTS:
            return f"shift must be one of {SHIFTS}, got {self.shift!r}."
        if self.fusion not in FUSIONS:
            return f"fusion must be one of {tuple(FUSIONS)}, got {self.fusion!r}."
        if self.global_compression < 0:
            return f"global_compression must be >= 0 (0 = automatic), got {self.global_compression}."
        if not 0.0 <= self.global_strength <= 1.0:
            return f"global_strength must be within 0..1, got {self.global_strength}."
        if not self.memory_budget_gb >= 0.0:
            return (f"memory_budget_gb must be >= 0 GB (0 = automatic, from the free VRAM), got "
                    f"{self.memory_budget_gb}.")
        if not 0.0 <= self.start_percent < self.end_percent <= 1.0:
            return (f"start_percent ({self.start_percent}) must be below end_percent ({self.end_percent}), "
                    "both within 0..1.")
        return None

    @property
    def uses_global_branch(self) -> bool:
        """The global branch runs: global_branch on and a fusion that uses it."""
        return self.global_branch and self.fusion != "local_only"

    def full_blocks(self, num_blocks: int) -> frozenset[int]:
        """Resolve negative indices; refuse indices outside the model."""
        resolved = set()
        for b in self.full_attention_blocks:
            i = b + num_blocks if b < 0 else b
            if not 0 <= i < num_blocks:
                raise ValueError(
                    f"full_attention_blocks: block {b} does not exist in a model with {num_blocks} blocks. "
                    f"Use indices from {-num_blocks} to {num_blocks - 1}."
                )
            resolved.add(i)
        return frozenset(resolved)


@dataclass(frozen=True)
class DualBranchPlan:
    """The concrete layout for one token grid: windows per block parity and the global pooling."""

    grid: Grid
    window: Grid
    shift: bool
    factor: int  # global pooling factor; 0 when the global branch is off
    fusion: str
    strength: float

    @cached_property
    def layouts(self) -> tuple[WindowLayout, WindowLayout]:
        plain = make_layout(self.grid, self.window, shifted=False)
        return plain, (make_layout(self.grid, self.window, shifted=True) if self.shift else plain)

    def layout(self, block_index: int) -> WindowLayout:
        return self.layouts[block_index % 2]

    @property
    def is_identity(self) -> bool:
        """One window over the whole grid and no global branch: exactly full attention."""
        return self.factor == 0 and self.layouts[0].is_single_window and self.layouts[1].is_single_window

    @property
    def pooled(self) -> Grid | None:
        return pooled_grid(self.grid, self.factor) if self.factor else None

    def describe(self) -> str:
        plain, shifted = self.layouts
        text = (f"grid {'x'.join(map(str, self.grid))} ({math.prod(self.grid)} tokens): "
                f"windows {'x'.join(map(str, self.window))}, {plain.describe()}")
        if self.shift and shifted is not plain and not shifted.is_single_window:
            text += f", shifted on odd blocks: {shifted.describe()}"
        if self.factor:
            text += (f"; global branch pooled x{self.factor} -> {'x'.join(map(str, self.pooled))}, "
                     f"fusion {self.fusion} {self.strength:g}")
        else:
            text += "; no global branch"
        return text


def resolve_plan(settings: AttentionSettings, grid: Grid, native: Grid) -> DualBranchPlan:
    """Fill in automatic windows / pooling / shift for ``grid`` on a model trained at ``native``."""
    if settings.preset == "fast":
        auto = fast_window(native)
    else:
        auto = tuple(balanced_window(n, auto_count(n, n0)) for n, n0 in zip(grid, native))
    window = tuple(min(w or a, n) for w, a, n in zip(settings.window, auto, grid))
    shift = settings.shift == "alternate" or (settings.shift == "auto" and settings.preset == "quality")
    factor = 0
    if settings.uses_global_branch:
        per_side = max(math.ceil(grid[1] / window[1]), math.ceil(grid[2] / window[2]))
        if settings.global_compression:
            factor = max(1, min(settings.global_compression, max(grid[1], grid[2])))
        elif per_side > 1:
            # automatic: pool by the window count per side, so the pooled frame is about one window
            factor = per_side
        # automatic and one window covers each frame: the pooled grid would be the grid itself, so
        # the global branch would only repeat full attention; leave it off (factor 0).
    return DualBranchPlan(grid, window, shift, factor, settings.fusion, settings.global_strength)
