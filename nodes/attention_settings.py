"""UltraGenAttentionSettings: the window / global-branch settings, as a custom socket."""
from __future__ import annotations

import logging

from comfy_api.latest import io

from ..ultragen_core.api import NATIVE_RESOLUTIONS
from ..ultragen_core.config import FUSIONS, SHIFTS, AttentionSettings, parse_block_list
from ..ultragen_core.presets import PRESETS
from .schema import own_check, schema, unnamed

log = logging.getLogger(__name__)
AttentionSettingsType = io.Custom("ULTRAGEN_ATTENTION_SETTINGS")

_AUTO = (" 0 = automatic: the model's native training size, balanced over the grid (preset quality), "
         "or about a third of it (preset fast).")

# The node's inputs, in their saved-workflow order (never reorder or rename: workflows store widget
# values by position). Each single-value rule is the widget's own min / max / options, which ComfyUI
# checks and reports once, at that input.
INPUTS = (
    io.Int.Input("window_t", default=0, min=0, max=1024,
                 tooltip="Window length in latent frames (Wan: 4 video frames each)." + _AUTO),
    io.Int.Input("window_h", default=0, min=0, max=4096,
                 tooltip="Window height in tokens (Wan: 16 pixels each)." + _AUTO),
    io.Int.Input("window_w", default=0, min=0, max=4096,
                 tooltip="Window width in tokens (Wan: 16 pixels each)." + _AUTO),
    io.Combo.Input("shift", options=list(SHIFTS), default="auto",
                   tooltip="alternate: odd blocks move the window borders by half a window, so information "
                           "crosses borders. none: fixed windows (slightly faster). auto: alternate with preset "
                           "quality, none with preset fast."),
    io.Boolean.Input("global_branch", default=True, label_on="on", label_off="off",
                     tooltip="Add attention over spatially pooled tokens of the whole video, for overall "
                             "consistency. Off = windows only, whatever fusion says."),
    io.Int.Input("global_compression", default=0, min=0, max=64,
                 tooltip="Pooling factor of the global branch (p x p tokens become one). 0 = automatic: the "
                         "pooled grid is about the native grid. Applies only when the global branch runs."),
    io.Combo.Input("fusion", options=list(FUSIONS), default="band",
                   tooltip="band: the global branch replaces the low frequencies of the window output. gate: a "
                           "plain mix. local_only: windows alone (the global branch is not computed, as with "
                           "global_branch off)."),
    io.Float.Input("global_strength", default=1.0, min=0.0, max=1.0, step=0.05,
                   tooltip="Weight of the global branch in the fusion (band / gate only). band: 1 = the global "
                           "branch gives all of the low frequencies. gate: (1 - w) windows + w global, so 1 = the "
                           "pooled global branch alone, blurred, the windows' detail dropped: use 0.5 or less."),
    io.String.Input("full_attention_blocks", default="",
                    tooltip="Blocks that keep full attention, comma separated, negative counts from the end, "
                            "e.g. \"0,1,-1\". Full attention is quadratic: each such block costs far more at 4K. "
                            "Empty = none."),
    io.Float.Input("start_percent", default=0.0, min=0.0, max=1.0, step=0.01,
                   tooltip="Part of sampling (0 = first step) from which the patch is active; before it the "
                           "model uses full attention. Must be below end_percent."),
    io.Float.Input("end_percent", default=1.0, min=0.0, max=1.0, step=0.01,
                   tooltip="Part of sampling (1 = last step) after which full attention is used again. Must be "
                           "above start_percent."),
    # optional and last, so that workflows saved before they existed keep their widget values in place
    io.Combo.Input("preset", options=list(PRESETS), default="quality", optional=True,
                   tooltip="What the automatic settings (windows of 0, shift auto) become. quality: windows of the "
                           "model's native size. fast: a third of the native frames and 3/8 of its height and "
                           "width, no shift (Wan 14B at 4K: attention about 14x faster than quality, a sampling "
                           "step about 3x faster)."),
    io.Combo.Input("native_resolution", options=list(NATIVE_RESOLUTIONS), default="auto", optional=True,
                   tooltip="The size the model was trained at, which sets the automatic windows. auto: from the "
                           "model (Wan 2.1 1.3B 832x480, 14B and 2.2 A14B 1280x720, 2.2 5B 1280x704). The weights "
                           "cannot tell Wan 2.1 I2V-14B-480P from the 720P model: pick 480p for it. The log line "
                           "of each run says which was used."),
    io.Float.Input("memory_budget_gb", default=0.0, min=0.0, max=1024.0, step=0.5, optional=True,
                   tooltip="VRAM in GB the sampling may use (your card's size, or less to leave room for other "
                           "programs). 0 = automatic: ComfyUI's free VRAM (which --reserve-vram lowers). Below "
                           "what the whole video needs at once, the patch works on chunks of tokens (q / k / v of "
                           "a few windows, the feed-forward of a few rows): the same result, less memory. Each "
                           "run's log line says the chunk size."),
)
NAMES = tuple(i.id for i in INPUTS)


def _settings(window_t, window_h, window_w, full_attention_blocks, preset=None, native_resolution=None,
              memory_budget_gb=None, **rest) -> AttentionSettings:
    """AttentionSettings from the node's input values (keyword arguments named as in INPUTS)."""
    return AttentionSettings(window=(window_t, window_h, window_w),
                             full_attention_blocks=parse_block_list(full_attention_blocks),
                             preset="quality" if preset is None else preset,
                             native_resolution="auto" if native_resolution is None else native_resolution,
                             memory_budget_gb=0.0 if memory_budget_gb is None else float(memory_budget_gb), **rest)


def block_list_problem(text: str) -> str | None:
    """Why full_attention_blocks cannot be read, without the input's name (ComfyUI shows it); or None."""
    try:
        parse_block_list(text)
    except ValueError as e:
        return unnamed(str(e), "full_attention_blocks")
    return None


class UltraGenAttentionSettings(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return schema(
            node_id="UltraGenAttentionSettings",
            display_name="UltraGen Attention Settings",
            category="UltraGen/attention",
            description="Settings of the dual-branch attention: local windows for detail plus a global "
                        "branch over pooled tokens for consistency. Connect to UltraGen Apply.",
            search_aliases=("window attention", "dual branch attention", "hierarchical attention",
                            "global local attention", "sliding window"),
            inputs=list(INPUTS),
            outputs=[AttentionSettingsType.Output(display_name="settings",
                                                  tooltip="Connect to UltraGen Apply.")],
        )

    @classmethod
    def validate_inputs(cls, full_attention_blocks: str | None = None) -> bool | str:
        # ComfyUI passes only the inputs named here and reports a message once per named input, so this
        # names only the input whose rule ComfyUI cannot check itself (schema.py). The other widgets keep
        # ComfyUI's own min / max / options checks. start_percent < end_percent involves two inputs: a
        # message here would be repeated under unrelated inputs, so execute() refuses that pair (it runs
        # before sampling, upstream of UltraGen Apply).
        return own_check(cls, "full_attention_blocks", full_attention_blocks, block_list_problem)

    @classmethod
    def execute(cls, **values) -> io.NodeOutput:
        settings = _settings(**values)
        if settings.fusion == "gate" and settings.global_strength >= 1.0 and settings.global_branch:
            log.warning("[UltraGen] fusion gate with global_strength %g: the output is the pooled global branch "
                        "alone, upsampled, and the windows' detail is dropped (gate mixes (1 - w) windows + w "
                        "global). Use global_strength 0.5 or less, or fusion band.", settings.global_strength)
        return io.NodeOutput(settings)
