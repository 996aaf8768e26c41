"""``bench/dit.py --family hunyuan15``: one sampling step of ComfyUI's real HunyuanVideo 1.5 architecture
(random bf16 weights), unpatched vs. patched, through the same path as the Wan rows: ComfyUI's loader (its model
detection picks HunyuanVideo15 from the weights), ``ultragen_core.api.apply``, the sampler's load and wrappers.

The config is the published one (diffusers' HunyuanVideo15Transformer3DModel / ComfyUI's model detection):
2048 wide, 16 heads of 128, 54 double-stream blocks and no single-stream ones, 65 input channels (32 latent
+ 32 image + mask), patch 1x1x1 on the 16x16x4 VAE's 32-channel latent, Qwen2.5-VL text (3584 wide), ByT5 and
SigLIP (1152) inputs. A step is measured on ``--blocks`` double blocks and scaled to 54.
"""
from __future__ import annotations

import math

import torch

import dit_rows
from ultragen_core import api

HY15 = dict(in_channels=65, out_channels=32, vec_in_dim=None, context_in_dim=3584, hidden_size=2048, mlp_ratio=4.0,
            num_heads=16, depth=54, depth_single_blocks=0, axes_dim=[16, 56, 56], theta=256, patch_size=[1, 1, 1],
            qkv_bias=True, guidance_embed=False, byt5=True, meanflow=False, use_cond_type_embedding=True,
            vision_in_dim=1152, meanflow_sum=True)
SMOKE = dict(hidden_size=256, num_heads=2)  # --smoke: two heads of 128 at the real depth
RES = {"720p": (720, 1280), "1080p": (1088, 1920), "4K": (2160, 3840)}
TEXT_TOKENS = 256  # Qwen2.5-VL tokens of a prompt (ComfyUI crops the template)


def case(res: str, frames: int, smoke: bool):
    """(config, latent (T, h, w) = the token grid, native grid) at ``res``; smoke: shrunk (bench/smoke.py)."""
    from smoke import shrink
    native = api.family_named("HunyuanVideo").sizes[0].native_grid  # 720p x 121 frames: (31, 45, 80)
    h, w = RES[res]
    grid = ((frames - 1) // 4 + 1, math.ceil(h / 16), math.ceil(w / 16))
    cfg = dict(HY15)
    if smoke:
        cfg, grid, native = dict(cfg, **SMOKE), shrink(grid), shrink(native)
    return cfg, grid, native


def build(cfg: dict, depth: int, device, dtype):
    """ComfyUI's HunyuanVideo with ``depth`` double blocks and random weights, as ComfyUI's loader loads it."""
    import comfy.ldm.hunyuan_video.model as hv
    import comfy.ops
    import comfy.sd
    model = hv.HunyuanVideo(**dict(cfg, depth=depth), operations=comfy.ops.disable_weight_init, device=device,
                            dtype=dtype)
    generators = {}  # one per device: ComfyUI may leave some weights where it creates them (the CPU)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name and name.endswith("weight"):
                p.fill_(1.0)
            else:
                g = generators.setdefault(p.device, torch.Generator(device=p.device).manual_seed(0))
                p.normal_(0.0, 1.0 / math.sqrt(p[0].numel()) if p.ndim >= 2 else 0.02, generator=g)
    return comfy.sd.load_diffusion_model_state_dict(model.state_dict(), model_options={"dtype": dtype})


def run(args, device, dtype, loaded, unload, measure, step_options):
    """The HunyuanVideo rows of bench/dit.py's table (its helpers passed in: ``loaded`` / ``unload`` /
    ``measure`` and the transformer_options each call gets; the loop is bench/dit_rows.py's)."""
    def case_at(res: str) -> dit_rows.Case:
        cfg, grid, native = case(res, args.frames, args.smoke)
        layers = cfg["depth"] if args.full_depth else args.blocks
        base = build(cfg, layers, device, dtype)
        x = torch.randn(1, cfg["in_channels"], *grid, device=device, dtype=dtype)
        t = torch.full((1,), 500.0, device=device)
        ctx = torch.randn(1, TEXT_TOKENS, cfg["context_in_dim"], device=device, dtype=dtype)
        return dit_rows.Case(model="HunyuanVideo 1.5", res=res, grid=grid, native=native, layers=layers,
                             depth=cfg["depth"], blocks="double blocks", base=base,
                             call=lambda model, options: model(x, t, ctx, transformer_options=options))
    dit_rows.run(args, device, case_at, loaded, unload, measure, step_options)
