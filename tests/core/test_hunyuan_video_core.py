"""The HunyuanVideo family without ComfyUI: which member of the shared class a config is, the refusals, the
registry entry and its sizes, and the padding mask as kept text keys."""
from types import SimpleNamespace

import pytest
import torch

from ultragen_core import api
from ultragen_core.families.hunyuan_video.text_mask import EVERY_KEY, kept_text_keys
from ultragen_core.families.hunyuan_video.variants import REFUSED, SUPPORTED, Variant, refusal, variant_of
from ultragen_core.models import FAMILIES, HUNYUAN_VIDEO, HUNYUAN_VIDEO_15_480P, HUNYUAN_VIDEO_15_720P

HV15 = dict(patch_size=[1, 1, 1], in_channels=65, vision_in_dim=1152)


def fake_model(**config):
    """A stand-in with the class name and module of ComfyUI's HunyuanVideo and a config (``params``)."""
    cls = type("HunyuanVideo", (), {"__module__": "comfy.ldm.hunyuan_video.model"})
    dm = cls()
    dm.params = SimpleNamespace(**config)
    return dm


@pytest.mark.parametrize("config,variant", [
    (HV15, Variant.HUNYUAN_VIDEO_15),
    (dict(HV15, in_channels=98), Variant.HUNYUAN_VIDEO_15_SR),
    (dict(HV15, in_channels=33), Variant.HUNYUAN_VIDEO_15_OTHER),
    (dict(patch_size=[1, 2, 2], in_channels=16, vision_in_dim=None), Variant.HUNYUAN_VIDEO),
    (dict(patch_size=[1, 2, 2], in_channels=33, vision_in_dim=None), Variant.HUNYUAN_VIDEO_I2V),
    (dict(patch_size=[1, 2, 2], in_channels=32, vision_in_dim=None), Variant.HUNYUAN_VIDEO_I2V),
    (dict(patch_size=[1, 1], in_channels=64, vision_in_dim=None), Variant.HUNYUAN_IMAGE_21),
    (dict(patch_size=[1, 1, 1], in_channels=128, vision_in_dim=None), Variant.HUNYUAN_IMAGE_21_REFINER),
])
def test_the_variant_comes_from_the_config(config, variant):
    assert set(SUPPORTED) == {Variant.HUNYUAN_VIDEO_15, Variant.HUNYUAN_VIDEO}
    dm = fake_model(**config)
    assert variant_of(dm) is variant
    if variant in SUPPORTED:
        assert refusal(dm) is None and api.family_named("HunyuanVideo").refusal(dm) is None
    else:
        assert refusal(dm).startswith(REFUSED[variant])
        assert f"in_channels {config['in_channels']}" in refusal(dm)


def test_the_registry_patches_hunyuan_video_15_and_refuses_the_sr_model_by_name():
    from ultragen_core.families.registry import Capability, family_of, require
    family = family_of(fake_model(**HV15))
    assert family.name == "HunyuanVideo" and family.adapter.endswith("hunyuan_video.hunyuan_video")
    assert family.can_run(Capability.WINDOWS_GLOBAL, fake_model(**HV15)) is None
    with pytest.raises(NotImplementedError) as refused:
        family_of(fake_model(**dict(HV15, in_channels=98)))
    text = str(refused.value)
    assert text.startswith("UltraGen does not patch HunyuanVideo (comfy.ldm.hunyuan_video.model): it is the "
                           "HunyuanVideo 1.5 1080p super-resolution model (98 input channels)"), text
    for capability in (Capability.PROXY, Capability.SPLIT, Capability.CHECKPOINT, Capability.STREAMING):
        with pytest.raises(NotImplementedError, match=f"UltraGen {capability.value} is not available for "
                                                      "HunyuanVideo .*the HunyuanVideo family has no"):
            require(fake_model(**HV15), capability)


def test_sizes_are_added_after_the_existing_resolution_names():
    names = list(FAMILIES)
    assert names[:7] == ["Wan 2.1 T2V/I2V 1.3B", "Wan 2.1 T2V/I2V 14B", "Wan 2.2 TI2V 5B", "Wan 2.2 A14B (per expert)",
                         "HunyuanVideo", "LTX-Video", "Wan 2.1 I2V 14B 480P"]  # saved workflows hold these
    assert names[7:9] == ["HunyuanVideo 1.5 720p", "HunyuanVideo 1.5 480p"]  # then later families (LTX-2)
    assert HUNYUAN_VIDEO_15_720P.native_grid == (31, 45, 80)  # 1280x720, 121 frames, 16x VAE, patch 1
    assert HUNYUAN_VIDEO_15_480P.native_grid == (31, 30, 53)
    assert api.model_facts(fake_model(**HV15)) is HUNYUAN_VIDEO_15_720P
    original = fake_model(patch_size=[1, 2, 2], in_channels=16, vision_in_dim=None)
    assert api.model_facts(original) is HUNYUAN_VIDEO and HUNYUAN_VIDEO.ultragen
    assert HUNYUAN_VIDEO.native_grid == (33, 45, 80)  # 1280x720, 129 frames, 8x VAE, patch 1x2x2


MAX = -torch.finfo(torch.float32).max


def test_a_padding_mask_becomes_the_text_keys_to_keep():
    e, n = 5, 7
    assert kept_text_keys(None, 2, e, e + n) is EVERY_KEY
    assert kept_text_keys(torch.zeros(1, 1, e + n), 2, e, e + n) is EVERY_KEY
    mask = torch.zeros(1, 1, e + n)
    mask[..., 3:e] = MAX
    kept = kept_text_keys(mask, 2, e, e + n)
    assert kept.shared and kept.for_item(1).tolist() == [0, 1, 2]
    rows = torch.zeros(2, 1, e + n)
    rows[0, 0, 4] = float("-inf")
    kept = kept_text_keys(rows, 2, e, e + n)
    assert not kept.shared and kept.for_item(0).tolist() == [0, 1, 2, 3] and kept.for_item(1).tolist() == list(range(5))


@pytest.mark.parametrize("mask,why", [
    (torch.cat((torch.full((1, 1, 5), 0.5), torch.zeros(1, 1, 7)), dim=-1), "values other than 0 and -max (a soft"),
    (torch.cat((torch.zeros(1, 1, 5), torch.full((1, 1, 7), MAX)), dim=-1), "also masks video tokens"),
    (torch.zeros(1, 12, 12), "is not one row of keys per batch item"),
    (torch.zeros(1, 1, 9), "covers 9 keys, the sequence has 12"),
    (torch.ones(1, 12, dtype=torch.bool), "not an additive float mask"),
    (torch.cat((torch.full((1, 1, 5), MAX), torch.zeros(1, 1, 7)), dim=-1), "drops every text token"),
])
def test_a_mask_that_is_not_text_padding_is_named(mask, why):
    found = kept_text_keys(mask, 1, 5, 12)
    assert isinstance(found, str) and why in found, found


def test_the_family_imports_without_comfyui():
    """HOUSE_STYLE rule 1: the patch and its parts import with every ComfyUI module refused."""
    import subprocess
    import sys

    from comfyui_finder import PACK_DIR
    code = ("import builtins\nreal = builtins.__import__\n"
            "def guard(name, *a, **k):\n"
            "    if name.split('.')[0] in ('comfy', 'comfy_api', 'folder_paths', 'nodes', 'server'):\n"
            "        raise ImportError('ComfyUI import attempted: ' + name)\n"
            "    return real(name, *a, **k)\n"
            "builtins.__import__ = guard\n"
            "from ultragen_core.families.registry import HUNYUAN_VIDEO\n"
            "print(HUNYUAN_VIDEO.patch_module().__name__)\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=PACK_DIR, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ultragen_core.families.hunyuan_video.hunyuan_video"
