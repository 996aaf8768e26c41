"""UltraGenCompare: two videos side by side (or as a split wipe) plus a quality / cost report."""
from __future__ import annotations

import logging

import comfy.model_management
import comfy.utils
from comfy_api.latest import io, ui

from ..ultragen_core.compare import LAYOUTS, LENGTH_MODES, SIZE_MODES, Cost, compare
from .schema import schema

log = logging.getLogger(__name__)


def _cost_inputs(branch: str, label: str) -> list[io.Input]:
    return [
        io.Float.Input(f"wall_time_{branch}", default=0.0, min=0.0, max=1e7, step=0.1, optional=True,
                       tooltip=f"Seconds it took to make video {label} (sampling + decode + upscale), shown in the "
                               "report next to the quality numbers. 0 = not given."),
        io.Float.Input(f"peak_vram_{branch}", default=0.0, min=0.0, max=4096.0, step=0.1, optional=True,
                       tooltip=f"Peak GPU memory in GB while making video {label}. 0 = not given."),
    ]


class UltraGenCompare(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return schema(
            node_id="UltraGenCompare",
            display_name="UltraGen Compare",
            category="UltraGen/utils",
            search_aliases=("native vs upscaled", "side by side", "video comparison"),
            description="Compare two videos (e.g. native 4K vs. 720p + upscale): aligns size and length, lays "
                        "them out side by side or as a split wipe, and reports sharpness, high-frequency energy, "
                        "temporal flicker (optical-flow warp error) and PSNR / SSIM between them.",
            inputs=[
                io.Image.Input("video_a", tooltip="First video (IMAGE batch, one image per frame), e.g. native 4K."),
                io.Image.Input("video_b", tooltip="Second video (IMAGE batch), e.g. 720p + upscale model."),
                io.Combo.Input("layout", options=list(LAYOUTS), default="side_by_side",
                               tooltip="side_by_side: A left, B right (twice as wide). stacked: A above B. "
                                       "split_wipe: one frame size, A left of a split line that sweeps across."),
                io.Combo.Input("size_mode", options=list(SIZE_MODES), default="first",
                               tooltip="Size both videos are brought to (bicubic, antialiased) before measuring: "
                                       "that of video_a (first), video_b (second), or the larger / smaller one."),
                io.Combo.Input("length_mode", options=list(LENGTH_MODES), default="trim",
                               tooltip="trim: compare the first frames both videos have. stretch: resample "
                                       "video_b to video_a's length (different frame rates)."),
                io.String.Input("label_a", default="A", tooltip="Name of video_a in the picture and the report."),
                io.String.Input("label_b", default="B", tooltip="Name of video_b in the picture and the report."),
                io.Int.Input("flow_max_side", default=512, min=0, max=8192,
                             tooltip="Flicker is measured on frames scaled to at most this long side (optical "
                                     "flow at 4K is slow); 0 = full size. Sharpness, PSNR and SSIM always use "
                                     "the full aligned size."),
                *_cost_inputs("a", "A"),
                *_cost_inputs("b", "B"),
            ],
            outputs=[
                io.Image.Output(display_name="comparison", tooltip="The two videos in one, with labels."),
                io.String.Output(display_name="report", tooltip="Metrics per video and between them, as text."),
            ],
        )

    # No validate_inputs: the combos and the min / max of every number are ComfyUI's own checks (each bad value
    # reported once, at its input). NaN passes them; the core refuses it, naming the input.

    @classmethod
    def execute(cls, video_a, video_b, layout, size_mode, length_mode, label_a, label_b, flow_max_side,
                wall_time_a=0.0, peak_vram_a=0.0, wall_time_b=0.0, peak_vram_b=0.0) -> io.NodeOutput:
        frames = min(video_a.shape[0], video_b.shape[0]) if length_mode == "trim" else video_a.shape[0]
        bar = comfy.utils.ProgressBar(frames)

        def on_frame():
            comfy.model_management.throw_exception_if_processing_interrupted()
            bar.update(1)

        video, result = compare(video_a, video_b, layout=layout, size_mode=size_mode, length_mode=length_mode,
                                labels=(label_a, label_b),
                                costs=(Cost(wall_time_a, peak_vram_a), Cost(wall_time_b, peak_vram_b)),
                                flow_max_side=flow_max_side, on_frame=on_frame)
        report = result.report()
        log.info("[UltraGen] compare:\n%s", report.split("\n\n")[0])
        if any(result.unusable):
            log.warning("[UltraGen] compare: frames with NaN or infinite pixels (A: %s, B: %s) are left out of the "
                        "metrics; such pixels usually come from a NaN latent (sampler or weights).",
                        list(result.unusable[0]), list(result.unusable[1]))
        return io.NodeOutput(video, report, ui=ui.PreviewText(report))
