"""Where the time goes: CUDA kernel time of the dual-branch op or of one patched Wan block, by kernel.

    python bench/kernel_profile.py --op 14B:4K:fast --op 5B:4K:default
    COMFYUI_PATH=... python bench/kernel_profile.py --block 14B:4K:fast

``--op LAYOUT:RES:PRESET`` profiles the op as bench/attention.py runs it (a plain and a shifted
block, pooling included); ``--block`` profiles one call of a one-block WanModel (bench/dit.py's
model) with the pack's patch objects. Prints, per case, the kernels that take the most GPU time.
"""
from __future__ import annotations

import argparse
import math
import os
import sys
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, os.environ.get("ULTRAGEN_BENCH_ROOT") or str(HERE.parent))
sys.path.insert(0, str(HERE))

from attention import GRIDS, HEAD_DIM, LAYOUTS, sdpa  # noqa: E402
from ultragen_core.attention import dual_branch_attention, pool_tokens  # noqa: E402
from ultragen_core.config import AttentionSettings, resolve_plan  # noqa: E402


def settings_for(preset: str) -> AttentionSettings:
    return AttentionSettings(preset="fast") if preset == "fast" else AttentionSettings()


def _self_device_us(event) -> float:
    return getattr(event, "self_device_time_total", None) or getattr(event, "self_cuda_time_total", 0)


def kernel_table(fn, label: str, rows: int) -> None:
    """Two tables: GPU time by kernel, and by the PyTorch op (with input shapes) that launched it."""
    from torch.profiler import ProfilerActivity, profile
    fn()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA], record_shapes=True) as prof:
        fn()
        torch.cuda.synchronize()
    is_kernel = lambda e: "CUDA" in str(getattr(e, "device_type", ""))
    kernels = sorted((e for e in prof.key_averages() if is_kernel(e) and _self_device_us(e) > 0),
                     key=_self_device_us, reverse=True)
    total = sum(_self_device_us(e) for e in kernels)
    print(f"\n### {label}: {total / 1e3:.1f} ms of GPU time\n")
    print("| kernel | calls | ms | share |\n|---|---|---|---|")
    for e in kernels[:rows]:
        name = e.key.replace("|", "/").replace("void at::native::", "").replace("at::native::", "")
        name = name if len(name) <= 150 else name[:147] + "..."
        print(f"| {name} | {e.count} | {_self_device_us(e) / 1e3:.2f} | {_self_device_us(e) / total:.0%} |")
    ops = sorted((e for e in prof.key_averages(group_by_input_shape=True) if not is_kernel(e) and _self_device_us(e) > 0),
                 key=_self_device_us, reverse=True)
    print("\n| op | input shapes | calls | GPU ms | share |\n|---|---|---|---|---|")
    for e in ops[:rows]:
        shapes = str(e.input_shapes)[:110].replace("|", "/")
        print(f"| {e.key} | {shapes} | {e.count} | {_self_device_us(e) / 1e3:.2f} | {_self_device_us(e) / total:.0%} |")


def op_case(spec: str, rows: int) -> None:
    layout_name, res, preset = spec.split(":")
    heads, native = LAYOUTS[layout_name]
    grid = GRIDS["wan22_5b" if layout_name == "5B" else "wan21"][res]
    plan = resolve_plan(settings_for(preset), grid, native)
    n = math.prod(grid)
    q, k, v = (torch.randn(1, n, heads * HEAD_DIM, device="cuda", dtype=torch.bfloat16) for _ in range(3))
    attention = sdpa("cudnn", heads)

    def run():
        glob = [pool_tokens(t, grid, plan.factor) for t in (q, k, v)] if plan.factor else None
        for parity in (0, 1):
            dual_branch_attention((q, k, v), plan.layout(parity), attention, glob, plan.factor, plan.fusion,
                                  plan.strength)

    kernel_table(run, f"op {spec} ({plan.describe()}), plain + shifted block", rows)


def block_case(spec: str, rows: int) -> None:
    sys.path.insert(0, os.environ.get("COMFYUI_PATH", ""))
    from dit import MODELS, RES, build, patch
    name, res, preset = spec.split(":")
    cfg = MODELS[name]
    h, w = RES[res]
    lat = (21, math.ceil(h / cfg["scale"]), math.ceil(w / cfg["scale"]))
    grid = (21, math.ceil(lat[1] / 2), math.ceil(lat[2] / 2))
    model = build(cfg, 1, torch.device("cuda"))
    options, plan = patch(model, grid, settings_for(preset))
    x = torch.randn(1, cfg["in_dim"], *lat, device="cuda", dtype=torch.bfloat16)
    t = torch.full((1,), 500.0, device="cuda")
    ctx = torch.randn(1, 512, 4096, device="cuda", dtype=torch.bfloat16)

    def run():
        with torch.inference_mode():
            model(x, t, ctx, transformer_options=options)

    kernel_table(run, f"one {name} block at {res} ({plan.describe()})", rows)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--op", action="append", default=[], help="LAYOUT:RES:PRESET, e.g. 14B:4K:fast")
    ap.add_argument("--block", action="append", default=[], help="MODEL:RES:PRESET, e.g. 14B:4K:fast")
    ap.add_argument("--rows", type=int, default=14)
    args = ap.parse_args()
    print(f"# {torch.cuda.get_device_name()} | torch {torch.__version__}")
    for spec in args.op:
        op_case(spec, args.rows)
        torch.cuda.empty_cache()
    for spec in args.block:
        block_case(spec, args.rows)
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
