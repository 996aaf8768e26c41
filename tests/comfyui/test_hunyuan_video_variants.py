"""UltraGen Apply on the other members of ComfyUI's HunyuanVideo class and around it (tiny random-weight models, see
hunyuan_models.py): text masks per batch item, the block check's fallback, refusals by name, the original T2V,
HunyuanVideo 1.5's VAE in UltraGen Tiled VAE Decode, and the documented benchmark command."""
import logging

import pytest
import torch

import hunyuan_models
from hunyuan_models import (FULL_LIMIT, GRID, ORIGINAL, TOL, block_inputs, hunyuan15_params, loaded_model, prompt,
                            prompt13, reachable, token_change13, video_first, with_budget)
from test_apply import LOCAL_ONLY, run, settings

hy, hy13 = hunyuan_models.hy, hunyuan_models.hy13  # the fixtures: the tiny 1.5 and original T2V checkpoints

# --- text masks per batch item, the block check, refusals ------------------------------------------------------

def test_text_masks_that_differ_per_batch_item_run_each_item_with_its_own_keys(comfy, hy):
    """ComfyUI 0.33 builds one mask row for the whole batch; a (B, 1, E+N) mask whose rows differ (as a later
    ComfyUI may pass) runs the items one at a time: the batch equals each item alone, and with the full-attention
    plan it equals ComfyUI's own block under each item's mask."""
    from ultragen_core.attention import kernels
    from ultragen_core.config import AttentionSettings, resolve_plan
    from ultragen_core.families.hunyuan_video.blocks import double_block
    from ultragen_core.families.hunyuan_video.hunyuan_video import flux_math, windowed_joint
    from ultragen_core.families.hunyuan_video.text_mask import kept_text_keys
    dm = loaded_model(comfy, hy).get_model_object("diffusion_model")
    m = dm.double_blocks[0]
    img, txt, vec, pe = block_inputs(dm)
    e, total = txt.shape[1], txt.shape[1] + img.shape[1]
    mask = torch.zeros(2, 1, total)
    mask[0, 0, e - 2:] = -torch.finfo(torch.float32).max  # item 0: its last two text tokens are padding
    mask[0, 0, e:] = 0
    attention = kernels.choose(flux_math(m).optimized_attention, m.num_heads, {}, img.device)

    def ours(settings, b=None):
        rows = slice(None) if b is None else slice(b, b + 1)
        mk = mask[rows]
        kept = kept_text_keys(mk, mk.shape[0], e, total)
        plan = resolve_plan(settings, GRID, (31, 45, 80))
        joint = windowed_joint(plan, 0, m, pe[rows], kept, attention, 64, {})
        with torch.no_grad():
            return double_block(m, img[rows].clone(), txt[rows].clone(), vec[rows], joint)
    windows = AttentionSettings(window=(1, 4, 4), global_compression=3)
    batched = ours(windows)
    for b in range(2):
        for got, want in zip(batched, ours(windows, b)):
            torch.testing.assert_close(got[b:b + 1], want, **TOL)  # batched vs single matmuls: ~2e-6
    full = ours(AttentionSettings(**FULL_LIMIT))
    for b in range(2):
        with torch.no_grad():
            theirs = type(m).forward(m, img[b:b + 1].clone(), txt[b:b + 1].clone(), vec[b:b + 1], pe[b:b + 1],
                                     attn_mask=mask[b:b + 1])
        for got, want in zip(full, theirs):
            torch.testing.assert_close(got[b:b + 1], want, **TOL)


def test_a_block_that_does_not_recompute_as_comfyui_keeps_its_own_forward(comfy, hy, caplog, monkeypatch):
    """A ComfyUI whose DoubleStreamBlock computes something else than the recomputed block (here: its forward
    shifted by 0.1): the check on the first call finds it, warns, and those blocks run ComfyUI's forward."""
    import sys

    import comfy.ldm.flux.layers as layers

    def forget_verdicts():  # in every copy of the check's memory (the test's and ComfyUI's, imported or not yet)
        for key, module in list(sys.modules.items()):
            if key.endswith("ultragen_core.families.hunyuan_video.blocks"):
                module.forget_checks()
    real = layers.DoubleStreamBlock.forward

    def drifted(self, *args, **kwargs):
        img, txt = real(self, *args, **kwargs)
        return img + 0.1, txt
    forget_verdicts()
    monkeypatch.setattr(layers.DoubleStreamBlock, "forward", drifted)
    try:
        plain = run(comfy, prompt(hy))
        with caplog.at_level(logging.INFO):
            ours = run(comfy, prompt(hy, settings(window=(1, 4, 4), full_attention_blocks="2")))
    finally:  # the drifted class's verdict must not outlive this test (a copy the prompt imported holds it)
        forget_verdicts()
    assert torch.equal(plain, ours)  # double blocks fell back, the single block keeps full attention
    warning = next(r.getMessage() for r in caplog.records if "does not equal its own forward" in r.getMessage())
    assert "DoubleStreamBlock (comfy.ldm.flux.layers, double block, float32)" in warning, warning
    assert "keep ComfyUI's full attention" in warning


@pytest.mark.parametrize("variant,params", [
    ("HUNYUAN_VIDEO_15_SR", dict(in_channels=98)),
    ("HUNYUAN_VIDEO_I2V", dict(ORIGINAL, in_channels=33)),
    ("HUNYUAN_IMAGE_21", dict(in_channels=64, vision_in_dim=None, patch_size=[1, 1], axes_dim=[64, 64],
                              byt5=True, meanflow_sum=False)),
    ("HUNYUAN_IMAGE_21_REFINER", dict(in_channels=128, vision_in_dim=None, meanflow=True, meanflow_sum=False)),
], ids=["sr-1080p", "original-i2v", "image-2.1", "image-2.1-refiner"])
def test_other_members_of_the_class_are_refused_by_name(comfy, hy, variant, params):
    import comfy.ldm.hunyuan_video.model as hv
    import comfy.model_patcher as model_patcher
    import comfy.ops as ops
    from ultragen_core.families.hunyuan_video.variants import REFUSED, Variant
    holder = torch.nn.Module()
    holder.diffusion_model = hv.HunyuanVideo(operations=ops.disable_weight_init, device="meta",
                                             **hunyuan15_params(**params))
    patcher = model_patcher.ModelPatcher(holder, torch.device("cpu"), torch.device("cpu"))
    apply_node = comfy.nodes.NODE_CLASS_MAPPINGS["UltraGenApply"]
    with pytest.raises(NotImplementedError) as refused:
        apply_node.execute(model=patcher)
    text = str(refused.value)
    assert "UltraGen does not patch HunyuanVideo (comfy.ldm.hunyuan_video.model)" in text, text
    assert REFUSED[Variant[variant]] in text and "Sample this model without UltraGen Apply" in text, text


def test_the_documented_hunyuan_bench_command_runs_with_smoke(comfy, hy):
    """bench/dit.py --family hunyuan15 as docs/BENCHMARKS.md gives it (the smoke tests run only each script's
    first documented command): ComfyUI's loader detects HunyuanVideo 1.5 and every variant prints its row."""
    from bench_commands import check_smoke_output, documented_commands, run_smoke
    command = next(c for c in documented_commands() if c.script == "bench/dit.py" and "hunyuan15" in c.args)
    out = run_smoke(command, comfy.root)
    check_smoke_output(command, out)
    for res in ("720p", "1080p", "4K"):
        for variant in ("unpatched", "UltraGen default", "UltraGen fast"):
            assert f"| HunyuanVideo 1.5 | {res} |" in out and f"| {variant} |" in out, out
    assert "windows" in out.split("| 4K |")[-1]  # the 4K rows run windows


# --- the VAE ----------------------------------------------------------------------------------------------------

def tiny_hunyuan15_vae(monkeypatch):
    """ComfyUI's HunyuanVideo 1.5 VAE (its loader's branch for a 32-channel ``decoder.conv_in.conv``: an
    AutoencodingEngine with comfy.ldm.hunyuan_video.vae_refiner's causal Encoder / Decoder, 16x16x4) with 32
    channels per level and one res block, random weights."""
    import comfy.ldm.hunyuan_video.vae_refiner as refiner
    import comfy.sd as comfy_sd
    encoder, decoder = refiner.Encoder, refiner.Decoder
    small = dict(block_out_channels=[32] * 5, num_res_blocks=1)
    monkeypatch.setattr(refiner, "Encoder", lambda **kw: encoder(**{**kw, **small}))
    monkeypatch.setattr(refiner, "Decoder", lambda **kw: decoder(**{**kw, **small}))
    common = dict(ffactor_spatial=16, ffactor_temporal=4, **small)  # refiner_vae (causal) as ComfyUI builds it
    parts = {"encoder": encoder(in_channels=3, z_channels=32, downsample_match_channel=True, **common),
             "decoder": decoder(z_channels=32, out_channels=3, upsample_match_channel=True, **common)}
    gen, sd = torch.Generator().manual_seed(0), {}
    for part, module in parts.items():
        for k, v in module.state_dict().items():  # ComfyUI's layers leave their weights uninitialised
            if "gamma" in k or ("norm" in k and k.endswith("weight")):
                t = torch.ones(v.shape)
            elif v.ndim >= 2:
                t = torch.randn(v.shape, generator=gen) / v[0].numel() ** 0.5
            else:
                t = 0.02 * torch.randn(v.shape, generator=gen)
            sd[f"{part}.{k}"] = t
    return comfy_sd.VAE(sd=sd)


def test_the_tiled_decode_hands_the_hunyuan15_vae_to_comfyuis_tiled_decode_naming_it(comfy, hy, caplog,
                                                                                     monkeypatch):
    """UltraGen Tiled VAE Decode does not tile HunyuanVideo 1.5's VAE itself (a generic AutoencodingEngine): it
    says so, naming the decoder class, and ComfyUI's own tiled decode gives the whole decode's result."""
    vae = tiny_hunyuan15_vae(monkeypatch)
    node = comfy.nodes.NODE_CLASS_MAPPINGS["UltraGenTiledVAEDecode"]
    latent = torch.randn(1, 32, 3, 6, 8, generator=torch.Generator().manual_seed(1))
    with caplog.at_level(logging.WARNING), torch.inference_mode():  # as ComfyUI's executor runs nodes
        out = node.execute(samples={"samples": latent}, vae=vae, max_vram_gb=0.0, tile_size=0, overlap=64,
                           temporal_size=0, temporal_overlap=8).result[0]
        whole = vae.decode(latent)
    assert "falling back to ComfyUI's own tiled decode" in caplog.text, caplog.text
    assert ("AutoencodingEngine (comfy.ldm.models.autoencoder) with the decoder "
            "comfy.ldm.hunyuan_video.vae_refiner.Decoder") in caplog.text, caplog.text
    assert whole.shape == (1, 9, 96, 128, 3)  # 3 latent frames -> 1 + 2 x 4 (causal), 16x
    torch.testing.assert_close(out, whole.reshape(out.shape), atol=1e-5, rtol=0)


# --- the original HunyuanVideo T2V ------------------------------------------------------------------------------

def test_original_t2v_is_comfyuis_at_native_size_and_full_attention_at_the_limit(comfy, hy13, caplog):
    plain = run(comfy, prompt13(hy13))
    assert torch.equal(plain, run(comfy, prompt13(hy13, "default")))
    assert torch.equal(plain, run(comfy, prompt13(hy13, settings(window=(64, 64, 64), **LOCAL_ONLY))))
    with caplog.at_level(logging.INFO):
        ours = run(comfy, prompt13(hy13, settings(**FULL_LIMIT)))
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("[UltraGen]")]
    assert any("HunyuanVideo T2V (the original 13B model) [HunyuanVideo, 256 wide, 2 double + 2 single blocks], "
               "native 1280x720 (automatic, HunyuanVideo)" in m for m in lines), lines
    if video_first(comfy, hy13):  # ComfyUI 0.3.64: every block keeps ComfyUI's forward, and says why
        assert any("double blocks: the block puts the video before the text" in m for m in lines), lines
        assert any("single blocks: ComfyUI does not say where the video tokens are" in m for m in lines), lines
        assert torch.equal(plain, ours)
        return
    assert not any("full attention there" in m or "does not equal" in m for m in lines), lines
    assert not torch.equal(plain, ours)
    torch.testing.assert_close(ours, plain, **TOL)


def test_original_t2v_windows_are_local_and_stream(comfy, hy13):
    if video_first(comfy, hy13):
        pytest.skip("this ComfyUI's HunyuanVideo puts the video before the text (DoubleStreamBlock flipped_img_txt, "
                    "no img_slice, as 0.3.64): the patch keeps its full attention (see the test above)")
    window = (1, 4, 4)
    reach = reachable(GRID, window, {(0, 0, 0)}, blocks=4)  # 2 double + 2 single blocks
    outside = torch.ones(GRID, dtype=torch.bool)
    for tok in reach:
        outside[tok] = False
    cfg = settings(window=window, **LOCAL_ONLY)
    a = run(comfy, prompt13(hy13, cfg, cfg=1.0, denoise=0.5))
    change = token_change13(a, run(comfy, prompt13(hy13, cfg, cfg=1.0, denoise=0.5, bump=5.0)))
    assert torch.all(change[outside] == 0) and change[~outside].max() > 0
    cfg = settings(window=window, global_compression=3)
    whole = run(comfy, prompt13(hy13, cfg, steps=2))
    streamed = run(comfy, prompt13(hy13, with_budget(settings(window=window, global_compression=3), 1e-6), steps=2))
    torch.testing.assert_close(streamed, whole, **TOL)


def test_a_batch_of_two_different_texts_equals_each_item_alone(comfy, hy, caplog):
    """Cond and uncond of one length are batched by ComfyUI into one call of batch 2 with two different texts:
    the patched call equals each item run alone (the model called as the sampler calls it, with its wrappers)."""
    import comfy.model_management as mm
    import comfy.patcher_extension as extension

    from ultragen_core import api
    from ultragen_core.config import AttentionSettings
    patcher = api.apply(loaded_model(comfy, hy), AttentionSettings(window=(1, 4, 4), global_compression=3))
    mm.load_models_gpu([patcher])
    dm = patcher.get_model_object("diffusion_model")
    options = dict(patcher.model_options["transformer_options"])
    options["wrappers"] = extension.merge_nested_dicts(options.get("wrappers", {}), patcher.wrappers)
    gen = torch.Generator().manual_seed(4)
    x = torch.randn(2, 65, *GRID, generator=gen)
    t = torch.full((2,), 0.7)
    ctx = torch.randn(2, 8, 4096, generator=gen)
    with torch.no_grad(), caplog.at_level(logging.INFO):
        both = dm(x, t, ctx, transformer_options=dict(options))
        alone = [dm(x[i:i + 1], t[i:i + 1], ctx[i:i + 1], transformer_options=dict(options)) for i in range(2)]
    assert any("windows 1x4x4" in r.getMessage() for r in caplog.records)  # the patch ran
    assert not torch.allclose(alone[0], alone[1], atol=1e-3)
    for i in range(2):
        torch.testing.assert_close(both[i:i + 1], alone[i], **TOL)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
def test_the_recomputed_blocks_pass_their_check_in_half_precision(comfy, hy, dtype):
    """The dtypes the models run in: the recomputed double and single blocks equal ComfyUI's forward as the check
    requires (forward_check's tolerance: a relative difference within twice the dtype's epsilon), so the windows
    are not turned off by rounding."""
    import copy

    from ultragen_core.adapters.forward_check import compare
    from ultragen_core.families.hunyuan_video import blocks
    from ultragen_core.families.hunyuan_video.hunyuan_video import flux_math
    dm = copy.deepcopy(loaded_model(comfy, hy).get_model_object("diffusion_model")).to(dtype)
    img, txt, vec, pe = block_inputs(dm, batch=1)
    img, txt, vec = img.to(dtype), txt.to(dtype), vec.to(dtype)
    e = txt.shape[1]
    m, s = dm.double_blocks[0], dm.single_blocks[0]
    full = blocks.full_joint(flux_math(m), pe, None, {}, m.num_heads)
    with torch.no_grad():
        double = (type(m).forward(m, img.clone(), txt.clone(), vec, pe),
                  blocks.double_block(m, img.clone(), txt.clone(), vec, full))
        x = torch.cat((txt, img), dim=1)
        single = (type(s).forward(s, x.clone(), vec, pe),
                  blocks.single_block(s, x.clone(), vec, e, blocks.full_joint(flux_math(s), pe, None, {}, s.num_heads)))
    for kind, both in (("double", double), ("single", single)):
        verdict = compare(f"{kind} block", img.shape[1], dtype, lambda: both, wording=blocks.BLOCK_WORDING)
        assert verdict.agrees, verdict.found
