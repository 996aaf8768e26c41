"""Fixtures of the ComfyUI tier: one headless runtime per test session."""
from pathlib import Path

import pytest

from comfyui_finder import find_comfyui

COMFYUI_ROOT, _ = find_comfyui()
HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(config, items):
    for item in items:
        if Path(str(item.fspath)).resolve().is_relative_to(HERE):
            item.add_marker(pytest.mark.comfyui)


@pytest.fixture(scope="session")
def comfy(tmp_path_factory):
    if COMFYUI_ROOT is None:
        pytest.skip("ComfyUI tier skipped: no ComfyUI tree")
    from harness import ComfyRuntime
    runtime = ComfyRuntime(tmp_path_factory.mktemp("comfy_base"))
    assert runtime.pack_loaded, "ComfyUI could not load the UltraGen pack (see the log above)"
    assert runtime.test_nodes_loaded
    return runtime
