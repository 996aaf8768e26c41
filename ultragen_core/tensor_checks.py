"""Checks of the values a LATENT / IMAGE input holds, shared by every node and family that takes one."""
from __future__ import annotations

import torch


def nonfinite_count(tensor: torch.Tensor, chunk: int = 2**24) -> int:
    """How many NaN or infinite values ``tensor`` holds, counted in chunks (no full-size mask of a 4K video)."""
    if not tensor.is_floating_point():
        return 0
    flat = tensor.reshape(-1)
    return sum(int((~torch.isfinite(part)).sum()) for part in flat.split(chunk))


def values_problem(tensor: torch.Tensor, what: str) -> str | None:
    """Why the values of a LATENT / IMAGE input cannot be used (none at all, NaN or infinite ones), or None."""
    if tensor.numel() == 0:
        return f"the {what} is empty (shape {tuple(tensor.shape)}): connect one with at least one frame and pixel."
    bad = nonfinite_count(tensor)
    if bad:
        return (f"the {what} holds {bad:,} NaN or infinite value(s) of {tensor.numel():,}: whatever uses it would be "
                "NaN. The node that made it failed (a diverged sampler, a broken VAE or file): fix that one first.")
    return None
