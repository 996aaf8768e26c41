"""The bench scripts stay runnable: no module of theirs shadows the standard library."""
import sys

from comfyui_finder import PACK_DIR

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
