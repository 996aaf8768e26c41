"""Captions: what the bench model can be conditioned on, as a real text-to-video model is on its prompt.

A caption names the objects a video shows, each by colour, shape and size in the frame ("a large red disc, a
small blue square"); it says nothing of where they are or how they move, which the model draws. It is encoded
as Wan's text context is shaped, (B, TOKENS, 4096): one token per object, in the scene's (random) order, padded
with zero tokens; the empty caption, all zeros, is the unconditional context the bench model had before
captions (bench_model.fixed_context), so classifier-free guidance contrasts the two as ComfyUI's KSampler does
with a prompt and an empty negative.

    caps = captions.of_scenes(scene_list)                        # whole scenes: every object
    caps = captions.of_scenes(scene_list, frames, zoom, origin)  # crops: the objects a crop shows
    context = captions.encode(caps)                              # (B, 3, 4096) float32

Why (docs/FIDELITY.md, "Where in the schedule the objects are lost"): the unconditional model loses its objects
in the first steps from pure noise, where it must decide from noise alone whether, which and how many objects
exist, the same in all 8 frames. Wan never does that: its prompt says what is there. Captions make the bench's
task the real one, and its sampling the real path (cond and uncond through the patch, CFG).
"""
from __future__ import annotations

import torch

import latents  # noqa: F401  (puts the pack's ultragen_core on the path)
import scenes
from ultragen_core.demo import SIZE_UNIT, TEXT_DIM, TOKENS, caption_tokens  # noqa: F401  (the demo's prompts too)

SPACE = "captions v1: (colour, shape, size) one-hot tokens, 3 per video, zero-padded; empty = zeros"
DROP = 0.1  # share of training videos shown the empty caption, so the model also samples unconditionally (CFG)
CFG = 3.0  # the KSampler cfg captioned weights are sampled with by default (evaluate.py --cfg)
VISIBLE = 0.5  # a crop shows an object when its centre comes within this many radii of the crop, in some frame

Caption = tuple[tuple[str, str, float], ...]  # (colour, shape, radius in frame units) per object


def of_scenes(scene_list: list[scenes.Scene], frames: int = scenes.FRAMES, zoom: torch.Tensor | None = None,
              origin: torch.Tensor | None = None) -> list[Caption]:
    """The caption of each video: its objects, or with ``zoom`` (B,) / ``origin`` (B, 2) in units (the crops of
    scenes.sample_views) those a crop shows in at least one of ``frames`` frames, sized as the crop shows them."""
    out = []
    for b, scene in enumerate(scene_list):
        z = 1.0 if zoom is None else float(zoom[b])
        x0, y0 = (0.0, 0.0) if origin is None else (float(origin[b, 0]), float(origin[b, 1]))
        side = scenes.NATIVE / z
        shown = []
        for obj in scene.objects:
            margin = VISIBLE * obj.radius
            if any(x0 - margin < cx < x0 + side + margin and y0 - margin < cy < y0 + side + margin
                   for cx, cy in (obj.centre(t) for t in range(frames))):
                shown.append((obj.colour, obj.shape, obj.radius * z))
        out.append(tuple(shown))
    return out


def encode(caps: list[Caption], device="cpu") -> torch.Tensor:
    """(B, TOKENS, TEXT_DIM) float32: per object one token, colour one-hot (4), shape one-hot (3), size (log(1 +
    radius / SIZE_UNIT), the radius in frame units: native units x zoom); the rest zeros. An empty caption gives the
    all-zero context. The encoding is ultragen_core/demo.py's, which the demo nodes prompt the bundled model with."""
    return caption_tokens(caps).to(device)


def drop(context: torch.Tensor, generator: torch.Generator | None = None, share: float = DROP) -> torch.Tensor:
    """``context`` (B, TOKENS, TEXT_DIM) with a ``share`` of its videos' captions emptied (zeros), as text-to-video
    models drop their prompts in training so that one model serves both sides of classifier-free guidance."""
    keep = torch.rand(context.shape[0], generator=generator) >= share
    return context * keep.to(context.device, context.dtype)[:, None, None]


def text(cap: Caption) -> str:
    """The caption in words, as a prompt would say it: 'a large red disc, a small blue square'."""
    def size(r):
        return "small" if r < 6 else "large" if r > 10 else "mid-sized"
    return ", ".join(f"a {size(r)} {c} {s}" for c, s, r in cap) or "(empty)"
