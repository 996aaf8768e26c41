"""Settings validation and automatic plans; the core imports without ComfyUI."""
import subprocess
import sys

import pytest

from comfyui_finder import PACK_DIR
from ultragen_core.config import AttentionSettings, parse_block_list, resolve_plan


def test_core_imports_without_comfyui():
    code = ("import sys, builtins\n"
            "real = builtins.__import__\n"
            "def guard(name, *a, **k):\n"
            "    if name.split('.')[0] in ('comfy', 'comfy_api', 'folder_paths', 'nodes', 'server'):\n"
            "        raise ImportError('ComfyUI import attempted: ' + name)\n"
            "    return real(name, *a, **k)\n"
            "builtins.__import__ = guard\n"
            "import ultragen_core.adapters, ultragen_core.config, ultragen_core.attention, ultragen_core.latent_upscale\n"
            "import ultragen_core.families.wan.wan, ultragen_core.api\n"
            "import importlib.util\n"
            "spec = importlib.util.spec_from_file_location('pack', 'PACK/__init__.py', submodule_search_locations=['PACK'])\n"
            "m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m)\n"
            "print('ok')\n").replace("PACK", str(PACK_DIR))
    out = subprocess.run([sys.executable, "-c", code], cwd=PACK_DIR, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


@pytest.mark.parametrize("kwargs,message", [
    (dict(fusion="blend"), r"fusion must be one of \('band', 'gate', 'local_only'\), got 'blend'"),
    (dict(start_percent=0.6, end_percent=0.4), "must be below end_percent"),
    (dict(global_strength=1.5), "within 0..1"),
    (dict(window=(0, -1, 4)), "three whole numbers"),
    (dict(shift="diagonal"), "shift must be one of"),
    (dict(preset="turbo"), r"preset must be one of \('quality', 'fast'\), got 'turbo'"),
])
def test_invalid_settings_say_what_and_how_to_fix(kwargs, message):
    with pytest.raises(ValueError, match=message):
        AttentionSettings(**kwargs)


@pytest.mark.parametrize("global_branch,fusion,uses", [
    (True, "band", True), (True, "gate", True), (True, "local_only", False),
    (False, "band", False), (False, "gate", False), (False, "local_only", False)])
def test_global_branch_off_or_local_only_runs_windows_alone(global_branch, fusion, uses):
    s = AttentionSettings(window=(1, 4, 4), global_branch=global_branch, fusion=fusion)
    assert s.uses_global_branch is uses
    plan = resolve_plan(s, (2, 16, 16), (1, 8, 8))
    assert (plan.factor > 0) is uses


def test_block_lists():
    assert parse_block_list("0, 1,-1") == (0, 1, -1)
    assert parse_block_list("") == ()
    with pytest.raises(ValueError, match="'x' is not a block number"):
        parse_block_list("0,x")
    s = AttentionSettings(full_attention_blocks=(0, -1))
    assert s.full_blocks(30) == {0, 29}
    with pytest.raises(ValueError, match="block 40 does not exist in a model with 30 blocks"):
        AttentionSettings(full_attention_blocks=(40,)).full_blocks(30)


def test_automatic_plans_for_real_grids():
    wan14b = (21, 45, 80)
    plan = resolve_plan(AttentionSettings(), (21, 135, 240), wan14b)  # 4K
    assert plan.window == (21, 45, 80) and plan.factor == 3 and plan.pooled == (21, 45, 80)
    plan = resolve_plan(AttentionSettings(), (21, 68, 120), wan14b)  # 1080p
    assert plan.window == (21, 34, 60) and plan.factor == 2
    assert resolve_plan(AttentionSettings(), (21, 45, 80), wan14b).is_identity  # native: unchanged
    assert resolve_plan(AttentionSettings(), (21, 30, 52), wan14b).is_identity
    explicit = resolve_plan(AttentionSettings(window=(7, 16, 16), global_compression=5), (21, 67, 120), wan14b)
    assert explicit.window == (7, 16, 16) and explicit.pooled == (21, 14, 24)


def test_fast_preset_fills_in_only_what_is_automatic():
    wan14b, grid4k = (21, 45, 80), (21, 135, 240)
    fast = resolve_plan(AttentionSettings(preset="fast"), grid4k, wan14b)
    # the benchmarked fast preset: windows 7x17x30, never shifted, pooled x8 to 21x17x30
    assert (fast.window, fast.shift, fast.factor, fast.pooled) == ((7, 17, 30), False, 8, (21, 17, 30))
    quality = resolve_plan(AttentionSettings(), grid4k, wan14b)
    assert quality.shift and quality.window == (21, 45, 80)  # shift auto = alternate for quality
    assert not resolve_plan(AttentionSettings(shift="none"), grid4k, wan14b).shift
    assert resolve_plan(AttentionSettings(preset="fast", shift="alternate"), grid4k, wan14b).shift
    mixed = resolve_plan(AttentionSettings(preset="fast", window=(21, 0, 0)), grid4k, wan14b)
    assert mixed.window == (21, 17, 30)  # an explicit entry wins, the others come from the preset
    small = resolve_plan(AttentionSettings(preset="fast"), (3, 10, 12), wan14b)
    assert small.window == (3, 10, 12)  # clamped to the grid
