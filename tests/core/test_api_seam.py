"""The seam between the pack's front ends and its model families: nodes/ and bench/ import nothing from a
family's modules except through ``ultragen_core.api`` (read from their source with ast), and the one
registry claims models, says what each family can do, and refuses the rest by class name."""
from __future__ import annotations

import ast
import dataclasses
import subprocess
import sys

import pytest

from comfyui_finder import PACK_DIR
from ultragen_core import api
from ultragen_core.families import registry
from ultragen_core.families.registry import WAN, Capability, family_of, require
from ultragen_core.models import WAN21_13B, WAN21_14B, WAN22_5B, WAN_REFUSED

# A family's own modules: what only ultragen_core (and its api) may import.
FAMILY_MODULES = ("ultragen_core.adapters", "ultragen_core.families", "ultragen_core.models",
                  "ultragen_core.checkpoint")
FRONT_ENDS = ("nodes", "bench")


def imported_modules(source: str, path: str) -> list[tuple[int, str]]:
    """(line, dotted module) of every import in ``source`` (also inside functions, ``from x import y`` as both
    x and x.y, relative imports resolved against ``path``, and string arguments of importlib.import_module),
    with anything before ``ultragen_core`` (the pack's package name under ComfyUI) cut off."""
    package = path.rsplit("/", 1)[0].replace("/", ".")
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                parent = parts[:len(parts) - node.level + 1] if node.level > 1 else parts
                base = ".".join(parent[1:] if node.level > len(parts) else parent) + ("." + base if base else "")
            found.append((node.lineno, base))
            found += [(node.lineno, f"{base}.{alias.name}") for alias in node.names]
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", "")) == "import_module":
            found += [(node.lineno, a.value) for a in node.args
                      if isinstance(a, ast.Constant) and isinstance(a.value, str)]
    out = []
    for line, name in found:
        if "ultragen_core" in name.split("."):
            name = name[name.index("ultragen_core"):]
        out.append((line, name))
    return out


def family_imports(source: str, path: str) -> list[str]:
    return [f"{path}:{line}: {name}" for line, name in imported_modules(source, path)
            if any(name == m or name.startswith(m + ".") for m in FAMILY_MODULES)]


def front_end_files():
    for folder in FRONT_ENDS:
        yield from sorted((PACK_DIR / folder).rglob("*.py"))


def test_the_import_walk_finds_every_form_of_a_family_import():
    source = ("import ultragen_core.models\n"
              "from ..ultragen_core.families.wan.wan_split import enable_split\n"
              "from ultragen_core import adapters\n"
              "def f():\n    from ultragen_core.checkpoint.io import SUPPORTED\n"
              "m = importlib.import_module('ultragen_pack.ultragen_core.families.registry')\n"
              "from ..ultragen_core.api import apply\nfrom ultragen_core.config import AttentionSettings\n")
    found = family_imports(source, "nodes/x.py")
    assert [f.split(": ")[1] for f in found] == [
        "ultragen_core.models", "ultragen_core.families.wan.wan_split",
        "ultragen_core.families.wan.wan_split.enable_split",
        "ultragen_core.adapters", "ultragen_core.checkpoint.io", "ultragen_core.checkpoint.io.SUPPORTED",
        "ultragen_core.families.registry"], found
    assert family_imports("from .schema import schema\nfrom ..ultragen_core.api import apply\n", "nodes/a.py") == []


def test_nodes_and_bench_reach_model_families_only_through_the_api():
    files = list(front_end_files())
    assert len(files) >= 20 and any(p.name == "split_gpus.py" for p in files)
    found = []
    for path in files:
        rel = str(path.relative_to(PACK_DIR))
        found += family_imports(path.read_text(), rel)
    assert not found, ("import these through ultragen_core.api (HOUSE_STYLE rule 8: nodes and bench/ call one "
                       "small api, never a family's internals):\n" + "\n".join(found))


def test_the_api_imports_without_comfyui():
    code = ("import builtins\nreal = builtins.__import__\n"
            "def guard(name, *a, **k):\n"
            "    if name.split('.')[0] in ('comfy', 'comfy_api', 'folder_paths', 'nodes', 'server'):\n"
            "        raise ImportError('ComfyUI import attempted: ' + name)\n"
            "    return real(name, *a, **k)\n"
            "builtins.__import__ = guard\n"
            "import ultragen_core.api as api\nprint(sorted(f.name for f in api.REGISTRY))\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=PACK_DIR, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "['HunyuanVideo', 'LTX', 'Wan']"


# --- the registry ---------------------------------------------------------------------------------------------

def stand_in(name: str, module: str, **attrs):
    """An instance of a class named like a ComfyUI diffusion model (no ComfyUI needed)."""
    return type(name, (), {"__module__": module, **attrs})()


class Patcher:
    """A ModelPatcher stand-in: only get_model_object("diffusion_model")."""

    def __init__(self, dm):
        self.dm = dm

    def get_model_object(self, name):
        assert name == "diffusion_model"
        return self.dm


def old_forward(self, x, t, context):  # a Wan forward_orig without in-context latents (ComfyUI 0.3.64)
    return x


@pytest.mark.parametrize("name", ["WanModel", "VaceWanModel", "CameraWanModel"])
def test_wan_claims_the_classes_it_patches(name):
    dm = stand_in(name, "comfy.ldm.wan.model")
    assert family_of(dm) is WAN and api.family(Patcher(dm)) is WAN
    assert WAN.refusal(dm) is None


@pytest.mark.parametrize("name", sorted(WAN_REFUSED))
def test_wan_variants_it_does_not_patch_are_refused_with_the_class_and_the_reason(name):
    with pytest.raises(NotImplementedError) as refused:
        family_of(stand_in(name, "comfy.ldm.wan.model"))
    assert f"does not patch {name} (comfy.ldm.wan.model): {WAN_REFUSED[name]}" in str(refused.value)


def test_an_unknown_wan_class_is_refused_not_guessed():
    with pytest.raises(NotImplementedError, match=r"does not patch WanModel_X2 \(comfy.ldm.wan.model2\): it is a "
                                                  r"Wan variant this version of the pack does not know"):
        family_of(stand_in("WanModel_X2", "comfy.ldm.wan.model2"))


@pytest.mark.parametrize("name,module", [("Flux", "comfy.ldm.flux.model")])
def test_models_no_family_claims_raise_naming_their_class(name, module):
    with pytest.raises(NotImplementedError) as refused:
        api.require(Patcher(stand_in(name, module)), Capability.WINDOWS_GLOBAL)
    text = str(refused.value)
    assert f"UltraGen does not support {name} ({module}) yet" in text
    assert "Supported diffusion models: WanModel, VaceWanModel, CameraWanModel, HunyuanVideo, LTXVModel, LTXAVModel" in text


def test_a_model_input_that_is_not_a_model_patcher_is_a_type_error():
    with pytest.raises(TypeError, match="UltraGen expects a ComfyUI MODEL, got str"):
        api.apply("not a model")


def test_wan_declares_every_capability():
    assert set(WAN.capabilities) == set(Capability)
    dm = stand_in("WanModel", "comfy.ldm.wan.model", forward_orig=old_forward)
    assert {c: WAN.can_run(c, dm) for c in Capability} == {c: None for c in Capability}


def test_capabilities_a_member_lacks_are_refused_by_name():
    vace = stand_in("VaceWanModel", "comfy.ldm.wan.model", forward_orig=old_forward)
    assert WAN.can_run(Capability.WINDOWS_GLOBAL, vace) is None and WAN.can_run(Capability.SPLIT, vace) is None
    with pytest.raises(NotImplementedError, match="UltraGen proxy guidance runs the proxy as extra tokens after the "
                                                  "video, which VaceWanModel"):
        require(vace, Capability.PROXY)
    with pytest.raises(NotImplementedError, match=r"UltraGen checkpoint mode supports WanModel \(Wan2.1-T2V\), not "
                                                  r"VaceWanModel"):
        api.require(Patcher(vace), Capability.CHECKPOINT)


def test_a_family_without_a_capability_is_refused_through_the_registry(monkeypatch):
    windows_only = dataclasses.replace(WAN, name="Windows-only",
                                       capabilities={Capability.WINDOWS_GLOBAL: lambda dm: None})
    monkeypatch.setattr(registry, "REGISTRY", (windows_only,))
    dm = stand_in("WanModel", "comfy.ldm.wan.model")
    assert require(dm, Capability.WINDOWS_GLOBAL) is windows_only
    with pytest.raises(NotImplementedError, match=r"UltraGen split is not available for WanModel "
                                                  r"\(comfy.ldm.wan.model\): the Windows-only family has no split support in this version of "
                                                  r"the pack\. Leave that node out for this model\."):
        api.enable_split(Patcher(dm), setup=None)


def test_native_size_and_vae_facts_come_from_the_registry():
    shapes = lambda dim, out_dim: type("Shapes", (), {"dim": dim, "out_dim": out_dim})()  # noqa: E731
    wan = api.family_named("Wan")
    assert api.model_facts(shapes(1536, 16), wan) is WAN21_13B
    assert api.model_facts(shapes(5120, 16), wan) is WAN21_14B
    assert api.model_facts(shapes(3072, 48), wan) is WAN22_5B
    assert api.model_facts(stand_in("WanModel", "comfy.ldm.wan.model", dim=5120, out_dim=16)).native == (1280, 720, 81)
    assert {f.name for f in WAN.sizes} >= {WAN21_13B.name, WAN21_14B.name, WAN22_5B.name}
    assert {(vae.spatial, vae.latent_channels) for vae in api.VIDEO_VAES.values()} == {(8, 16), (16, 48)}
    assert api.NATIVE_RESOLUTIONS["auto"] is None
    with pytest.raises(ValueError, match=r"UltraGen has no model family 'LTX-2'; the registry holds \['Wan', 'HunyuanVideo', 'LTX'\]"):
        api.family_named("LTX-2")


def test_the_registry_loads_a_family_patch_only_when_it_is_used():
    assert WAN.patch_module().__name__.endswith("ultragen_core.families.wan.wan")
    assert callable(WAN.patch_module().apply)
