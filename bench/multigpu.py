"""Several GPUs with ComfyUI's own multi-GPU engine (ComfyUI 0.33+: ``comfy.multigpu``): one model call shared
out by windows (UltraGen Split Video Across GPUs), and a sampling step with CFG three ways: one GPU,
ComfyUI's CFG split (the "MultiGPU CFG Split" node: cond on one GPU, uncond on the other), and the window
split (cond and uncond in one batch, every call shared out). How close each result is to one GPU's. With
``--solo`` (one GPU is enough) each rank's share of an N-GPU split is timed alone. Without the engine
(ComfyUI before 0.33) only the one-GPU and ``--solo`` timings run.

    COMFYUI_PATH=... python bench/multigpu.py --models 14B --res 1080p,4K --presets default,fast --blocks 4

The model is the real architecture at its real width with ``--blocks`` blocks of random weights (seconds
are scaled to the real depth: per-call work outside the blocks, which every GPU repeats in the window
split, is scaled too, so the split's speedup is understated), loaded through ComfyUI's own loader (the
engine rebuilds each device's copy from the loader), patched by UltraGen Apply, then deep-cloned per extra
GPU by the engine, as the nodes do. bf16 weights. "bytes / block" is what each GPU receives from the
others per dual-branch block in one call (the window split's all-gathers).
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

from ultragen_core import api  # noqa: E402


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


def sample_once(model, latent, cond, uncond, cfg):
    import comfy.sample
    noise = torch.randn(latent.shape, generator=torch.Generator().manual_seed(1))
    return comfy.sample.sample(model, noise, 1, cfg, "euler", "simple", cond, uncond, latent, seed=1,
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


class SoloExchange:
    """Stands in for the other GPUs when one GPU times one rank's share of a call (--solo): keeps this rank's
    rows (the others' stay zero) and counts the bytes the others would send."""

    def __init__(self, ranks: int):
        self.ranks = ranks
        self.received = [0] * ranks

    def __deepcopy__(self, memo):
        return self

    def all_gather(self, rank, rows, indices, out):
        out.zero_()
        out.index_copy_(1, indices[rank], rows)
        row_bytes = rows.shape[0] * rows.shape[-1] * rows.element_size()
        self.received[rank] += sum(i.numel() for r, i in enumerate(indices) if r != rank) * row_bytes
        return out

    def all_reduce(self, rank, part):
        self.received[rank] += (self.ranks - 1) * part.numel() * part.element_size()
        return part.clone()


def solo_rows(patched, sample, device, ranks_list, blocks, scale, one, bandwidth):
    """Each rank's share of one call timed alone on this GPU: the compute of an N-GPU split without its
    transfers, which are counted and priced at ``bandwidth`` (bytes/s). Returns table cells per N."""
    cells = []
    for ranks in ranks_list:
        times, sent = [], []
        for rank in range(ranks):
            exchange = SoloExchange(ranks)
            model = api.as_rank(patched, rank, ranks, exchange)
            t, _ = timed(lambda: sample(model), device)
            times.append(t)
            sent.append(exchange.received[rank] / 2)  # warm-up and timed call
        slowest = max(times)
        comm = max(sent) / bandwidth
        cells.append(f"{ranks}: {slowest * scale:.2f} s + {comm * scale:.2f} s = **{one / (slowest + comm):.2f}x** "
                     f"({max(sent) / blocks / 2**30:.2f} GiB / block)")
    return cells


def rel_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).abs().max() / b.float().abs().max())


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="14B")
    ap.add_argument("--res", default="1080p,4K")
    ap.add_argument("--presets", default="default,fast")
    ap.add_argument("--blocks", type=int, default=4)
    ap.add_argument("--frames", type=int, default=81)
    ap.add_argument("--solo", default="",
                    help="comma-separated GPU counts N (e.g. 2,4,8): time each rank's share of an N-GPU window split "
                         "alone on this GPU (one GPU is enough), transfers priced at --bandwidth")
    ap.add_argument("--bandwidth", type=float, default=400.0, help="GB/s per direction between GPUs, for --solo")
    ap.add_argument("--cfg-groups", type=int, default=1,
                    help="the CFG step's window split in this many groups of GPUs (ComfyUI's CFG split over the "
                         "groups, the window split inside each; the node's cfg_groups)")
    ap.add_argument("--same-gpu", type=int, default=0,
                    help="also run the real split with this many ranks all on the first GPU (threads, exchange, "
                         "result; no speedup)")
    ap.add_argument("--smoke", action="store_true", help="tiny sizes on the CPU: checks that the script runs")
    args = ap.parse_args()
    device = pick_device(args.smoke, "bench/multigpu.py")
    comfyui()
    import comfy.cli_args
    comfy.cli_args.args.cpu = args.smoke
    import comfy.model_management as mm
    import comfy.sd
    from ultragen_core.api import AttentionSettings, ComfyMultiGPU, OneDevice, apply, enable_split
    try:
        import comfy.multigpu as multigpu
    except ImportError:
        multigpu = None  # 1 GPU and --solo only
    gpus = torch.cuda.device_count() if device.type == "cuda" else 1
    if args.smoke:
        print(banner(f"width 128, token grids / {'x'.join(map(str, SCALE))}",
                     "more than one device (the CPU is one)"))
    else:
        print(f"# {torch.cuda.get_device_name(0)} x{gpus} | torch {torch.__version__} | {args.blocks} blocks, "
              "seconds scaled to the model's depth")
    calls, steps, solos = [], [], []
    solo = [int(n) for n in args.solo.split(",") if n]
    folder = Path(tempfile.mkdtemp(prefix="ultragen-multigpu-"))
    for name in args.models.split(","):
        cfg = MODELS[name]
        family = api.model_facts(SimpleNamespace(dim=cfg["dim"], out_dim=cfg["out_dim"]), api.family_named("Wan"))
        scale = family.blocks / args.blocks
        path = folder / f"wan_{name}_{args.blocks}.safetensors"
        random_checkpoint(path, dict(cfg, **SMOKE_WIDTH) if args.smoke else cfg, args.blocks)
        base = comfy.sd.load_diffusion_model(str(path), model_options={"dtype": torch.bfloat16})
        for res in args.res.split(","):
            h, w = RES[res]
            lat = (family.latent_frames(args.frames), h // family.vae_spatial, w // family.vae_spatial)
            if args.smoke:
                lat = tuple(max(2, math.ceil(n / s)) for n, s in zip(lat, SCALE))
            grid = "x".join(map(str, (lat[0], lat[1] // 2, lat[2] // 2)))
            gen = torch.Generator().manual_seed(0)
            latent = torch.randn(1, cfg["in_dim"], *lat, generator=gen)
            cond = [[torch.randn(1, 512, 4096, generator=gen), {}]]
            uncond = [[torch.randn(1, 512, 4096, generator=gen), {}]]
            for preset in args.presets.split(","):
                patched = apply(base, AttentionSettings(preset="fast" if preset == "fast" else "quality"))
                setup = ComfyMultiGPU()
                row = f"| {name} | {res} | {grid} | {preset} |"
                # one model call (cfg 1: no uncond)
                t1, o1 = timed(lambda: sample_once(patched, latent, cond, uncond, 1.0), device)
                mm.unload_all_models()
                if solo:
                    cells = solo_rows(patched, lambda m: sample_once(m, latent, cond, uncond, 1.0), device, solo,
                                      args.blocks, scale, t1, args.bandwidth * 1e9)
                    solos.append(f"{row} {t1 * scale:.2f} | " + " | ".join(cells) + " |")
                    print(solos[-1], flush=True)
                    mm.unload_all_models()
                if args.same_gpu > 1 and multigpu is not None:
                    first = torch.device(device.type, torch.cuda.current_device()) if device.type == "cuda" else device
                    clones = [patched.deepclone_multigpu(new_load_device=first) for _ in range(args.same_gpu - 1)]
                    shared = patched.clone()
                    shared.set_additional_models("ultragen_bench_split", clones)
                    same = OneDevice(clones, first, lambda d: multigpu.MultiGPUThreadPool([d]))
                    ts, os_ = timed(lambda: sample_once(enable_split(shared, same), latent, cond, uncond, 1.0), device)
                    got = same.last_run.received
                    moved = f"{max(got[-1]) / args.blocks / 2**30:.2f}" if got else "none (the call was not split)"
                    print(f"{row} same GPU, {args.same_gpu} ranks: {ts * scale:.2f} s / call (1 rank {t1 * scale:.2f}), "
                          f"max rel. diff {rel_diff(os_, o1):.1e}, GiB / block received per rank {moved} |", flush=True)
                    same.shutdown()
                    del clones, shared, same
                    mm.unload_all_models()
                if gpus < 2 or multigpu is None:
                    why = "one device" if multigpu is not None else "no multi-GPU engine in this ComfyUI"
                    calls.append(f"{row} {t1 * scale:.2f} | - ({why}) | - | - | - |")
                    print(calls[-1], flush=True)
                    continue
                window = enable_split(multigpu.create_multigpu_deepclones(patched, max_gpus=gpus), setup)
                grouped = window if args.cfg_groups == 1 else enable_split(
                    multigpu.create_multigpu_deepclones(patched, max_gpus=gpus), ComfyMultiGPU(args.cfg_groups))
                cfg_split = multigpu.create_multigpu_deepclones(patched, max_gpus=gpus)
                t2, o2 = timed(lambda: sample_once(window, latent, cond, uncond, 1.0), device)
                run = setup.last_run
                per_block = (max(run.received[-1]) / args.blocks / 2**30) if run is not None and run.received else 0.0
                calls.append(f"{row} {t1 * scale:.2f} | {t2 * scale:.2f} | **{t1 / t2:.2f}x** | {per_block:.2f} | "
                             f"{rel_diff(o2, o1):.1e} |")
                print(calls[-1], flush=True)
                mm.unload_all_models()
                # a step with CFG 5: cond + uncond
                s1, p1 = timed(lambda: sample_once(patched, latent, cond, uncond, 5.0), device)
                mm.unload_all_models()
                s2, p2 = timed(lambda: sample_once(cfg_split, latent, cond, uncond, 5.0), device)
                mm.unload_all_models()
                s3, p3 = timed(lambda: sample_once(grouped, latent, cond, uncond, 5.0), device)
                steps.append(f"{row} {s1 * scale:.2f} | {s2 * scale:.2f} ({s1 / s2:.2f}x) | "
                             f"{s3 * scale:.2f} ({s1 / s3:.2f}x) | {rel_diff(p2, p1):.1e} / {rel_diff(p3, p1):.1e} |")
                print(steps[-1], flush=True)
                mm.unload_all_models()
                mm.soft_empty_cache()
    if solos:
        print(f"\n### Each rank's share of one call (cfg 1) timed alone, transfers at {args.bandwidth:g} GB/s\n")
        print("| model | res | grid | preset | 1 GPU s / call | " + " | ".join(f"N = {n}: slowest rank + transfers = "
                                                                          "speedup" for n in solo) + " |")
        print("|---|---|---|---|---|" + "---|" * len(solo))
        print("\n".join(solos))
    if not calls:
        return
    print(f"\n### One model call (cfg 1), 1 GPU and window split over {gpus}\n")
    print("| model | res | grid | preset | 1 GPU s / call | window split s / call | speedup | GiB / block received "
          "per GPU | max rel. diff |")
    print("|---|---|---|---|---|---|---|---|---|")
    print("\n".join(calls))
    if not steps:
        return
    print(f"\n### One sampling step with CFG 5 (cond + uncond), {gpus} GPUs\n")
    print("| model | res | grid | preset | 1 GPU s / step | CFG split s / step | "
          f"window split ({args.cfg_groups} CFG groups) s / step | max rel. diff (CFG / window) |")
    print("|---|---|---|---|---|---|---|---|")
    print("\n".join(steps))


if __name__ == "__main__":
    main()
