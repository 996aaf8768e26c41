"""Reading and writing UltraGen weight files safely (no code from a pickle ever runs)."""
from __future__ import annotations

import json
import os
import pickle
import struct
import zipfile
from typing import Iterable

import torch

SAFETENSORS = (".safetensors", ".sft")
PICKLES = (".ckpt", ".pt", ".pth")
SUPPORTED = PICKLES + SAFETENSORS
HEADER_LIMIT = 100 * 1024 * 1024  # safetensors refuses JSON headers above 100 MB
FINITE_CHECKED = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def _damaged(path: str, why: str) -> ValueError:
    name, size = os.path.basename(path), os.path.getsize(path)
    return ValueError(f"UltraGen: {name} ({size:,} bytes) cannot be read: {why}. The file is probably truncated or "
                      "damaged (an interrupted download or copy): download or convert it again.")


def read_safetensors_header(path: str) -> dict[str, dict]:
    """The JSON header of a safetensors file (tensor name -> dtype / shape / data_offsets, and __metadata__),
    read without touching the tensor data. Raises ValueError naming the file when it is empty or truncated, or
    its header is too large or not JSON."""
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise _damaged(path, "it is shorter than the 8 bytes that give a safetensors header's length")
        n = struct.unpack("<Q", head)[0]
        if n > HEADER_LIMIT:
            raise _damaged(path, f"its header claims {n:,} bytes, more than safetensors allows (100 MB)")
        if 8 + n > size:
            raise _damaged(path, f"its header claims {n:,} bytes, more than the file holds")
        raw = f.read(n)
    try:
        header = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise _damaged(path, f"its header is not valid JSON ({e})") from None
    if not isinstance(header, dict):
        raise _damaged(path, "its header is not a JSON object")
    end = 0
    for key, entry in header.items():
        if key == "__metadata__":
            continue
        offsets = entry.get("data_offsets") if isinstance(entry, dict) else None
        if not (isinstance(offsets, list) and len(offsets) == 2 and all(isinstance(o, int) for o in offsets)):
            raise _damaged(path, f"the header entry of {key!r} has no valid data_offsets")
        end = max(end, offsets[1])
    if 8 + n + end > size:
        raise _damaged(path, f"its tensors need {8 + n + end:,} bytes, the file ends after {size:,}")
    return header


def _pickle_problem(path: str) -> str | None:
    """A cheap structural check of a torch pickle (no unpickling): why it cannot be complete, or None."""
    with open(path, "rb") as f:
        magic = f.read(4)
    if not magic:
        return "it is empty"
    if magic == b"PK\x03\x04" and not zipfile.is_zipfile(path):
        return "it starts like a torch checkpoint (a zip archive) but its end is missing"
    if magic[:1] != b"\x80" and magic != b"PK\x03\x04":  # torch.save: a zip archive, or (legacy) a pickle
        return f"it is no torch checkpoint (it starts with {magic!r}, neither a zip archive nor a pickle)"
    return None


def weights_file_problem(path: str) -> str | None:
    """Why ``path`` cannot be an UltraGen weights file, from what is cheap to read (a safetensors header: its
    key names; a pickle's first and last bytes); or None. Tensors are never loaded here."""
    from .keys import is_extra_key
    name = os.path.basename(path)
    try:
        if path.lower().endswith(SAFETENSORS):
            keys = [k for k in read_safetensors_header(path) if k != "__metadata__"]
        else:
            problem = _pickle_problem(path)
            if problem:
                raise _damaged(path, problem)
            return None  # a pickle's key names cannot be read without unpickling it: checked when loaded
    except ValueError as e:
        return str(e)
    if not any(is_extra_key(k) for k in keys):
        sample = ", ".join(keys[:3]) or "none"
        return (f"{name} holds no UltraGen weights ({len(keys)} tensors, e.g. {sample}): it looks like a plain "
                "Wan model, which belongs in Load Diffusion Model. Select the UltraGen checkpoint (the published "
                "1080p .ckpt, or a file written by 'python -m ultragen_core.convert').")
    return None


def check_finite(tensors: Iterable[tuple[str, torch.Tensor]], source: str) -> None:
    """Raise ValueError naming the first tensor (and how many) with NaN or infinite values."""
    bad = []
    for key, t in tensors:
        if t.dtype in FINITE_CHECKED and not bool(torch.isfinite(t).all()):
            bad.append((key, int((~torch.isfinite(t)).sum()), t.numel()))
    if bad:
        key, count, numel = bad[0]
        more = f" (and {len(bad) - 1} more tensor(s))" if len(bad) > 1 else ""
        raise ValueError(f"UltraGen: {key} in {source} holds {count:,} NaN or infinite value(s) of {numel:,}{more}: "
                         "every output would be NaN. The file is damaged (or comes from a diverged training run): "
                         "download or convert it again.")


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
        from safetensors import SafetensorError
        from safetensors.torch import load_file
        read_safetensors_header(path)
        try:
            return load_file(path, device="cpu")
        except SafetensorError as e:
            raise _damaged(path, f"safetensors says: {e}") from None
    problem = _pickle_problem(path)
    if problem:
        raise _damaged(path, problem)
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
    except (EOFError, OSError, RuntimeError, KeyError, ValueError, IndexError) as e:  # IndexError: a broken pickle
        first = str(e).strip().splitlines()[0] if str(e).strip() else "no details"
        raise _damaged(path, f"torch.load failed with {type(e).__name__}: {first}") from None
    return _unwrap(obj, path)


def save_safetensors(sd: dict[str, torch.Tensor], path: str, metadata: dict[str, str] | None = None) -> None:
    from safetensors.torch import save_file
    save_file({k: v.contiguous() for k, v in sd.items()}, path, metadata=metadata)
