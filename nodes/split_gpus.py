"""UltraGenSplitAcrossGPUs: share every model call out over several GPUs by windows (ComfyUI 0.33's
multi-GPU clones and worker threads)."""
from __future__ import annotations

import comfy.model_management
from comfy_api.latest import io

from ..ultragen_core.api import ComfyMultiGPU, enable_split
from .schema import schema

MAX_GPUS = 8


class UltraGenSplitAcrossGPUs(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return schema(
            node_id="UltraGenSplitAcrossGPUs",
            display_name="UltraGen Split Video Across GPUs",
            category="UltraGen/multi-GPU",
            search_aliases=("multi gpu", "multigpu", "several gpus", "parallel", "window split", "sequence parallel"),
            description="Sample one video on several GPUs: every model call is shared out by attention windows "
                        "(each GPU computes its windows and their tokens through every block; the GPUs swap rows "
                        "after each block). Conditionings stay together, so this replaces ComfyUI's MultiGPU CFG "
                        "Split for an UltraGen model. Needs UltraGen Apply on the model and ComfyUI 0.33 or later.",
            inputs=[
                io.Model.Input("model", tooltip="A model patched by UltraGen Apply (before or after this node)."),
                io.Int.Input("gpus", default=2, min=2, max=MAX_GPUS,
                             tooltip="How many GPUs sample the video, the model's own first. Each extra GPU holds a "
                                     "copy of the model (loaded by ComfyUI)."),
                io.Int.Input("cfg_groups", default=1, min=1, max=MAX_GPUS, optional=True,
                             tooltip="1: every model call is split over all GPUs. 2 (CFG above 1, 4 or more GPUs): "
                                     "cond and uncond run at the same time on two halves of the GPUs, each call "
                                     "split inside its half (ComfyUI's CFG split plus the window split). Must "
                                     "divide gpus. Steps with one conditioning use all GPUs."),
            ],
            outputs=[io.Model.Output(tooltip="The model, with a copy on each extra GPU.")],
        )

    # No validate_inputs: gpus and cfg_groups each keep ComfyUI's own min / max check (one message, at the
    # input). "cfg_groups divides gpus" is about both: refused when the node runs (before any copy is made),
    # as a message here would be shown under both inputs.

    @classmethod
    def execute(cls, model, gpus: int, cfg_groups: int = 1) -> io.NodeOutput:
        problem = group_problem(gpus, cfg_groups)
        if problem:
            raise ValueError(problem)
        try:
            import comfy.multigpu as multigpu
        except ImportError:
            multigpu = None
        if multigpu is None or not hasattr(model, "deepclone_multigpu"):
            raise RuntimeError("UltraGen Split Video Across GPUs needs ComfyUI's multi-GPU engine (comfy.multigpu, "
                               "ComfyUI 0.33 or later); this ComfyUI has none. Update ComfyUI, or remove the node "
                               "to sample on one GPU.")
        devices = comfy.model_management.get_all_torch_devices(exclude_current=False)
        if len(devices) < 2:
            names = ", ".join(str(d) for d in devices) or "none"
            raise ValueError(f"UltraGen Split Video Across GPUs: ComfyUI sees {len(devices)} device ({names}); the "
                             "split needs at least 2 GPUs. Remove the node to sample on this device.")
        if gpus > len(devices):
            raise ValueError(f"UltraGen Split Video Across GPUs: gpus is {gpus}, but ComfyUI sees {len(devices)} "
                             f"GPUs. Set gpus to {len(devices)} or less.")
        return io.NodeOutput(enable_split(multigpu.create_multigpu_deepclones(model, gpus), ComfyMultiGPU(cfg_groups)))


def group_problem(gpus: int, cfg_groups: int) -> str | None:
    """Why ``cfg_groups`` groups of ``gpus`` GPUs cannot be made (each within the widgets' limits), or None."""
    if not (2 <= gpus <= MAX_GPUS and 1 <= cfg_groups <= MAX_GPUS):
        return (f"UltraGen Split Video Across GPUs: gpus must be 2 to {MAX_GPUS} and cfg_groups 1 to {MAX_GPUS}, got "
                f"gpus {gpus} and cfg_groups {cfg_groups}.")
    if gpus % cfg_groups:
        return (f"UltraGen Split Video Across GPUs: cfg_groups is {cfg_groups}, which does not divide gpus ({gpus}). "
                f"Use 1, or a divisor of {gpus} (2 for cond and uncond on two halves).")
    return None
