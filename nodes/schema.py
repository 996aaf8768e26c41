"""One place that builds the pack's io.Schema, passing only what the running ComfyUI supports."""
from __future__ import annotations

import inspect

from comfy_api.latest import io

# search_aliases came to io.Schema after ComfyUI 0.3.64; older versions would refuse the keyword.
SUPPORTS_SEARCH_ALIASES = "search_aliases" in inspect.signature(io.Schema).parameters

# Words users type in node search that no node name contains; every UltraGen node answers to them.
PACK_ALIASES = ("ultragen", "4k video", "1080p video", "high resolution video")


def schema(*, search_aliases: tuple[str, ...] = (), **kwargs) -> io.Schema:
    """io.Schema(**kwargs), plus the pack's and the node's search aliases where ComfyUI supports them."""
    if SUPPORTS_SEARCH_ALIASES:
        kwargs["search_aliases"] = list(dict.fromkeys((*search_aliases, *PACK_ALIASES)))
    return io.Schema(**kwargs)
