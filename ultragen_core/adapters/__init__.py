"""Model-family adapters, one module each (see :class:`.base.Adapter`): ``FAMILY``, ``SUPPORTED``,
``claims(diffusion_model)``, ``refusal(diffusion_model)`` and ``apply(model_patcher, settings)``.
:func:`apply_attention` picks the one that claims the model."""
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
