"""Sample the bench model through ComfyUI's real path in every attention mode and measure the content.

    COMFYUI_PATH=/path/to/ComfyUI python bench/fidelity/evaluate.py --weights FILE --out DIR
    COMFYUI_PATH=... python bench/fidelity/evaluate.py --weights FILE --out DIR --smoke   # one cell, CPU

Every sample is a ComfyUI prompt run by ComfyUI's executor (tests/comfyui/harness.py: the pack loaded as
ComfyUI loads custom nodes): UNETLoader (the bench weights, detected as Wan 2.1) -> ModelSamplingSD3 (the
training shift) -> [UltraGen Attention Settings -> UltraGen Apply] -> [UltraGen Proxy Guidance] -> KSampler
(euler, simple; unconditional weights: cfg 1, the zero context; captioned weights: each video prompted with
the caption of a held-out scene, the empty caption as the negative, cfg ``guidance``, captions.CFG by default),
on an EmptyHunyuanLatentVideo of the scale's size. Modes:

- full: the unpatched model at the larger size (plain extrapolation of full attention)
- windows: windows of the native grid, shifted on odd blocks, no global branch
- quality_band / quality_gate: windows of the native grid + the global branch, band / gate fusion
- fast: the fast preset's windows (a third of the native frames, 3/8 of its height and width), band fusion
- proxy: quality_band + UltraGen Proxy Guidance from a native-size first pass (ComfyUI 0.33+; a batch of
  native passes, one proxy per video, as the node takes them)
- coarse_to_fine: a native-size pass, LatentUpscaleBy (bicubic), KSamplerAdvanced with quality_band from
  step ``c2f_start * steps`` (ComfyUI re-noises the upscaled latent to that step's sigma)
- sol_attn: the unpatched model with ComfyUI's Sol-Attn block-sparse attention, as the core "Model Sparse
  Attention" node applies it (bench/fidelity/fidelity_nodes.py; skipped, with the reason, where
  comfy_kitchen's CUDA sol_attn cannot run)
- bicubic: a native-size pass, decoded and upscaled bicubically in pixels
- lanczos_sharpen: the same native pass, Lanczos-upscaled and sharpened (unsharp mask; metrics.py)
- learned_sr: the same native pass through Real-ESRGAN's compact network trained on this bench's world
  (upscaler.py), as Load Upscale Model reads it
- <upscaler>_of_truth (added with each upscaler row): that upscaler applied to the *true* native video of the
  ground truth row's scenes: what the upscaler reaches from a perfect native pass, whatever the model

A row may also be a variant of a mode, its settings changed: MODE@KEY=VALUE[@KEY=VALUE...] (sampling.py's
VARIANT_KEYS), e.g. coarse_to_fine@start=0.3, quality_gate@global_strength=0.25, quality_band@compression=4,
proxy@proxy_strength=0.5@neighbourhood=all, and coarse_to_fine@proxy_strength=1 (coarse to fine guided by its
native pass, as the "proxy to 4K" templates run): how the defaults are chosen from the table.

At scale 1 only full and fast run (the quality settings cover the whole native grid there). Metrics:
bench/fidelity/metrics.py, against ground-truth renders at the same scale (``ground_truth`` rows: an
independent set of renders, the floor each metric reaches with perfect content). The prompts and the runtime
are sampling.py's; the gate, the table and the files written, outputs.py's.
"""
from __future__ import annotations

import argparse
import json
import logging
import math
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
PACK = HERE.parent.parent
sys.path.insert(0, str(HERE))
import bench_model  # noqa: E402
import captions  # noqa: E402
import latents  # noqa: E402
import metrics  # noqa: E402
import outputs  # noqa: E402
import sampling  # noqa: E402
import scenes  # noqa: E402
import upscaler  # noqa: E402

log = logging.getLogger("fidelity.evaluate")

MODES = ("full", "windows", "quality_band", "quality_gate", "fast", "proxy", "coarse_to_fine", "sol_attn", "bicubic",
         "lanczos_sharpen", "learned_sr")
UPSCALERS = upscaler.METHODS  # a native pass, upscaled in pixels
NATIVE_MODES = ("full", "fast")  # what differs from the plain model at scale 1


@dataclass(frozen=True)
class EvalConfig:
    scales: tuple[int, ...] = (1, 2, 3)
    modes: tuple[str, ...] = MODES
    samples: int = 16  # videos per cell (error bars over these)
    gate_samples: int = 64  # videos of the gate's cells (x1 full attention and its ground truth)
    steps: int = 20
    frames: int = scenes.FRAMES
    shift: float = 3.0
    c2f_start: float = 0.7  # the coarse_to_fine row's start: the demo's (run 58); tables up to run 57 used 0.5
    proxy_radius: int = 4  # the proxy rows' radius_cells: the node's default (run 58); up to run 58: 2
    gt_pool: int = 64  # ground-truth renders per scale for the pooled reference histograms
    seed: int = 0
    seeds: int = 1  # sampling seeds per cell (seed, seed + 1, ...): set-level metrics get error bars over them
    world: str = "plain"  # scenes.WORLDS: the model's training world (its weights' metadata) sets it
    captioned: bool = False  # the weights were trained on captions (their metadata sets it)
    pixels: int = 1  # the weights' latent space, pixels per latent pixel (their metadata sets it)
    guidance: float | None = None  # the KSampler's cfg; None: 1 unconditional, captions.CFG captioned
    extra: dict = field(default_factory=dict)

    @property
    def cfg_scale(self) -> float:
        return self.guidance if self.guidance is not None else captions.CFG if self.captioned else 1.0


def smoke_config() -> EvalConfig:
    return EvalConfig(scales=(2,), modes=("full", "quality_band"), samples=2, gate_samples=2, steps=2, frames=2,
                      gt_pool=4)


# --- metrics -----------------------------------------------------------------------------------------------

def base_mode(spec: str) -> str:
    """The mode of a row's name (a variant's: sampling.split_mode); ValueError for a mode or variant this bench does
    not know."""
    mode = spec.split("@")[0]
    if mode not in MODES:
        raise ValueError(f"row {spec!r}: {mode!r} is not among {', '.join(MODES)}")
    return sampling.split_mode(spec)[0]


MODES_HELP = ("rows, comma separated: modes, or variants of them with their settings changed, "
              "MODE@KEY=VALUE[@KEY=VALUE...] (KEY: " + ", ".join(sampling.VARIANT_KEYS) + "), e.g. "
              "coarse_to_fine@start=0.3")


def check_modes(ap: argparse.ArgumentParser, modes: str) -> None:
    """--modes checked before any work: argparse's error, naming the row, for an unknown mode or variant."""
    for spec in modes.split(","):
        try:
            base_mode(spec)
        except ValueError as e:
            ap.error(f"--modes: {e}")


def mean_sem(values) -> tuple[float, float, int]:
    v = np.asarray([x for x in values if not math.isnan(x)], np.float64)
    if len(v) == 0:
        return float("nan"), float("nan"), 0
    return float(v.mean()), float(v.std(ddof=1) / math.sqrt(len(v))) if len(v) > 1 else float("nan"), len(v)


def seam_borders(cfg: EvalConfig, scale: int) -> list[int]:
    """Pixel positions of the quality windows' borders at ``scale`` (unshifted and shifted blocks), the
    same for every row of a scale so that the seam column compares rows (none at scale 1)."""
    from ultragen_core.attention.windows import tile_axis
    side = sampling.native_grid(cfg)[1]
    size = side * scale
    bounds = set()
    for shift in (0, side // 2):
        bounds.update(tile_axis(size, side, shift).segment_bounds[1:-1])
    return sorted(b * cfg.pixels * latents.PATCH for b in bounds)


SET_METRICS = ("colour_js", "edge_js", "orientation_js", "detail_error", "hf_log2", "flicker")


def summarise(sets: list[np.ndarray], scale: int, reference: dict, borders: list[int]) -> dict:
    """A cell's metrics from its videos, one (N, T, H, W, 3) array per sampling seed. Per-video metrics:
    mean ± standard error over all videos; set metrics (SET_METRICS): with several seeds, mean ± standard
    error over the seeds' values, with one, the value ± its bootstrap std (JS) or no error bar."""
    videos = np.concatenate(sets)
    rows = [metrics.per_video(v, scale) for v in videos]
    out = {k: mean_sem([r[k] for r in rows]) for k in ("count_error", "duplication", "continuity")}
    out["size_ratio"] = mean_sem([r["size"] / reference["size"] for r in rows])
    out["seam"] = metrics.seam_of_set(videos, borders, borders) if borders else (float("nan"), float("nan"))
    per_seed = [{**metrics.set_distances(v, scale, reference), **metrics.detail(v, scale, reference)} for v in sets]
    for key in SET_METRICS:
        if len(sets) > 1:
            out[key] = mean_sem([p[key][0] if isinstance(p[key], tuple) else p[key] for p in per_seed])[:2]
        else:
            value = per_seed[0][key]
            out[key] = value if isinstance(value, tuple) else (value, float("nan"))
    out["spectrum_ratio"] = metrics.detail(videos, scale, reference)["spectrum_ratio"]
    out["videos"], out["seeds"] = len(rows), len(sets)
    return out


def ground_truth(cfg: EvalConfig, scale: int, device="cpu") -> dict:
    """The scale's ground truth: the reference statistics (a pool of renders), the truth row's videos (other
    scenes, through the latent space: the floor every metric reaches with perfect content, a perfect latent
    decoded), their scenes, its cell and the seam borders."""
    t0 = time.time()
    pool = scenes.render(scenes.sample_scenes(10_000 + scale, cfg.gt_pool, cfg.frames, world=cfg.world), scale,
                         cfg.frames, device)
    reference = metrics.reference_stats(metrics.to_numpy(pool), scale)
    truth_scenes = scenes.sample_scenes(20_000 + scale, sampling.cell_samples(cfg, scale, "ground_truth"), cfg.frames,
                                        world=cfg.world)
    videos = scenes.render(truth_scenes, scale, cfg.frames, device)
    videos = metrics.to_numpy(latents.through_space(videos, cfg.pixels) if cfg.pixels > 1 else videos)
    borders = seam_borders(cfg, scale) if scale > 1 else []
    cell = {"scale": scale, "mode": "ground_truth", "status": "ok", "seconds": round(time.time() - t0, 2),
            **summarise([videos], scale, reference, borders)}
    return {"scale": scale, "reference": reference, "scenes": truth_scenes, "videos": videos, "borders": borders,
            "cell": cell}


def upscaled_truth(cfg: EvalConfig, truth: dict, device="cpu") -> list[dict]:
    """The ``<upscaler>_of_truth`` cells of cfg's upscalers at truth's scale (none at 1x): each upscaler applied to
    the true native video of the truth row's scenes (through the latent space), what it reaches from a perfect
    native pass."""
    scale, cells = truth["scale"], []
    if scale == 1:
        return cells
    native = scenes.render(truth["scenes"], 1, cfg.frames, device).cpu()
    native = latents.through_space(native, cfg.pixels) if cfg.pixels > 1 else native
    for mode in (m for m in cfg.modes if m in UPSCALERS):
        cell, t0 = {"scale": scale, "mode": f"{mode}_of_truth"}, time.time()
        try:
            videos = metrics.to_numpy(upscaler.upscale(native, scale, mode, cfg.world, cfg.pixels))
        except Exception as e:  # e.g. learned_sr's weights missing: the other rows stand
            cells.append({**cell, "status": f"failed: {type(e).__name__}: {str(e)[:300]}"})
            continue
        cells.append({**cell, "status": "ok", "seconds": round(time.time() - t0, 2),
                      **summarise([videos], scale, truth["reference"], truth["borders"])})
    return cells


def evaluate_truth_only(cfg: EvalConfig) -> dict:
    """The rows that need no model (ground_truth and the upscalers' _of_truth rows) at cfg's scales: CPU, minutes."""
    results = {"config": asdict(cfg), "cells": [], "device": "cpu", "truth_only": True}
    for scale in cfg.scales:
        truth = ground_truth(cfg, scale)
        results["cells"] += [truth["cell"], *upscaled_truth(cfg, truth)]
    return results


def evaluate(runtime, model_name: str, cfg: EvalConfig, device="cpu", on_cell=None) -> tuple[dict, dict]:
    """(results, samples): results per (scale, mode) cell, and the decoded videos of each cell for the grids.

    on_cell(results), if given, runs after every measured cell (run_evaluation writes the partial results:
    a run stopped by a time limit keeps the cells it finished)."""
    results = {"config": asdict(cfg), "cells": []}
    samples: dict[tuple[int, str], np.ndarray] = {}
    why_no_proxy = sampling.proxy_supported()
    why_no_sol = sampling.sol_attn_unavailable() if "sol_attn" in map(base_mode, cfg.modes) else None
    for scale in cfg.scales:
        truth = ground_truth(cfg, scale, device)
        reference, borders = truth["reference"], truth["borders"]
        samples[(scale, "ground_truth")] = truth["videos"]
        results["cells"].append(truth["cell"])
        for mode in cfg.modes:
            cell, (base, variant) = {"scale": scale, "mode": mode}, sampling.split_mode(mode)
            if scale == 1 and base not in NATIVE_MODES:
                continue
            if sampling.guided(base, variant) and why_no_proxy:
                results["cells"].append({**cell, "status": f"skipped: {why_no_proxy}"})
                continue
            if base == "sol_attn" and why_no_sol:
                results["cells"].append({**cell, "status": f"skipped: {why_no_sol}"})
                continue
            t0 = time.time()
            try:
                sets = [metrics.to_numpy(sampling.generate(runtime, mode, model_name, scale,
                                                           replace(cfg, seed=cfg.seed + i)))
                        for i in range(cfg.seeds)]
            except Exception as e:  # one broken cell must not lose the others' results
                log.exception("cell %s x%d failed", mode, scale)
                results["cells"].append({**cell, "status": f"failed: {type(e).__name__}: {str(e)[:300]}"})
                continue
            seconds = time.time() - t0
            samples[(scale, mode)] = sets[0]
            cell.update(status="ok", seconds=round(seconds, 2), **summarise(sets, scale, reference, borders))
            results["cells"].append(cell)
            if on_cell is not None:
                on_cell(results)
            log.info("x%d %-15s %.1f s  count error %.3f  duplication %.3f", scale, mode, seconds,
                     cell["count_error"][0], cell["duplication"][0])
        results["cells"] += upscaled_truth(cfg, truth, device)
    return results, samples


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--weights", type=Path, required=True, help="the bench model (bench/fidelity/train.py)")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--samples", type=int, default=EvalConfig.samples)
    ap.add_argument("--gate-samples", type=int, default=EvalConfig.gate_samples,
                    help="videos of the gate's cells (x1 full attention and its ground truth)")
    ap.add_argument("--steps", type=int, default=EvalConfig.steps)
    ap.add_argument("--seeds", type=int, default=EvalConfig.seeds, help="sampling seeds per cell")
    ap.add_argument("--cfg", type=float, default=None,
                    help=f"KSampler cfg (default: 1 unconditional weights, {captions.CFG:g} captioned ones)")
    ap.add_argument("--scales", default="1,2,3")
    ap.add_argument("--modes", default=",".join(MODES), help=MODES_HELP)
    ap.add_argument("--smoke", action="store_true", help="one cell, 2 samples, 2 steps on the CPU")
    args = ap.parse_args(argv)
    check_modes(ap, args.modes)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    cfg = smoke_config() if args.smoke else EvalConfig(
        scales=tuple(int(s) for s in args.scales.split(",")), modes=tuple(args.modes.split(",")),
        samples=args.samples, gate_samples=args.gate_samples, steps=args.steps, seeds=args.seeds, guidance=args.cfg)
    return run_evaluation(args.weights, args.out, cfg, args.smoke)


def run_evaluation(weights: Path, out: Path, cfg: EvalConfig, smoke: bool, runtime=None, cpu: bool = False) -> dict:
    cuda = torch.cuda.is_available() and not smoke and not cpu
    if smoke:
        torch.set_num_threads(1)
    if runtime is None:
        import tempfile
        runtime = sampling.make_runtime(Path(tempfile.mkdtemp(prefix="ultragen_fidelity_")), cuda)
    if str(PACK) not in sys.path:
        sys.path.append(str(PACK))  # ultragen_core for the fast preset's windows (last: the pack's nodes/
        # package must not hide ComfyUI's nodes module)
    out.mkdir(parents=True, exist_ok=True)

    def partial(results: dict) -> None:
        (out / "results.json").write_text(json.dumps({**results, "partial": True}, indent=2))

    name = sampling.install_weights(runtime, weights)
    meta = sampling.weights_metadata(weights)  # how the weights were trained: read once
    # the truth, and the learned upscaler, of the model's world; its captions if it was trained on them
    cfg = replace(cfg, world=bench_model.world_of(meta), captioned=bench_model.captioned_of(meta),
                  pixels=bench_model.pixels_of(meta))  # and its latent space
    log.info("sampling %s weights at cfg %g", "captioned" if cfg.captioned else "unconditional", cfg.cfg_scale)
    results, samples = evaluate(runtime, name, cfg, "cuda" if cuda else "cpu", partial)
    results["device"] = torch.cuda.get_device_name() if cuda else "cpu"
    results["cfg"] = cfg.cfg_scale
    results["trained"] = {"steps": int(meta.get("steps", 0)), "half_size_steps": bench_model.half_size_steps_of(meta)}
    results["gate"] = outputs.gate(results)
    outputs.write_outputs(results, samples, out, cfg.frames)
    log.info("%s", outputs.gate_text(results))
    return results


if __name__ == "__main__":
    main()
