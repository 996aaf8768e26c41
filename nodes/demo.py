"""The demo that needs no download: the small Wan model the fidelity bench trained (bundled with the pack, in
bench/fidelity/weights/), its prompt, a latent of its size, and the decode of its fixed latent space
(ultragen_core/demo.py). The template "UltraGen demo (no download)" samples it at native size and at 3x; so does
bench/demo.py on the CPU.
"""
from __future__ import annotations

import logging
import os

import comfy.sd
import folder_paths
from comfy_api.latest import io

from ..ultragen_core import demo
from ..ultragen_core.tensor_checks import values_problem
from .schema import own_check, schema

log = logging.getLogger(__name__)
FOLDER = "ultragen_demo"  # the pack's bundled weights, then models/ultragen_demo (or extra_model_paths.yaml)
BUNDLED = "ultragen_fidelity_wan.safetensors"

if FOLDER not in folder_paths.folder_names_and_paths:
    folder_paths.folder_names_and_paths[FOLDER] = (
        [str(demo.WEIGHTS_DIR), os.path.join(folder_paths.models_dir, FOLDER)], {".safetensors"})


def weight_files() -> list[str]:
    return folder_paths.get_filename_list(FOLDER)


def weights_problem(name: str) -> str | None:
    path = folder_paths.get_full_path(FOLDER, name)
    if path is None:
        return f"'{name}' was not found in the pack's bench/fidelity/weights or models/{FOLDER}."
    return demo.weights_problem(path)


class UltraGenDemoModel(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        files = weight_files()
        return schema(
            node_id="UltraGenDemoModel",
            display_name="UltraGen Demo Model (no download)",
            category="UltraGen/demo",
            search_aliases=("demo model", "try ultragen", "no download"),
            description="A small Wan model (8M parameters, in the pack) trained on simple moving scenes at 64x64 "
                        "pixels x 8 frames, each with its caption: coloured shapes over a textured ground with a "
                        "horizon. Try UltraGen on any machine, the CPU included, without downloading a model: "
                        "prompt it with UltraGen Demo Prompt and sample it at its native size, and at 2x or 3x with "
                        "UltraGen Apply. It passes the fidelity bench's quality gate at cfg 1.",
            inputs=[
                io.Combo.Input("weights", options=files, default=BUNDLED if BUNDLED in files else None,
                               tooltip="The demo weights: the pack's bundled file, or one trained with "
                                       "bench/fidelity/train.py and put in models/ultragen_demo."),
            ],
            outputs=[
                io.Model.Output(display_name="model",
                                tooltip="The demo Wan model, sampling shift 3 set (as it was trained): connect it "
                                        "to KSampler, or to UltraGen Apply first for 2x / 3x."),
                io.Conditioning.Output(display_name="conditioning",
                                       tooltip="The empty caption (zeros), the model's unconditional context: "
                                               "connect it to the sampler's negative, and UltraGen Demo Prompt to "
                                               "its positive."),
            ],
        )

    @classmethod
    def validate_inputs(cls, weights: str | None = None) -> bool | str:
        # Names only weights: ComfyUI's own list check of it is off, so own_check re-does it (schema.py).
        if weights is not None and not weight_files():
            return (f"no demo weights found: the pack's {BUNDLED} is missing from {demo.WEIGHTS_DIR} (an install "
                    f"without the pack's bench/ folder). Install the pack with git clone, or put the file in "
                    f"models/{FOLDER}.")
        return own_check(cls, "weights", weights, weights_problem)

    @classmethod
    def execute(cls, weights: str) -> io.NodeOutput:
        from comfy_extras.nodes_model_advanced import ModelSamplingSD3
        problem = weights_problem(weights)
        if problem:
            raise ValueError(f"UltraGen Demo Model: weights: {problem}")
        path = folder_paths.get_full_path(FOLDER, weights)
        model = comfy.sd.load_diffusion_model(path)
        facts = demo.trained_facts(path)
        model = ModelSamplingSD3().patch(model, facts["shift"])[0]  # the core node's own patch
        log.info("[UltraGen] demo model %s: %s, %d training steps, shift %g", weights, facts["config"],
                 facts["steps"], facts["shift"])
        return io.NodeOutput(model, [[demo.context(), {}]])


def caption_problem(caption: str) -> str | None:
    try:
        demo.parse_caption(caption)
    except ValueError as e:
        return str(e)
    return None


class UltraGenDemoPrompt(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return schema(
            node_id="UltraGenDemoPrompt",
            display_name="UltraGen Demo Prompt",
            category="UltraGen/demo",
            search_aliases=("demo prompt", "demo caption"),
            description="The demo model's prompt: the objects its video shows, in the words it was trained on (a "
                        "size, a colour and a shape each; where they are and how they move, it draws).",
            inputs=[
                io.String.Input("caption", default=demo.PROMPT_EXAMPLE,
                                tooltip=f"Up to {demo.TOKENS} objects separated by commas, one per colour, each an "
                                        f"optional size ({', '.join(demo.SIZES)}), a colour "
                                        f"({', '.join(demo.COLOURS)}) and a shape ({', '.join(demo.SHAPES)}). "
                                        "Empty: the empty caption."),
            ],
            outputs=[io.Conditioning.Output(display_name="conditioning",
                                            tooltip="The caption as the demo model's text context: connect it to "
                                                    "the sampler's positive.")],
        )

    @classmethod
    def validate_inputs(cls, caption: str | None = None) -> bool | str:
        # Names only caption: its words are a rule ComfyUI cannot check (schema.py).
        return own_check(cls, "caption", caption, caption_problem)

    @classmethod
    def execute(cls, caption: str) -> io.NodeOutput:
        problem = caption_problem(caption)
        if problem:
            raise ValueError(f"UltraGen Demo Prompt: caption {problem}")
        return io.NodeOutput([[demo.context(caption), {}]])


class UltraGenDemoLatent(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return schema(
            node_id="UltraGenDemoLatent",
            display_name="UltraGen Demo Latent",
            category="UltraGen/demo",
            search_aliases=("demo latent", "empty demo latent"),
            description="The empty latent the demo model samples: 64x64 pixels per frame times scale per side. "
                        "(The demo model has no VAE: one latent pixel is 2x2 pixels, averaged.)",
            inputs=[
                io.Int.Input("scale", default=1, min=1, max=4,
                             tooltip="Times the native 64x64 per side: 1 = native (64x64), 3 = 192x192, 9x the "
                                     "tokens. Above 1, sample with UltraGen Apply."),
                io.Int.Input("frames", default=demo.FRAMES, min=1, max=64,
                             tooltip=f"Video frames (one latent frame each); the model was trained on {demo.FRAMES}."),
                io.Int.Input("batch_size", default=1, min=1, max=64, tooltip="Videos sampled at once."),
            ],
            outputs=[io.Latent.Output(display_name="latent", tooltip="Zeros of the demo model's latent size.")],
        )

    @classmethod
    def execute(cls, scale: int, frames: int, batch_size: int) -> io.NodeOutput:
        return io.NodeOutput({"samples": demo.empty_latent(scale, frames, batch_size)})


class UltraGenDemoDecode(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return schema(
            node_id="UltraGenDemoDecode",
            display_name="UltraGen Demo Decode",
            category="UltraGen/demo",
            search_aliases=("demo decode",),
            description="The demo model's latents as images (its latent space is fixed, not a VAE: each latent pixel "
                        "is 2x2 pixels, upsampled bilinearly; instant).",
            inputs=[io.Latent.Input("samples", tooltip="A latent sampled with UltraGen Demo Model.")],
            outputs=[io.Image.Output(display_name="images",
                                     tooltip="One image per frame (videos of a batch one after another).")],
        )

    @classmethod
    def execute(cls, samples) -> io.NodeOutput:
        latent = samples["samples"]
        if latent.ndim != 5 or latent.shape[1] != demo.CHANNELS:
            raise ValueError(f"UltraGen Demo Decode: samples has shape {tuple(latent.shape)}; it decodes the demo "
                             f"model's video latents, (batch, {demo.CHANNELS}, frames, height, width). Connect a "
                             "latent sampled from UltraGen Demo Latent, or decode other models' latents with their "
                             "VAE.")
        problem = values_problem(latent, "samples latent")
        if problem:
            raise ValueError(f"UltraGen Demo Decode: {problem}")
        return io.NodeOutput(demo.frames_of(latent))
