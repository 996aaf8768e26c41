"""The demo model's core (ultragen_core/demo.py): its bundled weights, its prompt, its latents and their decode."""
import math

import pytest
import torch
from safetensors.torch import save_file

from ultragen_core import demo

BUNDLED = demo.WEIGHTS_DIR / "ultragen_fidelity_wan.safetensors"


def test_the_bundled_weights_are_a_demo_model_trained_with_shift_3_in_the_demos_space_on_captions():
    assert demo.weights_problem(BUNDLED) is None
    facts = demo.trained_facts(BUNDLED)
    assert facts["shift"] == demo.SHIFT == 3.0 and facts["config"]["dim"] > 0 and facts["steps"] > 0
    from safetensors import safe_open
    with safe_open(str(BUNDLED), "pt") as f:
        meta = f.metadata()
    assert meta["latent_space"] == demo.DEMO_SPACE and demo.pixels_of(meta["latent_space"]) == demo.DEMO_PIXELS == 2
    assert meta["context"].startswith("captions v1")  # prompted with UltraGen Demo Prompt


def test_other_files_are_refused_saying_why_and_what_to_pick(tmp_path):
    plain = tmp_path / "wan.safetensors"
    save_file({"x": torch.zeros(1)}, str(plain))
    assert "no latent space in its metadata" in demo.weights_problem(plain)
    other = tmp_path / "other.safetensors"
    save_file({"x": torch.zeros(1)}, str(other), metadata={"latent_space": "pixels, gain 1"})
    problem = demo.weights_problem(other)
    assert "'pixels, gain 1'" in problem and "Pick ultragen_fidelity_wan.safetensors" in problem
    first = tmp_path / "first_space.safetensors"  # a bench model of the first space: a clear word on why not
    save_file({"x": torch.zeros(1)}, str(first), metadata={"latent_space": demo.SPACE})
    problem = demo.weights_problem(first)
    assert "first latent space" in problem and "2 x 2 pixels per latent pixel" in problem
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(b"not a safetensors file")
    assert "could not be read as safetensors" in demo.weights_problem(broken)
    assert "not a .safetensors file" in demo.weights_problem(tmp_path / "model.ckpt")


@pytest.mark.parametrize("scale,frames,batch", [(1, 8, 1), (3, 2, 2), (4, 1, 1)])
def test_empty_latents_are_64_pixels_per_side_times_the_scale_2_x_2_per_latent_pixel(scale, frames, batch):
    z = demo.empty_latent(scale, frames, batch)
    assert z.shape == (batch, 16, frames, 32 * scale, 32 * scale) and not z.any()


def test_frames_of_decodes_each_video_frame_by_frame_as_comfyui_images():
    gen = torch.Generator().manual_seed(0)
    video = torch.rand(2, 3, 3, 6, 10, generator=gen)  # (B, T, 3, H, W): sides not a multiple of 4, batch of 2
    latent = demo.encode(video, demo.DEMO_PIXELS)
    assert latent.shape == (2, 16, 3, 3, 5)
    images = demo.frames_of(latent)
    decoded = demo.decode(latent, demo.DEMO_PIXELS)  # (2, 3, 3, 6, 10)
    assert images.shape == (6, 6, 10, 3)
    torch.testing.assert_close(images, decoded.permute(0, 1, 3, 4, 2).reshape(6, 6, 10, 3))
    torch.testing.assert_close(images[3], decoded[1, 0].permute(1, 2, 0))  # video 2 follows video 1
    # a flat video comes back exactly
    flat = torch.full((1, 1, 3, 4, 4), 0.3)
    torch.testing.assert_close(demo.frames_of(demo.encode(flat, demo.DEMO_PIXELS)), torch.full((1, 4, 4, 3), 0.3))


def test_the_prompt_in_the_demos_words_is_the_caption_the_model_learnt():
    caption = demo.parse_caption("  A Large RED disc, a small blue square,")
    assert caption == (("red", "disc", demo.SIZES["large"]), ("blue", "square", demo.SIZES["small"]))
    assert demo.parse_caption("green triangle") == (("green", "triangle", demo.SIZES["mid-sized"]),)
    context = demo.context("a large red disc, a small blue square")
    assert context.shape == (1, demo.TOKENS, demo.TEXT_DIM)
    assert context[0, 0, demo.COLOURS.index("red")] == 1 and context[0, 1, demo.COLOURS.index("blue")] == 1
    assert context[0, 0, len(demo.COLOURS) + demo.SHAPES.index("disc")] == 1
    assert context[0, 0, 7] == pytest.approx(math.log1p(demo.SIZES["large"] / demo.SIZE_UNIT))
    assert not context[0, 2].any() and not context[0, :, 8:].any()
    assert not demo.context("").any() and not demo.context("empty").any()
    for text, words in (("a purple disc", "does not know 'purple'"), ("red", "one colour and one shape"),
                        ("red disc, red square", "one colour twice"), ("small large red disc", "two sizes"),
                        ("red disc, blue disc, green disc, yellow disc", "names 4 objects")):
        with pytest.raises(ValueError, match=words):
            demo.parse_caption(text)
    with pytest.raises(ValueError, match="at most 3 objects"):
        demo.caption_tokens([(("red", "disc", 5.0),) * 4])


def test_the_demo_sizes_are_the_bench_worlds_the_bundled_model_was_trained_on():
    import sys
    from comfyui_finder import PACK_DIR
    sys.path.insert(0, str(PACK_DIR / "bench" / "fidelity"))
    import scenes
    assert (demo.NATIVE, demo.FRAMES) == (scenes.NATIVE, scenes.FRAMES)
    assert (demo.COLOURS, demo.SHAPES) == (scenes.COLOURS, scenes.SHAPES)  # the captions' words
    # the prompt's sizes are radii the bundled model learnt (trained on the evaluation's sizes, scenes.RADIUS)
    assert scenes.RADIUS[0] <= min(demo.SIZES.values()) and max(demo.SIZES.values()) <= scenes.RADIUS[1]
