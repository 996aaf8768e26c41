"""``bench/dit.py --family kandinsky5``: one sampling step of ComfyUI's real Kandinsky 5 Video Pro architecture
(random bf16 weights), unpatched vs. patched, through the same path as the other rows: ComfyUI's loader (its model
detection picks Kandinsky 5 from the weights), ``ultragen_core.api.apply``, the sampler's load and wrappers.

The config is Video Pro's (19B, the largest published; ComfyUI's model detection): 4096 wide, 32 heads of 128
(RoPE axes 32 / 48 / 48), feed-forward 16384, time embedding 1024, 4 text blocks and 60 visual blocks, 33 input
channels per latent cell (16 latent + 16 image + mask) in 1x2x2 patches on HunyuanVideo's 8x8x4 VAE, Qwen2.5-VL
text (3584 wide) and a CLIP pooled vector (768). A step is measured on ``--blocks`` visual blocks and scaled to 60
(the text blocks run once on 256 tokens: their cost is left in, unscaled). At 1080p and above ComfyUI runs Pro
with its high-resolution RoPE scale (1, 3.16, 3.16); windows take the same table. Full attention at 4K (about a
million tokens) takes tens of seconds per block: pass ``--skip-unpatched-above`` to leave it out.
"""
from __future__ import annotations

import dataclasses
import math

import torch

from ultragen_core import api
from ultragen_core.config import AttentionSettings

PRO = dict(model_dim=4096, ff_dim=16384, time_dim=1024, visual_embed_dim=132, num_text_blocks=4,
           num_visual_blocks=60, axes_dims=(32, 48, 48), in_text_dim=3584, in_text_dim2=768)
SMOKE = dict(model_dim=128, ff_dim=512, time_dim=64, axes_dims=(16, 24, 24))  # --smoke: 2 heads of 64, real depth
RES = {"720p": (720, 1280), "1080p": (1088, 1920), "1440p": (1440, 2560), "4K": (2160, 3840)}
TEXT_TOKENS = 256  # Qwen2.5-VL tokens of a prompt
IN_CHANNELS = 33   # visual_embed_dim / (1 x 2 x 2)


def case(res: str, frames: int, smoke: bool):
    """(config, latent (t, h, w), token grid, native grid) at ``res``; smoke: shrunk (bench/smoke.py)."""
    from smoke import shrink
    native = next(f for f in api.family_named("Kandinsky 5").sizes if f.name.endswith("Pro")).native_grid
    h, w = RES[res]
    grid = ((frames - 1) // 4 + 1, math.ceil(h / 16), math.ceil(w / 16))
    cfg = dict(PRO)
    if smoke:
        cfg, grid, native = dict(cfg, **SMOKE), shrink(grid), shrink(native)
    return cfg, (grid[0], 2 * grid[1], 2 * grid[2]), grid, native


def build(cfg: dict, blocks: int, device, dtype):
    """ComfyUI's Kandinsky5 with ``blocks`` visual blocks and random weights, as ComfyUI's loader loads it. Built
    on ``device`` (seconds for 2 blocks of Pro), one random generator per parameter device."""
    import comfy.ldm.kandinsky5.model as k5
    import comfy.ops
    import comfy.sd
    model = k5.Kandinsky5(**dict(cfg, num_visual_blocks=blocks), operations=comfy.ops.disable_weight_init,
                          device=device, dtype=dtype)
    generators = {}  # one per device: ComfyUI may leave some weights where it creates them (the CPU)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name and name.endswith("weight"):
                p.fill_(1.0)
            else:
                g = generators.setdefault(p.device, torch.Generator(device=p.device).manual_seed(0))
                p.normal_(0.0, 1.0 / math.sqrt(p[0].numel()) if p.ndim >= 2 else 0.02, generator=g)
    sd = model.state_dict()
    del model
    return comfy.sd.load_diffusion_model_state_dict(sd, model_options={"dtype": dtype})


def run(args, device, dtype, loaded, unload, measure, step_options):
    """The Kandinsky 5 rows of bench/dit.py's table (its helpers passed in: ``loaded`` / ``unload`` / ``measure``
    and the transformer_options each call gets)."""
    for res in args.res.split(","):
        cfg, lat, grid, native = case(res, args.frames, args.smoke)
        layers = cfg["num_visual_blocks"] if args.full_depth else args.blocks
        base = build(cfg, layers, device, dtype)
        x = torch.randn(1, IN_CHANNELS, *lat, device=device, dtype=dtype)
        t = torch.full((1,), 500.0, device=device)
        ctx = torch.randn(1, TEXT_TOKENS, cfg["in_text_dim"], device=device, dtype=dtype)
        pooled = torch.randn(1, cfg["in_text_dim2"], device=device, dtype=dtype)
        n, scale, base_secs = math.prod(grid), cfg["num_visual_blocks"] / layers, None
        for label, settings in (("unpatched", None), ("UltraGen default", AttentionSettings()),
                                ("UltraGen fast", AttentionSettings(preset="fast"))):
            if args.only and args.only not in label:
                continue
            if settings is None and (n > args.skip_unpatched_above or args.full_depth):
                print(f"| Kandinsky 5 Pro | {res} | {'x'.join(map(str, grid))} | {layers} | {label} | not run | | "
                      f"n/a | | {n} tokens > --skip-unpatched-above |", flush=True)
                continue
            plan = None
            patcher = base
            if settings is not None:
                if args.smoke:  # the windows the settings give on the real model's native grid, shrunk
                    from ultragen_core.config import resolve_plan
                    settings = dataclasses.replace(settings, window=resolve_plan(settings, grid, native).window)
                if args.memory_budget:
                    settings = dataclasses.replace(settings, memory_budget_gb=args.memory_budget)
                    label += f", budget {args.memory_budget:g} GB"
                patcher = api.apply(base, settings)  # UltraGen Apply
                plan = api.plan_for(patcher, grid)
            model, options = loaded(patcher)

            def call():
                with torch.inference_mode():
                    return model(x, t, ctx, pooled, transformer_options=step_options(options))
            secs, peak = measure(call, device, reps=1 if n > 500_000 else 2, warmup=not args.full_depth)
            secs *= scale
            base_secs = secs if settings is None else base_secs
            speed = f"{base_secs / secs:.1f}x" if base_secs else ""
            note = (f"measured on {layers} visual blocks, scaled x{scale:g}" if scale != 1 else "all blocks") + \
                (f"; {plan.describe()}" if plan else "")
            print(f"| Kandinsky 5 Pro | {res} | {'x'.join(map(str, grid))} | {layers} | {label} | {secs:.2f} | "
                  f"{speed} | n/a | {peak:.1f} | {note} |", flush=True)
            del model, options, patcher
            unload()
        del base, x, ctx, pooled
        if device.type == "cuda":
            torch.cuda.empty_cache()
