"""The demo that needs no download (nodes/demo.py, the template "UltraGen demo (no download)", bench/demo.py)
in real ComfyUI with the pack's bundled weights: it samples as the fidelity bench samples the same file, the
template runs end to end, and files, prompts or latents that are not the demo model's are refused at their
input."""
from __future__ import annotations

import sys

import numpy as np
import pytest
import torch

from comfyui_finder import PACK_DIR
from harness import PromptFailed, captured, save_wan
from test_input_checks import only_error

sys.path.insert(0, str(PACK_DIR / "bench"))
import demo as demo_cli  # noqa: E402  (bench/demo.py)

BUNDLED = "ultragen_fidelity_wan.safetensors"


def demo_model(weights: str = BUNDLED) -> dict:
    return {"class_type": "UltraGenDemoModel", "inputs": {"weights": weights}}


def sampled(model: list, frames: int = 2, steps: int = 2, key: str = "out", cfg: float = 1.0,
            caption: str = "a large red disc, a small blue square") -> dict:
    return {
        "caption": {"class_type": "UltraGenDemoPrompt", "inputs": {"caption": caption}},
        "latent": {"class_type": "UltraGenDemoLatent", "inputs": {"scale": 1, "frames": frames, "batch_size": 1}},
        "sample": {"class_type": "KSampler", "inputs": {
            "model": model, "seed": 5, "steps": steps, "cfg": cfg, "sampler_name": "euler", "scheduler": "simple",
            "positive": ["caption", 0], "negative": ["demo", 1], "latent_image": ["latent", 0], "denoise": 1.0}},
        "capture": {"class_type": "UltraGenTestCapture", "inputs": {"samples": ["sample", 0], "key": key}},
    }


def test_the_demo_model_samples_as_the_bench_samples_its_file_with_unetloader_and_shift_3(comfy):
    link = comfy.models_dir / "diffusion_models" / "demo_as_unet.safetensors"
    if not link.exists():
        link.symlink_to(PACK_DIR / "bench" / "fidelity" / "weights" / BUNDLED)
    comfy.run({"demo": demo_model(), **sampled(["demo", 0], frames=1, key="demo")})
    comfy.run({"demo": demo_model(),
               "unet": {"class_type": "UNETLoader", "inputs": {"unet_name": link.name, "weight_dtype": "default"}},
               "shift": {"class_type": "ModelSamplingSD3", "inputs": {"model": ["unet", 0], "shift": 3.0}},
               **sampled(["shift", 0], frames=1, key="bench")})
    out = captured()
    assert out["demo"].shape == (1, 16, 1, 32, 32) and out["demo"].abs().sum() > 0  # 2 x 2 px per latent pixel
    assert torch.equal(out["demo"], out["bench"])


def test_the_prompt_is_the_caption_the_bench_prompts_with_and_it_steers_the_model(comfy):
    """UltraGen Demo Prompt gives the bench's encoding of the same objects (bench/fidelity/captions.py), as
    ComfyUI conditioning; another prompt draws another video; the empty caption is the model's negative."""
    sys.path.insert(0, str(PACK_DIR / "bench" / "fidelity"))
    import captions
    comfy.run({"caption": {"class_type": "UltraGenDemoPrompt", "inputs": {"caption": "a large red disc, a blue square"}},
               "show": {"class_type": "UltraGenTestSink", "inputs": {"value": ["caption", 0], "key": "cond"}}})
    cond = captured()["cond"][-1]
    expected = captions.encode([(("red", "disc", 8.5), ("blue", "square", 7.0))])
    assert len(cond) == 1 and torch.equal(cond[0][0], expected)
    comfy.run({"demo": demo_model(), **sampled(["demo", 0], frames=1, key="red")})
    comfy.run({"demo": demo_model(), **sampled(["demo", 0], frames=1, key="green", caption="a large green triangle")})
    comfy.run({"demo": demo_model(), **sampled(["demo", 0], frames=1, key="guided", cfg=3.0)})
    out = captured()
    assert not torch.equal(out["red"], out["green"]) and not torch.equal(out["red"], out["guided"])


def test_a_prompt_the_model_does_not_know_is_refused_once_at_the_caption_input(comfy):
    prompt = {"demo": demo_model(), **sampled(["demo", 0], caption="a purple disc")}
    kind, where, details = only_error(comfy, prompt, "caption")
    assert (kind, where) == ("custom_validation_failed", "caption")
    assert details.startswith("caption - 'a purple disc': the demo model does not know 'purple'.")
    assert "a colour (red, green, blue, yellow)" in details


def test_the_template_runs_end_to_end_and_the_grid_shows_four_different_videos(comfy, tmp_path):
    result = demo_cli.run_demo(comfy, tmp_path / "grid.png", frames=1, steps=2)
    import cv2
    grid = cv2.imread(result["grid"])
    side, gap = 192, demo_cli.SPACING
    assert grid.shape == (demo_cli.HEADER + side, 4 * side + 3 * gap, 3)
    body = grid[demo_cli.HEADER:].astype(np.float32)
    panels = [body[:, i * (side + gap):i * (side + gap) + side] for i in range(4)]
    for i in range(4):
        assert panels[i].std() > 1  # a picture, not a flat frame
        for j in range(i):
            assert np.abs(panels[i] - panels[j]).mean() > 1, (i, j)  # bicubic, quality, fast, coarse to fine differ
    assert "A = UltraGen coarse to fine 3x (192x192, 1 frames), B = native + bicubic 3x (192x192, 1 frames)" \
        in result["report"]


def test_fewer_steps_keep_coarse_to_fine_s_share_of_them_from_the_native_pass(comfy):
    prompt, _ = demo_cli.demo_prompt(comfy.nodes.NODE_CLASS_MAPPINGS, frames=2, steps=10)
    finish, = (n["inputs"] for n in prompt.values() if n["class_type"] == "KSamplerAdvanced")
    assert (finish["steps"], finish["start_at_step"], finish["add_noise"]) == (10, 7, "enable")  # 14 of 20
    init, = (n["inputs"] for n in prompt.values() if n["class_type"] == "UltraGenUpscaleLatent")
    assert prompt[init["reference"][0]]["inputs"]["scale"] == 3  # resized to the 3x Demo Latent
    assert prompt[init["latent"][0]]["class_type"] == "KSampler"  # from the native pass


def test_a_file_that_is_not_a_demo_model_is_refused_once_at_the_weights_input(comfy):
    folder = comfy.models_dir / "ultragen_demo"
    folder.mkdir(exist_ok=True)
    comfy.folder_paths.add_model_folder_path("ultragen_demo", str(folder))
    name = save_wan(comfy, "plain_wan_for_demo.safetensors")
    (comfy.models_dir / "diffusion_models" / name).rename(folder / name)
    prompt = {"demo": demo_model(name), **sampled(["demo", 0])}
    kind, where, details = only_error(comfy, prompt, "demo")
    assert (kind, where) == ("custom_validation_failed", "weights")
    assert details.startswith(f"weights - {name} has no latent space in its metadata")
    assert "Pick ultragen_fidelity_wan.safetensors" in details


def test_demo_decode_refuses_a_latent_of_another_model_naming_its_shape(comfy):
    prompt = {"latent": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
              "decode": {"class_type": "UltraGenDemoDecode", "inputs": {"samples": ["latent", 0]}},
              "show": {"class_type": "PreviewImage", "inputs": {"images": ["decode", 0]}}}
    with pytest.raises(PromptFailed, match=r"UltraGen Demo Decode: samples has shape \(1, 4, 8, 8\); it decodes "
                                           r"the demo model's video latents"):
        comfy.run(prompt)


def test_without_the_bundled_file_the_weights_input_says_where_it_belongs(comfy, monkeypatch):
    monkeypatch.setitem(comfy.folder_paths.folder_names_and_paths, "ultragen_demo", ([], {".safetensors"}))
    monkeypatch.setattr(comfy.folder_paths, "filename_list_cache", {}, raising=False)
    kind, where, details = only_error(comfy, {"demo": demo_model(), **sampled(["demo", 0])}, "demo")
    assert (kind, where) == ("custom_validation_failed", "weights")
    assert "no demo weights found" in details and "models/ultragen_demo" in details
