"""The LTX family (``comfy.ldm.lightricks``: LTX-Video 0.9.x ``LTXVModel``, LTX-2 ``LTXAVModel``): one folder,
claimed by the ``LTX`` entry of :mod:`ultragen_core.families.registry`, which imports these modules on use.

- :mod:`.ltx`: the patch of UltraGen Apply (the video self-attention ``attn1`` of every block through the
  generic dual-branch op, the diffusion-model wrapper that finds each call's token grid and guide tokens);
- :mod:`.ltx_attention`: the attention module rebuilt from its own parts for any subset of tokens, and the
  check that the rebuild computes what ComfyUI's forward does;
- :mod:`.ltx_guides`: ComfyUI's guide attention mask (guide strength, spatial guide masks) carried over to the
  keys each window and each guide query sees.

Nodes and bench/ reach these through :mod:`ultragen_core.api` only.
"""
