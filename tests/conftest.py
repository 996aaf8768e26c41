"""Test tiers: core (always), ComfyUI (needs a ComfyUI tree), GPU (needs CUDA).

The ComfyUI tier is skipped, loudly, when no ComfyUI tree is found (see comfyui_finder.py); with
``ULTRAGEN_REQUIRE_COMFYUI=1`` (set by .ci/run) or ``CI=true`` a run whose ComfyUI tier did not run fails.
Nothing may be written into the ComfyUI tree (CI's copy is read-only): an audit hook records every
write there, and the run fails if there was one.
"""
from __future__ import annotations

import os
import sys

import pytest

from comfyui_finder import PACK_DIR, find_comfyui

COMFYUI_ROOT, COMFYUI_HOW = find_comfyui()
if str(PACK_DIR) not in sys.path:
    sys.path.insert(0, str(PACK_DIR))  # ultragen_core importable as a top-level package for core tests
BANNER = "#" * 78
REQUIRE_COMFYUI = os.environ.get("ULTRAGEN_REQUIRE_COMFYUI") == "1" or os.environ.get("CI", "").lower() == "true"
WRITE_EVENTS = ("os.mkdir", "os.remove", "os.rename", "os.replace", "os.rmdir", "os.truncate", "os.chmod")
tree_writes: list[str] = []


def _record_tree_writes(root: str):
    """Audit hook: remember every file opened for writing, created, moved or removed under ``root``."""
    prefix = os.path.join(root, "")

    def inside(path) -> bool:
        return isinstance(path, str) and os.path.realpath(path).startswith(prefix)

    def hook(event, args):
        if event == "open" and len(args) >= 3 and inside(args[0]):
            mode, flags = args[1], args[2]
            writing = (any(c in mode for c in "wax+") if isinstance(mode, str)
                       else isinstance(flags, int) and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT))
            if writing:
                tree_writes.append(f"open {args[0]} ({mode or flags})")
        elif event in WRITE_EVENTS and args and inside(args[0]):
            tree_writes.append(f"{event} {args[0]}")

    sys.addaudithook(hook)


if COMFYUI_ROOT is not None:
    # bytecode of the tree's modules goes elsewhere (PYTHONPYCACHEPREFIX does the same for subprocesses)
    if sys.pycache_prefix is None:
        sys.pycache_prefix = os.path.join(os.path.expanduser("~"), ".cache", "ultragen-tests", "pycache")
    _record_tree_writes(str(COMFYUI_ROOT))


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


def _comfyui_tier_ran(session) -> bool:
    reports = session.config.pluginmanager.get_plugin("terminalreporter").stats.get("passed", [])
    return any("comfyui" in r.keywords for r in reports)


def pytest_sessionfinish(session, exitstatus):
    if tree_writes:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
    elif REQUIRE_COMFYUI and exitstatus == pytest.ExitCode.OK and not _comfyui_tier_ran(session):
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    if tree_writes:
        terminalreporter.write_line(BANNER, red=True, bold=True)
        terminalreporter.write_line(f"FAILED: the run wrote into the ComfyUI tree {COMFYUI_ROOT}:", red=True, bold=True)
        for line in tree_writes[:20]:
            terminalreporter.write_line(f"  {line}", red=True)
    if REQUIRE_COMFYUI and COMFYUI_ROOT is None:
        terminalreporter.write_line("FAILED: ULTRAGEN_REQUIRE_COMFYUI / CI is set and the ComfyUI tier was skipped.",
                                    red=True, bold=True)
    if COMFYUI_ROOT is None:
        tr = terminalreporter
        tr.write_line(BANNER, red=True, bold=True)
        tr.write_line("THE COMFYUI TIER WAS SKIPPED: these results do not prove the pack works in ComfyUI.",
                      red=True, bold=True)
        tr.write_line(f"Reason: {COMFYUI_HOW}", red=True, bold=True)
        tr.write_line(BANNER, red=True, bold=True)
