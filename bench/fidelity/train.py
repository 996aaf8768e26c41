"""Train the fidelity bench's own small Wan model (ComfyUI's WanModel class) on procedural scenes.

    COMFYUI_PATH=/path/to/ComfyUI python bench/fidelity/train.py --minutes 4.5 --out DIR
    COMFYUI_PATH=... python bench/fidelity/train.py --smoke --out DIR   # a tiny model, a few CPU steps

Data: bench/fidelity/scenes.py at native size (64 x 64 px, 8 frames), fresh scenes every step, rendered on
the training device; latents: bench/fidelity/latents.py (16 x 8 x 32 x 32), normalised by ComfyUI's own Wan
2.1 latent format exactly as ComfyUI does before calling the model, so the weights work in ComfyUI's
sampling path unchanged. Objective: Wan's rectified flow as ComfyUI samples it (model_sampling CONST):
x_s = (1 - s) x0 + s e, the model takes timestep 1000 s and predicts e - x0. s is drawn as ComfyUI's
ModelSamplingSD3 node with ``SHIFT`` spaces sampling steps: s = shift u / (1 + (shift - 1) u), u uniform.
Conditioning: one fixed text context, all zeros (bench/fidelity/fidelity_nodes.py feeds the same in
ComfyUI), so the model is unconditional. bf16 mixed precision through accelerate on CUDA; an EMA of the
weights is what gets saved, as bf16 safetensors with the key layout ComfyUI's UNETLoader detects as Wan 2.1.
Training runs for a wall-clock budget (--minutes); the learning rate follows a cosine over that budget.
"""
from __future__ import annotations

import argparse
import copy
import json
import logging
import math
import os
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import latents  # noqa: E402
import scenes  # noqa: E402

log = logging.getLogger("fidelity.train")

SHIFT = 3.0  # ModelSamplingSD3 shift the model is trained and sampled with
TEXT_DIM = 4096  # Wan's T5 width (UNETLoader's detection assumes it)
CONTEXT_TOKENS = 1
MODEL = dict(dim=256, num_heads=2, num_layers=6, ffn_dim=768)  # 2 heads of 128, like every Wan; 7.2M parameters
# (1.1M of them the 4096-wide text embedding Wan's detection needs): 13.7 MiB in bf16
SMOKE_MODEL = dict(dim=128, num_heads=1, num_layers=2, ffn_dim=256)
WEIGHTS = HERE / "weights" / "ultragen_fidelity_wan.safetensors"


def fixed_context(batch: int = 1, device="cpu", dtype=torch.float32) -> torch.Tensor:
    """The one text context the model is trained and sampled with: (B, 1, 4096) zeros."""
    return torch.zeros(batch, CONTEXT_TOKENS, TEXT_DIM, device=device, dtype=dtype)


def build_model(cfg: dict, device="cpu"):
    """ComfyUI's WanModel (T2V, patch 1x2x2, 16 channels in and out) with fresh weights, float32."""
    import comfy.ldm.wan.model as wan
    import comfy.ops
    try:  # ComfyUI 0.33 with dynamic VRAM leaves layer weights unallocated: allocate them here
        import comfy.memory_management as mm
    except ImportError:
        mm = None
    dynamic = getattr(mm, "aimdo_enabled", False)
    if dynamic:
        mm.aimdo_enabled = False
    try:
        model = wan.WanModel(model_type="t2v", patch_size=(1, 2, 2), in_dim=latents.CHANNELS,
                             out_dim=latents.CHANNELS, text_dim=TEXT_DIM, freq_dim=256, eps=1e-6,
                             operations=comfy.ops.disable_weight_init, device=device, dtype=torch.float32, **cfg)
    finally:
        if dynamic:
            mm.aimdo_enabled = True
    g = torch.Generator(device="cpu").manual_seed(0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name and name.endswith("weight"):
                t = torch.ones(p.shape)
            elif name.startswith("head.head"):
                t = torch.zeros(p.shape)  # starts by predicting 0
            elif name.endswith("bias"):
                t = torch.zeros(p.shape)
            elif "modulation" in name:
                t = torch.randn(p.shape, generator=g) / cfg["dim"] ** 0.5
            else:
                t = torch.randn(p.shape, generator=g) * 0.02
            p.copy_(t)
    return model


def wan_latent_format():
    import comfy.latent_formats
    return comfy.latent_formats.Wan21()


def sample_sigmas(batch: int, device, shift: float = SHIFT) -> torch.Tensor:
    u = torch.rand(batch, device=device)
    return shift * u / (1 + (shift - 1) * u)


def batch_latents(step: int, batch: int, frames: int, fmt, device) -> torch.Tensor:
    """A fresh batch of scenes (seeded by the step), as the model sees them: process_in(encode(frames))."""
    clips = scenes.render(scenes.sample_scenes(1_000_003 * step + 17, batch, frames), 1, frames, device)
    return fmt.process_in(latents.encode(clips))


def train(out: Path, minutes: float, smoke: bool, batch: int, lr: float, frames: int) -> dict:
    from accelerate import Accelerator
    import comfy.model_management
    # ComfyUI 0.33's RoPE kernel (comfy_kitchen) has no backward; this flag selects its plain-torch RoPE
    was_training = getattr(comfy.model_management, "in_training", False)
    comfy.model_management.in_training = True
    try:
        return _train(out, minutes, smoke, batch, lr, frames)
    finally:
        comfy.model_management.in_training = was_training
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def _train(out: Path, minutes: float, smoke: bool, batch: int, lr: float, frames: int) -> dict:
    from accelerate import Accelerator
    cuda = torch.cuda.is_available() and not smoke
    accelerator = Accelerator(mixed_precision="bf16" if cuda else "no", cpu=not cuda)
    device = accelerator.device
    cfg = SMOKE_MODEL if smoke else MODEL
    model = build_model(cfg)
    ema = copy.deepcopy(model).requires_grad_(False)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.99), weight_decay=0.01)
    model, opt = accelerator.prepare(model, opt)
    ema.to(device)
    fmt = wan_latent_format()
    fmt.latents_mean, fmt.latents_std = fmt.latents_mean.to(device), fmt.latents_std.to(device)
    context = fixed_context(batch, device)
    budget, start, step, losses = minutes * 60, time.time(), 0, []
    max_steps = 3 if smoke else None
    while True:
        elapsed = time.time() - start
        if (max_steps is not None and step >= max_steps) or (max_steps is None and elapsed >= budget):
            break
        frac = min(1.0, elapsed / budget) if max_steps is None else step / max_steps
        warm = min(1.0, (step + 1) / 200)
        for group in opt.param_groups:
            group["lr"] = lr * warm * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * frac)))
        x0 = batch_latents(step, batch, frames, fmt, device)  # (B, 16, T, 32, 32)
        noise = torch.randn_like(x0)
        s = sample_sigmas(batch, device)
        xs = (1 - s.view(-1, 1, 1, 1, 1)) * x0 + s.view(-1, 1, 1, 1, 1) * noise
        with accelerator.autocast():
            pred = model(xs, s * 1000, context)
        loss = torch.nn.functional.mse_loss(pred.float(), noise - x0)
        accelerator.backward(loss)
        accelerator.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        decay = min(0.999, (1 + step) / (10 + step))
        with torch.no_grad():
            for e, p in zip(ema.parameters(), accelerator.unwrap_model(model).parameters()):
                e.lerp_(p.detach(), 1 - decay)
        losses.append(loss.detach())  # read back every 100 steps only (no GPU sync per step)
        if step % 100 == 0:
            losses[-100:] = [float(v) for v in losses[-100:]]
            log.info("step %d  loss %.4f  %.0f s", step, losses[-1], time.time() - start)
        step += 1
    seconds = time.time() - start
    losses = [float(v) for v in losses]
    out.mkdir(parents=True, exist_ok=True)
    path = out / WEIGHTS.name
    save(ema, path, cfg, smoke, step, seconds)
    tail = losses[-50:] or [float("nan")]
    info = {"weights": str(path), "model": cfg, "steps": step, "seconds": round(seconds, 1), "batch": batch,
            "frames": frames, "lr": lr, "shift": SHIFT, "loss_first": losses[0] if losses else None,
            "loss_last50": sum(tail) / len(tail), "device": str(device), "smoke": smoke,
            "mixed_precision": accelerator.mixed_precision}
    (out / "train.json").write_text(json.dumps(info, indent=2))
    return info


def save(model, path: Path, cfg: dict, smoke: bool, steps: int, seconds: float) -> None:
    """bf16 safetensors of a WanModel's state dict (UNETLoader detects Wan 2.1 T2V from the keys); bf16 keeps
    the file below the 16 MiB a device run can hand back."""
    from safetensors.torch import save_file
    sd = {k: v.detach().to(torch.bfloat16).cpu().contiguous() for k, v in model.state_dict().items()}
    meta = {"ultragen_fidelity": "smoke (CPU, a few steps: not a trained model)" if smoke else "trained",
            "config": json.dumps(cfg), "steps": str(steps), "seconds": f"{seconds:.0f}", "shift": str(SHIFT),
            "latent_space": "bench/fidelity/latents.py", "context": "zeros (1, 1, 4096)"}
    save_file(sd, str(path), metadata=meta)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, required=True, help="folder for the weights and train.json")
    ap.add_argument("--minutes", type=float, default=4.5, help="wall-clock training budget")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=4e-4)
    ap.add_argument("--frames", type=int, default=scenes.FRAMES)
    ap.add_argument("--smoke", action="store_true", help="tiny model, 3 steps on the CPU: checks the script runs")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.smoke:
        torch.set_num_threads(1)
        args.batch, args.frames = 2, 2
    use_comfyui(args.smoke)
    info = train(args.out, args.minutes, args.smoke, args.batch, args.lr, args.frames)
    print(json.dumps(info, indent=2))
    return info


def use_comfyui(cpu: bool) -> None:
    """ComfyUI's classes from $COMFYUI_PATH (bench/comfyui_env.py)."""
    sys.path.insert(0, str(HERE.parent))
    from comfyui_env import use_comfyui as use
    use("bench/fidelity", cpu or not torch.cuda.is_available())


if __name__ == "__main__":
    main()
