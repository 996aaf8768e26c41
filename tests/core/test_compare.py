"""UltraGenCompare's core on synthetic videos with known answers."""
import math

import pytest
import torch
import torch.nn.functional as F

from ultragen_core.compare import Cost, align, compare, compose, psnr, ssim, wipe_position


def panning_video(frames=10, h=96, w=160, seed=0) -> torch.Tensor:
    """A smooth random texture panning right by 2 px per frame: (F, H, W, 3) in 0..1."""
    g = torch.Generator().manual_seed(seed)
    tex = F.interpolate(torch.rand(1, 3, h // 2, w // 2, generator=g), size=(h, w), mode="bilinear")
    return torch.cat([torch.roll(tex, shifts=2 * i, dims=3) for i in range(frames)]).movedim(1, -1).contiguous()


def blurred(video: torch.Tensor) -> torch.Tensor:
    x = video.movedim(-1, 1)
    return F.avg_pool2d(x, 5, 1, 2, count_include_pad=False).movedim(1, -1).contiguous()


def mean(v):
    return sum(v) / len(v)


def test_identical_videos_give_infinite_psnr_and_ssim_one():
    v = panning_video()
    _, r = compare(v, v.clone())
    assert all(math.isinf(p) for p in r.psnr)
    assert r.ssim == [1.0] * v.shape[0]
    assert r.a.sharpness == r.b.sharpness and r.a.flicker == r.b.flicker
    assert "PSNR mean inf dB" in r.report()


def test_psnr_and_ssim_formulas():
    x = torch.full((8, 8, 3), 0.5)
    assert psnr(x.numpy(), (x + 0.1).numpy()) == pytest.approx(20.0)  # mse 0.01 -> 20 dB
    a = torch.rand(64, 64, dtype=torch.float64).numpy()
    assert ssim(a, a) == pytest.approx(1.0)
    assert ssim(a, 1 - a) < 0


def test_blurred_copy_is_less_sharp_and_differs():
    v = panning_video()
    _, r = compare(v, blurred(v))
    assert mean(r.b.sharpness) < 0.5 * mean(r.a.sharpness)
    assert mean(r.b.hf_energy) < 0.5 * mean(r.a.hf_energy)
    assert all(0 < s < 1 for s in r.ssim) and all(math.isfinite(p) for p in r.psnr)


def test_frame_shuffled_copy_flickers_more():
    v = panning_video(frames=12)
    perm = torch.tensor([0, 7, 3, 10, 1, 5, 11, 2, 8, 4, 9, 6])
    _, r = compare(v, v[perm])
    assert len(r.a.flicker) == 11
    assert mean(r.a.flicker) < 2.0  # smooth pan: the flow explains consecutive frames
    assert mean(r.b.flicker) > 4 * mean(r.a.flicker)
    # same frames, other order: per-frame sharpness is the same set
    assert sorted(r.a.sharpness) == pytest.approx(sorted(r.b.sharpness))


def test_align_size_and_length():
    a, b = panning_video(frames=9, h=64, w=96), panning_video(frames=5, h=32, w=48)
    x, y = align(a, b, "first", "trim")
    assert x.shape == y.shape == (5, 64, 96, 3)
    x, y = align(a, b, "smaller", "stretch")
    assert x.shape == y.shape == (9, 32, 48, 3)
    x, y = align(a, torch.cat([b, torch.ones_like(b[..., :1])], -1), "second", "trim")  # RGBA input
    assert y.shape == (5, 32, 48, 3)
    with pytest.raises(ValueError, match="size_mode"):
        align(a, b, "biggest")
    with pytest.raises(ValueError, match="video_b"):
        align(a, b[0])


def test_layouts():
    a, b = torch.zeros(5, 40, 60, 3), torch.full((5, 40, 60, 3), 0.5)
    assert compose(a, b, "side_by_side", "", "").shape == (5, 40, 120, 3)
    assert compose(a, b, "stacked", "", "").shape == (5, 80, 60, 3)
    wipe = compose(a, b, "split_wipe", "", "")
    assert wipe.shape == (5, 40, 60, 3)
    for i in range(5):
        x = round(wipe_position(i, 5) * 60)
        assert wipe[i, 20, : x - 2].eq(0).all() and wipe[i, 20, x + 2:].eq(0.5).all()
    labelled = compose(a, b, "side_by_side", "native", "upscaled")
    assert labelled[:, :30, :60].max() == 1.0  # label pixels drawn on A
    assert a.eq(0).all()  # inputs untouched


def test_report_shows_costs():
    v = panning_video(frames=3)
    _, r = compare(v, blurred(v), labels=("native 4K", "720p + upscale"),
                   costs=(Cost(1200.0, 70.5), Cost(300.0, 20.0)))
    text = r.report()
    assert "native 4K" in text and "720p + upscale" in text
    assert "1200.0 s" in text and "70.5 GB" in text and "20.0 GB" in text


def test_empty_videos_are_refused_by_name():
    v = panning_video(frames=2)
    with pytest.raises(ValueError, match=r"video_a is empty \(shape \(0, 96, 160, 3\): 0 frames"):
        compare(v[:0], v)
    with pytest.raises(ValueError, match="video_b is empty"):
        compare(v, v[:, :0])


@pytest.mark.parametrize("bad", [float("inf"), float("nan")])
def test_frames_with_nan_or_inf_pixels_are_reported_and_left_out(bad):
    a = panning_video(frames=4, h=48, w=80)
    b = blurred(a)[:, ::2, ::2].contiguous()  # half size: scaled up to A's size, which must keep the bad pixel
    clean = compare(a, b, flow_max_side=0)[1]
    b[1, 5, 5, 0] = bad  # one pixel of one frame
    _, r = compare(a, b, flow_max_side=0)
    assert r.unusable == ((), (1,))
    assert math.isnan(r.psnr[1]) and math.isnan(r.ssim[1]) and math.isnan(r.b.sharpness[1])
    assert math.isnan(r.b.flicker[0]) and math.isnan(r.b.flicker[1]) and math.isfinite(r.b.flicker[2])
    assert r.a.sharpness == clean.a.sharpness  # A is untouched
    assert [r.psnr[i] for i in (0, 2, 3)] == [clean.psnr[i] for i in (0, 2, 3)]
    text = r.report()
    assert "unusable frames (NaN or infinite pixels, left out of every metric): A: none; B: 1" in text
    psnr_mean = sum(clean.psnr[i] for i in (0, 2, 3)) / 3
    assert f"PSNR mean {psnr_mean:.2f} dB" in text and "nan" not in text


def test_a_video_without_usable_frames_gets_no_numbers():
    a = panning_video(frames=2, h=48, w=80)
    _, r = compare(a, torch.full_like(a, float("nan")), flow_max_side=0)
    assert r.unusable == ((), (0, 1))
    line = next(x for x in r.report().splitlines() if x.startswith("sharpness"))
    assert line.split()[-6] == "n/a" and "PSNR mean n/a dB" in r.report()


@pytest.mark.parametrize("costs, name", [((Cost(float("nan")), Cost()), "wall_time_a"),
                                         ((Cost(), Cost(0.0, float("inf"))), "peak_vram_b"),
                                         ((Cost(), Cost(-1.0)), "wall_time_b")])
def test_costs_must_be_finite_and_not_negative(costs, name):
    v = panning_video(frames=1, h=16, w=16)
    with pytest.raises(ValueError, match=f"{name} must be a finite number >= 0"):
        compare(v, v, costs=costs)


def test_psnr_of_non_finite_frames_is_an_error_not_a_domain_error():
    x = torch.full((8, 8, 3), 0.5).numpy()
    with pytest.raises(ValueError, match="finite pixels"):
        psnr(x, x * float("inf"))
