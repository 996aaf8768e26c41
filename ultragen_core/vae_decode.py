"""What UltraGen Tiled VAE Decode does around :func:`tiled_decode`: input rules in pixels, latent checks,
the per-tile memory estimate and the VRAM budget. Nothing here knows ComfyUI: the node reads the VAE and
the device's memory and passes them in (:class:`CausalVae`, :class:`DeviceMemory`).
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Callable

import torch

from .tiled_decode import GIB, Scale, Shape5, TiledDecodeConfig, postprocess_bytes, tiled_decode

log = logging.getLogger(__name__)
PREFIX = "[UltraGen]"
MIN_TILE_PX, MAX_TILE_PX = 64, 8192  # tile_size: 0 (automatic) or this range
AUTO_FREE_FRACTION = 0.9  # of free (automatic: total) memory a decode may plan for


def tile_size_problem(tile_size: int) -> str | None:
    """What is wrong with a tile_size widget value (pixels; 0 = automatic), with the fix; or None."""
    if tile_size < 0 or tile_size > MAX_TILE_PX:
        return f"tile_size must be 0 (automatic) to {MAX_TILE_PX} px, got {tile_size}."
    if 0 < tile_size < MIN_TILE_PX:
        return f"tile_size is {tile_size} px: use 0 (automatic from max_vram_gb) or at least {MIN_TILE_PX} px."
    return None


def latent_problem(shape: tuple[int, ...], vae_name: str, video: bool | None = None,
                   channels: int | None = None) -> str | None:
    """What is wrong with a latent of ``shape`` for a VAE, with the fix; or None.

    video: True = the VAE decodes video latents (B, C, T, H, W), False = image latents (B, C, H, W),
    None = not checked. channels: the VAE's latent channels, None = not checked.
    """
    shape = tuple(int(d) for d in shape)
    if not shape or 0 in shape:
        return (f"samples: the latent is empty (shape {shape}): there is nothing to decode. Check the node that "
                "made it (a width, height, length or batch of 0).")
    if video is True and len(shape) != 5:
        kind = "an image latent (batch, channels, height, width)" if len(shape) == 4 else f"{len(shape)}-dimensional"
        return (f"samples: the {vae_name} VAE decodes video latents (batch, channels, frames, height, width), but "
                f"the connected latent has shape {shape}, {kind}. Connect the latent of a video model's sampler "
                "(e.g. from EmptyHunyuanLatentVideo or Wan22ImageToVideoLatent), or a VAE that matches this latent.")
    if video is False and len(shape) == 5:
        return (f"samples: the VAE {vae_name} is an image VAE (latents of shape (batch, channels, height, width)), "
                f"but the connected latent is a video latent of shape {shape}. Connect the video model's VAE "
                "(e.g. wan_2.1_vae for Wan 2.1 / 2.2-A14B, wan2.2_vae for Wan 2.2-5B).")
    if channels is not None and shape[1] != channels:
        return (f"samples: the latent has {shape[1]} channels (shape {shape}), but the {vae_name} VAE expects "
                f"{channels}. Wan 2.1 and Wan 2.2-A14B latents have 16 channels (wan_2.1_vae), Wan 2.2-5B latents "
                "48 (wan2.2_vae): connect the VAE that belongs to the model that sampled this latent.")
    return None


@dataclass(frozen=True)
class CausalVae:
    """A video VAE that decodes frame by frame with a cache (Wan 2.1 / 2.2), as the tiler needs it.

    name: for messages ("Wan 2.1"); scale: latent -> pixel mapping; latent_channels: C of its latents;
    weights_bytes: size of its weights on the decode device; dtype_size: bytes per element it computes in;
    own_estimate(shape): the VAE's own decode-memory estimate (bytes) for a latent of shape (B, C, T, h, w);
    decode(latent tile) -> pixels (B, C', T', h * s, w * s); postprocess: applied to float32 pixel chunks;
    output_device: where the decoded video is assembled.
    """

    name: str
    scale: Scale
    latent_channels: int
    weights_bytes: int
    dtype_size: int
    own_estimate: Callable[[Shape5], float]
    decode: Callable[[torch.Tensor], torch.Tensor]
    postprocess: Callable[[torch.Tensor], torch.Tensor] | None = None
    output_device: torch.device | str = "cpu"

    def estimate(self, shape: Shape5) -> float:
        """Decode-device bytes for one latent tile: the VAE's own estimate, the tile's output (kept twice while
        it is built) and the post-processing chunks."""
        B, _, T, h, w = shape
        s = self.scale.spatial
        out_elems = B * self.scale.channels * self.scale.frames(T) * h * w * s * s
        return self.own_estimate(shape) + 2 * out_elems * self.dtype_size + postprocess_bytes(shape, self.scale)


@dataclass(frozen=True)
class DeviceMemory:
    """The decode device's memory, as the node's runtime reports it (bytes).

    total() / free(): memory of the device; load(bytes): make the VAE resident, asking the runtime to free
    that much for the decode; empty_cache(): release cached blocks; is_oom(exc): an out-of-memory error.
    """

    total: Callable[[], int]
    free: Callable[[], int]
    load: Callable[[float], None]
    empty_cache: Callable[[], None] | None = None
    is_oom: Callable[[BaseException], bool] = lambda exc: isinstance(exc, torch.OutOfMemoryError)


def latent_tile_and_overlap(vae: CausalVae, tile_size: int, overlap: int) -> tuple[int, int]:
    """(tile, overlap) in latent units from pixels; an overlap above half an explicit tile is lowered to it."""
    s = vae.scale.spatial
    tile = tile_size // s if tile_size else 0
    ov = math.ceil(overlap / s)
    if tile and 2 * ov > tile:
        log.warning("%s tiled VAE decode: overlap %d px is more than half of tile_size %d px: using %d px.",
                    PREFIX, overlap, tile_size, tile // 2 * s)
        ov = tile // 2
    return tile, ov


def plan_budget(vae: CausalVae, memory: DeviceMemory, shape: Shape5, max_vram_gb: float) -> int:
    """Load the VAE and return the bytes one tile may use (weights excluded).

    max_vram_gb > 0: at most that much in all, weights included (less when less is free, with a warning);
    0: as much as is free after asking the runtime to free what the whole decode would need (or the total).
    """
    if max_vram_gb > 0:
        cap = max_vram_gb * GIB - vae.weights_bytes
        if cap <= 0:
            raise ValueError(f"max_vram_gb is {max_vram_gb} GiB, less than the {vae.name} VAE's own weights "
                             f"({vae.weights_bytes / GIB:.2f} GiB): raise max_vram_gb, or set it to 0 (automatic).")
    else:
        cap = AUTO_FREE_FRACTION * memory.total() - vae.weights_bytes
    memory.load(min(vae.estimate(shape), max(cap, 0)))
    free = AUTO_FREE_FRACTION * memory.free()
    if max_vram_gb > 0 and free < cap:
        log.warning("%s tiled VAE decode: max_vram_gb=%.1f, but only %.2f GiB are free: planning tiles for the "
                    "free memory.", PREFIX, max_vram_gb, free / GIB)
    return int(max(1, min(cap, free) if max_vram_gb > 0 else free))


def decode_within_budget(latent: torch.Tensor, vae: CausalVae, memory: DeviceMemory, max_vram_gb: float,
                         tile_size: int, overlap: int, on_tile: Callable[[int, int], None] | None = None,
                         check_interrupt: Callable[[], None] | None = None) -> torch.Tensor:
    """Decode ``latent`` (B, C, T, H, W) in spatial tiles, each over all frames; returns float32 pixels
    (B, T', H', W', C') on ``vae.output_device``.

    tile_size / overlap in pixels (tile_size 0 = the largest tiles whose estimate fits the budget);
    max_vram_gb as in :func:`plan_budget`. Raises ValueError for a latent the VAE cannot decode.
    """
    problem = tile_size_problem(tile_size) or latent_problem(tuple(latent.shape), vae.name, True,
                                                             vae.latent_channels)
    if problem:
        raise ValueError(problem)
    tile, ov = latent_tile_and_overlap(vae, tile_size, overlap)
    budget = plan_budget(vae, memory, tuple(latent.shape), max_vram_gb)
    cfg = TiledDecodeConfig(tile=(tile, tile), overlap=(ov, ov), causal=True, budget_bytes=budget)
    log.info("%s tiled VAE decode of a %s VAE (%s).", PREFIX, vae.name,
             f"tile_size {tile_size} px" if tile else "tile size from the VRAM budget")
    return tiled_decode(latent, vae.decode, cfg, vae.scale, estimate=vae.estimate, output_device=vae.output_device,
                        postprocess=vae.postprocess, on_tile=on_tile, check_interrupt=check_interrupt,
                        empty_cache=memory.empty_cache, is_oom=memory.is_oom)
