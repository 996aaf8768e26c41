"""The streamed window attention (q / k / v only for the windows in flight) against the batched ops and
the explicit float64 reference, for every chunk size from one window per call to all windows at once."""
import math

import pytest
import torch

from ultragen_core.attention import make_layout, windowed_attention
from ultragen_core.attention.proxy import ProxyLayout
from ultragen_core.attention.streamed import ProxyKeys, streamed_window_attention

from test_proxy import CASES, naive_guided, rand, sdpa


def projector(qkv, calls=None):
    """q, k, v of given tokens, gathered from full tensors (what the Wan patch computes per chunk)."""
    def project(tokens):
        if calls is not None:
            calls.append(tokens.numel())
        return [t.index_select(1, tokens) for t in qkv]
    return project


def streamed(qkv, layout, heads, chunk, **kw):
    out = torch.full_like(qkv[0], float("nan"))
    return streamed_window_attention(projector(qkv), layout, sdpa(heads), out, chunk, **kw)


@pytest.mark.parametrize("grid,window,shifted", [((3, 9, 7), (3, 4, 3), True), ((2, 67, 5), (2, 16, 5), True),
                                                 ((1, 135, 3), (1, 45, 3), False), ((4, 6, 6), (2, 6, 6), False)])
@pytest.mark.parametrize("chunk", [1, 50, 10**9])
@pytest.mark.parametrize("with_shared", [False, True])
def test_equals_the_batched_windowed_attention(grid, window, shifted, chunk, with_shared):
    heads = 2
    qkv = rand(2, math.prod(grid), 8, seed=1)
    shared = rand(2, 5, 8, seed=2, count=2) if with_shared else None
    layout = make_layout(grid, window, shifted)
    ref, _ = windowed_attention(qkv, layout, sdpa(heads), shared_kv=shared)
    out = streamed(qkv, layout, heads, chunk, shared_kv=shared)
    torch.testing.assert_close(out, ref, rtol=1e-13, atol=1e-13)  # float64: only the batching differs


@pytest.mark.parametrize("s", [1.0, 0.35, 0.0])
@pytest.mark.parametrize("grid,window,shifted,proxy,mode,radius,align", CASES)
@pytest.mark.parametrize("chunk", [1, 40])
def test_with_a_proxy_equals_the_explicit_loop_reference(grid, window, shifted, proxy, mode, radius, align, s, chunk):
    heads, C, B = 2, 8, 2
    qkv = rand(B, math.prod(grid), C, seed=1)
    _, kp, vp = rand(B, math.prod(proxy), C, seed=2)
    layout = make_layout(grid, window, shifted)
    pl = ProxyLayout(layout, proxy, mode, radius, align)
    out = streamed(qkv, layout, heads, chunk, proxy=ProxyKeys(kp, vp, pl, s))
    ref = naive_guided(qkv, (None, kp, vp), layout, pl, heads, s)
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)


def test_shared_and_proxy_keys_together_match_the_reference():
    grid, proxy, heads = (2, 6, 5), (2, 3, 3), 2
    qkv = rand(2, 60, 8, seed=3)
    _, kp, vp = rand(2, 18, 8, seed=4)
    shared = rand(2, 4, 8, seed=5, count=2)
    layout = make_layout(grid, (2, 3, 3), shifted=True)
    pl = ProxyLayout(layout, proxy, radius=0)
    out = streamed(qkv, layout, heads, 9, shared_kv=shared, proxy=ProxyKeys(kp, vp, pl, 0.6))
    ref = naive_guided(qkv, (None, kp, vp), layout, pl, heads, 0.6, shared_kv=shared)
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)


def test_the_chunk_bounds_the_tokens_in_flight_and_every_token_is_written_once():
    grid, window = (3, 9, 7), (3, 4, 3)
    layout = make_layout(grid, window, shifted=True)
    qkv = rand(1, math.prod(grid), 8, seed=6)
    calls = []
    out = torch.full_like(qkv[0], float("nan"))
    streamed_window_attention(projector(qkv, calls), layout, sdpa(2), out, chunk_tokens=30)
    largest = max(math.prod(shape) for shape, _ in layout.groups)
    assert max(calls) <= max(30, largest)  # whole windows; more than one only while they fit
    assert sum(calls) == layout.computed_tokens and not out.isnan().any()  # every token written
    assert len(calls) > len(layout.groups)  # really in several calls


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_low_precision_equals_the_batched_op_per_window(dtype):
    """The same windows in other batches: sdpa's result per batch entry does not depend on the batch."""
    grid, heads = (3, 9, 7), 2
    qkv = rand(2, math.prod(grid), 8, dtype=dtype, seed=7)
    layout = make_layout(grid, (3, 4, 3), shifted=True)
    ref, _ = windowed_attention(qkv, layout, sdpa(heads))
    for chunk in (1, 60):
        torch.testing.assert_close(streamed(qkv, layout, heads, chunk), ref, rtol=0, atol=0)


def test_a_wrong_output_size_or_proxy_layout_is_refused():
    layout = make_layout((2, 6, 6), (2, 3, 3), shifted=False)
    qkv = rand(1, 72, 8)
    with pytest.raises(ValueError, match="72 tokens"):
        streamed_window_attention(projector(qkv), make_layout((2, 6, 5), (2, 3, 3), False), sdpa(2),
                                  torch.empty(1, 72, 8, dtype=torch.float64), 10)
    other = ProxyLayout(make_layout((2, 6, 6), (2, 2, 2), shifted=False), (2, 3, 3))
    with pytest.raises(ValueError, match="another window layout"):
        streamed(qkv, layout, 2, 10, proxy=ProxyKeys(qkv[1][:, :18], qkv[2][:, :18], other, 1.0))


def test_attention_that_accepts_containers_gets_each_windows_inputs_handed_over():
    """The windows' q / k / v are handed over (their last use): a container-aware backend owns them."""
    from ultragen_core.attention.kernels import Handover
    grid, heads = (3, 9, 7), 2
    qkv = rand(2, math.prod(grid), 8, seed=8)
    layout = make_layout(grid, (3, 4, 3), shifted=True)
    seen = []

    def attention(q, k, v):
        seen.append(all(isinstance(t, Handover) for t in (q, k, v)))
        return sdpa(heads)(q.take(), k.take(), v.take())
    attention.accepts_containers = True
    out = streamed_window_attention(projector(qkv), layout, attention, torch.full_like(qkv[0], float("nan")), 60)
    ref, _ = windowed_attention(qkv, layout, sdpa(heads))
    torch.testing.assert_close(out, ref, rtol=1e-13, atol=1e-13)
    assert seen and all(seen)
