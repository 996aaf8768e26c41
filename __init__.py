"""UltraGen for ComfyUI: native 1080p / 2K / 4K video with dual-branch hierarchical attention.

ComfyUI loads this package and calls ``comfy_entrypoint``. Importing it without ComfyUI works (the
core in ``ultragen_core`` has no ComfyUI import); only the nodes need ComfyUI.
"""
try:
    from comfy_api.latest import ComfyExtension  # noqa: F401  (present when ComfyUI runs us)
except ImportError:  # tools and tests without ComfyUI
    ComfyExtension = None


async def comfy_entrypoint():
    if ComfyExtension is None:
        raise ImportError("UltraGen's nodes need ComfyUI (comfy_api.latest was not found).")
    from .nodes import UltraGenExtension
    return UltraGenExtension()
