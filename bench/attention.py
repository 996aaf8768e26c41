"""Attention benchmark: full attention (cuDNN / Flash / memory-efficient SDPA) vs. the dual-branch op
(default and fast settings) vs. FlexAttention with the equivalent block mask, per Wan head layout and
resolution, 81 frames, bf16. All rows of one table are measured in one run.

    python bench/attention.py                       # everything (about 6 minutes on an H100)
    python bench/attention.py --layouts 14B --res 4K
    python bench/attention.py --smoke               # tiny sizes on the CPU: checks that the script runs
    python bench/attention.py --full cudnn --graph --no-flex --reps 3 --presets default,fast,f:1/3x1/2x1/2,f:1/2x1/2x1/2  # run 14
    python bench/attention.py --windows cudnn,fused --layouts 14B,5B --res 1080p,4K      # run 13

UltraGen rows run the op as the Wan patch does: the block input pooled once for the global branch.

Full attention at large sizes is timed with fewer heads and scaled linearly (heads are independent
in attention); such rows say "scaled from N heads".
"""
from __future__ import annotations

import argparse
import math
import os
import sys
import time
from fractions import Fraction
from pathlib import Path

import torch
import torch.nn.functional as F

# ULTRAGEN_BENCH_ROOT: time the ultragen_core of another checkout (before / after comparisons)
sys.path.insert(0, os.environ.get("ULTRAGEN_BENCH_ROOT") or str(Path(__file__).resolve().parent.parent))
from ultragen_core.attention import dual_branch_attention, pool_tokens  # noqa: E402
from ultragen_core.attention.dual_branch import fuse  # noqa: E402
from ultragen_core.config import AttentionSettings, resolve_plan  # noqa: E402

from experiments.fused_windows import available as fused_available  # noqa: E402
from experiments.fused_windows import windowed_attention_fused  # noqa: E402
from smoke import HEADS as SMOKE_HEADS, SHRUNK, banner, pick_device, shrink  # noqa: E402

HEAD_DIM = 128
LAYOUTS = {"1.3B": (12, (21, 30, 52)), "5B": (24, (31, 22, 40)), "14B": (40, (21, 45, 80))}
GRIDS = {  # (layout family, resolution) -> token grid at 81 frames
    "wan21": {"720p": (21, 45, 80), "1080p": (21, 68, 120), "4K": (21, 135, 240)},
    "wan22_5b": {"720p": (21, 22, 40), "1080p": (21, 34, 60), "4K": (21, 68, 120)},
}
BACKENDS = {"cudnn": "CUDNN_ATTENTION", "flash": "FLASH_ATTENTION", "efficient": "EFFICIENT_ATTENTION"}


def sdpa(backend: str | None, heads: int):
    """(B, L, H*D) attention through one SDPA backend (None = PyTorch's choice)."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    def attention(q, k, v):
        B, L, C = q.shape
        split = lambda t: t.view(B, -1, heads, C // heads).transpose(1, 2)  # (B, H, L, D)
        if backend is None:
            out = F.scaled_dot_product_attention(split(q), split(k), split(v))
        else:
            with sdpa_kernel(getattr(SDPBackend, BACKENDS[backend])):
                out = F.scaled_dot_product_attention(split(q), split(k), split(v))
        return out.transpose(1, 2).reshape(B, L, C)
    return attention


def timed(fn, reps: int, device, graph: bool = False) -> tuple[float, float]:
    """Median seconds of ``reps`` runs after one warm-up, and peak memory (GiB) above the start.

    graph: capture ``fn`` in a CUDA graph and time its replays (GPU time without Python's launch
    overhead; peak memory is then not measured)."""
    fn()
    if graph and device.type == "cuda":
        torch.cuda.synchronize()
        captured = torch.cuda.CUDAGraph()
        with torch.cuda.graph(captured):
            fn()
        fn = captured.replay
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    times = []
    for _ in range(reps):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            torch.cuda.synchronize()
            times.append(start.elapsed_time(end) / 1e3)
        else:
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
    peak = (torch.cuda.max_memory_allocated() - base) / 2**30 if device.type == "cuda" and not graph else float("nan")
    return sorted(times)[len(times) // 2], peak


def useful_flops(plan, heads: int) -> float:
    """4 * D * H * (keys each query attends to, summed), local (averaged over a plain and a shifted
    block) + global."""
    keys = sum(layout.key_tokens() for layout in plan.layouts) / 2
    flops = 4 * HEAD_DIM * heads * keys
    if plan.factor:
        flops += 4 * HEAD_DIM * heads * math.prod(plan.pooled) ** 2
    return flops


def flex_time(q, k, v, plan, heads, reps, device):
    """FlexAttention with a block mask that allows exactly the dual-branch op's local windows."""
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention
    layout = plan.layouts[0]
    T, H, W = plan.grid
    starts = []
    for axis in layout.axes:
        owner, _ = axis.owner_and_offset()
        starts.append(torch.tensor([axis.window_starts[o] for o in owner], device=device))
    wt, wh, ww = layout.window  # the plain layout: equal windows
    st, sh, sw = starts

    def mask_mod(b, h, qi, ki):
        qt, qh, qw = qi // (H * W), (qi // W) % H, qi % W
        kt, kh, kw = ki // (H * W), (ki // W) % H, ki % W
        return ((kt >= st[qt]) & (kt < st[qt] + wt) & (kh >= sh[qh]) & (kh < sh[qh] + wh)
                & (kw >= sw[qw]) & (kw < sw[qw] + ww))

    n = T * H * W
    mask = create_block_mask(mask_mod, None, None, n, n, device=device, _compile=True)
    flex = torch.compile(flex_attention)
    split = lambda t: t.view(1, n, heads, HEAD_DIM).transpose(1, 2)
    return timed(lambda: flex(split(q), split(k), split(v), block_mask=mask), reps, device)


def case_sizes(layout_name: str, res: str, smoke: bool):
    """(heads, native grid, token grid at 81 frames) of a head layout at a resolution; smoke: 2 heads and
    both grids shrunk (bench/smoke.py), so windows, shifts and pooling still happen."""
    heads, native = LAYOUTS[layout_name]
    grid = GRIDS["wan22_5b" if layout_name == "5B" else "wan21"][res]
    return (SMOKE_HEADS, shrink(native), shrink(grid)) if smoke else (heads, native, grid)


def ultragen_op(q, k, v, grid, plan, attention, heads, fused=False):
    """The dual-branch op as the Wan patch runs it, for a plain and a shifted block; returns a callable.

    q, k, v: (1, T*H*W, heads * HEAD_DIM). The block input is pooled once for the global branch and the
    pooled tokens go through the block's own q / k / v projections (linear layers, not timed here, as the
    full attention rows do not time theirs either); q stands in for the block input. fused: the local
    branch through the experimental Triton kernel (experiments/fused_windows.py).
    """
    def run():
        glob = [pool_tokens(q, grid, plan.factor)] * 3 if plan.factor else None
        outs = []
        for parity in (0, 1):  # a plain and a shifted block
            layout = plan.layout(parity)
            if not fused:
                outs.append(dual_branch_attention((q, k, v), layout, attention, glob,
                                                  plan.factor, plan.fusion, plan.strength))
                continue
            local = windowed_attention_fused(q, k, v, layout, heads)
            outs.append(local if glob is None else
                        fuse(local, attention(*glob), grid, plan.factor, plan.fusion, plan.strength))
        return outs
    return run


def bench_case(layout_name, res, device, dtype, args):
    """Rows (method, seconds, useful TFLOP/s, peak GiB, note) of one layout and resolution.

    args: the parsed options, with .full / .windows as lists of what runs on this device."""
    heads, native, grid = case_sizes(layout_name, res, args.smoke)
    n = math.prod(grid)
    rows = []
    g = torch.Generator(device=device).manual_seed(0)
    # full attention: fewer heads where a full call would take too long, scaled linearly
    fh = min(heads, args.full_heads_cap) if n > 200_000 else heads
    q, k, v = (torch.randn(1, n, fh * HEAD_DIM, device=device, dtype=dtype, generator=g) for _ in range(3))
    full_flops = 4 * HEAD_DIM * heads * n * n
    best = None
    for backend in args.full:
        try:
            t, mem = timed(lambda: sdpa(backend, fh)(q, k, v), args.reps, device)
        except RuntimeError as e:  # a backend that refuses the shape
            rows.append((f"full SDPA {backend}", float("nan"), float("nan"), float("nan"), f"unavailable: {str(e)[:60]}"))
            continue
        t *= heads / fh
        note = f"scaled from {fh} heads" if fh != heads else ""
        rows.append((f"full SDPA {backend or 'default'}", t, full_flops / t / 1e12, mem * heads / fh, note))
        best = t if best is None else min(best, t)
    del q, k, v
    q, k, v = (torch.randn(1, n, heads * HEAD_DIM, device=device, dtype=dtype, generator=g) for _ in range(3))
    for name, settings in [preset(text) for text in args.presets.split(",")]:
        plan = resolve_plan(settings(native), grid, native)
        for path, graph in [(p, m) for p in args.windows for m in ((False, True) if args.graph else (False,))]:
            reason = fused_available(device, dtype, HEAD_DIM) if path == "fused" else None
            if reason:
                rows.append((f"{name} (fused)", float("nan"), float("nan"), float("nan"), f"unavailable: {reason}"))
                continue
            attention = sdpa("cudnn" if path == "fused" else (None if path == "default" else path), heads)
            t, mem = timed(ultragen_op(q, k, v, grid, plan, attention, heads, path == "fused"), args.reps, device, graph)
            t /= 2  # per block, averaged over plain and shifted blocks
            flops = useful_flops(plan, heads)
            rows.append((f"{name} ({path}{', graph' if graph else ''})", t, flops / t / 1e12, mem / 2,
                         f"{plan.describe()}; FLOP ratio {full_flops / flops:.1f}x"))
    if not args.no_flex:
        plan = resolve_plan(AttentionSettings(global_branch=False, fusion="local_only", shift="none"), grid, native)
        try:
            t, mem = flex_time(q, k, v, plan, heads, args.reps, device)
            rows.append(("FlexAttention block mask (default windows, local only)", t,
                         useful_flops(plan, heads) / t / 1e12, mem, ""))
        except Exception as e:  # noqa: BLE001  (report, don't hide)
            rows.append(("FlexAttention block mask", float("nan"), float("nan"), float("nan"), f"failed: {str(e)[:80]}"))
    return grid, heads, best, rows


def preset(name: str):
    """(row label, native grid -> AttentionSettings) for a --presets entry."""
    if name == "default":
        return "UltraGen default", lambda native: AttentionSettings()
    if name == "fast":
        return "UltraGen fast", lambda native: AttentionSettings(preset="fast")
    if name.startswith("f:"):  # fractions of the native grid, e.g. f:1/3x1/2x1/2
        fractions = [Fraction(x) for x in name[2:].split("x")]
        return (f"UltraGen windows {name[2:]} of native",
                lambda native: AttentionSettings(window=tuple(max(1, math.ceil(n * f)) for n, f in zip(native, fractions)),
                                                 shift="none"))
    window = tuple(int(x) for x in name.split("x"))
    return f"UltraGen windows {name}", lambda native: AttentionSettings(window=window, shift="none")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--layouts", default="1.3B,5B,14B")
    ap.add_argument("--res", default="720p,1080p,4K")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--full-heads-cap", type=int, default=4, help="heads timed for full attention above 200k tokens")
    ap.add_argument("--no-flex", action="store_true")
    ap.add_argument("--windows", default="cudnn",
                    help="how UltraGen rows run their windows: cudnn / flash (batched SDPA calls on window "
                         "copies), fused (the Triton kernel reading the token layout)")
    ap.add_argument("--full", default=",".join(BACKENDS), help="full-attention SDPA backends to time")
    ap.add_argument("--graph", action="store_true",
                    help="also time UltraGen rows as CUDA graph replays (GPU time, no Python launch overhead)")
    ap.add_argument("--presets", default="default,fast",
                    help="default, fast, a window TxHxW or f:TxHxW as fractions of the native grid "
                         "(fast-preset style: no shift, automatic pooling)")
    ap.add_argument("--smoke", action="store_true", help="tiny sizes on the CPU: checks that the script runs (bench/smoke.py)")
    args = ap.parse_args()
    device = pick_device(args.smoke, "bench/attention.py")
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    args.full, args.windows = args.full.split(","), args.windows.split(",")
    if device.type == "cuda":
        print(f"# {torch.cuda.get_device_name()} | torch {torch.__version__} | cuDNN {torch.backends.cudnn.version()}")
    else:
        skipped = [f"SDPA backends {','.join(args.full)} (full) and {','.join(args.windows)} (windows): PyTorch's "
                   "CPU attention instead"] + ["CUDA graphs"] * args.graph + ["FlexAttention"] * (not args.no_flex)
        print(banner(SHRUNK, "; ".join(skipped)))
        args.full = [None]
        args.windows = ["default"] + ["fused"] * ("fused" in args.windows)  # fused: reports why it cannot run
        args.graph, args.no_flex = False, True
    print("| layout | res | grid | method | ms / call | useful TFLOP/s | speedup vs fastest full | peak GiB | note |")
    print("|---|---|---|---|---|---|---|---|---|")
    for layout_name in args.layouts.split(","):
        for res in args.res.split(","):
            grid, heads, best, rows = bench_case(layout_name, res, device, dtype, args)
            for method, t, tflops, mem, note in rows:
                speed = f"{best / t:.1f}x" if best and t == t else ""
                print(f"| {layout_name} ({heads}h) | {res} | {'x'.join(map(str, grid))} | {method} | {t * 1e3:.1f} | "
                      f"{tflops:.0f} | {speed} | {mem:.2f} | {note} |", flush=True)


if __name__ == "__main__":
    main()
