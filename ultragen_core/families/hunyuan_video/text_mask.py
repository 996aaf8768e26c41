"""HunyuanVideo's additive text mask, turned into the text keys to keep.

ComfyUI turns the text encoder's 0 / 1 padding mask into an additive mask over the joint sequence
[text; video]: 0 for a kept key, ``-finfo(dtype).max`` for a padding text key, 0 for every video key, one row
for every query (shape (1, 1, E+N) in ComfyUI 0.33). Adding ``-max`` before the softmax gives a padding key a
weight of exactly 0, so attending without the padding keys is the same attention: the windows and the text
queries see the kept text keys only, and no mask reaches the attention kernels.

Anything else (a soft mask with other values, a mask on video keys, a mask per query) is not a padding
mask; :func:`kept_text_keys` says so and the block keeps ComfyUI's full attention.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class KeptKeys:
    """Which text keys each batch item attends to.

    per_item: one index tensor (E',) per batch item (into the text tokens), or None: every text key;
    shared: True when every batch item keeps the same keys (then per_item holds one entry, for all).
    """

    per_item: tuple[torch.Tensor, ...] | None
    shared: bool = True

    def for_item(self, b: int) -> torch.Tensor | None:
        if self.per_item is None:
            return None
        return self.per_item[0 if self.shared else b]


EVERY_KEY = KeptKeys(None)


def kept_text_keys(mask, batch: int, text_tokens: int, total: int) -> KeptKeys | str:
    """The text keys to keep under ComfyUI's additive ``mask`` over [text; video] (``total`` keys, the first
    ``text_tokens`` text), or why the mask is not a padding mask of text keys (a message for the log).

    mask: None, or a float tensor whose last dimension is the keys and whose other dimensions are 1 except a
    leading batch dimension (1 or ``batch``), e.g. (1, 1, E+N) or (B, 1, E+N)."""
    if mask is None:
        return EVERY_KEY
    if not torch.is_tensor(mask) or not torch.is_floating_point(mask):
        return f"the attention mask is not an additive float mask ({type(mask).__name__}, {getattr(mask, 'dtype', '')})"
    if mask.shape[-1] != total:
        return f"the attention mask covers {mask.shape[-1]} keys, the sequence has {total}"
    if mask.ndim < 1 or any(s != 1 for s in mask.shape[1:-1]) or mask.ndim > 1 and mask.shape[0] not in (1, batch):
        return f"the attention mask {tuple(mask.shape)} is not one row of keys per batch item"
    rows = mask.reshape(-1, total)  # (1 or B, E+N)
    if bool((rows[:, text_tokens:] != 0).any()):
        return "the attention mask also masks video tokens"
    text = rows[:, :text_tokens]
    dropped = text <= torch.finfo(text.dtype).min / 2  # -max (or -inf): a weight of exactly 0
    if bool(((text != 0) & ~dropped).any()):
        return "the attention mask holds values other than 0 and -max (a soft mask, not padding)"
    if not bool(dropped.any()):
        return EVERY_KEY
    kept = [torch.nonzero(~row).flatten() for row in dropped]
    if bool(dropped.all(dim=1).any()):
        return "the attention mask drops every text token of a batch item"
    if len(kept) == 1 or all(torch.equal(dropped[0], row) for row in dropped[1:]):
        return KeptKeys((kept[0],), shared=True)
    return KeptKeys(tuple(kept), shared=False)


__all__ = ["EVERY_KEY", "KeptKeys", "kept_text_keys"]
