"""The fidelity table's upscaler chains, and a learned upscaler trained on the bench world.

Users who do not sample natively at 2x-4x upscale the native pass: bicubic, Lanczos with sharpening, or a learned
upscaler (Load Upscale Model + Upscale Image (using Model), an ESRGAN-type network). The learned row here is
Real-ESRGAN's compact network (spandrel's ``Compact``, which ComfyUI's Load Upscale Model reads), trained on
this bench's own world: pairs of the same scene rendered at 1x and at 2x / 3x (scenes.py), whole scenes and
zoomed crops with objects of many sizes, from seeds the evaluation never uses: the strongest upscaler the bench
can train here (2,500 steps on a CPU: it keeps outlines on the native pixel grid, which the orientation metric
shows; docs/FIDELITY.md).

    python bench/fidelity/upscaler.py train --scale 2 --steps 2500 [--world detailed]   # CPU: 26 minutes
    python bench/fidelity/upscaler.py train --scale 2 --world detailed --pixels 2  # for models of that latent space
    python bench/fidelity/upscaler.py check --samples 64      # PSNR on the evaluation's truth, each upscaler
    python bench/fidelity/upscaler.py picture --out docs/fidelity/upscalers_of_truth.png

``upscale(frames, scale, method)`` is what the table's rows run on a native pass (evaluate.py) and on the true
native video (``*_of_truth`` rows: what each upscaler reaches from a perfect native pass). A model of the latent
space of 2 x 2 pixels per latent pixel (latents.py) decodes softer native frames than the true render: its learned
row is a network trained on the native frames through that space (``pixels`` 2, files named ``_p2``), so that the
upscaler is as strong for that model as the first space's is for its models.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from functools import lru_cache
from pathlib import Path

import torch
import torch.nn.functional as F

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import latents  # noqa: E402
import metrics  # noqa: E402
import scenes  # noqa: E402

METHODS = ("bicubic", "lanczos_sharpen", "learned_sr")
WEIGHTS_DIR = HERE / "upscalers"
FEATURES, CONVS = 48, 12  # Real-ESRGAN's general compact model has 64 x 32; this world is simpler
SEED = 1 << 41  # training scenes: seeds from here on (train.py's start at 2^40, the evaluation's below 10^6)
NOISE = 0.03  # half of each batch gets Gaussian noise of std up to this on its input (samples are not clean)


def file_name(scale: int, world: str = "plain", pixels: int = 1) -> str:
    space = "" if pixels == 1 else f"p{pixels}_"
    return f"ultragen_bench_sr_{space}x{scale}.safetensors" if world == "plain" else \
        f"ultragen_bench_sr_{world}_{space}x{scale}.safetensors"


def build(scale: int) -> torch.nn.Module:
    from spandrel.architectures.Compact import Compact
    return Compact(num_in_ch=3, num_out_ch=3, num_feat=FEATURES, num_conv=CONVS, upscale=scale, act_type="prelu")


def pairs(step: int, batch: int, scale: int, world: str = "plain", device="cpu",
          pixels: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """One training batch: (B, 3, 64, 64) at 1x (through the latent space of ``pixels``: what a perfect native
    latent decodes to) and (B, 3, 64 s, 64 s) at s x, the same views of the same scenes."""
    seed = SEED + 1_000_003 * step
    params = scenes.sample_scenes(seed, batch, 1, scenes.TRAIN_RADIUS, world)
    zoom, origin = scenes.sample_views(seed, batch)
    low = scenes.render(params, 1, 1, device, zoom=zoom, origin=origin)
    low = (latents.through_space(low, pixels) if pixels > 1 else low)[:, 0]
    high = scenes.render(params, scale, 1, device, zoom=zoom, origin=origin)[:, 0]
    g = torch.Generator().manual_seed(seed)
    std = NOISE * torch.rand(batch, 1, 1, 1, generator=g) * (torch.rand(batch, 1, 1, 1, generator=g) < 0.5)
    noise = std * torch.randn(low.shape, generator=g)
    return (low + noise.to(low.device)).clamp(0, 1), high


def train(scale: int, steps: int, batch: int = 16, lr: float = 1e-3, log_every: int = 200,
          world: str = "plain", resume: Path | None = None, pixels: int = 1) -> tuple[dict, dict]:
    """(state_dict, facts): the compact network trained for ``steps`` with L1, AdamW, 100 warm-up steps, a cosine
    schedule and gradients clipped at 1, from scratch or on from ``resume`` (a file this script wrote; its steps
    and seconds are counted on). On CUDA where there is one (fp32)."""
    torch.manual_seed(scale)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    net, done, before = build(scale), 0, {}
    if resume is not None:
        from safetensors import safe_open
        from safetensors.torch import load_file
        with safe_open(str(resume), "pt") as f:
            before = json.loads((f.metadata() or {}).get("ultragen_bench_upscaler", "{}"))
        wanted = (scale, world, pixels)
        if (before.get("scale"), before.get("world", "plain"), before.get("pixels", 1)) != wanted:
            raise ValueError(f"{resume} is not a {scale}x upscaler of the {world} world for the latent space of "
                             f"{pixels} px per latent pixel: {before or 'no metadata'}")
        net.load_state_dict(load_file(str(resume)))
        done = before["steps"]
    net.to(device)
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda i: min(1.0, (i + 1) / 100) * 0.5 * (1 + math.cos(math.pi * i / steps)))
    t0, losses = time.time(), []
    for step in range(steps):
        low, high = pairs(done + step, batch, scale, world, device, pixels)
        loss = F.l1_loss(net(low), high)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        opt.step()
        sched.step()
        losses.append(loss.detach())  # read back at each log line only (no GPU sync per step)
        if (step + 1) % log_every == 0:
            losses[-log_every:] = [float(v) for v in losses[-log_every:]]
            print(f"x{scale} step {step + 1}  L1 {sum(losses[-log_every:]) / log_every:.4f}  {time.time() - t0:.0f} s",
                  flush=True)
    losses = [float(v) for v in losses]
    facts = {"scale": scale, "world": world, "pixels": pixels, "steps": done + steps, "batch": batch, "lr": lr, "features": FEATURES,
             "convs": CONVS, "seconds": round(before.get("seconds", 0) + time.time() - t0, 1),
             "l1_last_200": round(sum(losses[-200:]) / len(losses[-200:]), 5), "device": device}
    return {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}, facts


def save(state: dict, facts: dict, out: Path) -> Path:
    from safetensors.torch import save_file
    out.mkdir(parents=True, exist_ok=True)
    path = out / file_name(facts["scale"], facts["world"], facts.get("pixels", 1))
    save_file(state, str(path), metadata={"ultragen_bench_upscaler": json.dumps(facts)})
    return path


@lru_cache(maxsize=None)
def load(scale: int, world: str = "plain", weights_dir: Path = WEIGHTS_DIR, pixels: int = 1) -> torch.nn.Module:
    """The committed network for ``scale``, ``world`` and the latent space of ``pixels``, read as ComfyUI's Load
    Upscale Model reads it (spandrel)."""
    from spandrel import ModelLoader
    path = weights_dir / file_name(scale, world, pixels)
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: train it with `python bench/fidelity/upscaler.py train "
                                f"--scale {scale} --world {world} --pixels {pixels} --out {weights_dir}`")
    model = ModelLoader().load_from_file(str(path))
    if model.scale != scale:
        raise ValueError(f"{path} upscales {model.scale}x, not {scale}x")
    return model.model.eval()


def upscale(frames: torch.Tensor, scale: int, method: str, world: str = "plain", pixels: int = 1) -> torch.Tensor:
    """(N, T, 3, H, W) in [0, 1] -> (N, T, 3, scale H, scale W) in [0, 1] by one of METHODS (learned_sr: the
    network trained on ``world``, for native frames of the latent space of ``pixels``)."""
    if method == "lanczos_sharpen":
        return metrics.lanczos_sharpen(frames, scale)
    n, t = frames.shape[:2]
    flat = frames.flatten(0, 1).float().cpu()
    if method == "bicubic":
        out = F.interpolate(flat, scale_factor=scale, mode="bicubic", align_corners=False)
    elif method == "learned_sr":
        net = load(scale, world, pixels=pixels)
        with torch.inference_mode():
            out = torch.cat([net(chunk) for chunk in flat.split(64)])
    else:
        raise ValueError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    return out.clamp(0, 1).unflatten(0, (n, t))


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(10 * torch.log10(1 / F.mse_loss(a, b)))


def check(samples: int, scales=(2, 3), world: str = "plain", pixels: int = 1) -> dict:
    """PSNR (dB) of each method on the evaluation's own true videos (never trained on), upscaled from 1x (through
    the latent space of ``pixels``)."""
    out = {}
    for scale in scales:
        params = scenes.sample_scenes(20_000 + scale, samples, world=world)  # evaluate.py's x{scale} ground truth
        low, high = scenes.render(params, 1), scenes.render(params, scale)
        low = latents.through_space(low, pixels) if pixels > 1 else low
        out[f"x{scale}"] = {m: round(psnr(upscale(low, scale, m, world, pixels), high), 2) for m in METHODS}
    return out


def picture(out: Path, scale: int = 3, seed: int = 20_003) -> Path:
    """A PNG: for one scene in each world, the native frame, the truth at ``scale`` and each upscaler of the true
    native frame (columns), whole (first rows) and a quarter of the ground magnified (last rows)."""
    import cv2
    import numpy as np
    size = scenes.NATIVE * scale
    whole, zoomed, labels = [], [], ["native (nearest)", f"truth {scale}x", *(f"{m} {scale}x" for m in METHODS)]
    for world in scenes.WORLDS:
        params = scenes.sample_scenes(seed, 1, 1, world=world)
        low = scenes.render(params, 1, 1)
        frames = [F.interpolate(low[:, 0], scale_factor=scale, mode="nearest")[0],
                  scenes.render(params, scale, 1)[0, 0], *(upscale(low, scale, m, world)[0, 0] for m in METHODS)]
        whole.append(torch.cat(frames, 2))
        crop = [f[:, size - size // 4:, :size // 4] for f in frames]  # the ground's bottom-left corner
        zoomed.append(torch.cat([F.interpolate(c[None], scale_factor=4, mode="nearest")[0] for c in crop], 2))
    img = torch.cat(whole + zoomed, 1).permute(1, 2, 0).clamp(0, 1).numpy()
    img = np.ascontiguousarray((img[:, :, ::-1] * 255).round().astype(np.uint8))
    for i, label in enumerate(labels):
        cv2.putText(img, label, (i * size + 4, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1, cv2.LINE_AA)
    for j, world in enumerate(scenes.WORLDS * 2):
        cv2.putText(img, world, (4, j * size + size - 6), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1, cv2.LINE_AA)
    out.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(out), img)
    return out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train", help="train the learned upscaler for one scale")
    t.add_argument("--scale", type=int, choices=(2, 3), required=True)
    t.add_argument("--steps", type=int, default=2500)
    t.add_argument("--batch", type=int, default=16)
    t.add_argument("--lr", type=float, default=1e-3, help="peak learning rate (cosine over --steps)")
    t.add_argument("--resume", type=Path, default=None, help="train on from this file (written by this script)")
    t.add_argument("--out", type=Path, default=WEIGHTS_DIR)
    c = sub.add_parser("check", help="PSNR of every upscaler on the evaluation's true videos")
    c.add_argument("--samples", type=int, default=64)
    for p in (t, c):
        p.add_argument("--world", choices=scenes.WORLDS, default="plain", help="the bench world (scenes.py)")
        p.add_argument("--pixels", type=int, choices=sorted(latents.SPACES.values()), default=1,
                       help="the models' latent space, pixels per latent pixel: the native frames it upscales come "
                            "through it (latents.py)")
    g = sub.add_parser("picture", help="a PNG of one scene per world: native, truth and each upscaler at 3x")
    g.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    if args.command == "picture":
        print(picture(args.out))
    elif args.command == "train":
        state, facts = train(args.scale, args.steps, args.batch, args.lr, world=args.world, resume=args.resume,
                             pixels=args.pixels)
        print(save(state, facts, args.out), json.dumps(facts))
    else:
        print(json.dumps(check(args.samples, world=args.world, pixels=args.pixels), indent=1))


if __name__ == "__main__":
    main()
