"""The one registry of model families: which diffusion-model classes a family claims, its native sizes /
VAE / patch facts, and its capabilities, each with a ``can_run``-style predicate that says why not.

A family is one :class:`Family` entry; its patch code lives in its own folder (Wan: ``families/wan/``)
and is imported when the family is used, so the registry itself stays light. An unknown model raises
``NotImplementedError`` naming its class; a capability a family lacks is refused by name.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from enum import Enum
from types import MappingProxyType
from typing import Callable, Mapping

from ..models import (HUNYUAN_VIDEO as HUNYUAN_VIDEO_13B, HUNYUAN_VIDEO_15_480P, HUNYUAN_VIDEO_15_720P, LTX2,
                      LTX_REFUSED, LTX_SUPPORTED, LTX_VIDEO, NATIVE_RESOLUTIONS, VIDEO_VAES, WAN21_13B, WAN21_14B,
                      WAN21_14B_480P, WAN22_5B, WAN22_A14B, WAN_REFUSED, WAN_SUPPORTED, ModelFamily, VideoVae,
                      ltx_family, wan_family)


class Capability(str, Enum):
    """What a family's patch can do; the values are the words used in messages."""

    WINDOWS_GLOBAL = "windows + global"  # UltraGen Apply: local windows plus the pooled global branch
    PROXY = "proxy"                      # UltraGen Proxy Guidance
    STREAMING = "streaming"              # blocks streamed in chunks of tokens under a memory budget
    SPLIT = "split"                      # UltraGen Split Video Across GPUs (one call shared by windows)
    CHECKPOINT = "checkpoint mode"       # UltraGen Load Weights (the published UltraGen architecture)


Predicate = Callable[[object], "str | None"]  # diffusion model -> why this member cannot, or None


@dataclass(frozen=True)
class Family:
    """One model family.

    classes: diffusion-model class names it patches; refused: class name -> why it is not patched (still
    claimed, so the message is the family's own); module_prefix: ComfyUI module whose other classes it
    claims and refuses as unknown variants; sizes: the member models' facts (native size, VAE, patch);
    vaes: its video VAEs by ComfyUI (module, class); adapter: module path of its patch (imported on use,
    with ``apply(model, settings)``); capabilities: capability -> predicate on the diffusion model, which
    returns the message why this member cannot, naming its class and the fix (None: it can); describe: the
    supported models in words; facts_of: the ModelFamily (native size, VAE, patch) of a loaded model;
    variant_refusal: for classes several models share (ComfyUI's HunyuanVideo), why this one, told apart by
    its config, is not patched (None: it is), else None.
    """

    name: str
    classes: tuple[str, ...]
    refused: Mapping[str, str]
    module_prefix: str
    sizes: tuple[ModelFamily, ...]
    vaes: Mapping[tuple[str, str], VideoVae]
    adapter: str
    capabilities: Mapping[Capability, Predicate]
    describe: str
    facts_of: Callable[[object], ModelFamily]
    variant_refusal: Predicate | None = None

    def claims(self, dm) -> bool:
        """True when the diffusion model belongs to this family (patched, or refused with a reason)."""
        name = type(dm).__name__
        return name in self.classes or name in self.refused or type(dm).__module__.startswith(self.module_prefix)

    def refusal(self, dm) -> str | None:
        """Why this claimed member is not patched at all, or None when it is."""
        name = type(dm).__name__
        if name in self.classes:
            return self.variant_refusal(dm) if self.variant_refusal is not None else None
        return self.refused.get(name, f"it is a {self.name} variant this version of the pack does not know")

    def can_run(self, capability: Capability, dm) -> str | None:
        """Why this family member cannot do ``capability``, as the message to raise (naming its class), or None."""
        predicate = self.capabilities.get(capability)
        if predicate is None:
            return (f"UltraGen {capability.value} is not available for {type(dm).__name__} ({type(dm).__module__}): "
                    f"the {self.name} family has no {capability.value} support in this version of the pack. Leave "
                    f"that node out for this model.")
        return predicate(dm)

    def patch_module(self):
        """The module holding this family's patch (``apply(model, settings)``)."""
        return importlib.import_module(self.adapter, __package__.rpartition(".")[0])


# --- Wan ------------------------------------------------------------------------------------------------------

def _always(dm) -> None:
    return None


def _wan_proxy(dm) -> str | None:
    from .wan.wan_proxy import supports_context_latents  # the patch's own test, loaded on use
    if supports_context_latents(dm) or type(dm).__name__ == "WanModel":
        return None
    return (f"UltraGen proxy guidance runs the proxy as extra tokens after the video, which {type(dm).__name__} "
            "(VACE / Camera hints are added to the video's tokens only) does not allow in this ComfyUI. Use a Wan "
            "T2V, I2V or TI2V model, or sample without UltraGen Proxy Guidance.")


def _wan_checkpoint(dm) -> str | None:
    from .wan.wan_ultragen import check_model  # checkpoint mode's own check, loaded on use
    try:
        check_model(dm)
    except NotImplementedError as refused:
        return str(refused)
    return None


WAN = Family(
    name="Wan",
    classes=WAN_SUPPORTED,
    refused=MappingProxyType(dict(WAN_REFUSED)),
    module_prefix="comfy.ldm.wan",
    sizes=(WAN21_13B, WAN21_14B, WAN21_14B_480P, WAN22_5B, WAN22_A14B),
    vaes=MappingProxyType(dict(VIDEO_VAES)),
    adapter=".families.wan.wan",
    capabilities=MappingProxyType({Capability.WINDOWS_GLOBAL: _always, Capability.STREAMING: _always,
                                   Capability.SPLIT: _always, Capability.PROXY: _wan_proxy,
                                   Capability.CHECKPOINT: _wan_checkpoint}),
    describe="Wan 2.1 / 2.2 T2V, I2V, TI2V-5B, A14B, VACE, Camera",
    facts_of=wan_family,
)

# --- HunyuanVideo ---------------------------------------------------------------------------------------------

def _hunyuan_refusal(dm) -> str | None:
    from .hunyuan_video.variants import refusal  # the one place the class's members are told apart
    return refusal(dm)


def _hunyuan_facts(dm) -> ModelFamily:
    from .hunyuan_video.variants import hunyuan_family
    return hunyuan_family(dm)


HUNYUAN_VIDEO = Family(
    name="HunyuanVideo",
    classes=("HunyuanVideo",),
    refused=MappingProxyType({}),
    module_prefix="comfy.ldm.hunyuan_video",
    sizes=(HUNYUAN_VIDEO_15_720P, HUNYUAN_VIDEO_15_480P, HUNYUAN_VIDEO_13B),
    # its VAE's first_stage_model is ComfyUI's generic AutoencodingEngine, shared with image VAEs: UltraGen
    # Tiled VAE Decode hands it to ComfyUI's own tiled decode (with a warning naming the decoder class)
    vaes=MappingProxyType({}),
    adapter=".families.hunyuan_video.hunyuan_video",
    capabilities=MappingProxyType({Capability.WINDOWS_GLOBAL: _always}),
    describe="HunyuanVideo 1.5 480p / 720p T2V and I2V, the original HunyuanVideo T2V",
    facts_of=_hunyuan_facts,
    variant_refusal=_hunyuan_refusal,
)

# --- LTX ------------------------------------------------------------------------------------------------------

LTX = Family(
    name="LTX",
    classes=LTX_SUPPORTED,
    refused=MappingProxyType(dict(LTX_REFUSED)),
    module_prefix="comfy.ldm.lightricks",
    sizes=(LTX_VIDEO, LTX2),
    vaes=MappingProxyType({}),  # UltraGen Tiled VAE Decode hands LTX's VAE to ComfyUI's own tiled decode (logged)
    adapter=".families.ltx.ltx",
    capabilities=MappingProxyType({Capability.WINDOWS_GLOBAL: _always}),
    describe="LTX-Video 0.9.x (LTXVModel), LTX-2 (LTXAVModel: its video stream)",
    facts_of=ltx_family,
)

# Every family the pack patches, in the order they are asked to claim a model.
REGISTRY: tuple[Family, ...] = (WAN, HUNYUAN_VIDEO, LTX)


# --- lookups --------------------------------------------------------------------------------------------------

def supported_classes() -> str:
    return ", ".join(name for f in REGISTRY for name in f.classes)


def diffusion_model_of(model):
    """The diffusion model inside a ComfyUI ModelPatcher (duck typed); TypeError for anything else."""
    get = getattr(model, "get_model_object", None)
    if get is None:
        raise TypeError(f"UltraGen expects a ComfyUI MODEL, got {type(model).__name__}.")
    return get("diffusion_model")


def family_of(dm) -> Family:
    """The family that patches the diffusion model ``dm``; NotImplementedError naming its class otherwise."""
    supported = supported_classes()
    for family in REGISTRY:
        if family.claims(dm):
            reason = family.refusal(dm)
            if reason is None:
                return family
            raise NotImplementedError(
                f"UltraGen does not patch {type(dm).__name__} ({type(dm).__module__}): {reason}. "
                f"Supported diffusion models: {supported}. Sample this model without UltraGen Apply.")
    raise NotImplementedError(
        f"UltraGen does not support {type(dm).__name__} ({type(dm).__module__}) yet. "
        f"Supported diffusion models: {supported} ({'; '.join(f.describe for f in REGISTRY)}). "
        f"Connect the MODEL output of a {' or '.join(f.name for f in REGISTRY)} loader.")


def require(dm, capability: Capability) -> Family:
    """The family of ``dm`` when it can do ``capability``; NotImplementedError naming the class and the
    capability (or the family's own reason) otherwise."""
    family = family_of(dm)
    reason = family.can_run(capability, dm)
    if reason is not None:
        raise NotImplementedError(reason)
    return family


def video_vaes() -> dict[tuple[str, str], VideoVae]:
    """ComfyUI VAE classes (module, class name) -> the video VAE, over every family."""
    return {key: vae for f in REGISTRY for key, vae in f.vaes.items()}


__all__ = ["Capability", "Family", "HUNYUAN_VIDEO", "LTX", "REGISTRY", "WAN", "NATIVE_RESOLUTIONS", "diffusion_model_of",
           "family_of",
           "require", "supported_classes", "video_vaes"]
