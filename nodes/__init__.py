"""The pack's V3 nodes: each a schema plus one call into ultragen_core."""
from comfy_api.latest import ComfyExtension, io

from .apply import UltraGenApply
from .attention_settings import UltraGenAttentionSettings
from .compare import UltraGenCompare
from .load_weights import UltraGenLoadWeights
from .proxy_guidance import UltraGenProxyGuidance
from .resolution import UltraGenResolution
from .tiled_decode import UltraGenTiledVAEDecode
from .upscale_latent import UltraGenUpscaleLatent

NODES: list[type[io.ComfyNode]] = [
    UltraGenAttentionSettings,
    UltraGenApply,
    UltraGenResolution,
    UltraGenCompare,
    UltraGenTiledVAEDecode,
    UltraGenLoadWeights,
    UltraGenProxyGuidance,
    UltraGenUpscaleLatent,
]


class UltraGenExtension(ComfyExtension):
    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        return list(NODES)
