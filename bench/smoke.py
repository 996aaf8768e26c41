"""What ``--smoke`` means for every bench script: the same code path at tiny sizes on the CPU, in seconds.

The test suite runs each documented bench command with ``--smoke`` (tests/core/test_bench_smoke.py,
tests/comfyui/test_bench_smoke_comfyui.py), so a broken import or a stale name fails CI. Smoke numbers
measure nothing; parts that need CUDA (cuDNN / Flash SDPA, CUDA graphs, FlexAttention, Triton) are
skipped with a printed note.
"""
from __future__ import annotations

import math
import sys

import torch

SCALE = (7, 15, 15)  # real token grids (frames, rows, columns) are divided by these, rounded up
HEADS = 2  # attention heads of the smoke cases (head_dim stays 128)
SHRUNK = f"token grids / {'x'.join(map(str, SCALE))}, {HEADS} heads"


def shrink(grid: tuple[int, int, int]) -> tuple[int, int, int]:
    """A real (T, H, W) grid at smoke size, e.g. 14B at 4K: (21, 135, 240) -> (3, 9, 16)."""
    return tuple(math.ceil(n / s) for n, s in zip(grid, SCALE))


def pick_device(smoke: bool, script: str) -> torch.device:
    """CPU for --smoke (one thread: tiny ops gain nothing from more, and a busy CI machine makes
    threads wait for each other); otherwise CUDA, or exit with a message that says what to do."""
    if smoke:
        torch.set_num_threads(1)
        return torch.device("cpu")
    if not torch.cuda.is_available():
        sys.exit(f"{script} needs CUDA; on a machine without a GPU run it with --smoke "
                 "(tiny sizes on the CPU: checks that the script runs, measures nothing).")
    return torch.device("cuda")


def banner(sizes: str, not_run: str = "") -> str:
    """The first line of a smoke run's output: what was shrunk, and what needs CUDA and was skipped."""
    line = f"# smoke run on the CPU (1 thread, float32; the numbers measure nothing): {sizes}"
    return line + (f"; CUDA only, not run: {not_run}" if not_run else "")
