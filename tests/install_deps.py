"""Install what the test suite needs into the running Python, for one ComfyUI tree.

    python tests/install_deps.py /path/to/ComfyUI

Installs, only where missing: torch + torchvision + torchaudio of one release (ComfyUI 0.33 imports
torchaudio at start-up and it must match torch's release; torchaudio stops at 2.11, so that is the
release installed when none is present), the tree's own requirements.txt (its pinned frontend,
templates and, for 0.33, comfy-kitchen / comfy-aimdo), this pack's requirements.txt, pytest, gguf (the
one requirement of ComfyUI-GGUF, which a stacking test loads) and playwright (its Python package only: the
browser test drives Debian's /usr/bin/chromium, which .ci/run installs with apt-get; `playwright install`
is never run), and the newest ComfyUI frontend (NEWEST_FRONTEND) into a cache folder of its own
(FRONTEND_CACHE; never into the Python environment, whose pinned frontend the tree's own server serves):
the browser test serves it from there with --front-end-root. Never writes into the ComfyUI tree. Then run
the README's test command:

    COMFYUI_PATH=/path/to/ComfyUI python -m pytest
"""
from __future__ import annotations

import argparse
import importlib.metadata as md
import os
import subprocess
import sys
import tempfile
from pathlib import Path

PACK_DIR = Path(__file__).resolve().parent.parent
TORCH_RELEASE = "2.11.0"  # the newest release with a torchaudio; the GPU machine's release too
TORCH_SET = [f"torch=={TORCH_RELEASE}", "torchvision==0.26.0", f"torchaudio=={TORCH_RELEASE}"]
TEST_TOOLS = ["pytest>=8", "playwright>=1.40",  # playwright drives Debian's chromium (no browser download)
              "gguf>=0.13.0"]  # ComfyUI-GGUF's one requirement (tests/comfyui/test_stacking_gguf.py loads that pack)
TORCH_NAMES = ("torch", "torchvision", "torchaudio")
# The newest frontend the browser test also runs (against a ComfyUI 0.33+ server; PyPI, Oct 2026), and where
# it is installed: one folder per version, outside every Python environment.
NEWEST_FRONTEND = "1.58.1"
FRONTEND_CACHE = Path(os.environ.get("ULTRAGEN_FRONTEND_CACHE",
                                     Path.home() / ".cache" / "ultragen-ci" / "frontends")).expanduser()


def frontend_root(version: str = NEWEST_FRONTEND) -> Path:
    """The static folder of comfyui-frontend-package ``version`` in FRONTEND_CACHE (ComfyUI's --front-end-root)."""
    return FRONTEND_CACHE / f"comfyui-frontend-package-{version}" / "comfyui_frontend_package" / "static"


def install_frontend(version: str = NEWEST_FRONTEND) -> Path:
    """comfyui-frontend-package ``version`` (the package alone: it is static files) into FRONTEND_CACHE."""
    root = frontend_root(version)
    if (root / "index.html").is_file():
        print(f"install_deps: frontend {version} already in {root}")
        return root
    pip("--no-deps", "--target", str(root.parent.parent), f"comfyui-frontend-package=={version}")
    if not (root / "index.html").is_file():
        raise RuntimeError(f"comfyui-frontend-package {version} installed, but {root}/index.html is missing")
    return root


def release(package: str) -> str | None:
    try:
        return md.version(package).split("+")[0]
    except md.PackageNotFoundError:
        return None


def torch_ok() -> bool:
    """torch, torchvision and a torchaudio of torch's own release are installed."""
    t, a = release("torch"), release("torchaudio")
    return t is not None and release("torchvision") is not None and a is not None and a == t


def pip(*args: str) -> None:
    cmd = [sys.executable, "-m", "pip", "install", "-q", "--disable-pip-version-check", *args]
    print("install_deps:", " ".join(cmd[3:]), flush=True)
    subprocess.run(cmd, check=True)


def requirements_without_torch(tree: Path) -> Path:
    """The tree's requirements.txt minus torch / torchvision / torchaudio (installed above, as one set)."""
    lines = []
    for line in (tree / "requirements.txt").read_text().splitlines():
        name = line.split("#")[0].strip().split(";")[0]
        for sep in "<>=!~[ ":
            name = name.split(sep)[0]
        if name.lower() not in TORCH_NAMES:
            lines.append(line)
    out = Path(tempfile.mkdtemp(prefix="ultragen-req-")) / "requirements.txt"
    out.write_text("\n".join(lines) + "\n")
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("comfyui", type=Path, help="a ComfyUI tree (the folder with main.py and comfy/)")
    parser.add_argument("--torch-only", action="store_true", help="install only torch / torchvision / torchaudio")
    parser.add_argument("--no-newest-frontend", action="store_true",
                        help=f"skip comfyui-frontend-package {NEWEST_FRONTEND} (the browser test then skips it)")
    args = parser.parse_args()
    tree = args.comfyui.resolve()
    if not (tree / "comfy" / "model_patcher.py").is_file():
        print(f"install_deps: {tree} is not a ComfyUI tree (no comfy/model_patcher.py)", file=sys.stderr)
        return 2
    if torch_ok():
        print(f"install_deps: torch {md.version('torch')}, torchaudio {md.version('torchaudio')} already installed")
    else:
        pip(*TORCH_SET)
    if args.torch_only:
        return 0
    pip("-r", str(requirements_without_torch(tree)), "-r", str(PACK_DIR / "requirements.txt"), *TEST_TOOLS)
    if not args.no_newest_frontend:
        install_frontend()
    return 0


if __name__ == "__main__":
    sys.exit(main())
