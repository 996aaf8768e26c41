"""Model-family adapters. Each module exposes ``FAMILY``, ``matches(diffusion_model)`` and
``apply(model_patcher, settings) -> patched clone``; :func:`apply_attention` picks the one that fits."""
from __future__ import annotations

from ..config import AttentionSettings
from . import wan

ADAPTERS = (wan,)


def adapter_for(model):
    """The adapter module for a ComfyUI ModelPatcher, or NotImplementedError naming the model class."""
    get = getattr(model, "get_model_object", None)
    if get is None:
        raise TypeError(f"UltraGen expects a ComfyUI MODEL, got {type(model).__name__}.")
    dm = get("diffusion_model")
    for adapter in ADAPTERS:
        if adapter.matches(dm):
            return adapter
    supported = ", ".join(name for a in ADAPTERS for name in a.SUPPORTED)
    raise NotImplementedError(
        f"UltraGen does not support {type(dm).__name__} ({type(dm).__module__}) yet. "
        f"Supported diffusion models: {supported} (Wan 2.1 / 2.2 T2V, I2V, TI2V-5B, A14B, VACE). "
        "Connect the MODEL output of a Wan loader.")


def apply_attention(model, settings: AttentionSettings):
    """Clone ``model`` and patch its self-attention with the dual-branch op."""
    return adapter_for(model).apply(model, settings)
