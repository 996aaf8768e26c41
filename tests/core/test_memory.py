"""The memory plan: chunk sizes from a budget (no GPU needed: an explicit budget on the CPU device)."""
import pytest
import torch

from ultragen_core.config import AttentionSettings
from ultragen_core.memory import MARGIN, MIN_CHUNK, per_token_bytes, plan_memory

CPU = torch.device("cpu")
WAN14B_4K = dict(tokens=21 * 135 * 240, batch=1, dim=5120, ffn_dim=13824, itemsize=2, device=CPU)


def test_automatic_on_the_cpu_takes_every_token_at_once():
    plan = plan_memory(**WAN14B_4K)
    assert plan.chunk_tokens == plan.tokens and plan.chunks == 1 and plan.budget is None
    assert "no limit" in plan.describe()


def test_the_chunk_is_what_the_budget_leaves_after_two_sequence_size_tensors():
    plan = plan_memory(**WAN14B_4K, budget_gb=32, largest_window=21 * 45 * 80)
    full = WAN14B_4K["tokens"] * 5120 * 2
    expected = (32 * 1024**3 - 2 * full - MARGIN) // per_token_bytes(5120, 13824, 2)  # input, output
    assert plan.chunk_tokens == int(expected) and plan.fits
    assert plan.chunks == -(-plan.tokens // plan.chunk_tokens) > 1
    assert "budget 32 GB" in plan.describe() and f"in chunks of {plan.chunk_tokens}" in plan.describe()


def test_more_budget_means_larger_chunks_up_to_everything():
    sizes = [plan_memory(**WAN14B_4K, budget_gb=gb).chunk_tokens for gb in (24, 32, 48, 80, 500)]
    assert sizes == sorted(sizes) and sizes[-1] == WAN14B_4K["tokens"]


def test_a_budget_below_the_smallest_chunk_says_it_does_not_fit():
    plan = plan_memory(**WAN14B_4K, budget_gb=13, largest_window=21 * 45 * 80)  # below input + output
    assert plan.chunk_tokens == MIN_CHUNK and not plan.fits


def test_a_negative_budget_is_refused_with_the_value():
    with pytest.raises(ValueError, match=r"memory_budget_gb must be >= 0 GB .* got -2"):
        AttentionSettings(memory_budget_gb=-2)
