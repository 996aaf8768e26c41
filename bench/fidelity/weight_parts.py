"""Bench weights too large for one file that a device run hands back (16 MiB): split into parts there, joined here.

    parts = split(path, limit)   # path (a safetensors file) -> path's parts, each under limit bytes; path removed
    path = join(path)            # the parts beside path -> path again, tensors and metadata as written

Parts sit beside the file they come from, named ``<stem>.part<k>of<n>.safetensors``; each holds whole tensors and
the file's metadata plus ``part`` ("k/n"). A file under the limit is left as it is. Every script that reads bench
weights (bench_model.load, sampling.install_weights) joins first, so a folder that holds only the parts works as
the file.

    python bench/fidelity/weight_parts.py join DIR/ultragen_fidelity_wan.safetensors   # after a device run
"""
from __future__ import annotations

import argparse
import re
from pathlib import Path

TRANSPORT_LIMIT = 15 * 2**20  # bytes: under the 16 MiB a device run hands back, with room for the header


def parts_of(path: Path) -> list[Path]:
    """The parts written by :func:`split` beside ``path``, in order (empty if there are none)."""
    path = Path(path)
    pattern = re.compile(re.escape(path.stem) + r"\.part(\d+)of(\d+)\.safetensors")
    found = {}
    for candidate in path.parent.glob(f"{path.stem}.part*of*.safetensors"):
        match = pattern.fullmatch(candidate.name)
        if match:
            found[(int(match[1]), int(match[2]))] = candidate
    return [found[key] for key in sorted(found)]


def split(path: Path, limit: int = TRANSPORT_LIMIT) -> list[Path]:
    """Split the safetensors file ``path`` into parts of at most about ``limit`` bytes (whole tensors, first fit in
    key order) and remove it; a file under ``limit`` stays as it is and is returned alone."""
    from safetensors import safe_open
    from safetensors.torch import save_file
    path = Path(path)
    if path.stat().st_size <= limit:
        return [path]
    with safe_open(str(path), "pt") as f:
        meta = f.metadata() or {}
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    groups, size = [[]], 0
    for key, t in tensors.items():
        nbytes = t.numel() * t.element_size()
        if nbytes > limit:
            raise ValueError(f"{path}: the tensor {key} alone is {nbytes / 2**20:.1f} MiB, over the {limit / 2**20:.1f} "
                             "MiB a part may hold; a model this wide cannot travel in parts.")
        if groups[-1] and size + nbytes > limit:
            groups.append([])
            size = 0
        groups[-1].append(key)
        size += nbytes
    for old in parts_of(path):
        old.unlink()
    parts = []
    for k, keys in enumerate(groups, 1):
        part = path.with_name(f"{path.stem}.part{k}of{len(groups)}.safetensors")
        save_file({key: tensors[key] for key in keys}, str(part), metadata={**meta, "part": f"{k}/{len(groups)}"})
        parts.append(part)
    path.unlink()
    return parts


def join(path: Path) -> Path:
    """``path`` itself if it exists; else its parts (:func:`split`) joined into it. Raises FileNotFoundError when
    neither is there, ValueError when parts are missing."""
    from safetensors import safe_open
    from safetensors.torch import save_file
    path = Path(path)
    if path.exists():
        return path
    parts = parts_of(path)
    if not parts:
        raise FileNotFoundError(f"{path} does not exist, and no parts of it ({path.stem}.part<k>of<n>.safetensors) "
                                f"are beside it.")
    counts = {int(re.search(r"of(\d+)\.safetensors$", p.name)[1]) for p in parts}
    if len(counts) != 1 or len(parts) != counts.pop():
        raise ValueError(f"{path}: the parts beside it are incomplete or from different splits "
                         f"({', '.join(p.name for p in parts)}); copy every part of one run.")
    tensors, meta = {}, {}
    for part in parts:
        with safe_open(str(part), "pt") as f:
            meta = {k: v for k, v in (f.metadata() or {}).items() if k != "part"}
            tensors.update({k: f.get_tensor(k) for k in f.keys()})
    save_file(tensors, str(path), metadata=meta)
    return path


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("action", choices=("join", "split"))
    ap.add_argument("path", type=Path, help="the weights file (its parts sit beside it)")
    args = ap.parse_args(argv)
    if args.action == "join":
        print(join(args.path))
    else:
        print("\n".join(str(p) for p in split(args.path)))


if __name__ == "__main__":
    main()
