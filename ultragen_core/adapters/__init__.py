"""What every family's patch shares (:mod:`.base`: the adapter protocol, settings holder, per-run and
per-call state, patcher mechanics; :mod:`.diffusion_wrapper`: the DIFFUSION_MODEL wrapper every family
subclasses), and the generic entry point that hands a model to the family the
registry (:mod:`ultragen_core.families.registry`) finds for it. A family's own patch lives in its folder
under ``families/`` (Wan: ``families/wan/``). Nodes and bench/ use :mod:`ultragen_core.api`."""
from __future__ import annotations

from ..config import AttentionSettings
from ..families.registry import Capability, diffusion_model_of, require


def apply_attention(model, settings: AttentionSettings):
    """Clone ``model`` and patch its self-attention with the dual-branch op."""
    dm = diffusion_model_of(model)
    family = require(dm, Capability.WINDOWS_GLOBAL)
    return family.patch_module().apply(model, settings)
