"""The HunyuanVideo family (HunyuanVideo 1.5 and the original T2V on ComfyUI's ``HunyuanVideo`` class): one
folder, claimed by the ``HUNYUAN_VIDEO`` entry of :mod:`ultragen_core.families.registry`, which imports these
modules on use.

- :mod:`.variants`: which model of the shared class a loaded model is (from its config), the refusals;
- :mod:`.hunyuan_video`: the patch of UltraGen Apply (block patches, the diffusion-model wrapper);
- :mod:`.blocks`: the Flux-style double / single blocks recomputed from their own modules, and the check that
  they equal the block's own forward;
- :mod:`.text_mask`: ComfyUI's additive text mask as the text keys to keep.

Nodes and bench/ reach these through :mod:`ultragen_core.api` only.
"""
