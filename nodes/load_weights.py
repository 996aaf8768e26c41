"""UltraGenLoadWeights: run the published UltraGen checkpoint (base Wan + extra weights) in ComfyUI.

A patch node on a MODEL, not a loader: the base Wan model is loaded by ComfyUI's own Load Diffusion
Model (dtype options, caching, other patches keep working), and this node attaches what the checkpoint
adds. The file may hold the full DiT (base weights that differ from the connected model are applied
as weight patches) or only the extra keys.
"""
from __future__ import annotations

import logging
import os

import comfy.model_patcher
import folder_paths
from comfy_api.latest import io

from ..ultragen_core.api import WEIGHT_SUFFIXES as SUPPORTED
from ..ultragen_core.api import load_weights, weights_file_problem
from .schema import own_check, schema

log = logging.getLogger(__name__)
FOLDER = "ultragen"  # models/ultragen (or an "ultragen:" entry in extra_model_paths.yaml)
SEARCHED = (FOLDER, "diffusion_models")

if FOLDER not in folder_paths.folder_names_and_paths:
    folder_paths.folder_names_and_paths[FOLDER] = ([os.path.join(folder_paths.models_dir, FOLDER)], set(SUPPORTED))


def weight_files() -> list[str]:
    names = set()
    for folder in SEARCHED:
        names.update(n for n in folder_paths.get_filename_list(folder) if n.lower().endswith(SUPPORTED))
    return sorted(names)


def locate(name: str) -> tuple[str | None, str | None]:
    """(full path, None) of a weights file picked in the list, or (None, why not); the message leaves out the
    input's name (ComfyUI puts it in front at graph time)."""
    if not name.lower().endswith(SUPPORTED):
        return None, f"'{name}' is not one of {', '.join(SUPPORTED)}; select an UltraGen checkpoint file."
    for folder in SEARCHED:
        path = folder_paths.get_full_path(folder, name)
        if path is not None:
            return path, None
    return None, f"'{name}' was not found in models/ultragen or models/diffusion_models."


def weights_problem(name: str) -> str | None:
    """Why the file picked as weights cannot be loaded, from what is cheap to read (never its tensors); or None."""
    path, problem = locate(name)
    return problem or weights_file_problem(path)


def find(name: str) -> str:
    """The full path of a weights file picked in the list; ValueError naming the weights input when there is none."""
    path, problem = locate(name)
    if problem:
        raise ValueError(f"weights: {problem}")
    return path


class UltraGenLoadWeights(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return schema(
            node_id="UltraGenLoadWeights",
            display_name="UltraGen Load Weights (checkpoint mode)",
            category="UltraGen/weights",
            search_aliases=("ultragen checkpoint", "ultragen weights", "hierarchical attention"),
            description="Run the UltraGen authors' published model: local windows, a hierarchical branch and a "
                        "compressed global branch with timestep gates in every block but the first and last "
                        "three. Connect the Wan2.1-T2V-1.3B model; sample at 1920x1088.",
            inputs=[
                io.Model.Input("model", tooltip="Wan2.1-T2V-1.3B from Load Diffusion Model (the UltraGen .ckpt itself, "
                                                "its safetensors conversion, or the stock 1.3B model). Do not apply "
                                                "UltraGen Apply to it: the checkpoint brings its own attention."),
                io.Combo.Input("weights", options=weight_files(),
                               tooltip="UltraGen checkpoint (.ckpt / .pt / .pth pickles are loaded weights-only; "
                                       ".safetensors) from models/ultragen or models/diffusion_models. Full DiT or "
                                       "only the extra keys ('python -m ultragen_core.convert' writes either). The "
                                       "list shows every diffusion model; a plain Wan file is refused when queued."),
            ],
            outputs=[io.Model.Output(display_name="model",
                                     tooltip="A patched copy of the model running the UltraGen checkpoint."),
                     io.String.Output("report", display_name="report",
                                      tooltip="What was loaded: blocks, parameters, which base weights came from "
                                              "the file, missing / unexpected keys.")],
        )

    @classmethod
    def validate_inputs(cls, weights: str | None = None) -> bool | str:
        # Names only weights: ComfyUI's own list check of it is off, so own_check re-does it (schema.py).
        return own_check(cls, "weights", weights, weights_problem)

    @classmethod
    def execute(cls, model, weights: str) -> io.NodeOutput:
        patched, report = load_weights(model, find(weights), patcher_factory=comfy.model_patcher.ModelPatcher)
        log.info("%s", report)
        return io.NodeOutput(patched, report)
