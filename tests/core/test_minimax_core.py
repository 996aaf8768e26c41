"""The MiniMax-H3 family without ComfyUI: the registry entry (claims, refusals, facts, capabilities), H3's frame
packing, and the RoPE positions windows run at (families/minimax/positions.py: a native frame's)."""
from __future__ import annotations

import math

import pytest
import torch

from ultragen_core import api
from ultragen_core.attention.windows import make_layout
from ultragen_core.families.minimax.positions import WindowPositions, frame_axis, window_axes
from ultragen_core.families.registry import MINIMAX, Capability, family_of
from ultragen_core.models import FAMILIES, MINIMAX_H3


def stand_in(name: str, module: str, **attrs):
    return type(name, (), {"__module__": module, **attrs})()


def test_minimax_claims_h3_with_its_facts():
    dm = stand_in("MiniMaxH3Model", "comfy.ldm.minimax.model")
    assert family_of(dm) is MINIMAX and MINIMAX.refusal(dm) is None
    assert api.model_facts(dm) is MINIMAX_H3
    assert MINIMAX.can_run(Capability.WINDOWS_GLOBAL, dm) is None
    assert MINIMAX.patch_module().__name__.endswith("ultragen_core.families.minimax.minimax")


def test_an_unknown_h3_class_is_refused_and_minimax_music_is_not_claimed():
    with pytest.raises(NotImplementedError, match=r"does not patch MiniMaxH4Model \(comfy.ldm.minimax.model\): it is "
                                                  r"a MiniMax-H3 variant this version of the pack does not know"):
        family_of(stand_in("MiniMaxH4Model", "comfy.ldm.minimax.model"))
    with pytest.raises(NotImplementedError, match=r"UltraGen does not support MiniMaxMusic3DiT "
                                                  r"\(comfy.ldm.minimax_music.dit\) yet"):
        family_of(stand_in("MiniMaxMusic3DiT", "comfy.ldm.minimax_music.dit"))


@pytest.mark.parametrize("capability", [c for c in Capability if c is not Capability.WINDOWS_GLOBAL])
def test_minimax_refuses_what_it_cannot_do_by_name(capability):
    message = MINIMAX.can_run(capability, stand_in("MiniMaxH3Model", "comfy.ldm.minimax.model"))
    assert message.startswith(f"UltraGen {capability.value} is not available for MiniMaxH3Model "
                              "(comfy.ldm.minimax.model): the MiniMax-H3 family has no")


def test_h3_facts_are_appended_and_count_frames_as_its_vae_packs_them():
    assert list(FAMILIES)[12] == "MiniMax-H3"  # saved workflows hold the names: only ever appended
    assert (MINIMAX_H3.vae_spatial, MINIMAX_H3.patch, MINIMAX_H3.latent_channels) == (16, (1, 2, 2), 24)
    assert (MINIMAX_H3.dim, MINIMAX_H3.heads, MINIMAX_H3.blocks) == (56 * 128, 56, 50)
    # ComfyUI's EmptyMiniMaxH3LatentAV: frames rounded up to 17k + 5, then 5k + 2 latent frames
    assert [MINIMAX_H3.latent_frames(f) for f in (1, 5, 6, 22, 124, 125, 362)] == [2, 2, 7, 7, 37, 42, 107]
    assert MINIMAX_H3.native_grid == (107, 24, 42)  # 1344x768, 362 frames
    assert MINIMAX_H3.grid(1920, 1088, 124) == (37, 34, 60) and MINIMAX_H3.grid(2560, 1440, 124) == (37, 45, 80)


def test_a_whole_frame_gets_h3s_area_normalised_coordinates():
    """32 units around 16, neighbours 32 / sqrt(H * W) apart: at 2x per side the model's own are compressed 2x."""
    native, double = frame_axis(24, math.sqrt(24 * 42)), frame_axis(48, math.sqrt(48 * 84))
    assert float(native[0]) == pytest.approx(16 - 16 * 24 / math.sqrt(24 * 42))
    assert float(native[1] - native[0]) == pytest.approx(2 * float(double[1] - double[0]))


@pytest.mark.parametrize("lh,lw", [(24, 42), (12, 21), (20, 40)])
def test_a_window_up_to_native_size_is_a_native_frame_or_its_centre(lh, lw):
    """Native size: the native frame's coordinates exactly; smaller: its centre crop (native spacing)."""
    hs, ws = window_axes(lh, lw, (24, 42))
    nh, nw = frame_axis(24, math.sqrt(24 * 42)), frame_axis(42, math.sqrt(24 * 42))
    if (lh, lw) == (24, 42):
        assert torch.equal(hs, nh) and torch.equal(ws, nw)
    if (24 - lh) % 2 == 0:  # an even crop: exactly the native frame's middle rows
        torch.testing.assert_close(hs, nh[(24 - lh) // 2:(24 - lh) // 2 + lh], rtol=0, atol=1e-12)
    torch.testing.assert_close(ws - ws.mean(), nw[:lw] - nw[:lw].mean(), rtol=0, atol=1e-12)  # native spacing
    assert float(hs.mean() + (hs[1] - hs[0]) / 2) == pytest.approx(16.0)  # centred as a frame is


def test_a_window_larger_than_native_is_a_frame_of_its_own_size():
    """The full-attention limit: a window over a whole frame larger than native gets that frame's coordinates."""
    hs, ws = window_axes(48, 84, (24, 42))
    assert torch.equal(hs, frame_axis(48, math.sqrt(48 * 84))) and torch.equal(ws, frame_axis(84, math.sqrt(48 * 84)))


@pytest.mark.parametrize("shifted", [False, True])
def test_every_window_gets_its_own_positions_even_where_windows_overlap(shifted):
    """Grid 2x10x7 with 1x4x4 windows: unshifted, the border windows are clamped inward and overlap their
    neighbours; shifted, border windows are halves. Each window's tokens get its own window coordinates, in its
    row-major order, whatever other window also holds them; time is ComfyUI's."""
    grid, native = (2, 10, 7), (4, 4)
    t = torch.arange(2, dtype=torch.float64).repeat_interleave(70) * 3.3
    positions = WindowPositions(grid, native, t)
    layout = make_layout(grid, (1, 4, 4), shifted)
    for (shape, windows), index in zip(layout.groups, layout.gather_indices()):
        pos = positions.of(layout, index).view(len(windows), math.prod(shape), 3)
        hs, ws = window_axes(shape[1], shape[2], native)
        grid_hw = torch.stack(torch.meshgrid(hs, ws, indexing="ij"), -1).reshape(-1, 2)
        assert torch.equal(pos[:, :, 1:], grid_hw.expand(len(windows), -1, -1))
        assert torch.equal(pos[:, :, 0].reshape(-1), t[index])
        # a run of whole windows further into the group (as the memory plan's chunks hand them over)
        L = math.prod(shape)
        if len(windows) > 1:
            assert torch.equal(positions.of(layout, index[L:2 * L]), pos[1])


def test_tokens_that_are_not_whole_windows_are_an_error_naming_the_layout():
    layout = make_layout((1, 8, 8), (1, 4, 4), False)
    positions = WindowPositions((1, 8, 8), (4, 4), torch.zeros(64, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"MiniMax-H3 window positions: 5 tokens are not a run of whole windows of "
                                         r"the layout 1x2x2 = 4 windows"):
        positions.of(layout, layout.gather_indices()[0][:5])
