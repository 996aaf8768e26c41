"""The extra UltraGen parameters as nn.Modules, named as published (so the state dict loads as is).

Forward code never calls these modules directly: it reads their parameters through :func:`cast`,
so they work wherever ComfyUI's model management left them (GPU, CPU offload, storage dtype).
"""
from __future__ import annotations

import torch
import torch.nn as nn

from .keys import CONVS, GATES, LORAS, PROJECTIONS, TIME_EMBED_DIM


class LoRA(nn.Module):
    """x -> lora_B(lora_A(x)), both with biases, no scale (as published)."""

    def __init__(self, width: int, rank: int, device=None, dtype=None):
        super().__init__()
        self.lora_A = nn.Linear(width, rank, device=device, dtype=dtype)
        self.lora_B = nn.Linear(rank, width, device=device, dtype=dtype)


class BlockExtras(nn.Module):
    """The extra parameters of one block's self-attention (published names)."""

    def __init__(self, width: int, rank: int, device=None, dtype=None):
        super().__init__()
        kw = dict(device=device, dtype=dtype)
        for name in LORAS:
            setattr(self, name, LoRA(width, rank, **kw))
        for name in GATES:  # Linear(256, C), SiLU, Linear(C, C)
            setattr(self, name, nn.Sequential(nn.Linear(TIME_EMBED_DIM, width, **kw), nn.SiLU(),
                                              nn.Linear(width, width, **kw)))
        for name in PROJECTIONS:  # SiLU, Linear(C, C), Sigmoid
            setattr(self, name, nn.Sequential(nn.SiLU(), nn.Linear(width, width, **kw), nn.Sigmoid()))
        for name, kernel in CONVS.items():  # depthwise; 2D: stride = kernel (floor), 3D: 3x3x3, padding 1
            if len(kernel) == 2:
                conv = nn.Conv2d(width, width, kernel, stride=kernel, groups=width, **kw)
            else:
                conv = nn.Conv3d(width, width, kernel, padding=1, groups=width, **kw)
            setattr(self, name, conv)


class UltraGenExtras(nn.Module):
    """All blocks' extras: ``blocks[str(l)]`` for every block l that runs the UltraGen attention."""

    def __init__(self, width: int, rank: int, block_ids, device=None, dtype=None):
        super().__init__()
        self.width, self.rank = width, rank
        self.blocks = nn.ModuleDict({str(b): BlockExtras(width, rank, device, dtype) for b in block_ids})

    @property
    def block_ids(self) -> list[int]:
        return sorted(int(b) for b in self.blocks)

    @classmethod
    def from_tensors(cls, extras: dict[int, dict[str, torch.Tensor]], width: int, rank: int,
                     dtype: torch.dtype) -> "UltraGenExtras":
        """Build from ``{block: {name: tensor}}`` (names relative to ``self_attn.``), without random init."""
        module = cls(width, rank, extras.keys(), device="meta")
        sd = {f"blocks.{b}.{name}": t.to(dtype=dtype, device="cpu") for b, ts in extras.items()
              for name, t in ts.items()}
        module.load_state_dict(sd, strict=True, assign=True)
        return module.requires_grad_(False).eval()


def cast(t: torch.Tensor | None, like: torch.Tensor) -> torch.Tensor | None:
    """``t`` on the device and in the dtype of ``like`` (no copy when already there)."""
    if t is None:
        return None
    return t.to(device=like.device, dtype=like.dtype, non_blocking=True)


def linear(layer: nn.Linear, x: torch.Tensor) -> torch.Tensor:
    return nn.functional.linear(x, cast(layer.weight, x), cast(layer.bias, x))


def lora(module: LoRA, x: torch.Tensor) -> torch.Tensor:
    return linear(module.lora_B, linear(module.lora_A, x))


def depthwise(conv: nn.Conv2d | nn.Conv3d, x: torch.Tensor) -> torch.Tensor:
    """Depthwise conv with the layer's own stride / padding; x (N, C, [T,] H, W)."""
    fn = nn.functional.conv2d if x.ndim == 4 else nn.functional.conv3d
    return fn(x, cast(conv.weight, x), cast(conv.bias, x), stride=conv.stride, padding=conv.padding,
              groups=conv.groups)
