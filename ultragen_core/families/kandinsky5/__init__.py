"""The Kandinsky 5 family (``comfy.ldm.kandinsky5.model.Kandinsky5``: Video Lite and Video Pro, T2V and I2V): one
folder, claimed by the ``KANDINSKY5`` entry of :mod:`ultragen_core.families.registry`, which imports these modules
on use.

- :mod:`.kandinsky5`: the patch of UltraGen Apply (the visual self-attention of every visual block through the
  generic dual-branch op, the diffusion-model wrapper that finds each call's token grid);
- :mod:`.kandinsky5_attention`: the self-attention module rebuilt from its own parts for any subset of its tokens,
  and the check that the rebuild computes what ComfyUI's forward does (below and above ComfyUI's chunking);
- :mod:`.variants`: which model of the shared class a loaded model is, the refusals, and NABLA sparse attention
  found on the model or in its options (refused: it does not stack with the windows).

Nodes and bench/ reach these through :mod:`ultragen_core.api` only.
"""
