"""Tiny random-weight LTX models of ComfyUI's own classes (LTXVModel, LTXAVModel), saved as a user's file and
loaded through ComfyUI's loader, and what the LTX tests feed them: latents, text, guide frames, sampling."""
from __future__ import annotations

import json

import pytest
import torch

from harness import eager_weights, random_weights

# 32 heads of 4 channels: ComfyUI 0.3.64 reads no config from the file and takes 32 heads (model detection)
VIDEO = dict(num_attention_heads=32, attention_head_dim=4, cross_attention_dim=128, in_channels=128, num_layers=2)
LTXV = dict(name="tiny_ltxv.safetensors", cls="LTXVModel", config=dict(VIDEO, caption_channels=4096))
# LTX-2's layout (split RoPE in float64, audio stream, audio <-> video cross-attention), tiny widths
LTXAV = dict(name="tiny_ltxav.safetensors", cls="LTXAVModel", config=dict(
    VIDEO, caption_channels=2048, audio_in_channels=128, audio_attention_head_dim=4, audio_num_attention_heads=8,
    audio_cross_attention_dim=32, rope_type="split", frequencies_precision="float64",
    connector_attention_head_dim=8, connector_num_attention_heads=4, connector_num_layers=1))
MODULES = {"LTXVModel": "comfy.ldm.lightricks.model", "LTXAVModel": "comfy.ldm.lightricks.av_model"}
TEXT_WIDTH = 4096  # LTXV: caption_channels; LTXAV: video + audio halves of caption_channels each, as processed


def model_class(spec):
    """The ComfyUI class of ``spec``; skips (naming it) where this ComfyUI has none."""
    import importlib
    try:
        return getattr(importlib.import_module(MODULES[spec["cls"]]), spec["cls"])
    except (ImportError, AttributeError):
        pytest.skip(f"this ComfyUI has no {spec['cls']} ({MODULES[spec['cls']]})")


def random_state_dict(spec, seed: int = 0) -> dict[str, torch.Tensor]:
    import comfy.ops
    cls = model_class(spec)
    with eager_weights():
        model = cls(**spec["config"], operations=comfy.ops.disable_weight_init)

    def modulation_tables(name, p, gen):
        if "scale_shift_table" in name:
            return 0.1 * torch.randn(p.shape, generator=gen)
    return random_weights(model, seed, modulation_tables)


def model_file(comfy, spec) -> str:
    """Write the tiny checkpoint into models/diffusion_models (with its config, as LTX-2 files carry it)."""
    from safetensors.torch import save_file
    path = comfy.models_dir / "diffusion_models" / spec["name"]
    if not path.exists():
        save_file(random_state_dict(spec), str(path), metadata={"config": json.dumps({"transformer": spec["config"]})})
    return spec["name"]


def load(comfy, spec):
    """The tiny model through ComfyUI's loader (its model detection picks the class)."""
    import comfy.sd as comfy_sd
    model_class(spec)
    model = comfy_sd.load_diffusion_model(str(comfy.models_dir / "diffusion_models" / model_file(comfy, spec)))
    assert type(model.get_model_object("diffusion_model")).__name__ == spec["cls"]
    return model


def text(seed: int = 1, tokens: int = 8, **extra) -> list:
    """Random text embeddings with the all-ones attention mask LTX's text encoders give (LTXVModel needs one)."""
    gen = torch.Generator().manual_seed(seed)
    mask = torch.ones(1, tokens, dtype=torch.long)
    return [[torch.randn(1, tokens, TEXT_WIDTH, generator=gen), {"attention_mask": mask, **extra}]]


def video(seed: int = 2, frames: int = 2, height: int = 16, width: int = 16, batch: int = 1, bump: float = 0.0):
    """A random video latent (B, 128, frames, height, width); ``bump`` is added to the top-left 2x2 of frame 0."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, 128, frames, height, width, generator=gen)
    x[:, :, 0, :2, :2] += bump
    return x


def with_audio(latent: torch.Tensor, frames: int = 5, seed: int = 4):
    """LTX-2's joint latent: the video and an audio latent (B, 8, frames, 16), as LTXVConcatAVLatent makes it."""
    import comfy.nested_tensor
    gen = torch.Generator().manual_seed(seed)
    audio = torch.randn(latent.shape[0], 8, frames, 16, generator=gen)
    return comfy.nested_tensor.NestedTensor((latent, audio))


def video_of(out) -> torch.Tensor:
    """The video part of a sampled latent (LTX-2's is a nested [video, audio])."""
    return out.unbind()[0] if getattr(out, "is_nested", False) else out


def add_guide(model, latent: torch.Tensor, guide: torch.Tensor, cond: list, frame_idx: int = 0, strength=None):
    """Append ``guide`` (B, 128, 1, H, W) after the video frames as LTXVAddGuide does: its tokens' pixel
    positions in ``keyframe_idxs`` (from the model's own patchifier), a noise mask that keeps it (0) and the
    video free (1); ``strength`` other than None adds a guide attention entry (ComfyUI 0.33's guide mask)."""
    import comfy.ldm.lightricks.symmetric_patchifier as sp
    dm = model.get_model_object("diffusion_model")
    _, coords = dm.patchifier.patchify(guide)
    pixels = sp.latent_to_pixel_coords(coords, dm.vae_scale_factors, causal_fix=True)
    pixels[:, 0] += frame_idx
    extra = {"keyframe_idxs": pixels}
    if strength is not None:
        extra["guide_attention_entries"] = [{"pre_filter_count": coords.shape[2], "strength": strength,
                                             "pixel_mask": None, "latent_shape": list(guide.shape[2:])}]
    cond = [[c[0], {**c[1], **extra}] for c in cond]
    mask = torch.cat((torch.ones_like(latent[:, :1]), torch.zeros_like(guide[:, :1])), dim=2)
    return torch.cat((latent, guide), dim=2), mask, cond


def sample(model, latent, positive=None, negative=None, cfg: float = 1.0, steps: int = 1, denoise: float = 0.5,
           seed: int = 3, noise=None, noise_mask=None):
    """ComfyUI's sampler (what KSampler runs): euler, simple schedule; returns the sampled latent."""
    import comfy.sample
    positive = positive if positive is not None else text()
    negative = negative if negative is not None else text(seed=7)
    if noise is None:
        noise = comfy.sample.prepare_noise(latent, seed)
    return comfy.sample.sample(model, noise, steps, cfg, "euler", "simple", positive, negative, latent,
                               denoise=denoise, noise_mask=noise_mask, seed=seed, disable_pbar=True)


def token_change(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Largest change per video token (t, h, w) between two video latents (1, 128, T, H, W) (patch 1)."""
    return (video_of(a) - video_of(b)).abs()[0].amax(0)


# A tiny LTX video VAE (ComfyUI's VideoVAE, LTX-2's block layout): 8 base channels, one residual block each
# side, 32 x 32 px and 8 frames per latent cell (patch 4, three 2x compressions)
TINY_VAE = {"dims": 3, "in_channels": 3, "out_channels": 3, "latent_channels": 128, "patch_size": 4,
            "encoder_blocks": [["res_x", {"num_layers": 1}]] + [["compress_all_res", {"multiplier": 2}]] * 3,
            "decoder_blocks": [["compress_all", {"residual": True, "multiplier": 2}]] * 3
            + [["res_x", {"num_layers": 1, "inject_noise": False}]],
            "encoder_base_channels": 8, "decoder_base_channels": 8, "scaling_factor": 1.0, "norm_layer": "pixel_norm",
            "latent_log_var": "uniform", "use_quant_conv": False, "causal_decoder": False,
            "timestep_conditioning": False}


def tiny_ltx_vae():
    """ComfyUI's VAE wrapper around a tiny random LTX VideoVAE (recognised by its keys, sized by its config)."""
    import comfy.ldm.lightricks.vae.causal_video_autoencoder as cva
    import comfy.sd
    with eager_weights():
        model = cva.VideoVAE(config=TINY_VAE)
    gen = torch.Generator().manual_seed(0)
    sd = {k: 0.05 * torch.randn(v.shape, generator=gen) if v.ndim else v for k, v in model.state_dict().items()}
    return comfy.sd.VAE(sd=sd, metadata={"config": json.dumps({"vae": TINY_VAE})})
