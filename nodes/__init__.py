"""The pack's V3 nodes: each a schema plus one call into ultragen_core."""
from comfy_api.latest import ComfyExtension, io

from .apply import UltraGenApply
from .attention_settings import UltraGenAttentionSettings

NODES: list[type[io.ComfyNode]] = [
    UltraGenAttentionSettings,
    UltraGenApply,
]


class UltraGenExtension(ComfyExtension):
    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        return list(NODES)
