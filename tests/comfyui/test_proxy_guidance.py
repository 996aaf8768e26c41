"""UltraGen Proxy Guidance in the real ComfyUI runtime: a native-size proxy latent guides the windows of a
patched tiny Wan (the proxy runs as ComfyUI 0.33's in-context latent; on 0.3.64 the pack appends its tokens
after the video's itself)."""
import pytest
import torch

from harness import PromptFailed
from test_apply import LOCAL_ONLY, WAN_T2V, model_file, run, sample_prompt, settings

GRID = (2, 16, 16)  # the video: latent 2 x 32 x 32, tokens 2 x 16 x 16


def guided(name, strength, proxy_seed=5, bump=0.0, mode="neighbourhood", radius=(1, 2, 2), key="out",
           patch=None, video_bump=0.0):
    p = sample_prompt(name, patch or settings(window=(1, 4, 4), **LOCAL_ONLY), cfg=1.0, denoise=0.5, key=key,
                      bump=video_bump)
    p["proxy_latent"] = {"class_type": "UltraGenTestLatent", "inputs": {
        "seed": proxy_seed, "channels": 16, "frames": 2, "height": 16, "width": 16, "batch": 1, "corner_bump": bump}}
    p["proxy"] = {"class_type": "UltraGenProxyGuidance", "inputs": {
        "model": ["apply", 0], "proxy": ["proxy_latent", 0], "strength": strength, "neighbourhood": mode,
        "radius_frames": radius[0], "radius_cells": radius[1], "seed": 0}}
    p["sample"]["inputs"]["model"] = ["proxy", 0]
    return p


def per_token(a, b):
    diff = (a - b).abs()[0].amax(0)  # (frames, 32, 32)
    return diff.view(GRID[0], GRID[1], 2, GRID[2], 2).amax(dim=(2, 4))


def in_context_latents() -> bool:
    """ComfyUI 0.33's WanModel appends in-context latents; on 0.3.64 the pack appends the proxy itself."""
    import inspect

    import comfy.ldm.wan.model as wan
    return "context_latents" in inspect.getsource(wan.WanModel.forward_orig)


def test_strength_zero_is_the_unguided_model_and_the_proxy_guides_otherwise(comfy):
    name = model_file(comfy, WAN_T2V)
    plain = run(comfy, sample_prompt(name, settings(window=(1, 4, 4), **LOCAL_ONLY), cfg=1.0, denoise=0.5))
    assert torch.equal(run(comfy, guided(name, 0.0)), plain)
    one, other = run(comfy, guided(name, 1.0)), run(comfy, guided(name, 1.0, proxy_seed=6))
    assert per_token(one, plain).min() > 0, "every window sees proxy tokens: all tokens change"
    assert per_token(one, other).min() > 0, "another proxy, another result"
    half = run(comfy, guided(name, 0.5))
    assert 0 < float((half - plain).abs().mean()) < float((one - plain).abs().mean())


def test_the_proxy_carries_a_corner_change_across_windows_only_when_guiding(comfy):
    """A bump in one corner of the proxy (the proxy attends to itself in full, so after one block the whole
    proxy knows it): with guidance off the video is bit-identical; with guidance on tokens in windows far
    from that corner change (windowed attention alone never carries a change across windows)."""
    name = model_file(comfy, WAN_T2V)
    off = run(comfy, guided(name, 0.0)), run(comfy, guided(name, 0.0, bump=5.0))
    assert torch.equal(*off)
    change = per_token(run(comfy, guided(name, 1.0)), run(comfy, guided(name, 1.0, bump=5.0)))
    far = torch.ones(GRID, dtype=torch.bool)
    far[:, :4, :4] = False  # the windows over the bumped corner
    assert (change[far] > 0).float().mean() > 0.9


def test_proxy_guidance_refuses_what_it_cannot_run(comfy):
    name = model_file(comfy, WAN_T2V)
    p = guided(name, 0.5)
    p["proxy_latent"]["inputs"]["channels"] = 48  # a Wan 2.2 5B latent for a 16-channel model
    with pytest.raises(PromptFailed, match="takes video latents of 16 channels"):
        comfy.run(p)
    if not in_context_latents():  # VACE adds its hints to the video's tokens: no room for appended tokens
        from test_apply import WAN_VACE
        with pytest.raises(PromptFailed, match="VaceWanModel .*does not allow in this ComfyUI"):
            comfy.run(guided(model_file(comfy, WAN_VACE), 0.5))


def test_image_to_video_takes_a_video_latent_proxy_with_the_start_image_condition_resized(comfy):
    """Wan I2V's input is the noisy video (16 channels) plus the start image's mask and latent (20 channels):
    the proxy is a 16-channel LATENT of a first pass; the video's condition is resized to the proxy."""
    from test_apply import WAN_I2V
    name = model_file(comfy, WAN_I2V)
    plain = run(comfy, sample_prompt(name, settings(window=(1, 4, 4), **LOCAL_ONLY), cfg=1.0, denoise=0.5))
    assert torch.equal(run(comfy, guided(name, 0.0)), plain)  # strength 0: the model unchanged
    one, other = run(comfy, guided(name, 1.0)), run(comfy, guided(name, 1.0, proxy_seed=6))
    assert per_token(one, plain).min() > 0 and per_token(one, other).min() > 0
    assert torch.isfinite(one).all()


def test_the_start_image_condition_keeps_frame_0_and_averages_areas(comfy):
    from ultragen_core.families.wan.wan_proxy import condition_at
    cond = torch.arange(2 * 3 * 5 * 4 * 6, dtype=torch.float32).reshape(2, 3, 5, 4, 6)
    small = condition_at(cond, (3, 2, 3))
    assert small.shape == (2, 3, 3, 2, 3)
    torch.testing.assert_close(small[:, :, 0], torch.nn.functional.avg_pool2d(cond[:, :, 0], 2))  # frame 0 stays
    torch.testing.assert_close(small[:, :, 2], torch.nn.functional.avg_pool2d(cond[:, :, 4], 2))  # last on last
    assert torch.equal(condition_at(cond, (5, 4, 6)), cond)  # the same size: unchanged


def test_cond_and_uncond_in_one_batch_each_get_the_proxy(comfy):
    """cfg > 1: ComfyUI runs cond and uncond as one batch of 2; each item gets its own copy of the proxy."""
    name = model_file(comfy, WAN_T2V)
    plain = sample_prompt(name, settings(window=(1, 4, 4), **LOCAL_ONLY), cfg=3.0, denoise=0.5)
    guided_cfg = guided(name, 1.0)
    guided_cfg["sample"]["inputs"]["cfg"] = 3.0
    unguided, one = run(comfy, plain), run(comfy, guided_cfg)
    assert torch.isfinite(one).all() and per_token(one, unguided).min() > 0
    guided_cfg["proxy"]["inputs"]["strength"] = 0.0
    assert torch.equal(run(comfy, guided_cfg), unguided)
