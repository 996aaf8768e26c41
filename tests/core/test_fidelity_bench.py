"""The fidelity bench's scenes, latent space and metrics (bench/fidelity): no ComfyUI needed."""
import dataclasses
import math
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from comfyui_finder import PACK_DIR

sys.path.insert(0, str(PACK_DIR / "bench" / "fidelity"))
import latents  # noqa: E402
import scenes  # noqa: E402

metrics = pytest.importorskip("metrics", reason="the bench metrics need OpenCV (requirements.txt)")


def test_scenes_are_deterministic_and_scale_by_pixels_not_content():
    a, b = scenes.sample_scenes(3, 4), scenes.sample_scenes(3, 4)
    assert a == b and a != scenes.sample_scenes(4, 4)
    assert all(1 <= len(s.objects) <= 3 and len({o.colour for o in s.objects}) == len(s.objects) for s in a)
    one, two = scenes.render(a, 1), scenes.render(a, 2)
    assert one.shape == (4, scenes.FRAMES, 3, 64, 64) and two.shape == (4, scenes.FRAMES, 3, 128, 128)
    # the x2 render averaged over 2 x 2 pixels is the x1 render, up to the anti-aliased edges
    pooled = torch.nn.functional.avg_pool2d(two.flatten(0, 1), 2).unflatten(0, one.shape[:2])
    assert (pooled - one).abs().mean() < 0.01


def test_latent_space_is_exactly_invertible_with_16_channels():
    video = scenes.render(scenes.sample_scenes(1, 2), 1, frames=3)
    z = latents.encode(video)
    assert z.shape == (2, 16, 3, 32, 32) and torch.all(z[:, 12:] == 0) and z.abs().max() <= 1
    assert torch.allclose(latents.decode(z), video, atol=1e-6)
    with pytest.raises(ValueError, match="16 channels"):
        latents.decode(z[:, :12])


@pytest.mark.parametrize("scale", [1, 3])
def test_metrics_of_ground_truth_are_perfect(scale):
    sc = scenes.sample_scenes(7, 4, frames=3)
    videos = metrics.to_numpy(scenes.render(sc, scale, frames=3))
    for video, truth in zip(videos, scenes.ground_truth(sc, frames=3)):
        m = metrics.per_video(video, scale)
        assert m["count_error"] == 0 and m["duplication"] == 0 and m["continuity"] == 1
        found = metrics.detect(video[0], scale)
        assert sum(map(len, found.values())) == truth["count"]
        for obj in truth["objects"]:
            (area, cx, cy), = found[obj["colour"]]
            assert abs(cx - obj["centres"][0][0]) < 1 and abs(cy - obj["centres"][0][1]) < 1
            assert area / scale ** 2 == pytest.approx(obj["area"], rel=0.25)


def test_a_duplicated_object_a_vanished_object_and_blur_are_detected():
    sc = [s for s in scenes.sample_scenes(11, 20, frames=4) if len(s.objects) == 1][0]
    obj = sc.objects[0]
    twin = dataclasses.replace(obj, start=(scenes.NATIVE - obj.start[0], scenes.NATIVE - obj.start[1]),
                               velocity=(-obj.velocity[0], -obj.velocity[1]))  # mirrored through the centre
    assert min(math.dist(obj.centre(t), twin.centre(t)) for t in range(4)) > 2 * obj.radius + 2
    video, doubled = metrics.to_numpy(scenes.render([sc, dataclasses.replace(sc, objects=(obj, twin))], 2, 4))
    assert metrics.per_video(video, 2)["duplication"] == 0
    m = metrics.per_video(doubled, 2)
    assert m["duplication"] == 1 and m["count_error"] == 1
    gone = video.copy()
    gone[2:] = video[2:, :1, :1]  # the object vanishes after frame 1 (the frames become one flat colour)
    assert metrics.per_video(gone, 2)["continuity"] < 1 and metrics.per_video(gone, 2)["count_error"] == 0.5
    reference = metrics.reference_stats(metrics.to_numpy(scenes.render(scenes.sample_scenes(5, 4, 4), 2, 4)), 2)
    frames = torch.from_numpy(video).permute(0, 3, 1, 2)
    blurred = F.interpolate(F.interpolate(frames, scale_factor=0.25, mode="area"), scale_factor=4, mode="bicubic")
    blurred = blurred.clamp(0, 1).permute(0, 2, 3, 1).numpy()
    sharp_js = metrics.set_distances(video[None], 2, reference)["edge_js"][0]
    assert metrics.set_distances(blurred[None], 2, reference)["edge_js"][0] > 2 * sharp_js
