"""The dual-branch op against naive references (float64 where exactness matters)."""
import math

import pytest
import torch
import torch.nn.functional as F

from ultragen_core.attention import dual_branch_attention, make_layout, pool_tokens, upsample_tokens, windowed_attention
from ultragen_core.attention.global_branch import pooled_grid, pooled_positions


def sdpa(heads):
    """The attention callable the op gets: (B, L, H*D) in and out."""
    def attention(q, k, v):
        B, L, C = q.shape
        split = lambda t: t.view(B, -1, heads, C // heads).transpose(1, 2)  # (B, H, L, D)
        out = F.scaled_dot_product_attention(split(q), split(k), split(v))
        return out.transpose(1, 2).reshape(B, L, C)
    return attention


def naive_attention(q, k, v, heads, mask=None):
    """Softmax attention spelled out; mask (N, N) True = may attend."""
    B, N, C = q.shape
    D = C // heads
    qh, kh, vh = (t.view(B, -1, heads, D).transpose(1, 2) for t in (q, k, v))
    scores = qh @ kh.transpose(-1, -2) / math.sqrt(D)  # (B, H, N, N)
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    return (scores.softmax(-1) @ vh).transpose(1, 2).reshape(B, N, C)


def window_mask(grid, layout):
    """mask[i, j]: key j lies inside the window that owns query i (built by explicit loops)."""
    T, H, W = grid
    n = T * H * W
    mask = torch.zeros(n, n, dtype=torch.bool)
    owners = [a.owner_and_offset()[0] for a in layout.axes]
    coords = [(t, h, w) for t in range(T) for h in range(H) for w in range(W)]
    for i, (t, h, w) in enumerate(coords):
        own = [o[c] for o, c in zip(owners, (t, h, w))]
        starts = [a.window_starts[i_] for a, i_ in zip(layout.axes, own)]
        lengths = [a.window_lengths[i_] for a, i_ in zip(layout.axes, own)]
        for j, (t2, h2, w2) in enumerate(coords):
            mask[i, j] = all(s <= c < s + n for s, c, n in zip(starts, (t2, h2, w2), lengths))
    return mask


def rand_qkv(B, n, C, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(B, n, C, generator=g, dtype=torch.float64).to(dtype) for _ in range(3)]


@pytest.mark.parametrize("grid", [(2, 5, 7), (1, 6, 6), (3, 4, 9)])
def test_windows_covering_the_grid_equal_full_attention(grid):
    n, heads = math.prod(grid), 2
    q, k, v = rand_qkv(2, n, 16)
    layout = make_layout(grid, (64, 64, 64), shifted=True)
    out = dual_branch_attention((q, k, v), layout, sdpa(heads))
    torch.testing.assert_close(out, naive_attention(q, k, v, heads), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("grid,window,shifted", [((2, 7, 5), (2, 3, 2), False), ((2, 7, 5), (2, 3, 2), True),
                                                 ((3, 5, 6), (2, 2, 4), True), ((1, 13, 4), (1, 5, 3), True)])
def test_windowed_output_equals_masked_full_attention(grid, window, shifted):
    heads = 3
    q, k, v = rand_qkv(2, math.prod(grid), 12, seed=1)
    layout = make_layout(grid, window, shifted)
    out, _ = windowed_attention((q, k, v), layout, sdpa(heads))
    ref = naive_attention(q, k, v, heads, window_mask(grid, layout))
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)


def naive_pool(x, grid, p):
    """Average of each p x p cell, padding by repeating the last row / column, by explicit loops."""
    T, H, W = grid
    _, Hp, Wp = pooled_grid(grid, p)
    xs = x.view(x.shape[0], T, H, W, -1)
    out = torch.zeros(x.shape[0], T, Hp, Wp, x.shape[-1], dtype=x.dtype)
    for i in range(Hp):
        for j in range(Wp):
            rows = [min(i * p + a, H - 1) for a in range(p)]
            cols = [min(j * p + b, W - 1) for b in range(p)]
            out[:, :, i, j] = sum(xs[:, :, r, c] for r in rows for c in cols) / (p * p)
    return out.reshape(x.shape[0], T * Hp * Wp, -1)


def naive_bilinear(y, grid, p):
    """align_corners=False bilinear upsampling by p of the pooled grid, cropped to (H, W)."""
    T, H, W = grid
    _, Hp, Wp = pooled_grid(grid, p)
    ys = y.view(y.shape[0], T, Hp, Wp, -1)
    out = torch.zeros(y.shape[0], T, H, W, y.shape[-1], dtype=y.dtype)

    def taps(o, n):
        s = max((o + 0.5) / p - 0.5, 0.0)
        i0 = min(int(math.floor(s)), n - 1)
        i1 = min(i0 + 1, n - 1)
        return i0, i1, s - i0

    for h in range(H):
        a0, a1, fa = taps(h, Hp)
        for w in range(W):
            b0, b1, fb = taps(w, Wp)
            out[:, :, h, w] = ((1 - fa) * ((1 - fb) * ys[:, :, a0, b0] + fb * ys[:, :, a0, b1])
                               + fa * ((1 - fb) * ys[:, :, a1, b0] + fb * ys[:, :, a1, b1]))
    return out.reshape(y.shape[0], T * H * W, -1)


@pytest.mark.parametrize("grid,p", [((2, 7, 10), 3), ((1, 9, 9), 3), ((2, 5, 6), 2)])
def test_pool_and_upsample_match_hand_built_versions(grid, p):
    x = rand_qkv(2, math.prod(grid), 4, seed=2)[0]
    torch.testing.assert_close(pool_tokens(x, grid, p), naive_pool(x, grid, p), rtol=1e-12, atol=1e-12)
    y = naive_pool(x, grid, p)
    torch.testing.assert_close(upsample_tokens(y, grid, p), naive_bilinear(y, grid, p), rtol=1e-12, atol=1e-12)


def test_wide_frames_take_the_per_frame_product_path_with_the_same_result():
    """Rows of W * C >= 2**16 values run one plain GEMM per frame (the fast path on GPUs)."""
    from ultragen_core.attention import global_branch
    grid, p, C = (2, 5, 7), 3, 9400  # W * C = 65,800
    assert grid[2] * C >= global_branch._WIDE
    g = torch.Generator().manual_seed(5)
    x = torch.randn(1, math.prod(grid), C, dtype=torch.float64, generator=g)
    y = naive_pool(x, grid, p)
    torch.testing.assert_close(pool_tokens(x, grid, p), y, rtol=1e-12, atol=1e-12)
    base = torch.randn(1, math.prod(grid), C, dtype=torch.float64, generator=g)
    out = upsample_tokens(y, grid, p, out=base.clone(), alpha=0.5, beta=0.25)
    torch.testing.assert_close(out, 0.25 * base + 0.5 * naive_bilinear(y, grid, p), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("fusion", ["band", "gate"])
def test_global_branch_and_fusion_match_a_hand_built_reference(fusion):
    """Pooled tokens -> projections -> full attention -> upsample, fused with the local output."""
    grid, p, heads, C, s = (2, 7, 9), 3, 2, 8, 0.7
    T, H, W = grid
    g = torch.Generator().manual_seed(3)
    x = torch.randn(2, T * H * W, C, generator=g, dtype=torch.float64)
    wq, wk, wv = (torch.randn(C, C, generator=g, dtype=torch.float64) / C ** 0.5 for _ in range(3))
    layout = make_layout(grid, (2, 3, 4), shifted=False)
    xp = pool_tokens(x, grid, p)
    global_qkv = (xp @ wq, xp @ wk, xp @ wv)
    out = dual_branch_attention((x @ wq, x @ wk, x @ wv), layout, sdpa(heads), global_qkv, p, fusion, s)

    local = naive_attention(x @ wq, x @ wk, x @ wv, heads, window_mask(grid, layout))
    xp_ref = naive_pool(x, grid, p)
    glob = naive_attention(xp_ref @ wq, xp_ref @ wk, xp_ref @ wv, heads)
    if fusion == "band":
        ref = local + s * naive_bilinear(glob - naive_pool(local, grid, p), grid, p)
    else:
        ref = (1 - s) * local + s * naive_bilinear(glob, grid, p)
    torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-10)


def test_global_branch_shares_the_window_call_when_lengths_match():
    grid, p = (1, 6, 8), 2  # windows 3x4 = pooled grid 3x4
    calls = []
    base = sdpa(1)

    def counting(q, k, v):
        calls.append(tuple(q.shape))
        return base(q, k, v)

    q, k, v = rand_qkv(2, 48, 4, seed=4)
    layout = make_layout(grid, (1, 3, 4), shifted=False)
    dual_branch_attention((q, k, v), layout, counting, [t[:, :12] for t in (q, k, v)], p, "band", 1.0)
    assert calls == [(2 * 4 + 2, 12, 4)]  # 4 windows x batch 2, plus the global sequence of each item


def test_pooled_positions_are_unit_spaced_grid_positions():
    pos = pooled_positions((2, 5, 7), 2)
    assert pos.tolist()[:4] == [0, 1, 2, 3] and pos.tolist()[4:8] == [7, 8, 9, 10]
    assert len(pos) == 2 * 3 * 4 and pos[12] == 35  # frame 1 starts at 5*7


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.bfloat16, 2e-2), (torch.float16, 3e-3)])
def test_low_precision_stays_close_to_float64(dtype, tol):
    grid, heads = (2, 9, 7), 2
    q, k, v = rand_qkv(2, math.prod(grid), 16, seed=5)
    layout = make_layout(grid, (2, 4, 3), shifted=True)
    ref, _ = windowed_attention((q, k, v), layout, sdpa(heads))
    low, _ = windowed_attention([t.to(dtype) for t in (q, k, v)], layout, sdpa(heads))
    assert low.dtype == dtype
    # the same op in float32-on-upcast inputs bounds what low precision itself costs
    err = (low.double() - ref).norm() / ref.norm()
    assert err < tol


def test_batch_items_are_independent():
    grid = (2, 6, 5)
    q, k, v = rand_qkv(3, 60, 8, seed=6)
    layout = make_layout(grid, (2, 3, 3), shifted=True)
    glob = [pool_tokens(t, grid, 2) for t in (q, k, v)]
    both = dual_branch_attention((q, k, v), layout, sdpa(2), glob, 2, "band", 0.5)
    for i in range(3):
        one = dual_branch_attention([t[i:i + 1] for t in (q, k, v)], layout, sdpa(2),
                                    [t[i:i + 1] for t in glob], 2, "band", 0.5)
        torch.testing.assert_close(both[i:i + 1], one, rtol=1e-12, atol=1e-12)


def test_token_count_mismatch_is_refused():
    layout = make_layout((1, 4, 4), (1, 2, 2), False)
    with pytest.raises(ValueError, match="do not match the grid"):
        windowed_attention(rand_qkv(1, 15, 4), layout, sdpa(1))


@pytest.mark.parametrize("grid,window,shifted", [((2, 5, 7), (2, 2, 3), False), ((1, 7, 5), (1, 3, 2), True)])
def test_shared_keys_join_every_window(grid, window, shifted):
    """Tokens outside the grid (a reference frame, in-context latents): every window attends to them
    besides its own tokens. Reference: masked attention over [grid ; extras] with explicit loops."""
    n, E, heads, B = math.prod(grid), 6, 2, 2
    q, k, v = rand_qkv(B, n, 16)
    ke, ve = rand_qkv(B, E, 16, seed=1)[:2]
    layout = make_layout(grid, window, shifted=shifted)
    out = dual_branch_attention((q, k, v), layout, sdpa(heads), shared_kv=(ke, ve))
    mask = torch.cat((window_mask(grid, layout), torch.ones(n, E, dtype=torch.bool)), dim=1)  # (n, n + E)
    keys, values = torch.cat((k, ke), 1), torch.cat((v, ve), 1)
    D = 16 // heads
    qh, kh, vh = (t.view(B, -1, heads, D).transpose(1, 2) for t in (q, keys, values))
    scores = (qh @ kh.transpose(-1, -2) / math.sqrt(D)).masked_fill(~mask, float("-inf"))
    expected = (scores.softmax(-1) @ vh).transpose(1, 2).reshape(B, n, 16)
    torch.testing.assert_close(out, expected, rtol=1e-12, atol=1e-12)
    # a change in one window still stays there: the shared keys carry nothing between windows
    q2, k2, v2 = (t.clone() for t in (q, k, v))
    k2[:, 0] += 1.0
    v2[:, 0] += 1.0
    moved = (dual_branch_attention((q2, k2, v2), layout, sdpa(heads), shared_kv=(ke, ve)) - out).abs().amax((0, 2))
    assert torch.equal(moved > 0, window_mask(grid, layout)[:, 0])
