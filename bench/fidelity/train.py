"""Train the fidelity bench's own small Wan model (ComfyUI's WanModel class) on procedural scenes.

    COMFYUI_PATH=/path/to/ComfyUI python bench/fidelity/train.py --minutes 9 --out DIR
    COMFYUI_PATH=... python bench/fidelity/train.py --minutes 4 --resume DIR/ultragen_fidelity_wan.safetensors --out DIR2
    COMFYUI_PATH=... python bench/fidelity/train.py --minutes 8 --low-res-minutes 4.5 --framing evaluation --out DIR
    COMFYUI_PATH=... python bench/fidelity/train.py --minutes 9 --schedule-minutes 18 --state /tmp/run.pt --out DIR
        # the first half of one 18-minute schedule; the same command again goes on with the second half
    COMFYUI_PATH=... python bench/fidelity/train.py --minutes 9 --captions --out DIR   # conditioned on captions
    COMFYUI_PATH=... python bench/fidelity/train.py --minutes 9 --captions --pixels 2 --out DIR   # 2 x 2 px a latent px
    COMFYUI_PATH=... python bench/fidelity/train.py --smoke --out DIR   # a tiny model, a few CPU steps

Data: bench/fidelity/scenes.py at the native size (64 x 64 px, 8 frames), fresh scenes every step, rendered on
the training device, at many framings: half the videos show the whole scene (as the evaluation does), half a
crop zoomed 1.25-4x (what a window of a 2x-4x sample sees), with objects of a wider size range than the
evaluation's (scenes.TRAIN_RADIUS). Training scenes come from seeds the evaluation never uses (held out).
Latents: bench/fidelity/latents.py (16 x 8 x 64 x 64, 32 x 32 tokens; with ``--pixels 2`` each latent pixel 2 x 2
pixels averaged, 16 x 8 x 32 x 32, 16 x 16 tokens, as lossy as a VAE: run 56's space), normalised by ComfyUI's own
Wan 2.1 latent format exactly as ComfyUI does before calling the model, so the weights work in ComfyUI's sampling
path unchanged; after that normalisation the data spread about 1, as Wan's latents do. Objective: Wan's
rectified flow as ComfyUI samples it (model_sampling CONST): x_s = (1 - s) x0 + s e, the model takes
timestep 1000 s and predicts e - x0. s is drawn as ComfyUI's ModelSamplingSD3 node with ``SHIFT`` spaces
sampling steps: s = shift u / (1 + (shift - 1) u), u uniform; ``--high-noise-share`` moves a share of the draws to
0.9-1, the first steps of sampling, where the objects are decided (docs/FIDELITY.md).
Conditioning: one fixed text context, all zeros (bench/fidelity/fidelity_nodes.py feeds the same in
ComfyUI), so the model is unconditional; with ``--captions`` each video's caption instead (captions.py: the
objects its framing shows, by colour, shape and size), a tenth of them emptied, as a text-to-video model is
trained on its prompts for classifier-free guidance. bf16 mixed precision through accelerate on CUDA, each
block's forward compiled there (``--compile``, as ComfyUI's TorchCompileModel compiles blocks); an EMA of the
weights is what gets saved (a power-function EMA, ``ema_decay``: it averages over about the last tenth of the
steps, so a run of a thousand steps is not dominated by its first, untrained weights), as bf16 safetensors with
the key layout ComfyUI's UNETLoader detects as Wan 2.1 (15.5 MiB: below the 16 MiB a device run hands back).
``--resume`` starts model and EMA from saved weights (no optimiser state: it would not fit in 16 MiB; the learning
rate warms up again) and counts steps on, in the weights' world, captions and framings unless told otherwise (the
framings are recorded since 2026-12-05: older weights ask for ``--framing``; run 54 resumed whole-scene weights on
crops by mistake).
Training runs for a wall-clock budget (--minutes); the learning rate follows a cosine over that budget.
``--state`` keeps the whole training state (weights, EMA, optimiser, the schedule's counters) in a file, so one
schedule (``--schedule-minutes``) can span several calls of a device machine kept warm, where ``--resume`` would
restart the warm-up, the cosine and the optimiser (run 52 lost ground that way: docs/FIDELITY.md).
Progressive resolution (``--low-res-minutes``), as video models are trained: the first minutes of the budget show
the same scenes at half the size per side (32 x 32 px, 16 x 16 tokens: a sixteenth of the attention cost, so many
more steps learn the scenes' layout, objects and motion), twice the batch; then native size, the EMA restarted.
The weights record how many of their steps were at half size (run 55a's were all: docs/FIDELITY.md); ``--half-size``
trains every step there (run 56), and the weights name their latent space (a resume keeps it).
"""
from __future__ import annotations

import argparse
import copy
import json
import logging
import math
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import captions  # noqa: E402
import latents  # noqa: E402
import scenes  # noqa: E402
import weight_parts  # noqa: E402
from bench_model import (MODELS, SHIFT, SMOKE_MODEL, WEIGHTS, build_model, captioned_of,  # noqa: E402
                         compile_model_blocks, fixed_context, framing_of, half_size_steps_of, load, pixels_of, save,
                         uncompile_model_blocks, wan_latent_format, world_of)

log = logging.getLogger("fidelity.train")

EMA_GAMMA = 7.0  # ema_decay


def ema_decay(step: int, gamma: float = EMA_GAMMA) -> float:
    """The power-function EMA's decay at ``step`` (1, 2, ... since the EMA started): (1 - 1 / step)^(gamma + 1).
    The average then weighs each past step as step^gamma, i.e. about the last 1 / (gamma + 1) of the run
    (gamma 7: the last 12%). A fixed 0.999 would average the first thousand steps' weights into a short run."""
    return (1.0 - 1.0 / step) ** (gamma + 1)


HIGH_NOISE = (0.9, 1.0)  # --high-noise-share draws s uniformly here: where the committed model loses its objects
# (sampling from the truth noised to s = 0.9 keeps them: docs/FIDELITY.md, "Where in the schedule the objects are lost")


def sample_sigmas(batch: int, device, shift: float = SHIFT, high_noise_share: float = 0.0) -> torch.Tensor:
    """Noise levels s of a training batch: s = shift u / (1 + (shift - 1) u), u uniform (ModelSamplingSD3's
    spacing); with ``high_noise_share``, that share of the draws is uniform over HIGH_NOISE instead."""
    u = torch.rand(batch, device=device)
    s = shift * u / (1 + (shift - 1) * u)
    if high_noise_share > 0:
        lo, hi = HIGH_NOISE
        top = torch.rand(batch, device=device) < high_noise_share
        s = torch.where(top, lo + (hi - lo) * torch.rand(batch, device=device), s)
    return s


# Training framings: "mixed" (the recipe: whole scenes and zoomed crops, objects of a wider size range) and
# "evaluation" (whole scenes with the evaluation's object sizes only: a diagnostic that tells what the crops cost
# the gate). name -> (share of whole-scene videos, object radius range)
FRAMINGS = {"mixed": (scenes.WHOLE_SHARE, scenes.TRAIN_RADIUS), "evaluation": (1.0, scenes.RADIUS),
            "mostly_whole": (0.8, scenes.TRAIN_RADIUS)}  # a curriculum's second stage: crops at a lower share

FRAMING_HELP = ("training framings: mixed (the recipe: half whole scenes, half zoomed crops), evaluation (whole "
                "scenes with the evaluation's object sizes only) or mostly_whole (a fifth crops: a curriculum's "
                "second stage); default: the resumed weights' (those that do not record it ask for it), mixed from "
                "scratch")
MODEL_HELP = ("the model a run from scratch builds: small (7 blocks of width 256, 2 heads), wide (8 blocks of "
              "width 384, 3 heads; its weights are written in parts under 16 MiB) or tiny (3 blocks of width 128, for "
              "CPU pilots: pilot.py); --resume keeps the saved size")
WORLD_HELP = ("the bench world (scenes.py): plain, or detailed (fine ground texture that only 2x and 3x, and "
              "zoomed crops, resolve); default: the resumed weights' world, plain from scratch")
NATIVE_FRAMING_HELP = ("the training framings from where progressive resolution moves to native size (default: "
                       "--framing): e.g. whole scenes at half size, where the objects and their motion are learnt, "
                       "then mostly_whole, whose crops teach the zoomed views the windows see at 2x-3x")
LOW_RES_HELP = ("minutes of the budget, from its start, at half the size per side (16 x 16 tokens, twice the batch) "
                "before native size: progressive resolution")

HIGH_NOISE_HELP = ("share of training draws at noise levels 0.9-1 (uniform), the rest as ModelSamplingSD3 spaces them "
                   "(default 0): the first steps of sampling, where objects and their paths are decided")
CAPTIONS_HELP = ("condition the model on captions, the objects each video shows (captions.py), a tenth of them "
                 "emptied, as text-to-video models are trained for classifier-free guidance (default: as the resumed "
                 "weights or --state were trained; off from scratch)")
COMPILE_HELP = ("compile each transformer block's forward with torch.compile, as ComfyUI's own TorchCompileModel "
                "does (default: on CUDA; a step that fails compiled runs again without it, logged)")
STATE_HELP = ("a file for the whole training state (model, EMA, optimiser, the schedule's counters), written at the "
              "end; if it exists, the run in it goes on where it stopped, with its own settings: one schedule over "
              "several calls of a device machine kept warm (keep the file outside $OUT: it is larger than a call "
              "hands back)")
HALF_SIZE_HELP = ("every step at half size (32 x 32 px, 16 x 16 tokens, twice the batch), none at native size: "
                  "weights read at half size (pilot.py --weights); a --state run keeps it")
PIXELS_HELP = ("the latent space: pixels per latent pixel per side (ultragen_core/demo.py): 1, one per pixel (32 x 32 "
               "tokens at native size), or 2, each 2 x 2 pixels averaged and decoded bilinear, as a VAE compresses "
               "(16 x 16 tokens); default: the resumed weights', 1 from scratch")
SCHEDULE_HELP = ("the run's whole schedule in minutes (cosine, warm-up, --low-res-minutes), when it spans several "
                 "calls of --minutes each with --state; default: --minutes")

TRAIN_SEED = 1 << 40  # training scenes: seeds from here on (the evaluation's are below 10^6: held out)


def batch_latents(step: int, batch: int, frames: int, fmt, device, framing: str = "mixed",
                  low_res: bool = False, world: str = "plain", with_context: bool = False, pixels: int = 1):
    """A fresh batch of scenes at many framings (seeded by the step), as the model sees them:
    process_in(encode(frames, pixels)), (B, 16, T, 64 / pixels, 64 / pixels); low_res: each frame averaged 2 x 2
    first (half of that per side).
    with_context: (latents, context), the context (B, 3, 4096) the videos' captions (captions.py: the objects
    each framing shows), a captions.DROP share of them emptied (seeded by the step too)."""
    seed = TRAIN_SEED + 1_000_003 * step
    whole_share, radius = FRAMINGS[framing]
    zoom, origin = scenes.sample_views(seed, batch, whole_share)
    scene_list = scenes.sample_scenes(seed, batch, frames, radius, world)
    clips = scenes.render(scene_list, 1, frames, device, zoom=zoom, origin=origin)
    if low_res:
        b, t = clips.shape[:2]
        clips = torch.nn.functional.avg_pool2d(clips.flatten(0, 1), 2).unflatten(0, (b, t))
    x0 = fmt.process_in(latents.encode(clips, pixels))
    if not with_context:
        return x0
    context = captions.encode(captions.of_scenes(scene_list, frames, zoom, origin))  # (B, 3, 4096)
    return x0, captions.drop(context, torch.Generator().manual_seed(seed)).to(device)


def train(out: Path, minutes: float, smoke: bool, batch: int, lr: float, frames: int,
          resume: Path | None = None, framing: str | None = None, low_res_minutes: float = 0.0,
          model: str = "small", world: str | None = None, state: Path | None = None,
          schedule_minutes: float | None = None, native_framing: str | None = None,
          compile_blocks: bool | None = None, high_noise_share: float = 0.0, captioned: bool | None = None,
          half_size: bool = False, pixels: int | None = None) -> dict:
    """Train (see the module's docstring; the arguments are main()'s options). half_size: every step at half size,
    for CPU pilots (pilot.py) whose models are sampled at that size, never at native size. pixels: the latent
    space's pixels per latent pixel (latents.space_name; default: the resumed weights', 1 from scratch)."""
    import comfy.model_management
    # ComfyUI 0.33's RoPE kernel (comfy_kitchen) has no backward; this flag selects its plain-torch RoPE
    was_training = getattr(comfy.model_management, "in_training", False)
    comfy.model_management.in_training = True
    try:
        for name, value in (("framing", framing), ("native_framing", native_framing)):
            if value is not None and value not in FRAMINGS:
                raise ValueError(f"{name} must be one of {list(FRAMINGS)}, got {value!r}.")
        if not 0 <= high_noise_share < 1:
            raise ValueError(f"high_noise_share is a share of the training draws, at least 0 and below 1, got "
                             f"{high_noise_share:g}.")
        if native_framing is not None and low_res_minutes <= 0:
            raise ValueError(f"native_framing ({native_framing!r}) is the framing from where progressive resolution "
                             f"moves to native size: give --low-res-minutes too, or use --framing alone.")
        schedule = minutes if schedule_minutes is None else schedule_minutes
        if low_res_minutes < 0 or (low_res_minutes > 0 and low_res_minutes >= schedule):
            raise ValueError(f"low_res_minutes must be at least 0 and below the budget ({schedule:g} minutes), got "
                             f"{low_res_minutes:g}: the run has to end at native size.")
        if state is not None and Path(state).exists() and resume is not None:
            raise ValueError(f"--state {state} exists and holds a run to continue; --resume starts another from "
                             f"weights: give one or the other (or remove the state file).")
        if half_size and low_res_minutes:
            raise ValueError(f"half_size trains every step at half size; low_res_minutes ({low_res_minutes:g}) "
                             f"would move to native size: give one or the other.")
        if model not in MODELS:
            raise ValueError(f"model must be one of {list(MODELS)}, got {model!r}.")
        if world is not None and world not in scenes.WORLDS:
            raise ValueError(f"world must be one of {list(scenes.WORLDS)}, got {world!r}.")
        if pixels is not None and pixels not in latents.SPACES.values():
            raise ValueError(f"pixels (per latent pixel) must be one of {sorted(latents.SPACES.values())}, got "
                             f"{pixels!r}.")
        return _train(out, minutes, smoke, batch, lr, frames, resume, framing, low_res_minutes, model, world,
                      state_path=state, schedule_minutes=schedule, native_framing=native_framing,
                      compile_blocks=compile_blocks, high_noise_share=high_noise_share, captioned=captioned,
                      half_size=half_size, pixels=pixels)
    finally:
        comfy.model_management.in_training = was_training
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def _train(out: Path, minutes: float, smoke: bool, batch: int, lr: float, frames: int,
           resume: Path | None = None, framing: str | None = None, low_res_minutes: float = 0.0,
           model_size: str = "small", world: str | None = None, *, state_path: Path | None,
           schedule_minutes: float, native_framing: str | None, compile_blocks: bool | None = None,
           high_noise_share: float = 0.0, captioned: bool | None = None, half_size: bool = False,
           pixels: int | None = None) -> dict:
    from accelerate import Accelerator
    cuda = torch.cuda.is_available() and not smoke
    accelerator = Accelerator(mixed_precision="bf16" if cuda else "no", cpu=not cuda)
    device = accelerator.device
    cfg, done, done_seconds = (SMOKE_MODEL if smoke else MODELS[model_size]), 0, 0.0
    trained_on, was_captioned, was_framed = "plain", False, None  # the resumed weights' (none: plain, none, none)
    half_before = 0  # of the steps before this run, how many at half size (None: weights that do not record it)
    if resume is not None:
        sd, meta = load(resume)
        cfg, done, done_seconds = json.loads(meta["config"]), int(meta.get("steps", 0)), float(meta.get("seconds", 0))
        was_pixels = pixels_of(meta)  # ValueError for a space this bench does not know
        if pixels is not None and pixels != was_pixels:
            raise ValueError(f"{resume} was trained in the latent space of {was_pixels} px per latent pixel; "
                             f"--pixels {pixels} would show it another: leave --pixels out, or train from scratch.")
        pixels = was_pixels
        trained_on, was_captioned, was_framed = world_of(meta), captioned_of(meta), framing_of(meta)
        half_before = half_size_steps_of(meta)
        if framing is None and was_framed is None:
            raise ValueError(f"{resume} does not record the framings it was trained on (written before weights "
                             f"recorded them): give --framing, one of {', '.join(FRAMINGS)}.")
    pixels = pixels or 1  # from scratch: the first space unless told otherwise
    world = world or trained_on  # a resumed run stays in its weights' world unless told otherwise
    captioned = was_captioned if captioned is None else captioned  # and on its captions (or learns them)
    framing = framing or was_framed or "mixed"  # and on its framings
    native_framing = native_framing or framing
    # the schedule (cosine, warm-up, half size, EMA) may span several calls: its counters, kept in --state
    run = dict(steps=0, seconds=0.0, low_res_steps=0, ema_start=0)
    saved = None
    if state_path is not None and Path(state_path).exists():
        saved = torch.load(state_path, map_location="cpu")
    if saved is not None:  # the run goes on as it was set up; this call's other settings give way to it
        cfg, done, done_seconds, run = saved["config"], saved["done"], saved["done_seconds"], saved["run"]
        half_before = saved.get("half_before")  # states written before it was kept: not known
        settings = saved["settings"]
        batch, lr, framing = settings["batch"], settings["lr"], settings["framing"]
        native_framing = settings.get("native_framing", framing)
        high_noise_share = settings.get("high_noise_share", 0.0)
        low_res_minutes, half_size = settings["low_res"], settings.get("half_size", False)
        pixels = settings.get("pixels", 1)
        schedule_minutes, world = settings["schedule_minutes"], settings["world"]
        captioned = settings.get("captioned", False)
        log.info("continuing the run in %s: step %d of its schedule, %.0f of its %.1f minutes done", state_path,
                 run["steps"], run["seconds"] / 60, schedule_minutes)
    model = build_model(cfg)
    if saved is not None:
        model.load_state_dict(saved["model"])
    elif resume is not None:
        model.load_state_dict(sd)
        log.info("resuming from %s: %d steps, %.0f s of training so far", resume, done, done_seconds)
    ema = copy.deepcopy(model).requires_grad_(False)
    if saved is not None:
        ema.load_state_dict(saved["ema"])
    opt = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.99), weight_decay=0.01)
    model, opt = accelerator.prepare(model, opt)
    if saved is not None:
        opt.load_state_dict(saved["opt"])  # after prepare: the moments land on the parameters' device
    ema.to(device)
    ema_params, params = list(ema.parameters()), list(accelerator.unwrap_model(model).parameters())
    compiled = compile_blocks if compile_blocks is not None else cuda
    if compiled:
        compile_model_blocks(accelerator.unwrap_model(model))
    fmt = wan_latent_format()
    fmt.latents_mean, fmt.latents_std = fmt.latents_mean.to(device), fmt.latents_std.to(device)
    budget, start, step, losses = minutes * 60, time.time(), 0, []  # step: of this call (done: before the run)
    schedule, prior = schedule_minutes * 60, run["steps"]  # prior: the run's steps in earlier calls
    max_steps = 3 if smoke else None  # a smoke call: 3 steps, of a schedule of 3 per `minutes` of it
    schedule_steps = max(1, round(3 * schedule_minutes / minutes)) if smoke and minutes > 0 else 3
    low_res_steps, ema_start = run["low_res_steps"], run["ema_start"]  # steps at half size; where the EMA started
    while True:
        elapsed = time.time() - start
        k = prior + step  # the step of the run's schedule
        if (max_steps is not None and (step >= max_steps or k >= schedule_steps)) \
                or (max_steps is None and (elapsed >= budget or run["seconds"] + elapsed >= schedule)):
            break
        frac = min(1.0, (run["seconds"] + elapsed) / schedule) if max_steps is None else k / schedule_steps
        low_res = half_size or low_res_minutes > 0 and frac < low_res_minutes / schedule_minutes \
            and (max_steps is None or k < schedule_steps - 1)
        if not low_res and low_res_steps == k and k > 0:  # native size from here: the EMA starts again
            ema.load_state_dict(accelerator.unwrap_model(model).state_dict())
            ema_start = k
            log.info("step %d: native size from here (%d steps at half size)", done + k, low_res_steps)
        low_res_steps += low_res
        size = 2 * batch if low_res else batch
        warm = min(1.0, (k + 1) / 200)
        for group in opt.param_groups:
            group["lr"] = lr * warm * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * frac)))
        drawn = batch_latents(done + k, size, frames, fmt, device, framing if low_res else native_framing,
                              low_res, world, with_context=captioned, pixels=pixels)  # (B, 16, T, h, w) [, context]
        x0, context = drawn if captioned else (drawn, fixed_context(size, device))
        noise = torch.randn_like(x0)
        s = sample_sigmas(size, device, high_noise_share=high_noise_share)
        xs = (1 - s.view(-1, 1, 1, 1, 1)) * x0 + s.view(-1, 1, 1, 1, 1) * noise

        def forward_backward():
            with accelerator.autocast():
                pred = model(xs, s * 1000, context)
            loss = torch.nn.functional.mse_loss(pred.float(), noise - x0)
            accelerator.backward(loss)
            return loss

        try:
            loss = forward_backward()
        except Exception as e:  # noqa: BLE001  (the compiler's failure: the run goes on without it)
            if not compiled:
                raise
            log.warning("step %d failed compiled (%s: %s); the blocks run uncompiled from here", done + k,
                        type(e).__name__, str(e).splitlines()[0] if str(e) else "")
            uncompile_model_blocks(accelerator.unwrap_model(model))
            compiled = False
            opt.zero_grad(set_to_none=True)
            loss = forward_backward()
        accelerator.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        decay = ema_decay(k - ema_start + 1)
        with torch.no_grad():
            torch._foreach_lerp_(ema_params, params, 1 - decay)
        losses.append(loss.detach())  # read back every 100 steps only (no GPU sync per step)
        if step % 100 == 0:
            losses[-100:] = [float(v) for v in losses[-100:]]
            log.info("step %d  loss %.4f  %.0f s  %.2f steps/s", done + k, losses[-1], time.time() - start,
                     (step + 1) / max(time.time() - start, 1e-9))
        step += 1
    seconds = time.time() - start
    losses = [float(v) for v in losses]
    out.mkdir(parents=True, exist_ok=True)
    path = out / WEIGHTS.name
    run = dict(steps=prior + step, seconds=run["seconds"] + seconds, low_res_steps=low_res_steps,
               ema_start=ema_start)
    half_size_steps = None if half_before is None else half_before + low_res_steps
    save(ema, path, cfg, smoke, done + run["steps"], done_seconds + run["seconds"], world, captioned,
         native_framing, half_size_steps, pixels)
    if state_path is not None:  # everything the next call needs to go on with this run
        Path(state_path).parent.mkdir(parents=True, exist_ok=True)
        torch.save({"config": cfg, "done": done, "done_seconds": done_seconds, "run": run, "half_before": half_before,
                    "settings": dict(batch=batch, lr=lr, framing=framing, native_framing=native_framing,
                                     high_noise_share=high_noise_share, captioned=captioned,
                                     low_res=low_res_minutes, half_size=half_size, pixels=pixels,
                                     schedule_minutes=schedule_minutes, world=world),
                    "model": {k: v.cpu() for k, v in accelerator.unwrap_model(model).state_dict().items()},
                    "ema": {k: v.cpu() for k, v in ema.state_dict().items()}, "opt": opt.state_dict()}, state_path)
    tail = losses[-50:] or [float("nan")]
    info = {"weights": str(path), "model": cfg, "steps": step, "seconds": round(seconds, 1), "batch": batch,
            "resumed_from": str(resume) if resume else None, "steps_total": done + run["steps"],
            "seconds_total": round(done_seconds + run["seconds"], 1), "latent_space": latents.space_name(pixels),
            "state": str(state_path) if state_path else None, "schedule_minutes": schedule_minutes,
            "schedule_steps": run["steps"], "schedule_seconds": round(run["seconds"], 1),
            "frames": frames, "world": world, "framing": framing, "native_framing": native_framing,
            "low_res_minutes": low_res_minutes,
            "low_res_steps": low_res_steps, "half_size_steps_total": half_size_steps, "half_size": half_size,
            "ema": f"power, gamma {EMA_GAMMA:g}, from step {ema_start}", "lr": lr, "shift": SHIFT,
            "high_noise_share": high_noise_share, "captioned": captioned, "loss_first": losses[0] if losses else None,
            "loss_last50": sum(tail) / len(tail), "device": str(device), "smoke": smoke,
            "mixed_precision": accelerator.mixed_precision, "compiled": compiled}
    (out / "train.json").write_text(json.dumps(info, indent=2))
    return info


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, required=True, help="folder for the weights and train.json")
    ap.add_argument("--minutes", type=float, default=4.5, help="wall-clock training budget")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=4e-4)
    ap.add_argument("--frames", type=int, default=scenes.FRAMES)
    ap.add_argument("--resume", type=Path, default=None, help="start from these weights (written by this script)")
    ap.add_argument("--framing", choices=list(FRAMINGS), default=None, help=FRAMING_HELP)
    ap.add_argument("--low-res-minutes", type=float, default=0.0, help=LOW_RES_HELP)
    ap.add_argument("--native-framing", choices=list(FRAMINGS), default=None, help=NATIVE_FRAMING_HELP)
    ap.add_argument("--model", choices=list(MODELS), default="small", help=MODEL_HELP)
    ap.add_argument("--world", choices=list(scenes.WORLDS), default=None, help=WORLD_HELP)
    ap.add_argument("--state", type=Path, default=None, help=STATE_HELP)
    ap.add_argument("--schedule-minutes", type=float, default=None, help=SCHEDULE_HELP)
    ap.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None, help=COMPILE_HELP)
    ap.add_argument("--high-noise-share", type=float, default=0.0, help=HIGH_NOISE_HELP)
    ap.add_argument("--captions", action=argparse.BooleanOptionalAction, default=None, help=CAPTIONS_HELP)
    ap.add_argument("--half-size", action="store_true", help=HALF_SIZE_HELP)
    ap.add_argument("--pixels", type=int, choices=sorted(latents.SPACES.values()), default=None, help=PIXELS_HELP)
    ap.add_argument("--smoke", action="store_true", help="tiny model, 3 steps on the CPU: checks the script runs")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.smoke:
        torch.set_num_threads(1)
        args.batch, args.frames = 2, 2
    use_comfyui(args.smoke)
    info = train(args.out, args.minutes, args.smoke, args.batch, args.lr, args.frames, args.resume, args.framing,
                 args.low_res_minutes, args.model, args.world, args.state, args.schedule_minutes,
                 args.native_framing, args.compile, args.high_noise_share, args.captions, args.half_size,
                 args.pixels)
    info["files"] = [str(p) for p in weight_parts.split(Path(info["weights"]))]  # what a device run hands back
    print(json.dumps(info, indent=2))
    return info


def use_comfyui(cpu: bool) -> None:
    """ComfyUI's classes from $COMFYUI_PATH (bench/comfyui_env.py)."""
    sys.path.insert(0, str(HERE.parent))
    from comfyui_env import use_comfyui as use
    use("bench/fidelity", cpu or not torch.cuda.is_available())


if __name__ == "__main__":
    main()
