#!/usr/bin/env bash
# Build .device/ (git-ignored): what a GPU machine without internet needs to run bench/ against ComfyUI 0.33,
# carried beside the repo (under 64 MiB with it). On the GPU machine, from the repo root:
#     source .device/setup.sh     # ComfyUI at $COMFYUI_PATH, missing packages on PYTHONPATH
#
#     bash bench/gpu_bundle.sh ../shared/comfyui/v0.33.0            # ComfyUI tree + wheels + setup (about 13 MB)
#     bash bench/gpu_bundle.sh ../shared/comfyui/v0.33.0 --kitchen  # + comfy-kitchen's CUDA kernels (Sol-Attn; 34 MB)
#
# ComfyUI 0.33 imports comfy_kitchen at startup, so every call carries one of its two builds: ck-lite.tar.xz
# (comfy-kitchen 0.2.40 without its CUDA extension: the eager and triton backends, 0.1 MB) or, for the Sol-Attn rows,
# ck.tar.xz (with it). The repo (about 25 MB), the wheels, the tree and ck.tar.xz together pass the 64 MiB a call
# carries: on a machine kept warm, send ck.tar.xz in a later call without the wheels and the tree, which the first
# call's setup left unpacked there.
#
# The machine has torch (CUDA), numpy, pillow, scipy, opencv; the wheels are ComfyUI's other needs for
# Python 3.12 x86_64, less what it has. PyAV is replaced by an import-only stand-in (the benches never code
# video). Needs pip and access to PyPI here.
set -euo pipefail
tree=${1:?usage: bash bench/gpu_bundle.sh COMFYUI_TREE [--kitchen]}
kitchen=${2:-}
root=$(cd "$(dirname "$0")/.." && pwd)
dev=$root/.device
name=$(basename "$(cd "$tree" && pwd)")
mkdir -p "$dev/whl" "$dev/stubs/av"

echo "ComfyUI tree $name -> $dev/comfyui.tar.xz"
tar -C "$(dirname "$(cd "$tree" && pwd)")" -cJf "$dev/comfyui.tar.xz" --exclude=.git --exclude='*tokenizer*/*.json' \
    --exclude='*tokenizer*/*.txt' --exclude='*tokenizer*/*.model' --exclude='*/tests-unit' --exclude='*/tests' "$name"

echo "wheels -> $dev/whl"
python3 -m pip download -q --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux_2_28_x86_64 \
    -d "$dev/whl" torchsde trampoline comfy-aimdo==0.4.13 simpleeval blake3 spandrel einops aiohttp yarl pydantic \
    pydantic-settings psutil pyyaml tqdm accelerate safetensors
# what the machine has, or what the benches never import
for big in torch nvidia triton scipy numpy torchvision pillow sympy networkx mpmath setuptools hf_xet \
           huggingface_hub sqlalchemy alembic mako httpx httpx2 httpcore httpcore2 truststore anyio h11 click jinja2 markupsafe fsspec; do
    rm -f "$dev/whl/${big}"-*.whl "$dev/whl/${big}"_*.whl
done

echo "comfy-kitchen 0.2.40 -> $dev/ck-lite.tar.xz (without its CUDA extension)${kitchen:+ and $dev/ck.tar.xz (with it)}"
tmp=$(mktemp -d)
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
    -d "$tmp" comfy-kitchen==0.2.40
(cd "$tmp" && python3 -m zipfile -e comfy_kitchen-*.whl unpacked && rm -rf unpacked/comfy_kitchen/backends/hip)
if [ "$kitchen" = "--kitchen" ]; then
    tar -C "$tmp/unpacked" -cJf "$dev/ck.tar.xz" comfy_kitchen
fi
rm -f "$tmp"/unpacked/comfy_kitchen/backends/cuda/_C.*
tar -C "$tmp/unpacked" -cJf "$dev/ck-lite.tar.xz" comfy_kitchen
rm -rf "$tmp"

cat > "$dev/stubs/av/__init__.py" <<'PY'
"""Import-only stand-in for PyAV on the GPU machine (the benches never decode or encode video): any attribute
or submodule is a placeholder class, so ComfyUI's modules import."""
import importlib.abc
import importlib.machinery
import sys
import types

__version__ = "16.0.0"


class _Meta(type):
    def __getattr__(cls, name):
        if name.startswith("__"):
            raise AttributeError(name)
        return _Meta(name, (), {})


def __getattr__(name):
    if name.startswith("__"):
        raise AttributeError(name)
    return _Meta(name, (), {})


class _Finder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, fullname, path, target=None):
        return importlib.machinery.ModuleSpec(fullname, self, is_package=True) if fullname.startswith("av.") else None

    def create_module(self, spec):
        module = types.ModuleType(spec.name)
        module.__getattr__ = __getattr__
        module.__path__ = []
        return module

    def exec_module(self, module):
        pass


sys.meta_path.insert(0, _Finder())
PY

cat > "$dev/setup.sh" <<SH
# source .device/setup.sh on the GPU machine: ComfyUI ($name) at \$COMFYUI_PATH, its missing needs in /tmp/site
_dev=\$(pwd)/.device
mkdir -p /tmp/comfyui /tmp/site /tmp/ck
[ -d /tmp/comfyui/$name ] || tar -C /tmp/comfyui -xJf "\$_dev/comfyui.tar.xz"
# comfy_kitchen, which ComfyUI 0.33 imports at startup: with its CUDA kernels where ck.tar.xz came (Sol-Attn), even
# after a call that unpacked the lite build on this machine
if [ -f "\$_dev/ck.tar.xz" ] && [ ! -f /tmp/ck/.cuda ]; then
  rm -rf /tmp/ck/comfy_kitchen && tar -C /tmp/ck -xJf "\$_dev/ck.tar.xz" && touch /tmp/ck/.cuda
elif [ ! -d /tmp/ck/comfy_kitchen ] && [ -f "\$_dev/ck-lite.tar.xz" ]; then
  tar -C /tmp/ck -xJf "\$_dev/ck-lite.tar.xz"
fi
[ -d /tmp/ck/comfy_kitchen ] || python -c 'import comfy_kitchen' 2>/dev/null || echo "setup: no comfy_kitchen, which \
ComfyUI 0.33 imports at startup: carry .device/ck-lite.tar.xz (or .device/ck.tar.xz)" >&2
export COMFYUI_PATH=/tmp/comfyui/$name
_missing=()
for w in "\$_dev"/whl/*.whl; do
  n=\$(basename "\$w" | cut -d- -f1 | tr 'A-Z' 'a-z')
  python -c 'import importlib.metadata, sys; importlib.metadata.version(sys.argv[1].replace("_", "-"))' "\$n" \
    2>/dev/null || _missing+=("\$w")
done
[ \${#_missing[@]} -eq 0 ] || pip install -q --no-deps --no-index --target /tmp/site "\${_missing[@]}" 2>&1 | tail -2
export PYTHONPATH=/tmp/site:/tmp/ck:\$_dev/stubs\${PYTHONPATH:+:\$PYTHONPATH}
export PIP_DISABLE_PIP_VERSION_CHECK=1
echo "setup: \${#_missing[@]} wheels installed; python \$(python -c 'import sys;print(sys.version.split()[0])')"
SH
du -sh "$dev"
