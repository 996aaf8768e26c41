"""Video VAE decode benchmark: UltraGenTiledVAEDecode vs. ComfyUI's VAEDecode and VAEDecodeTiled (defaults),
with ComfyUI's real Wan 2.1 and Wan 2.2 VAE architectures (random weights, bf16), side by side in one process.

    COMFYUI_PATH=/path/to/ComfyUI python bench/vae_decode.py                 # full matrix (~7 min on an H100)
    COMFYUI_PATH=... python bench/vae_decode.py --vaes wan21 --res 4K
    COMFYUI_PATH=... python bench/vae_decode.py --smoke                      # tiny VAEs on the CPU: checks that the script runs

Per row: wall time of one decode (the VAE weights stay loaded; one warm-up decode per VAE first), peak VRAM
(torch.cuda.max_memory_allocated, VAE weights included), peak host RSS (sampled every 5 ms) and its rise
during the decode. Rows are ordered by importance; with --budget-s, a later row whose predicted time does not
fit is run with fewer frames or skipped, and the table says so. VAEDecode is skipped where ComfyUI's own
estimate exceeds the card. A seam table compares the tiled UltraGen output with the untiled one at 720p:
maximum difference inside the tile overlap bands vs. elsewhere.

Random weights: normal(0, 1/sqrt(fan_in)), norms 1, decoder residual branches scaled by 0.1 so the output is
not saturated (the seam numbers are shown with the output's standard deviation).
"""
from __future__ import annotations

import argparse
import gc
import importlib
import logging
import math
import os
import sys
import threading
import time
import types
from pathlib import Path

import torch

from comfyui_env import use_comfyui  # bench/ is first on sys.path
from smoke import banner, pick_device

REPO = Path(__file__).resolve().parent.parent
GIB = 2 ** 30
RES = {"720p": (720, 1280), "1080p": (1088, 1920), "4K": (2160, 3840), "smoke": (128, 256)}
VAES = {"wan21": ("comfy.ldm.wan.vae", dict(dim=96, z_dim=16), 8), "wan22": ("comfy.ldm.wan.vae2_2", dict(dim=160, z_dim=48), 16)}
METHODS = ("vaedecode", "ultragen_budget", "ultragen_auto", "vaedecode_tiled")


def load_node():
    """Our node module, imported as part of a synthetic package (the repo folder name is not a package name)."""
    for name, path in (("ultragen_pack", REPO), ("ultragen_pack.nodes", REPO / "nodes")):
        if name not in sys.modules:
            pkg = types.ModuleType(name)
            pkg.__path__ = [str(path)]
            sys.modules[name] = pkg
    return importlib.import_module("ultragen_pack.nodes.tiled_decode")


def build_vae(kind: str, dim: int | None, dtype):
    """A comfy.sd.VAE with ComfyUI's own Wan VAE class; dim=None = the real size."""
    import comfy.sd
    module_name, cfg, _ = VAES[kind]
    module = importlib.import_module(module_name)
    real = module.WanVAE
    kwargs = dict(cfg, dim_mult=[1, 2, 4, 4], num_res_blocks=2, attn_scales=[], temperal_downsample=[False, True, True])
    if dim is not None:
        kwargs["dim"] = dim
        if kind == "wan22":
            kwargs["dec_dim"] = dim
    model = real(**kwargs)
    g = torch.Generator().manual_seed(0)
    sd = {}
    for name, p in model.state_dict().items():
        if "gamma" in name or ("norm" in name and name.endswith("weight")):
            t = torch.ones(p.shape)
        elif p.ndim >= 2:
            t = torch.randn(p.shape, generator=g) / math.sqrt(p[0].numel())
            if name.startswith("decoder.") and (name.endswith("residual.6.weight") or name.endswith("proj.weight")):
                t *= 0.1
        else:
            t = 0.02 * torch.randn(p.shape, generator=g)
        sd[name] = t
    del model
    if dim is not None:  # comfy.sd.VAE hard-codes the dims: build the tiny one while it is constructed
        module.WanVAE = lambda **kw: real(**{**kw, **{k: kwargs[k] for k in ("dim", "dec_dim") if k in kwargs}})
    try:
        return comfy.sd.VAE(sd=sd, dtype=dtype)
    finally:
        module.WanVAE = real


class RssPeak:
    """Peak resident set size of this process while active (sampled every 5 ms)."""

    def __init__(self):
        self.peak = self.start = self._rss()

    @staticmethod
    def _rss() -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    def __enter__(self):
        self.peak = self.start = self._rss()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self):
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, self._rss())

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._rss())


class LogGrab(logging.Handler):
    def __init__(self):
        super().__init__(logging.INFO)
        self.lines = []

    def emit(self, record):
        self.lines.append(record.getMessage())


def run_method(method, vae, latent, node, budget_gb, cuda):
    import nodes as comfy_nodes
    samples = {"samples": latent}
    if method == "vaedecode":
        return comfy_nodes.VAEDecode().decode(vae, samples)[0]
    if method == "vaedecode_tiled":
        return comfy_nodes.VAEDecodeTiled().decode(vae, samples, 512, 64, 64, 8)[0]
    gb = budget_gb if method == "ultragen_budget" else 0.0
    return node.UltraGenTiledVAEDecode.execute(samples=samples, vae=vae, max_vram_gb=gb, tile_size=0, overlap=64,
                                               temporal_size=0, temporal_overlap=8).result[0]


def measure(method, vae, latent, node, budget_gb, cuda, plans):
    grab = LogGrab()
    logging.getLogger().addHandler(grab)
    plans.clear()
    gc.collect()
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    try:
        with RssPeak() as rss:
            t0 = time.perf_counter()
            with torch.inference_mode():  # as ComfyUI's executor runs nodes
                out = run_method(method, vae, latent, node, budget_gb, cuda)
            if cuda:
                torch.cuda.synchronize()
            seconds = time.perf_counter() - t0
    finally:
        logging.getLogger().removeHandler(grab)
    vram = torch.cuda.max_memory_allocated() / GIB if cuda else float("nan")
    note = []
    if any("Ran out of memory when regular VAE decoding" in line for line in grab.lines):
        note.append("OOM -> ComfyUI fell back to its tiled decode")
    if any("out of memory on a" in line for line in grab.lines):
        note.append("OOM -> UltraGen sub-tiled")
    tiles = plans[0].count if plans else ""
    return out, dict(seconds=seconds, vram=vram, rss=rss.peak / GIB, rss_up=(rss.peak - rss.start) / GIB,
                     tiles=tiles, note="; ".join(note), plan=plans[0] if plans else None)


def seam_stats(tiled, untiled, plan):
    """Max / mean |tiled - untiled| inside the overlap bands of the plan vs. elsewhere; images (N, H, W, C)."""
    H, W = tiled.shape[1:3]
    band_h, band_w = torch.zeros(H, dtype=torch.bool), torch.zeros(W, dtype=torch.bool)
    for band, axis in ((band_h, plan.h.pixel), (band_w, plan.w.pixel)):
        for (a0, b0), (a1, b1) in zip(axis, axis[1:]):
            band[a1:b0] = True
    border = band_h[:, None] | band_w[None, :]  # (H, W)
    mx_b = mx_e = sum_b = sum_e = 0.0
    for f in range(0, tiled.shape[0], 8):
        d = (tiled[f:f + 8] - untiled[f:f + 8]).abs().amax(-1)  # (f, H, W)
        if border.any():
            mx_b = max(mx_b, float(d[:, border].max()))
            sum_b += float(d[:, border].sum())
        mx_e = max(mx_e, float(d[:, ~border].max()))
        sum_e += float(d[:, ~border].sum())
    n = tiled.shape[0]
    return mx_b, mx_e, sum_b / max(1, n * int(border.sum())), sum_e / max(1, n * int((~border).sum()))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--vaes", default="wan21,wan22")
    ap.add_argument("--res", default="720p,1080p,4K")
    ap.add_argument("--frames", type=int, default=81)
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--budget-gb", type=float, default=6.0, help="max_vram_gb of the 'ultragen_budget' rows")
    ap.add_argument("--budget-s", type=float, default=420.0, help="time for all rows; later rows shrink or skip")
    ap.add_argument("--smoke", action="store_true", help="tiny VAEs (dim 8) on the CPU at 128x256, 1 frame, budget "
                    "0.6 GiB (1-3 tiles): checks that the script runs (bench/smoke.py)")
    args = ap.parse_args()
    cuda = pick_device(args.smoke, "bench/vae_decode.py").type == "cuda"
    use_comfyui("bench/vae_decode.py", cpu=args.smoke)
    if args.smoke:
        args.res, args.frames, args.budget_gb = "smoke", 1, 0.6
        print(banner(f"Wan VAEs of dim 8, {'x'.join(map(str, RES['smoke']))} pixels, 1 frame", "peak VRAM"))
    import folder_paths  # noqa: F401  (ComfyUI imports these before nodes)
    import utils.extra_config  # noqa: F401
    import comfy.model_management as mm
    node = load_node()
    td = importlib.import_module("ultragen_pack.ultragen_core.tiled_decode")
    plans = []
    real_plan = td.plan_tiles
    td.plan_tiles = lambda *a, **k: plans.append(real_plan(*a, **k)) or plans[-1]  # record the top-level plan
    logging.basicConfig(level=logging.WARNING)
    dev = torch.cuda.get_device_name() if cuda else "CPU"
    total = mm.get_total_memory(mm.get_torch_device()) / GIB
    print(f"# {dev} ({total:.0f} GiB) | torch {torch.__version__} | {' '.join(sys.argv)}")
    vaes = {k: build_vae(k, 8 if args.smoke else None, None if args.smoke else torch.bfloat16)
            for k in args.vaes.split(",")}
    methods = args.methods.split(",")
    resolutions = args.res.split(",")
    rows = []  # (res, vae, method, required)
    for res in resolutions:
        big = res == "4K"
        for k in vaes:
            for m in methods:
                if not big or m == "ultragen_budget":
                    rows.append((res, k, m, big))
    rows += [(res, k, m, False) for res in resolutions if res == "4K" for k in vaes for m in methods
             if m not in ("ultragen_budget", "vaedecode")]
    if "4K" in resolutions and "vaedecode" in methods:
        rows += [("4K", k, "vaedecode", False) for k in vaes]
    for k, vae in vaes.items():  # warm-up: load weights, kernels
        with torch.inference_mode():
                run_method("vaedecode", vae, torch.randn(1, vae.latent_channels, 2, 8, 8), node, 0, cuda)
    start, rate, results, seams, untiled_time, outputs = time.perf_counter(), {}, [], [], {}, {}
    for res, k, method, required in rows:
        vae = vaes[k]
        s = vae.spacial_compression_decode()
        h, w = RES[res][0] // s, RES[res][1] // s
        frames, note = args.frames, ""
        lat = lambda f: (1, vae.latent_channels, (f - 1) // 4 + 1, h, w)  # noqa: E731
        if method == "vaedecode" and vae.memory_used_decode(lat(frames), vae.vae_dtype) > 0.95 * total * GIB:
            results.append((k, res, frames, method, None, f"skipped: does not fit (ComfyUI estimate "
                            f"{vae.memory_used_decode(lat(frames), vae.vae_dtype) / GIB:.0f} GiB)"))
            continue
        left = args.budget_s - (time.perf_counter() - start)
        if not required and (k, method) in rate:
            for f in (frames, 21, 9):
                if rate[(k, method)] * f * h * w < left:
                    break
            else:
                results.append((k, res, frames, method, None, "skipped: time budget"))
                continue
            if f != frames:
                frames, note = f, f"{f} frames (time budget)"
        latent = torch.randn(*lat(frames), generator=torch.Generator().manual_seed(0))
        try:
            out, r = measure(method, vae, latent, node, args.budget_gb, cuda, plans)
        except Exception as e:  # noqa: BLE001  (a benchmark row that fails is reported, not fatal)
            results.append((k, res, frames, method, None, f"failed: {type(e).__name__}: {str(e)[:80]}"))
            continue
        rate[(k, method)] = r["seconds"] / (frames * h * w)
        r["note"] = "; ".join(x for x in (note, r["note"]) if x)
        if method == "vaedecode":
            untiled_time[(k, res, frames)] = r["seconds"]
        results.append((k, res, frames, method, r, None))
        if res in ("720p", "smoke") and method in ("vaedecode", "ultragen_budget"):
            outputs[(k, method)] = (out, r["plan"])
            if (k, "vaedecode") in outputs and (k, "ultragen_budget") in outputs:
                (ref, _), (tiled, plan) = outputs.pop((k, "vaedecode")), outputs.pop((k, "ultragen_budget"))
                seams.append((k, res, plan, *seam_stats(tiled, ref, plan), float(ref[::8].std())))
        del out
    print("\n| VAE | resolution | frames | method | time (s) | x untiled | peak VRAM (GiB) | peak RSS (GiB) | "
          "RSS rise (GiB) | tiles | note |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for k, res, frames, method, r, skip in results:
        if r is None:
            print(f"| {k} | {res} | {frames} | {method} | | | | | | | {skip} |")
            continue
        base = untiled_time.get((k, res, frames))
        ratio = f"{r['seconds'] / base:.2f}" if base else ""
        print(f"| {k} | {res} | {frames} | {method} | {r['seconds']:.1f} | {ratio} | {r['vram']:.2f} | "
              f"{r['rss']:.2f} | {r['rss_up']:.2f} | {r['tiles']} | {r['note']} |")
    print(f"\n(ultragen_budget = max_vram_gb {args.budget_gb}; ultragen_auto = max_vram_gb 0; vaedecode_tiled = "
          "VAEDecodeTiled defaults 512/64/64/8; total time {:.0f} s)".format(time.perf_counter() - start))
    if seams:
        print("\n| VAE | resolution | tiles (t x h x w) | max diff in overlap bands | max diff elsewhere | "
              "mean diff bands | mean diff elsewhere | output std |")
        print("|---|---|---|---|---|---|---|---|")
        for k, res, plan, mb, me, ab, ae, std in seams:
            grid = f"{len(plan.t.latent)} x {len(plan.h.latent)} x {len(plan.w.latent)}"
            print(f"| {k} | {res} | {grid} | {mb:.4f} | {me:.4f} | {ab:.5f} | {ae:.5f} | {std:.3f} |")


if __name__ == "__main__":
    main()
