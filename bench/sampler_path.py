"""One model call of a patched Wan 14B two ways: bench/dit.py's direct call of the diffusion model, and one
step of ComfyUI's sampler (comfy.sample, euler, cfg 1) on the same weights loaded by ComfyUI's loader and
patched by UltraGen Apply's function. The two should take the same time but for the sampler's per-call
work; with ``--rows`` the top GPU kernels of each are printed (which attention kernel ran, for one).

    COMFYUI_PATH=... python bench/sampler_path.py --res 4K --preset quality --blocks 2 --rows 10   # runs 29, 30
    COMFYUI_PATH=... python bench/sampler_path.py --smoke

Random bf16 weights of the real width, ``--blocks`` blocks; seconds are for those blocks, not scaled.
"""
from __future__ import annotations

import argparse
import logging
import math
import sys
import tempfile
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))
from comfyui_env import use_comfyui  # noqa: E402
from dit import sync  # noqa: E402
from smoke import SCALE, banner, pick_device  # noqa: E402


def timed(fn, label, rows, device) -> float:
    """Seconds of the second of two calls; with ``rows``, a profile of a third."""
    fn()
    sync(device)
    t0 = time.perf_counter()
    fn()
    sync(device)
    secs = time.perf_counter() - t0
    print(f"## {label}: {secs:.3f} s", flush=True)
    if rows and device.type == "cuda":
        acts = [torch.profiler.ProfilerActivity.CPU, torch.profiler.ProfilerActivity.CUDA]
        with torch.profiler.profile(activities=acts) as prof:
            fn()
            sync(device)
        print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=rows, max_name_column_width=70),
              flush=True)
    return secs


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--res", default="4K")
    ap.add_argument("--preset", default="quality", choices=("quality", "fast"))
    ap.add_argument("--blocks", type=int, default=2)
    ap.add_argument("--frames", type=int, default=81)
    ap.add_argument("--rows", type=int, default=0, help="print the top N GPU kernels of each way (0: none)")
    ap.add_argument("--smoke", action="store_true", help="tiny sizes on the CPU: checks that the script runs")
    args = ap.parse_args()
    device = pick_device(args.smoke, "bench/sampler_path.py")
    use_comfyui("bench/sampler_path.py", cpu=args.smoke)
    from dit import MODELS, RES, SMOKE_WIDTH, build, loaded, step, unload
    from multigpu import sample_once
    from safetensors.torch import save_file
    import comfy.sd
    from ultragen_core.api import AttentionSettings, apply, plan_for
    logging.basicConfig(level=logging.INFO, format="%(message)s")  # the pack's line for the sampler's run
    cfg = dict(MODELS["14B"], **SMOKE_WIDTH) if args.smoke else MODELS["14B"]
    dtype = torch.float32 if args.smoke else torch.bfloat16
    h, w = RES[args.res]
    lat = ((args.frames - 1) // 4 + 1, h // 8, w // 8)
    if args.smoke:  # shrunk, and at least twice the smoke model's native grid, so that the patch changes the call
        lat = tuple(max(2 * n, math.ceil(s / f)) for n, s, f in zip((1, 60, 104), lat, SCALE))
        print(banner(f"width 128, latent {'x'.join(map(str, lat))}", "the kernel profile"))
    else:
        print(f"# {torch.cuda.get_device_name()} | torch {torch.__version__} | {args.blocks} blocks, {args.res}, "
              f"{args.preset}")
    grid = (lat[0], lat[1] // 2, lat[2] // 2)
    settings = AttentionSettings(preset=args.preset)
    model = build(cfg, args.blocks, torch.device("cpu"), dtype)
    path = Path(tempfile.mkdtemp(prefix="ultragen-sampler-path-")) / "wan.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    del model
    base = comfy.sd.load_diffusion_model(str(path), model_options={"dtype": dtype})
    patched = apply(base, settings)  # UltraGen Apply's function
    print(plan_for(patched, grid).describe())
    gen = torch.Generator().manual_seed(0)
    latent = torch.randn(1, cfg["in_dim"], *lat, generator=gen)
    ctx = torch.randn(1, 512, 4096, generator=gen)
    x, c = latent.to(device, dtype), ctx.to(device, dtype)
    t = torch.full((1,), 1000.0, device=device)  # the sampler's one euler step starts at sigma 1
    dm, options = loaded(patched)
    direct = timed(lambda: step(dm, x, t, c, options), "direct call (bench/dit.py)", args.rows, device)
    dm = options = None
    unload()
    cond = [[ctx, {}]]
    sampled = timed(lambda: sample_once(patched, latent, cond, cond, 1.0), "ComfyUI's sampler, 1 step, cfg 1",
                    args.rows, device)
    print("\n| model | res | preset | blocks | direct call s | sampler step s | sampler / direct |\n|---|---|---|---|---|---|---|")
    print(f"| 14B | {args.res} | {args.preset} | {args.blocks} | {direct:.3f} | {sampled:.3f} | {sampled / direct:.3f} |")


if __name__ == "__main__":
    main()
