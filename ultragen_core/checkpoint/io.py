"""Reading and writing UltraGen weight files safely (no code from a pickle ever runs)."""
from __future__ import annotations

import os
import pickle

import torch

SAFETENSORS = (".safetensors", ".sft")
PICKLES = (".ckpt", ".pt", ".pth")
SUPPORTED = PICKLES + SAFETENSORS


def _unwrap(obj, path: str) -> dict[str, torch.Tensor]:
    """The tensor dict inside a loaded pickle (plain state dict, or under 'state_dict' / 'module')."""
    for _ in range(3):
        if isinstance(obj, dict) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
            return dict(obj)
        if isinstance(obj, dict):
            inner = [k for k in ("state_dict", "module", "model", "dit") if isinstance(obj.get(k), dict)]
            if inner:
                obj = obj[inner[0]]
                continue
        break
    kind = type(obj).__name__
    raise ValueError(f"UltraGen: {os.path.basename(path)} does not hold a state dict of tensors (found a {kind}). "
                     "Expected the DiT state dict the UltraGen authors published.")


def load_state_dict(path: str) -> dict[str, torch.Tensor]:
    """Load a ``.safetensors`` file, or a ``.ckpt`` / ``.pt`` / ``.pth`` pickle with ``weights_only=True``.

    A pickle that contains anything but tensors and plain containers (code, custom classes) is refused.
    """
    name = os.path.basename(path)
    ext = os.path.splitext(path)[1].lower()
    if ext not in SUPPORTED:
        raise ValueError(f"UltraGen: {name} has the extension '{ext}'; supported are {', '.join(SUPPORTED)}.")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"UltraGen: {path} does not exist.")
    if ext in SAFETENSORS:
        from safetensors.torch import load_file
        return load_file(path, device="cpu")
    try:
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as e:  # legacy (non-zip) pickles cannot be memory-mapped
            if "mmap" not in str(e):
                raise
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ValueError(
            f"UltraGen refuses to load {name}: the pickle contains more than tensors (code or custom objects), "
            f"and this pack only loads pickles with weights_only=True ({first}). Download the published "
            "checkpoint again from the authors' page, or use a .safetensors file.") from None
    return _unwrap(obj, path)


def save_safetensors(sd: dict[str, torch.Tensor], path: str, metadata: dict[str, str] | None = None) -> None:
    from safetensors.torch import save_file
    save_file({k: v.contiguous() for k, v in sd.items()}, path, metadata=metadata)
