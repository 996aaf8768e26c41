"""The bench scripts stay runnable as the docs say: no module of theirs shadows the standard library, every
documented command names a script and options that exist, and the documented commands that need no
ComfyUI run with --smoke (the ComfyUI ones: tests/comfyui/test_bench_smoke_comfyui.py)."""
import re
import sys

import pytest

from bench_commands import (DOCS, PACK_DIR, bench_scripts, check_smoke_output, declared_options,
                            docstring_commands, documented_commands, run_smoke, smoke_runs)

BENCH = PACK_DIR / "bench"


def importable_names(folder):
    """Top-level names a folder provides when it is on sys.path: modules and packages."""
    return {p.stem if p.suffix == ".py" else p.name for p in folder.iterdir()
            if p.suffix == ".py" or (p.is_dir() and not p.name.startswith((".", "__")))}


def test_no_name_on_a_bench_scripts_path_shadows_the_standard_library():
    # running bench/x.py puts bench/ first on sys.path, and the scripts add the pack's folder:
    # a bench/profile.py once replaced the standard library's profile for torch._dynamo (via cProfile)
    folders = [BENCH, PACK_DIR, *(p for p in BENCH.rglob("*") if p.is_dir() and p.name != "__pycache__")]
    shadowing = {f"{folder.relative_to(PACK_DIR)}/{name}" for folder in folders
                 for name in importable_names(folder) if name in sys.stdlib_module_names}
    assert not shadowing, f"rename these: they hide standard-library modules of the same name: {sorted(shadowing)}"


def test_every_documented_command_names_a_script_and_options_that_exist():
    commands = documented_commands() + docstring_commands()
    assert len({c.script for c in commands}) >= 5
    problems = []
    for command in commands:
        script = PACK_DIR / command.script
        if not script.is_file():
            problems.append(f"{command.source}: `{command}`: {command.script} does not exist")
            continue
        unknown = {a.split("=")[0] for a in command.args if a.startswith("--")} - declared_options(script)
        if unknown:
            problems.append(f"{command.source}: `{command}`: {command.script} has no {', '.join(sorted(unknown))}")
    assert not problems, "\n".join(problems)


def test_every_bench_script_has_a_smoke_mode_and_is_run_by_the_smoke_tests():
    scripts = {str(p.relative_to(PACK_DIR)) for p in bench_scripts()}
    assert {"bench/attention.py", "bench/dit.py", "bench/vae_decode.py"} <= scripts
    assert not [s for s in scripts if "--smoke" not in declared_options(PACK_DIR / s)]
    run = {c.script for c in smoke_runs(needs_comfyui=False) + smoke_runs(needs_comfyui=True)}
    assert scripts <= run, f"not run by any command of docs/BENCHMARKS.md or README.md: {sorted(scripts - run)}"


def test_every_bench_file_the_docs_mention_exists():
    for name in DOCS:
        text = (PACK_DIR / name).read_text()
        missing = {m for m in re.findall(r"bench/[\w/]+\.py", text) if not (PACK_DIR / m).is_file()}
        assert not missing, f"{name} mentions {sorted(missing)}, which do not exist"


@pytest.mark.parametrize("command", smoke_runs(needs_comfyui=False), ids=str)
def test_documented_bench_command_runs_with_smoke(command):
    check_smoke_output(command, run_smoke(command))
