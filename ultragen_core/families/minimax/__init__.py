"""The MiniMax-H3 family (ComfyUI's ``MiniMaxH3Model``, 33B audio + video): one folder, claimed by the ``MINIMAX``
entry of :mod:`ultragen_core.families.registry`, which imports these modules on use.

- :mod:`.minimax`: the patch of UltraGen Apply (self-attention patches, the diffusion-model wrapper);
- :mod:`.minimax_attention`: the module's self-attention rebuilt for any rows, windowed, and its check;
- :mod:`.positions`: the RoPE positions windows run at (a native frame's; the documented choice).

Nodes and bench/ reach these through :mod:`ultragen_core.api` only.
"""
