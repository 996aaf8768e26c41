"""The bench commands the docs give, and how the bench smoke tests run them (with ``--smoke``).

A command is written ``[COMFYUI_PATH=... ]python bench/<script>.py [options]``, in a code block or in
backticks, in docs/BENCHMARKS.md, README.md or a bench script's docstring. The suite runs, per script and
tier, the first command BENCHMARKS.md / README.md give, exactly as written plus ``--smoke``; every other
command's options are checked against the script's argument parser.
"""
from __future__ import annotations

import ast
import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from comfyui_finder import PACK_DIR

DOCS = ("docs/BENCHMARKS.md", "README.md")
COMMAND = re.compile(r"(?P<comfyui>COMFYUI_PATH=\S+[ \t]+)?python\s+(?P<script>bench/\S+?\.py)(?P<args>[^`#\n]*)")
SMOKE_TIMEOUT_S = 300


@dataclass(frozen=True)
class Command:
    script: str  # "bench/attention.py"
    args: tuple[str, ...]
    needs_comfyui: bool  # written with COMFYUI_PATH=...
    source: str  # the file that gives it

    def __str__(self) -> str:
        return ("COMFYUI_PATH=... " if self.needs_comfyui else "") + shlex.join(["python", self.script, *self.args])


def commands_in(text: str, source: str) -> list[Command]:
    return [Command(m["script"], tuple(shlex.split(m["args"])), bool(m["comfyui"]), source)
            for m in COMMAND.finditer(text)]


def documented_commands() -> list[Command]:
    """The commands of docs/BENCHMARKS.md and README.md, in reading order."""
    return [c for name in DOCS for c in commands_in((PACK_DIR / name).read_text(), name)]


def docstring_commands() -> list[Command]:
    """The usage lines of the bench scripts' docstrings."""
    return [c for path in bench_scripts()
            for c in commands_in(ast.get_docstring(ast.parse(path.read_text())) or "", str(path.relative_to(PACK_DIR)))]


def bench_scripts() -> list[Path]:
    """bench/*.py files that run as scripts (have a ``__main__`` block)."""
    return sorted(p for p in (PACK_DIR / "bench").glob("*.py") if 'if __name__ == "__main__":' in p.read_text())


def declared_options(script: Path) -> set[str]:
    """The --options a script's argparse declares (read from its source, not run)."""
    options = set()
    for node in ast.walk(ast.parse(script.read_text())):
        if isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "add_argument":
            options |= {a.value for a in node.args if isinstance(a, ast.Constant) and str(a.value).startswith("--")}
    return options


def smoke_runs(needs_comfyui: bool) -> list[Command]:
    """Per script, the first documented command of this tier (with or without ComfyUI)."""
    first: dict[str, Command] = {}
    for command in documented_commands():
        if command.needs_comfyui == needs_comfyui:
            first.setdefault(command.script, command)
    return list(first.values())


def run_smoke(command: Command, comfyui_root: Path | None = None) -> str:
    """Run the command as written plus --smoke from the pack's folder; its stdout. COMFYUI_PATH is set only
    for commands written with it, so a script that needs ComfyUI without the docs saying so fails."""
    env = {k: v for k, v in os.environ.items() if k not in ("COMFYUI_PATH", "ULTRAGEN_BENCH_ROOT")}
    if command.needs_comfyui:
        env["COMFYUI_PATH"] = str(comfyui_root)
    proc = subprocess.run([sys.executable, command.script, *command.args, "--smoke"], cwd=PACK_DIR, env=env,
                          capture_output=True, text=True, timeout=SMOKE_TIMEOUT_S)
    assert proc.returncode == 0, (f"`{command} --smoke` (from {command.source}) exited with {proc.returncode}:\n"
                                  f"{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}")
    return proc.stdout


def table_rows(stdout: str) -> list[list[str]]:
    """The data rows of the markdown tables in a bench script's output; asserts every row has its header's
    number of cells."""
    lines = stdout.splitlines()
    rows = []
    for i, line in enumerate(lines[:-1]):
        if line.startswith("|") and lines[i + 1].startswith("|---"):
            width = len(line.strip().strip("|").split("|"))
            for row in lines[i + 2:]:
                if not row.startswith("|"):
                    break
                cells = [c.strip() for c in row.strip().strip("|").split("|")]
                assert len(cells) == width, f"row of {len(cells)} cells under a header of {width}: {row}"
                rows.append(cells)
    return rows


def check_smoke_output(command: Command, stdout: str) -> None:
    """A smoke run says it is one, prints at least one table row, and no row reports a failure."""
    assert stdout.startswith("# smoke run on the CPU"), f"`{command} --smoke` did not print the smoke banner first"
    rows = table_rows(stdout)
    assert rows, f"`{command} --smoke` printed no table rows:\n{stdout[-3000:]}"
    failed = [row for row in rows if any(cell.startswith("failed") for cell in row)]
    assert not failed, f"`{command} --smoke` reports failed rows: {failed}"
