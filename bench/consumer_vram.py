"""Native high resolution on one consumer card: a real ComfyUI sampling run of a real-size random Wan,
loaded by ComfyUI's UNETLoader (14B in fp8, 5B in bf16), patched by UltraGen Apply (memory budget
automatic), with the card capped the way ComfyUI users cap it: ``--reserve-vram`` (total - cap) GiB, and
a per-process memory fraction as the hard ceiling (torch raises out-of-memory above the cap).

    COMFYUI_PATH=... python bench/consumer_vram.py --runs 14B:4K:24:quality:1,14B:4K:0:quality:1 --out DIR
    COMFYUI_PATH=... python bench/consumer_vram.py --runs 14B:1080p:12:quality:2,14B:1080p:0:quality:2 --out DIR
    COMFYUI_PATH=... python bench/consumer_vram.py --smoke      # tiny model on the CPU: the script runs

A run is MODEL:RES:CAP:PRESET:STEPS (CAP in GiB, 0 = the whole card), each in a fresh process (the reserve
is read at ComfyUI's start). Reported per run: peak VRAM as torch counts it (allocated / reserved) and as
the device counts it (polled every 20 ms, all allocations including dynamic VRAM's weight cache and the
CUDA context), seconds of each sampling step (cfg 1: one model call per step), the run's UltraGen log line
(the memory plan, and whether the blocks streamed: the block check's verdict), and, for runs that differ only
in the cap, the largest difference of their sampled latents.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent / "tests"), str(HERE.parent / "tests" / "comfyui")]

MODELS = {  # WanModel config, file dtype of the block weights, pixels per latent, frames of the video
    "14B": dict(cfg=dict(dim=5120, num_heads=40, num_layers=40, ffn_dim=13824, in_dim=16, out_dim=16),
                fp8=True, scale=8, channels=16, frames=81),
    "5B": dict(cfg=dict(dim=3072, num_heads=24, num_layers=30, ffn_dim=14336, in_dim=48, out_dim=48),
               fp8=False, scale=16, channels=48, frames=121),
    "tiny": dict(cfg=dict(dim=128, num_heads=1, num_layers=2, ffn_dim=256, in_dim=16, out_dim=16),
                 fp8=False, scale=8, channels=16, frames=5),
}
RES = {"smoke": (512, 1024), "720p": (720, 1280), "1080p": (1088, 1920), "4K": (2160, 3840)}
GiB = 1024**3

from comfyui_env import use_comfyui  # noqa: E402
from smoke import banner  # noqa: E402


def parse_run(text: str) -> dict:
    model, res, cap, preset, steps = text.split(":")
    if model not in MODELS or res not in RES:
        raise SystemExit(f"bad run {text!r}: model one of {list(MODELS)}, resolution one of {list(RES)}.")
    return dict(model=model, res=res, cap=float(cap), preset=preset, steps=int(steps), spec=text)


def make_weights(model: str, path: Path, device: str) -> None:
    """A random checkpoint of ComfyUI's WanModel at full size, written tensor by tensor (block Linear weights
    in float8_e4m3fn when the model is fp8, the rest bf16)."""
    import torch
    from safetensors.torch import save_file

    import comfy.ldm.wan.model as wan
    import comfy.ops
    spec = MODELS[model]
    meta = wan.WanModel(**spec["cfg"], text_dim=4096, freq_dim=256, operations=comfy.ops.disable_weight_init,
                        device="meta")
    gen = torch.Generator(device=device).manual_seed(0)
    sd = {}
    for name, p in meta.state_dict().items():
        if "norm" in name and name.endswith("weight"):
            t = torch.ones(p.shape, device=device)
        elif p.ndim >= 2:
            t = torch.randn(p.shape, generator=gen, device=device) / p[0].numel() ** 0.5
        else:
            t = 0.02 * torch.randn(p.shape, generator=gen, device=device)
        fp8 = spec["fp8"] and name.startswith("blocks.") and p.ndim == 2 and "modulation" not in name
        sd[name] = t.to(torch.float8_e4m3fn if fp8 else torch.bfloat16).cpu().contiguous()
    save_file(sd, str(path))


class Peak:
    """Device-level used memory, polled in a thread (what nvidia-smi shows)."""

    def __init__(self, device):
        import torch
        self.torch, self.device, self.peak, self.stop = torch, device, 0, threading.Event()
        self.thread = threading.Thread(target=self.poll, daemon=True)

    def poll(self):
        while not self.stop.is_set():
            free, total = self.torch.cuda.mem_get_info(self.device)
            self.peak = max(self.peak, total - free)
            time.sleep(0.02)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join()


def child(run: dict, weights: Path, work: Path, smoke: bool) -> dict:
    """One sampling run in this process; returns its measurements."""
    root = os.environ["COMFYUI_PATH"]
    sys.path.insert(0, root)
    import torch

    import comfy.cli_args
    cuda = torch.cuda.is_available() and not smoke
    total = torch.cuda.get_device_properties(0).total_memory / GiB if cuda else 0.0
    if cuda and run["cap"]:
        comfy.cli_args.args.reserve_vram = total - run["cap"]  # read when comfy.model_management is imported
        torch.cuda.set_per_process_memory_fraction(run["cap"] / total)
    if cuda:
        os.environ["ULTRAGEN_TEST_DEVICE"] = "cuda"
    from harness import ComfyRuntime, PromptFailed, captured
    runtime = ComfyRuntime(work)
    link = runtime.models_dir / "diffusion_models" / weights.name
    if not link.exists():
        link.symlink_to(weights)
    import comfy.samplers
    import comfy.utils
    marks: list[float] = []
    original = comfy.samplers.KSAMPLER.sample

    def timed(self, *args, **kwargs):  # sampling starts (weights loaded as ComfyUI decided)
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        marks.append(time.perf_counter())
        return original(self, *args, **kwargs)

    comfy.samplers.KSAMPLER.sample = timed
    comfy.utils.set_progress_bar_global_hook(
        lambda value, total, preview, node_id=None: (torch.cuda.synchronize() if cuda else None,
                                                     marks.append(time.perf_counter())))
    spec = MODELS[run["model"]]
    h, w = RES[run["res"]]
    frames = (spec["frames"] - 1) // 4 + 1
    settings = {"class_type": "UltraGenAttentionSettings", "inputs": {
        "window_t": 0, "window_h": 0, "window_w": 0, "shift": "auto", "global_branch": True, "global_compression": 0,
        "fusion": "band", "global_strength": 1.0, "full_attention_blocks": "", "start_percent": 0.0,
        "end_percent": 1.0, "preset": run["preset"], "memory_budget_gb": 1e-6 if smoke else 0.0}}
    prompt = {
        "load": {"class_type": "UNETLoader", "inputs": {"unet_name": weights.name, "weight_dtype": "default"}},
        "settings": settings,
        "apply": {"class_type": "UltraGenApply", "inputs": {"model": ["load", 0], "settings": ["settings", 0]}},
        "cond": {"class_type": "UltraGenTestConditioning", "inputs": {"seed": 1, "tokens": 512}},
        "latent": {"class_type": "UltraGenTestLatent", "inputs": {
            "seed": 2, "channels": spec["channels"], "frames": frames, "height": -(-h // spec["scale"]),
            "width": -(-w // spec["scale"]), "batch": 1, "corner_bump": 0.0}},
        "sample": {"class_type": "KSampler", "inputs": {
            "model": ["apply", 0], "seed": 3, "steps": run["steps"], "cfg": 1.0, "sampler_name": "euler",
            "scheduler": "simple", "positive": ["cond", 0], "negative": ["cond", 0], "latent_image": ["latent", 0],
            "denoise": 1.0}},
        "capture": {"class_type": "UltraGenTestCapture", "inputs": {"samples": ["sample", 0], "key": "out"}},
    }
    lines: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: lines.append(record.getMessage()) if "[UltraGen]" in record.getMessage() else None
    logging.getLogger().addHandler(handler)
    logging.getLogger().setLevel(logging.INFO)
    result = dict(run, total_gib=round(total, 1), allocator=os.environ.get("PYTORCH_CUDA_ALLOC_CONF") or "caching (default)")
    try:
        if cuda:
            with Peak(torch.device("cuda", 0)) as peak:
                runtime.run(prompt)
            result["peak_device_gib"] = round(peak.peak / GiB, 2)
            result["peak_allocated_gib"] = round(torch.cuda.max_memory_allocated() / GiB, 2)
            result["peak_reserved_gib"] = round(torch.cuda.max_memory_reserved() / GiB, 2)
        else:
            runtime.run(prompt)
        out = captured()["out"]
        torch.save(out.to(torch.float32), work / "out.pt")
        result.update(ok=True, finite=bool(torch.isfinite(out).all()), steps_s=[round(b - a, 2) for a, b in
                                                                                 zip(marks, marks[1:])])
    except PromptFailed as e:
        result.update(ok=False, error=str(e)[:300])
    result["log"] = ([m[m.index("memory:"):] for m in lines if "memory:" in m][:1]
                     + ["budget too small"] * any("below what" in m for m in lines)
                     + ["blocks streamed"] * any("per-token work in chunks" in m for m in lines)
                     + ["blocks ran whole (block check refused)"] * any("the block runs whole" in m for m in lines))
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", default="14B:1080p:12:quality:2,14B:1080p:0:quality:2")
    ap.add_argument("--out", type=Path, default=None, help="folder for the table (default: a new temporary one)")
    ap.add_argument("--work", type=Path, default=None, help="folder for the weight files (kept between calls)")
    ap.add_argument("--smoke", action="store_true", help="a tiny model on the CPU, streamed in 64-token chunks")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--make-weights", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if not os.environ.get("COMFYUI_PATH"):
        sys.exit("bench/consumer_vram.py runs ComfyUI: set COMFYUI_PATH to a ComfyUI tree.")
    work = args.work or Path(tempfile.mkdtemp(prefix="ultragen-vram-"))
    work.mkdir(parents=True, exist_ok=True)
    if args.make_weights:
        import torch
        device = "cuda" if torch.cuda.is_available() and not args.smoke else "cpu"
        use_comfyui("bench/consumer_vram.py", cpu=device == "cpu")
        make_weights(args.make_weights, work / f"wan_{args.make_weights}.safetensors", device)
        return
    if args.child:
        run = parse_run(args.child)
        print("RESULT " + json.dumps(child(run, work / f"wan_{run['model']}.safetensors", work / run["spec"].replace(":", "_"),
                                           args.smoke)), flush=True)
        return
    if args.smoke:
        print(banner("a WanModel of dim 128 (2 blocks), 512x1024 x 5 frames, streamed in 64-token chunks",
                     "the card caps and the VRAM peaks"), flush=True)
    if not args.smoke:
        # Each run's process gets the CUDA allocator ComfyUI's main.py picks before torch loads (its cuda_malloc
        # module: cudaMallocAsync on CUDA 13 builds of torch, through PYTORCH_CUDA_ALLOC_CONF, which the child
        # processes inherit). Without it the caching allocator's fragmentation (GiBs "reserved but unallocated"
        # at a 24 GiB cap, run 37) is measured, not what users run.
        use_comfyui("bench/consumer_vram.py", cpu=False)
        import cuda_malloc  # noqa: F401  (sets os.environ only; imports no torch)
    runs = [parse_run(r) for r in (["tiny:smoke:0:quality:2"] if args.smoke
                                   else args.runs.split(","))]
    args.out = args.out or Path(tempfile.mkdtemp(prefix="ultragen-vram-table-"))
    args.out.mkdir(parents=True, exist_ok=True)
    results = []
    for run in runs:
        weights = work / f"wan_{run['model']}.safetensors"
        if not weights.exists():  # on the GPU in a process of its own: no CUDA context left behind for the runs
            t = time.perf_counter()
            if args.smoke:
                use_comfyui("bench/consumer_vram.py", cpu=True)
                make_weights(run["model"], weights, "cpu")
            else:
                subprocess.run([sys.executable, __file__, "--make-weights", run["model"], "--work", str(work)],
                               check=True)
            print(f"weights {weights.name}: {weights.stat().st_size / 1e9:.1f} GB in {time.perf_counter() - t:.0f} s",
                  flush=True)
        cmd = [sys.executable, __file__, "--child", run["spec"], "--work", str(work)] + (["--smoke"] if args.smoke else [])
        proc = subprocess.run(cmd, capture_output=True, text=True)
        line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")), None)
        result = json.loads(line[7:]) if line else dict(run, ok=False, error=proc.stderr[-600:])
        results.append(result)
        print(json.dumps(result), flush=True)
        (args.out / "consumer_vram.jsonl").write_text("".join(json.dumps(r) + "\n" for r in results))
    compare(results, work)
    (args.out / "consumer_vram.jsonl").write_text("".join(json.dumps(r) + "\n" for r in results))
    (args.out / "consumer_vram.md").write_text(table(results))
    print(table(results))


def compare(results: list[dict], work: Path) -> None:
    """Largest latent difference between runs that differ only in the cap (same model, size, preset, steps)."""
    import torch
    for r in results:
        if not r.get("ok"):
            continue
        twins = [o for o in results if o is not r and o.get("ok") and all(o[k] == r[k] for k in
                                                                             ("model", "res", "preset", "steps"))]
        mine = torch.load(work / r["spec"].replace(":", "_") / "out.pt")
        for o in twins:
            other = torch.load(work / o["spec"].replace(":", "_") / "out.pt")
            r.setdefault("max_diff", {})[o["spec"]] = float((mine - other).abs().max())


def table(results: list[dict]) -> str:
    rows = ["| run (model:res:cap GiB:preset:steps) | fits | peak device GiB | peak torch alloc / reserved GiB | "
            "s per step | max latent diff vs. other cap | log |", "|---|---|---|---|---|---|---|"]
    for r in results:
        steps = r.get("steps_s") or []
        rows.append("| {} | {} | {} | {} / {} | {} | {} | {} |".format(
            r["spec"], "yes" if r.get("ok") else "no: " + r.get("error", "")[:80], r.get("peak_device_gib", "-"),
            r.get("peak_allocated_gib", "-"), r.get("peak_reserved_gib", "-"),
            " / ".join(f"{s:.1f}" for s in steps) if steps else "-",
            ", ".join(f"{v:.2e}" for v in (r.get("max_diff") or {}).values()) or "-",
            "; ".join(r.get("log", []))[:300].replace("|", "/")))
    return "\n".join(rows) + "\n"


if __name__ == "__main__":
    main()
