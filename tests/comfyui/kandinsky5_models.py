"""A tiny random-weight Kandinsky 5 video model of ComfyUI's own class (``comfy.ldm.kandinsky5.model.Kandinsky5``),
saved as a user's file and loaded through ComfyUI's loader, and what the Kandinsky 5 tests feed it: latents, text,
sampling."""
from __future__ import annotations

import pytest
import torch

from harness import eager_weights, random_weights

MODULE, CLASS = "comfy.ldm.kandinsky5.model", "Kandinsky5"
# The video layout (visual_embed_dim 132: 16 latent + 16 image + 1 mask channels x 1x2x2), 2 heads of 64 (ComfyUI's
# model detection gives other widths than Lite / Pro / Image the Lite axes (16, 24, 24)), text widths as the real
# encoders (the loader takes them from the class defaults), 1 text block and 2 visual blocks.
CONFIG = dict(model_dim=128, ff_dim=256, time_dim=32, visual_embed_dim=132, num_text_blocks=1, num_visual_blocks=2)
NAME = "tiny_kandinsky5.safetensors"
CHANNELS = 16  # HunyuanVideo's latent
TEXT_WIDTH, POOLED_WIDTH = 3584, 768


def model_class():
    """ComfyUI's Kandinsky5 class; skips (naming it) where this ComfyUI has none."""
    import importlib
    try:
        return getattr(importlib.import_module(MODULE), CLASS)
    except (ImportError, AttributeError):
        pytest.skip(f"this ComfyUI has no {MODULE}.{CLASS} (Kandinsky 5)")


def build(meta: bool = False, **config):
    """The class with CONFIG (and ``config`` over it), weights uninitialised (``meta``: on the meta device)."""
    import comfy.ops
    cls = model_class()
    with eager_weights():
        return cls(**{**CONFIG, **config}, operations=comfy.ops.disable_weight_init,
                   device="meta" if meta else None)


def random_state_dict(seed: int = 0) -> dict[str, torch.Tensor]:
    model = build()
    return random_weights(model, seed)


def model_file(comfy) -> str:
    """Write the tiny checkpoint into models/diffusion_models (once per session)."""
    from safetensors.torch import save_file
    model_class()
    path = comfy.models_dir / "diffusion_models" / NAME
    if not path.exists():
        save_file(random_state_dict(), str(path))
    return NAME


def load(comfy):
    """The tiny model through ComfyUI's loader (its model detection picks Kandinsky 5 from the keys)."""
    import comfy.sd as comfy_sd
    model = comfy_sd.load_diffusion_model(str(comfy.models_dir / "diffusion_models" / model_file(comfy)))
    assert type(model.get_model_object("diffusion_model")).__name__ == CLASS
    return model


def text(seed: int = 1, tokens: int = 8) -> list:
    """Random text conditioning as ComfyUI's Kandinsky 5 text encoder gives it (hidden states + pooled output)."""
    gen = torch.Generator().manual_seed(seed)
    return [[torch.randn(1, tokens, TEXT_WIDTH, generator=gen),
             {"pooled_output": torch.randn(1, POOLED_WIDTH, generator=gen)}]]


def video(seed: int = 2, frames: int = 2, height: int = 16, width: int = 16, batch: int = 1, bump: float = 0.0):
    """A random latent (B, 16, frames, height, width); ``bump`` is added to the top-left 2x2 (one token) of frame 0."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, CHANNELS, frames, height, width, generator=gen)
    x[:, :, 0, :2, :2] += bump
    return x


def sample(model, latent, positive=None, negative=None, cfg: float = 1.0, steps: int = 1, denoise: float = 0.5,
           seed: int = 3, noise=None):
    """ComfyUI's sampler (what KSampler runs): euler, simple schedule; returns the sampled latent."""
    import comfy.sample
    positive = positive if positive is not None else text()
    negative = negative if negative is not None else text(seed=7, tokens=5)
    if noise is None:
        noise = comfy.sample.prepare_noise(latent, seed)
    return comfy.sample.sample(model, noise, steps, cfg, "euler", "simple", positive, negative, latent,
                               denoise=denoise, seed=seed, disable_pbar=True)


def token_change(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Largest change per token (t, h, w) between two latents (1, 16, T, H, W) (a token: 1x2x2 latent cells)."""
    d = (a - b).abs()[0].amax(0)  # (T, H, W)
    T, H, W = d.shape
    return d.reshape(T, H // 2, 2, W // 2, 2).amax(dim=(2, 4))
