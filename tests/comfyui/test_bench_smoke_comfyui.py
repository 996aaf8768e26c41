"""Tier 2: the documented bench commands that need ComfyUI (written with COMFYUI_PATH=...) run with --smoke
against the ComfyUI tree the suite found, each in its own process, exactly as docs/BENCHMARKS.md or README.md
give them (tests/bench_commands.py)."""
import pytest

from bench_commands import check_smoke_output, run_smoke, smoke_runs
from comfyui_finder import find_comfyui

COMFYUI_ROOT, _ = find_comfyui()


def test_the_docs_give_comfyui_commands_for_the_model_benchmarks():
    assert {"bench/dit.py", "bench/vae_decode.py", "bench/kernel_profile.py"} <= {c.script for c in smoke_runs(True)}


@pytest.mark.parametrize("command", smoke_runs(needs_comfyui=True), ids=str)
def test_documented_bench_command_runs_with_smoke(command):
    check_smoke_output(command, run_smoke(command, COMFYUI_ROOT))
