"""docs/FIDELITY.md from a fidelity bench run (bench/fidelity/run.py's results.json), or its skeleton.

    python bench/fidelity/report.py results.json > docs/FIDELITY.md
    python bench/fidelity/report.py --skeleton > docs/FIDELITY.md
    python bench/fidelity/report.py --smoke   # the report of a made-up one-cell result: checks the script runs
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

COMMAND = ("COMFYUI_PATH=/path/to/ComfyUI python bench/fidelity/run.py --train-only --minutes 8.3 --out DIR\n"
           "    COMFYUI_PATH=/path/to/ComfyUI python bench/fidelity/run.py --minutes 3 --lr 2e-4 --samples 16 "
           "--gate-samples 64 \\\n        --resume DIR/ultragen_fidelity_wan.safetensors --out DIR2")

RECIPE = """## The recipe, and why objects went missing before (issue 24)

The model committed before issue 24 (6 blocks of width 256, 4 minutes on an H200, training loss 0.013) drew
sky, ground and horizon but lost its objects even at its native size (count error 0.81, continuity 0.31).
Diagnosis (bench/fidelity/diagnose.py, CPU):

- **The data was almost invisible to the noise schedule.** The old latent space put pixels into ComfyUI's
  Wan 2.1 latent space unscaled, and ComfyUI divides by Wan's latent std (1.1-3.3) before the model sees
  them: the content spread 0.18 around each channel's mean, against noise of 1. Signal equals noise at
  s* = 0.15, so with the shift of 3 only 5.7% of training draws and 1 of the 20 sampling steps lay where
  the scene is decided: the objects had to appear in one Euler step. The low loss was the easy part
  (predicting the noise where there is almost no signal).
- **The loss was not the problem.** Measured with the committed model, per pixel the loss on object pixels
  is 15-26x the rest at every noise level (0.29 vs 0.011 at s = 0.05; 0.079 vs 0.005 at s = 0.9): objects,
  7.5% of the pixels, already carried most of the loss. No object weighting was added.
- **Objects spanned 2-4 tokens** (4 x 4 px per token) and every training video was the whole scene at one
  framing, so a window at 2x showed the model a zoomed view it had never seen.

The recipe now (bench/fidelity/latents.py, scenes.py, train.py):

- the latent space places pixels in Wan 2.1's latent statistics so that after ComfyUI's normalisation the
  model sees 2 (2 rgb - 1): spread 0.72, like Wan's own latents; signal equals noise at s* = 0.42, 19% of
  training draws and 3 of 20 sampling steps below it (Wan's own at its shift of 5 on unit-spread latents:
  about 3 of 20);
- 1 pixel per latent pixel: the native 64 x 64 frame is 32 x 32 tokens x 8 frames (8,192 tokens; 4K Wan
  windows are 21 x 45 x 80), objects span 5-9 tokens;
- half the training videos show the whole scene, half a crop zoomed 1.25-4x (log-uniform) at a random
  place; training objects have radii 3-14 units (the evaluation's: 5-9); every batch is fresh scenes from
  seeds the evaluation never uses;
- 7 blocks of width 256 (8.1M parameters, 15.5 MiB in bf16), AdamW 4e-4, cosine, EMA saved;
  resumable (`--resume`, weights only);
- the evaluation is unchanged in kind: whole scenes at 1x, 2x and 3x against ground-truth renders, with the
  gate over 64 videos at 1x.
"""

INTRO = """# Fidelity at 2x and 3x the training size

What each attention mode does to *content* when a video model samples beyond its training size, measured
with a model of our own: ComfyUI's `WanModel` at a small size (bench/fidelity/train.py), trained on
procedural videos whose correct content at every size is known (bench/fidelity/scenes.py: 1-3 objects of
known colour and shape moving over a textured ground with a horizon; at scale s the same scene with s x s
the pixels). The model samples through ComfyUI's real path (UNETLoader, ModelSamplingSD3, the pack's
nodes, KSampler), 64 x 64 px (32 x 32 tokens) x 8 frames natively, at 2x and 3x per side (4x and 9x the
tokens). Latent space: 1 pixel -> 1 latent pixel of 16 channels in Wan 2.1's latent statistics, exact
(bench/fidelity/latents.py). Training shows whole scenes and crops zoomed 1.25-4x (bench/fidelity/train.py).

Commands (one H200; GPU_PLAN.md: two calls, the second resumes and evaluates):

    {command}

Metrics (bench/fidelity/metrics.py), per cell over N videos (mean ± standard error; JS: bootstrap std):
count error (extra blobs of one colour + missing + beyond 3, per frame; 0 is right), duplication (share of
frames with one colour twice), size ratio (object size vs. ground truth at that scale; 1 is right),
continuity (share of frame pairs in which each object keeps one blob and moves plausibly; 1 is right),
colour JS / edge JS (Jensen-Shannon divergence of pooled colour / gradient histograms vs. ground truth
renders; the ground_truth row is the floor of an independent set of renders).
"""


def body(results: dict) -> str:
    from evaluate import markdown_table
    lines = [f"Device: {results.get('device', '?')}; configuration: `{json.dumps(results.get('config', {}))}`."]
    train = results.get("train")
    if train:
        total = "" if not train.get("resumed_from") else \
            f" (resumed: {train['steps_total']} steps, {train['seconds_total']} s in all)"
        lines.append(f"Training: {train['steps']} steps in {train['seconds']} s{total}, batch {train['batch']}, "
                     f"loss {train['loss_first']:.3f} -> {train['loss_last50']:.3f} (mean of the last 50), "
                     f"model {train['model']}.")
    from evaluate import gate_text
    lines += ["", gate_text(results), "", markdown_table(results), ""]
    for name in results.get("grids", []):
        lines.append(f"![samples {name}](fidelity/{name})")
    return "\n".join(lines)


def skeleton() -> str:
    return ("## Results\n\nNot measured yet: the table is written here from the GPU run's results.json by "
            "`python bench/fidelity/report.py results.json > docs/FIDELITY.md`.\n\n"
            "## What the numbers suggest for the defaults\n\nTo be written from the measured table; no default "
            "changes until then.\n")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("results", nargs="?", type=Path, help="results.json of bench/fidelity/run.py")
    ap.add_argument("--skeleton", action="store_true", help="the page without results")
    ap.add_argument("--smoke", action="store_true", help="report a made-up one-cell result")
    args = ap.parse_args(argv)
    text = INTRO.format(command=COMMAND) + "\n" + RECIPE + "\n"
    if args.smoke:
        cell = {"scale": 2, "mode": "quality_band", "status": "ok", "videos": 2, "seconds": 1.0,
                **{k: [0.0, 0.0, 2] for k in ("count_error", "duplication", "size_ratio", "continuity")},
                "colour_js": [0.1, 0.01], "edge_js": [0.01, 0.001]}
        text += "## Results (smoke: made-up numbers)\n\n" + body({"device": "cpu", "cells": [cell]})
    elif args.skeleton or args.results is None:
        text += skeleton()
    else:
        from evaluate import gate
        results = json.loads(args.results.read_text())
        text += "## Results\n\n" + body(results) + "\n\n"
        text += ("## What the numbers suggest for the defaults\n\n(to be written from the table)\n"
                 if gate(results)["passed"] else "## What the numbers suggest\n\nNothing: the model failed the "
                 "gate.\n")
    sys.stdout.write(text)


if __name__ == "__main__":
    main()
