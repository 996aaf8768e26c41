"""Tiled decode core: placement and blend weights exact, causal VAEs never split in time, budget, OOM, interrupt."""
import pytest
import torch
import torch.nn.functional as F

from ultragen_core.tiled_decode import (Scale, TiledDecodeConfig, axis_starts, blend_weights, choose_tile,
                                        fit_overlap, plan_tiles, tiled_decode)

WAN_FRAMES = lambda n: max(0, 1 + 4 * (n - 1))  # noqa: E731  (Wan: 1 + 4 (n - 1) frames)
WAN = Scale(spatial=8, frames=WAN_FRAMES, frame_stride=4, channels=3)
CLIP = Scale(spatial=4, frames=lambda n: 2 * n, frame_stride=2, channels=3)  # a whole-clip VAE: 2 frames each


class PointwiseDecoder:
    """Context-free decoder: channel mix, nearest upsampling, Wan's frame count. Records the tiles it sees."""

    def __init__(self, scale: Scale, channels: int = 4, causal: bool = True):
        self.scale, self.calls = scale, []
        self.mix = torch.randn(scale.channels, channels, generator=torch.Generator().manual_seed(0))
        self.causal = causal

    def __call__(self, z):  # (B, C, t, h, w) -> (B, 3, frames(t), h * s, w * s)
        self.calls.append(tuple(z.shape))
        x = torch.einsum("oc,bcthw->bothw", self.mix, z)
        x = x.repeat_interleave(self.scale.spatial, -1).repeat_interleave(self.scale.spatial, -2)
        if self.causal:  # frame 0 from latent 0, then frame_stride frames per latent frame
            return torch.cat([x[:, :, :1], x[:, :, 1:].repeat_interleave(self.scale.frame_stride, 2)], 2)
        return x.repeat_interleave(self.scale.frame_stride, 2)


def test_blend_weights_sum_to_one_and_ramp_over_overlap():
    starts = axis_starts(37, 12, 4)
    assert starts[0] == 0 and starts[-1] == 37 - 12  # 37 divides nothing evenly: all tiles keep 12
    assert all(b - a <= 12 - 4 for a, b in zip(starts, starts[1:]))  # overlap >= 4 everywhere
    assert len(starts) == 5 and (37 - 12) / 3 > 12 - 4  # 4 tiles would overlap less than 4
    intervals = [(a, a + 12) for a in starts]
    weights = blend_weights(intervals, 37)
    total = torch.zeros(37)
    for (a, b), w in zip(intervals, weights):
        total[a:b] += w
        assert float(w.min()) > 0
    assert torch.allclose(total, torch.ones(37))
    assert float(weights[0][0]) == 1.0 and float(weights[0][-1]) < 0.2  # ramps down at its inner border


@pytest.mark.parametrize("tile,overlap", [((5, 7), (1, 2)), ((3, 3), (1, 1)), ((11, 4), (2, 2)), ((0, 0), (1, 1))])
def test_pointwise_decoder_tiled_equals_untiled(tile, overlap):
    latent = torch.randn(2, 4, 3, 11, 13)  # 11 x 13: no tile size divides it
    dec = PointwiseDecoder(WAN)
    ref = dec(latent).movedim(1, -1)  # (B, T', H', W', C)
    dec.calls.clear()
    out = tiled_decode(latent, dec, TiledDecodeConfig(tile=tile, overlap=overlap), WAN)
    assert out.shape == (2, 9, 88, 104, 3) and out.dtype == torch.float32
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
    assert all(c[2] == 3 for c in dec.calls)  # causal: every tile spans all latent frames


def test_single_tile_is_bit_exact():
    latent = torch.randn(1, 4, 2, 6, 5)
    dec = PointwiseDecoder(WAN)
    out = tiled_decode(latent, dec, TiledDecodeConfig(), WAN, postprocess=lambda x: x.clamp(-1, 1))
    assert torch.equal(out, dec(latent).clamp(-1, 1).movedim(1, -1))
    assert len(dec.calls) == 2  # one tile (plus the reference call)


def test_overlap_fits_tiles_cut_to_a_small_latent():
    assert fit_overlap((15, 40), (15, 20), (8, 8)) == (0, 8)  # one tile covers the height: no overlap there
    assert fit_overlap((15, 40), (64, 12), (8, 8)) == (0, 6)  # at most half a tile
    latent = torch.randn(1, 4, 2, 15, 40)
    dec = PointwiseDecoder(WAN)
    ref = dec(latent).movedim(1, -1)
    for cfg in (TiledDecodeConfig(overlap=(8, 8)),  # automatic tile = the whole latent (the default widgets)
                TiledDecodeConfig(tile=(64, 64), overlap=(8, 8)),  # an explicit tile larger than the latent
                TiledDecodeConfig(tile=(64, 20), overlap=(8, 8))):  # larger in height only
        dec.calls.clear()
        out = tiled_decode(latent, dec, cfg, WAN)
        torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
        assert all(c[-2] == 15 for c in dec.calls)  # never split along the height
    assert [c[-1] for c in dec.calls] == [20, 20, 20]  # 40 wide in tiles of 20 overlapping by >= 8


def test_whole_clip_vae_may_tile_in_time():
    latent = torch.randn(1, 4, 9, 6, 7)
    dec = PointwiseDecoder(CLIP, causal=False)
    ref = dec(latent).movedim(1, -1)
    dec.calls.clear()
    cfg = TiledDecodeConfig(tile=(4, 4), overlap=(1, 1), causal=False, temporal_tile=4, temporal_overlap=1)
    out = tiled_decode(latent, dec, cfg, CLIP)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
    assert {c[2] for c in dec.calls} == {4}  # temporal tiles of 4 latent frames


def test_blur_decoder_seams_are_feathered():
    """A decoder with context: tiled output is close to untiled, worst along tile borders."""
    latent = torch.randn(1, 4, 2, 16, 16)
    base = PointwiseDecoder(WAN)

    def blur(z):
        return base(F.avg_pool3d(z, (1, 3, 3), stride=1, padding=(0, 1, 1), count_include_pad=False))

    ref = blur(latent).movedim(1, -1)
    out = tiled_decode(latent, blur, TiledDecodeConfig(tile=(8, 8), overlap=(4, 4)), WAN)
    err = (out - ref).abs()
    assert float(err.max()) < 0.5 * float(ref.abs().max())
    plan = plan_tiles(tuple(latent.shape), TiledDecodeConfig(tile=(8, 8), overlap=(4, 4)), WAN, (8, 8))
    border = torch.zeros(128, dtype=torch.bool)
    for a, b in plan.h.pixel[1:]:
        border[a:a + 32] = True  # the overlap bands
    assert float(err[:, :, ~border][:, :, :, ~border].max()) < 1e-5  # away from overlaps: exact


def test_budget_picks_the_tile_grid_with_least_area():
    shape = (1, 16, 21, 90, 160)
    per_pixel = 1000.0
    estimate = lambda s: per_pixel * s[3] * s[4]  # noqa: E731
    cfg = TiledDecodeConfig(overlap=(4, 4), budget_bytes=int(per_pixel * 60 * 60))
    h, w = choose_tile(shape, cfg, estimate)
    assert estimate((1, 16, 21, h, w)) <= cfg.budget_bytes
    assert h * w > 0.6 * 60 * 60  # not needlessly small
    assert choose_tile(shape, TiledDecodeConfig(overlap=(4, 4), budget_bytes=10 ** 12), estimate) == (90, 160)
    with pytest.raises(MemoryError, match="max_vram_gb"):
        choose_tile(shape, TiledDecodeConfig(overlap=(4, 4), budget_bytes=1000), estimate)


def test_out_of_memory_shrinks_the_tile_retries_and_warns(caplog):
    latent = torch.randn(1, 4, 2, 12, 12)
    dec = PointwiseDecoder(WAN)
    ref = dec(latent).movedim(1, -1)
    dec.calls.clear()

    def flaky(z):
        if z.shape[-1] > 7:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return dec(z)

    freed = []
    with caplog.at_level("WARNING"):
        out = tiled_decode(latent, flaky, TiledDecodeConfig(tile=(12, 12), overlap=(2, 2)), WAN,
                           empty_cache=lambda: freed.append(1))
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
    assert freed and "out of memory" in caplog.text and "[UltraGen]" in caplog.text
    assert all(c[-1] <= 7 for c in dec.calls)


def test_interrupt_between_tiles_stops_and_releases():
    latent = torch.randn(1, 4, 2, 12, 12)
    dec = PointwiseDecoder(WAN)
    progress, freed = [], []

    class Stop(Exception):
        pass

    def check():
        if len(dec.calls) == 2:
            raise Stop()

    with pytest.raises(Stop):
        tiled_decode(latent, dec, TiledDecodeConfig(tile=(6, 6), overlap=(1, 1)), WAN, check_interrupt=check,
                     on_tile=lambda d, t: progress.append((d, t)), empty_cache=lambda: freed.append(1))
    assert len(dec.calls) == 2 and progress == [(1, 9), (2, 9)] and freed


@pytest.mark.parametrize("kwargs,message", [
    (dict(tile=(8, 8), overlap=(5, 1)), "more than half the tile height"),
    (dict(tile=(-1, 8)), "tile must be two whole numbers"),
    (dict(temporal_tile=4), "causal"),
    (dict(causal=False, temporal_tile=4, temporal_overlap=3), "temporal_overlap"),
])
def test_bad_configs_say_what_and_how(kwargs, message):
    with pytest.raises(ValueError, match=message):
        TiledDecodeConfig(**kwargs)


def test_decoder_with_wrong_scale_is_reported():
    with pytest.raises(RuntimeError, match="scale factors"):
        tiled_decode(torch.randn(1, 4, 2, 4, 4), PointwiseDecoder(WAN), TiledDecodeConfig(), Scale(16, WAN_FRAMES))


def test_core_does_not_import_comfyui():
    import ultragen_core.tiled_decode
    source = open(ultragen_core.tiled_decode.__file__).read()
    assert "import comfy" not in source and "from comfy" not in source
