"""The pack's V3 nodes: each a schema plus one call into ultragen_core."""
import comfy.model_management
from comfy_api.latest import ComfyExtension, io

from ..ultragen_core.api import set_free_memory
from .apply import UltraGenApply
from .attention_settings import UltraGenAttentionSettings
from .compare import UltraGenCompare
from .demo import UltraGenDemoDecode, UltraGenDemoLatent, UltraGenDemoModel, UltraGenDemoPrompt
from .load_weights import UltraGenLoadWeights
from .proxy_guidance import UltraGenProxyGuidance
from .resolution import UltraGenResolution
from .split_gpus import UltraGenSplitAcrossGPUs
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
    UltraGenSplitAcrossGPUs,
    UltraGenDemoModel,
    UltraGenDemoPrompt,
    UltraGenDemoLatent,
    UltraGenDemoDecode,
]


class UltraGenExtension(ComfyExtension):
    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        return list(NODES)


def comfy_free_memory(device) -> int:
    """Free VRAM as ComfyUI counts it (the device's and torch's cache), less its reserve (--reserve-vram)."""
    return comfy.model_management.get_free_memory(device) - comfy.model_management.extra_reserved_memory()


set_free_memory(comfy_free_memory)  # the memory budget's automatic mode reads what ComfyUI leaves us
