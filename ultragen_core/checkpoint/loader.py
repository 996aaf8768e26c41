"""Read an UltraGen checkpoint for a loaded Wan model (a ComfyUI ModelPatcher, duck-typed): the extra
weights as modules, the base weights that differ, and a report. Attaching them to the model is the
adapter's job (``families.wan.wan_ultragen``)."""
from __future__ import annotations

import os

import torch

from .io import check_finite, load_state_dict
from .keys import SplitCheckpoint, check_extras, split_checkpoint
from .modules import UltraGenExtras

FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def storage_dtype(model) -> torch.dtype:
    """The dtype the extras are kept in: the model's weight dtype, or its compute dtype when that is fp8."""
    dtype = model.model_dtype() if hasattr(model, "model_dtype") else None
    if dtype in FLOAT_DTYPES:
        return dtype
    cast = getattr(getattr(model, "model", None), "manual_cast_dtype", None)
    return cast if cast in FLOAT_DTYPES else torch.bfloat16


def compare_base(split: SplitCheckpoint, model_sd: dict[str, torch.Tensor], source: str):
    """Base weights of the file that differ from the model's, and plain-words notes on the key sets.

    Returns ({key: tensor to set}, notes). Raises ValueError when the file's base is another model.
    """
    if not split.has_base:
        return {}, ["the file holds only the UltraGen weights; the connected model's base weights are used"]
    file_keys, model_keys = set(split.base), set(model_sd)
    missing = sorted(model_keys - file_keys)
    unexpected = sorted(file_keys - model_keys)
    shared = sorted(file_keys & model_keys)
    if not shared:
        raise ValueError(f"UltraGen: the base weights in {source} share no key with the connected model "
                         f"(file: {unexpected[:2]}, model: {missing[:2]}). Connect the model the file belongs to.")
    for key in shared:
        if tuple(split.base[key].shape) != tuple(model_sd[key].shape):
            raise ValueError(f"UltraGen: {key} is {tuple(split.base[key].shape)} in {source} but "
                             f"{tuple(model_sd[key].shape)} in the connected model: the file is for another model.")
    differ = {}
    for key in shared:
        mine = model_sd[key]
        theirs = split.base[key]
        target = mine.dtype if mine.dtype in FLOAT_DTYPES else theirs.dtype
        theirs = theirs.to(target)
        if mine.dtype != target or not torch.equal(mine.detach().to(device="cpu"), theirs):
            differ[key] = theirs
    notes = []
    if differ:
        notes.append(f"{len(differ)} of {len(shared)} base weights differ from the connected model's and are "
                     "taken from the file")
    else:
        notes.append(f"all {len(shared)} base weights equal the connected model's")
    if missing:
        notes.append(f"{len(missing)} weight(s) of the model are not in the file and keep the model's values "
                     f"(e.g. {missing[0]})")
    if unexpected:
        notes.append(f"{len(unexpected)} key(s) in the file are not in the model and are ignored (e.g. {unexpected[0]})")
    return differ, notes


def prepare_checkpoint(model, dm, path: str) -> tuple[UltraGenExtras, dict[str, torch.Tensor], str]:
    """The checkpoint at ``path`` for ``model`` (its diffusion model ``dm``): (extras, base weights to
    set, report). Raises ValueError naming the file when it does not fit the model."""
    source = os.path.basename(path)
    split = split_checkpoint(load_state_dict(path))
    notes = check_extras(split, int(dm.dim), len(dm.blocks), source)
    check_finite(split.named_tensors(), source)
    base, base_notes = compare_base(split, dm.state_dict(), source)
    dtype = storage_dtype(model)
    extras = UltraGenExtras.from_tensors(split.extras, split.width, split.rank, dtype)
    full = [b for b in range(len(dm.blocks)) if b not in split.extras]
    head = (f"UltraGen: {source}: {len(split.extras)} blocks of UltraGen weights ({split.count() / 1e6:.1f}M "
            f"parameters, LoRA rank {split.rank}, kept in {str(dtype).replace('torch.', '')}); full attention in "
            f"blocks {full}")
    report = "; ".join([head] + base_notes + notes) + "."
    return extras, base, report
