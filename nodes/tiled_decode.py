"""UltraGenTiledVAEDecode: decode a high-resolution video latent tile by tile within a VRAM budget."""
from __future__ import annotations

import logging
import math

import torch
from comfy_api.latest import io

import comfy.model_management as mm
import comfy.utils

from ..ultragen_core.tiled_decode import GIB, Scale, TiledDecodeConfig, postprocess_bytes, tiled_decode

log = logging.getLogger(__name__)
PREFIX = "[UltraGen]"
MIN_TILE_PX = 64
AUTO_FREE_FRACTION = 0.9  # of free memory a tile may plan for in automatic mode

# VAE classes decoded by our own tiler (module, class name) -> family; all are causal (frame by frame).
KNOWN_VAES = {("comfy.ldm.wan.vae", "WanVAE"): "Wan 2.1", ("comfy.ldm.wan.vae2_2", "WanVAE"): "Wan 2.2"}


def vae_family(vae) -> str | None:
    """The family of a comfy.sd.VAE that UltraGen tiles itself, or None."""
    cls = type(getattr(vae, "first_stage_model", None))
    return KNOWN_VAES.get((cls.__module__, cls.__name__))


def input_problem(tile_size: int, overlap: int, temporal_size: int, temporal_overlap: int,
                  max_vram_gb: float) -> str | None:
    """What is impossible in these widget values (pixels / frames / GiB), and how to fix it; or None."""
    if 0 < tile_size < MIN_TILE_PX:
        return f"tile_size is {tile_size} px: use 0 (automatic from max_vram_gb) or at least {MIN_TILE_PX} px."
    if tile_size and 2 * overlap > tile_size:
        return (f"overlap ({overlap} px) is more than half of tile_size ({tile_size} px): lower overlap to at most "
                f"{tile_size // 2} px or raise tile_size to at least {2 * overlap} px.")
    if temporal_size and 2 * temporal_overlap > temporal_size:
        return (f"temporal_overlap ({temporal_overlap} frames) is more than half of temporal_size ({temporal_size} "
                f"frames): lower temporal_overlap to at most {temporal_size // 2}, or set temporal_size to 0 (all).")
    if 0 < max_vram_gb < 0.5:
        return f"max_vram_gb is {max_vram_gb}: use 0 (automatic from free VRAM) or at least 0.5 GiB."
    return None


def _decode_known(vae, latent: torch.Tensor, family: str, max_vram_gb: float, tile_size: int,
                  overlap: int) -> torch.Tensor:
    s = vae.spacial_compression_decode()
    scale = Scale(spatial=s, frames=vae.upscale_ratio[0], frame_stride=vae.upscale_index_formula[0],
                  channels=vae.output_channels)
    dtype_size = mm.dtype_size(vae.vae_dtype)
    tile = tile_size // s if tile_size else 0
    ov = math.ceil(overlap / s)
    if tile:
        ov = min(ov, tile // 2)

    def estimate(shape) -> float:  # the VAE's own estimate for this tile + its output (kept twice while built)
        B, _, T, h, w = shape
        out_elems = B * scale.channels * scale.frames(T) * h * w * s * s
        return vae.memory_used_decode(shape, vae.vae_dtype) + 2 * out_elems * dtype_size + postprocess_bytes(shape, scale)

    weights = mm.module_size(vae.first_stage_model)
    if max_vram_gb > 0:
        cap = max_vram_gb * GIB - weights
        if cap <= 0:
            raise ValueError(f"max_vram_gb is {max_vram_gb} GiB, less than the {family} VAE's own weights "
                             f"({weights / GIB:.2f} GiB): raise max_vram_gb, or set it to 0 (automatic).")
    else:
        cap = AUTO_FREE_FRACTION * mm.get_total_memory(vae.device) - weights
    request = min(estimate(tuple(latent.shape)), max(cap, 0))
    mm.load_models_gpu([vae.patcher], memory_required=request, force_full_load=vae.disable_offload)
    free = AUTO_FREE_FRACTION * mm.get_free_memory(vae.device)
    if max_vram_gb > 0 and free < cap:
        log.warning("%s tiled VAE decode: max_vram_gb=%.1f, but only %.2f GiB are free on %s: planning tiles "
                    "for the free memory.", PREFIX, max_vram_gb, free / GIB, vae.device)
    budget = int(max(1, min(cap, free) if max_vram_gb > 0 else free))
    cfg = TiledDecodeConfig(tile=(tile, tile), overlap=(ov, ov), causal=True, budget_bytes=budget)
    log.info("%s tiled VAE decode of a %s VAE on %s (%s).", PREFIX, family, vae.device,
             "tile size from the VRAM budget" if not tile else f"tile_size {tile_size} px")
    pbar = comfy.utils.ProgressBar(1)
    oom = mm.OOM_EXCEPTION if mm.OOM_EXCEPTION is not Exception else torch.OutOfMemoryError
    return tiled_decode(
        latent, lambda z: vae.first_stage_model.decode(z.to(device=vae.device, dtype=vae.vae_dtype)), cfg, scale,
        estimate=estimate, output_device=vae.output_device, postprocess=vae.process_output,
        on_tile=lambda done, total: pbar.update_absolute(done, total),
        check_interrupt=mm.throw_exception_if_processing_interrupted, empty_cache=mm.soft_empty_cache,
        is_oom=lambda e: isinstance(e, oom))  # (B, T, H, W, C)


def _decode_comfy(vae, latent: torch.Tensor, tile_size: int, overlap: int, temporal_size: int,
                  temporal_overlap: int, reason: str) -> torch.Tensor:
    """ComfyUI's own tiled decode (VAE.decode_tiled), for VAEs UltraGen does not tile itself."""
    log.warning("%s UltraGenTiledVAEDecode: %s; falling back to ComfyUI's own tiled decode (VAE.decode_tiled): "
                "no VRAM budget, and its temporal tiles may make causal video VAEs blink.", PREFIX, reason)
    s = vae.spacial_compression_decode()
    tile = tile_size or 512
    kwargs = dict(tile_x=max(1, tile // s), tile_y=max(1, tile // s), overlap=min(overlap, tile // 4) // s)
    if latent.ndim == 5:
        tc = vae.temporal_compression_decode() or 1
        tile_t = max(2, temporal_size // tc) if temporal_size else latent.shape[2]
        kwargs.update(tile_t=tile_t, overlap_t=max(1, min(tile_t // 2, temporal_overlap // tc)))
    return vae.decode_tiled(latent, **kwargs)


class UltraGenTiledVAEDecode(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="UltraGenTiledVAEDecode",
            display_name="UltraGen Tiled VAE Decode",
            category="UltraGen/vae",
            description="Decodes a high-resolution video latent tile by tile within a VRAM budget (4K x 81 frames "
                        "in a few GiB). Wan 2.1 / 2.2 VAEs: spatial tiles only, each over all frames (no blinking), "
                        "with overlap and feathered blending. Other VAEs use ComfyUI's own tiled decode.",
            inputs=[
                io.Latent.Input("samples", tooltip="The video latent to decode."),
                io.Vae.Input("vae", tooltip="The VAE to decode with. Wan 2.1 and Wan 2.2 VAEs are tiled by UltraGen; "
                                            "others go to ComfyUI's own tiled decode (logged)."),
                io.Float.Input("max_vram_gb", default=0.0, min=0.0, max=1024.0, step=0.5,
                               tooltip="Most VRAM the decode may use, VAE weights included. 0 = automatic: as much "
                                       "as is free (other models may be unloaded). Tiles are sized from the VAE's "
                                       "estimate for one tile. Ignored when tile_size is set."),
                io.Int.Input("tile_size", default=0, min=0, max=8192, step=16,
                             tooltip="Tile width and height in pixels; 0 = the largest tiles that fit max_vram_gb "
                                     "(fewer tiles are faster and have fewer seams). Rounded down to the VAE's "
                                     "compression (8 px for Wan 2.1, 16 px for Wan 2.2)."),
                io.Int.Input("overlap", default=64, min=0, max=4096, step=8,
                             tooltip="Overlap of neighbouring tiles in pixels, blended with a linear feather; at "
                                     "most half of tile_size. Larger hides seams better and costs more time."),
                io.Int.Input("temporal_size", default=0, min=0, max=4096, step=4,
                             tooltip="Only for VAEs that UltraGen does not tile itself (ComfyUI's fallback): frames "
                                     "per temporal tile, 0 = all frames. Wan VAEs always decode every tile over "
                                     "all frames (temporal tiles make them blink)."),
                io.Int.Input("temporal_overlap", default=8, min=0, max=4096, step=4,
                             tooltip="Only for ComfyUI's fallback with temporal_size > 0: overlapping frames of "
                                     "neighbouring temporal tiles."),
            ],
            outputs=[io.Image.Output(display_name="IMAGE", tooltip="The decoded frames, as one image batch.")],
        )

    @classmethod
    def validate_inputs(cls, **kwargs) -> bool | str:
        try:
            values = {k: kwargs[k] for k in ("tile_size", "overlap", "temporal_size", "temporal_overlap",
                                              "max_vram_gb")}
        except KeyError:
            return True  # an input comes from a link; execute() checks it
        return input_problem(**values) or True

    @classmethod
    def execute(cls, samples, vae, max_vram_gb, tile_size, overlap, temporal_size, temporal_overlap) -> io.NodeOutput:
        problem = input_problem(tile_size, overlap, temporal_size, temporal_overlap, max_vram_gb)
        if problem:
            raise ValueError(problem)
        vae.throw_exception_if_invalid()
        latent = samples["samples"]
        family = vae_family(vae)
        if family is None:
            images = _decode_comfy(vae, latent, tile_size, overlap, temporal_size, temporal_overlap,
                                   f"it does not know the VAE {type(vae.first_stage_model).__name__} "
                                   f"({type(vae.first_stage_model).__module__})")
        elif latent.ndim != 5:
            images = _decode_comfy(vae, latent, tile_size, overlap, temporal_size, temporal_overlap,
                                   f"the latent has shape {tuple(latent.shape)}, not a video latent (B, C, T, H, W)")
        else:
            images = _decode_known(vae, latent, family, max_vram_gb, tile_size, overlap)
        return io.NodeOutput(images.reshape(-1, *images.shape[-3:]))
