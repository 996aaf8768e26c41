"""Coarse-to-fine init (ultragen_core.latent_upscale): a proxy latent resized to the high-resolution size on
the causal time axis of Wan's VAE."""
import pytest
import torch

from ultragen_core.latent_upscale import (METHODS, LatentSize, causal_frame_sources, length_problem,
                                          upscale_video_latent, video_frames)


def latent(b=1, c=16, t=6, h=9, w=16, dtype=torch.float32, seed=0):
    return torch.randn(b, c, t, h, w, generator=torch.Generator().manual_seed(seed)).to(dtype)


@pytest.mark.parametrize("method", list(METHODS))
def test_the_same_size_is_an_exact_copy(method):
    x = latent()
    y = upscale_video_latent(x, LatentSize(6, 9, 16), method)
    assert torch.equal(x, y) and y.data_ptr() != x.data_ptr()


@pytest.mark.parametrize("method", list(METHODS))
def test_frame_zero_stays_frame_zero(method):
    """Frame 0 (the lone first video frame) comes from the proxy's frame 0 only: in time it is copied, and
    changing any later proxy frame never changes it."""
    x = latent(t=6)
    y = upscale_video_latent(x, LatentSize(21, 9, 16), method)
    assert torch.equal(y[:, :, 0], x[:, :, 0])
    x2 = x.clone()
    x2[:, :, 1:] += 3.0
    assert torch.equal(upscale_video_latent(x2, LatentSize(21, 18, 32), method)[:, :, 0],
                       upscale_video_latent(x, LatentSize(21, 18, 32), method)[:, :, 0])
    # and frame 0 never leaks into later frames
    x3 = x.clone()
    x3[:, :, 0] += 3.0
    assert torch.equal(upscale_video_latent(x3, LatentSize(21, 9, 16), method)[:, :, 1:],
                       upscale_video_latent(x, LatentSize(21, 9, 16), method)[:, :, 1:])


def test_frame_positions_follow_the_video_time_axis():
    assert causal_frame_sources(6, 6).tolist() == [0, 1, 2, 3, 4, 5]
    # 41 -> 81 video frames (11 -> 21 latent frames): latent frame i >= 1 covers video frames 4i-3 .. 4i,
    # centre 4i - 1.5; the proxy's centres 4j - 1.5 over half the frames
    pos = causal_frame_sources(11, 21)
    for i in range(1, 21):
        time = (4 * i - 1.5) / 80  # of the clip
        j = (time * 40 + 1.5) / 4
        assert pos[i].item() == pytest.approx(min(max(j, 1), 10))
    assert pos[0] == 0 and pos[-1] == 10 and (pos[1:].diff() >= 0).all()
    assert video_frames(21) == 81 and video_frames(11) == 41 and video_frames(1) == 1


def test_linear_content_stays_linear_with_linear_interpolation():
    """A latent linear in video time (frames >= 1) and in x / y stays exactly that linear function of the
    output's time and cell centres, wherever no end is held."""
    t_src, h, w = 11, 6, 8
    i = torch.arange(1, t_src, dtype=torch.float64)
    src_time = (4 * i - 1.5) / (4 * (t_src - 1))
    ys = (torch.arange(h, dtype=torch.float64) + 0.5) / h
    xs = (torch.arange(w, dtype=torch.float64) + 0.5) / w

    def field(time, ys, xs):
        return 2.0 * time.view(-1, 1, 1) - 0.7 * ys.view(1, -1, 1) + 1.3 * xs.view(1, 1, -1)  # (T, H, W)

    x = torch.zeros(1, 1, t_src, h, w, dtype=torch.float64)
    x[0, 0, 1:] = field(src_time, ys, xs)
    size = LatentSize(21, 3 * h, 3 * w)
    y = upscale_video_latent(x, size, "bilinear")[0, 0]
    i2 = torch.arange(1, 21, dtype=torch.float64)
    dst_time = (4 * i2 - 1.5) / 80
    want = field(dst_time, (torch.arange(3 * h, dtype=torch.float64) + 0.5) / (3 * h),
                 (torch.arange(3 * w, dtype=torch.float64) + 0.5) / (3 * w))
    pos = causal_frame_sources(t_src, 21)[1:]
    inner_t = (pos > 1) & (pos < t_src - 1)
    # bilinear, align_corners=False, x3: the outermost cell of each side is held at the border
    torch.testing.assert_close(y[1:][inner_t][:, 1:-1, 1:-1], want[inner_t][:, 1:-1, 1:-1], rtol=0, atol=1e-12)
    assert inner_t.sum() >= 16


@pytest.mark.parametrize("h, w, size", [(45, 80, (21, 135, 240)), (67, 119, (5, 135, 241)), (9, 16, (3, 7, 11))])
def test_odd_sizes_and_downscaling(h, w, size):
    x = latent(t=3, h=h, w=w)
    for method in METHODS:
        y = upscale_video_latent(x, LatentSize(*size), method)
        assert y.shape == (1, 16, *size) and torch.isfinite(y).all()


def test_a_constant_latent_stays_constant_with_every_method():
    x = torch.full((1, 16, 4, 5, 7), 0.25)
    for method in METHODS:
        torch.testing.assert_close(upscale_video_latent(x, LatentSize(9, 13, 21), method),
                                   torch.full((1, 16, 9, 13, 21), 0.25), rtol=0, atol=1e-6)


def test_batch_items_are_resized_independently():
    x = latent(b=3, t=4)
    y = upscale_video_latent(x, LatentSize(7, 18, 32), "bicubic")
    for k in range(3):
        assert torch.equal(y[k:k + 1], upscale_video_latent(x[k:k + 1], LatentSize(7, 18, 32), "bicubic"))


@pytest.mark.parametrize("dtype, tol", [(torch.float32, 0), (torch.float64, 0), (torch.float16, 1e-3),
                                        (torch.bfloat16, 1e-2)])
def test_dtypes_are_kept_and_computed_in_float32(dtype, tol):
    x = latent(t=4, dtype=dtype)
    y = upscale_video_latent(x, LatentSize(7, 18, 32), "bilinear")
    assert y.dtype == dtype
    ref = upscale_video_latent(x.double(), LatentSize(7, 18, 32), "bilinear")
    torch.testing.assert_close(y.double(), ref, rtol=tol, atol=tol * 4 + 1e-6)


def test_pixel_sizes_per_wan_vae():
    assert LatentSize.from_pixels(16, 3840, 2160, 81) == LatentSize(21, 270, 480)
    assert LatentSize.from_pixels(48, 3840, 2176, 121) == LatentSize(31, 136, 240)
    assert LatentSize.from_pixels(16, 1280, 720, 1) == LatentSize(1, 90, 160)


@pytest.mark.parametrize("args, message", [
    ((48, 3840, 2168, 121), r"height must be a multiple of 16 px .* got 2168; use 2160 or 2176"),
    ((16, 1283, 720, 81), r"width must be a multiple of 8 px .* got 1283; use 1280 or 1288"),
    ((16, 1280, 720, 80), r"length must be 4n\+1 video frames .* got 80; use 77 or 81"),
    ((4, 1280, 720, 81), r"latent has 4 channels; .* Connect a reference latent"),
])
def test_bad_pixel_sizes_say_what_and_how_to_fix(args, message):
    with pytest.raises(ValueError, match=message):
        LatentSize.from_pixels(*args)


def test_bad_inputs_are_refused_with_the_reason():
    with pytest.raises(ValueError, match=r"video latent \(batch, channels, frames, height, width\), got shape \(1, 16, 9, 16\)"):
        upscale_video_latent(torch.zeros(1, 16, 9, 16), LatentSize(1, 18, 32))
    with pytest.raises(TypeError, match="floating-point"):
        upscale_video_latent(torch.zeros(1, 16, 2, 9, 16, dtype=torch.int64), LatentSize(2, 18, 32))
    with pytest.raises(ValueError, match=r"upscale_method must be one of .* got 'lanczos'"):
        upscale_video_latent(latent(), LatentSize(6, 18, 32), "lanczos")
    with pytest.raises(ValueError, match="one frame .* cannot be stretched in time"):
        upscale_video_latent(latent(t=1), LatentSize(21, 18, 32))
    with pytest.raises(ValueError, match="target latent height must be a whole number >= 1, got 0"):
        LatentSize(2, 0, 4)
    assert length_problem(81) is None and "use 1 or 5" in length_problem(0)
