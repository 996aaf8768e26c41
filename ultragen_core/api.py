"""What nodes and bench/ call: one small api over the family registry. Nothing outside ``ultragen_core``
imports a family's modules (``families/``, ``adapters/``, ``checkpoint/``, ``models``) directly, so a
benchmark runs the apply path a user runs, and a new family is a folder plus a registry entry, not an edit
of every node.

Every function takes a ComfyUI ModelPatcher (duck typed; ComfyUI is never imported here). A model no
family claims raises ``NotImplementedError`` naming its class; a capability its family lacks is refused by
name (:func:`require`).
"""
from __future__ import annotations

import math

import torch

from .adapters import apply_attention
from .adapters.base import HOLDER_KEY
from .checkpoint.io import SUPPORTED as WEIGHT_SUFFIXES
from .checkpoint.io import weights_file_problem
from .checkpoint.keys import PUBLISHED_FULL_BLOCKS as CHECKPOINT_FULL_BLOCKS
from .checkpoint.keys import PUBLISHED_RANK, expected_shapes
from .config import AttentionSettings, DualBranchPlan
from .families.registry import (NATIVE_RESOLUTIONS, REGISTRY, Capability, Family, diffusion_model_of, family_of,
                                video_vaes)
from .families.registry import require as _require
from .families.wan import wan_split as _split
from .families.wan.wan_proxy import MODES as PROXY_MODES
from .families.wan.wan_proxy import ProxySettings, apply_proxy_guidance, proxy_problem
from .families.wan.wan_ultragen import load_ultragen as _load_ultragen
from .memory import MemoryPlan, plan_memory, set_free_memory
from .models import ModelFamily

# ComfyUI's VAE classes (module, class name) -> the causal video VAE UltraGen Tiled VAE Decode tiles itself.
VIDEO_VAES = video_vaes()


def apply(model, settings: AttentionSettings | None = None):
    """UltraGen Apply: a clone of ``model`` with dual-branch (windows + pooled global) self-attention."""
    return apply_attention(model, settings or AttentionSettings())


def plan_for(model, grid: tuple[int, int, int]) -> DualBranchPlan | None:
    """The window plan a model patched by :func:`apply` runs at the token grid (T, H, W); None when the model
    has no UltraGen Apply patch."""
    holder = getattr(model, "model_options", {}).get("transformer_options", {}).get(HOLDER_KEY)
    return None if holder is None else holder.plan_for(tuple(grid))


def family(model) -> Family:
    """The registry entry that claims the ModelPatcher's diffusion model (NotImplementedError naming the class)."""
    return family_of(diffusion_model_of(model))


def require(model, capability: Capability) -> Family:
    """The family of the ModelPatcher's diffusion model when it can do ``capability``, else
    NotImplementedError naming the model class and the capability."""
    return _require(diffusion_model_of(model), capability)


def family_named(name: str) -> Family:
    """The registry entry called ``name`` (e.g. "Wan"); ValueError listing the names otherwise."""
    for entry in REGISTRY:
        if entry.name == name:
            return entry
    raise ValueError(f"UltraGen has no model family {name!r}; the registry holds {[f.name for f in REGISTRY]}.")


def model_facts(diffusion_model, family: Family | None = None) -> ModelFamily:
    """Native size, VAE and patch facts of a loaded diffusion model, from the family that claims it.
    ``family``: read them with that family's rules instead (bench/ passes a stand-in with the real model's
    shapes, e.g. a SimpleNamespace of ``dim`` and ``out_dim`` for Wan, before any model exists)."""
    entry = family if family is not None else family_of(diffusion_model)
    return entry.facts_of(diffusion_model)


def enable_split(model, setup):
    """UltraGen Split Video Across GPUs: a clone of ``model`` whose sampling runs share each call out over
    ``setup``'s devices (:class:`ComfyMultiGPU`, or :class:`OneDevice` for bench/)."""
    require(model, Capability.SPLIT)
    return _split.enable_split(model, setup)


def as_rank(model, rank: int, ranks: int, exchange):
    """A clone of a patched ``model`` whose calls compute only rank ``rank`` of ``ranks``'s share of a window
    split, exchanging rows through ``exchange`` (all_gather / all_reduce): bench/ times one GPU's share."""
    require(model, Capability.SPLIT)
    clone = model.clone()
    dm = diffusion_model_of(model)
    clone.model_options.setdefault("transformer_options", {})[_split.RANK_KEY] = \
        _split.RankCall(rank, ranks, exchange, _split.token_cost(dm))
    return clone


def load_weights(model, path: str, patcher_factory=None):
    """UltraGen Load Weights (checkpoint mode): (a clone of ``model`` running the published UltraGen checkpoint
    at ``path``, a report). ``patcher_factory`` builds the extras' ModelPatcher (ComfyUI's class)."""
    require(model, Capability.CHECKPOINT)
    return _load_ultragen(model, path, patcher_factory=patcher_factory)


def random_checkpoint_weights(width: int, blocks, seed: int = 0, dtype: torch.dtype = torch.bfloat16):
    """Extras-only UltraGen checkpoint weights with the published names and shapes and random values, for
    ``blocks`` (indices) of a Wan model of ``width``: bench/ saves them with safetensors and times checkpoint
    mode through :func:`load_weights`, as a user's file runs. {key: tensor}."""
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for block in blocks:
        for name, shape in expected_shapes(width, PUBLISHED_RANK).items():
            scale = 1.0 / math.sqrt(math.prod(shape[1:])) if len(shape) > 1 else 0.02
            out[f"blocks.{block}.self_attn.{name}"] = (torch.randn(shape, generator=gen) * scale).to(dtype)
    return out


ComfyMultiGPU = _split.ComfyMultiGPU
OneDevice = _split.OneDevice

__all__ = ["AttentionSettings", "CHECKPOINT_FULL_BLOCKS", "Capability", "ComfyMultiGPU", "Family", "MemoryPlan",
           "ModelFamily", "NATIVE_RESOLUTIONS", "OneDevice", "PROXY_MODES", "ProxySettings", "REGISTRY", "VIDEO_VAES",
           "WEIGHT_SUFFIXES", "apply", "apply_attention", "apply_proxy_guidance", "as_rank", "enable_split", "family",
           "family_named", "load_weights", "model_facts", "plan_for", "plan_memory", "proxy_problem",
           "random_checkpoint_weights", "require", "set_free_memory", "weights_file_problem"]
