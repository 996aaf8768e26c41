"""Checkpoint mode in a real ComfyUI: a synthetic UltraGen checkpoint with the published key names at
width 128 (a random 4-block Wan plus extras for blocks 1 and 2; blocks 0 and 3 keep full attention),
loaded through UNETLoader and UltraGenLoadWeights, sampled by the real sampler, and compared with the
naive re-implementation of the published equations in tests/core/test_ultragen_weights_reference.py.
"""
from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest
import torch

from harness import PromptFailed, captured, placeholder, random_wan_state_dict

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "core"))
from test_ultragen_weights_reference import block_tensors, random_extras, reference_block  # noqa: E402

EXTRA_BLOCKS = (1, 2)
LATENT = (1, 16, 2, 20, 26)  # token grid 2 x 10 x 13: every branch resizes


class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.fixture(scope="module")
def files(comfy):
    from safetensors.torch import save_file
    folder = comfy.models_dir / "diffusion_models"
    stock = random_wan_state_dict(seed=5, num_layers=4)
    tuned = dict(stock)  # the published base is fine-tuned: one base tensor differs from the stock model
    tuned["blocks.1.self_attn.q.weight"] = stock["blocks.1.self_attn.q.weight"] + 0.05 * torch.randn(128, 128)
    extras = random_extras(128, EXTRA_BLOCKS, seed=6)
    save_file(stock, str(folder / "ug_stock.safetensors"))
    torch.save({**tuned, **extras, "ultragen_junk.weight": torch.zeros(1)}, folder / "ug_full.ckpt")
    save_file(extras, str(folder / "ug_extras.safetensors"))
    save_file(random_extras(256, EXTRA_BLOCKS, seed=7), str(folder / "ug_wide.safetensors"))
    torch.save({"blocks.1.self_attn.q_lora_1.lora_A.weight": torch.zeros(1), "x": _Payload(str(comfy.base / "pwned"))},
               folder / "ug_evil.ckpt")
    return {"tuned": tuned, "extras": extras}


def node(comfy, model, weights):
    out = comfy.nodes.NODE_CLASS_MAPPINGS["UltraGenLoadWeights"].execute(model=model, weights=weights)
    return out.args


def prompt(unet, weights, key):
    cond = {"class_type": "UltraGenTestConditioning", "inputs": {"seed": 0, "tokens": 8}}
    return {
        "1": {"class_type": "UNETLoader", "inputs": {"unet_name": unet, "weight_dtype": "default"}},
        "2": {"class_type": "UltraGenLoadWeights", "inputs": {"model": ["1", 0], "weights": weights}},
        "3": cond, "4": {**cond, "inputs": {"seed": 1, "tokens": 8}},
        "5": {"class_type": "UltraGenTestLatent", "inputs": {"seed": 0, "channels": 16, "frames": 2, "height": 20,
                                                             "width": 26, "batch": 1, "corner_bump": 0.0}},
        "6": {"class_type": "KSampler", "inputs": {"model": ["2", 0], "seed": 0, "steps": 1, "cfg": 3.0,
                                                   "sampler_name": "euler", "scheduler": "simple", "positive": ["3", 0],
                                                   "negative": ["4", 0], "latent_image": ["5", 0], "denoise": 1.0}},
        "7": {"class_type": "UltraGenTestCapture", "inputs": {"samples": ["6", 0], "key": key}},
    }


def test_forward_matches_published_equations_in_a_real_sampler(comfy, files):
    """Stock base + full-DiT checkpoint: the differing base weight is applied, the patched blocks compute
    the published forward (checked per item of ComfyUI's cond + uncond batch), the extras load with the model."""
    import comfy.model_management as mm
    model = comfy.nodes.UNETLoader().load_unet("ug_stock.safetensors", "default")[0]
    patched, report = node(comfy, model, "ug_full.ckpt")
    assert "2 blocks of UltraGen weights" in report and "full attention in blocks [0, 3]" in report
    assert "1 of " in report and "differ from the connected model's and are taken from the file" in report
    assert "not in the model and are ignored (e.g. ultragen_junk.weight)" in report

    extras_patchers = patched.get_nested_additional_models()
    assert len(extras_patchers) == 1 and extras_patchers[0].model.block_ids == list(EXTRA_BLOCKS)
    assert next(extras_patchers[0].model.parameters()).dtype == patched.model_dtype()

    seen = {}

    def hook(block):
        def record(module, args, kwargs, out):
            seen.setdefault(block, (args[0].clone(), out.clone(), kwargs))  # returns None: output unchanged
        return record

    dm = patched.model.diffusion_model
    hooks = [dm.blocks[b].self_attn.register_forward_hook(hook(b), with_kwargs=True) for b in EXTRA_BLOCKS]
    try:
        gen = torch.Generator().manual_seed(0)
        pos = [[torch.randn(1, 8, 4096, generator=gen), {}]]
        neg = [[torch.randn(1, 8, 4096, generator=gen), {}]]
        latent = {"samples": torch.randn(LATENT, generator=gen)}
        comfy.nodes.common_ksampler(patched, 0, 1, 3.0, "euler", "simple", pos, neg, latent)
    finally:
        for h in hooks:
            h.remove()
    loaded = [lm.model.model for lm in mm.current_loaded_models if lm.model is not None]
    assert extras_patchers[0].model in loaded, "the extras were not loaded through ComfyUI's model management"

    grid = (2, 10, 13)
    for b in EXTRA_BLOCKS:
        x, out, kwargs = seen[b]
        call = kwargs["transformer_options"]["ultragen_checkpoint_call"]
        assert call.grid == grid and x.shape == (2, math.prod(grid), 128)  # cond and uncond in one batch
        base, ext = block_tensors({**files["tuned"], **files["extras"]}, b)
        for i in range(2):
            want = reference_block(x[i], grid, b, base, ext, float(call.timestep[i]), heads=1)
            torch.testing.assert_close(out[i].double(), want, atol=1e-4, rtol=1e-4)


def test_full_ckpt_stock_plus_full_and_extras_only_agree(comfy, files):
    """Three ways to the same model, each through the real executor: UNETLoader on the .ckpt + the same
    .ckpt; the stock base + the .ckpt (base weights patched in); the .ckpt + an extras-only file."""
    comfy.run(prompt("ug_full.ckpt", "ug_full.ckpt", "ckpt_a"))
    comfy.run(prompt("ug_stock.safetensors", "ug_full.ckpt", "ckpt_b"))
    comfy.run(prompt("ug_full.ckpt", "ug_extras.safetensors", "ckpt_c"))
    a, b, c = (captured()[k] for k in ("ckpt_a", "ckpt_b", "ckpt_c"))
    assert a.shape == LATENT and torch.isfinite(a).all()
    torch.testing.assert_close(b, a, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(c, a, atol=1e-5, rtol=1e-5)
    comfy.run(prompt("ug_stock.safetensors", "ug_extras.safetensors", "ckpt_d"))  # stock base: differs
    assert (captured()["ckpt_d"] - a).abs().max() > 1e-4


def test_bad_files_get_clear_errors(comfy, files):
    model = comfy.nodes.UNETLoader().load_unet("ug_stock.safetensors", "default")[0]
    with pytest.raises(PromptFailed, match="refuses to load ug_evil.ckpt"):
        comfy.run(prompt("ug_stock.safetensors", "ug_evil.ckpt", "evil"))
    assert not (comfy.base / "pwned").exists()
    with pytest.raises(ValueError, match=r"width 256 .*connected model has width 128"):
        node(comfy, model, "ug_wide.safetensors")
    with pytest.raises(ValueError, match="holds a Wan DiT without UltraGen weights"):
        node(comfy, model, "ug_stock.safetensors")
    ok, _, _, errors = comfy.validate(prompt("ug_stock.safetensors", "missing.ckpt", "x"))
    assert not ok and "missing.ckpt" in str(errors)


def weights_errors(comfy, weights: str) -> list[tuple[str, str, str]]:
    ok, _, _, node_errors = comfy.validate(prompt("ug_stock.safetensors", weights, "x"))
    assert not ok and set(node_errors) == {"2"}, node_errors
    return [(e["type"], e["extra_info"]["input_name"], e["details"]) for e in node_errors["2"]["errors"]]


def test_plain_wan_and_truncated_files_are_refused_at_graph_time(comfy, files):
    [(kind, name, details)] = weights_errors(comfy, "ug_stock.safetensors")  # a plain Wan file from the list
    assert (kind, name) == ("custom_validation_failed", "weights")
    assert details.startswith("weights - ug_stock.safetensors holds no UltraGen weights"), details  # the name once
    assert "Load Diffusion Model" in details
    folder = comfy.models_dir / "diffusion_models"
    data = (folder / "ug_extras.safetensors").read_bytes()
    (folder / "ug_cut.safetensors").write_bytes(data[:len(data) // 3])  # an interrupted download
    [(kind, name, details)] = weights_errors(comfy, "ug_cut.safetensors")
    assert name == "weights" and "ug_cut.safetensors" in details and "download or convert it again" in details


def test_nan_extras_are_refused_when_loaded(comfy, files):
    from safetensors.torch import save_file
    extras = dict(files["extras"])
    key = "blocks.2.self_attn.v_lora_1.lora_A.bias"
    extras[key] = extras[key].clone()
    extras[key][0] = float("nan")
    save_file(extras, str(comfy.models_dir / "diffusion_models" / "ug_nan.safetensors"))
    p = {"1": {"class_type": "UNETLoader", "inputs": {"unet_name": "ug_stock.safetensors", "weight_dtype": "default"}},
         "2": {"class_type": "UltraGenLoadWeights", "inputs": {"model": ["1", 0], "weights": "ug_nan.safetensors"}},
         "3": {"class_type": "PreviewAny", "inputs": {"source": ["2", 1]}}}
    with pytest.raises(PromptFailed, match=rf"{key} in ug_nan.safetensors holds 1 NaN or infinite value"):
        comfy.run(p)


def test_outputs_have_names_not_raw_types(comfy):
    for node_id in ("UltraGenLoadWeights", "UltraGenTiledVAEDecode", "UltraGenResolution", "UltraGenCompare"):
        cls = comfy.nodes.NODE_CLASS_MAPPINGS[node_id]
        names, types = tuple(cls.RETURN_NAMES), tuple(cls.RETURN_TYPES)
        assert len(names) == len(types) and not set(names) & set(types), (node_id, names, types)
    assert tuple(comfy.nodes.NODE_CLASS_MAPPINGS["UltraGenLoadWeights"].RETURN_NAMES) == ("model", "report")


def test_apply_and_load_weights_refuse_to_stack(comfy, files):
    p = prompt("ug_stock.safetensors", "ug_extras.safetensors", "stack")
    p["8"] = {"class_type": "UltraGenApply", "inputs": {"model": ["2", 0]}}  # Apply after Load Weights
    p["6"]["inputs"]["model"] = ["8", 0]
    with pytest.raises(PromptFailed, match="already runs the published UltraGen checkpoint"):
        comfy.run(p)
    p = prompt("ug_stock.safetensors", "ug_extras.safetensors", "stack")
    p["8"] = {"class_type": "UltraGenApply", "inputs": {"model": ["1", 0]}}  # Load Weights after Apply
    p["2"]["inputs"]["model"] = ["8", 0]
    with pytest.raises(PromptFailed, match="already has UltraGen Apply"):
        comfy.run(p)


def test_checkpoint_workflow_validates(comfy):
    import json
    workflow_api = pytest.importorskip("workflow_api")
    path = Path(__file__).resolve().parents[2] / "workflows" / "Checkpoint mode 1.3B 1080p.json"
    wf = json.loads(path.read_text())
    assert wf["version"] == 0.4 and (path.parent / (path.stem + ".jpg")).read_bytes()[:2] == b"\xff\xd8"
    names = {m["name"]: m for m in wf["models"]}
    assert set(names) == {"ultragen_wan21_1.3B_1080p.ckpt", "umt5_xxl_fp8_e4m3fn_scaled.safetensors",
                          "wan_2.1_vae.safetensors"}
    fp = comfy.folder_paths
    for m in wf["models"]:  # placeholders where ComfyUI looks for them
        folder = comfy.models_dir / m["directory"]
        folder.mkdir(parents=True, exist_ok=True)
        if str(folder) not in fp.get_folder_paths(m["directory"]):
            fp.add_model_folder_path(m["directory"], str(folder))
        placeholder(folder / m["name"])
    prompt = workflow_api.ui_to_api(wf, comfy.nodes.NODE_CLASS_MAPPINGS)
    by_type = {n["class_type"]: n for n in prompt.values()}
    assert by_type["UltraGenLoadWeights"]["inputs"]["weights"] == by_type["UNETLoader"]["inputs"]["unet_name"]
    assert "UltraGenApply" not in by_type
    ok, error, outputs, node_errors = comfy.validate(prompt)
    assert ok, f"{error} {node_errors}"


def test_device_clones_run_their_own_extras(comfy, files):
    """ComfyUI 0.33's MultiGPU CFG Split deep-clones the model and its additional models (the extras) per
    extra device and runs the clones in threads at once. Both "devices" are the CPU here: the clone's
    extras get other weights, and each clone must run its own."""
    import threading
    import comfy.sample as comfy_sample
    import comfy.sd as comfy_sd
    base = comfy_sd.load_diffusion_model(str(comfy.models_dir / "diffusion_models" / "ug_stock.safetensors"))
    if not hasattr(base, "deepclone_multigpu"):
        pytest.skip("this ComfyUI has no multi-GPU deep clones")
    patched = node(comfy, base, "ug_full.ckpt")[0]
    clone = patched.deepclone_multigpu(new_load_device=torch.device("cpu"))
    mine, theirs = (m.get_additional_models_with_key("ultragen_checkpoint")[0].model for m in (patched, clone))
    assert mine is not theirs
    with torch.no_grad():
        theirs.blocks["1"].alpha_time_projection[1].bias.add_(3.0)  # the clone's gate of block 1 differs

    gen = torch.Generator().manual_seed(0)
    latent = torch.randn(LATENT, generator=gen)
    cond = [[torch.randn(1, 8, 4096, generator=gen), {}]]

    def sample(model):
        noise = torch.randn(LATENT, generator=torch.Generator().manual_seed(1))
        return comfy_sample.sample(model, noise, 1, 3.0, "euler", "simple", cond, cond, latent, seed=1)

    alone = [sample(patched), sample(clone)]
    assert (alone[0] - alone[1]).abs().max() > 1e-4, "the clone ran the original's extras"
    together = [None, None]
    threads = [threading.Thread(target=lambda i=i, m=m: together.__setitem__(i, sample(m)))
               for i, m in enumerate((patched, clone))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert torch.equal(together[0], alone[0]) and torch.equal(together[1], alone[1])
