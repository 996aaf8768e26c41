"""The fidelity bench's own model: ComfyUI's WanModel at small sizes, its weights' file and what that file says.

    model = bench_model.build_model(bench_model.MODELS["small"])   # fresh weights, float32
    bench_model.save(model, path, cfg, smoke=False, steps=n, seconds=t, world="detailed", captioned=True)
    sd, meta = bench_model.load(path)                              # float32 state dict, metadata
    bench_model.world_of(meta), bench_model.captioned_of(meta)     # how it was trained
    bench_model.framing_of(meta)                                   # its last stage's framings (None: not recorded)
    bench_model.pixels_of(meta)                                    # its latent space: pixels per latent pixel

The file is bf16 safetensors with the key layout ComfyUI's UNETLoader detects as Wan 2.1 T2V, with metadata: its
size (config), its training (steps, seconds, shift, latent space, world, framing) and its text context (zeros: an
unconditional model; captions.SPACE: trained on captions). bench/fidelity/train.py trains it.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import captions  # noqa: E402
import latents  # noqa: E402
import weight_parts  # noqa: E402

# the ModelSamplingSD3 shift the model is trained and sampled with, and Wan's T5 width (UNETLoader's detection
# assumes it): the demo nodes sample the bundled model with the same (ultragen_core/demo.py)
SHIFT, TEXT_DIM = latents.SHIFT, latents.TEXT_DIM
CONTEXT_TOKENS = 1
MODEL = dict(dim=256, num_heads=2, num_layers=7, ffn_dim=768)  # 2 heads of 128, like every Wan; 8.1M parameters
# (1.1M of them the 4096-wide text embedding Wan's detection needs): 15.5 MiB in bf16
# --model: the sizes a run can start from (ComfyUI's Wan detection takes heads = width / 128)
MODELS = {"small": MODEL,
          "wide": dict(dim=384, num_heads=3, num_layers=8, ffn_dim=1152),  # 19.5M parameters, 37 MiB in bf16: the
          # weights come back from a device run in parts (bench/fidelity/weight_parts.py)
          "tiny": dict(dim=128, num_heads=1, num_layers=3, ffn_dim=384)}  # CPU pilots (pilot.py)
SMOKE_MODEL = dict(dim=128, num_heads=1, num_layers=2, ffn_dim=256)
WEIGHTS = HERE / "weights" / "ultragen_fidelity_wan.safetensors"


def fixed_context(batch: int = 1, device="cpu", dtype=torch.float32) -> torch.Tensor:
    """The one text context the model is trained and sampled with: (B, 1, 4096) zeros."""
    return torch.zeros(batch, CONTEXT_TOKENS, TEXT_DIM, device=device, dtype=dtype)


def build_model(cfg: dict, device="cpu"):
    """ComfyUI's WanModel (T2V, patch 1x2x2, 16 channels in and out) with fresh weights, float32."""
    import comfy.ldm.wan.model as wan
    import comfy.ops
    try:  # ComfyUI 0.33 with dynamic VRAM leaves layer weights unallocated: allocate them here
        import comfy.memory_management as mm
    except ImportError:
        mm = None
    dynamic = getattr(mm, "aimdo_enabled", False)
    if dynamic:
        mm.aimdo_enabled = False
    try:
        model = wan.WanModel(model_type="t2v", patch_size=(1, 2, 2), in_dim=latents.CHANNELS,
                             out_dim=latents.CHANNELS, text_dim=TEXT_DIM, freq_dim=256, eps=1e-6,
                             operations=comfy.ops.disable_weight_init, device=device, dtype=torch.float32, **cfg)
    finally:
        if dynamic:
            mm.aimdo_enabled = True
    g = torch.Generator(device="cpu").manual_seed(0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name and name.endswith("weight"):
                t = torch.ones(p.shape)
            elif name.startswith("head.head"):
                t = torch.zeros(p.shape)  # starts by predicting 0
            elif name.endswith("bias"):
                t = torch.zeros(p.shape)
            elif "modulation" in name:
                t = torch.randn(p.shape, generator=g) / cfg["dim"] ** 0.5
            else:
                t = torch.randn(p.shape, generator=g) * 0.02
            p.copy_(t)
    return model


def wan_latent_format():
    import comfy.latent_formats
    return comfy.latent_formats.Wan21()


def world_of(meta: dict) -> str:
    """The world weights were trained on, from their metadata (weights from before the worlds: plain)."""
    return meta.get("world", "plain")


def framing_of(meta: dict) -> str | None:
    """The training framings (train.FRAMINGS) of the stage weights ended on, from their metadata (weights written
    before 2026-12-05, the committed ones among them, do not record it: None)."""
    return meta.get("framing")


def half_size_steps_of(meta: dict) -> int | None:
    """How many of the weights' steps were at half size (progressive resolution; a pilot's: all), from their metadata
    (weights written before 2026-12-05, and runs resumed from them, do not record it: None)."""
    return int(meta["half_size_steps"]) if "half_size_steps" in meta else None


def pixels_of(meta: dict) -> int:
    """Pixels per latent pixel of the weights' latent space (latents.space_name), from their metadata; ValueError
    for a space this bench does not know."""
    pixels = latents.pixels_of(meta.get("latent_space"))
    if pixels is None:
        raise ValueError(f"the weights were trained on the latent space {meta.get('latent_space')!r}, which this "
                         f"bench does not know (it knows {sorted(latents.SPACES)}): train new weights "
                         f"(bench/fidelity/run.py --train-only).")
    return pixels


def captioned_of(meta: dict) -> bool:
    """Whether weights were trained on captions (captions.py), from their metadata (before captions: no)."""
    return meta.get("context") == captions.SPACE


def load(path: Path) -> tuple[dict, dict]:
    """(state dict in float32, metadata) of weights written by save() (or their parts: weight_parts.join)."""
    from safetensors import safe_open
    path = weight_parts.join(path)
    with safe_open(str(path), "pt") as f:
        meta = f.metadata() or {}
        sd = {k: f.get_tensor(k).float() for k in f.keys()}
    if "config" not in meta:
        raise ValueError(f"{path} has no 'config' metadata: --resume takes weights written by "
                         f"bench/fidelity/train.py.")
    return sd, meta


def compile_model_blocks(model) -> None:
    """torch.compile each transformer block's forward in place (regional compilation: the blocks share one
    compiled graph per input shape; parameter names and the state dict are unchanged)."""
    for block in model.blocks:
        block.forward = torch.compile(block.forward, dynamic=False)


def uncompile_model_blocks(model) -> None:
    """Undo compile_model_blocks: the blocks' own forward again."""
    for block in model.blocks:
        if "forward" in vars(block):
            del block.forward


def save(model, path: Path, cfg: dict, smoke: bool, steps: int, seconds: float, world: str = "plain",
         captioned: bool = False, framing: str | None = None, half_size_steps: int | None = None,
         pixels: int = latents.PIXELS) -> None:
    """bf16 safetensors of a WanModel's state dict (UNETLoader detects Wan 2.1 T2V from the keys); bf16 keeps
    the file below the 16 MiB a device run can hand back. half_size_steps: how many of the ``steps`` were at half
    size (None: not known); pixels: the latent space's pixels per latent pixel."""
    from safetensors.torch import save_file
    sd = {k: v.detach().to(torch.bfloat16).cpu().contiguous() for k, v in model.state_dict().items()}
    meta = {"ultragen_fidelity": "smoke (CPU, a few steps: not a trained model)" if smoke else "trained",
            "config": json.dumps(cfg), "steps": str(steps), "seconds": f"{seconds:.0f}", "shift": str(SHIFT),
            "latent_space": latents.space_name(pixels),
            "context": captions.SPACE if captioned else "zeros (1, 1, 4096)",
            "world": world}
    if framing is not None:
        meta["framing"] = framing
    if half_size_steps is not None:
        meta["half_size_steps"] = str(half_size_steps)
    save_file(sd, str(path), metadata=meta)
