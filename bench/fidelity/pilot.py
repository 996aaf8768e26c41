"""A CPU pilot of a training change: a tiny bench model trained at half size with and without the change, the same
minutes each, then sampled and counted as the gate counts. It says whether a change helps a model learn objects
before device time is spent on it; its numbers are not the gate's (other model, other size).

    COMFYUI_PATH=/path/to/ComfyUI python bench/fidelity/pilot.py --arm captions --minutes 50 --out DIR
    COMFYUI_PATH=... python bench/fidelity/pilot.py --arm baseline --minutes 50 --out DIR2   # both at once, 1 core each
    COMFYUI_PATH=... python bench/fidelity/pilot.py --arm captions --minutes 50 \
        --resume DIR/ultragen_fidelity_wan.safetensors --out DIR3   # on from the first run's weights
    COMFYUI_PATH=... python bench/fidelity/pilot.py --weights W --videos 16 --cfg 3  # a device run's model, no training

Training: train.py's own loop (train.train, half_size: every step at 32 x 32 px, 16 x 16 tokens x 8 frames; model
"tiny", whole scenes, batch 8, lr 1e-3). Sampling: ``videos`` held-out scenes (the captioned arm is prompted with
their captions), euler over the bench's 20 steps at shift 3 with the model called directly (ComfyUI's sampler does
the same arithmetic; this pilot avoids sampling a half-size latent through ComfyUI's nodes), classifier-free
guidance against the empty caption; decoded, upsampled 2x (bilinear) to the native frame and measured with
metrics.per_video and metrics.failure_kinds. The truth row goes through the same half size and upsampling: the floor.
With ``--weights``, no training: any bench weights are sampled and counted the same way (``count_samples``), e.g. a
device run's model at the half size where progressive resolution spent most of its steps.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import bench_model  # noqa: E402
import captions  # noqa: E402
import diagnose  # noqa: E402
import latents  # noqa: E402
import scenes  # noqa: E402
import train  # noqa: E402

log = logging.getLogger("fidelity.pilot")

ARMS = {"baseline": {}, "captions": {"captioned": True}, "high_noise": {"high_noise_share": 0.25}}
PILOT_SEED = 600_000  # held-out scenes (training seeds start at train.TRAIN_SEED)
GUIDANCE = (1.0, captions.CFG)  # the captioned arm is sampled at each


def sigmas(steps: int = 20, shift: float = bench_model.SHIFT) -> torch.Tensor:
    """The sampling sigmas, 1 .. 0 (steps + 1 values): ComfyUI's simple scheduler under ModelSamplingSD3."""
    return torch.tensor([diagnose.step_sigma(k, steps, shift) for k in range(steps + 1)])


@torch.no_grad()
def sample(model, context: torch.Tensor | None, shape: tuple, guidance: float = 1.0, seed: int = 0,
           steps: int = 20) -> torch.Tensor:
    """Euler sampling of the rectified-flow model from noise: (B, 16, T, H, W) as the model sees latents. context:
    (B, tokens, 4096) or None (zeros); guidance > 1 mixes in the empty caption's prediction (CFG)."""
    # the model's device (a module's parameters'); the noise is drawn on the CPU: the same seed, the same noise
    device = next(model.parameters()).device if isinstance(model, torch.nn.Module) else torch.device("cpu")
    x = torch.randn(shape, generator=torch.Generator().manual_seed(seed)).to(device)
    empty = bench_model.fixed_context(shape[0], device)
    cond = empty if context is None else context.to(device)
    s = sigmas(steps)
    for i in range(steps):
        t = torch.full((shape[0],), float(s[i]) * 1000, device=device)
        v = model(x, t, cond)
        if guidance != 1.0:
            v_empty = model(x, t, empty)
            v = v_empty + guidance * (v - v_empty)
        x = x + float(s[i + 1] - s[i]) * v
    return x.cpu()


def to_native(videos: torch.Tensor) -> torch.Tensor:
    """(B, T, 3, 32, 32) half-size frames -> (B, T, 3, 64, 64), bilinear, clamped to [0, 1]."""
    b, t = videos.shape[:2]
    up = torch.nn.functional.interpolate(videos.flatten(0, 1), scale_factor=2, mode="bilinear", align_corners=False)
    return up.unflatten(0, (b, t)).clamp(0, 1)


def measure(videos: torch.Tensor) -> dict:
    """The gate's per-video metrics and the failures by kind of (B, T, 3, 64, 64) videos in [0, 1]."""
    import metrics
    return diagnose.counted(metrics.to_numpy(videos))


def run(arm: str, minutes: float, out: Path, videos: int = 32, batch: int = 4, lr: float = 1e-3,
        steps: int = 20, resume: Path | None = None) -> dict:
    """Train ``arm`` for ``minutes`` (or train on from an earlier pilot's weights, ``resume``), sample and count;
    the result is also written to out/pilot.json."""
    if arm not in ARMS:
        raise ValueError(f"arm must be one of {list(ARMS)}, got {arm!r}.")
    info = train.train(out, minutes, False, batch, lr, scenes.FRAMES, resume=resume, framing="evaluation",
                       model="tiny", compile_blocks=False, half_size=True, **ARMS[arm])
    result = {"arm": arm, "train": info, **count_samples(Path(info["weights"]), videos, steps)}
    (out / "pilot.json").write_text(json.dumps(result, indent=2))
    return result


def count_samples(weights: Path, videos: int = 32, steps: int = 20, guidance: tuple | None = None) -> dict:
    """Sample ``videos`` held-out scenes at half size with ``weights`` (any bench weights: a pilot's, or a device
    run's, which learnt its scenes at half size before native size; weights of the space of 2 x 2 pixels per latent
    pixel at their native size, the same latents; on CUDA where there is one) and count them as
    the gate counts: {"truth": ..., "samples": {"cfg G": ...}}. A captioned model is prompted with the scenes'
    captions, at each ``guidance`` (default: 1 and captions.CFG); an unconditional one at 1."""
    sd, meta = bench_model.load(weights)
    model = bench_model.build_model(json.loads(meta["config"]))
    model.load_state_dict(sd)
    model.eval().to("cuda" if torch.cuda.is_available() else "cpu")  # float32 on either
    held_out = scenes.sample_scenes(PILOT_SEED, videos, world=bench_model.world_of(meta))
    truth = torch.nn.functional.avg_pool2d(scenes.render(held_out, 1).flatten(0, 1), 2).unflatten(0, (videos, -1))
    fmt = bench_model.wan_latent_format()
    shape = (videos, latents.CHANNELS, scenes.FRAMES, scenes.NATIVE // 2, scenes.NATIVE // 2)
    result = {"truth": measure(to_native(truth)), "samples": {}}
    context = captions.encode(captions.of_scenes(held_out)) if bench_model.captioned_of(meta) else None
    # weights of 1 px per latent pixel: read at half size, then upsampled; of 2 x 2 px per latent pixel: at their
    # native size, the same 32 x 32 latent pixels, which their space decodes to 64 x 64 px the same way
    pixels = bench_model.pixels_of(meta)
    for g in (guidance or GUIDANCE) if context is not None else (1.0,):
        x = sample(model, context, shape, g, steps=steps)
        latent = fmt.process_out(x)
        frames = to_native(latents.decode(latent)) if pixels == 1 else latents.decode(latent, pixels)
        result["samples"][f"cfg {g:g}"] = row = measure(frames)  # (B, T, 3, 64, 64)
        log.info("%s cfg %g: %s", weights, g, json.dumps(row))
    return result


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--arm", choices=list(ARMS), help="baseline, or the change to train with")
    ap.add_argument("--weights", type=Path, default=None,
                    help="no training: sample these bench weights (e.g. a device run's) at half size and count them")
    ap.add_argument("--cfg", default=None, help="with --weights: guidance scales, comma-separated (default: 1,3)")
    ap.add_argument("--minutes", type=float, default=50.0, help="training budget, wall clock")
    ap.add_argument("--videos", type=int, default=32, help="held-out videos sampled and counted")
    ap.add_argument("--threads", type=int, default=1, help="CPU threads (two arms at once on 2 cores: 1 each)")
    ap.add_argument("--resume", type=Path, default=None,
                    help="train on from this earlier pilot's weights (its out/ultragen_fidelity_wan.safetensors)")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    if (args.arm is None) == (args.weights is None):
        ap.error("give one of --arm (train a pilot and count its samples, with --out) and --weights (count a model's "
                 "half-size samples)")
    if args.arm is not None and args.out is None:
        ap.error("--arm trains a pilot: give --out, the folder for its weights and pilot.json")
    if args.arm is not None and args.cfg is not None:
        ap.error(f"--cfg {args.cfg} applies to --weights; a pilot is counted at cfg 1 and {captions.CFG:g}")
    if args.videos < 1:
        ap.error(f"--videos is how many held-out videos to sample, at least 1, got {args.videos}")
    try:
        guidance = tuple(float(g) for g in args.cfg.split(",")) if args.cfg else None
    except ValueError:
        ap.error(f"--cfg takes guidance scales, comma-separated (e.g. 1,3), got {args.cfg!r}")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(args.threads)
    train.use_comfyui(True)
    import comfy.model_management
    comfy.model_management.in_training = True  # plain-torch RoPE on the CPU, for the sampling too
    if args.weights is not None:
        result = {"weights": str(args.weights), **count_samples(args.weights, args.videos, guidance=guidance)}
        if args.out is not None:
            args.out.mkdir(parents=True, exist_ok=True)
            (args.out / "pilot.json").write_text(json.dumps(result, indent=2))
        print(json.dumps({k: result[k] for k in ("truth", "samples")}, indent=2))
        return result
    result = run(args.arm, args.minutes, args.out, args.videos, resume=args.resume)
    print(json.dumps({k: result[k] for k in ("arm", "truth", "samples")}, indent=2))
    return result


if __name__ == "__main__":
    main()
