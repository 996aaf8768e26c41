"""The patch's RoPE (complex multiply) against ComfyUI's apply_rope1, and packs that replace it."""
import inspect
import logging

import torch

from harness import captured
from test_apply import LOCAL_ONLY, WAN_T2V, model_file, run, sample_prompt, settings
from ultragen_core.attention.rope import apply_complex, complex_table


def wan_freqs(comfy, grid=(3, 9, 14), head_dim=128):
    """The RoPE table WanModel builds for a grid (its own EmbedND and ids)."""
    from comfy.ldm.flux.layers import EmbedND
    d = head_dim
    embed = EmbedND(dim=d, theta=10000.0, axes_dim=[d - 4 * (d // 6), 2 * (d // 6), 2 * (d // 6)])
    ids = torch.stack(torch.meshgrid(*(torch.arange(n, dtype=torch.float32) * 7 for n in grid), indexing="ij"), -1)
    return embed(ids.reshape(1, -1, 3)).movedim(1, 2)  # (1, N, 1, d/2, 2, 2)


def test_complex_rope_matches_comfyui_apply_rope1(comfy):
    from comfy.ldm.flux.math import apply_rope1
    freqs = wan_freqs(comfy)
    table = complex_table(freqs)
    assert table is not None
    x = torch.randn(2, freqs.shape[1], 4, 128)
    torch.testing.assert_close(apply_complex(x, table), apply_rope1(x, freqs), rtol=1e-5, atol=1e-5)
    xb = x.bfloat16()
    ours, theirs = apply_complex(xb, table).float(), apply_rope1(xb, freqs).float()
    differ = ours != theirs  # float32 rounding order only: rare one-ulp differences after rounding to bf16
    assert differ.float().mean() < 1e-3
    assert ((ours - theirs).abs() <= theirs.abs() * 2 ** -7 + 1e-30)[differ].all()


def test_a_pack_that_replaces_apply_rope1_is_still_called(comfy, monkeypatch, caplog):
    import comfy.ldm.wan.model as wan
    name = model_file(comfy, WAN_T2V)
    prompt = sample_prompt(name, settings(window=(1, 4, 4), **LOCAL_ONLY), key="ours")
    ours = run(comfy, prompt, "ours")
    calls = []
    original = wan.apply_rope1

    def replaced(x, freqs):
        calls.append(x.shape)
        return original(x, freqs)
    monkeypatch.setattr(wan, "apply_rope1", replaced)
    with caplog.at_level(logging.INFO):
        theirs = run(comfy, sample_prompt(name, settings(window=(1, 4, 4), **LOCAL_ONLY), key="theirs"), "theirs")
    assert calls, "the replacement apply_rope1 was not called"
    assert any("apply_rope1 is" in r.getMessage() and "(another pack)" in r.getMessage() for r in caplog.records)
    torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-4)
    assert captured()["ours"] is ours


def test_rope_freqs_at_integer_positions_equal_wan_rope_encode(comfy):
    """The proxy's RoPE function (core) against the model's own ``WanModel.rope_encode``."""
    from types import SimpleNamespace

    from comfy.ldm.flux.layers import EmbedND
    from comfy.ldm.wan.model import WanModel

    from ultragen_core.attention.proxy import proxy_positions
    from ultragen_core.attention.rope import rope_freqs, wan_axes_dim
    d, grid = 128, (3, 7, 11)
    stub = SimpleNamespace(patch_size=(1, 2, 2), dim=d, num_heads=1,
                           rope_embedder=EmbedND(dim=d, theta=10000.0, axes_dim=[d - 4 * (d // 6), 2 * (d // 6), 2 * (d // 6)]))
    theirs = WanModel.rope_encode(stub, grid[0], 2 * grid[1], 2 * grid[2], device="cpu", dtype=torch.float32)
    ours = rope_freqs(proxy_positions(grid, grid), wan_axes_dim(d))  # a same-size proxy sits on the grid
    assert torch.equal(ours, theirs)
    if "transformer_options" not in inspect.signature(WanModel.rope_encode).parameters:
        return  # ComfyUI 0.3.64: no rope_options (ScaleROPE) yet
    # rope_options (ScaleROPE): the video token i sits at shift + scale * i; so does a same-size proxy
    options = {"rope_options": {"scale_t": 1.0, "scale_y": 2.0, "scale_x": 0.5, "shift_y": 3.0}}
    theirs = WanModel.rope_encode(stub, grid[0], 2 * grid[1], 2 * grid[2], device="cpu", dtype=torch.float32,
                                  transformer_options=options)
    ours = rope_freqs(proxy_positions(grid, grid, scale=(1.0, 2.0, 0.5), shift=(0.0, 3.0, 0.0)), wan_axes_dim(d))
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-6)  # linspace in float32 vs exact positions
