"""What an evaluation concludes and writes: the gate (did the model learn to draw its own training data?), the
markdown table of every cell, a grid of sample frames per scale, and the gate's videos for diagnose.py.

    results = evaluate.run_evaluation(...)   # calls write_outputs(results, samples, out, frames)
    print(outputs.gate_text(results) + "\n\n" + outputs.markdown_table(results))
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

# --- the gate: did the model learn its data? ---------------------------------------------------------------

GATE = (("count_error", "<=", 0.15), ("duplication", "<=", 0.05), ("continuity", ">=", 0.85))
GATE_COLOUR_FACTOR = 2.0  # colour JS at most this times the ground truth's floor
GATE_MIN_VIDEOS = 64


def gate(results: dict) -> dict:
    """The gate at native size with full attention (the model as trained): count error <= 0.15, duplication
    <= 0.05, continuity >= 0.85, colour JS <= 2 x the ground-truth floor, over >= 64 held-out videos.

    Returns {"passed": bool, "checks": [(name, value, rule, ok)], "why": str}; passed is False when the x1
    cells are missing or hold fewer videos than that."""
    cells = {c["mode"]: c for c in results.get("cells", []) if c.get("scale") == 1 and c.get("status") == "ok"}
    full, truth = cells.get("full"), cells.get("ground_truth")
    if full is None or truth is None:
        return {"passed": False, "checks": [], "why": "no x1 full-attention cell: evaluate with --scales 1,..."}
    checks = []
    for key, op, bound in GATE:
        v = full[key][0]
        ok = not math.isnan(v) and (v <= bound if op == "<=" else v >= bound)
        checks.append((key, v, f"{op} {bound}", ok))
    floor = truth["colour_js"][0]
    checks.append(("colour_js", full["colour_js"][0], f"<= {GATE_COLOUR_FACTOR:g} x {floor:.3f}",
                   full["colour_js"][0] <= GATE_COLOUR_FACTOR * floor))
    checks.append(("videos", full["videos"], f">= {GATE_MIN_VIDEOS}", full["videos"] >= GATE_MIN_VIDEOS))
    failed = [c[0] for c in checks if not c[3]]
    return {"passed": not failed, "checks": checks, "why": "" if not failed else "fails on " + ", ".join(failed)}


def gate_text(results: dict) -> str:
    """The gate as markdown lines, ending with what may be concluded from the table."""
    g = gate(results)
    lines = ["**Gate** (native size, full attention, the model as trained): "
             + ("**passed**." if g["passed"] else f"**failed** ({g['why']})." if g["checks"]
                else f"**not measured** ({g['why']}).")]
    for name, value, rule, ok in g["checks"]:
        shown = f"{value:.3f}" if isinstance(value, float) else str(value)
        lines.append(f"- {name}: {shown} (needs {rule}) {'ok' if ok else 'FAILS'}")
    trained = results.get("trained") or {}
    if g["checks"] and trained.get("steps") and trained.get("half_size_steps") == trained["steps"]:
        lines.append(f"\nThese weights learnt at half size only ({trained['steps']} steps): at native size the gate "
                     f"samples them at twice the size they learnt, which says how they carry beyond it, not how "
                     f"well they learnt (bench/fidelity/pilot.py --weights reads them at half size).")
    if not g["checks"]:
        lines.append("\nThe gate was not measured, so no conclusion is drawn from the table below.")
    elif not g["passed"]:
        lines.append("\nThe model failed the gate: it has not learned to draw its own training data, so the "
                     "model's rows below say nothing about the attention modes, and no conclusion is drawn from "
                     "them (the ground_truth and *_of_truth rows do not involve the model).")
    return "\n".join(lines)


# --- outputs -----------------------------------------------------------------------------------------------

COLUMNS = (("count_error", "count error", 3), ("duplication", "duplication", 3), ("size_ratio", "size ratio", 2),
           ("continuity", "continuity", 3), ("colour_js", "colour JS", 3), ("edge_js", "edge JS", 4),
           ("orientation_js", "orientation JS", 3), ("detail_error", "detail error", 2), ("hf_log2", "HF log2", 2),
           ("flicker", "flicker", 2), ("seam", "seam", 2))


def fmt(value, digits: int) -> str:
    m, e = value[0], value[1]
    if m is None or (isinstance(m, float) and math.isnan(m)):
        return "n/a"
    return f"{m:.{digits}f}" + ("" if e is None or math.isnan(e) else f" ± {e:.{digits}f}")


def markdown_table(results: dict) -> str:
    head = "| scale | mode | videos | " + " | ".join(c[1] for c in COLUMNS) + " | s / cell |"
    lines = [head, "|" + "---|" * (len(COLUMNS) + 4)]
    for c in results["cells"]:
        if c["status"] != "ok":  # said once, on the row's one line (an exception's text may hold line breaks)
            status = " ".join(c["status"].split()).replace("|", "/")
            lines.append(f"| x{c['scale']} | {c['mode']} | 0 | {status} |" + " |" * len(COLUMNS))
            continue
        cells = [fmt(c.get(k, (float("nan"), float("nan"))), d) for k, _, d in COLUMNS]
        lines.append(f"| x{c['scale']} | {c['mode']} | {c['videos']} | " + " | ".join(cells) + f" | {c['seconds']} |")
    return "\n".join(lines)


def write_grids(samples: dict, out: Path, frames: int) -> list[Path]:
    """One PNG per scale: a row per mode (ground truth first), three frames of the cell's first video."""
    import cv2
    paths = []
    picks = sorted({0, frames // 2, frames - 1})
    for scale in sorted({s for s, _ in samples}):
        rows = []
        width = max([170] + [9 * len(mode) + 12 for s, mode in samples if s == scale])  # the longest variant's name
        for (s, mode), videos in samples.items():
            if s != scale:
                continue
            strip = np.concatenate([videos[0, t] for t in picks], 1)  # (S, len(picks) * S, 3)
            label = np.full((strip.shape[0], width, 3), 1.0, np.float32)
            img = np.concatenate([label, strip], 1)
            img = (img[:, :, ::-1] * 255).round().astype(np.uint8).copy()  # BGR for OpenCV
            cv2.putText(img, mode, (6, 24), cv2.FONT_HERSHEY_SIMPLEX, 0.55, (0, 0, 0), 1, cv2.LINE_AA)
            rows.append(np.pad(img, ((0, 4), (0, 0), (0, 0)), constant_values=255))
        path = out / f"samples_x{scale}.png"
        cv2.imwrite(str(path), np.concatenate(rows, 0))
        paths.append(path)
    return paths


def write_videos(samples: dict, out: Path, scale: int = 1) -> Path | None:
    """The videos of every cell at ``scale`` (the gate's, at 1) as 8-bit RGB arrays (N, T, H, W, 3) named by mode,
    in one compressed npz: what `bench/fidelity/diagnose.py --samples` reads to tell the gate's failures apart."""
    cells = {mode: (videos * 255).round().clip(0, 255).astype(np.uint8) for (s, mode), videos in samples.items()
             if s == scale}
    if not cells:
        return None
    path = out / f"videos_x{scale}.npz"
    np.savez_compressed(path, **cells)
    return path


def write_outputs(results: dict, samples: dict, out: Path, frames: int) -> None:
    out.mkdir(parents=True, exist_ok=True)
    results["grids"] = [p.name for p in write_grids(samples, out, frames)]
    videos = write_videos(samples, out)
    results["videos"] = videos.name if videos else None
    (out / "results.json").write_text(json.dumps(results, indent=2))
    (out / "results.md").write_text(gate_text(results) + "\n\n" + markdown_table(results) + "\n")
