"""UltraGenResolution: a valid width / height / length for a model family, with its token grid and cost."""
from __future__ import annotations

from comfy_api.latest import io, ui

from ..ultragen_core.config import AttentionSettings
from ..ultragen_core.resolution import (FAMILIES, MAX_FRAMES, MAX_SIDE, MIN_SIDE, ORIENTATIONS, ROUNDINGS, TARGETS,
                                        ResolutionRequest, pick_resolution)
from .attention_settings import AttentionSettingsType
from .schema import schema


class UltraGenResolution(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return schema(
            node_id="UltraGenResolution",
            display_name="UltraGen Resolution",
            category="UltraGen/utils",
            search_aliases=("4k resolution", "video size", "token count", "attention cost"),
            description="Pick a target resolution for a model family: returns a width, height and length the "
                        "model's VAE and patch size accept (e.g. 1088 rows, not 1080, for Wan 2.1; 4n+1 frames), "
                        "and reports the token grid and full vs. UltraGen attention cost.",
            inputs=[
                io.Combo.Input("model_family", options=list(FAMILIES), default="Wan 2.1 T2V/I2V 14B",
                               tooltip="The model you sample with. Fixes the pixel step (VAE x patch: 16 px for "
                                       "Wan 2.1 / A14B / HunyuanVideo / HunyuanVideo 1.5, 32 px for Wan 2.2-5B and "
                                       "LTX-Video), the frame step (4n+1; 8n+1 for LTX-Video) and the attention "
                                       "cost."),
                io.Combo.Input("target", options=list(TARGETS), default="1080p (1920x1080)",
                               tooltip="Output resolution. 'custom' uses custom_width / custom_height."),
                io.Combo.Input("orientation", options=list(ORIENTATIONS), default="landscape",
                               tooltip="landscape = wide, portrait = tall (sides swapped), square = the short side "
                                       "both ways. Ignored for target 'custom'."),
                io.Int.Input("frames", default=81, min=1, max=MAX_FRAMES,
                             tooltip="Wanted video length in frames; moved to the nearest count the VAE accepts "
                                     "(81 = 5 s at 16 fps for Wan 2.1; Wan 2.2-5B: 121 at 24 fps)."),
                io.Int.Input("custom_width", default=1920, min=MIN_SIDE, max=MAX_SIDE, step=16,
                             tooltip="Width in pixels, used only when target is 'custom'; rounded to the pixel step "
                                     "(at least one step)."),
                io.Int.Input("custom_height", default=1080, min=MIN_SIDE, max=MAX_SIDE, step=16,
                             tooltip="Height in pixels, used only when target is 'custom'; rounded to the pixel step "
                                     "(at least one step)."),
                io.Combo.Input("rounding", options=list(ROUNDINGS), default="nearest",
                               tooltip="How sizes snap to the pixel step: nearest (ties up, e.g. 1080 -> 1088), "
                                       "up (never smaller than asked), down (never larger; Wan 2.2-5B's own 720p "
                                       "is 1280x704)."),
                AttentionSettingsType.Input("settings", optional=True,
                                            tooltip="Optional UltraGen Attention Settings for the cost estimate; "
                                                    "empty = the automatic defaults UltraGen Apply uses."),
            ],
            outputs=[
                io.Int.Output(display_name="width", tooltip="Width in pixels, valid for the model."),
                io.Int.Output(display_name="height", tooltip="Height in pixels, valid for the model."),
                io.Int.Output(display_name="length", tooltip="Frame count, valid for the model's VAE."),
                io.Int.Output(display_name="tokens", tooltip="Tokens per frame stack (T x H x W of the token grid)."),
                io.String.Output(display_name="report",
                                 tooltip="Token grid and full vs. UltraGen attention cost, as text."),
            ],
        )

    # No validate_inputs: every widget has a single-value rule (a combo, min / max) that ComfyUI checks
    # itself and reports once, at that input. Values arriving through links are checked in the core.

    @classmethod
    def execute(cls, model_family, target, orientation, frames, custom_width, custom_height, rounding,
                settings: AttentionSettings | None = None) -> io.NodeOutput:
        request = ResolutionRequest(family=model_family, target=target, orientation=orientation, frames=frames,
                                    width=custom_width, height=custom_height, rounding=rounding)
        res = pick_resolution(request, settings)
        report = res.report()
        return io.NodeOutput(res.width, res.height, res.frames, res.tokens, report, ui=ui.PreviewText(report))
