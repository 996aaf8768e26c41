"""Proxy-guided attention against explicit references (float64 where exactness matters).

Identities tested:
- strength 0 is the unguided windowed attention bit for bit (any layout, proxy, dtype, extras);
- a proxy equal to the video (same grid, same q / k / v) with one window covering the grid, mode
  "all": every key appears twice with its value, so the softmax weights halve and the output is full
  attention over the video, for every strength (1e-12);
- the same proxy with any window layout and a radius-0 neighbourhood: each window's proxy keys are its
  own keys again, so the output is the unguided windowed attention, for every strength (1e-12).
"""
import math
from fractions import Fraction

import pytest
import torch
import torch.nn.functional as F

from ultragen_core.attention import make_layout, pool_tokens, windowed_attention
from ultragen_core.attention.global_branch import pooled_grid
from ultragen_core.attention.proxy import ProxyLayout, axis_cells, proxy_guided_attention, proxy_positions
from ultragen_core.attention.rope import rope_freqs, wan_axes_dim


def sdpa(heads, calls=None):
    """The attention callable the op gets: (B, L, H*D) in and out (keys may be longer than queries)."""
    def attention(q, k, v):
        if calls is not None:
            calls.append((tuple(q.shape), tuple(k.shape)))
        B, L, C = q.shape
        split = lambda t: t.reshape(B, -1, heads, C // heads).transpose(1, 2)  # (B, H, L, D)
        out = F.scaled_dot_product_attention(split(q), split(k), split(v))
        return out.transpose(1, 2).reshape(B, L, C)
    return attention


def rand(B, n, C, dtype=torch.float64, seed=0, count=3):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(B, n, C, generator=g, dtype=torch.float64).to(dtype) for _ in range(count)]


def naive_guided(qkv, proxy_qkv, layout, proxy_layout, heads, s, shared_kv=None):
    """The asymmetric attention spelled out: for every query, its window's keys (plus the shared ones)
    and the proxy cells its window sees; (1 - s) * softmax over own keys + s * over own and proxy keys."""
    q, k, v = qkv
    _, kp, vp = proxy_qkv
    B, N, C = q.shape
    T, H, W = layout.grid
    _, Hp, Wp = proxy_layout.proxy_grid
    D = C // heads
    owners = [a.owner_and_offset()[0] for a in layout.axes]
    out = torch.zeros_like(q)
    for t in range(T):
        for h in range(H):
            for w in range(W):
                win = (owners[0][t], owners[1][h], owners[2][w])
                rt, rh, rw = (range(a.window_starts[i], a.window_starts[i] + a.window_lengths[i])
                              for a, i in zip(layout.axes, win))
                own = [(a * H + b) * W + c for a in rt for b in rh for c in rw]
                ct, ch, cw = proxy_layout.window_cells(win)
                seen = [(a * Hp + b) * Wp + c for a in ct for b in ch for c in cw]
                i = (t * H + h) * W + w
                for n in range(B):
                    for head in range(heads):
                        sl = slice(head * D, (head + 1) * D)
                        ko, vo = k[n, own, sl], v[n, own, sl]
                        if shared_kv is not None:
                            ko, vo = torch.cat((ko, shared_kv[0][n, :, sl])), torch.cat((vo, shared_kv[1][n, :, sl]))
                        kg, vg = torch.cat((ko, kp[n, seen, sl])), torch.cat((vo, vp[n, seen, sl]))
                        qi = q[n, i, sl]
                        unguided = torch.softmax(ko @ qi / math.sqrt(D), 0) @ vo
                        guided = torch.softmax(kg @ qi / math.sqrt(D), 0) @ vg
                        out[n, i, sl] = (1 - s) * unguided + s * guided
    return out


CASES = [  # grid, window, shifted, proxy grid, mode, radius, align
    ((2, 7, 5), (2, 3, 2), False, (2, 4, 3), "neighbourhood", 0, ("causal", "centres", "centres")),
    ((2, 7, 5), (2, 3, 2), True, (2, 4, 3), "neighbourhood", 1, ("causal", "centres", "centres")),
    ((3, 6, 6), (2, 4, 4), True, (3, 3, 3), "all", 0, ("causal", "centres", "centres")),
    ((5, 6, 4), (5, 3, 2), False, (3, 3, 2), "neighbourhood", (0, 1, 0), ("causal", "centres", "centres")),
    ((5, 6, 4), (3, 4, 4), True, (2, 3, 2), "neighbourhood", 1, ("ends", "ends", "centres")),
    ((2, 67, 5), (2, 16, 5), True, (2, 23, 2), "neighbourhood", 2, ("causal", "centres", "centres")),
    ((1, 135, 3), (1, 45, 3), False, (1, 45, 1), "neighbourhood", 3, ("causal", "centres", "centres")),
]


@pytest.mark.parametrize("s", [1.0, 0.35])
@pytest.mark.parametrize("grid,window,shifted,proxy,mode,radius,align", CASES)
def test_batched_op_matches_the_explicit_loop_reference(grid, window, shifted, proxy, mode, radius, align, s):
    heads, C, B = 2, 8, 2
    qkv = rand(B, math.prod(grid), C, seed=1)
    proxy_qkv = rand(B, math.prod(proxy), C, seed=2)
    layout = make_layout(grid, window, shifted)
    pl = ProxyLayout(layout, proxy, mode, radius, align)
    out, proxy_out = proxy_guided_attention(qkv, layout, sdpa(heads), proxy_qkv, pl, s)
    torch.testing.assert_close(out, naive_guided(qkv, proxy_qkv, layout, pl, heads, s), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(proxy_out, sdpa(heads)(*proxy_qkv), rtol=0, atol=0)  # the proxy sees itself only


@pytest.mark.parametrize("s", [1.0, 0.6])
def test_shared_keys_join_every_window_besides_the_proxy(s):
    grid, proxy, heads = (2, 6, 5), (2, 3, 3), 2
    qkv, proxy_qkv = rand(2, 60, 8, seed=3), rand(2, 18, 8, seed=4)
    shared = rand(2, 4, 8, seed=5, count=2)
    layout = make_layout(grid, (2, 3, 3), shifted=True)
    pl = ProxyLayout(layout, proxy, radius=0)
    out, _ = proxy_guided_attention(qkv, layout, sdpa(heads), proxy_qkv, pl, s, shared_kv=shared)
    ref = naive_guided(qkv, proxy_qkv, layout, pl, heads, s, shared_kv=shared)
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16])
@pytest.mark.parametrize("with_shared", [False, True])
def test_strength_zero_is_the_unguided_op_bit_for_bit(dtype, with_shared):
    grid, heads = (3, 9, 7), 2
    qkv = rand(2, math.prod(grid), 8, dtype=dtype, seed=6)
    proxy_qkv = rand(2, 3 * 3 * 3, 8, dtype=dtype, seed=7)
    shared = rand(2, 5, 8, dtype=dtype, seed=8, count=2) if with_shared else None
    layout = make_layout(grid, (3, 4, 3), shifted=True)
    for pl in (ProxyLayout(layout, (3, 3, 3), "all"), ProxyLayout(layout, (3, 3, 3), radius=1)):
        out, proxy_out = proxy_guided_attention(qkv, layout, sdpa(heads), proxy_qkv, pl, 0.0, shared_kv=shared)
        unguided, _ = windowed_attention(qkv, layout, sdpa(heads), shared_kv=shared)
        assert torch.equal(out, unguided)
        assert torch.equal(proxy_out, sdpa(heads)(*proxy_qkv))


@pytest.mark.parametrize("s", [1.0, 0.3])
def test_a_proxy_equal_to_the_video_in_one_window_gives_full_attention(s):
    """Mode "all", one window over the grid: keys [k; k], values [v; v] -> the weights halve."""
    grid, heads = (2, 5, 6), 2
    qkv = rand(2, 60, 8, seed=9)
    layout = make_layout(grid, (8, 8, 8), shifted=True)
    assert layout.is_single_window
    out, proxy_out = proxy_guided_attention(qkv, layout, sdpa(heads), qkv, ProxyLayout(layout, grid, "all"), s)
    full = sdpa(heads)(*qkv)
    torch.testing.assert_close(out, full, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(proxy_out, full, rtol=0, atol=0)


@pytest.mark.parametrize("shifted", [False, True])
@pytest.mark.parametrize("align", [("causal", "centres", "centres"), ("ends", "ends", "ends")])
def test_a_proxy_equal_to_the_video_with_radius_zero_gives_the_unguided_windows(shifted, align):
    """Same-size proxy, radius 0: each window's proxy cells are exactly its own tokens."""
    grid, heads = (3, 11, 7), 2
    qkv = rand(2, math.prod(grid), 8, seed=10)
    layout = make_layout(grid, (2, 4, 3), shifted)
    pl = ProxyLayout(layout, grid, radius=0, align=align)
    for (shape, windows), P in zip(layout.groups, pl.keys_per_group):
        assert P == math.prod(shape)
    out, _ = proxy_guided_attention(qkv, layout, sdpa(heads), qkv, pl, 0.7)
    unguided, _ = windowed_attention(qkv, layout, sdpa(heads))
    torch.testing.assert_close(out, unguided, rtol=1e-12, atol=1e-12)


def changed_tokens(a, b):
    return (a != b).any(-1).any(0)  # (N,) True where any batch item / channel moved


def test_locality_off_stays_in_the_window_on_the_proxy_carries_it():
    """The proxy is derived from the video (pooled, as a first pass would be); a change in the corner
    token moves only its window with guidance off, and reaches far windows through the proxy with it on."""
    grid, p, heads = (2, 12, 10), 2, 2
    proxy = pooled_grid(grid, p)  # (2, 6, 5)
    qkv = rand(2, math.prod(grid), 8, seed=11)
    moved = [t.clone() for t in qkv]
    moved[1][:, 0] += 1.0  # key and value of token (0, 0, 0)
    moved[2][:, 0] += 1.0
    layout = make_layout(grid, (2, 4, 5), shifted=False)  # 3 x 2 windows
    run = lambda x, pl, s: proxy_guided_attention(x, layout, sdpa(heads), [pool_tokens(t, grid, p) for t in x],
                                                  pl, s)[0]
    owner_h, owner_w = (a.owner_and_offset()[0] for a in layout.axes[1:])
    in_corner_window = torch.tensor([owner_h[h] == 0 and owner_w[w] == 0
                                     for t in range(2) for h in range(12) for w in range(10)])

    everything = ProxyLayout(layout, proxy, "all")
    assert torch.equal(changed_tokens(run(qkv, everything, 0.0), run(moved, everything, 0.0)), in_corner_window)
    assert changed_tokens(run(qkv, everything, 0.5), run(moved, everything, 0.5)).all()

    near = ProxyLayout(layout, proxy, radius=0)  # proxy cell (0, 0, 0) lies under the corner window only
    sees_cell = torch.tensor([0 in near.window_cells((0, owner_h[h], owner_w[w]))[1]
                              and 0 in near.window_cells((0, owner_h[h], owner_w[w]))[2]
                              for t in range(2) for h in range(12) for w in range(10)])
    assert torch.equal(changed_tokens(run(qkv, near, 1.0), run(moved, near, 1.0)), sees_cell | in_corner_window)
    wide = ProxyLayout(layout, proxy, radius=(0, 2, 0))  # the margin reaches the second window row
    changed = changed_tokens(run(qkv, wide, 1.0), run(moved, wide, 1.0))
    assert changed.sum() > in_corner_window.sum() and not changed.all()


def test_different_proxies_give_different_outputs():
    grid, heads = (2, 8, 6), 2
    qkv = rand(2, 96, 8, seed=12)
    layout = make_layout(grid, (2, 4, 3), shifted=True)
    pl = ProxyLayout(layout, (2, 4, 3), radius=1)
    a, b = rand(2, 24, 8, seed=13), rand(2, 24, 8, seed=14)
    out_a, out_b = (proxy_guided_attention(qkv, layout, sdpa(heads), x, pl, 0.5)[0] for x in (a, b))
    assert changed_tokens(out_a, out_b).all()
    assert torch.equal(*(proxy_guided_attention(qkv, layout, sdpa(heads), x, pl, 0.0)[0] for x in (a, b)))


@pytest.mark.parametrize("s,per_shape", [(1.0, 1), (0.5, 2)])
def test_one_batched_call_per_window_shape(s, per_shape):
    grid, B, C = (2, 7, 6), 2, 4
    calls = []
    layout = make_layout(grid, (2, 3, 3), shifted=True)  # segments 1 / 3 / 3 rows, 1 / 3 / 2 columns
    pl = ProxyLayout(layout, (1, 3, 2), radius=0)
    proxy_guided_attention(rand(B, 84, C), layout, sdpa(1, calls), rand(B, 6, C), pl, s)
    assert calls[0] == ((B, 6, C), (B, 6, C))  # the proxy's own full attention
    expected = []
    for (shape, windows), P in zip(layout.groups, pl.keys_per_group):
        L = math.prod(shape)
        expected.append(((B * len(windows), L, C), (B * len(windows), L + P, C)))
        if per_shape == 2:
            expected.append(((B * len(windows), L, C), (B * len(windows), L, C)))
    assert calls[1:] == expected


def test_batch_items_are_independent_and_a_projector_gives_the_same_result():
    grid, heads = (2, 6, 5), 2
    qkv, proxy_qkv = rand(3, 60, 8, seed=15), rand(3, 12, 8, seed=16)
    layout = make_layout(grid, (2, 3, 3), shifted=True)
    pl = ProxyLayout(layout, (2, 3, 2), radius=1)
    both, proxy_both = proxy_guided_attention(qkv, layout, sdpa(heads), proxy_qkv, pl, 0.8)
    for i in range(3):
        one, proxy_one = proxy_guided_attention([t[i:i + 1] for t in qkv], layout, sdpa(heads),
                                                [t[i:i + 1] for t in proxy_qkv], pl, 0.8)
        torch.testing.assert_close(both[i:i + 1], one, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(proxy_both[i:i + 1], proxy_one, rtol=1e-12, atol=1e-12)
    projected, _ = proxy_guided_attention(lambda i: qkv[i], layout, sdpa(heads), [None, *proxy_qkv[1:]], pl, 0.8)
    assert torch.equal(projected, both)


# measured (torch 2.11, CPU), relative error against float64 of the unguided op / the guided op at
# s = 1 and 0.4: float32 1.3e-7 / 1.8e-7, 1.3e-7; bfloat16 3.2e-3 / 3.6e-3, 3.5e-3.
# Bound: twice the unguided op's own error (low-precision PyTorch's error on the same inputs).
@pytest.mark.parametrize("dtype,ceiling", [(torch.float32, 1e-6), (torch.bfloat16, 1e-2)])
@pytest.mark.parametrize("s", [1.0, 0.4])
def test_low_precision_stays_as_close_to_float64_as_the_unguided_op(dtype, ceiling, s):
    grid, heads = (2, 9, 7), 2
    qkv, proxy_qkv = rand(2, 126, 16, seed=17), rand(2, 2 * 3 * 3, 16, seed=18)
    layout = make_layout(grid, (2, 4, 3), shifted=True)
    pl = ProxyLayout(layout, (2, 3, 3), radius=1)
    low = lambda xs: [t.to(dtype) for t in xs]  # noqa: E731
    ref, _ = proxy_guided_attention(qkv, layout, sdpa(heads), proxy_qkv, pl, s)
    out, proxy_out = proxy_guided_attention(low(qkv), layout, sdpa(heads), low(proxy_qkv), pl, s)
    assert out.dtype == proxy_out.dtype == dtype
    unguided_ref, _ = windowed_attention(qkv, layout, sdpa(heads))
    unguided, _ = windowed_attention(low(qkv), layout, sdpa(heads))
    rel = lambda a, b: ((a.double() - b).norm() / b.norm()).item()  # noqa: E731
    own_error = rel(unguided, unguided_ref)
    assert rel(out, ref) <= 2 * own_error and rel(out, ref) < ceiling


def test_positions_of_a_same_size_proxy_are_the_grid_for_every_alignment():
    grid = (5, 7, 4)
    t, h, w = torch.meshgrid(*(torch.arange(n, dtype=torch.float64) for n in grid), indexing="ij")
    grid_positions = torch.stack((t, h, w), -1).reshape(-1, 3)
    for align in (("causal", "centres", "centres"), ("ends", "ends", "ends"), ("centres", "causal", "ends")):
        assert torch.equal(proxy_positions(grid, grid, align), grid_positions)
    table = rope_freqs(proxy_positions(grid, grid), wan_axes_dim(128))
    assert torch.equal(table, rope_freqs(grid_positions, wan_axes_dim(128)))


def test_positions_interpolate_onto_the_video_grid():
    # spatial cell centres: 135 rows from a 45-row proxy, cell j covers rows 3j .. 3j + 2
    assert [float(p) for p, _, _ in axis_cells(135, 45, "centres")][:3] == [1.0, 4.0, 7.0]
    assert axis_cells(67, 23, "centres")[22][0] == Fraction(45, 2) * Fraction(67, 23) - Fraction(1, 2)  # exact
    # 81 frames (21 latents) from a half-rate proxy of 41 frames (11 latents)
    assert [float(p) for p, _, _ in axis_cells(21, 11, "ends")] == [2.0 * j for j in range(11)]
    assert [float(p) for p, _, _ in axis_cells(21, 11, "causal")] == [0.0] + [2.0 * j - 0.5 for j in range(1, 11)]
    footprints = [(float(a), float(b)) for _, a, b in axis_cells(21, 11, "causal")]
    assert footprints[:3] == [(-0.5, 0.5), (0.5, 2.5), (2.5, 4.5)]  # latent 0 alone, then pairs
    assert float(axis_cells(9, 1, "centres")[0][0]) == 4.0 and float(axis_cells(9, 1, "causal")[0][0]) == 0.0
    pos = proxy_positions((21, 135, 240), (11, 45, 80), scale=(1.0, 2.0, 1.0), shift=(0.0, 0.0, 5.0))
    assert pos.shape == (11 * 45 * 80, 3) and pos.dtype == torch.float64
    assert pos[0].tolist() == [0.0, 2.0, 6.0] and pos[-1].tolist() == [19.5, 2 * 133.0, 5 + 238.0]
    # footprints tile the axis [-1/2, size - 1/2) without gaps for centres and causal
    for align in ("centres", "causal"):
        cells = axis_cells(67, 23, align)
        assert cells[0][1] == -0.5 and cells[-1][2] == 66.5
        assert all(a[2] == b[1] for a, b in zip(cells, cells[1:]))


NEIGHBOURHOODS = [((21, 135, 240), (21, 45, 80), False, (11, 45, 80), (0, 2, 2), ("causal", "centres", "centres")),
                  ((21, 135, 240), (21, 45, 80), True, (21, 45, 80), (0, 3, 1), ("causal", "centres", "centres")),
                  ((21, 67, 120), (7, 30, 52), True, (11, 30, 52), 1, ("ends", "centres", "centres")),
                  ((9, 13, 11), (4, 5, 4), True, (3, 4, 4), 0, ("causal", "ends", "centres")),
                  ((9, 13, 11), (9, 3, 2), False, (1, 2, 11), 2, ("ends", "centres", "ends"))]


@pytest.mark.parametrize("grid,window,shifted,proxy,radius,align", NEIGHBOURHOODS)
def test_neighbourhoods_hold_the_cells_under_each_window_plus_the_margin(grid, window, shifted, proxy, radius, align):
    layout = make_layout(grid, window, shifted)
    pl = ProxyLayout(layout, proxy, "neighbourhood", radius, align)
    r = (radius,) * 3 if isinstance(radius, int) else radius
    for axis, (tiling, n, a) in enumerate(zip(layout.axes, proxy, align)):
        # footprints computed here in floats: width per cell, centred on the cell's position
        N = tiling.size
        pos = [float(p) for p, _, _ in axis_cells(N, n, a)]
        if n == 1:
            foot = [(-0.5, N - 0.5)]
        else:
            width = {"centres": N / n, "ends": (N - 1) / (n - 1), "causal": (N - 1) / (n - 1)}[a]
            widths = [1.0 if (a == "causal" and j == 0) else width for j in range(n)]
            foot = [(p - wd / 2, p + wd / 2) for p, wd in zip(pos, widths)]
        boxes = pl.boxes[axis]
        under, loose = [], []  # cells meeting each window's extent, with the float margin either way
        for start, length in zip(tiling.window_starts, tiling.window_lengths):
            lo, hi = start - 0.5, start + length - 0.5
            under.append([j for j, (fa, fb) in enumerate(foot) if fa < hi - 1e-9 and lo + 1e-9 < fb])
            loose.append([j for j, (fa, fb) in enumerate(foot) if fa < hi + 1e-9 and lo - 1e-9 < fb])
        for i, length in enumerate(tiling.window_lengths):
            first, count = boxes[i]
            assert 0 <= first and first + count <= n
            wanted = range(max(0, under[i][0] - r[axis]), min(n, under[i][-1] + 1 + r[axis]))
            assert set(wanted) <= set(range(first, first + count))  # the cells under it plus the margin
            same = [k for k, other in enumerate(tiling.window_lengths) if other == length]
            assert all(boxes[k][1] == count for k in same)  # equal windows see equal counts
            assert count <= min(n, max(len(loose[k]) for k in same) + 2 * r[axis])  # and no more than needed
    for (shape, windows), P in zip(layout.groups, pl.keys_per_group):
        for win in windows:
            assert math.prod(len(c) for c in pl.window_cells(win)) == P
    everything = ProxyLayout(layout, proxy, "all", align=align)
    assert everything.covers_all and everything.keys_per_group == (math.prod(proxy),) * len(layout.groups)


def test_neighbourhoods_bound_the_cost_at_4k():
    """14B at 4K: 3 x 3 windows of the native 21x45x80; a 720p proxy at half the frame rate."""
    layout = make_layout((21, 135, 240), (21, 45, 80), shifted=False)
    near = ProxyLayout(layout, (11, 45, 80), radius=(0, 2, 2))
    assert near.keys_per_group == (11 * 19 * 32,)  # 15 rows + 2 x 2, 27-28 columns + 2 x 2
    assert near.keys_per_group[0] < 0.1 * layout.window_tokens
    assert "9 of 21x45x80 see 6688" in near.describe()


def test_bad_settings_are_refused_with_the_value_and_the_fix():
    layout = make_layout((2, 6, 6), (2, 3, 3), shifted=False)
    with pytest.raises(ValueError, match="at most as large as the video"):
        ProxyLayout(layout, (2, 7, 3))
    with pytest.raises(ValueError, match="mode must be one of"):
        ProxyLayout(layout, (2, 3, 3), mode="near")
    with pytest.raises(ValueError, match="radius must be"):
        ProxyLayout(layout, (2, 3, 3), radius=-1)
    with pytest.raises(ValueError, match="alignment must be one of"):
        ProxyLayout(layout, (2, 3, 3), align=("causal", "center", "centres"))
    pl = ProxyLayout(layout, (2, 3, 3))
    qkv, proxy_qkv = rand(2, 72, 4), rand(2, 18, 4)
    with pytest.raises(ValueError, match=r"strength must be in \[0, 1\], got 1.5"):
        proxy_guided_attention(qkv, layout, sdpa(1), proxy_qkv, pl, 1.5)
    with pytest.raises(ValueError, match="build it from the layout of this call"):
        proxy_guided_attention(qkv, make_layout((2, 6, 6), (2, 2, 2), False), sdpa(1), proxy_qkv, pl, 1.0)
    with pytest.raises(ValueError, match="do not hold the proxy grid"):
        proxy_guided_attention(qkv, layout, sdpa(1), rand(2, 17, 4), pl, 1.0)
    with pytest.raises(ValueError, match="give every batch item"):
        proxy_guided_attention(qkv, layout, sdpa(1), rand(1, 18, 4), pl, 1.0)
