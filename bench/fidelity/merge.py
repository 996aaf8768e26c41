"""One table from several evaluations of the same weights (parts of a table run as separate processes or calls,
e.g. by scale, or a cell run again after a failure): bench/fidelity/run.py's results.json files, merged.

    python bench/fidelity/merge.py --out DIR a/results.json b/results.json c/results.json

Per scale: the first file's ground truth, the model's rows in evaluate.MODES' order (a mode's variants after it,
in the order met), then the upscalers' _of_truth rows; a row measured in several
files keeps its first measured value, and a failed or skipped cell gives way to a measured one of another file. A
part whose rows' own settings differ from the first part's (its configuration's c2f_start, the coarse-to-fine start,
0.5 where it has none, as up to run 57; proxy_radius, the proxy's margin, 2 where it has none, as up to run 58) has
those rows named by the setting (coarse_to_fine@start=0.5, proxy@radius=2), so that rows sampled differently are
never taken for one another.
Writes DIR/results.json and DIR/results.md (the gate and the table, as run.py prints them)."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import outputs  # noqa: E402
from evaluate import MODES  # noqa: E402
from sampling import guided, split_mode  # noqa: E402


# the rows' own settings a configuration records: its key -> (the variant key naming it, its value before it was
# recorded)
RECORDED = {"c2f_start": ("start", 0.5), "proxy_radius": ("radius", 2)}


def row_settings(part: dict) -> dict:
    """{variant key: value} of the settings a part's rows were sampled with, where not named in the row."""
    config = part.get("config") or {}
    return {key: type(old)(config.get(name, old)) for name, (key, old) in RECORDED.items()}


def named(mode: str, settings: dict) -> str:
    """A row's name with ``settings`` that apply to it and that it does not name yet appended as variants."""
    base, variant = split_mode(mode)
    applies = {"start": base == "coarse_to_fine",
               "radius": guided(base, variant) and variant.get("neighbourhood") != "all"}
    extra = [f"{key}={value:g}" for key, value in settings.items() if applies[key] and key not in variant]
    return "@".join([mode, *extra])


def merge(parts: list[dict]) -> dict:
    """The merged results: parts' cells by (scale, mode) as the module docstring says; the other keys of the first
    part, with the parts' devices and configurations listed under "merged_from". ValueError if the parts sampled
    different weights (their training steps differ) or at different cfg."""
    first = parts[0]
    for p in parts[1:]:
        for key in ("trained", "cfg"):
            if p.get(key) != first.get(key):
                raise ValueError(f"the parts differ in {key!r}: {first.get(key)!r} and {p.get(key)!r}: a table "
                                 "merges evaluations of the same weights at the same cfg only")
    cells: dict[tuple[int, str], dict] = {}
    for p in parts:
        differ = {k: v for k, v in row_settings(p).items() if v != row_settings(first)[k]}
        for c in p["cells"]:
            if differ and c["mode"] != "ground_truth" and not c["mode"].endswith("_of_truth"):
                c = {**c, "mode": named(c["mode"], differ)}
            key = (c["scale"], c["mode"])
            if key not in cells or (cells[key]["status"] != "ok" and c["status"] == "ok"):
                cells[key] = c

    def rank(mode: str) -> tuple:  # the truth first, the model's rows in MODES' order (variants after their mode)
        base = mode.removesuffix("_of_truth").split("@")[0]
        return (mode != "ground_truth", mode.endswith("_of_truth"), MODES.index(base) if base in MODES else len(MODES),
                "@" in mode)

    merged = [cells[key] for key in sorted(cells, key=lambda k: (k[0], rank(k[1])))]  # sorted is stable
    out = {k: v for k, v in first.items() if k not in ("cells", "partial", "grids", "videos")}
    out["cells"] = merged
    out["merged_from"] = [{"device": p.get("device"), "config": p.get("config")} for p in parts]
    return out


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("parts", nargs="+", type=Path, help="results.json files of bench/fidelity/run.py")
    ap.add_argument("--out", type=Path, required=True, help="folder for the merged results.json and results.md")
    args = ap.parse_args(argv)
    try:
        results = merge([json.loads(p.read_text()) for p in args.parts])
    except ValueError as e:
        ap.error(str(e))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(results, indent=2))
    text = outputs.gate_text(results) + "\n\n" + outputs.markdown_table(results) + "\n"
    (args.out / "results.md").write_text(text)
    print(text)
    return results


if __name__ == "__main__":
    main()
