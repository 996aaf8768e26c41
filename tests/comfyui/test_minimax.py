"""The MiniMax-H3 family (ComfyUI's MiniMaxH3Model, audio + video) in the real ComfyUI runtime: a tiny random-weight
model of ComfyUI's own class, loaded by ComfyUI's loader, sampled by ComfyUI's sampler. ComfyUI 0.3.64 has no
MiniMaxH3Model: these tests skip there, naming it."""
import logging

import pytest
import torch

from minimax_models import latent, load, model_class, sample, text, token_change, video_of
from harness import sampled_prompt
from test_apply import reachable

from ultragen_core import api
from ultragen_core.config import AttentionSettings

LOCAL_ONLY = dict(global_branch=False, fusion="local_only")
FLOAT32 = 1e-5  # float32: another order of the same sums (windows batched, rows chunked)


def patched(model, **settings):
    return api.apply(model, AttentionSettings(**settings))


def streams_equal(a, b) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a.unbind(), b.unbind()))


def test_at_native_size_the_output_is_comfyuis_bit_for_bit(comfy):
    """2x8x8 tokens is far below H3's native 1344x768 (24x42 tokens): the patched model is ComfyUI's, both streams."""
    model = load(comfy)
    x = latent()
    plain = sample(model, x, cfg=2.0)
    assert streams_equal(plain, sample(patched(model), x, cfg=2.0))
    assert streams_equal(plain, sample(patched(model, window=(64, 64, 64), **LOCAL_ONLY), x, cfg=2.0))
    windowed = video_of(sample(patched(model, window=(1, 4, 4)), x, cfg=2.0))
    assert not torch.allclose(video_of(plain), windowed, atol=1e-4)  # the patch really changes attention
    assert torch.isfinite(windowed).all()


def attn_inputs(model, x, block: int = 1):
    """(module, its input rows (S, C), its RoPE table, the packed layout) of one block's attention, first call of
    an unpatched cfg-1 run with the default text (8 tokens)."""
    import comfy.ldm.minimax.model as h3
    dm = model.get_model_object("diffusion_model")
    m = dm.blocks[block].attn
    seen = []
    handle = m.register_forward_pre_hook(lambda mod, args, kw: seen.append((args[0].clone(), kw["rope_freqs"])),
                                         with_kwargs=True)
    try:
        sample(model, x)
    finally:
        handle.remove()
    video, audio = x.unbind()
    layout = h3.PackedLayout(8, video.shape[2], video.shape[3], video.shape[4], audio.shape[-1])
    return m, seen[0][0], seen[0][1], layout


def test_one_window_over_the_grid_through_the_patch_equals_comfyuis_attention(comfy):
    """The full-attention limit through the patched path (not its shortcut): one window over the whole 2x8x8 grid
    and the shared rows (8 text, 10 audio) seeing every video token (pooling x1, not fused): ComfyUI's forward."""
    from ultragen_core.attention import kernels
    from ultragen_core.config import DualBranchPlan
    from ultragen_core.families.minimax.minimax_attention import (Sequence, interface, model_attention, namespace,
                                                                  windowed_attention)
    from ultragen_core.families.minimax.positions import WindowPositions
    model = load(comfy)
    dm = model.get_model_object("diffusion_model")
    m, rows, rope, layout = attn_inputs(model, latent())
    (va, vb, kind), grid = layout.segments[-1], (2, 8, 8)
    assert kind == "video" and (va, vb) == (18, 146) and rows.shape[0] == 146
    plan = DualBranchPlan(grid, grid, False, 1, "local_only", 1.0)
    seq = Sequence(va, WindowPositions(grid, (4, 4), layout.position_ids[va:, 0]),
                   lambda pos: namespace(m).rope_rotation_table(dm.rope_freqs(pos, rows.device), rope.dtype))
    attention = kernels.choose(model_attention(m), m.heads, {}, rows.device, interface(m))
    with torch.no_grad():
        ours = windowed_attention(m, rows, rope, plan, 1, attention, 50, seq)
        theirs = type(m).forward(m, rows.clone(), rope_freqs=rope)
    torch.testing.assert_close(ours, theirs, rtol=FLOAT32, atol=FLOAT32)


def test_windows_at_2x_see_a_native_frames_positions_and_comfyuis_own_would_be_compressed(comfy):
    """The RoPE choice (ultragen_core/families/minimax/positions.py): at 2x per side, every window of the native
    size gets exactly ComfyUI's coordinates of a native frame (h, w) and ComfyUI's time coordinate; ComfyUI's own
    coordinates of the 2x frame put neighbours half as far apart (compressed 2x)."""
    model_class()
    import comfy.ldm.minimax.model as h3
    from ultragen_core.attention.windows import make_layout
    from ultragen_core.families.minimax.positions import WindowPositions
    native, big = (6, 10), (12, 20)  # tokens; latents are twice that
    small = h3.PackedLayout(4, 2, 2 * native[0], 2 * native[1], 3)
    large = h3.PackedLayout(4, 2, 2 * big[0], 2 * big[1], 3)
    native_frame = small.position_ids[small.segments[-1][0]:][:native[0] * native[1], 1:]  # (h, w) of frame 0
    va = large.segments[-1][0]
    own = large.position_ids[va:]
    assert torch.allclose((own[1, 2] - own[0, 2]) * 2, native_frame[1, 1] - native_frame[0, 1])  # compressed 2x
    positions = WindowPositions((2, *big), native, own[:, 0])
    for shifted in (False, True):
        layout = make_layout((2, *big), (1, *native), shifted)
        for (shape, windows), index in zip(layout.groups, layout.gather_indices()):
            if shape[1:] != native:
                continue  # the half windows at a shifted layout's border: a centre crop (core tests)
            pos = positions.of(layout, index)
            per_window = pos.view(len(windows), -1, 3)
            assert torch.equal(per_window[:, :, 1:], native_frame.expand(len(windows), -1, -1))
            assert torch.equal(pos[:, 0], own[index, 0])


def test_a_corner_change_stays_in_its_windows_and_the_global_branch_carries_it(comfy):
    """One step, cfg 1, denoise 0.5: a bump in one corner token may move only the tokens its windows reach in two
    blocks (plain, then shifted); the shared rows see no video without the global branch. With it, most others
    move too."""
    model = load(comfy)
    window, grid = (2, 4, 4), (2, 8, 16)
    outside = torch.ones(grid, dtype=torch.bool)
    for tok in reachable(grid, window, {(0, 0, 0)}):
        outside[tok] = False
    assert 0 < int((~outside).sum()) < outside.numel() // 2

    def change(**extra):
        m = patched(model, window=window, shift="alternate", **extra)
        return token_change(sample(m, latent(width=32)), sample(m, latent(width=32, bump=5.0)))
    local = change(**LOCAL_ONLY)
    assert torch.all(local[outside] == 0), "a token outside the reachable windows changed"
    assert local[~outside].max() > 0
    mixed = change(global_compression=2)
    assert (mixed[outside] > 0).float().mean() > 0.5, "the global branch should carry the change everywhere"


def test_the_shared_rows_text_and_audio_reach_every_window(comfy):
    """Windows of 1x4x4, no global branch: another prompt, or another audio latent, changes every video token."""
    model = patched(load(comfy), window=(1, 4, 4), **LOCAL_ONLY)
    base = sample(model, latent())
    other_text = sample(model, latent(), positive=text(seed=9))
    assert token_change(base, other_text).min() > 0, "a window does not see the text"
    video, _ = latent().unbind()
    import comfy.nested_tensor
    other_audio = comfy.nested_tensor.NestedTensor((video, latent(seed=8).unbind()[1]))
    assert token_change(base, sample(model, other_audio)).min() > 0, "a window does not see the audio"


def test_a_tiny_memory_budget_streams_to_the_same_result(comfy):
    """memory_budget_gb 0.01: the memory plan's smallest chunk (64 query rows: four 1x4x4 windows per attention
    call) instead of all 128 at once; equal within float32 rounding, both streams."""
    model = load(comfy)
    cfg = dict(window=(1, 4, 4), global_compression=2)
    whole = sample(patched(model, **cfg), latent(), cfg=2.0)
    streamed = sample(patched(model, memory_budget_gb=0.01, **cfg), latent(), cfg=2.0)
    for a, b in zip(streamed.unbind(), whole.unbind()):
        torch.testing.assert_close(a, b, rtol=FLOAT32, atol=FLOAT32)


def test_cfg_equals_the_cond_and_uncond_runs_combined_and_batch_two_is_comfyuis_refusal(comfy):
    """cfg 3 (cond and uncond are separate calls: their text lengths differ, so their packed layouts do) equals
    uncond + 3 (cond - uncond) of single-prompt runs. A batch of two is refused by ComfyUI's model itself
    (MiniMax H3 runs batch 1); the patch passes that error on unchanged."""
    import comfy.sample as comfy_sample
    model = patched(load(comfy), window=(1, 4, 4), global_compression=2)
    x = latent()
    noise = comfy_sample.prepare_noise(x, 11)
    pos, neg = text(), text(seed=7, tokens=6)
    guided = sample(model, x, pos, neg, cfg=3.0, noise=noise)
    cond = sample(model, x, pos, pos, noise=noise)
    uncond = sample(model, x, neg, neg, noise=noise)
    for g, c, u in zip(guided.unbind(), cond.unbind(), uncond.unbind()):
        torch.testing.assert_close(g, u + 3.0 * (c - u), rtol=1e-4, atol=1e-4)
    both = latent(batch=2)
    with pytest.raises(Exception) as plain:
        sample(load(comfy), both)
    with pytest.raises(Exception) as ours:
        sample(model, both)
    assert "batch size 1" in str(plain.value) and str(ours.value) == str(plain.value)


def test_windows_call_the_modules_own_attention_with_containers_and_the_layers_preferred_attention(comfy, monkeypatch):
    """As H3's module calls ``optimized_attention`` (looked up through its module at call time): q / k / v in
    ComfyUI's AttentionTensorContainer, and, where the layer holds a preferred attention (``comfy_attention``,
    newer ComfyUI), that module as ``preferred_attention``."""
    model_class()
    import types
    import comfy.ldm.minimax.model as h3
    model = load(comfy)
    real, seen = h3.optimized_attention, []
    preferred = types.SimpleNamespace(function=None)

    def recording(q, k, v, heads, **kwargs):
        seen.append((type(q).__name__, kwargs.pop("preferred_attention", None)))
        return real(q, k, v, heads, **kwargs)
    monkeypatch.setattr(h3, "optimized_attention", recording)
    for block in model.get_model_object("diffusion_model").blocks:
        monkeypatch.setattr(block.attn, "comfy_attention", preferred, raising=False)
    sample(patched(model, window=(1, 4, 4)), latent())
    ours = [kind for kind, layer in seen if layer is preferred]
    assert len(ours) >= 2 * 2  # windows and the pooled video / shared rows, in both blocks
    assert set(ours) == {"AttentionTensorContainer"}


def test_capabilities_the_family_lacks_are_refused_by_name(comfy):
    model = load(comfy)
    with pytest.raises(NotImplementedError, match="UltraGen split is not available for MiniMaxH3Model"):
        api.enable_split(model, setup=None)
    with pytest.raises(NotImplementedError, match="UltraGen proxy is not available for MiniMaxH3Model"):
        api.apply_proxy_guidance(model, None, api.ProxySettings())
    with pytest.raises(NotImplementedError, match="UltraGen checkpoint mode is not available for MiniMaxH3Model"):
        api.load_weights(model, "x.safetensors")


def test_a_self_attention_that_computes_something_else_keeps_comfyuis_and_says_why(comfy, caplog, monkeypatch):
    """The rebuild is checked against the module's own forward by running it (first call per class and dtype):
    a forward that computes something else (here: twice the output) keeps ComfyUI's forward, logged."""
    model_class()
    import comfy.ldm.minimax.model as h3
    from ultragen_core.families.minimax.minimax_attention import forget_checks
    model = load(comfy)
    forward = h3.Attention.forward
    monkeypatch.setattr(h3.Attention, "forward", lambda self, *a, **k: 2 * forward(self, *a, **k))
    forget_checks()
    try:
        plain = sample(model, latent())
        with caplog.at_level(logging.WARNING):
            ours = sample(patched(model, window=(1, 4, 4)), latent())
    finally:
        forget_checks()
    assert streams_equal(plain, ours)
    assert any("differs from ComfyUI's forward" in r.getMessage() for r in caplog.records)


def test_the_layout_comfyui_publishes_is_the_one_used_and_a_layout_that_misses_the_grid_keeps_comfyuis(comfy, caplog):
    """Newer ComfyUI publishes the packed layout in transformer_options["minimax_h3_layout"]; the patch reads it
    there first. One whose video segment is not the call's grid (here: a 4x4-token video) makes every block keep
    ComfyUI's attention, with a warning that names the layout."""
    model_class()
    import comfy.ldm.minimax.model as h3
    model = load(comfy)
    plain = sample(model, latent())
    ours = patched(model, window=(1, 4, 4))
    ours.model_options["transformer_options"]["minimax_h3_layout"] = h3.PackedLayout(8, 2, 8, 8, 5)
    with caplog.at_level(logging.WARNING):
        kept = sample(ours, latent())
    assert streams_equal(plain, kept)
    assert "the packed layout (text 8; audio 10; video 32) does not end in the 128 video rows" in caplog.text


def minimax_prompt(name, preset, key):
    """API prompt: UNETLoader -> (UltraGen Attention Settings -> UltraGen Apply) -> KSampler on ComfyUI's own
    EmptyMiniMaxH3LatentAV -> capture."""
    nodes = {"latent": {"class_type": "EmptyMiniMaxH3LatentAV", "inputs": {"width": 2688, "height": 1536, "length": 5}},
             "cond": {"class_type": "UltraGenTestConditioning", "inputs": {"seed": 1, "tokens": 8}}}
    return sampled_prompt(nodes, name, preset, key, cfg=1.0)


def test_h3_samples_at_2x_its_native_size_through_ultragen_apply_in_a_prompt(comfy, caplog):
    """2688x1536 (twice H3's 1344x768 per side; 2x48x84 tokens) through UltraGen Apply in a prompt ComfyUI runs:
    2x2 windows of the native 24x42 tokens, the global branch pooled x2, text and audio shared."""
    from harness import captured
    from minimax_models import model_file
    model_class()
    name = model_file(comfy)
    comfy.run(minimax_prompt(name, None, "plain"))
    with caplog.at_level(logging.INFO):
        comfy.run(minimax_prompt(name, "quality", "ours"))
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("[UltraGen] MiniMax-H3")]
    assert len(lines) == 1, lines
    line = lines[0]
    assert "MiniMax-H3 [MiniMaxH3Model, 64 wide, 2 heads x 128, 2 blocks], native 1344x768 (automatic" in line, line
    assert "grid 2x48x84 (8064 tokens): windows 2x24x42" in line and "pooled x2 -> 2x24x42" in line, line
    assert "shared rows seen by every window: text 8, audio 16" in line, line
    plain, ours = (captured()[k].unbind() for k in ("plain", "ours"))
    assert ours[0].shape == plain[0].shape == (1, 24, 2, 96, 168)
    assert torch.isfinite(ours[0]).all() and not torch.allclose(ours[0], plain[0], atol=1e-4)


def test_the_tiled_decode_hands_h3s_vae_to_comfyuis_tiled_decode_and_names_it(comfy):
    """UltraGen Tiled VAE Decode tiles Wan's VAEs itself; H3's MiniMaxH3VideoVAE is not one of them, so the node
    hands it to ComfyUI's own tiled decode, naming its class. (ComfyUI builds that VAE at its full width from the
    weights' keys, so no tiny one decodes here: the routing is what is checked.)"""
    model_class()
    import sys
    from types import SimpleNamespace
    import comfy.ldm.minimax.vae as h3_vae
    decode = sys.modules[comfy.nodes.NODE_CLASS_MAPPINGS["UltraGenTiledVAEDecode"].__module__]
    vae = SimpleNamespace(first_stage_model=object.__new__(h3_vae.MiniMaxH3VideoVAE))
    assert decode.vae_family(vae) is None
    assert decode.vae_name(vae) == "MiniMaxH3VideoVAE (comfy.ldm.minimax.vae)"


def test_a_scaled_fp8_checkpoint_loads_with_comfyuis_mixed_precision_ops_and_keeps_the_patch(comfy, caplog):
    """H3's published fp8 files keep each block's Linear weights in float8_e4m3fn with a scale (``comfy_quant``)
    and the norms in higher precision; bench/dit_minimax.py times such a file. ComfyUI loads it with its
    mixed-precision ops; the patch calls those layers, so its behaviour check holds (no fallback to full
    attention) and native size stays ComfyUI's bit for bit."""
    import sys
    import comfy.sd as comfy_sd
    from comfyui_finder import PACK_DIR
    from minimax_models import random_state_dict
    sys.path.insert(0, str(PACK_DIR / "bench"))
    import dit_minimax
    sd = random_state_dict()
    layers = sorted({k[:-len(".weight")] for k, v in sd.items()
                     if k.startswith("blocks.") and k.endswith(".weight") and v.ndim == 2})
    model = comfy_sd.load_diffusion_model_state_dict(dit_minimax.fp8_checkpoint(sd, layers))
    attn = model.get_model_object("diffusion_model").blocks[0].attn
    assert attn.qkv_proj.quant_format == "float8_e4m3fn" and attn.q_norm.weight.dtype == torch.float32
    x = latent()
    plain = sample(model, x)
    assert streams_equal(plain, sample(patched(model), x))
    with caplog.at_level(logging.WARNING):
        windowed = sample(patched(model, window=(1, 4, 4)), x)
    assert not [r for r in caplog.records if "differs from ComfyUI's forward" in r.getMessage()]
    assert torch.isfinite(video_of(windowed)).all()
    assert not torch.allclose(video_of(windowed), video_of(plain), atol=1e-4)  # the windows ran
