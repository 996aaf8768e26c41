"""The published UltraGen self-attention of one non-full block, for any batch size.

Per block l (x: the block's modulated input, tokens row-major over the grid (T, H, W)):
- local: K = 4 + l % 2 windows per side over all T frames; x is bilinearly resized per frame to the
  nearest multiple of K, projected with the base q / k / v, window-local RoPE, attention per window,
  and the result is resized back to (H, W);
- hierarchical: depthwise Conv2d(2, stride 2) per frame, resized to the nearest multiple of
  B = 2 + l % 2, q / k / v = base + LoRA_2, B x B windows with window-local RoPE, resized to (H, W),
  then a depthwise Conv3d 3x3x3;
- global: depthwise Conv2d(4, stride 4) per frame (floor), q = norm_q(Wq x + q_lora_1 x),
  k = norm_k(Wq x + k_lora_1 x) (Wq, as published), v = Wv x + v_lora_1 x, RoPE at unit spacing on the
  compressed grid, full attention, resized to (H, W), depthwise Conv3d;
- fusion: g1, g2 = sigmoid(P(silu(E(emb(t))))) per channel; out = Wo(g1 (g2 L + (1 - g2) Hier) + (1 - g1) G).

"Resized" is what the published code does with torchvision's Resize on tensors: bilinear,
align_corners=False, antialiased, computed in float32.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from einops import rearrange

from .keys import TIME_EMBED_DIM
from .modules import BlockExtras, depthwise, linear, lora

Grid = tuple[int, int, int]
MIN_TOKENS_PER_SIDE = 4  # the global branch pools by 4, the hierarchical one needs 2 x 2 cells


@dataclass
class BaseAttention:
    """What the published forward needs of the model's own self-attention.

    q / k / v / o / norm_q / norm_k: the block's layers (B, L, C) -> (B, L, C).
    rope(t, grid): RoPE at positions 0..t-1, 0..h-1, 0..w-1 of ``grid`` for t (B', T*h*w, C).
    attention(q, k, v): multi-head attention (B', L, C) x3 -> (B', L, C).
    """

    q: Callable
    k: Callable
    v: Callable
    o: Callable
    norm_q: Callable
    norm_k: Callable
    rope: Callable[[torch.Tensor, Grid], torch.Tensor]
    attention: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def nearest_multiple(n: int, k: int) -> int:
    """The multiple of k nearest to n; a tie goes to the lower one (as published)."""
    lower = n // k * k
    upper = lower + k
    return lower if n - lower <= upper - n else upper


def check_grid(grid: Grid) -> None:
    T, H, W = grid
    if min(H, W) < MIN_TOKENS_PER_SIDE:
        raise ValueError(
            f"UltraGen checkpoint mode needs at least {MIN_TOKENS_PER_SIDE}x{MIN_TOKENS_PER_SIDE} tokens per frame "
            f"(64x64 pixels with Wan's VAE); this latent gives {H}x{W}. The published model is made for "
            "1920x1088: use a larger width / height.")


def resize(frames: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear, antialiased resize of (N, C, h, w) to ``size`` in float32 (torchvision's tensor Resize)."""
    if tuple(frames.shape[-2:]) == tuple(size):
        return frames
    out = F.interpolate(frames.float(), size=size, mode="bilinear", align_corners=False, antialias=True)
    return out.to(frames.dtype)


def timestep_embedding(timestep: torch.Tensor, dim: int = TIME_EMBED_DIM) -> torch.Tensor:
    """Sinusoidal embedding of the raw timestep (0..1000), cos first, computed in float64: (B, dim)."""
    half = dim // 2
    t = timestep.reshape(-1).to(torch.float64)
    freqs = torch.pow(10000, -torch.arange(half, dtype=torch.float64, device=t.device).div(half))
    sinusoid = torch.outer(t, freqs)
    return torch.cat([torch.cos(sinusoid), torch.sin(sinusoid)], dim=1)


def gates(extras: BlockExtras, timestep: torch.Tensor, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(g1, g2), each (B or 1, 1, C) in the dtype of ``like``."""
    emb = timestep_embedding(timestep).to(device=like.device, dtype=like.dtype)

    def gate(embed, project):
        h = linear(embed[2], F.silu(linear(embed[0], emb)))
        return torch.sigmoid(linear(project[1], F.silu(h)))[:, None, :]

    return (gate(extras.alpha_time_embedding, extras.alpha_time_projection),
            gate(extras.alpha_time_embedding2, extras.alpha_time_projection2))


def _windowed(frames: torch.Tensor, T: int, n: int, qkv: Callable, base: BaseAttention) -> torch.Tensor:
    """Attention in n x n windows over all T frames of (B*T, C, h, w) with h, w multiples of n."""
    h, w = frames.shape[-2] // n, frames.shape[-1] // n
    tiles = rearrange(frames, "(b t) c (n1 h) (n2 w) -> (b n1 n2) (t h w) c", t=T, n1=n, n2=n)
    q, k, v = qkv(tiles)
    q, k = base.rope(q, (T, h, w)), base.rope(k, (T, h, w))
    out = base.attention(q, k, v)  # (B*n*n, T*h*w, C)
    return rearrange(out, "(b n1 n2) (t h w) c -> (b t) c (n1 h) (n2 w)", t=T, n1=n, n2=n, h=h, w=w)


def local_branch(x: torch.Tensor, grid: Grid, block: int, base: BaseAttention) -> torch.Tensor:
    """x (B, N, C) -> (B, N, C)."""
    T, H, W = grid
    K = 4 + block % 2
    frames = rearrange(x, "b (t h w) c -> (b t) c h w", t=T, h=H, w=W)
    frames = resize(frames, (nearest_multiple(H, K), nearest_multiple(W, K)))

    def qkv(t):
        return base.norm_q(base.q(t)), base.norm_k(base.k(t)), base.v(t)

    out = resize(_windowed(frames, T, K, qkv, base), (H, W))
    return rearrange(out, "(b t) c h w -> b (t h w) c", t=T)


def hierarchical_branch(x: torch.Tensor, grid: Grid, block: int, extras: BlockExtras,
                        base: BaseAttention) -> torch.Tensor:
    """x (B, N, C) -> (B, N, C)."""
    T, H, W = grid
    n = 2 + block % 2
    frames = rearrange(x, "b (t h w) c -> (b t) c h w", t=T, h=H, w=W)
    low = depthwise(extras.downsample_conv_hierachcal, frames)  # (B*T, C, H//2, W//2)
    low = resize(low, (nearest_multiple(low.shape[-2], n), nearest_multiple(low.shape[-1], n)))

    def qkv(t):
        return (base.norm_q(base.q(t) + lora(extras.q_lora_2, t)),
                base.norm_k(base.k(t) + lora(extras.k_lora_2, t)),
                base.v(t) + lora(extras.v_lora_2, t))

    out = resize(_windowed(low, T, n, qkv, base), (H, W))
    out = depthwise(extras.upsample_conv_hierachcal, rearrange(out, "(b t) c h w -> b c t h w", t=T))
    return rearrange(out, "b c t h w -> b (t h w) c")


def global_branch(x: torch.Tensor, grid: Grid, extras: BlockExtras, base: BaseAttention) -> torch.Tensor:
    """x (B, N, C) -> (B, N, C)."""
    T, H, W = grid
    frames = rearrange(x, "b (t h w) c -> (b t) c h w", t=T, h=H, w=W)
    low = depthwise(extras.downsample_conv, frames)  # (B*T, C, H//4, W//4)
    h, w = low.shape[-2:]
    tokens = rearrange(low, "(b t) c h w -> b (t h w) c", t=T)
    wq = base.q(tokens)
    q = base.rope(base.norm_q(wq + lora(extras.q_lora_1, tokens)), (T, h, w))
    k = base.rope(base.norm_k(wq + lora(extras.k_lora_1, tokens)), (T, h, w))  # Wq for k, as published
    v = base.v(tokens) + lora(extras.v_lora_1, tokens)
    out = base.attention(q, k, v)  # (B, T*h*w, C)
    out = resize(rearrange(out, "b (t h w) c -> (b t) c h w", t=T, h=h, w=w), (H, W))
    out = depthwise(extras.upsample_conv, rearrange(out, "(b t) c h w -> b c t h w", t=T))
    return rearrange(out, "b c t h w -> b (t h w) c")


def ultragen_attention(x: torch.Tensor, grid: Grid, block: int, extras: BlockExtras, timestep: torch.Tensor,
                       base: BaseAttention) -> torch.Tensor:
    """The published self-attention of block ``block`` (including Wo): x (B, T*H*W, C) -> (B, T*H*W, C).

    timestep: (B,) or (1,) raw diffusion timestep (0..1000).
    """
    check_grid(grid)
    g1, g2 = gates(extras, timestep, x)
    local = local_branch(x, grid, block, base)
    mixed = g2 * local + (1 - g2) * hierarchical_branch(x, grid, block, extras, base)  # published order
    del local
    return base.o(g1 * mixed + (1 - g1) * global_branch(x, grid, extras, base))
