"""Tiny HunyuanVideo models and prompts for the ComfyUI-tier HunyuanVideo tests (test_hunyuan_video*.py): random
weights in ComfyUI's own ``HunyuanVideo`` class, saved for UNETLoader (ComfyUI's model detection picks the
member), prompts UNETLoader -> (UltraGen Apply) -> KSamplerAdvanced -> capture, and the fixtures ``hy``
(HunyuanVideo 1.5: vision input, 65 input channels, patch 1x1x1, 2 double + 1 single blocks, 2 heads of 128) and
``hy13`` (the original T2V: 16 channels, patch 1x2x2, 2 double + 2 single blocks)."""
import math
from pathlib import Path

import pytest
import torch

from harness import eager_weights, random_weights

GRID = (2, 12, 12)  # latent frames x height x width = the token grid (patch 1x1x1)
CHANNELS = 32
NODES = Path(__file__).with_name("hunyuan_test_nodes.py")
TOL = dict(rtol=1e-5, atol=1e-5)


def hunyuan15_params(**extra) -> dict:
    params = dict(in_channels=65, out_channels=32, vec_in_dim=None, context_in_dim=4096, hidden_size=256,
                  mlp_ratio=4.0, num_heads=2, depth=2, depth_single_blocks=1, axes_dim=[16, 56, 56], theta=256,
                  patch_size=[1, 1, 1], qkv_bias=True, guidance_embed=False, byt5=False, meanflow=False,
                  use_cond_type_embedding=True, vision_in_dim=1152, meanflow_sum=True)
    params.update(extra)
    return params


# the original HunyuanVideo T2V's config at the same size (2 single blocks: those run windows too)
ORIGINAL = dict(in_channels=16, out_channels=16, vision_in_dim=None, use_cond_type_embedding=False,
                patch_size=[1, 2, 2], vec_in_dim=768, guidance_embed=True, meanflow_sum=False, depth_single_blocks=2)


@pytest.fixture(scope="module")
def hy(comfy):
    """The tiny HunyuanVideo 1.5 checkpoint's file name (skips where this ComfyUI has no HunyuanVideo 1.5)."""
    import dataclasses

    import comfy.ldm.hunyuan_video.model as hv
    fields = {f.name for f in dataclasses.fields(hv.HunyuanVideoParams)}
    if "vision_in_dim" not in fields:
        pytest.skip("HunyuanVideo 1.5 is missing in this ComfyUI: comfy.ldm.hunyuan_video.model.HunyuanVideoParams "
                    "has no vision_in_dim (no HunyuanVideo15 config)")
    assert comfy.load_node_pack(NODES)
    name = "tiny_hunyuan_video15.safetensors"
    path = comfy.models_dir / "diffusion_models" / name
    if not path.exists():
        from safetensors.torch import save_file
        save_file(random_state_dict(hunyuan15_params()), str(path))
    return name


def random_state_dict(params: dict, seed: int = 0) -> dict:
    import dataclasses

    import comfy.ldm.hunyuan_video.model as hv
    import comfy.ops
    fields = {f.name for f in dataclasses.fields(hv.HunyuanVideoParams)}  # 0.3.64 has fewer
    with eager_weights():
        model = hv.HunyuanVideo(operations=comfy.ops.disable_weight_init,
                                **{k: v for k, v in params.items() if k in fields})
    return random_weights(model, seed)


def cond(seed=1, tokens=8, padding=0, pooled=False):
    return {"class_type": "UltraGenTestHunyuanConditioning", "inputs": {"seed": seed, "tokens": tokens,
                                                                        "padding": padding, "pooled": pooled}}


def prompt(name, patch=None, cfg=2.0, bump=0.0, denoise=1.0, positive=None, negative=None, batch=1, steps=1,
           key="out", add_noise=True, from_batch=None, latent=(CHANNELS, *GRID)):
    """UNETLoader -> (settings -> UltraGen Apply) -> KSamplerAdvanced -> capture; ``latent``: (C, T, H, W), by
    default GRID-sized for HunyuanVideo 1.5 (patch 1x1x1)."""
    p = {"load": {"class_type": "UNETLoader", "inputs": {"unet_name": name, "weight_dtype": "default"}},
         "pos": positive or cond(), "neg": negative or cond(seed=5, tokens=5),
         "latent": {"class_type": "UltraGenTestLatent", "inputs": {
             "seed": 2, "channels": latent[0], "frames": latent[1], "height": latent[2], "width": latent[3],
             "batch": batch, "corner_bump": bump}}}
    source = ["latent", 0]
    if from_batch is not None:
        p["pick"] = {"class_type": "LatentFromBatch", "inputs": {"samples": source, "batch_index": from_batch,
                                                                 "length": 1}}
        source = ["pick", 0]
    model = ["load", 0]
    if patch is not None:
        p["apply"] = {"class_type": "UltraGenApply", "inputs": {"model": model}}
        if patch != "default":
            p["settings"] = patch
            p["apply"]["inputs"]["settings"] = ["settings", 0]
        model = ["apply", 0]
    start = 0 if denoise >= 1.0 else max(1, round(steps / denoise) - steps)
    p["sample"] = {"class_type": "KSamplerAdvanced", "inputs": {
        "model": model, "add_noise": "enable" if add_noise else "disable", "noise_seed": 3, "steps": steps + start,
        "cfg": cfg, "sampler_name": "euler", "scheduler": "simple", "positive": ["pos", 0], "negative": ["neg", 0],
        "latent_image": source, "start_at_step": start, "end_at_step": 10000, "return_with_leftover_noise": "disable"}}
    p["capture"] = {"class_type": "UltraGenTestCapture", "inputs": {"samples": ["sample", 0], "key": key}}
    return p


def with_budget(node: dict, gb: float) -> dict:
    node["inputs"]["memory_budget_gb"] = gb
    return node


def token_change(a, b):
    """Largest change per token (t, h, w) between two (1, 32, T, H, W) latents."""
    return (a - b).abs()[0].amax(0)


def reachable(grid, window, seeds, blocks):
    """Tokens a change in ``seeds`` can reach through ``blocks`` windowed blocks (plain, shifted, plain, ...)."""
    from ultragen_core.attention.windows import make_layout
    changed = set(seeds)
    for b in range(blocks):
        layout = make_layout(grid, window, shifted=b % 2 == 1)
        owners = [a.owner_and_offset()[0] for a in layout.axes]
        new = set(changed)
        for tok in ((t, h, w) for t in range(grid[0]) for h in range(grid[1]) for w in range(grid[2])):
            own = [o[c] for o, c in zip(owners, tok)]
            box = [(a.window_starts[i], a.window_lengths[i]) for a, i in zip(layout.axes, own)]
            if any(all(s <= c < s + n for (s, n), c in zip(box, seed)) for seed in changed):
                new.add(tok)
        changed = new
    return changed


FULL_LIMIT = dict(window=(64, 64, 64), global_compression=1, fusion="gate", global_strength=0.0)


def i2v(p: dict) -> dict:
    """The positive prompt of ``p`` with HunyuanVideo 1.5's image-to-video inputs: 5 vision tokens (in the text
    stream, before the text) and an image latent of every frame (concatenated to the noise's channels, as the
    I2V node builds it)."""
    p["image"] = {"class_type": "UltraGenTestLatent", "inputs": {
        "seed": 11, "channels": CHANNELS, "frames": GRID[0], "height": GRID[1], "width": GRID[2], "batch": 1,
        "corner_bump": 0.0}}
    p["pos"] = {**p["pos"], "inputs": {**p["pos"]["inputs"], "vision_tokens": 5, "image_latent": ["image", 0]}}
    return p


def with_block_replace(p: dict, block: int, pass_through: bool) -> dict:
    p["replace"] = {"class_type": "UltraGenTestBlockReplace", "inputs": {"model": ["load", 0], "block": block,
                                                                         "pass_through": pass_through}}
    (p["apply"] if "apply" in p else p["sample"])["inputs"]["model"] = ["replace", 0]
    return p


def loaded_model(comfy, name):
    import comfy.sd as comfy_sd
    return comfy_sd.load_diffusion_model(str(comfy.models_dir / "diffusion_models" / name))


def block_inputs(dm, batch=2, text=6, seed=0):
    """A double block's inputs for a GRID video: img (B, N, C), txt (B, E, C), vec (B, C), pe of [text; video]."""
    gen = torch.Generator().manual_seed(seed)
    n, c = math.prod(GRID), dm.hidden_size
    img, txt = torch.randn(batch, n, c, generator=gen), torch.randn(batch, text, c, generator=gen)
    vec = torch.randn(batch, c, generator=gen)
    ids = torch.cat((torch.zeros(batch, text, 3), dm.img_ids(torch.zeros(batch, 1, *GRID))), dim=1)
    return img, txt, vec, dm.pe_embedder(ids)


# --- the original HunyuanVideo T2V: the same token grid ------------------------------------------------------

LATENT13 = (16, GRID[0], 2 * GRID[1], 2 * GRID[2])  # patch 1x2x2: the same token grid


@pytest.fixture(scope="module")
def hy13(comfy):
    """A tiny original HunyuanVideo T2V (16 channels, patch 1x2x2, CLIP vector, guidance; 2 double + 2 single
    blocks), in both ComfyUI versions."""
    assert comfy.load_node_pack(NODES)
    name = "tiny_hunyuan_video_t2v.safetensors"
    path = comfy.models_dir / "diffusion_models" / name
    if not path.exists():
        from safetensors.torch import save_file
        save_file(random_state_dict(hunyuan15_params(**ORIGINAL)), str(path))
    return name


def prompt13(name, patch=None, **kw):
    return prompt(name, patch, positive=cond(pooled=True), negative=cond(seed=5, tokens=5, pooled=True),
                  latent=LATENT13, **kw)


def token_change13(a, b):
    """Largest change per token (t, h, w) between two (1, 16, T, 2H, 2W) latents."""
    return (a - b).abs()[0].amax(0).view(GRID[0], GRID[1], 2, GRID[2], 2).amax(dim=(2, 4))


def video_first(comfy, name) -> bool:
    """This ComfyUI's HunyuanVideo puts the video before the text (0.3.64: flipped_img_txt, no img_slice)."""
    dm = loaded_model(comfy, name).get_model_object("diffusion_model")
    return bool(getattr(dm.double_blocks[0], "flipped_img_txt", False))
