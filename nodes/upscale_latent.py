"""UltraGenUpscaleLatent: the coarse-to-fine start, a native-size proxy latent resized to the high-resolution
video (Wan's causal first frame kept)."""
from __future__ import annotations

import comfy.model_management
from comfy_api.latest import io

from ..ultragen_core.latent_upscale import (METHODS, SPATIAL_STEP, LatentSize, check_video_latent, length_problem,
                                            size_problem, upscale_video_latent)
from ..ultragen_core.tensor_checks import values_problem
from .schema import own_check, schema

MAX_SIDE = 16384
MAX_FRAMES = 4097


class UltraGenUpscaleLatent(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return schema(
            node_id="UltraGenUpscaleLatent",
            display_name="UltraGen Upscale Latent (coarse to fine)",
            category="UltraGen/latent",
            search_aliases=("upscale video latent", "coarse to fine", "two pass", "hires fix video", "proxy init"),
            description="Start a high-resolution pass from a native-size first pass: the video latent resized to the "
                        "target width, height and length, in space and (for a proxy with fewer frames) in time. "
                        "Wan's causal first latent frame stays frame 0 and is never mixed into later frames; later "
                        "frames are interpolated at their place in the clip's time. Re-noise it with "
                        "KSamplerAdvanced (add_noise enable, start_at_step part-way).",
            inputs=[
                io.Latent.Input("latent", tooltip="The video LATENT of the first pass (the proxy), e.g. 1280x720 for "
                                                  "Wan 14B; Wan 2.1 / 2.2-A14B (16 channels) or Wan 2.2-5B (48)."),
                io.Int.Input("width", default=3840, min=8, max=MAX_SIDE, step=8,
                             tooltip="Target width in pixels: a multiple of 8 (Wan 2.1 VAE) or 16 (Wan 2.2-5B VAE). "
                                     "Ignored when a reference latent is connected."),
                io.Int.Input("height", default=2160, min=8, max=MAX_SIDE, step=8,
                             tooltip="Target height in pixels, as width (e.g. 2160 for Wan 14B 4K, 2176 for the 5B). "
                                     "Ignored when a reference latent is connected."),
                io.Int.Input("length", default=81, min=1, max=MAX_FRAMES, step=4,
                             tooltip="Target video frames, 4n+1 (81 = 5 s at 16 fps). More than the first pass "
                                     "interpolates in time. Ignored when a reference latent is connected."),
                io.Combo.Input("upscale_method", options=list(METHODS), default="bilinear",
                               tooltip="Spatial interpolation: bilinear (smooth, no overshoot), bicubic (sharper, "
                                       "may overshoot), nearest-exact (blocky), area (for shrinking). In time: "
                                       "linear, or nearest for nearest-exact."),
                io.Latent.Input("reference", optional=True,
                                tooltip="Optional: a latent of the target size (e.g. an empty video latent); its "
                                        "frames, height and width replace width / height / length."),
            ],
            outputs=[io.Latent.Output(display_name="latent",
                                      tooltip="The resized latent, to be re-noised and denoised at the target "
                                              "size (KSamplerAdvanced: add_noise enable, start_at_step k of N).")],
        )

    @classmethod
    def validate_inputs(cls, length: int | None = None) -> bool | str:
        # 4n+1 is a rule ComfyUI's min / max / step checks cannot express; naming length turns ComfyUI's own
        # check of it off, so own_check re-does it (schema.py). Width / height depend on the latent's VAE and
        # the output's size on the memory: both are checked when the node runs, before anything is allocated.
        return own_check(cls, "length", length, lambda value: length_problem(value, named=False))

    @classmethod
    def execute(cls, latent, width, height, length, upscale_method, reference=None) -> io.NodeOutput:
        samples = latent["samples"]
        check_video_latent(samples)
        check_values(samples, "latent")
        if reference is not None:
            ref = reference["samples"]
            check_video_latent(ref, "reference latent")
            if ref.shape[1] != samples.shape[1]:
                raise ValueError(f"the reference latent has {ref.shape[1]} channels, the latent {samples.shape[1]}: "
                                 "connect a reference made for the same model's VAE.")
            size = LatentSize(*ref.shape[2:])
        else:
            size = LatentSize.from_pixels(samples.shape[1], width, height, length)
        problem = size_problem(samples.shape[0], samples.shape[1], size, samples.element_size(),
                               comfy.model_management.get_free_memory(samples.device),
                               None if reference is not None else SPATIAL_STEP[samples.shape[1]])
        if problem:
            raise ValueError(f"UltraGen Upscale Latent: {problem}")
        out = {k: v for k, v in latent.items() if k not in ("samples", "noise_mask")}  # a mask of the old size
        out["samples"] = upscale_video_latent(samples, size, upscale_method)
        return io.NodeOutput(out)


def check_values(tensor, what: str) -> None:
    problem = values_problem(tensor, what)
    if problem:
        raise ValueError(f"UltraGen Upscale Latent: {problem}")
