"""UltraGenAttentionSettings: the window / global-branch settings, as a custom socket."""
from __future__ import annotations

from comfy_api.latest import io

from ..ultragen_core.config import FUSIONS, SHIFTS, AttentionSettings, parse_block_list
from ..ultragen_core.models import NATIVE_RESOLUTIONS
from ..ultragen_core.presets import PRESETS

AttentionSettingsType = io.Custom("ULTRAGEN_ATTENTION_SETTINGS")


def _settings(window_t, window_h, window_w, shift, global_branch, global_compression, fusion, global_strength,
              full_attention_blocks, start_percent, end_percent, preset="quality",
              native_resolution="auto") -> AttentionSettings:
    return AttentionSettings(
        window=(window_t, window_h, window_w), shift=shift, global_branch=global_branch,
        global_compression=global_compression, fusion=fusion, global_strength=global_strength,
        full_attention_blocks=parse_block_list(full_attention_blocks),
        start_percent=start_percent, end_percent=end_percent, preset=preset,
        native_resolution=native_resolution)


NAMES = ("window_t", "window_h", "window_w", "shift", "global_branch", "global_compression", "fusion",
         "global_strength", "full_attention_blocks", "start_percent", "end_percent")


class UltraGenAttentionSettings(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        auto = (" 0 = automatic: the model's native training size, balanced over the grid (preset quality), "
                "or about a third of it (preset fast).")
        return io.Schema(
            node_id="UltraGenAttentionSettings",
            display_name="UltraGen Attention Settings",
            category="UltraGen/attention",
            description="Settings of the dual-branch attention: local windows for detail plus a global "
                        "branch over pooled tokens for consistency. Connect to UltraGen Apply.",
            inputs=[
                io.Int.Input("window_t", default=0, min=0, max=1024,
                             tooltip="Window length in latent frames (Wan: 4 video frames each)." + auto),
                io.Int.Input("window_h", default=0, min=0, max=4096,
                             tooltip="Window height in tokens (Wan: 16 pixels each)." + auto),
                io.Int.Input("window_w", default=0, min=0, max=4096,
                             tooltip="Window width in tokens (Wan: 16 pixels each)." + auto),
                io.Combo.Input("shift", options=list(SHIFTS), default="auto",
                               tooltip="alternate: odd blocks move the window borders by half a window, so "
                                       "information crosses borders. none: fixed windows (slightly faster). "
                                       "auto: alternate with preset quality, none with preset fast."),
                io.Boolean.Input("global_branch", default=True, label_on="on", label_off="off",
                                 tooltip="Add attention over spatially pooled tokens of the whole video, "
                                         "for overall consistency. Off requires fusion 'local_only'."),
                io.Int.Input("global_compression", default=0, min=0, max=64,
                             tooltip="Pooling factor of the global branch (p x p tokens become one). "
                                     "0 = automatic: the pooled grid is about the native grid. "
                                     "Applies only when global_branch is on."),
                io.Combo.Input("fusion", options=list(FUSIONS), default="band",
                               tooltip="band: the global branch replaces the low frequencies of the window "
                                       "output. gate: a plain mix. local_only: windows alone (global_branch off)."),
                io.Float.Input("global_strength", default=1.0, min=0.0, max=1.0, step=0.05,
                               tooltip="Weight of the global branch in the fusion (band / gate only)."),
                io.String.Input("full_attention_blocks", default="",
                                tooltip="Blocks that keep full attention, comma separated, negative counts "
                                        "from the end, e.g. \"0,1,-1\". Full attention is quadratic: each "
                                        "such block costs far more at 4K. Empty = none."),
                io.Float.Input("start_percent", default=0.0, min=0.0, max=1.0, step=0.01,
                               tooltip="Part of sampling (0 = first step) from which the patch is active; "
                                       "before it the model uses full attention."),
                io.Float.Input("end_percent", default=1.0, min=0.0, max=1.0, step=0.01,
                               tooltip="Part of sampling (1 = last step) after which full attention is used again."),
                # last, so that workflows saved before it existed keep their widget values in place
                io.Combo.Input("preset", options=list(PRESETS), default="quality", optional=True,
                               tooltip="What the automatic settings (windows of 0, shift auto) become. quality: "
                                       "windows of the model's native size. fast: a third of the native frames "
                                       "and 3/8 of its height and width, no shift (Wan 14B at 4K: attention "
                                       "about 14x faster than quality, a sampling step about 3x faster)."),
                io.Combo.Input("native_resolution", options=list(NATIVE_RESOLUTIONS), default="auto", optional=True,
                               tooltip="The size the model was trained at, which sets the automatic windows. "
                                       "auto: from the model (Wan 2.1 1.3B 832x480, 14B and 2.2 A14B 1280x720, "
                                       "2.2 5B 1280x704). The weights cannot tell Wan 2.1 I2V-14B-480P from the "
                                       "720P model: pick 480p for it. The log line of each run says which was used."),
            ],
            outputs=[AttentionSettingsType.Output(display_name="settings",
                                                  tooltip="Connect to UltraGen Apply.")],
        )

    @classmethod
    def validate_inputs(cls, **kwargs) -> bool | str:
        try:
            values = {k: kwargs[k] for k in NAMES}
        except KeyError:
            return True  # an input comes from a link; execute() checks it
        values["preset"] = kwargs.get("preset") or "quality"
        values["native_resolution"] = kwargs.get("native_resolution") or "auto"
        try:
            _settings(**values)
        except ValueError as e:
            return str(e)
        return True

    @classmethod
    def execute(cls, window_t, window_h, window_w, shift, global_branch, global_compression, fusion,
                global_strength, full_attention_blocks, start_percent, end_percent, preset="quality",
                native_resolution="auto") -> io.NodeOutput:
        return io.NodeOutput(_settings(window_t, window_h, window_w, shift, global_branch, global_compression,
                                       fusion, global_strength, full_attention_blocks, start_percent, end_percent,
                                       preset or "quality", native_resolution or "auto"))
