"""Sharing one call's windows out over ranks (attention.split): contiguous equal slot ranges, every token
owned by exactly one rank, the union of the ranks' streamed outputs equal to the one-device output, and the
threads' all-gather / all-reduce."""
import math
import threading

import pytest
import torch

from ultragen_core.attention import make_layout, windowed_attention
from ultragen_core.attention.split import RowExchange, shares, slot_costs, split_slots
from ultragen_core.attention.streamed import streamed_window_attention

from test_proxy import rand, sdpa
from test_streamed import projector

LAYOUTS = [((21, 135, 240), (21, 45, 80), False), ((21, 135, 240), (21, 45, 80), True),
           ((3, 9, 7), (3, 4, 3), True), ((2, 67, 5), (2, 16, 5), True), ((1, 5, 5), (1, 5, 5), False)]


@pytest.mark.parametrize("grid,window,shifted", LAYOUTS)
@pytest.mark.parametrize("ranks", [1, 2, 3, 8])
def test_ranges_are_contiguous_equal_to_a_slot_and_cover_every_slot(grid, window, shifted, ranks):
    layout = make_layout(grid, window, shifted)
    costs = slot_costs(layout, 100.0)
    ranges = split_slots(layout, ranks, 100.0)
    assert len(ranges) == ranks
    assert ranges[0][0] == 0 and ranges[-1][1] == layout.computed_tokens
    assert all(a[1] == b[0] and a[0] <= a[1] for a, b in zip(ranges, ranges[1:]))
    work = [float(costs[a:b].sum()) for a, b in ranges]
    assert max(work) <= float(costs.sum()) / ranks + float(costs.max())  # equal shares, to one slot
    owned = torch.cat([s.tokens for s in shares(layout, ranks, 100.0, "cpu")])
    assert torch.equal(owned.sort().values, torch.arange(math.prod(grid)))  # each token owned by one rank


def test_a_slot_costs_its_keys_plus_the_per_token_work_where_its_token_is_owned():
    layout = make_layout((1, 5, 5), (1, 4, 4), False)  # clamped windows overlap: 64 slots, 25 tokens
    costs = slot_costs(layout, 10.0)
    assert costs.numel() == 64 and float(costs.sum()) == 64 * 16 + 25 * 10


def test_4k_default_on_two_gpus_cuts_the_fifth_window_in_two():
    layout = make_layout((21, 135, 240), (21, 45, 80), False)  # Wan 14B at 4K, quality preset: 9 windows
    L = 21 * 45 * 80
    (a, b), (c, d) = split_slots(layout, 2, 29184.0)
    assert a == 0 and b == c and d == 9 * L and abs(b - 4.5 * L) <= 1


def test_no_ranks_is_refused():
    with pytest.raises(ValueError, match="at least one rank, got 0"):
        split_slots(make_layout((1, 8, 8), (1, 4, 4), False), 0)


@pytest.mark.parametrize("grid,window,shifted", LAYOUTS[2:])
@pytest.mark.parametrize("ranks", [2, 3, 5, 40])
@pytest.mark.parametrize("with_shared", [False, True])
def test_the_ranks_outputs_together_are_the_one_device_output(grid, window, shifted, ranks, with_shared):
    heads = 2
    qkv = rand(2, math.prod(grid), 8, seed=1)
    shared = rand(2, 5, 8, seed=2, count=2) if with_shared else None
    layout = make_layout(grid, window, shifted)
    ref, _ = windowed_attention(qkv, layout, sdpa(heads), shared_kv=shared)
    together = torch.full_like(ref, float("nan"))
    for share in shares(layout, ranks, 3.0, "cpu"):
        out = torch.full_like(ref, float("nan"))
        streamed_window_attention(projector(qkv), layout, sdpa(heads), out, 40, shared_kv=shared,
                                  slot_range=share.slots)
        mine = out.index_select(1, share.tokens)
        assert not mine.isnan().any()  # a rank writes every token it owns ...
        assert out.isnan().sum() == (out.shape[1] - share.tokens.numel()) * out.shape[0] * out.shape[2]
        together.index_copy_(1, share.tokens, mine)  # ... and no other
    torch.testing.assert_close(together, ref, rtol=1e-13, atol=1e-13)


def test_ranks_with_proxy_keys_together_match_the_explicit_reference():
    from test_proxy import naive_guided
    from ultragen_core.attention.proxy import ProxyLayout
    from ultragen_core.attention.streamed import ProxyKeys
    grid, proxy, heads = (2, 9, 7), (2, 3, 3), 2
    qkv = rand(2, math.prod(grid), 8, seed=3)
    _, kp, vp = rand(2, math.prod(proxy), 8, seed=4)
    layout = make_layout(grid, (2, 4, 3), True)
    pl = ProxyLayout(layout, proxy, "neighbourhood", (0, 1, 1), ("causal", "centres", "centres"))
    keys = ProxyKeys(kp, vp, pl, 0.6)
    together = torch.full_like(qkv[0], float("nan"))
    for share in shares(layout, 3, 0.0, "cpu"):
        out = torch.full_like(qkv[0], float("nan"))
        streamed_window_attention(projector(qkv), layout, sdpa(heads), out, 30, proxy=keys, slot_range=share.slots)
        together.index_copy_(1, share.tokens, out.index_select(1, share.tokens))
    torch.testing.assert_close(together, naive_guided(qkv, (None, kp, vp), layout, pl, heads, 0.6),
                               rtol=1e-12, atol=1e-12)


def run_ranks(ranks, fn):
    results, errors = [None] * ranks, [None] * ranks

    def work(r):
        try:
            results[r] = fn(r)
        except Exception as e:
            errors[r] = e
    threads = [threading.Thread(target=work, args=(r,)) for r in range(ranks)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert not any(t.is_alive() for t in threads), "a rank hangs"
    return results, errors


def test_all_gather_and_all_reduce_between_threads():
    ranks, L = 3, 10
    exchange = RowExchange(ranks)
    indices = [torch.tensor([0, 3, 6, 9]), torch.tensor([1, 4, 7]), torch.tensor([2, 5, 8])]
    full = torch.arange(2 * L * 4, dtype=torch.float64).view(2, L, 4)

    def rank(r):
        gathered = exchange.all_gather(r, full.index_select(1, indices[r]), indices, torch.zeros_like(full))
        again = exchange.all_gather(r, full.index_select(1, indices[r]) + 1, indices, torch.zeros_like(full))
        return gathered, again, exchange.all_reduce(r, torch.full((2, 3), float(r + 1)))
    results, errors = run_ranks(ranks, rank)
    assert errors == [None] * ranks
    for gathered, again, total in results:
        assert torch.equal(gathered, full) and torch.equal(again, full + 1)
        assert torch.equal(total, torch.full((2, 3), 6.0))
    own = [i.numel() for i in indices]
    sums = [2 * (6 - 2) * 4] * 3  # float32: 2 of the 6 sums per rank, from 2 others, then 4 of the others' sums
    assert exchange.received == [(2 * (L - n) * 4 * 8) * 2 + s for n, s in zip(own, sums)]  # float64 rows


def test_a_failed_rank_releases_the_others():
    exchange = RowExchange(3)

    def rank(r):
        if r == 1:
            exchange.abort()  # what the split does when a rank's work raises
            raise RuntimeError("rank 1 failed")
        return exchange.all_gather(r, torch.zeros(1, 1, 2), [torch.tensor([i]) for i in range(3)], torch.zeros(1, 3, 2))
    _, errors = run_ranks(3, rank)
    assert str(errors[1]) == "rank 1 failed"
    assert all("another GPU's part of this model call failed" in str(errors[r]) for r in (0, 2))


def test_a_worker_thread_that_never_starts_fails_the_call_instead_of_hanging(monkeypatch):
    from types import SimpleNamespace

    from ultragen_core.families.wan import wan_split
    from ultragen_core.adapters.base import CallState
    monkeypatch.setattr(wan_split, "START_TIMEOUT", 0.2)
    cpu = torch.device("cpu")
    split = wan_split.SplitRun([cpu, cpu], [None, None], lambda r, fn: None, lambda r: (None, None))  # drops work
    dm = SimpleNamespace(dim=8, blocks=[SimpleNamespace(ffn_dim=16)])
    options = {}
    with pytest.raises(RuntimeError, match=r"the worker thread of cpu did not start within 0.2 s"):
        wan_split.split_call(split, CallState(dm, None, True), dm, lambda *a, **k: None, [torch.zeros(1), options],
                             {}, options)


class FakePool:
    """ComfyUI's MultiGPUThreadPool interface, recording which device got what."""

    def __init__(self):
        self.submitted = []

    def submit(self, device, fn):
        self.submitted.append(device)

    def get_result(self, device):
        return None, None


def fake_clones(n):
    from types import SimpleNamespace
    return {torch.device("cuda", i): SimpleNamespace(model=SimpleNamespace(diffusion_model=f"dm{i}"), name=f"clone{i}")
            for i in range(n)}


def test_cfg_groups_give_comfyuis_scheduler_one_device_per_group_and_split_inside_each():
    from ultragen_core.families.wan import wan_split
    clones, pool = fake_clones(4), FakePool()
    options = {"multigpu_clones": clones, "multigpu_thread_pool": pool, "transformer_options": {}}
    runs, rest = wan_split.ComfyMultiGPU(groups=2).start(options, conds=2)
    cuda = [torch.device("cuda", i) for i in range(4)]
    assert rest["multigpu_clones"] == {cuda[0]: clones[cuda[0]], cuda[2]: clones[cuda[2]]}  # ComfyUI's CFG split
    assert set(runs) == {cuda[0], cuda[2]}
    assert runs[cuda[0]].devices == cuda[:2] and runs[cuda[2]].devices == cuda[2:]
    assert runs[cuda[2]].models == [None, "dm3"]
    runs[cuda[2]].submit(1, None)
    assert pool.submitted == [cuda[3]]  # rank 1 of the second group runs in cuda:3's worker
    assert wan_split.run_for(runs, cuda[2]) is runs[cuda[2]] and wan_split.run_for(runs, cuda[1]) is None


def test_one_group_or_one_conditioning_splits_every_call_over_all_gpus():
    from ultragen_core.families.wan import wan_split
    clones, pool = fake_clones(4), FakePool()
    options = {"multigpu_clones": clones, "multigpu_thread_pool": pool}
    for groups, conds in ((1, 2), (2, 1)):
        run, rest = wan_split.ComfyMultiGPU(groups=groups).start(options, conds=conds)
        assert "multigpu_clones" not in rest and rest["multigpu_thread_pool"] is pool
        assert run.devices == list(clones) and wan_split.run_for(run, torch.device("cuda", 0)) is run
    assert wan_split.ComfyMultiGPU().start({"transformer_options": {}}) == (None, {"transformer_options": {}})


@pytest.mark.parametrize("n,groups,sizes", [(4, 2, [2, 2]), (8, 2, [4, 4]), (5, 2, [3, 2]), (3, 3, [1, 1, 1])])
def test_device_groups_are_contiguous_and_nearly_equal(n, groups, sizes):
    from ultragen_core.families.wan.wan_split import device_groups
    got = device_groups(list(range(n)), groups)
    assert [len(g) for g in got] == sizes and sum(got, []) == list(range(n))


def test_the_cond_batch_wrapper_passes_comfyuis_options_through_without_the_split_setup_or_the_patch():
    from ultragen_core.families.wan import wan_split
    seen = []

    def executor(model, conds, x, t, options):
        seen.append(options)
    options = {"multigpu_clones": fake_clones(2), "multigpu_thread_pool": FakePool(),
               "transformer_options": {wan_split.SETUP_KEY: wan_split.ComfyMultiGPU()}}
    wan_split.calc_cond_batch_wrapper(executor, None, [[{}], [{}]], None, None, options)  # no UltraGen Apply
    assert seen[-1] is options
    options["transformer_options"]["ultragen"] = object()
    wan_split.calc_cond_batch_wrapper(executor, None, [[{"hooks": object()}], None], None, None, options)  # hooks
    assert seen[-1] is options
    wan_split.calc_cond_batch_wrapper(executor, None, [[{}], [{}]], None, None, options)
    assert "multigpu_clones" not in seen[-1]
    assert seen[-1]["transformer_options"][wan_split.SPLIT_KEY].ranks == 2
