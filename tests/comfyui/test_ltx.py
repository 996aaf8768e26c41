"""The LTX family (LTX-Video's LTXVModel, LTX-2's LTXAVModel) in the real ComfyUI runtime: tiny random-weight
models of ComfyUI's own classes, loaded by ComfyUI's loader, sampled by ComfyUI's sampler."""
import logging

import pytest
import torch

from ltx_models import LTXAV, LTXV, add_guide, load, sample, text, token_change, video, video_of, with_audio
from harness import sampled_prompt
from test_apply import reachable

from ultragen_core import api
from ultragen_core.config import AttentionSettings

SPECS = [LTXV, LTXAV]
IDS = ["LTXVModel", "LTXAVModel"]
LOCAL_ONLY = dict(global_branch=False, fusion="local_only")
FLOAT32 = 1e-5  # float32: another order of the same sums (windows batched, rows chunked)


def latent_for(spec, x):
    """The sampler's input for ``spec``: the video latent, or for LTX-2 the video with an audio latent."""
    return with_audio(x) if spec is LTXAV else x


def patched(model, **settings):
    return api.apply(model, AttentionSettings(**settings))


@pytest.mark.parametrize("spec", SPECS, ids=IDS)
def test_at_native_size_or_one_window_the_output_is_comfyuis_bit_for_bit(comfy, spec):
    model = load(comfy, spec)
    x = latent_for(spec, video())
    plain = video_of(sample(model, x, cfg=2.0))
    assert torch.equal(plain, video_of(sample(patched(model), x, cfg=2.0)))  # automatic: 2x16x16 is below native
    same = video_of(sample(patched(model, window=(64, 64, 64), **LOCAL_ONLY), x, cfg=2.0))
    assert torch.equal(plain, same)
    windowed = video_of(sample(patched(model, window=(1, 4, 4)), x, cfg=2.0))
    assert not torch.allclose(plain, windowed, atol=1e-4)  # the patch really changes attention
    assert torch.isfinite(windowed).all()


def attn1_inputs(model, latent, block: int = 1, **kwargs):
    """(attention module, its input x (B, L, C), its RoPE table, its mask) of one block's attn1 in an unpatched
    run."""
    dm = model.get_model_object("diffusion_model")
    m = dm.transformer_blocks[block].attn1
    seen = []
    handle = m.register_forward_pre_hook(
        lambda mod, args, kw: seen.append((args[0].clone(), kw["pe"], kw.get("mask"))), with_kwargs=True)
    try:
        sample(model, latent, **kwargs)
    finally:
        handle.remove()
    return (m, *seen[0])


@pytest.mark.parametrize("spec", SPECS, ids=IDS)
@pytest.mark.parametrize("guided", [None, 1.0, 0.5], ids=["video", "with-guide", "guide-strength-0.5"])
def test_one_window_over_the_grid_through_the_patch_equals_comfyuis_attention(comfy, spec, guided):
    """The full-attention limit, through the patched path (not its shortcut): q / k / v, RoPE of every token,
    the guide tokens as shared keys and queries, the guide attention mask (strength 0.5), the gate and the
    output projection."""
    from ultragen_core.attention import kernels
    from ultragen_core.config import DualBranchPlan
    from ultragen_core.families.ltx.ltx import windowed_self_attention
    from ultragen_core.families.ltx.ltx_attention import model_attention, namespace
    from ultragen_core.families.ltx.ltx_guides import guide_bias, masked_attention
    model = load(comfy, spec)
    x, cond, noise_mask = video(frames=3, height=8, width=12), text(), None
    if guided:
        x, noise_mask, cond = add_guide(model, x, video(seed=5, frames=1, height=8, width=12), cond,
                                        strength=None if guided == 1.0 else guided)
    m, rows, pe, mask = attn1_inputs(model, latent_for(spec, x), positive=cond, negative=cond, noise_mask=noise_mask)
    assert rows.shape[1] == 3 * 8 * 12 + (8 * 12 if guided else 0)
    if guided == 0.5 and mask is None:
        pytest.skip("this ComfyUI has no guide attention mask (a guide strength does not enter attention)")
    bias = guide_bias(mask, 3 * 8 * 12, rows.shape[1]) if mask is not None else None
    assert (bias is None) == (mask is None)
    # one window, no fusion; pooling x1, so the guide tokens' queries see every video token (the pooled video)
    plan = DualBranchPlan((3, 8, 12), (3, 8, 12), False, 1 if guided else 0, "local_only", 1.0)
    attention = kernels.choose(model_attention(m), m.heads, {}, rows.device, kernels.interface_of(namespace(m), m))
    with torch.no_grad():
        ours = windowed_self_attention(m, rows, pe, plan, 1, attention, 50, None, bias,
                                       masked_attention(model_attention(m), m.heads, {}))
        theirs = type(m).forward(m, rows, pe=pe, mask=mask)
        if mask is not None:  # the mask matters: without it the guide tokens' attention is another
            assert not torch.allclose(type(m).forward(m, rows, pe=pe), theirs, atol=1e-3)
    torch.testing.assert_close(ours, theirs, rtol=FLOAT32, atol=FLOAT32)


@pytest.mark.parametrize("spec", SPECS, ids=IDS)
def test_a_corner_change_stays_in_its_windows_and_the_global_branch_carries_it(comfy, spec):
    """One step, cfg 1, denoise 0.5 (the input reaches the model): a bump in one corner may move only the tokens
    its windows reach in two blocks (plain, then shifted); with the global branch most others move too."""
    model = load(comfy, spec)
    window, grid = (2, 4, 4), (2, 16, 16)
    outside = torch.ones(grid, dtype=torch.bool)
    for tok in reachable(grid, window, {(0, 0, 0), (0, 0, 1), (0, 1, 0), (0, 1, 1)}):
        outside[tok] = False
    assert 0 < int((~outside).sum()) < outside.numel() // 2

    def change(**extra):
        m = patched(model, window=window, shift="alternate", **extra)
        # LTX-2's audio hears the whole video (video -> audio cross-attention) and speaks back to every video
        # token (audio -> video): off here, so that what remains is the video stream's own reach
        m.model_options["transformer_options"]["a2v_cross_attn"] = False
        return token_change(sample(m, latent_for(spec, video())), sample(m, latent_for(spec, video(bump=5.0))))
    local = change(**LOCAL_ONLY)
    assert torch.all(local[outside] == 0), "a token outside the reachable windows changed"
    assert local[~outside].max() > 0
    mixed = change(global_compression=4)
    assert (mixed[outside] > 0).float().mean() > 0.5, "the global branch should carry the change everywhere"


@pytest.mark.parametrize("spec", SPECS, ids=IDS)
def test_guide_tokens_reach_every_window(comfy, spec):
    """Guide frames appended after the video (LTXVAddGuide's layout) are keys of every window: another guide
    changes every video token, with windows of 1x4x4 and no global branch."""
    model = load(comfy, spec)
    m = patched(model, window=(1, 4, 4), **LOCAL_ONLY)
    outs = []
    for seed in (5, 6):
        x, mask, cond = add_guide(model, video(), video(seed=seed, frames=1), text())
        outs.append(video_of(sample(m, latent_for(spec, x), cond, cond, noise_mask=mask))[:, :, :2])
    assert token_change(outs[0], outs[1]).min() > 0, "a window does not see the guide tokens"


@pytest.mark.parametrize("spec", SPECS, ids=IDS)
def test_a_guide_strength_weighs_the_guide_in_every_window(comfy, spec, caplog):
    """A guide strength other than 1 is ComfyUI 0.33's guide attention mask: under windows it still weighs the
    guide (another strength, another output in every window) and nothing falls back to full attention."""
    model = load(comfy, spec)
    m = patched(model, window=(1, 4, 4), **LOCAL_ONLY)
    outs = {}
    for strength in (None, 0.5):
        x, mask, cond = add_guide(model, video(), video(seed=5, frames=1), text(), strength=strength)
        plain = sample(model, latent_for(spec, x), cond, cond, noise_mask=mask)
        with caplog.at_level(logging.WARNING):
            outs[strength] = video_of(sample(m, latent_for(spec, x), cond, cond, noise_mask=mask))[:, :, :2]
        outs["plain", strength] = video_of(plain)[:, :, :2]
    if torch.equal(outs["plain", None], outs["plain", 0.5]):
        pytest.skip("this ComfyUI has no guide attention mask (the guide strength does not enter attention)")
    assert token_change(outs[None], outs[0.5]).min() > 0, "the guide strength does not reach every window"
    assert not [r.getMessage() for r in caplog.records if "runs ComfyUI's full attention" in r.getMessage()]


@pytest.mark.parametrize("spec", SPECS, ids=IDS)
def test_a_tiny_memory_budget_streams_to_the_same_result(comfy, spec):
    """memory_budget_gb 0.01: the memory plan's smallest chunk (64 query tokens: two 2x4x4 windows per
    attention call) instead of all 512 at once; equal within float32 rounding."""
    model = load(comfy, spec)
    x = latent_for(spec, video())
    cfg = dict(window=(2, 4, 4), global_compression=2)
    whole = video_of(sample(patched(model, **cfg), x, cfg=2.0))
    streamed = video_of(sample(patched(model, memory_budget_gb=0.01, **cfg), x, cfg=2.0))
    torch.testing.assert_close(streamed, whole, rtol=FLOAT32, atol=FLOAT32)


def item(t, i: int):
    """Batch item i of a latent or noise (LTX-2's nested [video, audio]: of each stream)."""
    if getattr(t, "is_nested", False):
        import comfy.nested_tensor
        return comfy.nested_tensor.NestedTensor(tuple(s[i:i + 1] for s in t.unbind()))
    return t[i:i + 1]


@pytest.mark.parametrize("spec", SPECS, ids=IDS)
def test_batch_of_two_with_cfg_equals_each_item_alone(comfy, spec):
    """cond + uncond (cfg 3) over a batch of two latents equals sampling each latent on its own (same noise)."""
    import comfy.sample as comfy_sample
    model = patched(load(comfy, spec), window=(1, 4, 4), global_compression=2)
    both = latent_for(spec, video(batch=2))
    noise = comfy_sample.prepare_noise(both, 11)
    together = video_of(sample(model, both, cfg=3.0, noise=noise))
    for i in range(2):
        alone = video_of(sample(model, item(both, i), cfg=3.0, noise=item(noise, i)))
        torch.testing.assert_close(alone, together[i:i + 1], rtol=FLOAT32, atol=FLOAT32)
    assert not torch.allclose(together[0], together[1], atol=1e-3)  # two different items


def test_stg_skipped_self_attention_stays_skipped(comfy):
    """STG's perturbed pass (stg_skip_self_attn) replaces self-attention by its values; the patch leaves it so."""
    model = load(comfy, LTXV)
    x = video()
    flagged = model.clone()
    flagged.model_options.setdefault("transformer_options", {})["stg_skip_self_attn"] = True
    skipped = sample(flagged, x)
    if torch.equal(skipped, sample(model, x)):
        pytest.skip("this ComfyUI's LTX self-attention has no STG skip (stg_skip_self_attn)")
    ours = patched(flagged, window=(1, 4, 4))
    assert torch.equal(sample(ours, x), skipped)


@pytest.mark.parametrize("spec", SPECS, ids=IDS)
def test_capabilities_the_family_lacks_are_refused_by_name(comfy, spec):
    model = load(comfy, spec)
    with pytest.raises(NotImplementedError, match=f"UltraGen split is not available for {spec['cls']}"):
        api.enable_split(model, setup=None)
    with pytest.raises(NotImplementedError, match=f"UltraGen proxy is not available for {spec['cls']}"):
        api.apply_proxy_guidance(model, None, api.ProxySettings())
    with pytest.raises(NotImplementedError, match=f"UltraGen checkpoint mode is not available for {spec['cls']}"):
        api.load_weights(model, "x.safetensors")


def test_a_self_attention_that_computes_something_else_keeps_comfyuis_and_says_why(comfy, caplog, monkeypatch):
    """The rebuild is checked against the module's own forward by running it (first call per class and dtype):
    a forward that computes something else (here: twice the output) keeps ComfyUI's forward, logged."""
    import comfy.ldm.lightricks.model as ltx
    from ultragen_core.families.ltx.ltx_attention import forget_checks
    model = load(comfy, LTXV)
    forward = ltx.CrossAttention.forward
    monkeypatch.setattr(ltx.CrossAttention, "forward", lambda self, *a, **k: 2 * forward(self, *a, **k))
    forget_checks()
    try:
        plain = sample(model, video())
        with caplog.at_level(logging.WARNING):
            ours = sample(patched(model, window=(1, 4, 4)), video())
    finally:
        forget_checks()
    assert torch.equal(plain, ours)
    assert any("differs from ComfyUI's forward" in r.getMessage() for r in caplog.records)


def ltx_prompt(name, patch, width=48, height=32, frames=2, key="ltx"):
    """API prompt: UNETLoader -> (UltraGen Attention Settings -> UltraGen Apply) -> KSampler -> capture."""
    nodes = {"latent": {"class_type": "UltraGenTestLatent", "inputs": {
                 "seed": 2, "channels": 128, "frames": frames, "height": height, "width": width, "batch": 1,
                 "corner_bump": 0.0}},
             "cond": {"class_type": "UltraGenTestConditioning", "inputs": {"seed": 1, "tokens": 8}}}
    return sampled_prompt(nodes, name, patch, key, cfg=2.0)


def test_ltx2_samples_above_its_native_size_through_ultragen_apply_in_a_prompt(comfy, caplog):
    """UNETLoader -> UltraGen Attention Settings (automatic) -> UltraGen Apply -> KSampler, executed by ComfyUI:
    a 2x32x48 token grid is twice LTX-2's native 768x512 (24x16 tokens) per side, so 2x2 windows of 2x16x24
    run, with the global branch pooled x2."""
    from harness import captured
    from ltx_models import model_file, model_class
    model_class(LTXAV)
    name = model_file(comfy, LTXAV)
    comfy.run(ltx_prompt(name, None, key="plain"))
    with caplog.at_level(logging.INFO):
        comfy.run(ltx_prompt(name, "quality", key="ours"))
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("[UltraGen] LTX-2")]
    assert len(lines) == 1, lines
    assert "LTX-2 [LTXAVModel, dim 128, 2 blocks], native 768x512 (automatic, LTX-2)" in lines[0], lines[0]
    assert "grid 2x32x48 (3072 tokens): windows 2x16x24" in lines[0] and "pooled x2 -> 2x16x24" in lines[0], lines[0]
    plain, ours = captured()["plain"], captured()["ours"]
    assert ours.shape == plain.shape == (1, 128, 2, 32, 48)
    assert torch.isfinite(ours).all() and not torch.allclose(ours, plain, atol=1e-4)


def test_the_run_line_names_the_guide_tokens(comfy, caplog):
    model = load(comfy, LTXV)
    x, mask, cond = add_guide(model, video(), video(seed=5, frames=1), text())
    with caplog.at_level(logging.INFO):
        sample(patched(model, window=(1, 4, 4)), x, cond, cond, noise_mask=mask)
    line = next(r.getMessage() for r in caplog.records if r.getMessage().startswith("[UltraGen] LTX-Video"))
    assert "grid 2x16x16 (512 tokens)" in line and "256 guide tokens after the video, shared by every window" in line


def test_every_ltx_model_class_of_this_comfyui_is_patched_or_refused(comfy):
    import importlib
    import inspect
    import pkgutil
    import comfy.ldm.lightricks as package
    from ultragen_core.models import LTX_REFUSED, LTX_SUPPORTED
    found = set()
    for info in pkgutil.iter_modules(package.__path__):
        try:
            module = importlib.import_module(f"comfy.ldm.lightricks.{info.name}")
        except ImportError:
            continue
        base = getattr(importlib.import_module("comfy.ldm.lightricks.model"), "LTXVModel")
        found |= {name for name, obj in vars(module).items()
                  if inspect.isclass(obj) and issubclass(obj, base) and not inspect.isabstract(obj)}
    assert "LTXVModel" in found
    assert found <= set(LTX_SUPPORTED) | set(LTX_REFUSED), sorted(found - set(LTX_SUPPORTED) - set(LTX_REFUSED))


def test_the_tiled_decode_hands_ltxs_vae_to_comfyuis_tiled_decode_and_names_it(comfy, caplog):
    """UltraGen Tiled VAE Decode tiles Wan's VAEs itself; LTX's (VideoVAE, 32 px x 8 frames) goes to ComfyUI's own
    tiled decode, logged with its class. A latent within one tile decodes as the VAE decodes it whole."""
    from ltx_models import tiny_ltx_vae
    vae = tiny_ltx_vae()
    assert type(vae.first_stage_model).__name__ == "VideoVAE" and vae.latent_channels == 128
    node = comfy.nodes.NODE_CLASS_MAPPINGS["UltraGenTiledVAEDecode"]
    latent = torch.randn(1, 128, 2, 3, 4, generator=torch.Generator().manual_seed(0))
    with caplog.at_level(logging.WARNING), torch.inference_mode():
        out = node.execute(samples={"samples": latent}, vae=vae, max_vram_gb=0.0, tile_size=0, overlap=64,
                           temporal_size=0, temporal_overlap=8).result[0]
        whole = vae.decode(latent).reshape(-1, 96, 128, 3)  # (B, T, H, W, C) as one image batch
    assert "falling back to ComfyUI's own tiled decode" in caplog.text
    assert "VideoVAE (comfy.ldm.lightricks.vae.causal_video_autoencoder)" in caplog.text
    assert out.shape == whole.shape == (9, 96, 128, 3)  # 9 frames of 96 x 128 px
    torch.testing.assert_close(out, whole, atol=1e-5, rtol=0)
