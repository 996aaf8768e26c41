"""Stand-ins for ComfyUI's Wan block, written here (no ComfyUI): the same parts as ComfyUI's
``WanAttentionBlock`` (norm1 / norm2 / norm3, self_attn, cross_attn, ffn, modulation), the math of
ComfyUI 0.3.64 / 0.33 (``UnfusedBlock``), and a block that computes something else (``OtherBlock``).
``wan_block_fused.py`` holds a refactor like ComfyUI 0.38's (a module-level fused ``modulate``, the
feed-forward as another module)."""
import torch
import torch.nn.functional as F
from torch import nn

DIM, HEADS, FFN = 32, 4, 64


class SelfAttention(nn.Module):
    """Multi-head attention over the whole sequence; ``freqs`` (1, L, 1) scales q and k per token (a stand-in
    for RoPE: the check must slice it with the tokens)."""

    def __init__(self, dim=DIM, heads=HEADS):
        super().__init__()
        self.num_heads, self.head_dim = heads, dim // heads
        self.q, self.k, self.v, self.o = (nn.Linear(dim, dim) for _ in range(4))

    def attend(self, q, k, v):  # (B, L, C) each -> (B, Lq, C)
        q, k, v = (t.unflatten(-1, (self.num_heads, self.head_dim)).transpose(1, 2) for t in (q, k, v))
        return F.scaled_dot_product_attention(q, k, v).transpose(1, 2).flatten(2)

    def forward(self, x, freqs, transformer_options={}):
        scale = 1 + freqs.to(x.dtype)
        return self.o(self.attend(self.q(x) * scale, self.k(x) * scale, self.v(x)))


class CrossAttention(SelfAttention):
    def forward(self, x, context, context_img_len=None, transformer_options={}):
        return self.o(self.attend(self.q(x), self.k(context), self.v(context)))


def spread(e: torch.Tensor, length: int) -> torch.Tensor:
    """Modulation rows (B, 1 or F, C) for ``length`` tokens: per frame, ``length / F`` consecutive tokens each."""
    if e.shape[1] == 1:
        return e
    return e.repeat_interleave(-(-length // e.shape[1]), dim=1)[:, :length]


class UnfusedBlock(nn.Module):
    """ComfyUI 0.33's Wan block math, written out here."""

    def __init__(self, dim=DIM, ffn=FFN, seed=0):
        super().__init__()
        torch.manual_seed(seed)
        self.norm1 = nn.LayerNorm(dim, eps=1e-6, elementwise_affine=False)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6, elementwise_affine=False)
        self.norm3 = nn.LayerNorm(dim, eps=1e-6)
        self.self_attn, self.cross_attn = SelfAttention(dim), CrossAttention(dim)
        self.ffn = nn.Sequential(nn.Linear(dim, ffn), nn.GELU(approximate="tanh"), nn.Linear(ffn, dim))
        self.modulation = nn.Parameter(torch.randn(1, 6, dim) / dim**0.5)

    def rows(self, x, e):
        """The six modulation rows for x's tokens: e (B, 6, C) or per frame (B, F, 6, C)."""
        m = self.modulation.to(x.dtype)
        parts = (m + e).chunk(6, dim=1) if e.ndim < 4 else (m.unsqueeze(0) + e).unbind(2)
        return [spread(p, x.shape[1]) for p in parts]

    def forward(self, x, e, freqs, context, context_img_len=257, transformer_options={}):
        s1, c1, g1, s2, c2, g2 = self.rows(x, e)
        x = x + self.self_attn(self.norm1(x) * (1 + c1) + s1, freqs, transformer_options=transformer_options) * g1
        x = x + self.cross_attn(self.norm3(x), context, context_img_len=context_img_len,
                                transformer_options=transformer_options)
        return x + self.ffn(self.norm2(x) * (1 + c2) + s2) * g2


class OtherBlock(UnfusedBlock):
    """Computes something else: the feed-forward's gate is applied as 1 + gate."""

    def forward(self, x, e, freqs, context, context_img_len=257, transformer_options={}):
        s1, c1, g1, s2, c2, g2 = self.rows(x, e)
        x = x + self.self_attn(self.norm1(x) * (1 + c1) + s1, freqs, transformer_options=transformer_options) * g1
        x = x + self.cross_attn(self.norm3(x), context, context_img_len=context_img_len,
                                transformer_options=transformer_options)
        return x + self.ffn(self.norm2(x) * (1 + c2) + s2) * (1 + g2)


class NoModulationBlock(UnfusedBlock):
    """Keeps its modulation under another name."""

    def __init__(self):
        super().__init__()
        self.scale_shift_table = self.modulation
        del self.modulation

    def forward(self, x, e, freqs, context, context_img_len=257, transformer_options={}):
        self.modulation = self.scale_shift_table
        try:
            return super().forward(x, e, freqs, context, context_img_len, transformer_options)
        finally:
            del self.modulation


def inputs(tokens=96, frames=None, batch=2, dtype=torch.float32, seed=1):
    """x (B, L, C); e (B, 6, C) or per frame (B, F, 6, C); freqs (1, L, 1); context (B, 12, C)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, tokens, DIM, generator=g).to(dtype)
    shape = (batch, 6, DIM) if frames is None else (batch, frames, 6, DIM)
    e = (torch.randn(*shape, generator=g) / 4).to(dtype)
    freqs = torch.rand(1, tokens, 1, generator=g)
    context = torch.randn(batch, 12, DIM, generator=g).to(dtype)
    return x, e, freqs, context
