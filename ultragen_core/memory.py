"""How many tokens the patched model works on at once, from a VRAM budget.

At high resolution almost all of a Wan step's memory is activations, and only attention needs many
tokens at once (a window's worth). The patched block keeps two sequence-size tensors (its input and its
output; the modulated self-attention input is computed per chunk of windows, see
families/wan/wan_block.py ``ModulatedRows``) and streams everything else through chunks of tokens: the
modulated rows, q / k / v of a few windows, the feed-forward's hidden layer of a few rows. The chunk is
the largest that fits what the budget leaves after those tensors.

The budget is what the user set (UltraGen Attention Settings, ``memory_budget_gb``) minus what the
device already holds (weights ComfyUI loaded, latents), or, automatically, the free VRAM as the host
reports it (ComfyUI: its free memory less its reserve, so ``--reserve-vram`` caps us too).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch

GiB = 1024**3
MIN_CHUNK = 64           # tokens: smaller chunks cost more in per-call overhead than they save
MARGIN = 512 * 1024**2   # bytes left for the allocator's fragmentation and the host's small tensors
SEQUENCE_TENSORS = 2     # whole-sequence tensors a streamed block holds: its input and its output


def _torch_free(device: torch.device) -> int:
    free, _ = torch.cuda.mem_get_info(device)
    return free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)


_free_memory: Callable[[torch.device], int] = _torch_free


def set_free_memory(fn: Callable[[torch.device], int]) -> None:
    """Tell the core how the host counts free VRAM (bytes); ComfyUI's nodes install its own reading."""
    global _free_memory
    _free_memory = fn


def per_token_bytes(dim: int, ffn_dim: int, itemsize: int, rope_itemsize: int = 4) -> int:
    """Working memory per token in flight (batch item), the larger of the two streamed stages.

    Attention: the gathered input, q, k, v, the key and value buffers, the output (7 x dim), plus
    RoPE's two float32 copies of q or k. Per-token work: the feed-forward's hidden layer before and
    after GELU (2 x ffn_dim), the norm, the modulated input, the cross-attention's q and output, the
    new rows (5 x dim).
    """
    attention = 7 * dim * itemsize + 2 * dim * rope_itemsize
    rows = (2 * ffn_dim + 5 * dim) * itemsize
    return max(attention, rows)


@dataclass(frozen=True)
class MemoryPlan:
    """chunk_tokens: tokens per streamed chunk; budget / workspace: bytes (None off the GPU, no limit);
    source: where the budget came from; fits: False when even the smallest chunk exceeds the budget."""

    chunk_tokens: int
    tokens: int
    budget: int | None
    workspace: int | None
    source: str
    fits: bool = True

    @property
    def chunks(self) -> int:
        return math.ceil(self.tokens / self.chunk_tokens)

    def describe(self) -> str:
        if self.budget is None:
            return f"memory: {self.source}; {self.tokens} tokens at once"
        per = "at once" if self.chunks == 1 else f"in chunks of {self.chunk_tokens} ({self.chunks} per block)"
        if self.workspace <= 0:  # the block's input and output alone take the whole budget
            return (f"memory: {self.source}, {self.budget / GiB:.1f} GiB for this call, which the block's input "
                    f"and output alone exceed by {-self.workspace / GiB:.1f} GiB (no room left for work): "
                    f"{self.tokens} tokens {per}, the smallest chunks, which may run out of memory. Raise "
                    "memory_budget_gb (0 = automatic: the free VRAM), or lower the resolution or frames")
        return (f"memory: {self.source}, {self.budget / GiB:.1f} GiB for this call, "
                f"{self.workspace / GiB:.1f} GiB of it for work beyond the block's input and output; "
                f"{self.tokens} tokens {per}")


def plan_memory(tokens: int, batch: int, dim: int, ffn_dim: int, itemsize: int, device: torch.device,
                budget_gb: float = 0.0, largest_window: int = 0) -> MemoryPlan:
    """The chunk for one model call of ``batch`` x ``tokens`` tokens of width ``dim``.

    budget_gb: 0 = automatic (free VRAM; no limit off the GPU), else the VRAM in GB the sampling may use (GiB,
        2^30 bytes, as card sizes and ComfyUI's --reserve-vram count), of which what the device holds now is
        already spent.
    largest_window: tokens of the largest window (attention streams whole windows, so it needs at least
        one; reported in ``fits``).
    """
    full = batch * tokens * dim * itemsize  # one sequence-size tensor
    cuda = device.type == "cuda"
    if budget_gb > 0:
        budget = int(budget_gb * GiB) - (torch.cuda.memory_allocated(device) if cuda else 0)
        source = f"budget {budget_gb:g} GB (UltraGen Attention Settings)"
    elif cuda:
        budget = _free_memory(device)
        source = "automatic (free VRAM)"
    else:
        return MemoryPlan(tokens, tokens, None, None, "automatic, no limit on the CPU")
    workspace = budget - SEQUENCE_TENSORS * full - MARGIN
    per_token = batch * per_token_bytes(dim, ffn_dim, itemsize)
    chunk = max(MIN_CHUNK, min(tokens, workspace // per_token if workspace > 0 else 0))
    fits = workspace >= per_token * max(MIN_CHUNK, min(tokens, largest_window))
    return MemoryPlan(int(chunk), tokens, budget, workspace, source, fits)
