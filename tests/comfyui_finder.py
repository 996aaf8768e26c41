"""Find a ComfyUI tree for the ComfyUI tier of the tests (no ComfyUI import happens here).

Looked up, in order: the COMFYUI_PATH environment variable; the pack sitting in
``<ComfyUI>/custom_nodes/<pack>``; an importable ``comfy`` package (e.g. through a .pth file).
"""
from __future__ import annotations

import importlib.util
import os
from pathlib import Path

PACK_DIR = Path(__file__).resolve().parent.parent


def _is_comfyui(path: Path) -> bool:
    return (path / "comfy" / "model_patcher.py").is_file() and (path / "nodes.py").is_file()


def find_comfyui() -> tuple[Path | None, str]:
    """(ComfyUI root or None, how it was found or why not)."""
    env = os.environ.get("COMFYUI_PATH")
    if env:
        path = Path(env).expanduser().resolve()
        if _is_comfyui(path):
            return path, f"COMFYUI_PATH={path}"
        return None, f"COMFYUI_PATH={env} is not a ComfyUI tree (no comfy/model_patcher.py and nodes.py)"
    if PACK_DIR.parent.name == "custom_nodes" and _is_comfyui(PACK_DIR.parent.parent):
        return PACK_DIR.parent.parent, f"the pack sits in {PACK_DIR.parent}"
    spec = importlib.util.find_spec("comfy")
    if spec is not None and spec.submodule_search_locations:
        root = Path(list(spec.submodule_search_locations)[0]).resolve().parent
        if _is_comfyui(root):
            return root, f"importable comfy package at {root}"
    return None, ("no ComfyUI found: set COMFYUI_PATH to a ComfyUI checkout, put this pack in "
                  "<ComfyUI>/custom_nodes/, or make 'comfy' importable")
