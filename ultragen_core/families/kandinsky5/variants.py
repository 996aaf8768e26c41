"""Which model a ComfyUI ``Kandinsky5`` diffusion model is, and whether NABLA sparse attention is on it.

ComfyUI builds Kandinsky 5 Video Lite (2B), Video Pro (19B) and Image Lite from one class,
``comfy.ldm.kandinsky5.model.Kandinsky5``; its config tells them apart (ComfyUI's model detection reads the same
facts from the weights): the video models take 33 channels per latent cell (16 latent + 16 image + 1 mask, from
ComfyUI's concat) in 1x2x2 patches, ``visual_embed_dim`` 132; the image model 16 channels, 64. Pro is 4096 wide
(the only width at which ComfyUI switches the RoPE scale at high resolution), Lite 1792. T2V and I2V share a
config. UltraGen Apply patches the video models and refuses the others by name.

NABLA (an open ComfyUI pull request for the 10-second models) computes the visual self-attention with its own
block-sparse flex_attention instead of ``optimized_attention``; UltraGen's windows replace that attention, so
the two cannot both run. :func:`nabla_found` looks for it by what the model or the call carries (duck typed:
any attribute, submodule or method of the model or of a visual self-attention, or any transformer_options key,
whose name mentions NABLA or sparse attention and is set, or a string setting whose value names NABLA).
"""
from __future__ import annotations

from enum import Enum

from ...models import KANDINSKY5_LITE, KANDINSKY5_PRO, ModelFamily


class Variant(str, Enum):
    """A member of the Kandinsky5 class; the values are the names used in messages."""

    VIDEO_LITE = "Kandinsky 5 Video Lite"
    VIDEO_PRO = "Kandinsky 5 Video Pro"
    IMAGE_LITE = "Kandinsky 5 Image Lite"
    OTHER = "Kandinsky 5 with an unknown input layout"


SUPPORTED = (Variant.VIDEO_LITE, Variant.VIDEO_PRO)
VIDEO_EMBED_DIM = 132  # (16 latent + 16 image + 1 mask channels) x 1x2x2 patch
IMAGE_EMBED_DIM = 64   # 16 latent channels x 1x2x2 patch
PRO_WIDTH = 4096

REFUSED: dict[Variant, str] = {
    Variant.IMAGE_LITE: (
        "it is Kandinsky 5 Image Lite, an image model (16 input channels per cell, no video frames); the patch "
        "has only been verified with the Kandinsky 5 video models. Sample it without UltraGen Apply"),
    Variant.OTHER: (
        "its input layout is neither the video models' (visual_embed_dim 132) nor the image model's (64); the "
        "patch has not been verified with it. Sample it without UltraGen Apply"),
}

NABLA_WORDS = ("nabla", "sparse_attention", "sparse_params", "sparse_attn")


def variant_of(dm) -> Variant:
    """The member of the Kandinsky5 class ``dm`` is, from its config (duck typed: ``visual_embed_dim``,
    ``model_dim``)."""
    embed = getattr(dm, "visual_embed_dim", None)
    if embed == IMAGE_EMBED_DIM:
        return Variant.IMAGE_LITE
    if embed != VIDEO_EMBED_DIM:
        return Variant.OTHER
    return Variant.VIDEO_PRO if getattr(dm, "model_dim", 0) >= PRO_WIDTH else Variant.VIDEO_LITE


def describe_config(dm) -> str:
    return (f"model_dim {getattr(dm, 'model_dim', None)}, visual_embed_dim {getattr(dm, 'visual_embed_dim', None)}, "
            f"patch_size {tuple(getattr(dm, 'patch_size', ()))}")


def refusal(dm) -> str | None:
    """Why UltraGen Apply does not patch this Kandinsky5-class model (the registry's message), or None."""
    variant = variant_of(dm)
    if variant in SUPPORTED:
        return nabla_refusal(dm, {})
    return f"{REFUSED[variant]} (found from its config: {describe_config(dm)})"


def kandinsky5_family(dm) -> ModelFamily:
    """The native-size facts of a patched model: Pro's for the 4096-wide model, else Lite's (and tiny test
    models)."""
    return KANDINSKY5_PRO if variant_of(dm) is Variant.VIDEO_PRO else KANDINSKY5_LITE


# --- NABLA ------------------------------------------------------------------------------------------------------

def _names_nabla(name) -> bool:
    return isinstance(name, str) and any(word in name.lower() for word in NABLA_WORDS)


def _is_set(value) -> bool:
    return value is not None and value is not False and not (isinstance(value, (dict, list, tuple)) and not value)


def _found_on(obj, where: str) -> str | None:
    """A NABLA / sparse-attention attribute, submodule or method of ``obj`` (instance or class), or None."""
    if obj is None:
        return None
    own = dict(vars(obj)) if hasattr(obj, "__dict__") else {}
    own.update(getattr(obj, "_modules", None) or {})
    for name, value in own.items():
        if _names_nabla(name) and _is_set(value):
            return f"{where} has {name!r} set ({type(value).__name__})"
        if isinstance(value, str) and "nabla" in value.lower():
            return f"{where} has {name} = {value!r}"
    for name in dir(type(obj)):
        if _names_nabla(name) and not name.startswith("__"):
            return f"{where} ({type(obj).__name__}) defines {name!r}"
    return None


def nabla_found(dm, transformer_options: dict) -> str | None:
    """What shows that NABLA sparse attention runs in this model or call (for the message), or None.

    dm: the Kandinsky5 diffusion model; transformer_options: the options of the model or of one call."""
    for key, value in (transformer_options or {}).items():
        if _names_nabla(key) and _is_set(value):
            return f"transformer_options[{key!r}] is set ({type(value).__name__})"
    blocks = getattr(dm, "visual_transformer_blocks", None) or ()
    attention = getattr(blocks[0], "self_attention", None) if len(blocks) else None
    return _found_on(dm, "the diffusion model") or _found_on(attention, "visual_transformer_blocks.0.self_attention")


def nabla_refusal(dm, transformer_options: dict) -> str | None:
    """The refusal message when NABLA is found, or None."""
    found = nabla_found(dm, transformer_options)
    if found is None:
        return None
    return (f"NABLA sparse attention is on this model ({found}): NABLA computes the visual self-attention with its "
            "own block-sparse flex_attention, which UltraGen's windows would replace, so the two cannot run "
            "together. Remove the NABLA option (or node) from this model, or remove UltraGen Apply")


__all__ = ["REFUSED", "SUPPORTED", "Variant", "describe_config", "kandinsky5_family", "nabla_found", "nabla_refusal",
           "refusal", "variant_of"]
