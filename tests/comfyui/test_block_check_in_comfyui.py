"""The behavioural block check in the real ComfyUI runtime (both trees): this ComfyUI's Wan block streams, a
block refactored the way ComfyUI 0.38 did (a fused ``modulate`` in the model's module, the feed-forward as
a module of another class) streams too, and a block that computes something else runs whole, logged."""
import logging
import sys

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from test_apply import WAN_T2V, model_file, run, sample_prompt, settings
from test_memory_budget import TINY_BUDGET, budget, ultragen_lines


def forget_verdicts():
    """The verdicts are per block class, and these tests change what the class computes."""
    for name, module in list(sys.modules.items()):
        if name.endswith("ultragen_core.families.wan.wan_block"):
            module.forget_verdicts()


@pytest.fixture
def fresh(monkeypatch):
    forget_verdicts()
    yield monkeypatch
    monkeypatch.undo()
    forget_verdicts()


def fused_modulate(x, norm, shift, scale):
    """LayerNorm without affine and the modulation in one float32 expression (what a fused kernel computes)."""
    from comfy.ldm.wan.model import repeat_e
    shift, scale = repeat_e(shift, x), repeat_e(scale, x)
    var, mean = torch.var_mean(x.float(), dim=-1, keepdim=True, unbiased=False)
    return ((x.float() - mean) * torch.rsqrt(var + norm.eps) * (1 + scale.float()) + shift.float()).to(x.dtype)


class GeluFolded(nn.Module):
    """The feed-forward as a module of its own (not a Sequential, not indexable), GELU folded into forward;
    children named as ComfyUI's, so the checkpoint's keys load."""

    def __init__(self, sequential):
        super().__init__()
        self.add_module("0", sequential[0])
        self.add_module("2", sequential[2])

    def forward(self, x):
        return getattr(self, "2")(F.gelu(getattr(self, "0")(x), approximate="tanh"))


def refactored_forward(ffn_gate_offset=0.0):
    """WanAttentionBlock.forward as ComfyUI 0.38 writes it (the model module's ``modulate``), written here;
    ``ffn_gate_offset`` 1 makes it compute something else (the feed-forward gated by 1 + gate)."""
    def forward(self, x, e, freqs, context, context_img_len=257, transformer_options={}):
        from comfy.ldm.wan import model as wan
        m = self.modulation.to(device=x.device, dtype=x.dtype)
        e = (m + e).chunk(6, dim=1) if e.ndim < 4 else (m.unsqueeze(0) + e).unbind(2)
        x = x.contiguous()
        y = self.self_attn(wan.modulate(x, self.norm1, e[0], e[1]), freqs, transformer_options=transformer_options)
        x = torch.addcmul(x, y, wan.repeat_e(e[2], x))
        x = x + self.cross_attn(self.norm3(x), context, context_img_len=context_img_len,
                                transformer_options=transformer_options)
        y = self.ffn(wan.modulate(x, self.norm2, e[3], e[4]))
        return torch.addcmul(x, y, wan.repeat_e(e[5], x) + ffn_gate_offset)
    return forward


def refactor(monkeypatch, ffn_gate_offset=0.0):
    from comfy.ldm.wan import model as wan
    original_init = wan.WanAttentionBlock.__init__

    def init(self, *args, **kwargs):
        original_init(self, *args, **kwargs)
        self.ffn = GeluFolded(self.ffn)

    monkeypatch.setattr(wan, "modulate", fused_modulate, raising=False)
    monkeypatch.setattr(wan.WanAttentionBlock, "__init__", init)
    monkeypatch.setattr(wan.WanAttentionBlock, "forward", refactored_forward(ffn_gate_offset))


def whole_and_streamed(comfy, caplog):
    name = model_file(comfy, WAN_T2V)
    whole = run(comfy, sample_prompt(name, budget(settings(window=(1, 4, 4)), 0.0), steps=2))
    with caplog.at_level(logging.INFO):
        streamed = run(comfy, sample_prompt(name, budget(settings(window=(1, 4, 4)), TINY_BUDGET), steps=2))
    return whole, streamed, ultragen_lines(caplog)


def test_this_comfyuis_wan_block_passes_the_check_and_streams(comfy, caplog, fresh):
    whole, streamed, lines = whole_and_streamed(comfy, caplog)
    assert any(m.startswith("[UltraGen] WanAttentionBlock (comfy.ldm.wan.model, float32): the streamed path "
                            "(modulation: norm(x) * (1 + scale) + shift) equals the block's own forward") for m in lines), lines
    assert any("the blocks run their per-token work in chunks of 64 of" in m for m in lines), lines
    torch.testing.assert_close(streamed, whole, rtol=1e-5, atol=1e-5)


def test_a_block_refactored_like_comfyui_038_streams(comfy, caplog, fresh):
    refactor(fresh)
    whole, streamed, lines = whole_and_streamed(comfy, caplog)
    assert any("WanAttentionBlock (comfy.ldm.wan.model, float32): the streamed path (modulation: "
               "comfy.ldm.wan.model.modulate) equals the block's own forward" in m for m in lines), lines
    assert any("the blocks run their per-token work in chunks of 64 of" in m for m in lines), lines
    torch.testing.assert_close(streamed, whole, rtol=1e-5, atol=1e-5)
    fresh.undo()  # ComfyUI's own block again: the result is what the unrefactored model computes
    forget_verdicts()
    name = model_file(comfy, WAN_T2V)
    original = run(comfy, sample_prompt(name, budget(settings(window=(1, 4, 4)), 0.0), steps=2))
    torch.testing.assert_close(whole, original, rtol=1e-4, atol=1e-4)  # the refactor computes the same thing


def test_a_block_that_computes_something_else_runs_whole_and_says_why(comfy, caplog, fresh):
    refactor(fresh, ffn_gate_offset=1.0)
    whole, streamed, lines = whole_and_streamed(comfy, caplog)
    refusals = [m for m in lines if "does not compute what the block's own forward does" in m]
    assert refusals and "WanAttentionBlock (comfy.ldm.wan.model, float32)" in refusals[0], lines
    assert "comfy.ldm.wan.model.modulate: relative difference" in refusals[0], refusals[0]
    assert not any("per-token work in chunks" in m for m in lines), lines
    torch.testing.assert_close(streamed, whole, rtol=1e-5, atol=1e-5)  # the block ran whole: its own result


def test_streamed_blocks_never_hold_the_whole_modulated_input(comfy, caplog, fresh):
    """The self-attention input is computed per chunk of windows (ModulatedRows): whole only on the check's
    slice, and the result is the unlimited one (global branch, shifted windows)."""
    sizes = []
    for name, module in list(sys.modules.items()):
        if name.endswith("ultragen_core.families.wan.wan_block"):
            original = module.ModulatedRows.whole

            def recorded(self, chunk=2**16, original=original):
                sizes.append(self.shape[1])
                return original(self, chunk)
            fresh.setattr(module.ModulatedRows, "whole", recorded)
    whole, streamed, lines = whole_and_streamed(comfy, caplog)
    assert any("per-token work in chunks of 64 of 512 tokens" in m for m in lines), lines
    assert sizes and max(sizes) <= 48, sizes  # the check's 48-token slice only
    torch.testing.assert_close(streamed, whole, rtol=1e-5, atol=1e-5)
