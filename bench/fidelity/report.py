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
           "    COMFYUI_PATH=/path/to/ComfyUI python bench/fidelity/run.py --minutes 2.5 --lr 2e-4 --samples 16 "
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

## Where the windowed modes' grain came from (issue 24, section 3)

Measured on the CPU with the pre-issue-24 weights in their own latent space (bench/fidelity/grain.py, 2
videos of 8 frames per row): ComfyUI's sampler noises a 2x ground-truth video to the sigma of step k of 20
and takes one step to sigma 0, giving each mode's estimate of the clean video; the table shows its
luminance power in the highest band (0.25-0.75 cycles per pixel, a pixel's to a token's detail) over the
truth's, and the error power in that band over the truth's power, at k = 16 (sigma 0.43) / 19 (sigma 0.14).
`zoom`: whole scenes at 2x (every window sees a zoomed-in part, as in the evaluation); `tiles`: four native
scenes side by side (every unshifted window sees one whole native video, as in training); `native`: each
tile alone at native size, full attention (the reference).

| content | mode | HF power / truth, k 16 / 19 | HF error / truth, k 16 / 19 |
|---|---|---|---|
| zoom | full | 1.02 / 0.99 | 0.83 / 0.28 |
| zoom | windows (shifted) | 1.18 / 1.04 | 0.85 / 0.29 |
| zoom | windows, no shift | 1.07 / 1.01 | 0.74 / 0.27 |
| zoom | quality_band | 1.53 / 1.11 | 1.20 / 0.38 |
| zoom | quality_gate | 1.60 / 0.98 | 1.46 / 0.62 |
| tiles | windows, no shift | 0.86 / 0.95 | 0.40 / 0.17 |
| tiles | windows (shifted) | 0.97 / 0.98 | 0.59 / 0.20 |
| tiles | quality_band | 0.94 / 0.94 | 0.88 / 0.27 |
| native | full | 0.83 / 0.95 | 0.48 / 0.20 |

- **The windows themselves are not the defect.** Where each window holds content the model knows (tiles),
  unshifted windows give the native model's own detail (HF power 0.86 / 0.95 against native's 0.83 /
  0.95) with no more error (0.40 / 0.17 against 0.48 / 0.20): borders, the batching and the scatter back
  are exact enough to be invisible.
- **The grain appears only on zoomed content, and grows with the fusion.** On whole scenes at 2x the
  windows add 7-18% HF power over the truth at sigma 0.43 where full attention adds 2%; the quality band
  fusion adds 53% and gate fusion 60% (gate also loses 40-65% of the mid bands, 0.06-0.25 cycles per pixel:
  it replaces the windows' output by the upsampled global one). Each step adds it again, so sampling ends
  in grain, and the edge statistics move (edge JS 0.49-0.84 against full attention's 0.08-0.12).
- **So it is the weak model meeting what it never saw**, not a defect found in the patch: a model trained
  only on whole scenes at one framing answers a zoomed-in window, and the fused features of a window
  plus the pooled global view, with detail at its own native pixel scale. The new recipe trains on zoomed
  crops for exactly this. Re-run `python bench/fidelity/grain.py --weights <new weights>` (CPU, 10-20
  minutes) on the new model: if the band fusion still adds HF power on zoomed content that the windows
  alone do not, the fusion is the suspect and gets a closer look (the shift's half-size border windows
  add a little too: 1.18 against 1.07 without the shift).
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
Two worlds (scenes.py, `--world`): plain, whose textures the native frame fully resolves, and detailed, which
adds fine ground texture that only 2x, 3x and zoomed crops resolve, as close-ups do in real video; a model is
evaluated in the world it was trained on (its weights' metadata; runs up to 50: plain).

Commands (one H200; bench/fidelity/GPU_PLAN.md has the current plan, one schedule over several calls):

    {command}

Metrics (bench/fidelity/metrics.py), per cell over N videos (mean ± standard error; JS: bootstrap std):
count error (extra blobs of one colour + missing + beyond 3, per frame; 0 is right), duplication (share of
frames with one colour twice), size ratio (object size vs. ground truth at that scale; 1 is right),
continuity (share of frame pairs in which each object keeps one blob and moves plausibly; 1 is right),
colour JS / edge JS (Jensen-Shannon divergence of pooled colour / gradient histograms vs. ground truth
renders; the ground_truth row is the floor of an independent set of renders); orientation JS (the same for the
gradients' orientation, folded into 0-90 degrees and weighted by magnitude: staircase edges on the native pixel
grid, which the magnitude cannot see, move it); detail error, HF log2 and
flicker (the luminance power spectrum per band in cycles per native unit against the truth's, as a shape:
detail error is the mean |log2| gap over the bands, 0 for the truth; HF log2 is the highest band's gap,
below 0 for blur and above 0 for grain; flicker is the high bands' share of frame-to-frame change against
the truth's, above 0 for detail that does not move with the content, as grain does not); seam (luminance
steps across the quality windows' borders over those 1-3 pixels beside them, each clipped at 0.02 so that
object edges do not dominate; the ground truth measures about 0.93, a seam more). With --seeds N,
the set metrics carry error bars over the N sampling seeds. Rows: the pack's modes, ComfyUI's Sol-Attn
(sol_attn: the core Model Sparse Attention node's defaults; skipped with the reason where comfy_kitchen's
CUDA kernel is missing), and the upscaler chains users run instead, all from the same native pass (bicubic;
lanczos_sharpen: Lanczos plus an unsharp mask; learned_sr: Real-ESRGAN's compact network trained on this
bench's world, bench/fidelity/upscaler.py). Each upscaler also has an `_of_truth` row: the same upscaler
applied to the true native video of the ground-truth row's scenes, what it reaches from a perfect native pass
(these rows and ground_truth do not involve the model).
"""


def body(results: dict) -> str:
    from outputs import markdown_table
    lines = [f"Device: {results.get('device', '?')}; configuration: `{json.dumps(results.get('config', {}))}`."]
    train = results.get("train")
    if train:
        total = "" if not train.get("resumed_from") else \
            f" (resumed: {train['steps_total']} steps, {train['seconds_total']} s in all)"
        lines.append(f"Training: {train['steps']} steps in {train['seconds']} s{total}, batch {train['batch']}, "
                     f"loss {train['loss_first']:.3f} -> {train['loss_last50']:.3f} (mean of the last 50), "
                     f"model {train['model']}.")
    from outputs import gate_text
    lines += ["", gate_text(results), "", markdown_table(results), ""]
    for name in results.get("grids", []):
        lines.append(f"![samples {name}](fidelity/{name})")
    return "\n".join(lines)


def skeleton() -> str:
    return ("## Results\n\nNot measured yet: the table is written here from the GPU run's results.json by "
            "`python bench/fidelity/report.py results.json > docs/FIDELITY.md`.\n\n"
            "## What the numbers suggest for the defaults\n\nTo be written from the measured table; no default "
            "changes until then.\n\n" + EARLIER)


EARLIER = """## Earlier measurements (old recipe: failed the gate)

Run 20 (4 minutes of training) and the 7-minute runs of 2026-12-04 used the old latent space and
whole-scene training; at native size with full attention their models had count error 0.81 / 0.56 and
continuity 0.31 / 0.47 against the gate's 0.15 / 0.85. They failed the gate, so their tables (run 20:
docs/bench-results/run20_fidelity_results.json) say nothing about the attention modes, and the conclusions
this page drew from run 20 are withdrawn. Their weights were in the old latent space, which
bench/fidelity/evaluate.py refuses; run 38's weights replaced them in bench/fidelity/weights/.
"""


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
        from outputs import gate
        results = json.loads(args.results.read_text())
        text += "## Results\n\n" + body(results) + "\n\n"
        g = gate(results)
        text += ("## What the numbers suggest for the defaults\n\n(to be written from the table)\n" if g["passed"]
                 else "## What the numbers suggest\n\nNothing: the model " +
                 ("failed the gate.\n" if g["checks"] else "was not measured against the gate.\n"))
    sys.stdout.write(text)


if __name__ == "__main__":
    main()
