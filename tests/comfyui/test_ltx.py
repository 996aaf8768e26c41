"""The LTX family (LTX-Video's LTXVModel, LTX-2's LTXAVModel) in the real ComfyUI runtime: tiny random-weight
models of ComfyUI's own classes, loaded by ComfyUI's loader, sampled by ComfyUI's sampler."""
import logging

import pytest
import torch

from ltx_models import LTXAV, LTXV, add_guide, load, sample, text, token_change, video, video_of, with_audio
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
    """(attention module, its input x (B, L, C), its RoPE table) of one block's attn1 in an unpatched run."""
    dm = model.get_model_object("diffusion_model")
    m = dm.transformer_blocks[block].attn1
    seen = []
    handle = m.register_forward_pre_hook(lambda mod, args, kw: seen.append((args[0].clone(), kw["pe"])),
                                         with_kwargs=True)
    try:
        sample(model, latent, **kwargs)
    finally:
        handle.remove()
    return m, seen[0][0], seen[0][1]


@pytest.mark.parametrize("spec", SPECS, ids=IDS)
@pytest.mark.parametrize("guided", [False, True], ids=["video", "with-guide"])
def test_one_window_over_the_grid_through_the_patch_equals_comfyuis_attention(comfy, spec, guided):
    """The full-attention limit, through the patched path (not its shortcut): q / k / v, RoPE of every token,
    the guide tokens as shared keys and queries, the gate and the output projection."""
    from ultragen_core.attention import kernels
    from ultragen_core.config import DualBranchPlan
    from ultragen_core.families.ltx.ltx import windowed_self_attention
    from ultragen_core.families.ltx.ltx_attention import model_attention, namespace
    model = load(comfy, spec)
    x, cond, mask = video(frames=3, height=8, width=12), text(), None
    if guided:
        x, mask, cond = add_guide(model, x, video(seed=5, frames=1, height=8, width=12), cond)
    m, rows, pe = attn1_inputs(model, latent_for(spec, x), positive=cond, negative=cond, noise_mask=mask)
    assert rows.shape[1] == 3 * 8 * 12 + (8 * 12 if guided else 0)
    # one window, no fusion; pooling x1, so the guide tokens' queries see every video token (the pooled video)
    plan = DualBranchPlan((3, 8, 12), (3, 8, 12), False, 1 if guided else 0, "local_only", 1.0)
    attention = kernels.choose(model_attention(m), m.heads, {}, rows.device, kernels.interface_of(namespace(m), m))
    with torch.no_grad():
        ours = windowed_self_attention(m, rows, pe, plan, 1, attention, rows=50)
        theirs = type(m).forward(m, rows, pe=pe)
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


def test_a_guide_attention_mask_runs_comfyuis_attention_and_says_so(comfy, caplog):
    """A guide strength other than 1 is an attention mask ComfyUI applies (0.33): those calls keep ComfyUI's
    full attention (logged), so the output is ComfyUI's."""
    model = load(comfy, LTXV)
    x, mask, cond = add_guide(model, video(), video(seed=5, frames=1), text(), strength=0.5)
    plain = sample(model, x, cond, cond, noise_mask=mask)
    x1, mask1, cond1 = add_guide(model, video(), video(seed=5, frames=1), text(), strength=1.0)
    if torch.equal(plain, sample(model, x1, cond1, cond1, noise_mask=mask1)):
        pytest.skip("this ComfyUI has no guide attention mask (the guide strength does not enter attention)")
    with caplog.at_level(logging.WARNING):
        ours = sample(patched(model, window=(1, 4, 4)), x, cond, cond, noise_mask=mask)
    assert torch.equal(plain, ours)
    assert any("GuideAttentionMask" in r.getMessage() and "full attention" in r.getMessage() for r in caplog.records)


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
    p = {"load": {"class_type": "UNETLoader", "inputs": {"unet_name": name, "weight_dtype": "default"}},
         "latent": {"class_type": "UltraGenTestLatent", "inputs": {
             "seed": 2, "channels": 128, "frames": frames, "height": height, "width": width, "batch": 1,
             "corner_bump": 0.0}},
         "cond": {"class_type": "UltraGenTestConditioning", "inputs": {"seed": 1, "tokens": 8}}}
    model = ["load", 0]
    if patch is not None:
        p["settings"] = {"class_type": "UltraGenAttentionSettings", "inputs": {
            "window_t": 0, "window_h": 0, "window_w": 0, "shift": "auto", "global_branch": True,
            "global_compression": 0, "fusion": "band", "global_strength": 1.0, "full_attention_blocks": "",
            "start_percent": 0.0, "end_percent": 1.0, "preset": patch}}
        p["apply"] = {"class_type": "UltraGenApply", "inputs": {"model": model, "settings": ["settings", 0]}}
        model = ["apply", 0]
    p["sample"] = {"class_type": "KSampler", "inputs": {
        "model": model, "seed": 3, "steps": 1, "cfg": 2.0, "sampler_name": "euler", "scheduler": "simple",
        "positive": ["cond", 0], "negative": ["cond", 0], "latent_image": ["latent", 0], "denoise": 1.0}}
    p["capture"] = {"class_type": "UltraGenTestCapture", "inputs": {"samples": ["sample", 0], "key": key}}
    return p


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
