"""The behavioural check that decides whether a Wan block class streams (families/wan/wan_block.py): ComfyUI's own
forward and the streamed path run on a slice of the call's inputs. Stand-in blocks, no ComfyUI."""
import logging
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from ultragen_core.families.wan import wan_block
from ultragen_core.adapters.base import CallState, RunState, run_with_call
from ultragen_core.memory import MemoryPlan

import wan_block_fused
from wan_block_standins import NoModulationBlock, OtherBlock, UnfusedBlock, inputs


@pytest.fixture(autouse=True)
def fresh_verdicts():
    wan_block.forget_verdicts()
    yield
    wan_block.forget_verdicts()


def call_for(block, chunk):
    """A call the patch changes, streaming ``chunk`` tokens at a time, over a model whose block 0 is ``block``."""
    model = nn.Module()
    model.blocks = nn.ModuleList([block])
    return CallState(model, SimpleNamespace(is_identity=False), True, memory=MemoryPlan(chunk, 0, None, None, "test"))


def patched_call(block, args, chunk=20, holder=None):
    """Run the block through the pack's block replacement (StreamedWanBlock) in a streaming call."""
    holder = holder or RunState()
    x, e, freqs, context = args
    return run_with_call(call_for(block, chunk), wan_block.StreamedWanBlock(holder, 0), x, e, freqs, context,
                         context_img_len=0, transformer_options={})


def ultragen(caplog):
    return [r.getMessage() for r in caplog.records if r.getMessage().startswith("[UltraGen]")]


@pytest.mark.parametrize("frames", [None, 4])
def test_comfyuis_unfused_block_streams_and_equals_its_forward(caplog, frames):
    block, args = UnfusedBlock(), inputs(frames=frames)
    with caplog.at_level(logging.INFO), torch.no_grad():
        streamed = patched_call(block, args)
        whole = block(*args, context_img_len=0)
    torch.testing.assert_close(streamed, whole, rtol=1e-5, atol=1e-5)
    verdict = wan_block._VERDICTS[(UnfusedBlock, torch.float32, args[1].ndim)]
    assert verdict.streams and verdict.modulate is wan_block.modulate_unfused
    lines = ultragen(caplog)
    assert any("UnfusedBlock" in m and "equals the block's own forward on a 48-token slice" in m for m in lines), lines
    assert any("in chunks of 20 of 96 tokens" in m for m in lines), lines


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("frames", [None, 3])
def test_a_block_refactored_like_comfyui_038_streams_with_its_own_modulate(caplog, dtype, frames):
    block, args = wan_block_fused.FusedBlock().to(dtype), inputs(frames=frames, dtype=dtype, tokens=90)
    with caplog.at_level(logging.INFO), torch.no_grad():
        whole = block(*args, context_img_len=0)
        before = dict(wan_block_fused.CALLS)
        streamed = patched_call(block, args)
        after_first = dict(wan_block_fused.CALLS)
        patched_call(block, args)
    verdict = wan_block._VERDICTS[(wan_block_fused.FusedBlock, dtype, args[1].ndim)]
    assert verdict.streams and verdict.modulate is wan_block_fused.modulate  # the module's own, fused
    assert after_first["forward"] - before["forward"] == 1  # the check, once
    assert wan_block_fused.CALLS["forward"] == after_first["forward"]  # the second call: cached, no check
    assert wan_block_fused.CALLS["modulate"] > after_first["modulate"]  # the streamed path calls it per chunk
    rtol = wan_block.tolerance(dtype)
    err = float((streamed.double() - whole.double()).norm() / whole.double().norm())
    assert err <= rtol, err
    assert any("FusedBlock" in m and "wan_block_fused.modulate" in m for m in ultragen(caplog))


def test_a_block_that_computes_something_else_runs_whole_and_says_why(caplog):
    block, args = OtherBlock(), inputs()
    holder = RunState()
    with caplog.at_level(logging.INFO), torch.no_grad():
        out = patched_call(block, args, holder=holder)
        again = patched_call(block, args, holder=holder)
        whole = block(*args, context_img_len=0)
    assert torch.equal(out, whole) and torch.equal(again, whole)  # ComfyUI's forward, unchanged
    assert not wan_block.known_block(block)
    refusals = [m for m in ultragen(caplog) if "does not compute what the block's own forward does" in m]
    # once when the check ran, once for this applied patch; every candidate modulation tried is named
    assert len(refusals) == 2, ultragen(caplog)
    assert "OtherBlock" in refusals[0] and "relative difference" in refusals[0] and "runs whole" in refusals[0]
    assert not any("in chunks of 20" in m for m in ultragen(caplog))


def test_a_block_without_the_parts_runs_whole_and_names_them(caplog):
    block, args = NoModulationBlock(), inputs()
    with caplog.at_level(logging.INFO), torch.no_grad():
        out = patched_call(block, args)
        whole = block(*args, context_img_len=0)
    assert torch.equal(out, whole)
    assert any("NoModulationBlock" in m and "has no modulation" in m for m in ultragen(caplog)), ultragen(caplog)


def test_a_forward_that_raises_on_the_slice_is_refused_not_raised(caplog):
    class Picky(UnfusedBlock):
        def forward(self, x, e, freqs, context, context_img_len=257, transformer_options={}):
            if x.shape[1] < 60:
                raise RuntimeError("needs 60 tokens")
            return super().forward(x, e, freqs, context, context_img_len, transformer_options)

    block, args = Picky(), inputs()
    with caplog.at_level(logging.INFO), torch.no_grad():
        out = patched_call(block, args)
    torch.testing.assert_close(out, UnfusedBlock.forward(block, *args, context_img_len=0), rtol=0, atol=0)
    assert any("raised RuntimeError (needs 60 tokens)" in m for m in ultragen(caplog)), ultragen(caplog)


def test_the_check_leaves_the_random_state_and_the_hooks_alone():
    calls = []
    options = {"patches": {"attn1_patch": [lambda a: calls.append("attn1") or a["x"]]},
               "optimized_attention_override": lambda *a, **k: calls.append("override")}
    block, (x, e, freqs, context) = UnfusedBlock(), inputs(tokens=30, batch=1)
    state = torch.get_rng_state()
    with torch.no_grad():
        verdict = wan_block.check_block(block, x, e, freqs, context, 0, options, call_for(block, 8))
    assert verdict.streams and "30-token slice" in verdict.found  # a short sequence: all of it
    assert torch.equal(torch.get_rng_state(), state) and calls == []


@pytest.mark.parametrize("dtype,bound", [(torch.float32, 1e-5), (torch.bfloat16, 2**-6), (torch.float16, 2**-9)])
def test_the_tolerance_is_twice_the_dtypes_epsilon(dtype, bound):
    assert wan_block.tolerance(dtype) == pytest.approx(bound)
