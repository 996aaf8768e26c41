"""Which model a ComfyUI ``HunyuanVideo`` diffusion model is, decided in one place.

ComfyUI builds the original HunyuanVideo (2024), its I2V variants, HunyuanImage 2.1 (and its refiner),
HunyuanVideo 1.5 and the HunyuanVideo 1.5 super-resolution model all from one class,
``comfy.ldm.hunyuan_video.model.HunyuanVideo``; only its config tells them apart (ComfyUI's model
detection reads the same facts from the weights: the patch size, ``vision_in`` and the input channels).
UltraGen Apply patches HunyuanVideo 1.5 (480p / 720p, T2V and I2V share one config) and the original
HunyuanVideo T2V, and refuses the others by name, with the reason.
"""
from __future__ import annotations

from enum import Enum

from ...models import HUNYUAN_VIDEO, HUNYUAN_VIDEO_15_720P, ModelFamily


class Variant(str, Enum):
    """A member of the HunyuanVideo class; the values are the names used in messages."""

    HUNYUAN_VIDEO_15 = "HunyuanVideo 1.5"
    HUNYUAN_VIDEO_15_SR = "HunyuanVideo 1.5 1080p super-resolution"
    HUNYUAN_VIDEO_15_OTHER = "HunyuanVideo 1.5 with an unknown input layout"
    HUNYUAN_VIDEO = "HunyuanVideo T2V (the original 13B model)"
    HUNYUAN_VIDEO_I2V = "HunyuanVideo I2V / SkyReels I2V (the original model with image channels)"
    HUNYUAN_IMAGE_21 = "HunyuanImage 2.1"
    HUNYUAN_IMAGE_21_REFINER = "HunyuanImage 2.1 refiner"


SUPPORTED = (Variant.HUNYUAN_VIDEO_15, Variant.HUNYUAN_VIDEO)
HUNYUAN_T2V_IN_CHANNELS = 16  # the original model's latent channels (I2V: 33, SkyReels I2V: 32)
HUNYUAN15_IN_CHANNELS = 65  # 32 latent channels + 32 of the (I2V) image latent + 1 mask channel
HUNYUAN15_SR_IN_CHANNELS = 98  # the SR model: 32 latent + 32 low-resolution video + 32 + 2 (ComfyUI's concat)

REFUSED: dict[Variant, str] = {
    Variant.HUNYUAN_VIDEO_15_SR: (
        "it is the HunyuanVideo 1.5 1080p super-resolution model (98 input channels): it upscales the output of "
        "a 720p pass that its own input carries as a low-resolution video, and windowing it has not been "
        "verified. Put UltraGen Apply on the 480p / 720p HunyuanVideo 1.5 model and sample the "
        "super-resolution model without it"),
    Variant.HUNYUAN_VIDEO_15_OTHER: (
        "it has HunyuanVideo 1.5's vision input but neither the 65 input channels of the 480p / 720p models nor "
        "the 98 of the super-resolution model; the patch has not been verified with that layout"),
    Variant.HUNYUAN_VIDEO_I2V: (
        "it is the original HunyuanVideo's I2V or SkyReels I2V model (image channels besides the 16 of the "
        "latent; the I2V model's guiding frame has modulation of its own), which the patch has not been "
        "verified with. Use HunyuanVideo 1.5 I2V, or the original T2V model"),
    Variant.HUNYUAN_IMAGE_21: (
        "it is HunyuanImage 2.1, an image model (2-D patches): there is no video grid to window. Sample it "
        "without UltraGen Apply"),
    Variant.HUNYUAN_IMAGE_21_REFINER: (
        "it is the HunyuanImage 2.1 refiner (patch 1x1x1 without HunyuanVideo 1.5's vision input), which the "
        "patch has not been verified with. Sample it without UltraGen Apply"),
}


def _param(dm, name: str, default=None):
    """A config value of the loaded model: ``dm.params.<name>`` (HunyuanVideoParams), else the attribute."""
    params = getattr(dm, "params", None)
    if params is not None and hasattr(params, name):
        return getattr(params, name)
    return getattr(dm, name, default)


def variant_of(dm) -> Variant:
    """The member of the HunyuanVideo class ``dm`` is, from its config (duck typed: ``patch_size``,
    ``vision_in_dim`` / ``vision_in``, ``in_channels``)."""
    patch = list(_param(dm, "patch_size", ()) or ())
    if len(patch) == 2:
        return Variant.HUNYUAN_IMAGE_21
    vision = _param(dm, "vision_in_dim") is not None or getattr(dm, "vision_in", None) is not None
    if vision:
        channels = _param(dm, "in_channels")
        if channels == HUNYUAN15_IN_CHANNELS:
            return Variant.HUNYUAN_VIDEO_15
        if channels == HUNYUAN15_SR_IN_CHANNELS:
            return Variant.HUNYUAN_VIDEO_15_SR
        return Variant.HUNYUAN_VIDEO_15_OTHER
    if patch == [1, 1, 1]:
        return Variant.HUNYUAN_IMAGE_21_REFINER
    if _param(dm, "in_channels") == HUNYUAN_T2V_IN_CHANNELS:
        return Variant.HUNYUAN_VIDEO
    return Variant.HUNYUAN_VIDEO_I2V


def refusal(dm) -> str | None:
    """Why UltraGen Apply does not patch this HunyuanVideo-class model (the registry's message), or None."""
    variant = variant_of(dm)
    if variant in SUPPORTED:
        return None
    return f"{REFUSED[variant]} (found from its config: {describe_config(dm)})"


def describe_config(dm) -> str:
    """The config facts the variant was decided on, for messages and the log."""
    return (f"patch_size {list(_param(dm, 'patch_size', ()) or ())}, in_channels {_param(dm, 'in_channels')}, "
            f"vision_in_dim {_param(dm, 'vision_in_dim')}")


def hunyuan_family(dm) -> ModelFamily:
    """The native-size facts of a patched model: the original HunyuanVideo's (720p, 129 frames), else
    HunyuanVideo 1.5 at 720p. The 1.5 480p and 720p checkpoints have one shape, so the weights cannot tell them
    apart: a 480p model's users set native_resolution "480p" in UltraGen Attention Settings (the windows then
    cover 480p)."""
    return HUNYUAN_VIDEO if variant_of(dm) is Variant.HUNYUAN_VIDEO else HUNYUAN_VIDEO_15_720P


__all__ = ["REFUSED", "SUPPORTED", "Variant", "describe_config", "hunyuan_family", "refusal", "variant_of"]
