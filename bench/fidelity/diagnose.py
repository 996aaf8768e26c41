"""Where along the noise schedule the bench model loses objects (CPU; with --weights, run 50's model and the
default 16 videos, more than 12 minutes on 2 cores: stopped unfinished on 2026-12-05; --samples takes seconds).

    COMFYUI_PATH=/path/to/ComfyUI python bench/fidelity/diagnose.py [--weights FILE] [--videos 16]
    python bench/fidelity/diagnose.py --samples DIR/videos_x1.npz   # what the gate counted, by kind (no ComfyUI)

Prints (1) the spread of the data the model sees (after ComfyUI's Wan 2.1 normalisation) around each
channel's mean, the noise level s* at which signal and noise are equal per value, and the share of training
draws and of the 20 sampling steps (ModelSamplingSD3 shift, simple scheduler) below s*: where the content
is decided; (2) with --weights, the model's loss at fixed noise levels on object pixels and on the rest,
and the error of its clean-video estimate x0 = x_s - s v there. Used for issue 24's diagnosis
(docs/FIDELITY.md, "Why objects went missing"). With --samples (the videos an evaluation wrote, evaluate.py's
videos_x1.npz): per mode, what the gate's metrics counted against its videos, by kind (metrics.FAILURE_KINDS), per
100 frames or frame pairs: whether duplication is objects broken up or objects drawn twice, and whether continuity
breaks because objects flicker in and out, split or jump.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import latents  # noqa: E402
import scenes  # noqa: E402
import train  # noqa: E402

LEVELS = (0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 0.9)


def schedule_share(spread: float, shift: float = train.SHIFT, steps: int = 20) -> dict:
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
    bare = scenes.render([scenes.Scene(s.horizon, s.sky, s.ground, s.waves, ()) for s in sc], 1, frames.shape[1])
    return ((frames - bare).abs().amax(2) > 0.05).float()[:, None]


def loss_by_level(model, x0: torch.Tensor, mask: torch.Tensor, seed: int = 0) -> list[dict]:
    """Per noise level: v-loss and x0 error (used channels) on object pixels and elsewhere."""
    g = torch.Generator().manual_seed(seed)
    noise = torch.randn(x0.shape, generator=g)
    context = train.fixed_context(x0.shape[0])
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
            counts = [metrics.failure_kinds(v, 1) for v in videos]
            total = {k: sum(c[k] for c in counts) for k in counts[0]} if counts else {}
            row = {"videos": len(videos)}
            for kind in metrics.FAILURE_KINDS:
                over = total.get("colour_pairs" if kind in metrics.PAIR_KINDS else "frames", 0)
                row[kind] = round(100 * total[kind] / over, 2) if over else None
            out[mode] = row
    return out


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--weights", type=Path, default=None, help="bench weights (train.py) to measure")
    ap.add_argument("--videos", type=int, default=16)
    ap.add_argument("--samples", type=Path, default=None,
                    help="an evaluation's videos_x1.npz: the gate's failures by kind (no ComfyUI needed)")
    args = ap.parse_args(argv)
    if args.samples is not None:
        if args.samples.suffix != ".npz" or not args.samples.is_file():
            sys.exit(f"--samples takes the videos_x1.npz an evaluation wrote (bench/fidelity/run.py --out DIR), "
                     f"got {str(args.samples)!r}.")
        out = {"failures per 100 frames / colour pairs": failures(args.samples)}
        print(json.dumps(out, indent=2))
        return out
    train.use_comfyui(True)
    sd, meta = train.load(args.weights) if args.weights is not None else (None, {})
    sc = scenes.sample_scenes(777, args.videos, world=train.world_of(meta))  # whole scenes, as the evaluation renders
    frames = scenes.render(sc, 1)
    fmt = train.wan_latent_format()
    x0 = fmt.process_in(latents.encode(frames))  # (B, 16, T, H, W) what the model sees
    used = x0[:, :latents.USED]
    spread = float((used - used.mean((0, 2, 3, 4), keepdim=True)).std())
    mask = object_mask(sc, frames)
    out = {"schedule": schedule_share(spread), "object_share": float(mask.mean())}
    if args.weights is not None:
        import comfy.model_management
        if meta.get("latent_space") != latents.SPACE:
            sys.exit(f"{args.weights} was trained on another latent space ({meta.get('latent_space')!r}).")
        model = train.build_model(json.loads(meta["config"]))
        model.load_state_dict(sd)
        comfy.model_management.in_training = True  # plain-torch RoPE on the CPU
        out["levels"] = loss_by_level(model.eval(), x0, mask)
    print(json.dumps(out, indent=2))
    return out


if __name__ == "__main__":
    main()
