"""How the fidelity bench samples through ComfyUI: the headless runtime with the bench's own nodes, the weights
installed where UNETLoader finds them, one cell's API prompt per attention mode (evaluate.py's docstring lists
them), and the decoded videos of a cell.

    runtime = sampling.make_runtime(Path(tmp), cuda=True)
    name = sampling.install_weights(runtime, weights)
    videos = sampling.generate(runtime, "quality_band", name, 2, cfg)   # (N, T, 3, 128, 128) in [0, 1]
"""
from __future__ import annotations

import inspect
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import torch

HERE = Path(__file__).resolve().parent
PACK = HERE.parent.parent
sys.path.insert(0, str(HERE))
import bench_model  # noqa: E402
import latents  # noqa: E402
import scenes  # noqa: E402
import upscaler  # noqa: E402
import weight_parts  # noqa: E402

if TYPE_CHECKING:
    from evaluate import EvalConfig

MODEL_FILE = "ultragen_fidelity_wan.safetensors"
NODES_FILE = HERE / "fidelity_nodes.py"
UPSCALERS = upscaler.METHODS  # a native pass, upscaled in pixels
GATE_STRENGTH = 0.5  # the quality_gate row's global_strength: (1 - w) windows + w global, an even mix


def make_runtime(base: Path, cuda: bool):
    """tests/comfyui/harness.py's headless ComfyUI (on the GPU when cuda), with the bench node loaded."""
    for p in (PACK / "tests", PACK / "tests" / "comfyui"):
        if str(p) not in sys.path:
            sys.path.insert(0, str(p))
    if cuda:
        os.environ["ULTRAGEN_TEST_DEVICE"] = "cuda"
    from harness import ComfyRuntime
    runtime = ComfyRuntime(base)
    if not runtime.pack_loaded:
        raise RuntimeError("ComfyUI could not load the UltraGen pack (see the log above)")
    load_bench_nodes(runtime)
    return runtime


def load_bench_nodes(runtime) -> None:
    import asyncio
    if "UltraGenFidelityLatentFile" not in runtime.nodes.NODE_CLASS_MAPPINGS:
        ok = asyncio.run(runtime.nodes.load_custom_node(str(NODES_FILE), module_parent="custom_nodes"))
        if not ok:
            raise RuntimeError(f"ComfyUI could not load {NODES_FILE}")


def check_latent_space(weights: Path) -> int:
    """The weights' latent space, as pixels per latent pixel (latents.space_name); ValueError for a space this bench
    does not know."""
    from safetensors import safe_open
    with safe_open(str(weights), "pt") as f:
        space = (f.metadata() or {}).get("latent_space")
    pixels = latents.pixels_of(space)
    if pixels is None:
        raise ValueError(f"{weights} was trained on the latent space {space!r}, this bench samples in "
                         f"{sorted(latents.SPACES)}: its samples would be noise. Train new weights "
                         f"(bench/fidelity/run.py --train-only, bench/fidelity/GPU_PLAN.md).")
    return pixels


def first_space_only(weights: Path, tool: str) -> None:
    """Exit with a clear message unless the weights are in the first latent space (1 px per latent pixel), the
    only one ``tool`` (grain.py, diagnose.py) reads."""
    pixels = check_latent_space(weight_parts.join(weights))
    if pixels != 1:
        sys.exit(f"{tool} reads weights of 1 px per latent pixel only; {weights} are in the space of {pixels} x "
                 f"{pixels} px per latent pixel: measure them with evaluate.py or pilot.py --weights.")


def weights_world(weights: Path) -> str:
    """The bench world (scenes.WORLDS) the weights were trained on (bench_model.world_of their metadata)."""
    return bench_model.world_of(weights_metadata(weights))


def weights_captioned(weights: Path) -> bool:
    """Whether the weights were trained on captions (bench_model.captioned_of their metadata)."""
    return bench_model.captioned_of(weights_metadata(weights))


def weights_metadata(weights: Path) -> dict:
    from safetensors import safe_open
    with safe_open(str(weight_parts.join(weights)), "pt") as f:
        return f.metadata() or {}


def install_weights(runtime, weights: Path) -> str:
    """Link the weights (joined first if only their parts are there: weight_parts.py) into the runtime's
    models/diffusion_models; returns the name UNETLoader takes."""
    weights = weight_parts.join(weights)
    check_latent_space(weights)
    target = runtime.models_dir / "diffusion_models" / MODEL_FILE
    if target.exists() or target.is_symlink():
        target.unlink()
    target.symlink_to(Path(weights).resolve())
    return MODEL_FILE


def proxy_supported() -> str | None:
    """None, or why UltraGen Proxy Guidance cannot run on this ComfyUI."""
    import comfy.ldm.wan.model as wan
    if "context_latents" not in inspect.getsource(wan.WanModel.forward_orig):
        return "needs ComfyUI 0.33+ (in-context latents)"
    return None


def sol_attn_unavailable() -> str | None:
    """None, or why the Sol-Attn row cannot run (bench/fidelity/fidelity_nodes.py)."""
    import importlib.util
    spec = importlib.util.spec_from_file_location("ultragen_fidelity_nodes", NODES_FILE)
    nodes = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(nodes)
    return nodes.sol_attn_unavailable()


def native_grid(cfg: EvalConfig) -> tuple[int, int, int]:
    side = scenes.NATIVE // (cfg.pixels * latents.PATCH)  # 32 tokens (16 in the space of 2 x 2 px per latent pixel)
    return cfg.frames, side, side


# A row may be a variant of a mode, its settings changed: "MODE@KEY=VALUE[@KEY=VALUE...]", e.g.
# coarse_to_fine@start=0.3 or proxy@proxy_strength=0.5@neighbourhood=all. KEY: (its type, the modes it applies to).
_GLOBAL = ("quality_band", "quality_gate", "fast", "proxy", "coarse_to_fine")
VARIANT_KEYS = {
    "start": (float, ("coarse_to_fine",)),  # the share of the steps the native pass gives (KSamplerAdvanced)
    "global_strength": (float, _GLOBAL),  # UltraGen Attention Settings' global_strength
    "compression": (int, _GLOBAL),  # its global_compression (0: automatic)
    "fusion": (str, ("proxy", "coarse_to_fine")),  # band or gate, for the modes built on quality_band
    # UltraGen Proxy Guidance's strength; on coarse_to_fine it adds the guidance by the native pass, as the
    # "proxy to 4K" templates do
    "proxy_strength": (float, ("proxy", "coarse_to_fine")),
    "neighbourhood": (str, ("proxy", "coarse_to_fine")),  # its neighbourhood: neighbourhood or all
    "radius": (int, ("proxy", "coarse_to_fine")),  # its radius_cells
}


def split_mode(spec: str) -> tuple[str, dict]:
    """(mode, settings) of a row's name: "coarse_to_fine@start=0.3" -> ("coarse_to_fine", {"start": 0.3}).
    ValueError, naming the key and the fix, for a key unknown or not of the mode, or a value of the wrong type."""
    mode, *pairs = spec.split("@")
    settings = {}
    for pair in pairs:
        key, _, value = pair.partition("=")
        if key not in VARIANT_KEYS or not value:
            raise ValueError(f"row {spec!r}: {pair!r} is not KEY=VALUE with KEY one of {', '.join(VARIANT_KEYS)}")
        kind, modes = VARIANT_KEYS[key]
        if mode not in modes:
            raise ValueError(f"row {spec!r}: {key} applies to {', '.join(modes)}, not to {mode}")
        try:
            settings[key] = kind(value)
        except ValueError:
            raise ValueError(f"row {spec!r}: {key} takes a{'n int' if kind is int else ' ' + kind.__name__}, "
                             f"got {value!r}") from None
    return mode, settings


def guided(mode: str, variant: dict) -> bool:
    """Whether a row samples through UltraGen Proxy Guidance (ComfyUI 0.33+): proxy, and coarse_to_fine given one of
    the guidance's settings."""
    return mode == "proxy" or (mode == "coarse_to_fine" and bool({"proxy_strength", "neighbourhood", "radius"}
                                                                  & set(variant)))


def settings_node(mode: str, cfg: EvalConfig, variant: dict | None = None) -> dict | None:
    """UltraGen Attention Settings of a mode (its variant's settings applied), None for the unpatched modes."""
    from ultragen_core.presets import fast_window
    variant = variant or {}
    grid = native_grid(cfg)
    if mode in ("full", "sol_attn", *UPSCALERS):
        return None
    window, shift, glob, fusion, strength = grid, "alternate", True, variant.get("fusion", "band"), 1.0
    if mode == "windows":
        glob, fusion = False, "local_only"
    elif mode == "quality_gate":  # an even mix: at 1.0 gate is the pooled global branch alone (runs 38-50 used it)
        fusion = "gate"
    elif mode == "fast":
        window, shift = fast_window(grid), "none"
    if fusion == "gate":
        strength = GATE_STRENGTH
    return {"class_type": "UltraGenAttentionSettings", "inputs": {
        "window_t": window[0], "window_h": window[1], "window_w": window[2], "shift": shift, "global_branch": glob,
        "global_compression": variant.get("compression", 0), "fusion": fusion,
        "global_strength": variant.get("global_strength", strength), "full_attention_blocks": "",
        "start_percent": 0.0, "end_percent": 1.0, "preset": "quality"}}


CAPTION_SEED = 500_000  # a cell's captions: the held-out scenes of seed CAPTION_SEED + its sampling seed


def prompt(mode: str, model_name: str, scale: int, cfg: EvalConfig, seed: int, batch: int) -> dict:
    """The API prompt of one cell (``mode`` may be a variant: split_mode); the result is captured under "out" (the
    native pass under "native"). Captioned weights: each video prompted with the caption of its held-out scene of
    the sampling seed's (CAPTION_SEED + seed)."""
    mode, variant = split_mode(mode)
    side = scenes.NATIVE // cfg.pixels * 8  # EmptyHunyuanLatentVideo's width / height are 8 x the latent's
    length = 4 * (cfg.frames - 1) + 1  # -> cfg.frames latent frames

    def empty(s):
        return {"class_type": "EmptyHunyuanLatentVideo",
                "inputs": {"width": side * s, "height": side * s, "length": length, "batch_size": batch}}

    def sampler(model, latent, seed_):
        return {"class_type": "KSampler", "inputs": {
            "model": model, "seed": seed_, "steps": cfg.steps, "cfg": cfg.cfg_scale, "sampler_name": "euler",
            "scheduler": "simple", "positive": ["cond", 0], "negative": ["uncond", 0], "latent_image": latent,
            "denoise": 1.0}}

    caption = {"caption_seed": CAPTION_SEED + seed, "first": 0, "count": batch,
               "frames": cfg.frames} if cfg.captioned else {}
    p = {"load": {"class_type": "UNETLoader", "inputs": {"unet_name": model_name, "weight_dtype": "default"}},
         "shifted": {"class_type": "ModelSamplingSD3", "inputs": {"model": ["load", 0], "shift": cfg.shift}},
         "cond": {"class_type": "UltraGenFidelityContext", "inputs": caption},
         "uncond": {"class_type": "UltraGenFidelityContext", "inputs": {}}}
    model = ["shifted", 0]
    settings = settings_node(mode if mode not in ("proxy", "coarse_to_fine") else "quality_band", cfg, variant)
    if settings is not None and not (scale == 1 and mode != "fast"):
        p["settings"] = settings
        p["apply"] = {"class_type": "UltraGenApply", "inputs": {"model": model, "settings": ["settings", 0]}}
        model = ["apply", 0]
    if mode == "sol_attn":
        p["sol"] = {"class_type": "UltraGenFidelitySolAttn", "inputs": {"model": model}}
        model = ["sol", 0]
    two_pass = mode in ("proxy", "coarse_to_fine", *UPSCALERS) and scale > 1
    if two_pass:
        p["native_latent"] = empty(1)
        p["native"] = sampler(["shifted", 0], ["native_latent", 0], seed)
    if mode in UPSCALERS and scale > 1:
        p["capture"] = {"class_type": "UltraGenTestCapture", "inputs": {"samples": ["native", 0], "key": "out"}}
        return p
    if guided(mode, variant) and scale > 1:
        p["proxy"] = {"class_type": "UltraGenProxyGuidance", "inputs": {
            "model": model, "proxy": ["native", 0], "strength": variant.get("proxy_strength", 1.0),
            "neighbourhood": variant.get("neighbourhood", "neighbourhood"), "radius_frames": 1,
            "radius_cells": variant.get("radius", cfg.proxy_radius), "seed": 0}}
        model = ["proxy", 0]
    if mode == "coarse_to_fine" and scale > 1:
        p["upscaled"] = {"class_type": "LatentUpscaleBy", "inputs": {
            "samples": ["native", 0], "upscale_method": "bicubic", "scale_by": float(scale)}}
        p["sample"] = {"class_type": "KSamplerAdvanced", "inputs": {
            "model": model, "add_noise": "enable", "noise_seed": seed + 1, "steps": cfg.steps, "cfg": cfg.cfg_scale,
            "sampler_name": "euler", "scheduler": "simple", "positive": ["cond", 0], "negative": ["uncond", 0],
            "latent_image": ["upscaled", 0], "start_at_step": round(variant.get("start", cfg.c2f_start) * cfg.steps),
            "end_at_step": 10000, "return_with_leftover_noise": "disable"}}
    else:
        p["latent"] = empty(scale)
        p["sample"] = sampler(model, ["latent", 0], seed + 1 if two_pass else seed)
    p["capture"] = {"class_type": "UltraGenTestCapture", "inputs": {"samples": ["sample", 0], "key": "out"}}
    return p


def cell_samples(cfg: EvalConfig, scale: int, mode: str) -> int:
    """Videos in a cell: the gate's cells (x1 full and ground truth) hold at least cfg.gate_samples."""
    return max(cfg.samples, cfg.gate_samples) if scale == 1 and mode in ("full", "ground_truth") else cfg.samples


def generate(runtime, mode: str, model_name: str, scale: int, cfg: EvalConfig) -> torch.Tensor:
    """The videos of one cell (``mode`` may be a variant: split_mode), decoded: (N, T, 3, S, S) float in [0, 1]
    at the scale's size. One prompt per cell: the proxy row's native pass is a batch, one proxy per video."""
    from harness import captured
    seed = cfg.seed * 100_003 + 1000 * scale
    base = split_mode(mode)[0]
    captured().pop("out", None)
    runtime.run(prompt(mode, model_name, scale, cfg, seed, cell_samples(cfg, scale, base)))
    frames = latents.decode(captured()["out"].float().cpu(), cfg.pixels)  # (N, T, 3, H, W)
    if base in UPSCALERS and scale > 1:
        frames = upscaler.upscale(frames, scale, mode, cfg.world, cfg.pixels)
    return frames
