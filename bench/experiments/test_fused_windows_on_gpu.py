"""The experimental fused Triton window kernel (fused_windows.py) against masked full attention (float32)
at real sizes: the benchmark numbers it produced come from a correct kernel. Needs CUDA and Triton:

    python -m pytest bench/experiments
"""
import math

import pytest
import torch
import torch.nn.functional as F

from attention import sdpa
from experiments.fused_windows import available, windowed_attention_fused
from ultragen_core.attention import dual_branch_attention, make_layout

CUDA = "cuda"
WHY_NOT = available(torch.device(CUDA), torch.bfloat16, 128) if torch.cuda.is_available() else "CUDA is not available"
pytestmark = pytest.mark.skipif(WHY_NOT is not None, reason=f"the fused kernel cannot run here: {WHY_NOT}")


def window_mask(layout):
    """(N, N) bool, True where the key lies in the query's window: per axis, the query's window owns the
    coordinate; the mask is the outer product of the three axes' (query coordinate, key coordinate) masks."""
    per_axis = []
    for axis, size in zip(layout.axes, layout.grid):
        owner, _ = axis.owner_and_offset()
        start = torch.tensor([axis.window_starts[o] for o in owner], device=CUDA)[:, None]  # (size, 1)
        length = torch.tensor([axis.window_lengths[o] for o in owner], device=CUDA)[:, None]
        key = torch.arange(size, device=CUDA)[None, :]
        per_axis.append((key >= start) & (key < start + length))  # (query coordinate, key coordinate)
    mt, mh, mw = per_axis
    mask = mt[:, None, None, :, None, None] & mh[None, :, None, None, :, None] & mw[None, None, :, None, None, :]
    n = math.prod(layout.grid)
    return mask.reshape(n, n)  # (T, H, W, T', H', W') -> (N, N), tokens row-major


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("window,shifted", [((7, 12, 20), False), ((7, 12, 20), True), ((21, 17, 30), True),
                                            ((3, 5, 7), False)])
def test_fused_windows_match_masked_full_attention(window, shifted, dtype):
    grid, heads = (21, 30, 52), 2  # Wan 1.3B's native grid: clamped, shifted and odd-sized windows
    layout = make_layout(grid, window, shifted)
    n = math.prod(grid)
    g = torch.Generator(device=CUDA).manual_seed(3)
    q, k, v = (torch.randn(2, n, heads * 128, device=CUDA, generator=g).to(dtype) for _ in range(3))
    out = windowed_attention_fused(q, k, v, layout, heads)
    split = lambda t: t.float().view(2, n, heads, 128).transpose(1, 2)
    ref = F.scaled_dot_product_attention(split(q), split(k), split(v), attn_mask=window_mask(layout))
    ref = ref.transpose(1, 2).reshape(2, n, heads * 128)
    torch.testing.assert_close(out.float(), ref, rtol=2e-2, atol=2e-2)
    # no worse than the batched cuDNN path's own error against the same reference
    batched = dual_branch_attention((q, k, v), layout, sdpa("cudnn", heads))
    assert (out.float() - ref).abs().max() <= 1.5 * (batched.float() - ref).abs().max() + 1e-3


def test_fused_windows_on_the_14b_fast_layout_at_4k_match_the_batched_path():
    grid, heads = (21, 135, 240), 40  # the fast preset at 4K: 192 windows of 7x17x30, clamped at the borders
    layout = make_layout(grid, (7, 17, 30), False)
    g = torch.Generator(device=CUDA).manual_seed(4)
    q, k, v = (torch.randn(1, math.prod(grid), heads * 128, device=CUDA, generator=g).bfloat16() for _ in range(3))
    out = windowed_attention_fused(q, k, v, layout, heads)
    batched = dual_branch_attention((q, k, v), layout, sdpa("cudnn", heads))
    torch.testing.assert_close(out.float(), batched.float(), rtol=2e-2, atol=2e-2)


def test_fused_windows_read_strided_heads_and_reject_bad_input():
    grid, heads = (3, 20, 24), 4
    layout = make_layout(grid, (2, 8, 8), True)
    n = math.prod(grid)
    qkv = torch.randn(1, n, 3 * heads * 64, device=CUDA).half()  # q, k, v as views of one projection
    q, k, v = qkv.split(heads * 64, dim=-1)
    out = windowed_attention_fused(q, k, v, layout, heads)
    ref = windowed_attention_fused(q.contiguous(), k.contiguous(), v.contiguous(), layout, heads)
    assert torch.equal(out, ref)
    with pytest.raises(ValueError, match="do not match the grid"):
        windowed_attention_fused(q[:, 1:], k[:, 1:], v[:, 1:], layout, heads)
    with pytest.raises(NotImplementedError, match="head_dim 96"):
        windowed_attention_fused(q[..., :192], k[..., :192], v[..., :192], layout, 2)
