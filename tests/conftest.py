"""Test tiers: core (always), ComfyUI (needs a ComfyUI tree), GPU (needs CUDA).

The ComfyUI tier is skipped, loudly, when no ComfyUI tree is found (see comfyui_finder.py).
"""
from __future__ import annotations

import sys

import pytest

from comfyui_finder import PACK_DIR, find_comfyui

COMFYUI_ROOT, COMFYUI_HOW = find_comfyui()
if str(PACK_DIR) not in sys.path:
    sys.path.insert(0, str(PACK_DIR))  # ultragen_core importable as a top-level package for core tests
BANNER = "#" * 78


def pytest_configure(config):
    config.addinivalue_line("markers", "comfyui: needs a ComfyUI tree (tier 2)")
    config.addinivalue_line("markers", "gpu: needs CUDA (tier 3)")


def pytest_report_header(config):
    if COMFYUI_ROOT is None:
        return [BANNER, f"ComfyUI tier WILL BE SKIPPED: {COMFYUI_HOW}", BANNER]
    return [f"ComfyUI tier: {COMFYUI_ROOT} ({COMFYUI_HOW})"]


def pytest_collection_modifyitems(config, items):
    if COMFYUI_ROOT is None:
        skip = pytest.mark.skip(reason=f"ComfyUI tier skipped: {COMFYUI_HOW}")
        for item in items:
            if "comfyui" in item.keywords:
                item.add_marker(skip)
    try:
        import torch
        has_cuda = torch.cuda.is_available()
    except ImportError:
        has_cuda = False
    if not has_cuda:
        skip = pytest.mark.skip(reason="GPU tier: CUDA is not available")
        for item in items:
            if "gpu" in item.keywords:
                item.add_marker(skip)


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    if COMFYUI_ROOT is None:
        tr = terminalreporter
        tr.write_line(BANNER, red=True, bold=True)
        tr.write_line("THE COMFYUI TIER WAS SKIPPED: these results do not prove the pack works in ComfyUI.",
                      red=True, bold=True)
        tr.write_line(f"Reason: {COMFYUI_HOW}", red=True, bold=True)
        tr.write_line(BANNER, red=True, bold=True)
