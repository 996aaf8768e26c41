"""Model families behind one registry (:mod:`.registry`): which diffusion-model classes each claims, its
native sizes / VAE / patch facts, and what it can do. Nodes and bench/ reach them through
:mod:`ultragen_core.api` only."""
