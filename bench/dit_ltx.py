"""LTX-2 for bench/dit.py (``--family ltx2``): ComfyUI's LTXAVModel at LTX-2's real sizes with random weights,
loaded by ComfyUI's own loader (with the config an LTX-2 file carries), and one model call's inputs (the video
latent, an audio latent of the same duration, text).

Sizes: LTX-2 19B is ComfyUI's LTXAVModel with its default widths (video 32 heads x 128, audio 32 x 64, 48
blocks, text 2 x 3840 channels); an LTX-2 file's config adds the split RoPE in float64. Its VAE has 32 x 32 px
and 8 frames per latent cell (patch 1); its audio has 25 latent frames a second.
"""
from __future__ import annotations

import json
import math

import torch

from ultragen_core import api

MODELS = {
    "19B": dict(in_channels=128, audio_in_channels=128, num_attention_heads=32, attention_head_dim=128,
                audio_num_attention_heads=32, audio_attention_head_dim=64, cross_attention_dim=4096,
                audio_cross_attention_dim=2048, caption_channels=3840, num_layers=48, rope_type="split",
                frequencies_precision="float64"),
}
# --smoke: widths of 2 heads (video 2 x 64, audio 2 x 16), tiny text and connectors, at the real depth
SMOKE_WIDTH = dict(num_attention_heads=2, attention_head_dim=64, audio_num_attention_heads=2,
                   audio_attention_head_dim=16, cross_attention_dim=128, audio_cross_attention_dim=32,
                   caption_channels=64, connector_attention_head_dim=16, connector_num_attention_heads=2)
PIXELS_PER_CELL, FRAMES_PER_CELL, FPS, AUDIO_PER_SECOND = 32, 8, 25, 25


def native_grid() -> tuple[int, int, int]:
    """LTX-2's native token grid, from the registry (768x512 x 121 frames: 16 x 16 x 24)."""
    return next(f for f in api.family_named("LTX").sizes if f.name == "LTX-2").native_grid


def case(name: str, size: tuple[int, int], frames: int, smoke: bool, shrink):
    """(config, latent size (T, h, w), token grid, native grid) of LTX-2 at ``size`` (height, width) px.

    smoke: SMOKE_WIDTH at the real depth, latent and native grid shrunk by ``shrink`` (bench/smoke.py)."""
    cfg = MODELS[name]
    h, w = size
    lat = ((frames - 1) // FRAMES_PER_CELL + 1, math.ceil(h / PIXELS_PER_CELL), math.ceil(w / PIXELS_PER_CELL))
    native = native_grid()
    if smoke:
        cfg, lat, native = dict(cfg, **SMOKE_WIDTH), shrink(lat), shrink(native)
    return cfg, lat, lat, native  # patch 1: the token grid is the latent


def base(cfg: dict, layers: int, device, dtype):
    """Random LTXAVModel weights of ``cfg`` with ``layers`` blocks, as ComfyUI's loader returns them (a
    ModelPatcher; the config rides along as an LTX-2 file's metadata does)."""
    import comfy.ldm.lightricks.av_model as av
    import comfy.ops
    import comfy.sd
    config = dict(cfg, num_layers=layers)
    model = av.LTXAVModel(**config, operations=comfy.ops.disable_weight_init, device=device, dtype=dtype)
    g = torch.Generator(device=device).manual_seed(0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name and name.endswith("weight"):
                p.fill_(1.0)
            else:
                p.normal_(0.0, 1.0 / math.sqrt(p[0].numel()) if p.ndim >= 2 else 0.02, generator=g)
    sd = model.state_dict()
    del model
    return comfy.sd.load_diffusion_model_state_dict(sd, model_options={"dtype": dtype},
                                                    metadata={"config": json.dumps({"transformer": config})})


def inputs(cfg: dict, lat: tuple[int, int, int], frames: int, device, dtype):
    """One call's inputs: [video (1, 128, T, h, w), audio (1, 8, A, 16)] for ``frames`` video frames at 25 fps,
    the timestep, and 512 text tokens (video and audio halves of 2 x caption_channels)."""
    audio = max(1, round(frames / FPS * AUDIO_PER_SECOND))
    x = [torch.randn(1, cfg["in_channels"], *lat, device=device, dtype=dtype),
         torch.randn(1, 8, audio, 16, device=device, dtype=dtype)]
    t = torch.full((1,), 0.5, device=device)
    ctx = torch.randn(1, 512, 2 * cfg["caption_channels"], device=device, dtype=dtype)
    return x, t, ctx


def call(model, x, t, ctx, options):
    """One model call as the sampler makes it (through the model's wrappers: the pack's call state)."""
    with torch.inference_mode():
        return model(x, t, ctx, None, FPS, transformer_options=options)


def self_attention_modules(model) -> list:
    """The video self-attention of every block (what UltraGen Apply patches)."""
    return [block.attn1 for block in model.transformer_blocks]
