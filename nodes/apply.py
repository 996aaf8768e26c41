"""UltraGenApply: patch a loaded model's self-attention with the dual-branch op."""
from __future__ import annotations

from comfy_api.latest import io

from ..ultragen_core.api import apply_attention
from ..ultragen_core.config import AttentionSettings
from .attention_settings import AttentionSettingsType
from .schema import schema


class UltraGenApply(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return schema(
            node_id="UltraGenApply",
            display_name="UltraGen Apply",
            category="UltraGen/attention",
            search_aliases=("window attention", "dual branch attention", "hierarchical attention",
                            "sparse attention", "wan 4k", "patch attention"),
            description="Replace full self-attention with dual-branch (local windows + pooled global) attention "
                        "for native 1080p / 2K / 4K sampling. The input model is left unchanged.",
            inputs=[
                io.Model.Input("model", tooltip="A Wan 2.1 / 2.2 model (T2V, I2V, TI2V-5B, an A14B expert, VACE). "
                                                "For Wan2.2-A14B, patch both the high- and the low-noise model."),
                AttentionSettingsType.Input("settings", optional=True,
                                            tooltip="From UltraGen Attention Settings; left empty = automatic defaults."),
            ],
            outputs=[io.Model.Output(tooltip="The patched copy of the model.")],
        )

    @classmethod
    def execute(cls, model, settings: AttentionSettings | None = None) -> io.NodeOutput:
        if settings is not None and not isinstance(settings, AttentionSettings):
            raise TypeError(f"UltraGen Apply: settings must come from UltraGen Attention Settings, got a "
                            f"{type(settings).__name__} ({str(settings)[:80]}). Connect the settings output of an "
                            "UltraGen Attention Settings node, or leave the input empty for automatic settings.")
        return io.NodeOutput(apply_attention(model, settings or AttentionSettings()))
