"""UltraGenProxyGuidance: a native-size first pass guides the high-resolution pass (AtlaVid-style)."""
from __future__ import annotations

from comfy_api.latest import io

from ..ultragen_core.api import PROXY_MODES as MODES
from ..ultragen_core.api import ProxySettings, apply_proxy_guidance, proxy_problem
from .schema import schema

DEFAULTS = ProxySettings()  # the node's defaults are the core's (docs/FIDELITY.md, run 58)


class UltraGenProxyGuidance(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return schema(
            node_id="UltraGenProxyGuidance",
            display_name="UltraGen Proxy Guidance",
            category="UltraGen/attention",
            search_aliases=("proxy", "atlavid", "coarse to fine", "two pass", "low res guide"),
            description="Guide a high-resolution sampling pass with a native-size latent of the same video (a "
                        "first pass): every window also attends to the proxy tokens around it, so objects keep "
                        "one layout across windows. For Wan T2V, I2V and TI2V models.",
            inputs=[
                io.Model.Input("model", tooltip="A Wan model, with or without UltraGen Apply (without: automatic "
                                                "windows)."),
                io.Latent.Input("proxy", tooltip="The LATENT of a first pass at the model's native size (fewer "
                                                 "frames allowed), same prompt and model: one item for the whole "
                                                 "batch, or one per video item."),
                io.Float.Input("strength", default=DEFAULTS.strength, min=0.0, max=1.0, step=0.05,
                               tooltip="1 = windows attend to their own and their proxy tokens jointly (one "
                                       "attention call); 0 = no guidance (the model unchanged); between: a mix "
                                       "of the two, which costs a second attention call per window."),
                io.Combo.Input("neighbourhood", options=list(MODES), default=DEFAULTS.mode,
                               tooltip="neighbourhood: each window sees the proxy cells under it plus a margin "
                                       "(bounded cost at 4K); all: every proxy token (costly at 4K)."),
                io.Int.Input("radius_frames", default=DEFAULTS.radius[0], min=0, max=64,
                             tooltip="Margin of the neighbourhood in proxy latent frames."),
                io.Int.Input("radius_cells", default=DEFAULTS.radius[1], min=0, max=256,
                             tooltip="Margin of the neighbourhood in proxy tokens, up / down / left / right. A "
                                     "wider margin shows each window more of the scene, so it draws fewer "
                                     "objects twice (4: the fidelity bench's choice at 3x; docs/FIDELITY.md)."),
                io.Int.Input("seed", default=DEFAULTS.seed, min=0, max=2**31 - 1,
                             tooltip="Seed of the noise the proxy is re-noised with at each step."),
            ],
            outputs=[io.Model.Output(display_name="model", tooltip="The guided copy of the model.")],
        )

    @classmethod
    def execute(cls, model, proxy, strength, neighbourhood, radius_frames, radius_cells, seed) -> io.NodeOutput:
        settings = ProxySettings(strength, neighbourhood, (radius_frames, radius_cells, radius_cells), seed)
        patch = getattr(model.get_model_object("diffusion_model"), "patch_size", (1, 1, 1))
        problem = proxy_problem(proxy["samples"], tuple(patch))
        if problem:
            raise ValueError(f"UltraGen Proxy Guidance: {problem}")
        return io.NodeOutput(apply_proxy_guidance(model, proxy["samples"], settings))
