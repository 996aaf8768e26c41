"""Model-family adapters, one module each (see :class:`.base.Adapter`): ``FAMILY``, ``SUPPORTED``,
``claims(diffusion_model)``, ``refusal(diffusion_model)`` and ``apply(model_patcher, settings)``.
:func:`apply_attention` picks the one that claims the model."""
from __future__ import annotations

from ..config import AttentionSettings
from . import wan, wan_proxy
from .base import HOLDER_KEY

ADAPTERS = (wan,)


def adapter_for(model):
    """The adapter module for a ComfyUI ModelPatcher, or NotImplementedError naming the model class."""
    get = getattr(model, "get_model_object", None)
    if get is None:
        raise TypeError(f"UltraGen expects a ComfyUI MODEL, got {type(model).__name__}.")
    dm = get("diffusion_model")
    supported = ", ".join(name for a in ADAPTERS for name in a.SUPPORTED)
    for adapter in ADAPTERS:
        if adapter.claims(dm):
            reason = adapter.refusal(dm)
            if reason is None:
                return adapter
            raise NotImplementedError(
                f"UltraGen does not patch {type(dm).__name__} ({type(dm).__module__}): {reason}. "
                f"Supported diffusion models: {supported}. Sample this model without UltraGen Apply.")
    raise NotImplementedError(
        f"UltraGen does not support {type(dm).__name__} ({type(dm).__module__}) yet. "
        f"Supported diffusion models: {supported} (Wan 2.1 / 2.2 T2V, I2V, TI2V-5B, A14B, VACE, Camera). "
        "Connect the MODEL output of a Wan loader.")


def apply_attention(model, settings: AttentionSettings):
    """Clone ``model`` and patch its self-attention with the dual-branch op."""
    return adapter_for(model).apply(model, settings)


def apply_proxy_guidance(model, proxy_samples, settings: "wan_proxy.ProxySettings"):
    """Clone ``model`` with proxy guidance from ``proxy_samples`` (a LATENT's samples, (B, C, T', h', w'));
    the UltraGen patch is added with automatic settings when the model has none."""
    if adapter_for(model) is not wan:
        raise NotImplementedError("UltraGen proxy guidance supports Wan models only.")
    dm = model.get_model_object("diffusion_model")
    if not wan_proxy.supports_context_latents(dm) and type(dm).__name__ != "WanModel":
        raise NotImplementedError(
            f"UltraGen proxy guidance runs the proxy as extra tokens after the video, which {type(dm).__name__} "
            "(VACE / Camera hints are added to the video's tokens only) does not allow in this ComfyUI. Use a Wan "
            "T2V, I2V or TI2V model, or sample without UltraGen Proxy Guidance.")
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
