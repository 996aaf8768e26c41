"""UltraGenResolution's core: valid sizes per model family, token grids, attention cost."""
import dataclasses
import math

import pytest

from ultragen_core.config import AttentionSettings
from ultragen_core.resolution import (FAMILIES, TARGETS, ResolutionRequest, attention_cost, pick_resolution,
                                      round_frames, round_to)

WAN21 = "Wan 2.1 T2V/I2V 14B"
WAN5B = "Wan 2.2 TI2V 5B"


def pick(family, target, **kw):
    return pick_resolution(ResolutionRequest(family=family, target=target, **kw))


@pytest.mark.parametrize("target, size, grid", [
    ("720p (1280x720)", (1280, 720), (21, 45, 80)),
    ("1080p (1920x1080)", (1920, 1088), (21, 68, 120)),
    ("4K UHD (3840x2160)", (3840, 2160), (21, 135, 240)),
])
def test_wan21_grids_match_design(target, size, grid):
    r = pick(WAN21, target, frames=81)
    assert (r.width, r.height, r.frames) == (*size, 81)
    assert r.grid == grid
    assert r.tokens == math.prod(grid)


def test_wan22_5b_uses_32px_steps():
    r = pick(WAN5B, "4K UHD (3840x2160)", frames=81)
    assert (r.width, r.height) == (3840, 2176)
    assert r.grid == (21, 68, 120)
    assert pick(WAN5B, "720p (1280x720)", rounding="down").height == 704


@pytest.mark.parametrize("family", list(FAMILIES))
@pytest.mark.parametrize("target", list(TARGETS))
@pytest.mark.parametrize("orientation", ["landscape", "portrait", "square"])
def test_every_choice_is_valid_for_the_family(family, target, orientation):
    r = pick(family, target, orientation=orientation, frames=50, width=1000, height=600)
    f = FAMILIES[family]
    assert r.width % f.pixel_step == 0 and r.height % f.pixel_step == 0
    assert (r.frames - 1) % f.vae_temporal == 0
    if target != "custom":
        long_side, short_side = TARGETS[target]
        assert abs(max(r.width, r.height) - (short_side if orientation == "square" else long_side)) < f.pixel_step
        if orientation == "portrait":
            assert r.height > r.width
        if orientation == "square":
            assert r.height == r.width


def test_rounding_modes_and_frames():
    assert round_to(1080, 16, "nearest") == 1088
    assert round_to(1080, 16, "down") == 1072
    assert round_to(1070, 16, "up") == 1072
    assert round_to(3, 16, "down") == 16  # never zero
    assert [round_frames(n, 4) for n in (1, 2, 3, 80, 81, 83)] == [1, 1, 5, 81, 81, 85]
    assert round_frames(100, 8) == 97
    assert pick("LTX-Video", "720p (1280x720)", frames=121).grid == (16, 23, 40)


def test_custom_size_below_one_step_becomes_one_step():
    r = pick("LTX-Video", "custom", width=16, height=500, rounding="down")  # 32-px steps
    assert (r.width, r.height) == (32, 480) and r.grid[1:] == (15, 1)
    assert "asked 16x500" in r.report()


def test_full_attention_cost_is_quadratic_and_ultragen_is_cheaper():
    f = FAMILIES[WAN21]
    c720 = attention_cost(f, (21, 45, 80))
    c4k = attention_cost(f, (21, 135, 240))
    assert c720.full_flops == pytest.approx(4 * 5120 * 75600 ** 2 * 40)
    assert c4k.full_flops / c720.full_flops == pytest.approx(81)
    # at the native grid the automatic plan is one window without a global branch: plain full attention
    assert c720.ultragen_flops == pytest.approx(c720.full_flops)
    assert c4k.speedup > 4


def test_cost_follows_settings():
    f = FAMILIES[WAN21]
    grid = (21, 135, 240)
    base = attention_cost(f, grid)
    with_full = attention_cost(f, grid, AttentionSettings(full_attention_blocks=(0, -1)))
    assert with_full.ultragen_flops == pytest.approx(base.ultragen_flops * 38 / 40 + 2 * base.full_flops / 40)
    half = attention_cost(f, grid, AttentionSettings(start_percent=0.5))
    assert half.ultragen_flops == pytest.approx(0.5 * base.ultragen_flops + 0.5 * base.full_flops)


def test_report_names_grid_and_cost():
    text = pick(WAN21, "1080p (1920x1080)").report()
    assert "1920x1088" in text and "21x68x120" in text and "171,360" in text
    assert "asked 1920x1080" in text
    for name in ("HunyuanVideo", "LTX-Video"):  # the original HunyuanVideo T2V and LTX-Video are patched now
        assert "does not patch" not in pick(name, "1080p (1920x1080)").report()
    unpatched = dataclasses.replace(pick("LTX-Video", "1080p (1920x1080)"),
                                    family=dataclasses.replace(FAMILIES["LTX-Video"], ultragen=False))
    assert "UltraGen Apply does not patch LTX-Video yet" in unpatched.report()


@pytest.mark.parametrize("kw, words", [
    (dict(family="Wan 9", target="1080p (1920x1080)"), ["model_family", "Wan 9"]),
    (dict(family=WAN21, target="8K"), ["target", "8K"]),
    (dict(family=WAN21, target="custom", width=8, height=720), ["custom_width", "8x720", "16 to 8192"]),
    (dict(family=WAN21, target="custom", width=1280, height=10 ** 6), ["custom_height", "1000000"]),
    (dict(family=WAN21, target="720p (1280x720)", frames=0), ["frames", "got 0"]),
    (dict(family=WAN21, target="720p (1280x720)", frames=10 ** 9), ["frames", "1 to 1025", "1000000000"]),
])
def test_bad_requests_name_the_problem(kw, words):
    with pytest.raises(ValueError) as e:
        ResolutionRequest(**kw)
    for w in words:
        assert w in str(e.value)


def test_the_registry_agrees_with_itself():
    """Each Wan family's VAE facts equal those of the VAE the tiled decode knows it by."""
    from ultragen_core.models import FAMILIES, VIDEO_VAES, WAN21_VAE, WAN22_VAE
    assert set(VIDEO_VAES.values()) == {WAN21_VAE, WAN22_VAE}
    for family in FAMILIES.values():
        if family.name.startswith("Wan"):
            vae = WAN22_VAE if family.latent_channels == 48 else WAN21_VAE
            assert (family.vae_spatial, family.vae_temporal) == (vae.spatial, vae.temporal), family.name
