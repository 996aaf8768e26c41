"""The memory budget: below what the whole sequence needs, the patch streams its tokens in chunks (q / k / v
of a few windows, the blocks' per-token work over chunks of rows). The result must not change."""
import logging
import re

import pytest
import torch

from test_apply import WAN_5B, WAN_I2V, WAN_REF, WAN_T2V, WAN_VACE, model_file, run, sample_prompt, settings
from test_wan_variants import attn1_prompt, wan_source_has, with_extra_latent

TINY_BUDGET = 1e-6  # GB: the smallest chunks (64 tokens of the 512 a tiny video has)


def budget(node: dict, gb: float) -> dict:
    node["inputs"]["memory_budget_gb"] = gb
    return node


def ultragen_lines(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.getMessage().startswith("[UltraGen]")]


@pytest.mark.parametrize("spec,channels,extra", [(WAN_T2V, 16, None), (WAN_5B, 48, None), (WAN_I2V, 16, None),
                                                 (WAN_VACE, 16, None), (WAN_REF, 16, "reference_latent")],
                         ids=["t2v", "5b", "i2v", "vace", "reference"])
def test_streamed_chunks_give_the_unlimited_result(comfy, caplog, spec, channels, extra):
    name = model_file(comfy, spec)

    def prompt(gb):
        p = sample_prompt(name, budget(settings(window=(1, 4, 4)), gb), channels=channels, steps=2)
        return with_extra_latent(p, extra) if extra else p

    whole = run(comfy, prompt(0.0))
    with caplog.at_level(logging.INFO):
        streamed = run(comfy, prompt(TINY_BUDGET))
    line = next(m for m in ultragen_lines(caplog) if "memory:" in m)
    assert re.search(r"budget 1e-06 GB \(UltraGen Attention Settings\).* in chunks of 64 \(\d+ per block\)", line), line
    assert any("below what" in m for m in ultragen_lines(caplog))  # the warning that 1e-6 GB cannot fit
    assert any("the blocks run their per-token work in chunks of 64 of" in m for m in ultragen_lines(caplog))
    torch.testing.assert_close(streamed, whole, rtol=1e-5, atol=1e-5)  # float32: only row counts of matmuls differ


def test_streamed_blocks_equal_comfyuis_block_with_full_attention_blocks_and_both_fusions(comfy):
    name = model_file(comfy, WAN_T2V)
    for cfg in (settings(window=(2, 4, 4), full_attention_blocks="0"), settings(window=(1, 8, 4), fusion="gate"),
                settings(window=(1, 4, 4), shift="none", global_branch=False, fusion="local_only")):
        whole = run(comfy, sample_prompt(name, cfg))
        streamed = run(comfy, sample_prompt(name, budget(dict(cfg, inputs=dict(cfg["inputs"])), TINY_BUDGET)))
        torch.testing.assert_close(streamed, whole, rtol=1e-5, atol=1e-5)


def test_attn1_patches_still_get_the_whole_sequence_when_streaming(comfy):
    if not wan_source_has("WanSelfAttention", "attn1_patch"):
        pytest.skip("this ComfyUI's Wan attention runs no attn1_patch")
    name = model_file(comfy, WAN_T2V)
    cfg = settings(window=(1, 4, 4))
    whole = run(comfy, attn1_prompt(name, cfg, 0.5, "w"), key="w")
    streamed = run(comfy, attn1_prompt(name, budget(cfg, TINY_BUDGET), 0.5, "s"), key="s")
    torch.testing.assert_close(streamed, whole, rtol=1e-5, atol=1e-5)


def test_proxy_guidance_streams_too(comfy):
    from test_proxy_guidance import guided
    name = model_file(comfy, WAN_T2V)
    whole = run(comfy, guided(name, 0.7, patch=settings(window=(1, 4, 4))))
    streamed = run(comfy, guided(name, 0.7, patch=budget(settings(window=(1, 4, 4)), TINY_BUDGET)))
    torch.testing.assert_close(streamed, whole, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("frames,length", [(1, 512), (4, 512), (3, 512), (7, 50), (5, 5)])
def test_rows_of_a_modulation_equal_comfyuis_repeat_e(comfy, frames, length):
    from comfy.ldm.wan.model import repeat_e
    from ultragen_core.families.wan.wan_block import rows_at, rows_of
    e = torch.randn(2, frames, 8)
    x = torch.empty(2, length, 8)
    full = repeat_e(e, x).expand(2, length, 8) if frames == 1 else repeat_e(e, x)
    for lo, hi in ((0, length), (0, 3), (length // 3, length // 2 + 1), (length - 2, length)):
        assert torch.equal(rows_of(e, length, lo, hi).expand(2, hi - lo, 8), full[:, lo:hi])
    tokens = torch.tensor([length - 1, 0, length // 2, 1 % length])  # any order: a split rank's owned tokens
    assert torch.equal(rows_at(e, length, tokens).expand(2, 4, 8), full[:, tokens])


def test_a_negative_budget_is_refused_at_its_input(comfy):
    name = model_file(comfy, WAN_T2V)
    ok, _, _, errors = comfy.validate(sample_prompt(name, budget(settings(window=(1, 4, 4)), -1.0)))
    assert not ok
    assert [e["extra_info"]["input_name"] for e in errors["settings"]["errors"]] == ["memory_budget_gb"]


def test_self_attention_keeps_at_most_tokens_in_flight_whatever_the_budget(comfy, monkeypatch):
    import sys
    from harness import captured
    name = model_file(comfy, WAN_T2V)

    def sampled(key):
        p = sample_prompt(name, settings(window=(1, 4, 4)), cfg=1.0, steps=2, probe=True, key=key)
        return run(comfy, p, key), captured()[key + "_probe"]

    whole, calls = sampled("whole")
    adapters = [m for k, m in sys.modules.items() if k.endswith("ultragen_core.families.wan.wan")]
    assert adapters
    for module in adapters:
        monkeypatch.setattr(module, "TOKENS_IN_FLIGHT", 32)  # two windows of 1x4x4 per attention call
    capped, capped_calls = sampled("capped")
    # 2 frames x 16 x 16 tokens = 32 windows of 16 tokens: one call of all 32, or 16 calls of 2
    assert (32, 16, 128, 16) in calls and (32, 16, 128, 16) not in capped_calls
    assert (2, 16, 128, 16) in capped_calls
    torch.testing.assert_close(capped, whole, rtol=1e-5, atol=1e-5)
