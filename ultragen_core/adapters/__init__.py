"""Model-family adapters, one module each (see :class:`.base.Adapter`), claimed through the one registry
(:mod:`ultragen_core.families.registry`). Nodes and bench/ use :mod:`ultragen_core.api`; the names here
stay for code that imported them before the api existed."""
from __future__ import annotations

from ..config import AttentionSettings
from ..families.registry import Capability, diffusion_model_of, family_of, require
from . import wan_proxy
from .base import HOLDER_KEY


def adapter_for(model):
    """The patch module of the family that claims a ComfyUI ModelPatcher's diffusion model, or
    NotImplementedError naming the model class (see registry.family_of)."""
    return family_of(diffusion_model_of(model)).patch_module()


def apply_attention(model, settings: AttentionSettings):
    """Clone ``model`` and patch its self-attention with the dual-branch op."""
    dm = diffusion_model_of(model)
    family = require(dm, Capability.WINDOWS_GLOBAL)
    return family.patch_module().apply(model, settings)


def apply_proxy_guidance(model, proxy_samples, settings: "wan_proxy.ProxySettings"):
    """Clone ``model`` with proxy guidance from ``proxy_samples`` (a LATENT's samples, (B, C, T', h', w'));
    the UltraGen patch is added with automatic settings when the model has none."""
    dm = diffusion_model_of(model)
    require(dm, Capability.PROXY)
    channels = getattr(dm, "out_dim", None) or getattr(getattr(dm, "patch_embedding", None), "in_channels", None)
    if proxy_samples.ndim != 5 or proxy_samples.shape[1] != channels:
        raise ValueError(f"UltraGen proxy guidance: the proxy latent is {tuple(proxy_samples.shape)}, but this model "
                         f"takes video latents of {channels} channels (B, {channels}, frames, height, width). Connect "
                         "the LATENT of a first sampling pass with the same model (for image-to-video, the first "
                         "pass's own start-image condition is not needed: the video's is resized to the proxy).")
    options = model.model_options.get("transformer_options", {})
    patched = model.clone() if HOLDER_KEY in options else apply_attention(model, AttentionSettings())
    latent = model.model.process_latent_in(proxy_samples.float()).cpu()  # the model's input space, every item
    patched.model_options.setdefault("transformer_options", {})[wan_proxy.PROXY_KEY] = \
        wan_proxy.ProxyHolder(latent, settings)
    return patched
