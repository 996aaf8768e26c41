"""Where the windowed modes' grain comes from: one denoising step on noised ground truth, per frequency band.

    COMFYUI_PATH=/path/to/ComfyUI python bench/fidelity/grain.py --weights FILE [--videos 2] [--out DIR]

For a 2x frame of known content, ComfyUI's sampler (KSamplerAdvanced, the bench's shift, euler, simple, 20
steps) noises it to the sigma of step k and takes the one step to sigma 0: the model's estimate of the
clean video, x0. Each attention mode's x0 is compared with the truth per radial frequency band of the
luminance (cycles per pixel of the 2x frame): the power of x0 against the truth's, and the power of the
error. Two contents:

- ``zoom``: whole scenes rendered at 2x (what the evaluation samples): every window sees a zoomed-in part;
- ``tiles``: four different scenes at native size side by side: every unshifted window sees exactly one
  native video, as in training.

A defect of the patch (borders, shift, pooling, fusion) shows on both contents; a model that was never
shown zoomed views shows only on ``zoom`` (with ``tiles``, unshifted windows give each tile exactly the
prediction the model makes for that video alone; ``native`` rows are that reference). CPU, a few minutes.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import evaluate  # noqa: E402
import sampling  # noqa: E402
import latents  # noqa: E402
import scenes  # noqa: E402

log = logging.getLogger("fidelity.grain")

BANDS = (0.0, 1 / 16, 1 / 8, 1 / 4, 0.75)  # cycles per pixel (0.5 is the Nyquist limit per axis)
MODES = ("full", "windows", "windows_noshift", "quality_band", "quality_gate")
STEPS = (16, 18, 19)  # of 20: sigma 0.43, 0.25, 0.14 at shift 3


def band_power(frames: torch.Tensor) -> np.ndarray:
    """Mean luminance power per radial frequency band of (N, T, 3, H, W) frames: (len(BANDS) - 1,)."""
    lum = frames[:, :, 0] * 0.299 + frames[:, :, 1] * 0.587 + frames[:, :, 2] * 0.114  # (N, T, H, W)
    lum = lum - lum.mean((-2, -1), keepdim=True)
    H, W = lum.shape[-2:]
    power = torch.fft.fft2(lum).abs().square().mean((0, 1)) / (H * W)  # (H, W)
    fy, fx = torch.fft.fftfreq(H)[:, None], torch.fft.fftfreq(W)[None, :]
    radius = torch.sqrt(fx * fx + fy * fy)
    return np.array([float(power[(radius >= lo) & (radius < hi)].sum()) for lo, hi in zip(BANDS, BANDS[1:])])


def contents(videos: int, frames: int, world: str = "plain") -> dict[str, torch.Tensor]:
    """(N, T, 3, 2 NATIVE, 2 NATIVE) ground truth: whole scenes at 2x, and 2 x 2 tiles of native scenes."""
    zoom = scenes.render(scenes.sample_scenes(30_000, videos, frames, world=world), 2, frames)
    tiles = scenes.render(scenes.sample_scenes(30_001, 4 * videos, frames, world=world), 1, frames)  # (4N, T, 3, S, S)
    tiles = tiles.view(videos, 2, 2, frames, 3, scenes.NATIVE, scenes.NATIVE)
    tiles = tiles.permute(0, 3, 4, 1, 5, 2, 6).reshape(videos, frames, 3, 2 * scenes.NATIVE, 2 * scenes.NATIVE)
    return {"zoom": zoom, "tiles": tiles}


def settings(mode: str, cfg: evaluate.EvalConfig) -> dict | None:
    if mode == "windows_noshift":
        node = sampling.settings_node("windows", cfg)
        node["inputs"]["shift"] = "none"
        return node
    return sampling.settings_node(mode, cfg)


def one_step(runtime, model_name: str, latent_file: Path, mode: str, step: int, cfg: evaluate.EvalConfig,
             seed: int) -> torch.Tensor:
    """x0 estimate of the latent in ``latent_file`` noised to step ``step`` of cfg.steps, in one step."""
    return sample_from(runtime, model_name, latent_file, mode, step, step + 1, cfg, seed)


def sample_from(runtime, model_name: str, latent_file: Path, mode: str, start: int, end: int,
                cfg: evaluate.EvalConfig, seed: int, caption: dict | None = None) -> torch.Tensor:
    """The latent in ``latent_file`` noised to the sigma of step ``start`` of cfg.steps and sampled to step ``end``
    (KSamplerAdvanced, the bench's sampler; the last sigma becomes 0), decoded: (B, T, 3, H, W). ``caption``: the
    UltraGenFidelityContext inputs of the videos' captions (a captioned model), sampled at cfg.cfg_scale against
    the empty caption; without it the zero context at cfg 1."""
    from harness import captured
    p = {"load": {"class_type": "UNETLoader", "inputs": {"unet_name": model_name, "weight_dtype": "default"}},
         "shifted": {"class_type": "ModelSamplingSD3", "inputs": {"model": ["load", 0], "shift": cfg.shift}},
         "cond": {"class_type": "UltraGenFidelityContext", "inputs": caption or {}},
         "uncond": {"class_type": "UltraGenFidelityContext", "inputs": {}},
         "latent": {"class_type": "UltraGenFidelityLatentFile", "inputs": {"path": str(latent_file)}}}
    model = ["shifted", 0]
    node = settings(mode, cfg)
    if node is not None:
        p["settings"] = node
        p["apply"] = {"class_type": "UltraGenApply", "inputs": {"model": model, "settings": ["settings", 0]}}
        model = ["apply", 0]
    p["sample"] = {"class_type": "KSamplerAdvanced", "inputs": {
        "model": model, "add_noise": "enable", "noise_seed": seed, "steps": cfg.steps,
        "cfg": cfg.cfg_scale if caption else 1.0, "sampler_name": "euler", "scheduler": "simple",
        "positive": ["cond", 0], "negative": ["uncond", 0],
        "latent_image": ["latent", 0], "start_at_step": start, "end_at_step": end,
        "return_with_leftover_noise": "disable"}}
    p["capture"] = {"class_type": "UltraGenTestCapture", "inputs": {"samples": ["sample", 0], "key": "out"}}
    captured().pop("out", None)
    runtime.run(p)
    return latents.decode(captured()["out"].float().cpu())


def measure(runtime, model_name: str, videos: int, frames: int, work: Path, modes=MODES,
            world: str = "plain") -> list[dict]:
    cfg = evaluate.EvalConfig(frames=frames, world=world)
    rows = []
    for name, truth in contents(videos, frames, world).items():
        path = work / f"{name}.pt"
        torch.save(latents.encode(truth), path)
        reference = band_power(truth)
        for step in STEPS:
            for mode in modes:
                x0 = one_step(runtime, model_name, path, mode, step, cfg, seed=step)
                rows.append({"content": name, "step": step, "mode": mode, "truth_power": reference.tolist(),
                             "power_ratio": (band_power(x0) / reference).tolist(),
                             "error_ratio": (band_power(x0 - truth) / reference).tolist()})
                log.info("%s step %d %-15s power/truth %s  error/truth %s", name, step, mode,
                         np.round(rows[-1]["power_ratio"], 2), np.round(rows[-1]["error_ratio"], 2))
        if name == "tiles" and "full" in modes:  # the reference: each tile alone at native size, full attention
            native = truth.view(videos, frames, 3, 2, scenes.NATIVE, 2, scenes.NATIVE).permute(0, 3, 5, 1, 2, 4, 6)
            native = native.reshape(4 * videos, frames, 3, scenes.NATIVE, scenes.NATIVE)
            npath = work / "native.pt"
            torch.save(latents.encode(native), npath)
            for step in STEPS:
                x0 = one_step(runtime, model_name, npath, "full", step, cfg, seed=step)
                rows.append({"content": "native", "step": step, "mode": "full",
                             "truth_power": band_power(native).tolist(),
                             "power_ratio": (band_power(x0) / band_power(native)).tolist(),
                             "error_ratio": (band_power(x0 - native) / band_power(native)).tolist()})
    return rows


def table(rows: list[dict]) -> str:
    bands = [f"{lo:.3g}-{hi:.3g}" for lo, hi in zip(BANDS, BANDS[1:])]
    head = "| content | step | mode | " + " | ".join(f"power {b}" for b in bands) + " | " + \
        " | ".join(f"error {b}" for b in bands) + " |"
    lines = [head, "|" + "---|" * (3 + 2 * len(bands))]
    for r in rows:
        values = " | ".join(f"{v:.2f}" for v in r["power_ratio"] + r["error_ratio"])
        lines.append(f"| {r['content']} | {r['step']} | {r['mode']} | {values} |")
    return "\n".join(lines)


def main(argv=None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--weights", type=Path, required=True)
    ap.add_argument("--videos", type=int, default=2)
    ap.add_argument("--frames", type=int, default=scenes.FRAMES)
    ap.add_argument("--out", type=Path, default=None, help="folder for grain.json and grain.md")
    ap.add_argument("--modes", default=",".join(MODES), help=f"some of {', '.join(MODES)} (the native reference "
                                                            "rows come with full)")
    args = ap.parse_args(argv)
    modes = tuple(args.modes.split(","))
    if set(modes) - set(MODES):
        ap.error(f"--modes: {sorted(set(modes) - set(MODES))} are not among {', '.join(MODES)}")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    sampling.first_space_only(args.weights, "grain.py")
    torch.set_num_threads(2)
    work = Path(tempfile.mkdtemp(prefix="ultragen_grain_"))
    runtime = sampling.make_runtime(work / "comfy", cuda=False)
    if str(evaluate.PACK) not in sys.path:
        sys.path.append(str(evaluate.PACK))
    rows = measure(runtime, sampling.install_weights(runtime, args.weights), args.videos, args.frames, work, modes,
                   sampling.weights_world(args.weights))  # the model's own world
    text = table(rows)
    print(text)
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "grain.json").write_text(json.dumps(rows, indent=2))
        (args.out / "grain.md").write_text(text + "\n")
    return rows


if __name__ == "__main__":
    main()
