"""Tier 3: the op's CUDA paths at real sizes (bf16, cuDNN attention) against float32 / float64 references."""
import math

import pytest
import torch
import torch.nn.functional as F

from ultragen_core.attention import dual_branch_attention, make_layout, pool_tokens, upsample_tokens
from ultragen_core.attention.rope import apply_complex, complex_table

pytestmark = pytest.mark.gpu
CUDA = "cuda"


def cudnn_attention(heads):
    from torch.nn.attention import SDPBackend, sdpa_kernel

    def attention(q, k, v):
        B, L, C = q.shape
        split = lambda t: t.view(B, -1, heads, C // heads).transpose(1, 2)
        with sdpa_kernel(SDPBackend.CUDNN_ATTENTION):
            out = F.scaled_dot_product_attention(split(q), split(k), split(v))
        return out.transpose(1, 2).reshape(B, L, C)
    return attention


def test_pooling_and_fused_upsampling_at_4k_frame_size_match_float32_references():
    grid, p, C = (3, 135, 240), 8, 640  # a 4K frame; rows of W*C values take the per-frame GEMM path
    T, H, W = grid
    g = torch.Generator(device=CUDA).manual_seed(0)
    x = torch.randn(1, math.prod(grid), C, device=CUDA, generator=g).bfloat16()
    frames = x.float().view(T, H, W, C).permute(0, 3, 1, 2)
    Hp, Wp = -(-H // p), -(-W // p)
    padded = F.pad(frames, (0, Wp * p - W, 0, Hp * p - H), mode="replicate")
    pooled_ref = F.avg_pool2d(padded, p).permute(0, 2, 3, 1).reshape(1, -1, C)
    pooled = pool_tokens(x, grid, p)
    torch.testing.assert_close(pooled.float(), pooled_ref, rtol=2e-2, atol=4e-3)
    up_ref = F.interpolate(pooled.float().view(T, Hp, Wp, C).permute(0, 3, 1, 2), scale_factor=p, mode="bilinear",
                           align_corners=False)[:, :, :H, :W].permute(0, 2, 3, 1).reshape(1, -1, C)
    base = torch.randn(x.shape, device=CUDA, generator=g).bfloat16()
    fused = upsample_tokens(pooled, grid, p, out=base.clone(), alpha=0.7, beta=1.0)
    torch.testing.assert_close(fused.float(), base.float() + 0.7 * up_ref, rtol=2e-2, atol=2e-2)


def window_mask(grid, layout):
    """(N, N) bool: key inside the query's window, built per axis on the GPU."""
    masks = []
    sizes = [grid[1] * grid[2], grid[2], 1]
    n = math.prod(grid)
    idx = torch.arange(n, device=CUDA)
    for axis, size, stride in zip(layout.axes, grid, sizes):
        owner, _ = axis.owner_and_offset()
        start = torch.tensor([axis.window_starts[o] for o in owner], device=CUDA)
        length = torch.tensor([axis.window_lengths[o] for o in owner], device=CUDA)
        coord = (idx // stride) % size
        q0, ql = start[coord], length[coord]
        masks.append((coord[None, :] >= q0[:, None]) & (coord[None, :] < (q0 + ql)[:, None]))
    return masks[0] & masks[1] & masks[2]


@pytest.mark.parametrize("shifted", [False, True])
def test_windows_with_cudnn_in_bf16_match_masked_full_attention(shifted):
    grid, heads = (21, 30, 52), 2  # Wan 1.3B's native grid, the fast preset's windows
    layout = make_layout(grid, (7, 12, 20), shifted)
    n = math.prod(grid)
    g = torch.Generator(device=CUDA).manual_seed(1)
    q, k, v = (torch.randn(1, n, heads * 128, device=CUDA, generator=g).bfloat16() for _ in range(3))
    out = dual_branch_attention((q, k, v), layout, cudnn_attention(heads))
    split = lambda t: t.float().view(1, n, heads, 128).transpose(1, 2)
    ref = F.scaled_dot_product_attention(split(q), split(k), split(v), attn_mask=window_mask(grid, layout))
    ref = ref.transpose(1, 2).reshape(1, n, heads * 128)
    torch.testing.assert_close(out.float(), ref, rtol=2e-2, atol=2e-2)


def test_complex_rope_on_a_14b_projection_chunk_matches_float64():
    n, heads, half = 52428, 40, 64  # one projection chunk of the 14B at 4K
    g = torch.Generator(device=CUDA).manual_seed(2)
    angle = torch.rand(1, n, 1, half, device=CUDA, generator=g, dtype=torch.float64) * 300
    freqs = torch.stack([torch.stack([angle.cos(), -angle.sin()], -1), torch.stack([angle.sin(), angle.cos()], -1)], -2)
    x = torch.randn(1, n, heads, 2 * half, device=CUDA, generator=g).bfloat16()
    out = apply_complex(x, complex_table(freqs.float()))
    pairs = x.double().unflatten(-1, (-1, 2))
    ref = torch.einsum("...jrc,...jc->...jr", freqs, pairs).flatten(-2)
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.double(), ref, rtol=1e-2, atol=1e-2)


def kernels_run(fn):
    """Names of the CUDA kernels ``fn`` launches."""
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        fn()
        torch.cuda.synchronize()
    return [e.key for e in prof.key_averages() if e.device_type == torch.autograd.DeviceType.CUDA]


@pytest.mark.parametrize("batch,lq,lk", [(1, 75600, 75600), (3, 18481, 18481), (2, 4001, 75600)],
                         ids=["4K quality window", "odd shifted windows", "queries over more keys"])
def test_cudnn_first_sdpa_runs_cudnn_at_window_sizes_as_exactly_as_flash(batch, lq, lk):
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from ultragen_core.attention import kernels
    if not kernels.cudnn_first_available(torch.device(CUDA)):
        pytest.skip("cuDNN first is chosen on Hopper GPUs only")
    heads = 4  # head_dim 128 as in Wan; fewer heads keep the float32 reference small
    g = torch.Generator(device=CUDA).manual_seed(0)
    q = torch.randn(batch, lq, heads * 128, device=CUDA, generator=g).bfloat16()
    k, v = (torch.randn(batch, lk, heads * 128, device=CUDA, generator=g).bfloat16() for _ in range(2))
    split = lambda t: t.float().unflatten(-1, (heads, 128)).transpose(1, 2)  # (B, H, L, D)
    with sdpa_kernel(SDPBackend.EFFICIENT_ATTENTION):  # float32 reference
        ref = F.scaled_dot_product_attention(split(q), split(k), split(v)).transpose(1, 2).flatten(2)
    with sdpa_kernel(SDPBackend.FLASH_ATTENTION):  # what ComfyUI 0.33 runs: bf16's own error
        flash = F.scaled_dot_product_attention(*(split(t).bfloat16() for t in (q, k, v))).transpose(1, 2).flatten(2)
    torch.cuda.synchronize()
    before = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    out = kernels.sdpa_cudnn_first(q, k, v, heads)
    torch.cuda.synchronize()
    # one output tensor (a token-major view of the kernel's own), no second buffer; small workspace
    assert torch.cuda.max_memory_allocated() - before <= 1.05 * out.nbytes + 64 * 2**20
    names = kernels_run(lambda: kernels.sdpa_cudnn_first(q, k, v, heads))
    assert any("cudnn" in n.lower() for n in names), names
    assert not any("flash_fwd" in n for n in names), names
    err, flash_err = ((o.float() - ref).abs().max().item() for o in (out, flash))
    assert err <= 2 * flash_err + 1e-3, (err, flash_err)
