"""CFG split over several GPUs with ComfyUI's own multi-GPU engine (ComfyUI 0.33+: ``comfy.multigpu``, the
"MultiGPU CFG Split" node), with UltraGen Apply on the model: one sampling step with CFG, on one GPU and
split over all GPUs, and how close the two results are.

    COMFYUI_PATH=... python bench/multigpu.py --models 14B --res 1080p,4K --presets default,fast

The model is the real architecture at its real width with ``--blocks`` blocks of random weights (the
ratio does not depend on the depth; seconds are scaled to the real depth), loaded through ComfyUI's own
loader (the engine rebuilds each device's copy from the loader), patched by UltraGen Apply, then deep-cloned
per extra GPU by the engine, as the node does. bf16 weights.
"""
from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))
from dit import MODELS, RES, SMOKE_WIDTH, build  # noqa: E402
from smoke import SCALE, banner, pick_device  # noqa: E402

from ultragen_core.models import wan_family  # noqa: E402


def comfyui():
    root = os.environ.get("COMFYUI_PATH")
    if not root:
        sys.exit("bench/multigpu.py needs ComfyUI: set COMFYUI_PATH to a ComfyUI tree (0.33 or later).")
    sys.path.insert(0, root)
    return root


def random_checkpoint(path: Path, cfg: dict, blocks: int) -> None:
    """A random Wan DiT of ``cfg`` (bench/dit.py's models) with ``blocks`` blocks, as bf16 safetensors."""
    from safetensors.torch import save_file
    model = build(cfg, blocks, torch.device("cpu"), torch.bfloat16)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))


def sample_once(model, latent, cond, uncond):
    import comfy.sample
    noise = torch.randn(latent.shape, generator=torch.Generator().manual_seed(1))
    return comfy.sample.sample(model, noise, 1, 5.0, "euler", "simple", cond, uncond, latent, seed=1,
                               disable_pbar=True)


def timed(fn, device) -> tuple[float, torch.Tensor]:
    fn()  # warm-up: loads the model(s), builds the plans
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    out = fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t0, out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="14B")
    ap.add_argument("--res", default="1080p,4K")
    ap.add_argument("--presets", default="default,fast")
    ap.add_argument("--blocks", type=int, default=2)
    ap.add_argument("--frames", type=int, default=81)
    ap.add_argument("--smoke", action="store_true", help="tiny sizes on the CPU: checks that the script runs")
    args = ap.parse_args()
    device = pick_device(args.smoke, "bench/multigpu.py")
    comfyui()
    import comfy.cli_args
    comfy.cli_args.args.cpu = args.smoke
    import comfy.model_management as mm
    import comfy.sd
    from ultragen_core.adapters import apply_attention
    from ultragen_core.config import AttentionSettings
    try:
        import comfy.multigpu as multigpu
    except ImportError:
        multigpu = None
    gpus = torch.cuda.device_count() if device.type == "cuda" else 1
    if args.smoke:
        print(banner(f"width 128, token grids / {'x'.join(map(str, SCALE))}",
                     "more than one device (the CPU is one)"))
    else:
        print(f"# {torch.cuda.get_device_name(0)} x{gpus} | torch {torch.__version__}")
    print("| model | res | grid | preset | 1 GPU s / step (scaled) | "
          f"{gpus} GPUs s / step | speedup | max rel. diff | note |")
    print("|---|---|---|---|---|---|---|---|---|")
    folder = Path(tempfile.mkdtemp(prefix="ultragen-multigpu-"))
    for name in args.models.split(","):
        cfg = MODELS[name]
        family = wan_family(SimpleNamespace(dim=cfg["dim"], out_dim=cfg["out_dim"]))
        path = folder / f"wan_{name}_{args.blocks}.safetensors"
        random_checkpoint(path, dict(cfg, **SMOKE_WIDTH) if args.smoke else cfg, args.blocks)
        base = comfy.sd.load_diffusion_model(str(path), model_options={"dtype": torch.bfloat16})
        for res in args.res.split(","):
            h, w = RES[res]
            lat = (family.latent_frames(args.frames), h // family.vae_spatial, w // family.vae_spatial)
            if args.smoke:
                lat = tuple(max(2, math.ceil(n / s)) for n, s in zip(lat, SCALE))
            grid = (lat[0], lat[1] // 2, lat[2] // 2)
            gen = torch.Generator().manual_seed(0)
            latent = torch.randn(1, cfg["in_dim"], *lat, generator=gen)
            cond = [[torch.randn(1, 512, 4096, generator=gen), {}]]
            uncond = [[torch.randn(1, 512, 4096, generator=gen), {}]]
            for preset in args.presets.split(","):
                settings = AttentionSettings(preset="fast" if preset == "fast" else "quality")
                patched = apply_attention(base, settings)
                one, out1 = timed(lambda: sample_once(patched, latent, cond, uncond), device)
                note = ""
                if multigpu is None:
                    split, out2, note = float("nan"), out1, "this ComfyUI has no multi-GPU engine"
                else:
                    both = multigpu.create_multigpu_deepclones(patched, max_gpus=gpus)
                    split, out2 = timed(lambda: sample_once(both, latent, cond, uncond), device)
                    if gpus == 1:
                        note = "one device: nothing to split"
                diff = float((out2.float() - out1.float()).abs().max() / out1.float().abs().max())
                scale = family.blocks / args.blocks
                print(f"| {name} | {res} | {'x'.join(map(str, grid))} | {preset} | {one * scale:.2f} | "
                      f"{split * scale:.2f} | {one / split:.2f}x | {diff:.1e} | {note} |", flush=True)
                mm.unload_all_models()
                mm.soft_empty_cache()


if __name__ == "__main__":
    main()
