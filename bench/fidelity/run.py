"""The fidelity bench in one command: train the bench model, then evaluate every attention mode.

    COMFYUI_PATH=/path/to/ComfyUI python bench/fidelity/run.py --out DIR --minutes 9 --train-only
    COMFYUI_PATH=... python bench/fidelity/run.py --out DIR2 --minutes 4 --resume DIR/ultragen_fidelity_wan.safetensors
    COMFYUI_PATH=... python bench/fidelity/run.py --out DIR --weights bench/fidelity/weights/ultragen_fidelity_wan.safetensors
    COMFYUI_PATH=... python bench/fidelity/run.py --smoke   # tiny model, one cell, CPU, seconds
    COMFYUI_PATH=... python bench/fidelity/run.py --cpu --weights W --scales 1 --modes full --gate-samples 8 --out DIR
    python bench/fidelity/run.py --truth-only --scales 2,3 --samples 64 --out DIR   # no model: the upscalers' ceiling
    python bench/fidelity/run.py --truth-only --world detailed --pixels 2 --out DIR   # the same in run 56's space

Writes into DIR: ultragen_fidelity_wan.safetensors and train.json (unless --weights is given), results.json,
results.md (the table) and samples_x<scale>.png (a row of frames per mode). docs/FIDELITY.md is made from
results.json by bench/fidelity/report.py. Without --out, a smoke run writes into a temporary folder.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))
import bench_model  # noqa: E402
import evaluate  # noqa: E402
import outputs  # noqa: E402
import sampling  # noqa: E402
import train  # noqa: E402
import weight_parts  # noqa: E402
from smoke import banner  # noqa: E402


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=None, help="output folder (a smoke run without it: a temporary one)")
    ap.add_argument("--minutes", type=float, default=4.5, help="training budget, wall clock")
    ap.add_argument("--weights", type=Path, default=None, help="evaluate these weights instead of training")
    ap.add_argument("--resume", type=Path, default=None, help="train on from these weights (train.py --resume)")
    ap.add_argument("--train-only", action="store_true", help="train, write the weights, evaluate nothing")
    ap.add_argument("--batch", type=int, default=32, help="training batch")
    ap.add_argument("--lr", type=float, default=4e-4, help="peak learning rate (cosine over --minutes)")
    ap.add_argument("--gate-samples", type=int, default=evaluate.EvalConfig.gate_samples,
                    help="videos of the gate's cells (x1 full attention and its ground truth)")
    ap.add_argument("--samples", type=int, default=evaluate.EvalConfig.samples, help="videos per cell")
    ap.add_argument("--steps", type=int, default=evaluate.EvalConfig.steps, help="sampling steps")
    ap.add_argument("--seeds", type=int, default=evaluate.EvalConfig.seeds,
                    help="sampling seeds per cell (3: error bars over seeds, 3x the evaluation time)")
    ap.add_argument("--scales", default="1,2,3", help="sizes per side, in multiples of the native 64 px")
    ap.add_argument("--modes", default=",".join(evaluate.MODES), help=evaluate.MODES_HELP)
    ap.add_argument("--framing", choices=list(train.FRAMINGS), default=None, help=train.FRAMING_HELP)
    ap.add_argument("--low-res-minutes", type=float, default=0.0, help=train.LOW_RES_HELP)
    ap.add_argument("--native-framing", choices=list(train.FRAMINGS), default=None, help=train.NATIVE_FRAMING_HELP)
    ap.add_argument("--model", choices=list(bench_model.MODELS), default="small", help=train.MODEL_HELP)
    ap.add_argument("--state", type=Path, default=None, help=train.STATE_HELP)
    ap.add_argument("--schedule-minutes", type=float, default=None, help=train.SCHEDULE_HELP)
    ap.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None, help=train.COMPILE_HELP)
    ap.add_argument("--high-noise-share", type=float, default=0.0, help=train.HIGH_NOISE_HELP)
    ap.add_argument("--captions", action=argparse.BooleanOptionalAction, default=None, help=train.CAPTIONS_HELP)
    ap.add_argument("--pixels", type=int, choices=sorted(train.latents.SPACES.values()), default=None,
                    help=train.PIXELS_HELP)
    ap.add_argument("--cfg", type=float, default=None,
                    help="KSampler cfg of the evaluation (default: 1 for unconditional weights, "
                         f"{evaluate.captions.CFG:g} for captioned ones: each video prompted with a held-out scene's "
                         "caption, the empty caption as the negative)")
    ap.add_argument("--world", choices=list(train.scenes.WORLDS), default=None,
                    help=train.WORLD_HELP + "; --weights are evaluated in the world they were trained on, "
                         "--truth-only in this one")
    ap.add_argument("--shift", type=float, default=evaluate.EvalConfig.shift,
                    help="sampling shift (ModelSamplingSD3); the bench model is trained with 3")
    ap.add_argument("--cpu", action="store_true",
                    help="evaluate --weights on the CPU (a few minutes per native video on 2 cores: a look at a "
                         "handful of gate videos, e.g. --scales 1 --modes full --gate-samples 8)")
    ap.add_argument("--truth-only", action="store_true",
                    help="only the rows that need no model: ground_truth and each upscaler applied to the true "
                         "native video (<upscaler>_of_truth), on the CPU")
    ap.add_argument("--smoke", action="store_true", help="tiny model, 3 training steps, one cell on the CPU")
    args = ap.parse_args(argv)
    evaluate.check_modes(ap, args.modes)
    if args.truth_only:
        if args.out is None:
            ap.error("--truth-only needs --out")
        return truth_only(args)
    if args.weights is not None and (args.resume is not None or args.train_only):
        ap.error("--weights evaluates given weights; --resume / --train-only train: give one or the other")
    if args.cpu and args.weights is None:
        ap.error("--cpu evaluates given --weights; training needs CUDA")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.out is None:
        if not args.smoke:
            ap.error("--out is needed (only a smoke run writes into a temporary folder)")
        args.out = Path(tempfile.mkdtemp(prefix="ultragen_fidelity_out_"))
    if not args.smoke and not args.cpu and not torch.cuda.is_available():
        sys.exit("bench/fidelity/run.py trains on CUDA; on a machine without a GPU run it with --smoke.")
    if args.smoke:
        print(banner("a 2-block model of width 128, 3 training steps, 2 frames; "
                     "one cell (x2: full, quality_band), 2 videos, 2 sampling steps",
                     "bf16 training, the x1 / x3 cells and the other modes"))
        torch.set_num_threads(1)
    cuda = torch.cuda.is_available() and not args.smoke and not args.cpu
    runtime = sampling.make_runtime(Path(tempfile.mkdtemp(prefix="ultragen_fidelity_")), cuda)  # sets ComfyUI's device
    t0 = time.time()
    trained = None
    if args.weights is None:
        trained = train.train(args.out, args.minutes, args.smoke, 2 if args.smoke else args.batch, args.lr,
                              2 if args.smoke else train.scenes.FRAMES, args.resume, args.framing,
                              args.low_res_minutes, args.model, args.world, args.state, args.schedule_minutes,
                              args.native_framing, args.compile, args.high_noise_share, args.captions,
                              pixels=args.pixels)
        weights = Path(trained["weights"])
        if args.train_only:
            trained["files"] = [str(p) for p in weight_parts.split(weights)]  # what a device run hands back
            print(json.dumps(trained, indent=2))
            return {"train": trained}
    else:
        weights = args.weights
    cfg = evaluate.smoke_config() if args.smoke else evaluate.EvalConfig(
        scales=tuple(int(s) for s in args.scales.split(",")), modes=tuple(args.modes.split(",")),
        samples=args.samples, gate_samples=args.gate_samples, steps=args.steps, seeds=args.seeds, shift=args.shift,
        guidance=args.cfg)
    t1 = time.time()
    results = evaluate.run_evaluation(weights, args.out, cfg, args.smoke, runtime, cpu=args.cpu)
    results["train"] = trained
    results["seconds"] = {"train": round(t1 - t0, 1), "evaluate": round(time.time() - t1, 1)}
    (args.out / "results.json").write_text(json.dumps(results, indent=2))
    print(outputs.gate_text(results) + "\n\n" + outputs.markdown_table(results))
    if trained is not None:
        weight_parts.split(weights)  # parts under 16 MiB, what a device run hands back
    print(f"\nwritten to {args.out}: " + ", ".join(sorted(p.name for p in args.out.iterdir() if p.is_file())))
    return results


def truth_only(args) -> dict:
    cfg = evaluate.EvalConfig(scales=tuple(int(s) for s in args.scales.split(",")), modes=tuple(args.modes.split(",")),
                              samples=args.samples, gate_samples=args.gate_samples, world=args.world or "plain",
                              pixels=args.pixels or 1)  # the truth and native passes through that latent space
    results = evaluate.evaluate_truth_only(cfg)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(results, indent=2))
    table = outputs.markdown_table(results)
    (args.out / "results.md").write_text(table + "\n")
    print(table)
    return results


if __name__ == "__main__":
    main()
