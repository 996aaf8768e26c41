"""Where along the noise schedule the bench model loses objects (CPU; with --weights, the committed model and the
default 16 videos, more than 12 minutes on 2 cores: stopped unfinished on 2026-12-05; --samples takes seconds).

    COMFYUI_PATH=/path/to/ComfyUI python bench/fidelity/diagnose.py [--weights FILE] [--videos 16]
    python bench/fidelity/diagnose.py --samples DIR/videos_x1.npz   # what the gate counted, by kind (no ComfyUI)
    COMFYUI_PATH=... python bench/fidelity/diagnose.py --from-truth --weights FILE [--videos 8] [--start-steps 5,10,15]
    COMFYUI_PATH=... python bench/fidelity/diagnose.py --temporal --weights FILE [--videos 8]

Prints (1) the spread of the data the model sees (after ComfyUI's Wan 2.1 normalisation) around each
channel's mean, the noise level s* at which signal and noise are equal per value, and the share of training
draws and of the 20 sampling steps (ModelSamplingSD3 shift, simple scheduler) below s*: where the content
is decided; (2) with --weights, the model's loss at fixed noise levels on object pixels and on the rest,
and the error of its clean-video estimate x0 = x_s - s v there. Used for issue 24's diagnosis
(docs/FIDELITY.md, "Why objects went missing"). With --samples (the videos an evaluation wrote, evaluate.py's
videos_x1.npz): per mode, what the gate's metrics counted against its videos, by kind (metrics.FAILURE_KINDS), per
100 frames or frame pairs: whether duplication is objects broken up or objects drawn twice, and whether continuity
breaks because objects flicker in and out, split or jump. With --from-truth and --weights: sampling that starts from
true videos noised to the sigma of step k of the 20 (ComfyUI's KSamplerAdvanced, start_at_step k, as the gate samples
otherwise: euler, simple, the bench's shift; native size, full attention), and the gate's metrics of the results:
the model keeps what the truth fixed above that noise level and draws the rest, so the first k at which the gate's
metrics hold says in which part of the schedule the objects are lost (k = 0 is the gate itself). CPU: about 8 s per
video and sampling step on 2 cores, e.g. 8 videos x (15 + 10 + 5) steps in about half an hour. With --temporal and
--weights: how much of one frame's object the model's clean-video estimate recovers at high noise levels, from all
frames, from that frame alone (the others noise only) and from the others alone (that frame noise only): whether it
couples frames where objects are decided (CPU: about 10 minutes for 8 videos on 2 cores).
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from dataclasses import replace
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import bench_model  # noqa: E402
import captions  # noqa: E402
import latents  # noqa: E402
import scenes  # noqa: E402
import train  # noqa: E402

log = logging.getLogger("fidelity.diagnose")

LEVELS = (0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 0.9)
START_STEPS = (5, 10, 15)  # of 20 at shift 3: sigma 0.90, 0.75, 0.50
FROM_TRUTH_SEED = 40_000  # scenes of the from-truth rows (held out from training, apart from the gate's)
TEMPORAL_LEVELS = (0.98, 0.95, 0.9, 0.8)
PROBE_FRAME = 3  # the frame whose object --temporal measures (one of the middle ones)


def schedule_share(spread: float, shift: float = bench_model.SHIFT, steps: int = 20) -> dict:
    """s* = spread / (1 + spread) (signal (1 - s) spread = noise s), and how much of training and sampling
    lies below it."""
    s_star = spread / (1 + spread)
    u_star = s_star / (shift - (shift - 1) * s_star)  # inverse of s = shift u / (1 + (shift - 1) u)
    t = torch.linspace(1, 0, steps + 1)[:-1]
    sigmas = shift * t / (1 + (shift - 1) * t)
    return {"spread": spread, "s_star": s_star, "training_share": u_star,
            "sampling_steps": int((sigmas < s_star).sum())}


def object_mask(sc: list, frames: torch.Tensor) -> torch.Tensor:
    """(B, 1, T, H, W) 1 where an object changes the pixel (its scene rendered without objects differs)."""
    return ((frames - without_objects(sc, frames.shape[1])).abs().amax(2) > 0.05).float()[:, None]


def without_objects(sc: list, frames: int) -> torch.Tensor:
    """The scenes rendered at native size without their objects (the detailed world's fine waves kept)."""
    return scenes.render([replace(c, objects=()) for c in sc], 1, frames)


def loss_by_level(model, x0: torch.Tensor, mask: torch.Tensor, seed: int = 0,
                  context: torch.Tensor | None = None) -> list[dict]:
    """Per noise level: v-loss and x0 error (used channels) on object pixels and elsewhere. context: the text
    context, (B, tokens, 4096) (default: the zeros the unconditional model knows)."""
    g = torch.Generator().manual_seed(seed)
    noise = torch.randn(x0.shape, generator=g)
    context = bench_model.fixed_context(x0.shape[0]) if context is None else context
    rows = []
    for s in LEVELS:
        xs = (1 - s) * x0 + s * noise
        with torch.no_grad():
            v = model(xs, torch.full((x0.shape[0],), s * 1000.0), context)
        err = ((v - (noise - x0))[:, :latents.USED] ** 2).mean(1, keepdim=True)  # (B, 1, T, H, W)
        x0_err = (((xs - s * v) - x0)[:, :latents.USED] ** 2).mean(1, keepdim=True)
        inside, outside = mask.sum().clamp(min=1), (1 - mask).sum().clamp(min=1)
        rows.append({"s": s, "loss_objects": float((err * mask).sum() / inside),
                     "loss_rest": float((err * (1 - mask)).sum() / outside),
                     "x0_error_objects": float((x0_err * mask).sum() / inside),
                     "x0_error_rest": float((x0_err * (1 - mask)).sum() / outside)})
    return rows


def failures(path: Path) -> dict:
    """Per mode in an evaluation's videos_x1.npz: how many videos, and each failure kind (metrics.FAILURE_KINDS)
    per 100 frames (frame kinds) or per 100 frame pairs of a colour (metrics.PAIR_KINDS)."""
    import numpy as np

    import metrics
    out = {}
    with np.load(path) as cells:
        for mode in cells.files:
            videos = cells[mode].astype(np.float32) / 255  # (N, T, H, W, 3)
            out[mode] = {"videos": len(videos), **per_100([metrics.failure_kinds(v, 1) for v in videos], 2)}
    return out


def per_100(counts: list[dict], digits: int = 1) -> dict:
    """metrics.failure_kinds of several videos, summed: each kind per 100 frames or colour frame pairs (None where
    there are none)."""
    import metrics
    total = {k: sum(c[k] for c in counts) for k in counts[0]} if counts else {}
    out = {}
    for kind in metrics.FAILURE_KINDS:
        over = total.get("colour_pairs" if kind in metrics.PAIR_KINDS else "frames", 0)
        out[kind] = round(100 * total[kind] / over, digits) if over else None
    return out


def counted(videos) -> dict:
    """The gate's per-video metrics (mean and standard error, rounded; None without an error bar, for strict JSON)
    and the failures by kind (per_100) of native-size videos, (N, T, H, W, 3) float in [0, 1]."""
    import evaluate
    import metrics
    per = [metrics.per_video(v, 1) for v in videos]
    row = {}
    for key in ("count_error", "duplication", "continuity"):
        mean, sem, n = evaluate.mean_sem([r[key] for r in per])
        row[key] = [round(mean, 3), round(sem, 3)] if n > 1 else None
    row["per_100"] = per_100([metrics.failure_kinds(v, 1) for v in videos])
    return row


def step_sigma(step: int, steps: int = 20, shift: float = bench_model.SHIFT) -> float:
    """The sigma at which step ``step`` of ``steps`` starts (simple scheduler, ModelSamplingSD3 ``shift``)."""
    t = 1 - step / steps
    return shift * t / (1 + (shift - 1) * t)


def from_truth(runtime, model_name: str, videos: int, start_steps, world: str = "plain", steps: int = 20,
               seed: int = 0, captioned: bool = False) -> list[dict]:
    """Per start step k: ``videos`` true native videos noised to step k's sigma and sampled to the end through
    ComfyUI (full attention), with the gate's per-video metrics and the failures by kind; a captioned model is
    prompted with the videos' own captions, at the evaluation's cfg."""
    import evaluate
    import grain
    import metrics
    truth = scenes.render(scenes.sample_scenes(FROM_TRUTH_SEED, videos, world=world), 1)
    work = Path(runtime.models_dir).parent / "from_truth"
    work.mkdir(parents=True, exist_ok=True)
    path = work / "truth.pt"
    torch.save(latents.encode(truth), path)
    cfg = evaluate.EvalConfig(steps=steps, world=world, captioned=captioned)
    caption = {"caption_seed": FROM_TRUTH_SEED, "first": 0, "count": videos, "frames": truth.shape[1]}
    rows = []
    for k in start_steps:
        out = metrics.to_numpy(grain.sample_from(runtime, model_name, path, "full", k, steps, cfg, seed,
                                                 caption if captioned else None))
        row = {"start_step": k, "sigma": round(step_sigma(k, steps, cfg.shift), 3), "videos": videos, **counted(out)}
        log.info("%s", json.dumps(row))  # each row as it comes: these runs take many minutes on a CPU
        rows.append(row)
    return rows


def recovered(x0_hat: torch.Tensor, truth: torch.Tensor, bare: torch.Tensor, mask: torch.Tensor,
              frame: int) -> torch.Tensor:
    """Per video, the share of frame ``frame``'s object contrast (truth against its scene without objects, on the
    object's pixels, used channels) that the clean-video estimate ``x0_hat`` has: 1 the truth, 0 no object.
    x0_hat, truth, bare: (B, C, T, H, W) as the model sees them; mask: (B, 1, T, H, W)."""
    d = (truth - bare)[:, :latents.USED, frame]
    m = mask[:, :, frame]
    got = ((x0_hat[:, :latents.USED, frame] - bare[:, :latents.USED, frame]) * d * m).flatten(1).sum(1)
    return got / (d * d * m).flatten(1).sum(1).clamp(min=1e-6)


def temporal(model, x0: torch.Tensor, bare: torch.Tensor, mask: torch.Tensor, levels=TEMPORAL_LEVELS,
             frame: int = PROBE_FRAME, seed: int = 0, context: torch.Tensor | None = None) -> list[dict]:
    """Per noise level s: recovered() of one frame's object in the estimate x0 = x_s - s v from three inputs. ``all``:
    every frame noised to s; ``frame_alone``: the other frames noise only (s e, no signal); ``others_alone``: that
    frame noise only. Mean and standard error over the videos. x0, bare: (B, 16, T, H, W) as the model sees them
    (the videos, and their scenes without objects); mask: (B, 1, T, H, W) the objects' pixels; context: as
    loss_by_level's (a captioned model: the videos' captions)."""
    g = torch.Generator().manual_seed(seed)
    noise = torch.randn(x0.shape, generator=g)
    context = bench_model.fixed_context(x0.shape[0]) if context is None else context
    others = [f for f in range(x0.shape[2]) if f != frame]
    rows = []
    for s in levels:
        xs = (1 - s) * x0 + s * noise
        alone, blind = xs.clone(), xs.clone()
        alone[:, :, others] = s * noise[:, :, others]
        blind[:, :, frame] = s * noise[:, :, frame]
        row = {"s": s}
        for name, inputs in (("all", xs), ("frame_alone", alone), ("others_alone", blind)):
            with torch.no_grad():
                v = model(inputs, torch.full((x0.shape[0],), s * 1000.0), context)
            share = recovered(inputs - s * v, x0, bare, mask, frame)
            row[name] = [round(float(share.mean()), 3), round(float(share.std() / len(share) ** 0.5), 3)]
        log.info("%s", json.dumps(row))  # each row as it comes: these runs take many minutes on a CPU
        rows.append(row)
    return rows


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--weights", type=Path, default=None, help="bench weights (train.py) to measure")
    ap.add_argument("--videos", type=int, default=16)
    ap.add_argument("--samples", type=Path, default=None,
                    help="an evaluation's videos_x1.npz: the gate's failures by kind (no ComfyUI needed)")
    ap.add_argument("--from-truth", action="store_true",
                    help="with --weights: sample from true videos noised to the sigma of each --start-steps step")
    ap.add_argument("--start-steps", default=",".join(map(str, START_STEPS)),
                    help="steps of the 20 to start from with --from-truth (0: pure noise, the gate itself)")
    ap.add_argument("--temporal", action="store_true",
                    help="with --weights: how much of one frame's object the model recovers at high noise from all "
                         "frames, from that frame alone and from the others alone")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")  # ComfyUI's own messages: warnings only
    log.setLevel(logging.INFO)
    if args.samples is not None:
        if args.samples.suffix != ".npz" or not args.samples.is_file():
            sys.exit(f"--samples takes the videos_x1.npz an evaluation wrote (bench/fidelity/run.py --out DIR), "
                     f"got {str(args.samples)!r}.")
        out = {"failures per 100 frames / colour pairs": failures(args.samples)}
        print(json.dumps(out, indent=2))
        return out
    if args.from_truth:
        if args.weights is None:
            sys.exit("--from-truth samples with a model: give --weights (bench weights written by train.py).")
        try:
            start = [int(k) for k in args.start_steps.split(",")]
        except ValueError:
            start = [-1]
        if any(not 0 <= k < 20 for k in start):
            sys.exit(f"--start-steps takes steps of the 20 sampling steps, 0-19, comma-separated; got "
                     f"{args.start_steps!r}.")
        import tempfile

        import sampling
        sampling.first_space_only(args.weights, "diagnose.py --from-truth")
        torch.set_num_threads(2)
        runtime = sampling.make_runtime(Path(tempfile.mkdtemp(prefix="ultragen_from_truth_")), cuda=False)
        rows = from_truth(runtime, sampling.install_weights(runtime, args.weights), args.videos, start,
                          sampling.weights_world(args.weights), captioned=sampling.weights_captioned(args.weights))
        out = {"from_truth": rows}
        print(json.dumps(out, indent=2))
        return out
    if args.temporal and args.weights is None:
        sys.exit("--temporal measures a model: give --weights (bench weights written by train.py).")
    train.use_comfyui(True)
    if args.weights is not None:
        import sampling
        sampling.first_space_only(args.weights, "diagnose.py")
    sd, meta = bench_model.load(args.weights) if args.weights is not None else (None, {})
    seed = FROM_TRUTH_SEED if args.temporal else 777
    # whole scenes, as the evaluation renders them
    sc = scenes.sample_scenes(seed, args.videos, world=bench_model.world_of(meta))
    frames = scenes.render(sc, 1)
    fmt = bench_model.wan_latent_format()
    x0 = fmt.process_in(latents.encode(frames))  # (B, 16, T, H, W) what the model sees
    used = x0[:, :latents.USED]
    spread = float((used - used.mean((0, 2, 3, 4), keepdim=True)).std())
    mask = object_mask(sc, frames)
    context = captions.encode(captions.of_scenes(sc)) if bench_model.captioned_of(meta) else None  # (B, 3, 4096)
    out = {"schedule": schedule_share(spread), "object_share": float(mask.mean())}
    if args.weights is not None:
        import comfy.model_management
        model = bench_model.build_model(json.loads(meta["config"]))
        model.load_state_dict(sd)
        comfy.model_management.in_training = True  # plain-torch RoPE on the CPU
        torch.set_num_threads(2)
        if args.temporal:
            bare = fmt.process_in(latents.encode(without_objects(sc, frames.shape[1])))
            out = {"temporal": temporal(model.eval(), x0, bare, mask, context=context)}
            print(json.dumps(out, indent=2))
            return out
        out["levels"] = loss_by_level(model.eval(), x0, mask, context=context)
    print(json.dumps(out, indent=2))
    return out


if __name__ == "__main__":
    main()
