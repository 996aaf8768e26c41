"""The modulated self-attention input computed per chunk (families/wan/wan_block.py ModulatedRows): every way the
self-attention patch reads it equals the same read of the whole modulated tensor, and pooling it frame by
frame equals pooling the whole tensor."""
import pytest
import torch
from torch import nn

from ultragen_core.adapters.self_attention import pooled_input
from ultragen_core.families.wan.wan import _outside, _rows
from ultragen_core.families.wan.wan_block import ModulatedRows, modulate_unfused, rows_of, takes_modulated_rows, whole
from ultragen_core.attention.global_branch import pool_tokens


def case(frames, length=60, dim=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2, length, dim, generator=g, dtype=torch.float64)
    shift, scale = (torch.randn(2, frames, dim, generator=g, dtype=torch.float64) for _ in range(2))
    norm = nn.LayerNorm(dim, eps=1e-6, elementwise_affine=False)
    full = modulate_unfused(x, norm, rows_of(shift, length, 0, length), rows_of(scale, length, 0, length))
    return ModulatedRows(x, norm, shift, scale, modulate_unfused), full


@pytest.mark.parametrize("frames", [1, 4, 7])
def test_every_read_equals_the_whole_modulated_input(frames):
    lazy, full = case(frames)
    assert lazy.shape == full.shape and lazy.dtype == full.dtype
    torch.testing.assert_close(lazy.whole(chunk=7), full, rtol=0, atol=1e-15)
    torch.testing.assert_close(whole(lazy), full, rtol=0, atol=1e-15)
    tokens = torch.tensor([59, 0, 31, 12, 13])
    torch.testing.assert_close(lazy.index_select(1, tokens), full.index_select(1, tokens), rtol=0, atol=1e-15)
    part = lazy.narrow(10, 50)  # a narrowed range still indexes from its own start
    assert part.shape == (2, 40, 16)
    torch.testing.assert_close(part.rows(5, 9), full[:, 15:19], rtol=0, atol=1e-15)
    torch.testing.assert_close(part.index_select(1, torch.tensor([0, 39])), full[:, [10, 49]], rtol=0, atol=1e-15)
    torch.testing.assert_close(part.narrow(30, 40).whole(), full[:, 40:50], rtol=0, atol=1e-15)
    torch.testing.assert_close(_rows(lazy, 50, 60), full[:, 50:], rtol=0, atol=1e-15)
    torch.testing.assert_close(_outside(lazy, 3, 55), torch.cat((full[:, :3], full[:, 55:]), 1), rtol=0, atol=1e-15)
    with pytest.raises(ValueError, match="selects tokens"):
        lazy.index_select(0, tokens)


@pytest.mark.parametrize("rows", [1, 20, 10**6])
def test_pooling_frame_by_frame_equals_pooling_the_whole_input(rows):
    grid = (3, 5, 4)  # 60 tokens; a factor that does not divide the frame (padding by replication)
    lazy, full = case(3)
    torch.testing.assert_close(pooled_input(lazy, grid, 2, rows), pool_tokens(full, grid, 2), rtol=0, atol=1e-14)
    torch.testing.assert_close(pooled_input(full, grid, 2, rows), pool_tokens(full, grid, 2), rtol=0, atol=0)


def test_only_the_packs_self_attention_takes_the_rows():
    from ultragen_core.families.wan.wan import WanSelfAttentionPatch
    module = nn.Linear(2, 2)
    assert not takes_modulated_rows(module)  # ComfyUI's own forward (or another pack's) gets a tensor
    module.forward = WanSelfAttentionPatch(None, "blocks", 0)  # as ComfyUI installs an object patch
    assert takes_modulated_rows(module)


def test_whether_a_self_attention_runs_attn1_patches_is_found_by_running_it_once():
    from ultragen_core.families.wan import wan
    calls = []

    class Runs(nn.Module):  # runs attn1 patches after attention, as ComfyUI 0.33's Wan does
        def __init__(self):
            super().__init__()
            self.o = nn.Linear(16, 16).double()

        def forward(self, x, freqs, transformer_options={}):
            calls.append(x.shape)
            for p in transformer_options.get("patches", {}).get("attn1_patch", []):
                x = p({"x": x, "q": x, "k": x, "transformer_options": transformer_options})
            return self.o(x)

    class NoPatches(Runs):  # as ComfyUI 0.3.64's Wan
        def forward(self, x, freqs, transformer_options={}):
            return self.o(x)

    lazy, _ = case(1)
    freqs = torch.zeros(1, 60, 1)
    assert wan.runs_attn1_patch(Runs(), lazy, freqs) and not wan.runs_attn1_patch(NoPatches(), lazy, freqs)
    assert wan.runs_attn1_patch(Runs(), lazy, freqs)
    assert calls == [(1, 2, 16)]  # once per class, on two tokens
