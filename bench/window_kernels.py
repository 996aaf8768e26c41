"""The local branch alone: batched SDPA on window copies vs. the fused Triton window kernel.

For each case (head layout, resolution, preset): the batched path (gather q / k / v into windows, one
cuDNN call per window shape, gather the output back) and the fused kernel with several tilings, in
one run, bf16, 81 frames; plus the fused kernel's largest difference from the batched path.

    python bench/window_kernels.py
    python bench/window_kernels.py --cases 14B:4K:fast --configs 128x64w8s3,128x128w8s2
    python bench/window_kernels.py --smoke     # tiny sizes on the CPU: checks that the script runs
"""
from __future__ import annotations

import argparse
import math
import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, os.environ.get("ULTRAGEN_BENCH_ROOT") or str(Path(__file__).resolve().parent.parent))
from ultragen_core.attention.dual_branch import windowed_attention  # noqa: E402
from ultragen_core.config import AttentionSettings, resolve_plan  # noqa: E402

from attention import HEAD_DIM, case_sizes, sdpa, timed  # noqa: E402
from experiments.fused_windows import available as fused_available  # noqa: E402
from experiments.fused_windows import windowed_attention_fused  # noqa: E402
from smoke import SHRUNK, banner, pick_device  # noqa: E402

CASES = "14B:4K:fast,14B:4K:default,14B:1080p:fast,5B:1080p:default,5B:4K:fast,5B:720p:fast,1.3B:720p:fast,1.3B:4K:fast"


def parse_config(text: str) -> dict:
    """"128x64w8s3" -> block_m 128, block_n 64, 8 warps, 3 stages."""
    blocks, rest = text.split("w")
    warps, stages = rest.split("s")
    m, n = blocks.split("x")
    return dict(block_m=int(m), block_n=int(n), num_warps=int(warps), num_stages=int(stages))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cases", default=CASES, help="layout:res:preset, comma separated")
    ap.add_argument("--configs", default="128x64w8s3,128x128w8s2,128x64w4s3,64x64w4s3")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--graph", action="store_true", help="time CUDA graph replays")
    ap.add_argument("--smoke", action="store_true", help="tiny sizes on the CPU: checks that the script runs (bench/smoke.py)")
    args = ap.parse_args()
    device = pick_device(args.smoke, "bench/window_kernels.py")
    cuda = device.type == "cuda"
    dtype = torch.bfloat16 if cuda else torch.float32
    if cuda:
        print(f"# {torch.cuda.get_device_name()} | torch {torch.__version__} | cuDNN {torch.backends.cudnn.version()}")
    else:
        print(banner(SHRUNK, "cuDNN (PyTorch's CPU attention instead)" + "; CUDA graphs" * args.graph
                     + "; the fused Triton kernel (its rows say why)"))
    why_not = fused_available(device, dtype, HEAD_DIM)
    print("| case | windows | path | ms (plain / shifted avg) | useful TFLOP/s | max diff vs batched |")
    print("|---|---|---|---|---|---|")
    for case in args.cases.split(","):
        name, res, preset = case.split(":")
        heads, native, grid = case_sizes(name, res, args.smoke)
        settings = AttentionSettings(preset=preset if preset == "fast" else "quality")
        plan = resolve_plan(settings, grid, native)
        g = torch.Generator(device=device).manual_seed(0)
        q, k, v = (torch.randn(1, math.prod(grid), heads * HEAD_DIM, device=device, dtype=dtype, generator=g)
                   for _ in range(3))
        layouts = sorted(set(plan.layouts), key=plan.layouts.index)
        flops = sum(4 * HEAD_DIM * heads * lay.key_tokens() for lay in layouts) / len(layouts)
        attention = sdpa("cudnn" if cuda else None, heads)
        batched = [windowed_attention((q, k, v), lay, attention)[0] for lay in layouts]
        t, _ = timed(lambda: [windowed_attention((q, k, v), lay, attention) for lay in layouts], args.reps, device,
                     args.graph)
        t /= len(layouts)
        desc = "; ".join(lay.describe() for lay in layouts)
        print(f"| {case} | {desc} | batched {'cuDNN' if cuda else 'CPU SDPA'} | {t * 1e3:.2f} | {flops / t / 1e12:.0f} | |",
              flush=True)
        if why_not:
            print(f"| {case} | | fused {args.configs} | unavailable: {why_not} | | |", flush=True)
        for text in args.configs.split(",") if not why_not else []:
            cfg = parse_config(text)
            try:
                outs = [windowed_attention_fused(q, k, v, lay, heads, **cfg) for lay in layouts]
                diff = max((o.float() - r.float()).abs().max().item() for o, r in zip(outs, batched))
                del outs
                t, _ = timed(lambda: [windowed_attention_fused(q, k, v, lay, heads, **cfg) for lay in layouts],
                             args.reps, device, args.graph)
            except Exception as e:  # noqa: BLE001  (a tiling that does not compile: report it)
                print(f"| {case} | | fused {text} | failed: {str(e)[:80]} | | |", flush=True)
                continue
            t /= len(layouts)
            print(f"| {case} | | fused {text} | {t * 1e3:.2f} | {flops / t / 1e12:.0f} | {diff:.4f} |", flush=True)
        del q, k, v, batched
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
