"""The Wan family (Wan 2.1 / 2.2 ``WanModel`` and its variants): one folder, claimed by the ``WAN`` entry of
:mod:`ultragen_core.families.registry`, which imports these modules on use.

- :mod:`.wan`: the patch of UltraGen Apply (dual-branch self-attention, the diffusion-model wrapper that
  finds each call's token grid, the memory plan);
- :mod:`.wan_block`: a Wan block streamed in chunks of tokens, and the behavioural check that decides
  whether a block class may stream;
- :mod:`.wan_proxy`: proxy guidance (a native-size latent as extra tokens);
- :mod:`.wan_split`: one call shared out over several GPUs by windows;
- :mod:`.wan_ultragen`: checkpoint mode (the published UltraGen weights on a Wan2.1-T2V model; the weight
  files themselves are read by :mod:`ultragen_core.checkpoint`).

Nodes and bench/ reach these through :mod:`ultragen_core.api` only.
"""
