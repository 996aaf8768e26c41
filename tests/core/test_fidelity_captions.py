"""The fidelity bench's captions (bench/fidelity/captions.py) and the CPU pilot's sampler (pilot.py): no ComfyUI."""
import math
import sys

import pytest
import torch

from comfyui_finder import PACK_DIR

sys.path.insert(0, str(PACK_DIR / "bench" / "fidelity"))
import captions  # noqa: E402
import scenes  # noqa: E402


def test_a_whole_scene_is_captioned_with_every_object_and_a_crop_with_those_it_shows():
    sc = scenes.sample_scenes(11, 6)
    whole = captions.of_scenes(sc)
    assert [[(c, s) for c, s, _ in cap] for cap in whole] == [[(o.colour, o.shape) for o in x.objects] for x in sc]
    assert all(r == o.radius for cap, x in zip(whole, sc) for (_, _, r), o in zip(cap, x.objects))
    # a 4x crop around the first object's path at frame 0 shows it, 4 times as large; a 4x crop of a corner no
    # object comes near shows nothing
    obj = sc[0].objects[0]
    side = scenes.NATIVE / 4
    origin = torch.tensor([[obj.start[0] - side / 2, obj.start[1] - side / 2]])
    (crop,) = captions.of_scenes(sc[:1], zoom=torch.tensor([4.0]), origin=origin)
    assert (obj.colour, obj.shape, obj.radius * 4) in crop
    far = [x for x in sc if all(min(o.centre(t)[0] for t in range(scenes.FRAMES)) > 2 * side + o.radius
                                for o in x.objects)]
    assert far  # scenes whose objects stay right of the corner
    corner = captions.of_scenes(far, zoom=torch.full((len(far),), 4.0), origin=torch.zeros(len(far), 2))
    assert all(cap == () for cap in corner)


def test_captions_encode_as_one_hot_tokens_padded_with_the_empty_context():
    cap = (("blue", "triangle", 10.0), ("red", "disc", 5.0))
    ctx = captions.encode([cap, ()])
    assert ctx.shape == (2, captions.TOKENS, captions.TEXT_DIM) and ctx.dtype == torch.float32
    assert torch.count_nonzero(ctx[1]) == 0 and torch.count_nonzero(ctx[0, 2]) == 0  # empty caption, padding
    blue, triangle = scenes.COLOURS.index("blue"), len(scenes.COLOURS) + scenes.SHAPES.index("triangle")
    size = len(scenes.COLOURS) + len(scenes.SHAPES)
    assert torch.nonzero(ctx[0, 0]).flatten().tolist() == [blue, triangle, size]
    assert ctx[0, 0, size] == pytest.approx(math.log(2)) and ctx[0, 1, size] == pytest.approx(math.log(1.5))
    assert captions.text(cap) == "a mid-sized blue triangle, a small red disc" and captions.text(()) == "(empty)"
    with pytest.raises(ValueError, match="at most 3 objects, got 4"):
        captions.encode([cap + cap])


def test_caption_dropout_empties_a_share_of_whole_captions():
    ctx = captions.encode(captions.of_scenes(scenes.sample_scenes(3, 2000)))
    kept = captions.drop(ctx, torch.Generator().manual_seed(0))
    emptied = (kept.flatten(1).abs().sum(1) == 0)
    assert abs(float(emptied.float().mean()) - captions.DROP) < 0.03
    assert torch.equal(kept[~emptied], ctx[~emptied])  # the others whole
    assert torch.equal(captions.drop(ctx, torch.Generator().manual_seed(0)), kept)  # seeded


def test_the_pilot_samples_with_comfyuis_sigmas_and_classifier_free_guidance():
    pilot = pytest.importorskip("pilot", reason="the pilot's metrics need OpenCV (requirements.txt)")
    s = pilot.sigmas(20)
    assert s[0] == 1 and s[-1] == 0 and len(s) == 21 and bool((s[1:] < s[:-1]).all())
    assert float(s[2]) == pytest.approx(0.964, abs=1e-3) and float(s[5]) == pytest.approx(0.9, abs=1e-3)

    def model(x, t, context):  # velocity noise - x0 towards a target set by the context: x0 = 0 or x0 = 1
        target = 1.0 if context.abs().sum() > 0 else 0.0
        sigma = t.view(-1, 1, 1, 1, 1) / 1000
        return (x - target) / sigma.clamp(min=1e-3)

    shape, ctx = (2, 1, 1, 2, 2), torch.ones(2, 3, captions.TEXT_DIM)
    # an exact velocity field lands on its target whatever the noise; guidance g extrapolates: 0 + g (1 - 0)
    assert torch.allclose(pilot.sample(model, None, shape), torch.zeros(shape), atol=1e-5)
    assert torch.allclose(pilot.sample(model, ctx, shape), torch.ones(shape), atol=1e-5)
    assert torch.allclose(pilot.sample(model, ctx, shape, guidance=3.0), torch.full(shape, 3.0), atol=1e-4)
