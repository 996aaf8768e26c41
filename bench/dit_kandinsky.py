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

import math

import torch

import dit_rows
from ultragen_core import api

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
    and the transformer_options each call gets; the loop is bench/dit_rows.py's). An unpatched variant left out
    prints a "not run" row."""
    def case_at(res: str) -> dit_rows.Case:
        cfg, lat, grid, native = case(res, args.frames, args.smoke)
        layers = cfg["num_visual_blocks"] if args.full_depth else args.blocks
        base = build(cfg, layers, device, dtype)
        x = torch.randn(1, IN_CHANNELS, *lat, device=device, dtype=dtype)
        t = torch.full((1,), 500.0, device=device)
        ctx = torch.randn(1, TEXT_TOKENS, cfg["in_text_dim"], device=device, dtype=dtype)
        pooled = torch.randn(1, cfg["in_text_dim2"], device=device, dtype=dtype)
        return dit_rows.Case(model="Kandinsky 5 Pro", res=res, grid=grid, native=native, layers=layers,
                             depth=cfg["num_visual_blocks"], blocks="visual blocks", base=base,
                             call=lambda model, options: model(x, t, ctx, pooled, transformer_options=options))
    dit_rows.run(args, device, case_at, loaded, unload, measure, step_options, not_run_rows=True)
