"""``bench/dit.py --family minimax``: one sampling step of ComfyUI's real MiniMax-H3 architecture (33B, random
weights in a scaled-fp8 checkpoint as ComfyUI's mixed-precision loader reads them: every block's Linear weight in
float8_e4m3fn with its scale and ``comfy_quant`` entry, norms and everything else bf16), unpatched vs. patched,
through the user's path: ComfyUI's loader (its model detection picks MiniMaxH3 from the weights), ``ultragen_core.
api.apply``, the sampler's load and wrappers.

The config is ComfyUI's MiniMaxH3Model default (the published one): a 5376 wide stream, 56 heads of 128 (7168
wide attention), FFN 14336, 50 single-stream blocks, patch 1x2x2 on the 16x16 VAE's 24-channel latent, stereo
audio at 40 latent frames per second, Qwen3-VL text (5120 wide; the step gets it already refined to the stream's
width, as sampling does once per run, so the token refiner is built with one layer and not timed). The packed
sequence per step: [text 256 | audio | video]. A step is measured on ``--blocks`` blocks and scaled to 50.
"""
from __future__ import annotations

import math

import torch

import dit_rows
from ultragen_core import api

H3 = dict(hidden_size=5376, num_layers=50, token_refiner_num_layers=1, num_attention_heads=56,
          attention_head_dim=128, ffn_hidden_size=14336, latents_dim=24, audio_latents_dim=32, text_dim=5120,
          timestep_input_dim=256, time_embed_hidden_size=5376, time_embed_dim=2688)
SMOKE = dict(hidden_size=64, num_attention_heads=2, ffn_hidden_size=128, text_dim=64, time_embed_hidden_size=64,
             time_embed_dim=32, timestep_input_dim=32)  # --smoke: two heads of 128 (H3's RoPE rotates 96 channels)
RES = {"768p": (768, 1344), "1080p": (1088, 1920), "1440p": (1440, 2560), "4K": (2160, 3840)}
TEXT_TOKENS = 256  # Qwen3-VL states of a prompt
FPS, AUDIO_FPS = 24, 40


def case(res: str, frames: int, smoke: bool):
    """(config, token grid (T, H, W), native grid, audio latent frames) at ``res``; smoke: shrunk."""
    from smoke import shrink
    facts = api.family_named("MiniMax-H3").sizes[0]
    native = facts.native_grid  # 1344x768, 362 frames: (107, 24, 42)
    h, w = RES[res]
    grid = facts.grid(w, h, frames)
    aligned = max(5, frames) + (5 - max(5, frames)) % 17  # ComfyUI's 17k + 5 frames
    audio = round(aligned / FPS * AUDIO_FPS)
    cfg = dict(H3)
    if smoke:
        cfg, grid, native, audio = dict(cfg, **SMOKE), shrink(grid), shrink(native), 3
    return cfg, grid, native, audio


def build(cfg: dict, depth: int, device, fp8: bool):
    """ComfyUI's MiniMaxH3Model with ``depth`` blocks and random weights (made where ComfyUI creates each
    parameter, one generator per device), loaded by ComfyUI's loader; fp8: as a scaled-fp8 checkpoint
    (``fp8_checkpoint``). ComfyUI 0.33 cannot run H3 with its "fp8_e4m3fn" weight dtype on a bf16 file: that casts
    the q / k RMSNorm weights too, which its fused norm + RoPE kernel refuses."""
    import comfy.ldm.minimax.model as h3
    import comfy.ops
    import comfy.sd
    model = h3.MiniMaxH3Model(**dict(cfg, num_layers=depth), operations=comfy.ops.disable_weight_init, device=device,
                              dtype=torch.bfloat16 if device.type == "cuda" else torch.float32)
    generators = {}
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name and name.endswith("weight"):
                p.fill_(1.0)
            else:
                g = generators.setdefault(p.device, torch.Generator(device=p.device).manual_seed(0))
                p.normal_(0.0, 1.0 / math.sqrt(p[0].numel()) if p.ndim >= 2 else 0.02, generator=g)
        inv = model.rope.inv_freq
        inv.copy_(1.0 / 10000.0 ** (torch.arange(inv.shape[0], device=inv.device, dtype=torch.float32) / inv.shape[0]))
    linears = [name for name, m in model.named_modules() if name.startswith("blocks.") and isinstance(m, torch.nn.Linear)]
    sd = model.state_dict()
    del model
    if fp8:
        sd = fp8_checkpoint(sd, linears)
    return comfy.sd.load_diffusion_model_state_dict(sd)


def fp8_checkpoint(sd: dict, layers: list[str]) -> dict:
    """``sd`` with each of ``layers``' weights in float8_e4m3fn, scaled per tensor to its absolute maximum, plus the
    ``weight_scale`` and ``comfy_quant`` entries ComfyUI's mixed-precision ops load (what a published fp8 file
    holds); every other tensor stays as it is."""
    import json
    quant = torch.tensor(list(json.dumps({"format": "float8_e4m3fn"}).encode()), dtype=torch.uint8)
    for layer in layers:
        w = sd[f"{layer}.weight"]
        scale = (w.abs().amax().float() / torch.finfo(torch.float8_e4m3fn).max).clamp(min=1e-12)
        sd[f"{layer}.weight"] = (w.float() / scale).to(torch.float8_e4m3fn)
        sd[f"{layer}.weight_scale"] = scale.reshape(())
        sd[f"{layer}.comfy_quant"] = quant.clone()
    return sd


def run(args, device, dtype, loaded, unload, measure, step_options):
    """The MiniMax-H3 rows of bench/dit.py's table (its helpers passed in; the loop is bench/dit_rows.py's)."""
    fp8 = device.type == "cuda"
    weights = "scaled-fp8 block weights (ComfyUI's mixed-precision ops)" if fp8 else "float32"

    def case_at(res: str) -> dit_rows.Case:
        cfg, grid, native, audio_t = case(res, args.frames, args.smoke)
        layers = cfg["num_layers"] if args.full_depth else args.blocks
        base = build(cfg, layers, device, fp8)
        video = torch.randn(1, cfg["latents_dim"], grid[0], 2 * grid[1], 2 * grid[2], device=device, dtype=dtype)
        audio = torch.randn(1, cfg["audio_latents_dim"], 2, audio_t, device=device, dtype=dtype)
        t = torch.full((1,), 500.0, device=device)
        ctx = torch.randn(1, TEXT_TOKENS, cfg["hidden_size"], device=device, dtype=dtype)  # refined text states
        return dit_rows.Case(model="MiniMax-H3 33B", res=res, grid=grid, native=native, layers=layers,
                             depth=cfg["num_layers"], blocks="blocks", base=base,
                             call=lambda model, options: model([video, audio], t, ctx, transformer_options=options),
                             note=f"; {weights}; {TEXT_TOKENS} text + {2 * audio_t} audio rows shared")
    dit_rows.run(args, device, case_at, loaded, unload, measure, step_options)
