"""Where the time goes: CUDA kernel time of the dual-branch op or of one patched Wan block, by kernel.

    python bench/kernel_profile.py --op 14B:4K:fast --op 5B:4K:default
    COMFYUI_PATH=... python bench/kernel_profile.py --block 14B:4K:fast
    COMFYUI_PATH=... python bench/kernel_profile.py --op 14B:4K:fast --block 14B:4K:fast --smoke   # tiny, on the CPU

``--op LAYOUT:RES:PRESET`` profiles the op as bench/attention.py runs it (a plain and a shifted
block, the block input pooled once); ``--block`` profiles one call of a one-block WanModel
(bench/dit.py's model) patched as UltraGen Apply patches it (bench/dit.py's path). Prints, per case, the
kernels that take the most GPU time and the PyTorch ops that launched them (with --smoke: the ops by CPU
time).
"""
from __future__ import annotations

import argparse
import math
import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, os.environ.get("ULTRAGEN_BENCH_ROOT") or str(Path(__file__).resolve().parent.parent))
from ultragen_core.config import resolve_plan  # noqa: E402

from attention import HEAD_DIM, case_sizes, preset, sdpa, ultragen_op  # noqa: E402
from comfyui_env import use_comfyui  # noqa: E402
from smoke import SHRUNK, banner, pick_device  # noqa: E402


def _self_us(event, device) -> float:
    """Self time of a profiler event on the device (GPU) or on the CPU, in microseconds."""
    if device.type == "cpu":
        return event.self_cpu_time_total
    return getattr(event, "self_device_time_total", None) or getattr(event, "self_cuda_time_total", 0)


def kernel_table(fn, label: str, rows: int, device) -> None:
    """Two tables: GPU time by kernel, and by the PyTorch op (with input shapes) that launched it.
    On the CPU only the second, by self CPU time."""
    from torch.profiler import ProfilerActivity, profile
    cuda = device.type == "cuda"
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    fn()
    sync()
    activities = [ProfilerActivity.CPU, ProfilerActivity.CUDA] if cuda else [ProfilerActivity.CPU]
    with profile(activities=activities, record_shapes=True) as prof:
        fn()
        sync()
    is_kernel = lambda e: "CUDA" in str(getattr(e, "device_type", ""))
    spent = lambda e: _self_us(e, device)
    kernels = sorted((e for e in prof.key_averages() if is_kernel(e) and spent(e) > 0), key=spent, reverse=True)
    ops = sorted((e for e in prof.key_averages(group_by_input_shape=True) if not is_kernel(e) and spent(e) > 0),
                 key=spent, reverse=True)
    total = sum(spent(e) for e in (kernels if cuda else ops))
    print(f"\n### {label}: {total / 1e3:.1f} ms of {'GPU' if cuda else 'CPU'} time\n")
    if cuda:
        print("| kernel | calls | ms | share |\n|---|---|---|---|")
        for e in kernels[:rows]:
            name = e.key.replace("|", "/").replace("void at::native::", "").replace("at::native::", "")
            name = name if len(name) <= 150 else name[:147] + "..."
            print(f"| {name} | {e.count} | {spent(e) / 1e3:.2f} | {spent(e) / total:.0%} |")
        print()
    print(f"| op | input shapes | calls | {'GPU' if cuda else 'CPU'} ms | share |\n|---|---|---|---|---|")
    for e in ops[:rows]:
        shapes = str(e.input_shapes)[:110].replace("|", "/")
        print(f"| {e.key} | {shapes} | {e.count} | {spent(e) / 1e3:.2f} | {spent(e) / total:.0%} |")


def op_case(spec: str, rows: int, device, smoke: bool) -> None:
    layout_name, res, preset_name = spec.split(":")
    heads, native, grid = case_sizes(layout_name, res, smoke)
    plan = resolve_plan(preset(preset_name)[1](native), grid, native)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    q, k, v = (torch.randn(1, math.prod(grid), heads * HEAD_DIM, device=device, dtype=dtype) for _ in range(3))
    attention = sdpa("cudnn" if device.type == "cuda" else None, heads)
    kernel_table(ultragen_op(q, k, v, grid, plan, attention, heads), f"op {spec} ({plan.describe()}), plain + shifted block",
                 rows, device)


def block_case(spec: str, rows: int, device, smoke: bool) -> None:
    from dit import build, case, comfy_model, loaded, step, unload
    from dit_rows import smoke_windows
    from ultragen_core import api
    name, res, preset_name = spec.split(":")
    cfg, lat, grid, native = case(name, res, 81, smoke)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    settings = preset(preset_name)[1](native)
    if smoke:
        settings = smoke_windows(settings, grid, native)
    patched = api.apply(comfy_model(build(cfg, 1, device, dtype), dtype), settings)  # UltraGen Apply's path
    plan = api.plan_for(patched, grid)
    model, options = loaded(patched)
    x = torch.randn(1, cfg["in_dim"], *lat, device=device, dtype=dtype)
    t = torch.full((1,), 500.0, device=device)
    ctx = torch.randn(1, 512, 4096, device=device, dtype=dtype)

    def run():
        step(model, x, t, ctx, options)

    kernel_table(run, f"one {name} block at {res} ({plan.describe()})", rows, device)
    unload()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--op", action="append", default=[], help="LAYOUT:RES:PRESET, e.g. 14B:4K:fast")
    ap.add_argument("--block", action="append", default=[], help="MODEL:RES:PRESET, e.g. 14B:4K:fast (needs COMFYUI_PATH)")
    ap.add_argument("--rows", type=int, default=14)
    ap.add_argument("--smoke", action="store_true", help="tiny sizes on the CPU: checks that the script runs (bench/smoke.py)")
    args = ap.parse_args()
    device = pick_device(args.smoke, "bench/kernel_profile.py")
    if args.block:
        use_comfyui("bench/kernel_profile.py --block", cpu=args.smoke)
    if args.smoke:
        print(banner(f"{SHRUNK}; --block: bench/dit.py's smoke model",
                     "cuDNN (PyTorch's CPU attention instead), the kernel tables (ops by CPU time instead)"))
    else:
        print(f"# {torch.cuda.get_device_name()} | torch {torch.__version__}")
    for spec in args.op:
        op_case(spec, args.rows, device, args.smoke)
        torch.cuda.empty_cache()
    for spec in args.block:
        block_case(spec, args.rows, device, args.smoke)
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
