"""The demo that needs no download, from a shell: the template "UltraGen demo (no download)" run through ComfyUI's
own executor, then its frames written as one PNG grid.

    COMFYUI_PATH=/path/to/ComfyUI python bench/demo.py --frames 2 --steps 10 --out demo.png
    COMFYUI_PATH=... python bench/demo.py --out demo.png   # the template as saved (8 frames, 20 steps: for a GPU)

The template's nodes run as saved (workflows/UltraGen demo (no download).json): the pack's demo model (bundled in
bench/fidelity/weights/) sampled at its native 64x64, and at 3x per side with UltraGen's quality and fast presets
from noise and coarse to fine (the native pass upscaled and finished at 3x from step 14 of 20);
``--frames`` / ``--steps`` change only the Demo Latent nodes' frames and the samplers' steps (coarse to fine keeps
its share of them). The grid has a row per frame and a column per video: the native pass upscaled 3x (bicubic),
quality 3x, fast 3x, coarse to fine 3x. Prints the time and UltraGen Compare's report (coarse to fine 3x against
the bicubic upscale). On the GPU when CUDA is there, otherwise on the CPU with every core.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
PACK = HERE.parent
for _path in (PACK / "tests", PACK / "tests" / "comfyui"):  # the test harness: ComfyUI headless, the UI -> API
    if str(_path) not in sys.path:                           # converter
        sys.path.insert(0, str(_path))
TEMPLATE = PACK / "workflows" / "UltraGen demo (no download).json"
COLUMNS = ("native, bicubic 3x", "UltraGen quality 3x", "UltraGen fast 3x", "coarse to fine 3x")
SPACING = 4  # the template's ImageStitch spacing_width
HEADER = 22  # px of column titles above the grid


def demo_prompt(registry: dict, frames: int | None, steps: int | None) -> tuple[dict, str]:
    """The template as an API prompt (frames / steps changed where given) and the id of its last ImageStitch
    (the four-up frames), which gets a PreviewImage so that they can be read back."""
    from workflow_api import ui_to_api
    prompt = ui_to_api(json.loads(TEMPLATE.read_text()), registry)
    stitches = [nid for nid, node in prompt.items() if node["class_type"] == "ImageStitch"]
    last = next(n for n in stitches if not any(node["inputs"].get("image1") == [n, 0] for node in prompt.values()))
    for node in prompt.values():
        if node["class_type"] == "UltraGenDemoLatent" and frames is not None:
            node["inputs"]["frames"] = frames
        if node["class_type"] == "KSampler" and steps is not None:
            node["inputs"]["steps"] = steps
        if node["class_type"] == "KSamplerAdvanced" and steps is not None:  # coarse to fine: the same share of
            inputs = node["inputs"]                                           # the steps from the native pass
            inputs["start_at_step"] = round(inputs["start_at_step"] * steps / inputs["steps"])
            inputs["steps"] = steps
    prompt["demo_grid"] = {"class_type": "PreviewImage", "inputs": {"images": [last, 0]}}
    return prompt, "demo_grid"


def grid(frames: list[np.ndarray]) -> np.ndarray:
    """Four-up frames (H, 4 W + 3 SPACING, 3), uint8 RGB, stacked top to bottom under column titles."""
    import cv2
    body = np.concatenate(frames, 0)
    header = np.full((HEADER, body.shape[1], 3), 255, np.uint8)
    width = (body.shape[1] - (len(COLUMNS) - 1) * SPACING) // len(COLUMNS)
    for i, title in enumerate(COLUMNS):
        cv2.putText(header, title, (i * (width + SPACING) + 3, HEADER - 7), cv2.FONT_HERSHEY_SIMPLEX, 0.38,
                    (0, 0, 0), 1, cv2.LINE_AA)
    return np.concatenate([header, body], 0)


def run_demo(runtime, out: Path, frames: int | None, steps: int | None) -> dict:
    """Run the template in ``runtime`` (tests/comfyui/harness.py's ComfyRuntime); write the grid to ``out``."""
    import cv2
    from PIL import Image
    prompt, grid_node = demo_prompt(runtime.nodes.NODE_CLASS_MAPPINGS, frames, steps)
    t0 = time.time()
    runtime.run(prompt)
    seconds = time.time() - t0
    outputs = runtime.executor.history_result["outputs"]
    temp = Path(runtime.folder_paths.get_temp_directory())
    images = [np.asarray(Image.open(temp / i["subfolder"] / i["filename"]).convert("RGB"))
              for i in outputs[grid_node]["images"]]
    out.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(out), cv2.cvtColor(grid(images), cv2.COLOR_RGB2BGR))
    report = next(o["text"][0] for o in outputs.values() if "text" in o)
    return {"seconds": round(seconds, 1), "frames": len(images), "grid": str(out), "report": report}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=None, help="the grid PNG (a smoke run: a temporary file instead)")
    ap.add_argument("--frames", type=int, default=None, help="video frames (the template: 8)")
    ap.add_argument("--steps", type=int, default=None, help="sampling steps (the template: 20)")
    ap.add_argument("--smoke", action="store_true", help="1 frame, 1 step, one CPU thread: checks that it runs")
    args = ap.parse_args(argv)
    if args.smoke:  # into a temporary folder, whatever --out says: a smoke run leaves nothing behind
        torch.set_num_threads(1)
        args.frames, args.steps = 1, 1
        args.out = Path(tempfile.mkdtemp(prefix="ultragen_demo_")) / "demo.png"
    if args.out is None:
        ap.error("--out is needed (the grid PNG)")
    if torch.cuda.is_available() and not args.smoke:
        os.environ["ULTRAGEN_TEST_DEVICE"] = "cuda"  # ComfyUI on the GPU (tests/comfyui/harness.py)
    from harness import ComfyRuntime
    runtime = ComfyRuntime(Path(tempfile.mkdtemp(prefix="ultragen_demo_comfyui_")))
    if not runtime.pack_loaded:
        sys.exit("ComfyUI could not load the UltraGen pack (see the log above)")
    device = torch.cuda.get_device_name() if os.environ.get("ULTRAGEN_TEST_DEVICE") == "cuda" else \
        f"CPU, {torch.get_num_threads()} threads"
    if args.smoke:
        from smoke import banner
        print(banner("1 frame, 1 sampling step"))
    result = run_demo(runtime, args.out, args.frames, args.steps)
    print("| demo | frames | steps | seconds | device | grid |\n|---|---|---|---|---|---|")
    print(f"| {TEMPLATE.stem} | {result['frames']} | {args.steps or 'as saved'} | {result['seconds']} | {device} | "
          f"{result['grid']} |\n")
    print(result["report"])
    return result


if __name__ == "__main__":
    main()
