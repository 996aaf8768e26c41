"""UltraGenTiledVAEDecode: decode a high-resolution video latent tile by tile within a VRAM budget."""
from __future__ import annotations

import logging
import math

import torch
from comfy_api.latest import io

import comfy.model_management as mm
import comfy.utils

from ..ultragen_core.api import VIDEO_VAES
from ..ultragen_core.tensor_checks import values_problem
from ..ultragen_core.tiled_decode import Scale
from ..ultragen_core.vae_decode import (MAX_TILE_PX, CausalVae, DeviceMemory, decode_within_budget, latent_problem,
                                        tile_size_problem)
from .schema import own_check, schema, unnamed

log = logging.getLogger(__name__)
PREFIX = "[UltraGen]"

def vae_family(vae) -> str | None:
    """The family of a comfy.sd.VAE that UltraGen tiles itself (models.VIDEO_VAES), or None."""
    cls = type(getattr(vae, "first_stage_model", None))
    known = VIDEO_VAES.get((cls.__module__, cls.__name__))
    return known.name if known else None


def _causal_vae(vae, family: str) -> CausalVae:
    """What the core tiler needs of a ComfyUI VAE."""
    scale = Scale(spatial=vae.spacial_compression_decode(), frames=vae.upscale_ratio[0],
                  frame_stride=vae.upscale_index_formula[0], channels=vae.output_channels)
    return CausalVae(
        name=family, scale=scale, latent_channels=vae.latent_channels,
        weights_bytes=mm.module_size(vae.first_stage_model), dtype_size=mm.dtype_size(vae.vae_dtype),
        own_estimate=lambda shape: vae.memory_used_decode(shape, vae.vae_dtype),
        decode=lambda z: vae.first_stage_model.decode(z.to(device=vae.device, dtype=vae.vae_dtype)),
        postprocess=vae.process_output, output_device=vae.output_device)


def _device_memory(vae) -> DeviceMemory:
    oom = mm.OOM_EXCEPTION if mm.OOM_EXCEPTION is not Exception else torch.OutOfMemoryError
    return DeviceMemory(
        total=lambda: mm.get_total_memory(vae.device), free=lambda: mm.get_free_memory(vae.device),
        load=lambda request: mm.load_models_gpu([vae.patcher], memory_required=request,
                                                force_full_load=vae.disable_offload),
        empty_cache=mm.soft_empty_cache, is_oom=lambda e: isinstance(e, oom))


def _decode_known(vae, latent: torch.Tensor, family: str, max_vram_gb: float, tile_size: int,
                  overlap: int) -> torch.Tensor:
    pbar = comfy.utils.ProgressBar(1)
    return decode_within_budget(latent, _causal_vae(vae, family), _device_memory(vae), max_vram_gb, tile_size,
                                overlap, on_tile=lambda done, total: pbar.update_absolute(done, total),
                                check_interrupt=mm.throw_exception_if_processing_interrupted)  # (B, T, H, W, C)


def vae_name(vae) -> str:
    """The VAE's class for messages; a generic AutoencodingEngine (HunyuanVideo 1.5's VAE, image VAEs) is named
    with its decoder's class, which tells them apart."""
    model = type(vae.first_stage_model)
    name = f"{model.__name__} ({model.__module__})"
    decoder = type(getattr(vae.first_stage_model, "decoder", None))
    if decoder is not type(None) and decoder.__module__ != model.__module__:
        name += f" with the decoder {decoder.__module__}.{decoder.__name__}"
    return name


def _decode_comfy(vae, latent: torch.Tensor, tile_size: int, overlap: int, temporal_size: int,
                  temporal_overlap: int) -> torch.Tensor:
    """ComfyUI's own tiled decode (VAE.decode_tiled), for VAEs UltraGen does not tile itself."""
    name = vae_name(vae)
    image_vae = getattr(vae, "latent_dim", None) == 2
    problem = tile_size_problem(tile_size) or latent_problem(tuple(latent.shape), name, False if image_vae else None)
    if problem:
        raise ValueError(problem)
    log.warning("%s UltraGenTiledVAEDecode: it does not know the VAE %s; falling back to ComfyUI's own tiled decode "
                "(VAE.decode_tiled): no VRAM budget, and its temporal tiles may make causal video VAEs blink.",
                PREFIX, name)
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
        return schema(
            node_id="UltraGenTiledVAEDecode",
            display_name="UltraGen Tiled VAE Decode",
            category="UltraGen/vae",
            search_aliases=("tiled decode", "vae decode 4k", "high resolution decode", "wan vae"),
            description="Decodes a high-resolution video latent tile by tile within a VRAM budget (4K x 81 frames "
                        "in a few GiB). Wan 2.1 / 2.2 VAEs: spatial tiles only, each over all frames (no blinking), "
                        "with overlap and feathered blending. Other VAEs use ComfyUI's own tiled decode.",
            inputs=[
                io.Latent.Input("samples", tooltip="The video latent to decode (batch, channels, frames, height, "
                                                    "width): 16 channels for Wan 2.1 / 2.2-A14B, 48 for Wan 2.2-5B."),
                io.Vae.Input("vae", tooltip="The VAE to decode with. Wan 2.1 and Wan 2.2 VAEs are tiled by UltraGen; "
                                            "others go to ComfyUI's own tiled decode (logged)."),
                io.Float.Input("max_vram_gb", default=0.0, min=0.0, max=1024.0, step=0.5,
                               tooltip="Most VRAM the decode may use, VAE weights included. 0 = automatic: as much "
                                       "as is free (other models may be unloaded). Tiles are sized from the VAE's "
                                       "estimate for one tile. Ignored when tile_size is set. Below the VAE's "
                                       "weights plus one small tile the decode stops with a message."),
                io.Int.Input("tile_size", default=0, min=0, max=MAX_TILE_PX, step=16,
                             tooltip="Tile width and height in pixels: 0 = the largest tiles that fit max_vram_gb "
                                     "(fewer tiles are faster and have fewer seams), else at least 64. Rounded "
                                     "down to the VAE's compression (8 px for Wan 2.1, 16 px for Wan 2.2)."),
                io.Int.Input("overlap", default=64, min=0, max=4096, step=8,
                             tooltip="Overlap of neighbouring tiles in pixels, blended with a linear feather. At "
                                     "most half a tile (a larger value is lowered to that); none where one tile "
                                     "covers a whole side. Larger hides seams better and costs more time."),
                io.Int.Input("temporal_size", default=0, min=0, max=4096, step=4,
                             tooltip="Only for VAEs that UltraGen does not tile itself (ComfyUI's fallback): frames "
                                     "per temporal tile, 0 = all frames. Wan VAEs always decode every tile over "
                                     "all frames (temporal tiles make them blink)."),
                io.Int.Input("temporal_overlap", default=8, min=0, max=4096, step=4,
                             tooltip="Only for ComfyUI's fallback with temporal_size > 0: overlapping frames of "
                                     "neighbouring temporal tiles, at most half of temporal_size (lowered to it)."),
            ],
            outputs=[io.Image.Output(display_name="images", tooltip="The decoded frames, as one image batch.")],
        )

    @classmethod
    def validate_inputs(cls, tile_size: int | None = None) -> bool | str:
        # Only tile_size has a rule ComfyUI cannot check ("0 or at least 64"); naming it turns ComfyUI's own
        # min / max check of it off, so own_check re-does it (schema.py), and reports once, at tile_size.
        return own_check(cls, "tile_size", tile_size, lambda value: unnamed(tile_size_problem(value), "tile_size"))

    @classmethod
    def execute(cls, samples, vae, max_vram_gb, tile_size, overlap, temporal_size, temporal_overlap) -> io.NodeOutput:
        if not math.isfinite(max_vram_gb):  # NaN passes ComfyUI's min / max check
            raise ValueError(f"UltraGen Tiled VAE Decode: max_vram_gb must be a number of GiB (0 = automatic), got "
                             f"{max_vram_gb}.")
        vae.throw_exception_if_invalid()
        latent = samples["samples"]
        problem = values_problem(latent, "samples latent")
        if problem:
            raise ValueError(f"UltraGen Tiled VAE Decode: {problem}")
        family = vae_family(vae)
        if family is None:
            images = _decode_comfy(vae, latent, tile_size, overlap, temporal_size, temporal_overlap)
        else:
            images = _decode_known(vae, latent, family, max_vram_gb, tile_size, overlap)
        return io.NodeOutput(images.reshape(-1, *images.shape[-3:]))
