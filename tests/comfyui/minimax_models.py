"""A tiny random-weight MiniMax-H3 of ComfyUI's own class (MiniMaxH3Model), saved as a user's file and loaded
through ComfyUI's loader, and what the MiniMax tests feed it: the joint [video, audio] latent, text, sampling."""
from __future__ import annotations

import pytest
import torch

from harness import eager_weights, random_weights

MODULE = "comfy.ldm.minimax.model"
NAME = "tiny_minimax_h3.safetensors"
# 2 heads of 128 (H3's head size: its partial RoPE rotates 96 channels), a 64-wide stream, 2 blocks; text 4096
# wide (the test conditioning's width; H3's Qwen3-VL states are 5120)
CONFIG = dict(hidden_size=64, num_layers=2, token_refiner_num_layers=1, num_attention_heads=2, attention_head_dim=128,
              ffn_hidden_size=96, text_dim=4096, timestep_input_dim=32, time_embed_hidden_size=64, time_embed_dim=32)


def model_class():
    """ComfyUI's MiniMaxH3Model; skips (naming it) where this ComfyUI has none."""
    import importlib
    try:
        return importlib.import_module(MODULE).MiniMaxH3Model
    except (ImportError, AttributeError):
        pytest.skip(f"this ComfyUI has no MiniMaxH3Model ({MODULE})")


def random_state_dict(seed: int = 0) -> dict[str, torch.Tensor]:
    import comfy.ops
    cls = model_class()
    with eager_weights():
        model = cls(**CONFIG, operations=comfy.ops.disable_weight_init, dtype=torch.float32)

    def rope_frequencies(name, p, gen):  # RoPE's frequencies: 1 / 10000^(i / 16)
        if name == "rope.inv_freq":
            return 1.0 / 10000.0 ** (torch.arange(p.shape[0], dtype=torch.float32) / p.shape[0])
    return random_weights(model, seed, rope_frequencies)


def model_file(comfy) -> str:
    """Write the tiny checkpoint into models/diffusion_models (ComfyUI's model detection reads its shapes)."""
    from safetensors.torch import save_file
    path = comfy.models_dir / "diffusion_models" / NAME
    if not path.exists():
        save_file(random_state_dict(), str(path))
    return NAME


def load(comfy):
    import comfy.sd as comfy_sd
    model_class()
    model = comfy_sd.load_diffusion_model(str(comfy.models_dir / "diffusion_models" / model_file(comfy)))
    assert type(model.get_model_object("diffusion_model")).__name__ == "MiniMaxH3Model"
    return model


def text(seed: int = 1, tokens: int = 8) -> list:
    gen = torch.Generator().manual_seed(seed)
    return [[torch.randn(1, tokens, CONFIG["text_dim"], generator=gen), {}]]


def latent(seed: int = 2, frames: int = 2, height: int = 16, width: int = 16, audio: int = 5, bump: float = 0.0,
           batch: int = 1):
    """H3's joint latent: video (B, 24, frames, height, width) (``bump`` added to the top-left 2x2 latent cells,
    one token, of frame 0) and audio (B, 32, 2, audio), as EmptyMiniMaxH3LatentAV packs them."""
    import comfy.nested_tensor
    gen = torch.Generator().manual_seed(seed)
    video = torch.randn(batch, 24, frames, height, width, generator=gen)
    video[:, :, 0, :2, :2] += bump
    sound = torch.randn(batch, 32, 2, audio, generator=gen)
    return comfy.nested_tensor.NestedTensor((video, sound))


def video_of(out) -> torch.Tensor:
    return out.unbind()[0]


def sample(model, x, positive=None, negative=None, cfg: float = 1.0, steps: int = 1, denoise: float = 0.5,
           seed: int = 3, noise=None):
    """ComfyUI's sampler (what KSampler runs): euler, simple schedule; returns the sampled joint latent."""
    import comfy.sample
    positive = positive if positive is not None else text()
    negative = negative if negative is not None else text(seed=7, tokens=6)
    if noise is None:
        noise = comfy.sample.prepare_noise(x, seed)
    return comfy.sample.sample(model, noise, steps, cfg, "euler", "simple", positive, negative, x, denoise=denoise,
                               seed=seed, disable_pbar=True)


def token_change(a, b) -> torch.Tensor:
    """Largest change per video token (t, h, w) (2x2 latent cells) between two sampled joint latents."""
    d = (video_of(a) - video_of(b)).abs()[0].amax(0)  # (T, h, w)
    return d.unflatten(1, (-1, 2)).unflatten(3, (-1, 2)).amax(dim=(2, 4))
