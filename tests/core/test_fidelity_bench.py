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


def test_latent_space_is_exactly_invertible_with_16_channels_of_unit_spread():
    video = scenes.render(scenes.sample_scenes(1, 2), 1, frames=3)
    z = latents.encode(video)
    assert z.shape == (2, 16, 3, 64, 64)
    assert torch.allclose(latents.decode(z), video, atol=1e-5)
    # what the model sees after ComfyUI's Wan 2.1 normalisation, (z - mean) / std (the constants are checked
    # against ComfyUI's own format in tests/comfyui/test_fidelity_bench_comfyui.py)
    mean = torch.tensor(latents.WAN21_MEAN).view(1, 16, 1, 1, 1)
    std = torch.tensor(latents.WAN21_STD).view(1, 16, 1, 1, 1)
    seen = (z - mean) / std
    assert torch.allclose(seen, latents.normalised(video), atol=1e-5)
    assert torch.all(seen[:, 3:].abs() < 1e-5) and seen.abs().max() <= latents.GAIN + 1e-5
    assert torch.allclose(seen[:, :3], latents.GAIN * (2 * video.transpose(1, 2) - 1), atol=1e-5)
    # the content spreads about 1 around each channel's mean, as Wan's normalised latents do (the old space:
    # 0.18, so the scene was decided in the last sampling steps)
    wide = latents.normalised(scenes.render(scenes.sample_scenes(2, 16), 1))[:, :3]
    assert 0.5 < (wide - wide.mean((0, 2, 3, 4), keepdim=True)).std() < 1.2
    with pytest.raises(ValueError, match="16 channels"):
        latents.decode(z[:, :12])


def test_the_space_of_2_x_2_pixels_is_the_first_space_at_half_size_decoded_bilinear():
    """A latent pixel per 2 x 2 pixels, averaged: exactly what a model of the first space saw when it trained at half
    size (train.py averages the frames 2 x 2 first), so such weights hold in it unchanged; decoded by bilinear
    upsampling, as pilot.py's half-size reading upsampled."""
    video = scenes.render(scenes.sample_scenes(4, 2), 1, frames=3)
    z = latents.encode(video, 2)
    assert z.shape == (2, 16, 3, 32, 32)
    half = F.avg_pool2d(video.flatten(0, 1), 2).unflatten(0, (2, 3))
    torch.testing.assert_close(z, latents.encode(half), atol=1e-5, rtol=0)
    torch.testing.assert_close(latents.normalised(video, 2), latents.normalised(half), atol=1e-5, rtol=0)
    frames = latents.decode(z, 2)
    assert frames.shape == video.shape and 0 <= frames.min() and frames.max() <= 1
    up = F.interpolate(half.flatten(0, 1), scale_factor=2, mode="bilinear", align_corners=False).unflatten(0, (2, 3))
    torch.testing.assert_close(frames, up.clamp(0, 1), atol=1e-5, rtol=0)
    assert torch.equal(latents.through_space(video, 2), frames)
    # lossy, as a VAE is: flat areas come back, the objects' edges soften
    err = (frames - video).abs()
    assert err.mean() < 0.02 and err.max() > 0.1
    torch.testing.assert_close(latents.through_space(video, 1), video, atol=1e-5, rtol=0)
    # the weights name their space; the first space keeps the name trained weights carry
    assert latents.pixels_of(latents.space_name(2)) == 2 and latents.pixels_of(latents.SPACE) == latents.PIXELS == 1
    assert latents.SPACE == "bench/fidelity/latents.py: 1 px per latent pixel, gain 2, Wan 2.1 stats"
    assert latents.pixels_of("bench/fidelity/latents.py") is None and latents.pixels_of(None) is None
    with pytest.raises(ValueError, match=r"multiples of 2, got shape \(2, 3, 3, 63, 64\)"):
        latents.encode(video[..., :63, :], 2)
    with pytest.raises(ValueError, match=r"pixels per latent pixel must be one of \[1, 2\], got 3"):
        latents.decode(z, 3)


def test_training_views_are_crops_of_the_same_world_at_higher_resolution():
    sc = scenes.sample_scenes(3, 2)
    crop = scenes.render(sc[:1], 1, zoom=torch.tensor([2.0]), origin=torch.tensor([[10.0, 20.0]]))
    # zoom 2 at origin (10, 20) units: the x2 render's pixels from (x 20, y 40), 64 x 64 of them
    assert torch.equal(crop, scenes.render(sc[:1], 2)[:, :, :, 40:104, 20:84])
    whole = scenes.render(sc, 1, zoom=torch.ones(2), origin=torch.zeros(2, 2))
    assert torch.equal(whole, scenes.render(sc, 1))
    zoom, origin = scenes.sample_views(5, 400)
    assert torch.equal(zoom, scenes.sample_views(5, 400)[0])
    assert 0.35 < (zoom == 1).float().mean() < 0.65 and zoom.max() <= scenes.ZOOM[1]
    assert zoom[zoom > 1].min() >= scenes.ZOOM[0]
    assert torch.all(origin >= 0) and torch.all(origin + scenes.NATIVE / zoom[:, None] <= scenes.NATIVE + 1e-4)
    radii = [o.radius for s in scenes.sample_scenes(9, 200, radius=scenes.TRAIN_RADIUS) for o in s.objects]
    assert min(radii) < scenes.RADIUS[0] and max(radii) > scenes.RADIUS[1]


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


def _x1(full: dict, truth_colour: float = 0.05) -> dict:
    truth = {"scale": 1, "mode": "ground_truth", "status": "ok", "videos": 64, "colour_js": (truth_colour, 0.01)}
    return {"cells": [truth, {"scale": 1, "mode": "full", "status": "ok", **full}]}


def test_the_gate_passes_a_model_that_learned_and_names_what_fails():
    outputs = pytest.importorskip("outputs")
    good = {"videos": 64, "count_error": (0.1, 0.02, 64), "duplication": (0.0, 0.0, 64),
            "continuity": (0.9, 0.02, 64), "colour_js": (0.09, 0.01)}
    assert outputs.gate(_x1(good))["passed"]
    text = outputs.gate_text(_x1(good))
    assert "**passed**" in text and "no conclusion" not in text
    bad = outputs.gate(_x1({**good, "continuity": (0.84, 0.02, 64), "colour_js": (0.11, 0.01)}))
    assert not bad["passed"] and bad["why"] == "fails on continuity, colour_js"
    few = outputs.gate(_x1({**good, "videos": 16}))
    assert not few["passed"] and few["why"] == "fails on videos"
    lost = _x1({**good, "count_error": (0.81, 0.1, 64), "continuity": (float("nan"), float("nan"), 0)})
    assert outputs.gate(lost)["why"] == "fails on count_error, continuity"
    assert "no conclusion is drawn" in outputs.gate_text(lost)
    assert not outputs.gate({"cells": []})["passed"] and "not measured" in outputs.gate_text({"cells": []})
    # weights that learnt at half size only (their metadata, evaluate.py's results["trained"]) are read as such
    half = {**lost, "trained": {"steps": 4814, "half_size_steps": 4814}}
    assert "These weights learnt at half size only (4814 steps)" in outputs.gate_text(half)
    assert "half size only" not in outputs.gate_text({**lost, "trained": {"steps": 4814, "half_size_steps": 100}})
    assert "half size only" not in outputs.gate_text({**lost, "trained": {"steps": 4814, "half_size_steps": None}})


def test_the_detail_metric_tells_detail_from_blur_and_grain():
    sc = scenes.sample_scenes(21, 6, frames=4)
    truth = scenes.render(sc, 2, frames=4)
    reference = metrics.reference_stats(metrics.to_numpy(scenes.render(scenes.sample_scenes(22, 6, 4), 2, 4)), 2)
    same = metrics.detail(metrics.to_numpy(truth), 2, reference)
    assert math.isnan(same["spectrum_ratio"][-1])  # 1-1.5 cycles per unit: beyond what x2 resolves
    assert same["detail_error"] < 0.3 and abs(same["hf_log2"]) < 0.3 and abs(same["flicker"]) < 0.3
    blur = F.interpolate(F.interpolate(truth.flatten(0, 1), scale_factor=0.5, mode="area"), scale_factor=2,
                         mode="bilinear").unflatten(0, truth.shape[:2])
    blurred = metrics.detail(metrics.to_numpy(blur), 2, reference)
    assert blurred["hf_log2"] < -0.5 and blurred["flicker"] < -0.5
    assert blurred["detail_error"] > 2 * same["detail_error"]
    grain = (truth + 0.05 * torch.randn(truth.shape, generator=torch.Generator().manual_seed(0))).clamp(0, 1)
    grainy = metrics.detail(metrics.to_numpy(grain), 2, reference)
    assert grainy["hf_log2"] > 1 and grainy["flicker"] > 0.6 and grainy["detail_error"] > 2 * same["detail_error"]
    # the bands are per native unit: the same content at x1 and x2 has about the same low-band power
    one = metrics.reference_stats(metrics.to_numpy(scenes.render(scenes.sample_scenes(22, 6, 4), 1, 4)), 1)
    assert one["spectrum"][0] == pytest.approx(reference["spectrum"][0], rel=0.1)


def test_the_seam_metric_finds_a_step_on_a_window_border_only():
    video = metrics.to_numpy(scenes.render(scenes.sample_scenes(23, 1, frames=2), 2, frames=2))[0]
    assert 0.1 < metrics.seam_ratio(video, [64], [64]) < 3  # one border of one video: a loose bound
    seamed = video.copy()
    seamed[:, :, 64:] = np.clip(seamed[:, :, 64:] + 0.1, 0, 1)  # a brightness step at column 64
    assert metrics.seam_ratio(seamed, [64], [64]) > 2 * metrics.seam_ratio(video, [64], [64])
    assert metrics.seam_ratio(seamed, [32], [32]) < 3  # measured where there is no border: no seam
    assert math.isnan(metrics.seam_ratio(video, [], []))


def test_lanczos_sharpen_upscales_sharper_than_bicubic_and_keeps_flat_colour():
    small = scenes.render(scenes.sample_scenes(24, 2, frames=2), 1, frames=2)
    big = metrics.lanczos_sharpen(small, 2)
    assert big.shape == (2, 2, 3, 128, 128) and 0 <= big.min() and big.max() <= 1
    flat = metrics.lanczos_sharpen(torch.full((1, 1, 3, 8, 8), 0.4), 3)
    assert torch.allclose(flat, torch.full((1, 1, 3, 24, 24), 0.4), atol=1e-4)
    bicubic = F.interpolate(small.flatten(0, 1), scale_factor=2, mode="bicubic").clamp(0, 1).unflatten(0, (2, 2))
    hf = lambda v: metrics.spectra(metrics.to_numpy(v), 2)[0].mean(0)[2]  # 0.25-0.5 cycles per unit
    assert hf(big) > 1.1 * hf(bicubic)


def test_grain_contents_tile_native_scenes_and_bands_split_the_variance():
    grain = pytest.importorskip("grain")
    both = grain.contents(1, 2)
    assert both["zoom"].shape == both["tiles"].shape == (1, 2, 3, 128, 128)
    first = scenes.render(scenes.sample_scenes(30_001, 4, 2), 1, 2)  # the four tiles, row-major
    assert torch.equal(both["tiles"][0, :, :, :64, :64], first[0])
    assert torch.equal(both["tiles"][0, :, :, 64:, 64:], first[3])
    frames = both["zoom"]
    lum = frames[:, :, 0] * 0.299 + frames[:, :, 1] * 0.587 + frames[:, :, 2] * 0.114
    assert grain.band_power(frames).sum() == pytest.approx(float(lum.var((-2, -1), unbiased=False).mean()) * 128 * 128,
                                                           rel=1e-3)


def test_the_sol_attn_override_hands_calls_it_cannot_take_to_the_previous_attention(monkeypatch):
    """Off CUDA, below 12,288 tokens, masked, or before 20% of the schedule, ComfyUI's Model Sparse Attention
    node runs dense: the bench's copy of its override hands those calls on unchanged (and the row is
    skipped where comfy_kitchen's CUDA sol_attn cannot run)."""
    import types
    import fidelity_nodes
    calls = []
    monkeypatch.setitem(sys.modules, "comfy_kitchen", types.SimpleNamespace(sol_attn=lambda *a, **k: calls.append(1)))
    override = fidelity_nodes.sol_attn_override(sigma_start=0.8)
    q = k = v = torch.randn(1, 16384, 256)  # (B, N, heads * 128): long enough, but on the CPU
    seen = []

    def func(q_, k_, v_, heads, **kw):
        seen.append((q_ is q, heads, kw["transformer_options"]["sigmas"].item(), kw["mask"]))
        return "dense"

    opts = {"transformer_options": {"sigmas": torch.tensor([0.5])}}
    assert override(func, q, k, v, 2, **opts) == "dense"
    previous = lambda f, *a, **kw: "previous"  # noqa: E731
    assert fidelity_nodes.sol_attn_override(0.8, previous)(func, q, k, v, 2, **opts) == "previous"
    assert seen == [(True, 2, 0.5, None)] and calls == []
    if not torch.cuda.is_available():
        assert "CUDA" in fidelity_nodes.sol_attn_unavailable() or "sol_attn" in fidelity_nodes.sol_attn_unavailable()


def test_the_seam_of_a_set_pools_its_videos():
    videos = metrics.to_numpy(scenes.render(scenes.sample_scenes(40, 16, 2), 2, 2))
    borders = [32, 64, 96]
    value, error = metrics.seam_of_set(videos, borders, borders)
    assert 0.8 < value < 1.1 and error < 0.1  # ground truth: no seam
    seamed = videos.copy()
    seamed[:, :, :, 64:] = np.clip(seamed[:, :, :, 64:] + 0.02, 0, 1)  # a faint step on one border
    assert metrics.seam_of_set(seamed, borders, borders)[0] > 2 * value


def test_the_ema_averages_the_end_of_a_run_not_its_start():
    """A power-function EMA: the first step copies the weights; at step n the average weighs the last ~n / 8
    steps, so a 1,000-step run is not averaged with its untrained start (a fixed 0.999 weighed the first
    hundred steps e^-0.9 = 0.4 as much as the last)."""
    import train  # no ComfyUI at import
    assert train.ema_decay(1) == 0.0
    decays = [train.ema_decay(n) for n in range(1, 3001)]
    assert all(a < b < 1 for a, b in zip(decays, decays[1:]))
    # the weight each step of a 1,000-step run has in the final average
    weights, kept = [], 1.0
    for n in range(1000, 0, -1):
        decay = train.ema_decay(n)
        weights.append(kept * (1 - decay))
        kept *= decay
    weights = weights[::-1]  # weights[i]: step i + 1
    assert abs(sum(weights) - 1) < 1e-9
    assert sum(weights[:500]) < 0.01 and 0.5 < sum(weights[-120:]) < 0.8


def test_a_high_noise_share_moves_that_share_of_training_draws_to_the_top_of_the_schedule():
    """--high-noise-share p: a share p of the noise levels is uniform over 0.9-1, the rest as ModelSamplingSD3 at
    the bench's shift spaces them (a quarter of those above 0.9 at shift 3: u > 0.75)."""
    import train  # no ComfyUI at import
    torch.manual_seed(0)
    plain = train.sample_sigmas(200_000, "cpu")
    assert abs(float((plain > 0.9).float().mean()) - 0.25) < 0.005
    assert abs(float((plain < 0.5).float().mean()) - 0.25) < 0.005  # s < 0.5 where u < 0.25
    mixed = train.sample_sigmas(200_000, "cpu", high_noise_share=0.25)
    assert 0 <= float(mixed.min()) and float(mixed.max()) <= 1
    assert abs(float((mixed > 0.9).float().mean()) - (0.25 + 0.75 * 0.25)) < 0.005
    assert abs(float((mixed < 0.5).float().mean()) - 0.75 * 0.25) < 0.005
    top = mixed[mixed > 0.9]
    assert abs(float(top.mean()) - 0.95) < 0.002  # uniform there (and the shifted draws above 0.9 nearly so)


def test_weights_split_into_parts_under_the_limit_join_back_bit_for_bit(tmp_path):
    """A device run hands back files of at most 16 MiB: weights above the limit are split into parts of whole
    tensors and joined back into the same tensors and metadata; incomplete parts are refused, naming them."""
    import weight_parts
    from safetensors import safe_open
    from safetensors.torch import save_file
    gen = torch.Generator().manual_seed(0)
    tensors = {f"blocks.{i}.w": torch.randn(64, 64, generator=gen).to(torch.bfloat16) for i in range(5)}  # 8 KiB each
    path = tmp_path / "w.safetensors"
    save_file(tensors, str(path), metadata={"config": "{}", "steps": "7"})
    assert weight_parts.split(path, limit=1 << 20) == [path]  # under the limit: left alone
    parts = weight_parts.split(path, limit=20_000)  # two tensors a part
    assert [p.name for p in parts] == [f"w.part{k}of3.safetensors" for k in (1, 2, 3)] and not path.exists()
    assert all(p.stat().st_size <= 20_000 + 1024 for p in parts)
    assert weight_parts.join(path) == path
    with safe_open(str(path), "pt") as f:
        assert f.metadata() == {"config": "{}", "steps": "7"}
        assert all(torch.equal(f.get_tensor(k), t) for k, t in tensors.items()) and set(f.keys()) == set(tensors)
    path.unlink()
    parts[1].unlink()
    with pytest.raises(ValueError, match="incomplete.*w.part1of3.safetensors, w.part3of3.safetensors"):
        weight_parts.join(path)
    with pytest.raises(FileNotFoundError, match="no parts of it"):
        weight_parts.join(tmp_path / "other.safetensors")


def test_failure_kinds_tell_a_broken_object_from_one_drawn_twice_and_flicker_from_jumps(tmp_path):
    """diagnose.py --samples: what the gate counted, by kind. A twin object is a second object; a stripe of
    another colour across an object breaks it into fragments only if a piece is small; an object missing from
    some frames appears / vanishes; the ground truth has none of these."""
    sc = [s for s in scenes.sample_scenes(11, 20, frames=4) if len(s.objects) == 1][0]
    obj = sc.objects[0]
    twin = dataclasses.replace(obj, start=(scenes.NATIVE - obj.start[0], scenes.NATIVE - obj.start[1]),
                               velocity=(-obj.velocity[0], -obj.velocity[1]))
    video, doubled = metrics.to_numpy(scenes.render([sc, dataclasses.replace(sc, objects=(obj, twin))], 1, 4))
    clean = metrics.failure_kinds(video, 1)
    assert clean["frames"] == 4 and clean["colour_pairs"] == 3
    assert all(clean[k] == 0 for k in metrics.FAILURE_KINDS)
    assert metrics.failure_kinds(doubled, 1)["second_object"] == 4
    broken = video.copy()
    cx, cy = obj.centre(0)
    x, y = int(scenes.NATIVE - 1 - cx) // 2 * 2, int(scenes.NATIVE - 1 - cy) // 2 * 2  # away from the object
    broken[0, y:y + 3, x:x + 3] = scenes.PALETTE[obj.colour]  # a 9-pixel speck of its colour: a fragment
    kinds = metrics.failure_kinds(broken, 1)
    assert (kinds["fragment"], kinds["second_object"], kinds["split"]) == (1, 0, 1)
    gone = video.copy()
    gone[2:] = video[2:, :1, :1]  # the object vanishes after frame 1
    assert metrics.failure_kinds(gone, 1)["appears_or_vanishes"] == 2  # pairs (1, 2) and (2, 3)
    # the npz an evaluation writes, read back by diagnose.py
    outputs = pytest.importorskip("outputs")
    diagnose = pytest.importorskip("diagnose")
    path = outputs.write_videos({(1, "ground_truth"): video[None], (1, "full"): doubled[None],
                                 (2, "full"): doubled[None]}, tmp_path)
    assert path.name == "videos_x1.npz"
    found = diagnose.failures(path)
    assert set(found) == {"ground_truth", "full"}
    assert found["full"]["second_object"] == 100.0 and found["ground_truth"]["second_object"] == 0.0


def test_from_truth_refuses_a_missing_model_and_steps_outside_the_schedule(capsys):
    """diagnose.py --from-truth: without --weights, or with start steps outside 0-19, it says what was wrong
    before anything starts."""
    diagnose = pytest.importorskip("diagnose")
    with pytest.raises(SystemExit, match="--from-truth samples with a model: give --weights"):
        diagnose.main(["--from-truth"])
    for bad in ("20", "5,x", "-1"):
        with pytest.raises(SystemExit, match=f"--start-steps takes steps of the 20 sampling steps, 0-19, "
                                             f"comma-separated; got '{bad}'"):
            diagnose.main(["--from-truth", "--weights", "w.safetensors", "--start-steps", bad])
    assert [round(diagnose.step_sigma(k), 3) for k in (0, 5, 10, 15, 19)] == [1.0, 0.9, 0.75, 0.5, 0.136]


def test_the_temporal_probe_measures_one_frames_object_from_all_frames_that_frame_alone_and_the_others_alone():
    """diagnose.py --temporal: recovered() is 1 for the truth, 0 for the scene without objects, in between for a
    faint object; the three inputs are every frame noised, only that frame keeping its signal, and every frame but
    that one keeping it."""
    diagnose = pytest.importorskip("diagnose")
    sc = scenes.sample_scenes(40_000, 3)
    frames, bare_frames = scenes.render(sc, 1, 4), diagnose.without_objects(sc, 4)
    truth, bare = latents.normalised(frames), latents.normalised(bare_frames)
    mask = diagnose.object_mask(sc, frames)
    assert torch.allclose(diagnose.recovered(truth, truth, bare, mask, 2), torch.ones(3))
    assert torch.allclose(diagnose.recovered(bare, truth, bare, mask, 2), torch.zeros(3))
    faint = bare + 0.3 * (truth - bare)
    assert torch.allclose(diagnose.recovered(faint, truth, bare, mask, 2), torch.full((3,), 0.3), atol=1e-5)
    seen = []

    def oracle(inputs, timestep, context):  # the clean video whatever the input: recovers all of the object
        seen.append(inputs.clone())
        s = timestep.view(-1, 1, 1, 1, 1) / 1000
        return (inputs - truth) / s

    rows = diagnose.temporal(oracle, truth, bare, mask, levels=(0.9,), frame=2)
    assert rows == [{"s": 0.9, "all": [1.0, 0.0], "frame_alone": [1.0, 0.0], "others_alone": [1.0, 0.0]}]
    everything, alone, blind = seen
    others = [0, 1, 3]
    assert torch.equal(alone[:, :, 2], everything[:, :, 2])
    assert torch.equal(blind[:, :, others], everything[:, :, others])
    # where the signal was taken away, what is left is the noise at 0.9: no trace of the scene
    noise = (everything - 0.1 * truth) / 0.9
    assert torch.allclose(alone[:, :, others], 0.9 * noise[:, :, others], atol=1e-5)
    assert torch.allclose(blind[:, :, 2], 0.9 * noise[:, :, 2], atol=1e-5)


def test_upscaler_pairs_are_one_view_of_one_scene_at_two_scales():
    """The learned upscaler's training pairs: the high-res frame, averaged s x s, is the low-res frame (the same
    view of the same scene; rendering is anti-aliased per scale), up to the input noise half the batch gets."""
    import upscaler
    for scale in (2, 3):
        low, high = upscaler.pairs(step=7, batch=8, scale=scale)
        assert low.shape == (8, 3, 64, 64) and high.shape == (8, 3, 64 * scale, 64 * scale)
        gap = (F.avg_pool2d(high, scale) - low).abs().flatten(1).mean(1)
        assert (gap < 0.05).all() and (gap < 0.01).sum() >= 2, gap  # clean inputs match to edge anti-aliasing
        again, _ = upscaler.pairs(step=7, batch=8, scale=scale)
        assert torch.equal(low, again)  # a deterministic function of the step
        # for models of the space of 2 x 2 pixels per latent pixel: the same views, the native one through the space
        soft, same = upscaler.pairs(step=7, batch=8, scale=scale, pixels=2)
        assert torch.equal(same, high) and soft.shape == low.shape
        through = latents.through_space(low[:, None], 2)[:, 0]  # exact where no input noise was added
        assert sum(torch.allclose(through[i], soft[i], atol=1e-6) for i in range(8)) >= 2
    assert not torch.equal(upscaler.pairs(1, 2, 2)[1], upscaler.pairs(2, 2, 2)[1])


def test_the_committed_learned_upscalers_beat_bicubic_on_the_evaluations_truth():
    """bench/fidelity/upscalers/: Real-ESRGAN compact networks that spandrel (ComfyUI's Load Upscale Model) reads
    at their scale. On the evaluation's true native videos (never trained on) they land closer to the truth than
    bicubic (L1) and keep its fine detail where bicubic blurs it (power in the band below the highest)."""
    pytest.importorskip("spandrel", reason="spandrel comes with ComfyUI's requirements")
    import upscaler
    for scale in (2, 3):
        params = scenes.sample_scenes(20_000 + scale, 3, frames=2)
        low, high = scenes.render(params, 1, 2), scenes.render(params, scale, 2)
        learned, bicubic = upscaler.upscale(low, scale, "learned_sr"), upscaler.upscale(low, scale, "bicubic")
        assert learned.shape == high.shape and 0 <= learned.min() and learned.max() <= 1
        assert (learned - high).abs().mean() < 0.8 * (bicubic - high).abs().mean()
        fine = lambda v: metrics.spectra(metrics.to_numpy(v), scale)[0].mean(0)[3]  # noqa: E731
        assert abs(fine(learned) / fine(high) - 1) < 0.25 and fine(bicubic) / fine(high) < 0.7
    with pytest.raises(ValueError, match="method must be one of bicubic, lanczos_sharpen, learned_sr, got 'nearest'"):
        upscaler.upscale(low, 2, "nearest")


def test_the_learned_upscalers_of_the_space_of_2_x_2_pixels_beat_bicubic_on_its_native_frames():
    """The committed ``_p2`` networks (the detailed world, run 56's) upscale the native frames a perfect latent of
    that space decodes to, softer than the render; on the evaluation's truth (never trained on) they land far closer
    than bicubic of the same frames, and than the first space's network, trained on sharp frames."""
    pytest.importorskip("spandrel", reason="spandrel comes with ComfyUI's requirements")
    import upscaler
    for scale in (2, 3):
        params = scenes.sample_scenes(20_000 + scale, 3, frames=2, world="detailed")
        soft, high = latents.through_space(scenes.render(params, 1, 2), 2), scenes.render(params, scale, 2)
        error = {name: (frames - high).abs().mean() for name, frames in (
            ("p2", upscaler.upscale(soft, scale, "learned_sr", "detailed", pixels=2)),
            ("first", upscaler.upscale(soft, scale, "learned_sr", "detailed")),
            ("bicubic", upscaler.upscale(soft, scale, "bicubic")))}
        assert error["p2"] < 0.8 * error["bicubic"] and error["p2"] < error["first"], (scale, error)


def test_the_detailed_world_adds_fine_detail_only_the_larger_scales_resolve():
    """scenes.py's detailed world: the plain world's scenes (same seed: same objects, layout, texture) plus fine
    ground waves. The native whole scene barely shows them; 2x and 3x do (power above the native frame's
    Nyquist frequency, which the plain world has almost none of)."""
    plain, detailed = scenes.sample_scenes(31, 4, frames=2), scenes.sample_scenes(31, 4, frames=2, world="detailed")
    assert [dataclasses.replace(d, fine=()) for d in detailed] == plain
    assert all(len(d.fine) == scenes.FINE_WAVES for d in detailed) and not any(p.fine for p in plain)
    native = (scenes.render(detailed, 1, 2) - scenes.render(plain, 1, 2)).abs().mean()
    assert native < 0.004, native

    def above_native_nyquist(video, scale):  # luminance power beyond 0.5 cycles per unit, on the ground
        lum = video[:, :, :, -24 * scale:].mean(2)  # the bottom of the frame: ground in every scene
        power = torch.fft.fft2(lum - lum.mean((-1, -2), keepdim=True)).abs() ** 2
        h, w = lum.shape[-2:]
        fy, fx = torch.fft.fftfreq(h)[:, None] * scale, torch.fft.fftfreq(w)[None, :] * scale  # cycles per unit
        return float(power[..., (fx.abs() > 0.5) | (fy.abs() > 0.5)].sum() / power.sum())
    for scale in (2, 3):
        fine, smooth = above_native_nyquist(scenes.render(detailed, scale, 2), scale), \
            above_native_nyquist(scenes.render(plain, scale, 2), scale)
        assert fine > 3 * smooth, (scale, fine, smooth)  # the plain world's share: object edges
    with pytest.raises(ValueError, match="world must be one of plain, detailed, got 'noisy'"):
        scenes.sample_scenes(1, 1, world="noisy")


def test_the_orientation_metric_sees_the_jaggies_of_a_pixel_grid_upscale():
    """orientation_js: a nearest-neighbour upscale has the truth's edge magnitudes at its steps but puts its
    outlines on the native pixel grid (0 and 90 degrees), far beyond where other renders of the truth sit."""
    scale, n, frames = 3, 32, 4
    reference = metrics.reference_stats(
        metrics.to_numpy(scenes.render(scenes.sample_scenes(10_003, n, frames), scale, frames)), scale)
    params = scenes.sample_scenes(20_003, n, frames)
    truth, low = scenes.render(params, scale, frames), scenes.render(params, 1, frames)
    nearest = F.interpolate(low.flatten(0, 1), scale_factor=scale, mode="nearest").unflatten(0, (n, frames))
    js = lambda v: metrics.set_distances(  # noqa: E731
        metrics.to_numpy(v), scale, reference, boot=2)["orientation_js"][0]
    assert js(nearest) > 5 * js(truth), (js(nearest), js(truth))
    flat = metrics.orientation_histogram(np.full((2, 9, 9, 3), 0.5, np.float32), scale)
    assert np.allclose(flat, 1 / metrics.ORIENTATION_BINS)  # no gradient at all: uniform, not NaN


def test_the_learned_upscaler_trains_on_from_its_file_and_refuses_another_scale(tmp_path):
    pytest.importorskip("spandrel", reason="spandrel comes with ComfyUI's requirements")
    import upscaler
    state, facts = upscaler.train(2, steps=2, batch=2, world="detailed")
    first = upscaler.save(state, facts, tmp_path)
    assert first.name == "ultragen_bench_sr_detailed_x2.safetensors" and facts["steps"] == 2
    state, more = upscaler.train(2, steps=1, batch=2, world="detailed", resume=first)
    assert more["steps"] == 3 and more["seconds"] >= facts["seconds"]
    assert any(not torch.equal(state[k], v) for k, v in upscaler.load(2, "detailed", tmp_path).state_dict().items())
    with pytest.raises(ValueError, match="is not a 3x upscaler of the detailed world"):
        upscaler.train(3, steps=1, batch=2, world="detailed", resume=first)
    with pytest.raises(ValueError, match="is not a 2x upscaler of the plain world"):
        upscaler.train(2, steps=1, batch=2, resume=first)
    # one for the latent space of 2 x 2 pixels per latent pixel: its own file, and no resume across spaces
    state, facts = upscaler.train(2, steps=1, batch=2, world="detailed", pixels=2)
    assert upscaler.save(state, facts, tmp_path).name == "ultragen_bench_sr_detailed_p2_x2.safetensors"
    assert upscaler.load(2, "detailed", tmp_path, pixels=2) is not upscaler.load(2, "detailed", tmp_path)
    with pytest.raises(ValueError, match="for the latent space of 2 px per latent pixel"):
        upscaler.train(2, steps=1, batch=2, world="detailed", resume=first, pixels=2)
    with pytest.raises(FileNotFoundError, match="train --scale 3 --world detailed --pixels 2"):
        upscaler.load(3, "detailed", tmp_path, pixels=2)


def test_parts_of_a_table_merge_into_one_in_the_bench_s_row_order(tmp_path):
    """merge.py joins evaluations of the same weights run as separate processes: one ground truth per scale, the rows
    in MODES' order (variants after their mode), a failed cell replaced by a measured one, parts of other weights
    refused."""
    import json
    import merge

    def cell(scale, mode, status="ok", value=0.5):
        return {"scale": scale, "mode": mode, "status": status, "videos": 4, "seconds": 1.0,
                **{k: [value, 0.1, 4] for k in ("count_error", "duplication", "size_ratio", "continuity")},
                "colour_js": [0.1, 0.01], "edge_js": [0.01, 0.001]}

    same = {"trained": {"steps": 10, "half_size_steps": 0}, "cfg": 1.0, "device": "H100", "config": {}}
    a = {**same, "cells": [cell(2, "ground_truth"), cell(2, "bicubic"), cell(2, "quality_gate", "failed: IndexError"),
                           cell(2, "bicubic_of_truth"), cell(2, "windows", "failed: PromptFailed: list index\n")]}
    b = {**same, "cells": [cell(2, "ground_truth", value=0.9), cell(2, "coarse_to_fine@start=0.3"),
                           cell(2, "quality_gate", value=0.2), cell(2, "full"), cell(2, "coarse_to_fine")]}
    merged = merge.merge([a, b])
    assert [c["mode"] for c in merged["cells"]] == ["ground_truth", "full", "windows", "quality_gate", "coarse_to_fine",
                                                    "coarse_to_fine@start=0.3", "bicubic", "bicubic_of_truth"]
    rows = {c["mode"]: c for c in merged["cells"]}
    assert rows["ground_truth"]["count_error"][0] == 0.5  # the first part's truth
    assert rows["quality_gate"]["status"] == "ok" and rows["quality_gate"]["count_error"][0] == 0.2
    assert [p["device"] for p in merged["merged_from"]] == ["H100", "H100"]
    with pytest.raises(ValueError, match="differ in 'trained'"):
        merge.merge([a, {**b, "trained": {"steps": 11, "half_size_steps": 0}}])
    for name, part in (("a", a), ("b", b)):
        (tmp_path / f"{name}.json").write_text(json.dumps(part))
    merge.main(["--out", str(tmp_path / "m"), str(tmp_path / "a.json"), str(tmp_path / "b.json")])
    table = (tmp_path / "m" / "results.md").read_text()
    assert "**not measured**" in table and "| x2 | coarse_to_fine@start=0.3 | 4 |" in table
    assert "| x2 | windows | 0 | failed: PromptFailed: list index |" in table  # a failure's text on its row
    assert json.loads((tmp_path / "m" / "results.json").read_text())["cells"] == merged["cells"]


def test_merging_parts_sampled_with_other_settings_names_their_rows_by_them():
    """A table of run 57 (coarse_to_fine from 0.5 and the proxy's margin 2, before either was recorded) merged with
    one of today's (0.7, margin 4): the old rows are named by what they used, never taken for the new ones; a row
    that names the setting, and rows the setting does not apply to, keep their names."""
    import merge

    def cell(mode, value):
        return {"scale": 2, "mode": mode, "status": "ok", "videos": 4, "seconds": 1.0, "count_error": [value, 0.1, 4]}

    same = {"trained": {"steps": 10}, "cfg": 1.0}
    new = {**same, "config": {"c2f_start": 0.7, "proxy_radius": 4},
           "cells": [cell("coarse_to_fine", 0.16), cell("proxy", 1.5)]}
    old = {**same, "config": {}, "cells": [
        cell("ground_truth", 0.0), cell("coarse_to_fine", 0.49), cell("coarse_to_fine@start=0.3", 1.0),
        cell("coarse_to_fine@proxy_strength=1", 0.2), cell("proxy", 4.3), cell("proxy@neighbourhood=all", 1.2),
        cell("bicubic", 0.13)]}
    rows = {c["mode"]: c["count_error"][0] for c in merge.merge([new, old])["cells"]}
    assert rows == {"ground_truth": 0.0, "coarse_to_fine": 0.16, "coarse_to_fine@start=0.5": 0.49,
                    "coarse_to_fine@start=0.3": 1.0, "coarse_to_fine@proxy_strength=1@start=0.5@radius=2": 0.2,
                    "proxy": 1.5, "proxy@radius=2": 4.3, "proxy@neighbourhood=all": 1.2, "bicubic": 0.13}
    rows = {c["mode"]: c["count_error"][0] for c in merge.merge([old, new])["cells"]}
    assert rows["coarse_to_fine"] == 0.49 and rows["coarse_to_fine@start=0.7"] == 0.16
    assert rows["proxy"] == 4.3 and rows["proxy@radius=4"] == 1.5
