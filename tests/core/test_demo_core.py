"""The demo model's core (ultragen_core/demo.py): its bundled weights, its latents and their decode."""
import pytest
import torch
from safetensors.torch import save_file

from ultragen_core import demo

BUNDLED = demo.WEIGHTS_DIR / "ultragen_fidelity_wan.safetensors"


def test_the_bundled_weights_are_a_demo_model_trained_with_shift_3():
    assert demo.weights_problem(BUNDLED) is None
    facts = demo.trained_facts(BUNDLED)
    assert facts["shift"] == demo.SHIFT == 3.0 and facts["config"]["dim"] > 0 and facts["steps"] > 0


def test_other_files_are_refused_saying_why_and_what_to_pick(tmp_path):
    plain = tmp_path / "wan.safetensors"
    save_file({"x": torch.zeros(1)}, str(plain))
    assert "no latent space in its metadata" in demo.weights_problem(plain)
    other = tmp_path / "other.safetensors"
    save_file({"x": torch.zeros(1)}, str(other), metadata={"latent_space": "pixels, gain 1"})
    problem = demo.weights_problem(other)
    assert "'pixels, gain 1'" in problem and "Pick ultragen_fidelity_wan.safetensors" in problem
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(b"not a safetensors file")
    assert "could not be read as safetensors" in demo.weights_problem(broken)
    assert "not a .safetensors file" in demo.weights_problem(tmp_path / "model.ckpt")


@pytest.mark.parametrize("scale,frames,batch", [(1, 8, 1), (3, 2, 2), (4, 1, 1)])
def test_empty_latents_are_64_pixels_per_side_times_the_scale(scale, frames, batch):
    z = demo.empty_latent(scale, frames, batch)
    assert z.shape == (batch, 16, frames, 64 * scale, 64 * scale) and not z.any()


def test_frames_of_decodes_each_video_frame_by_frame_as_comfyui_images():
    gen = torch.Generator().manual_seed(0)
    video = torch.rand(2, 3, 3, 5, 7, generator=gen)  # (B, T, 3, H, W): odd sides, batch of 2
    images = demo.frames_of(demo.encode(video))
    assert images.shape == (6, 5, 7, 3)
    assert torch.allclose(images, video.permute(0, 1, 3, 4, 2).reshape(6, 5, 7, 3), atol=1e-5)
    assert images[3].allclose(video[1, 0].permute(1, 2, 0), atol=1e-5)  # video 2 follows video 1


def test_the_demo_sizes_are_the_bench_worlds_the_bundled_model_was_trained_on():
    import sys
    from comfyui_finder import PACK_DIR
    sys.path.insert(0, str(PACK_DIR / "bench" / "fidelity"))
    import scenes
    assert (demo.NATIVE, demo.FRAMES) == (scenes.NATIVE, scenes.FRAMES)
