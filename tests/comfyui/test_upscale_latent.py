"""UltraGen Upscale Latent in the real ComfyUI runtime: the coarse-to-fine start from a proxy latent, then
ComfyUI's own KSamplerAdvanced re-noises it part-way (both tested trees)."""
import pytest
import torch

from harness import PromptFailed, captured
from test_apply import WAN_T2V, model_file, run
from test_input_checks import only_error


def upscale_prompt(channels=16, frames=3, size=(4, 6), width=96, height=64, length=17, method="bilinear",
                   reference=None):
    p = {"proxy": {"class_type": "UltraGenTestLatent", "inputs": {
             "seed": 4, "channels": channels, "frames": frames, "height": size[0], "width": size[1], "batch": 2,
             "corner_bump": 0.0}},
         "up": {"class_type": "UltraGenUpscaleLatent", "inputs": {
             "latent": ["proxy", 0], "width": width, "height": height, "length": length, "upscale_method": method}},
         "capture": {"class_type": "UltraGenTestCapture", "inputs": {"samples": ["up", 0], "key": "up"}}}
    if reference is not None:
        p["ref"] = {"class_type": "UltraGenTestLatent", "inputs": {
            "seed": 0, "channels": channels, "frames": reference[0], "height": reference[1], "width": reference[2],
            "batch": 1, "corner_bump": 0.0}}
        p["up"]["inputs"]["reference"] = ["ref", 0]
    return p


def proxy_of(channels=16, frames=3, size=(4, 6)):
    gen = torch.Generator().manual_seed(4)
    return torch.randn(2, channels, frames, *size, generator=gen)  # what UltraGenTestLatent makes


@pytest.mark.parametrize("method", ["bilinear", "bicubic", "nearest-exact", "area"])
def test_the_node_resizes_like_the_core(comfy, method):
    from ultragen_core.latent_upscale import LatentSize, upscale_video_latent
    out = run(comfy, upscale_prompt(method=method), key="up")
    assert out.shape == (2, 16, 5, 8, 12)  # 17 frames, 64 x 96 px at 8 px per cell
    assert torch.equal(out, upscale_video_latent(proxy_of(), LatentSize(5, 8, 12), method))
    assert torch.equal(out[:, :, 0], upscale_video_latent(proxy_of()[:, :, :1], LatentSize(1, 8, 12), method)[:, :, 0])


def test_a_reference_latent_sets_the_size_and_the_5b_latent_its_16_px_cells(comfy):
    out = run(comfy, upscale_prompt(reference=(9, 7, 11), width=8, height=8, length=1), key="up")
    assert out.shape == (2, 16, 9, 7, 11)
    out = run(comfy, upscale_prompt(channels=48, width=96, height=64, length=5), key="up")
    assert out.shape == (2, 48, 2, 4, 6)


def test_bad_inputs_say_what_and_how_to_fix(comfy):
    kind, name, details = only_error(comfy, upscale_prompt(length=80), "up")
    assert name == "length" and details.startswith("length - must be 4n+1 video frames") and "use 77 or 81" in details
    with pytest.raises(PromptFailed, match="width must be a multiple of 16 px for this 48-channel Wan latent, "
                                           "got 104; use 96 or 112"):
        comfy.run(upscale_prompt(channels=48, width=104))
    with pytest.raises(PromptFailed, match="the reference latent has 48 channels, the latent 16"):
        comfy.run(upscale_prompt(reference=(2, 4, 4)) | {"ref": {"class_type": "UltraGenTestLatent", "inputs": {
            "seed": 0, "channels": 48, "frames": 2, "height": 4, "width": 4, "batch": 1, "corner_bump": 0.0}}})
    with pytest.raises(PromptFailed, match="one frame .* cannot be stretched in time"):
        comfy.run(upscale_prompt(frames=1))


def test_ksampler_advanced_re_noises_the_upscaled_proxy_part_way(comfy):
    """The coarse-to-fine pattern of the workflows: a tiny Wan's first pass, upscaled x2 and to more frames,
    re-noised at step 2 of 4 by KSamplerAdvanced: the result stays closer to the upscaled proxy than a run
    from step 0 does."""
    name = model_file(comfy, WAN_T2V)

    def prompt(start):
        return {
            "load": {"class_type": "UNETLoader", "inputs": {"unet_name": name, "weight_dtype": "default"}},
            "cond": {"class_type": "UltraGenTestConditioning", "inputs": {"seed": 1, "tokens": 8}},
            "empty": {"class_type": "EmptyHunyuanLatentVideo", "inputs": {
                "width": 32, "height": 32, "length": 5, "batch_size": 1}},
            "first": {"class_type": "KSampler", "inputs": {
                "model": ["load", 0], "seed": 3, "steps": 2, "cfg": 1.0, "sampler_name": "euler",
                "scheduler": "simple", "positive": ["cond", 0], "negative": ["cond", 0],
                "latent_image": ["empty", 0], "denoise": 1.0}},
            "up": {"class_type": "UltraGenUpscaleLatent", "inputs": {
                "latent": ["first", 0], "width": 64, "height": 64, "length": 9, "upscale_method": "bilinear"}},
            "second": {"class_type": "KSamplerAdvanced", "inputs": {
                "model": ["load", 0], "add_noise": "enable", "noise_seed": 7, "steps": 4, "cfg": 1.0,
                "sampler_name": "euler", "scheduler": "simple", "positive": ["cond", 0], "negative": ["cond", 0],
                "latent_image": ["up", 0], "start_at_step": start, "end_at_step": 10000,
                "return_with_leftover_noise": "disable"}},
            "capture_up": {"class_type": "UltraGenTestCapture", "inputs": {"samples": ["up", 0], "key": "init"}},
            "capture": {"class_type": "UltraGenTestCapture", "inputs": {"samples": ["second", 0], "key": "out"}}}

    part = run(comfy, prompt(2))
    init = captured()["init"]
    assert init.shape == part.shape == (1, 16, 3, 8, 8)
    full = run(comfy, prompt(0))
    assert torch.isfinite(part).all()
    assert float((part - init).abs().mean()) < float((full - init).abs().mean())


def test_ltx_latents_are_refused_with_the_ltx_recipe(comfy):
    """An LTX latent (128 channels: 32 px, 8 frames per cell) is refused, with or without a reference latent of
    the target size: this node's time axis is Wan's; LTX's own latent upsampler does LTX's two-stage recipe."""
    for prompt in (upscale_prompt(channels=128, width=192, height=128, length=17),
                   upscale_prompt(channels=128, reference=(3, 8, 12))):
        with pytest.raises(PromptFailed, match="the latent has 128 channels, an LTX-Video / LTX-2 latent .* use "
                                               "ComfyUI's LTXV Latent Upsampler"):
            comfy.run(prompt)
