"""A Wan block refactored as ComfyUI 0.38 did (written here): the modulation is a module-level
``modulate(x, norm, shift, scale)`` computing the LayerNorm and the modulation in one expression (as a fused
kernel would), and the feed-forward is a module of its own with the GELU folded into its forward."""
import torch
import torch.nn.functional as F
from torch import nn

from wan_block_standins import FFN, DIM, UnfusedBlock, spread

CALLS = {"modulate": 0, "forward": 0}


def modulate(x, norm, shift, scale):
    """LayerNorm (no affine) and modulation in one pass, in float32: (x - mean) / std * (1 + scale) + shift."""
    CALLS["modulate"] += 1
    shift, scale = spread(shift, x.shape[1]), spread(scale, x.shape[1])
    var, mean = torch.var_mean(x.float(), dim=-1, keepdim=True, unbiased=False)
    return ((x.float() - mean) * torch.rsqrt(var + norm.eps) * (1 + scale.float()) + shift.float()).to(x.dtype)


class GeluFeedForward(nn.Module):
    def __init__(self, dim=DIM, hidden=FFN):
        super().__init__()
        self.up, self.down = nn.Linear(dim, hidden), nn.Linear(hidden, dim)

    def forward(self, x):
        return self.down(F.gelu(self.up(x), approximate="tanh"))


class FusedBlock(UnfusedBlock):
    def __init__(self, seed=0):
        super().__init__(seed=seed)
        self.ffn = GeluFeedForward()

    def forward(self, x, e, freqs, context, context_img_len=257, transformer_options={}):
        CALLS["forward"] += 1
        s1, c1, g1, s2, c2, g2 = self.rows(x, e)
        y = self.self_attn(modulate(x, self.norm1, s1, c1), freqs, transformer_options=transformer_options)
        x = torch.addcmul(x, y, g1)
        x = x + self.cross_attn(self.norm3(x), context, context_img_len=context_img_len,
                                transformer_options=transformer_options)
        return torch.addcmul(x, self.ffn(modulate(x, self.norm2, s2, c2)), g2)
