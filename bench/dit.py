"""One sampling step of ComfyUI's real WanModel architectures, or LTX-2's LTXAVModel (``--family ltx2``, see
bench/dit_ltx.py), with random bf16 weights, unpatched vs. patched with the dual-branch attention: time per
step, peak VRAM, share of time in attention.

Every variant runs the user's path: the random weights are loaded by ComfyUI's own loader, patched through
``ultragen_core.api`` (what UltraGen Apply, Proxy Guidance and Load Weights call), loaded as the sampler loads
a model, and called with the transformer_options and wrappers the sampler hands the diffusion model.

    COMFYUI_PATH=/path/to/ComfyUI python bench/dit.py --models 1.3B,5B,14B --res 1080p,4K
    COMFYUI_PATH=... python bench/dit.py --models 14B --res 4K --full-depth   # all 40 blocks patched: peak VRAM
    COMFYUI_PATH=... python bench/dit.py --models 14B --res 4K --skip-unpatched-above 1 --peak-trace 10   # what fills the peak
    COMFYUI_PATH=... python bench/dit.py --models 14B --res 4K --sol-attn   # beside ComfyUI's Sol-Attn (comfy-kitchen >= 0.2.33)
    COMFYUI_PATH=... python bench/dit.py --family ltx2 --res 1080p,1440p,4K   # LTX-2 19B (video + audio), 121 frames
    COMFYUI_PATH=... python bench/dit.py --smoke          # tiny models on the CPU: checks that the script runs
    COMFYUI_PATH=... python bench/dit.py --family hunyuan15 --res 720p,1080p,4K --skip-unpatched-above 300000
    COMFYUI_PATH=... python bench/dit.py --family kandinsky5 --res 1080p,4K --skip-unpatched-above 300000  # Pro 19B
    COMFYUI_PATH=... python bench/dit.py --family minimax --res 1080p,1440p   # MiniMax-H3 33B (fp8 weights), 124 frames

A step is measured on ``--blocks`` blocks (one plain and one shifted block by default) and scaled to
the model's depth (blocks are identical in cost); rows say so. ``--full-depth`` builds every block
and runs the patched model once, for the real peak memory. One step = one model call with batch 1
(cfg doubles it).
"""
from __future__ import annotations

import argparse
import importlib
import math
import os
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path
from types import SimpleNamespace

import torch

# ULTRAGEN_BENCH_ROOT: time the ultragen_core of another checkout (before / after comparisons)
sys.path.insert(0, os.environ.get("ULTRAGEN_BENCH_ROOT") or str(Path(__file__).resolve().parent.parent))
from ultragen_core import api  # noqa: E402
from ultragen_core.config import AttentionSettings  # noqa: E402

import dit_ltx  # noqa: E402
import dit_rows  # noqa: E402
from comfyui_env import use_comfyui  # noqa: E402
from smoke import SCALE, banner, pick_device, shrink  # noqa: E402


def _fidelity_nodes():
    """bench/fidelity/fidelity_nodes.py: Sol-Attn as ComfyUI's Model Sparse Attention node applies it."""
    import importlib.util
    spec = importlib.util.spec_from_file_location("ultragen_fidelity_nodes",
                                                  Path(__file__).resolve().parent / "fidelity" / "fidelity_nodes.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


sol_attn = _fidelity_nodes()

MODELS = {  # dim, heads, layers, ffn, in/out channels, latent frame size (pixels per latent), native grid
    "1.3B": dict(dim=1536, num_heads=12, num_layers=30, ffn_dim=8960, in_dim=16, out_dim=16, scale=8),
    "5B": dict(dim=3072, num_heads=24, num_layers=30, ffn_dim=14336, in_dim=48, out_dim=48, scale=16),
    "14B": dict(dim=5120, num_heads=40, num_layers=40, ffn_dim=13824, in_dim=16, out_dim=16, scale=8),
}
RES = {"720p": (720, 1280), "1080p": (1088, 1920), "1440p": (1440, 2560), "4K": (2160, 3840)}
SMOKE_WIDTH = dict(dim=128, num_heads=1, ffn_dim=256)  # --smoke: the smallest Wan block (head_dim 128)


def case(name: str, res: str, frames: int, smoke: bool):
    """(model config, latent size (T, h, w), token grid, native grid) of a model at a resolution.

    smoke: a model of SMOKE_WIDTH at the real depth, latent and native grid shrunk (bench/smoke.py)."""
    cfg = MODELS[name]
    shapes = SimpleNamespace(dim=cfg["dim"], out_dim=cfg["out_dim"])
    native = api.model_facts(shapes, api.family_named("Wan")).native_grid  # the real model's
    h, w = RES[res]
    lat = ((frames - 1) // 4 + 1, math.ceil(h / cfg["scale"]), math.ceil(w / cfg["scale"]))
    if smoke:
        cfg, lat, native = dict(cfg, **SMOKE_WIDTH), shrink(lat), shrink(native)
    grid = (lat[0], math.ceil(lat[1] / 2), math.ceil(lat[2] / 2))  # patch size 1x2x2
    return cfg, lat, grid, native


def proxy_settings(text: str) -> api.ProxySettings:
    """A --proxy variant: "neighbourhood", "all" or "neighbourhood:R" (a margin of R proxy cells up, down, left
    and right, one frame), at strength 1 (the node's default). ValueError, naming the variant, otherwise."""
    mode, _, radius = text.partition(":")
    if radius and not radius.isdigit():
        raise ValueError(f"--proxy {text!r}: R is a whole number of proxy cells, got {radius!r}")
    try:
        cells = int(radius) if radius else api.ProxySettings().radius[1]
        return api.ProxySettings(strength=1.0, mode=mode, radius=(1, cells, cells))
    except ValueError as e:
        raise ValueError(f"--proxy {text!r}: {e} (write neighbourhood, all or neighbourhood:R)") from None


def build(cfg: dict, layers: int, device, dtype=torch.bfloat16):
    import comfy.ldm.wan.model as wan
    import comfy.ops
    kwargs = {k: v for k, v in cfg.items() if k != "scale"}
    kwargs["num_layers"] = layers
    model = wan.WanModel(**kwargs, operations=comfy.ops.disable_weight_init, device=device, dtype=dtype)
    g = torch.Generator(device=device).manual_seed(0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name and name.endswith("weight"):
                p.fill_(1.0)
            else:
                p.normal_(0.0, 1.0 / math.sqrt(p[0].numel()) if p.ndim >= 2 else 0.02, generator=g)
    return model.eval()


def comfy_model(model, dtype):
    """``model``'s weights loaded by ComfyUI's own loader, as Load Diffusion Model returns them (a ModelPatcher):
    every variant is patched through ``ultragen_core.api``, the apply path of the nodes."""
    import comfy.sd
    return comfy.sd.load_diffusion_model_state_dict(model.state_dict(), model_options={"dtype": dtype})


def loaded(patcher):
    """Load ``patcher`` (with the models it carries, e.g. checkpoint mode's extras) as ComfyUI's sampler does:
    returns its diffusion model, object patches in place, and the transformer_options the sampler hands the
    model (the patcher's own, with its wrappers)."""
    import comfy.model_management as mm
    import comfy.patcher_extension as extension
    mm.load_models_gpu([patcher] + list(patcher.get_additional_models()))
    options = dict(patcher.model_options.get("transformer_options", {}))
    options["wrappers"] = extension.merge_nested_dicts(options.get("wrappers", {}), patcher.wrappers)
    return patcher.get_model_object("diffusion_model"), options


def unload():
    """Undo the loaded variant's patches (ComfyUI unpatches what it loaded) before the next one."""
    import comfy.model_management as mm
    mm.unload_all_models()


def checkpoint_file(dim: int, layers: int) -> str:
    """Random UltraGen checkpoint weights (extras only) for every block of a model of width ``dim``."""
    from safetensors.torch import save_file
    path = Path(tempfile.mkdtemp(prefix="ultragen-dit-")) / "ultragen_random.safetensors"
    save_file(api.random_checkpoint_weights(dim, range(layers)), str(path))
    return str(path)


def step(model, x, t, ctx, options):
    """One model call as the sampler makes it (through the model's wrappers: the pack's call state)."""
    with torch.inference_mode():
        return model(x, t, ctx, transformer_options=options)


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def measure(fn, device, reps=2, warmup=True):
    """Best seconds of ``reps`` calls and the peak VRAM in GiB (nan on the CPU)."""
    if warmup:
        fn()
    sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t0)
    return min(times), torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else float("nan")


def attention_share(run, modules, device):
    """Fraction of the call ``run()`` spent inside self-attention (timed around each of ``modules``: CUDA events
    on the GPU, the wall clock on the CPU)."""
    cuda = device.type == "cuda"
    spent = []  # per self-attention call: a (start, end) pair of CUDA events, or seconds
    originals = {}
    for attn in modules:
        inner = attn.forward
        originals[attn] = inner

        def timed_forward(*a, _inner=inner, **kw):
            if not cuda:
                t0 = time.perf_counter()
                out = _inner(*a, **kw)
                spent.append(time.perf_counter() - t0)
                return out
            s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            s.record()
            out = _inner(*a, **kw)
            e.record()
            spent.append((s, e))
            return out
        attn.forward = timed_forward
    t0 = time.perf_counter()
    run()
    sync(device)
    total = time.perf_counter() - t0
    for attn, inner in originals.items():
        attn.forward = inner
    return (sum(s.elapsed_time(e) / 1e3 for s, e in spent) if cuda else sum(spent)) / total


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--family", default="wan", choices=("wan", "hunyuan15", "ltx2", "kandinsky5", "minimax"),
                    help="wan: WanModel sizes of --models; hunyuan15: HunyuanVideo 1.5 8.3B (bench/dit_hunyuan.py); "
                         "ltx2: LTX-2 19B (ComfyUI's LTXAVModel, video + audio; bench/dit_ltx.py); "
                         "kandinsky5: Kandinsky 5 Video Pro 19B (bench/dit_kandinsky.py); minimax: MiniMax-H3 33B "
                         "(ComfyUI's MiniMaxH3Model, fp8 weights; bench/dit_minimax.py). --windows, --proxy, "
                         "--checkpoint and --peak-trace are Wan's")
    ap.add_argument("--models", default="", help="wan: 1.3B,5B,14B (the default); ltx2: 19B")
    ap.add_argument("--res", default="1080p,4K", help=f"of {', '.join(RES)}")
    ap.add_argument("--blocks", type=int, default=2)
    ap.add_argument("--frames", type=int, default=0,
                    help="video frames (default: 81 for wan, 124 for minimax, 121 for the others)")
    ap.add_argument("--full-depth", action="store_true",
                    help="build every block, run the patched model once (no warm-up): real peak memory")
    ap.add_argument("--checkpoint", action="store_true",
                    help="1.3B: also time the published UltraGen architecture (6 full-attention blocks, 24 "
                         "UltraGen blocks; random extras)")
    ap.add_argument("--windows", default="",
                    help="extra variants: windows as fractions of the native grid (no shift), e.g. 1/3x1/2x1/2;1/2x1/2x1/2")
    ap.add_argument("--proxy", default="",
                    help="extra variants: the default preset with proxy guidance, neighbourhood and / or all "
                         "(comma separated); neighbourhood:R sets its margin to R proxy cells (the node's "
                         "radius_cells, default 4)")
    ap.add_argument("--sol-attn", action="store_true",
                    help="wan: also time ComfyUI's Sol-Attn block-sparse attention (the core Model Sparse Attention "
                         "node's defaults, bench/fidelity/fidelity_nodes.py) on the unpatched model; the row says "
                         "why it is skipped where comfy_kitchen's CUDA kernel cannot run")
    ap.add_argument("--memory-budget", type=float, default=0.0,
                    help="GB a patched call may use (UltraGen Attention Settings' memory_budget_gb); 0 = automatic "
                         "(the free VRAM, as the node's default)")
    ap.add_argument("--only", default="",
                    help="run only the variants whose label contains this text (e.g. proxy)")
    ap.add_argument("--skip-unpatched-above", type=int, default=10**9,
                    help="skip the unpatched call above this many tokens (report it as not run)")
    ap.add_argument("--peak-trace", type=int, default=0,
                    help="after each patched variant, list the N largest tensors alive at the call's memory peak "
                         "(CUDA only; bench/memory_trace.py)")
    ap.add_argument("--smoke", action="store_true", help="tiny models on the CPU: checks that the script runs (bench/smoke.py)")
    args = ap.parse_args()
    ltx = args.family == "ltx2"
    models = args.models or ("19B" if ltx else "1.3B,5B,14B")
    frames = args.frames = args.frames or {"wan": 81, "minimax": 124}.get(args.family, 121)
    for text in filter(None, args.proxy.split(",")):
        try:
            proxy_settings(text)
        except ValueError as e:
            ap.error(str(e))
    if args.family != "wan" and (args.checkpoint or args.proxy or args.sol_attn):
        sys.exit(f"bench/dit.py: --checkpoint, --proxy and --sol-attn are Wan's; leave them out with --family "
                 f"{args.family}.")
    device = pick_device(args.smoke, "bench/dit.py")
    use_comfyui("bench/dit.py", cpu=args.smoke)
    dtype = torch.float32 if args.smoke else torch.bfloat16
    if args.smoke:
        what = {"ltx2": "LTXAVModel of video dim 128, 2 heads", "hunyuan15": "HunyuanVideo 1.5 of width 256, 2 heads",
                "kandinsky5": "Kandinsky5 (Pro layout) of width 128, 2 heads",
                "minimax": "MiniMaxH3Model of width 64, 2 heads of 128",
                "wan": "WanModels of dim 128, 1 head, ffn 256"}[args.family]
        print(banner(f"{what} at the real depths, latents / {'x'.join(map(str, SCALE))}", "peak VRAM"))
    else:
        print(f"# {torch.cuda.get_device_name()} | torch {torch.__version__}")
    print("| model | res | grid | blocks run | variant | s / step (scaled to depth) | speedup | attention share | peak GiB | note |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    family = {"hunyuan15": "dit_hunyuan", "kandinsky5": "dit_kandinsky", "minimax": "dit_minimax"}.get(args.family)
    if family:  # their rows: the variants of bench/dit_rows.py
        importlib.import_module(family).run(args, device, dtype, loaded, unload, measure, lambda options: options)
        return
    traces = []  # --peak-trace lines, printed after the table
    for name in models.split(","):
        for res in args.res.split(","):
            if ltx:
                cfg, lat, grid, native = dit_ltx.case(name, RES[res], frames, args.smoke, shrink)
            else:
                cfg, lat, grid, native = case(name, res, frames, args.smoke)
            layers = cfg["num_layers"] if args.full_depth else args.blocks
            torch.cuda.empty_cache()
            # the random model, as ComfyUI loads it
            base = dit_ltx.base(cfg, layers, device, dtype) if ltx else comfy_model(build(cfg, layers, device, dtype),
                                                                                  dtype)
            torch.cuda.empty_cache()
            if ltx:
                x, t, ctx = dit_ltx.inputs(cfg, lat, frames, device, dtype)
                call, modules = dit_ltx.call, dit_ltx.self_attention_modules
            else:
                x = torch.randn(1, cfg["in_dim"], *lat, device=device, dtype=dtype)
                t = torch.full((1,), 500.0, device=device)
                ctx = torch.randn(1, 512, 4096, device=device, dtype=dtype)
                call, modules = step, lambda m: [block.self_attn for block in m.blocks]
            scale = cfg["num_layers"] / layers
            base_secs = None
            n = math.prod(grid)
            variants = list(dit_rows.VARIANTS)
            for text in filter(None, args.windows.split(";")):
                window = tuple(max(1, math.ceil(n * Fraction(f))) for n, f in zip(native, text.split("x")))
                variants.append((f"UltraGen windows {text} of native", AttentionSettings(window=window, shift="none")))
            for mode in filter(None, args.proxy.split(",")):
                variants.append((f"UltraGen default + proxy guidance ({mode})", ("proxy", proxy_settings(mode))))
            if args.sol_attn:
                variants.append(("ComfyUI Sol-Attn (Model Sparse Attention defaults)", "sol_attn"))
            if args.checkpoint and name == "1.3B" and not args.full_depth:
                variants.append(("UltraGen checkpoint (published architecture)", "checkpoint"))
            pair = None  # unpatched seconds for the blocks run
            for label, settings in variants:
                if args.only and args.only not in label:
                    continue
                if settings is None and (n > args.skip_unpatched_above or args.full_depth):
                    continue
                if settings == "checkpoint" and pair is None:
                    continue  # needs the unpatched time of the full-attention blocks
                plan = None
                if settings is None:
                    patcher = base
                elif settings == "sol_attn":
                    why = sol_attn.sol_attn_unavailable()
                    if why:
                        print(f"| {name} | {res} | {'x'.join(map(str, grid))} | {layers} | {label} | skipped: {why} "
                              "| | | | |", flush=True)
                        continue
                    patcher = sol_attn.UltraGenFidelitySolAttn().patch(base)[0]
                elif settings == "checkpoint":  # UltraGen Load Weights with random extras in every block run
                    import comfy.model_patcher
                    patcher, _ = api.load_weights(base, checkpoint_file(cfg["dim"], layers),
                                                  patcher_factory=comfy.model_patcher.ModelPatcher)
                else:
                    proxy = settings[1] if isinstance(settings, tuple) else None  # ("proxy", ProxySettings)
                    settings = AttentionSettings() if proxy else settings
                    patcher, label = dit_rows.patched(base, settings, label, args, grid, native)  # UltraGen Apply
                    if proxy:  # UltraGen Proxy Guidance: native size, half the frames, strength 1 (the node's default)
                        proxy_lat = (math.ceil(native[0] / 2), 2 * native[1], 2 * native[2])
                        latent = torch.randn(1, cfg["in_dim"], *proxy_lat, generator=torch.Generator().manual_seed(2))
                        patcher = api.apply_proxy_guidance(patcher, latent, proxy)
                    plan = api.plan_for(patcher, grid)
                model, options = loaded(patcher)
                secs, peak = measure(lambda: call(model, x, t, ctx, options), device, reps=1 if n > 500_000 else 2,
                                     warmup=not args.full_depth)
                share = float("nan") if args.full_depth else attention_share(
                    lambda: call(model, x, t, ctx, options), modules(model), device)
                if settings is None:
                    pair = secs
                if settings == "checkpoint":  # published: blocks 0-2 and 27-29 keep full attention
                    full = len(api.CHECKPOINT_FULL_BLOCKS)
                    secs = (full * pair + (cfg["num_layers"] - full) * secs) / layers
                    note = (f"{cfg['num_layers'] - full} UltraGen blocks (measured on {layers}) + {full} full-attention "
                            "blocks (the unpatched time)")
                else:
                    secs *= scale
                    note = (f"measured on {layers} blocks, scaled x{scale:g}" if scale != 1 else "all blocks") + \
                           (f"; {plan.describe()}" if plan else "")
                    if settings == "sol_attn":
                        note += ("; a sparse step: the node runs the first 20% of the schedule dense; tau 1.3, "
                                 "256 extra tokens")
                base_secs = secs if settings is None else base_secs
                speed = f"{base_secs / secs:.1f}x" if base_secs else ""
                print(f"| {name} | {res} | {'x'.join(map(str, grid))} | {layers} | {label} | {secs:.2f} | {speed} | "
                      f"{share:.0%} | {peak:.1f} | {note} |", flush=True)
                if args.peak_trace and settings is not None and device.type == "cuda":
                    from memory_trace import peak_trace
                    width = cfg["num_attention_heads"] * cfg["attention_head_dim"] if ltx else cfg["dim"]
                    unit = n * width * (torch.finfo(dtype).bits // 8)  # one sequence-size tensor
                    traces.append(f"\n{name} {res}, {label} ({layers} blocks, unit {unit / 2**30:.2f} GiB):")
                    traces += peak_trace(lambda: call(model, x, t, ctx, options), unit, args.peak_trace)
                del model, options, patcher
                unload()  # ComfyUI takes the variant's patches off again
            del base, x, ctx
            torch.cuda.empty_cache()
    if traces:
        print("\n### What is alive at each call's memory peak (--peak-trace), in sequence-size tensors")
        print("\n".join(traces))


if __name__ == "__main__":
    main()
