"""UltraGen Apply on HunyuanVideo 1.5 in the real ComfyUI runtime (tiny random-weight models of ComfyUI's own class,
see hunyuan_models.py): identity at native size, the full-attention limit (T2V, padding mask, I2V), locality,
text in every window, streaming, batch 2 with CFG, sampling above native size, blocks other packs replaced.
Tolerances: float32 on the CPU, 1e-5 where two computations of the same attention are compared (measured: about
2e-6)."""
import logging
import math

import pytest
import torch

import hunyuan_models
from hunyuan_models import (FULL_LIMIT, GRID, TOL, cond, i2v, prompt, reachable, token_change, with_block_replace,
                            with_budget)
from test_apply import LOCAL_ONLY, run, settings

hy = hunyuan_models.hy  # the fixture: the tiny HunyuanVideo 1.5 checkpoint

# --- identity and the full-attention limit --------------------------------------------------------------------

def test_at_or_below_native_size_the_output_is_comfyuis_bit_for_bit(comfy, hy):
    plain = run(comfy, prompt(hy))
    assert torch.equal(plain, run(comfy, prompt(hy, "default")))  # automatic: the grid is far below 720p
    assert torch.equal(plain, run(comfy, prompt(hy, settings(window=(64, 64, 64), **LOCAL_ONLY))))
    windowed = run(comfy, prompt(hy, settings(window=(1, 4, 4))))
    assert not torch.allclose(plain, windowed, atol=1e-3) and torch.isfinite(windowed).all()


@pytest.mark.parametrize("padding,image", [(0, False), (3, False), (0, True)], ids=["t2v", "padding-mask", "i2v"])
def test_one_window_over_the_grid_with_every_token_pooled_is_full_attention(comfy, hy, caplog, padding, image):
    """One window over the whole grid (video queries over all video and text keys) and a global branch of factor
    1 weighted 0 (text queries over all text and video keys): the patched path computes exactly full attention,
    so the result equals ComfyUI's up to float rounding. With a padding mask on the positive prompt (whose
    length differs from the negative's, so cond and uncond run as separate calls) the padding keys are dropped."""
    pos = cond(tokens=8, padding=padding)
    wrap = i2v if image else (lambda p: p)
    plain = run(comfy, wrap(prompt(hy, positive=pos)))
    with caplog.at_level(logging.INFO):
        ours = run(comfy, wrap(prompt(hy, settings(**FULL_LIMIT), positive=pos)))
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("[UltraGen]")]
    assert any("windows 2x12x12" in m and "pooled x1" in m for m in lines), lines
    assert not any("full attention there" in m for m in lines), lines  # the windowed blocks really ran
    assert not torch.equal(plain, ours)  # another computation ...
    torch.testing.assert_close(ours, plain, **TOL)  # ... of the same attention
    if padding:  # and the mask matters: without it the output is another
        assert not torch.allclose(plain, run(comfy, prompt(hy, positive=cond(tokens=8))), atol=1e-3)
    if image:  # and the image inputs matter
        assert not torch.allclose(plain, run(comfy, prompt(hy, positive=pos)), atol=1e-3)


# --- locality, conditioning, streaming, batches ---------------------------------------------------------------

def test_a_corner_change_stays_in_its_windows_without_global_branch_and_spreads_with_it(comfy, hy):
    window = (1, 4, 4)
    reach = reachable(GRID, window, {(0, 0, 0), (0, 0, 1), (0, 1, 0), (0, 1, 1)}, blocks=3)
    outside = torch.ones(GRID, dtype=torch.bool)
    for tok in reach:
        outside[tok] = False
    assert outside.sum() > math.prod(GRID) // 2

    def change(extra):
        cfg = settings(window=window, **extra)
        a = run(comfy, prompt(hy, cfg, cfg=1.0, denoise=0.5))
        b = run(comfy, prompt(hy, cfg, cfg=1.0, denoise=0.5, bump=5.0))
        return token_change(a, b)
    local = change(LOCAL_ONLY)
    assert torch.all(local[outside] == 0), "a change crossed windows (through the text tokens?)"
    assert local[~outside].max() > 0
    spread = change(dict(global_compression=3))
    assert (spread[outside] > 0).float().mean() > 0.5, "the global branch should carry the change everywhere"


@pytest.mark.parametrize("extra", [LOCAL_ONLY, dict(global_compression=3)], ids=["local-only", "global"])
def test_the_text_reaches_every_window(comfy, hy, extra):
    cfg = settings(window=(1, 4, 4), **extra)
    a = run(comfy, prompt(hy, cfg, cfg=1.0))
    b = run(comfy, prompt(hy, cfg, cfg=1.0, positive=cond(seed=7)))
    assert token_change(a, b).min() > 0, "some video tokens do not see the text"


def test_a_tiny_memory_budget_streams_windows_and_gives_the_unlimited_result(comfy, hy, caplog):
    """1e-6 GB: 64 tokens at once, for the windows in flight and the double blocks' per-token work."""
    cfg = settings(window=(1, 4, 4), global_compression=3)
    whole = run(comfy, prompt(hy, cfg, steps=2))
    with caplog.at_level(logging.INFO):
        streamed = run(comfy, prompt(hy, with_budget(settings(window=(1, 4, 4), global_compression=3), 1e-6),
                                     steps=2))
    line = next(r.getMessage() for r in caplog.records if "memory:" in r.getMessage())
    assert "in chunks of 64" in line, line  # 4 windows of 16 tokens per attention call, of 288
    assert any("is below what 288 video tokens of width 256 need" in r.getMessage() for r in caplog.records)
    torch.testing.assert_close(streamed, whole, **TOL)


def test_batch_of_two_with_cfg_equals_each_item_alone(comfy, hy):
    """Two latents in one batch, cfg 2 (cond and uncond batched by ComfyUI: calls of batch 2), no added noise:
    each item equals its own batch-1 run."""
    cfg = settings(window=(1, 4, 4), global_compression=3)
    both = run(comfy, prompt(hy, cfg, batch=2, add_noise=False, steps=2))
    assert both.shape[0] == 2
    for i in range(2):
        alone = run(comfy, prompt(hy, cfg, batch=2, from_batch=i, add_noise=False, steps=2))
        torch.testing.assert_close(both[i:i + 1], alone, **TOL)


def test_sampling_above_the_native_size_is_windowed_through_ultragen_apply(comfy, hy, caplog, monkeypatch):
    """A prompt with UltraGen Apply and its automatic settings, above the model's native size: the family's native
    size is made 192x96 x 5 frames (grid 2x6x12, where the real one is 720p: too large for a CPU test), so this
    2x12x12 grid is twice native in height, as 1440p is for a 720p model. The automatic plan windows it about
    native-sized with the pooled global branch, logs that, and samples finite latents that differ from ComfyUI's."""
    import sys

    from ultragen_core.models import ModelFamily
    tiny = ModelFamily("tiny HunyuanVideo 1.5", 16, 4, (1, 1, 1), 32, 256, 2, 3, (192, 96, 5), True)
    for key, module in list(sys.modules.items()):  # the pack's patch module, as the test and ComfyUI loaded it
        if key.endswith("ultragen_core.families.registry"):
            monkeypatch.setattr(module.HUNYUAN_VIDEO.patch_module(), "hunyuan_family", lambda dm: tiny)
    with caplog.at_level(logging.INFO):
        out = run(comfy, prompt(hy, "default", steps=2))
    line = next(r.getMessage() for r in caplog.records if r.getMessage().startswith("[UltraGen] HunyuanVideo 1.5"))
    assert "native 192x96 (automatic, tiny HunyuanVideo 1.5)" in line, line
    assert "grid 2x12x12 (288 tokens): windows 2x6x12" in line and "global branch pooled x2" in line, line
    assert torch.isfinite(out).all() and not torch.allclose(out, run(comfy, prompt(hy, steps=2)), atol=1e-3)


def test_blocks_another_pack_replaced_run_the_windows_only_through_original_block(comfy, hy):
    """patches_replace["dit"]: a replacement that calls ComfyUI's original_block runs the patched block (the same
    result as without the replacement); one that computes the block itself keeps its own computation."""
    cfg = settings(window=(1, 4, 4), global_compression=3)
    ours = run(comfy, prompt(hy, cfg))
    assert torch.equal(ours, run(comfy, with_block_replace(prompt(hy, cfg), 0, pass_through=True)))
    skipped_plain = run(comfy, with_block_replace(prompt(hy), 1, pass_through=False))
    skipped_ours = run(comfy, with_block_replace(prompt(hy, cfg), 1, pass_through=False))
    assert not torch.allclose(skipped_ours, ours, atol=1e-3)  # block 1 is theirs (skipped) ...
    assert not torch.allclose(skipped_ours, skipped_plain, atol=1e-3)  # ... the others still ours
