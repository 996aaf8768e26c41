"""ComfyUI for the bench scripts that build models with its classes (dit.py, vae_decode.py, kernel_profile.py
--block): the tree named by COMFYUI_PATH goes first on sys.path."""
from __future__ import annotations

import os
import sys
from pathlib import Path


def use_comfyui(script: str, cpu: bool) -> None:
    """Put $COMFYUI_PATH first on sys.path, or exit with a message that says what to set.

    cpu: run ComfyUI on the CPU (--smoke); this must happen before comfy.model_management is imported.
    """
    root = os.environ.get("COMFYUI_PATH")
    if not root or not (Path(root) / "comfy" / "model_patcher.py").is_file():
        now = f"it is {root!r}" if root else "it is not set"
        sys.exit(f"{script} builds models with ComfyUI's classes: set COMFYUI_PATH to a ComfyUI checkout "
                 f"(the folder that holds comfy/ and nodes.py); {now}.")
    if root not in sys.path:
        sys.path.insert(0, root)
    if cpu:
        import comfy.cli_args
        comfy.cli_args.args.cpu = True
