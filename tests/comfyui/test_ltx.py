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
    if "guide_attention_entries" not in type(model.get_model_object("diffusion_model"))._forward.__code__.co_names \
            and not hasattr(__import__("comfy.ldm.lightricks.model", fromlist=["x"]), "GuideAttentionMask"):
        pytest.skip("this ComfyUI has no guide attention mask (GuideAttentionMask)")
    x, mask, cond = add_guide(model, video(), video(seed=5, frames=1), text(), strength=0.5)
    plain = sample(model, x, cond, cond, noise_mask=mask)
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
