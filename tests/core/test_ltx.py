"""The LTX family without ComfyUI: the registry entry (claims, refusals, facts, capabilities), the token grid of
a call with guide frames, the RoPE tables cut per token, and the latent upscaler's refusal of LTX latents."""
from __future__ import annotations

import pytest
import torch

from ultragen_core import api
from ultragen_core.families.ltx.ltx import token_grid
from ultragen_core.families.ltx.ltx_attention import pe_rows, pe_select
from ultragen_core.families.registry import LTX, Capability, family_of
from ultragen_core.latent_upscale import check_video_latent
from ultragen_core.models import FAMILIES, LTX2, LTX_VIDEO
from ultragen_core.resolution import ResolutionRequest, pick_resolution


def stand_in(name: str, module: str, **attrs):
    return type(name, (), {"__module__": module, **attrs})()


@pytest.mark.parametrize("name,module,facts", [("LTXVModel", "comfy.ldm.lightricks.model", LTX_VIDEO),
                                               ("LTXAVModel", "comfy.ldm.lightricks.av_model", LTX2)])
def test_ltx_claims_both_classes_with_their_facts(name, module, facts):
    dm = stand_in(name, module)
    assert family_of(dm) is LTX and LTX.refusal(dm) is None
    assert api.model_facts(dm) is facts
    assert LTX.can_run(Capability.WINDOWS_GLOBAL, dm) is None


def test_an_unknown_ltx_class_is_refused_not_guessed():
    with pytest.raises(NotImplementedError, match=r"does not patch LTXVideoModel3 \(comfy.ldm.lightricks.model3\): "
                                                  r"it is a LTX variant this version of the pack does not know"):
        family_of(stand_in("LTXVideoModel3", "comfy.ldm.lightricks.model3"))


@pytest.mark.parametrize("capability", [c for c in Capability if c is not Capability.WINDOWS_GLOBAL])
def test_ltx_refuses_what_it_cannot_do_by_name(capability):
    message = LTX.can_run(capability, stand_in("LTXAVModel", "comfy.ldm.lightricks.av_model"))
    assert message.startswith(f"UltraGen {capability.value} is not available for LTXAVModel "
                              "(comfy.ldm.lightricks.av_model): the LTX family has no")


def test_ltx2_facts_and_its_resolution_entry():
    assert LTX2.native == (768, 512, 121) and LTX2.native_grid == (16, 16, 24)
    assert (LTX2.vae_spatial, LTX2.vae_temporal, LTX2.patch, LTX2.latent_channels) == (32, 8, (1, 1, 1), 128)
    assert (LTX2.dim, LTX2.heads, LTX2.blocks) == (4096, 32, 48)
    assert list(FAMILIES)[-1] == "LTX-2" and list(FAMILIES)[:7] == [
        "Wan 2.1 T2V/I2V 1.3B", "Wan 2.1 T2V/I2V 14B", "Wan 2.2 TI2V 5B", "Wan 2.2 A14B (per expert)", "HunyuanVideo",
        "LTX-Video", "Wan 2.1 I2V 14B 480P"]  # saved workflows hold these names: only ever appended to
    uhd = pick_resolution(ResolutionRequest(family="LTX-2", target="4K UHD (3840x2160)", frames=121))
    assert uhd.grid == (16, 68, 120)  # 3840x2176: 32-px cells and "does not patch" not in uhd.report()


class Dm:
    """What token_grid reads of an LTX model: its patchifier's patch size."""
    patchifier = type("P", (), {"patch_size": (1, 1, 1)})()


def test_the_grid_leaves_out_the_guide_frames():
    x = torch.zeros(2, 128, 5, 4, 6)  # 4 video frames + 1 guide frame of 4x6 tokens
    assert token_grid(Dm(), x, None, None) == ((5, 4, 6), "")
    keyframes = torch.zeros(2, 3, 24, 2)
    assert token_grid(Dm(), x, keyframes, torch.ones(2, 1, 5, 4, 6)) == ((4, 4, 6), "")
    assert token_grid(Dm(), x, torch.zeros(2, 3, 25, 2), None) == (None, "25 guide tokens are not whole latent "
                                                                          "frames of 4x6 tokens")
    mask = torch.ones(2, 1, 5, 4, 6)
    mask[:, :, 1, 0, 0] = -1  # ComfyUI would drop a video token
    assert token_grid(Dm(), x, keyframes, mask) == (None, "a negative denoise mask drops tokens of the video frames")
    mask = torch.ones(2, 1, 5, 4, 6)
    mask[:, :, 4] = -1  # a dilated guide's dropped tokens are no part of the grid
    assert token_grid(Dm(), x, keyframes, mask) == ((4, 4, 6), "")


@pytest.mark.parametrize("layout", ["0.33: rotation matrices and a flag", "0.3.64: cos and sin"])
def test_rope_tables_are_cut_per_token(layout):
    L = 10
    if layout.startswith("0.33"):
        pe = (torch.randn(2, L, 4, 3, 2, 2), True)
    else:
        pe = (torch.randn(2, L, 24), torch.randn(2, L, 24))
    rows = pe_rows(pe, 3, 7)
    picked = pe_select(pe, torch.tensor([3, 4, 5, 6]))
    assert type(rows) is tuple and len(rows) == 2
    for a, b, full in zip(rows, picked, pe):
        if isinstance(full, torch.Tensor):
            assert torch.equal(a, full[:, 3:7]) and torch.equal(b, full[:, 3:7])
        else:
            assert a is full and b is full


def test_the_latent_upscaler_refuses_ltx_latents_with_the_recipe():
    with pytest.raises(ValueError, match="has 128 channels, an LTX-Video / LTX-2 latent"):
        check_video_latent(torch.zeros(1, 128, 3, 4, 4))
    joint = type("NestedTensor", (), {"is_nested": True, "ndim": 5})()
    with pytest.raises(ValueError, match="joint audio-video latent \\(LTX-2\\).*LTXVSeparateAVLatent"):
        check_video_latent(joint, "reference latent")
    check_video_latent(torch.zeros(1, 16, 3, 4, 4))  # Wan latents pass
