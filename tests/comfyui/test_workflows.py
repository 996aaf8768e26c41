"""The example workflows against the real ComfyUI node registry, validator and executor."""
from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest

from comfyui_finder import PACK_DIR
from workflow_api import ConversionError, ui_to_api

WORKFLOWS = sorted((PACK_DIR / "workflows").glob("*.json"))
EXPECTED = {"ultragen_wan2.1_t2v_1.3B_1080p", "ultragen_wan2.1_t2v_14B_4k", "ultragen_wan2.2_ti2v_5B_4k",
            "ultragen_wan2.2_t2v_A14B_1080p", "ultragen_wan2.1_i2v_14B_1080p", "ultragen_compare_native4k_vs_upscale"}
LOADERS = {"UNETLoader": ("unet_name", "diffusion_models"), "CLIPLoader": ("clip_name", "text_encoders"),
           "VAELoader": ("vae_name", "vae"), "CLIPVisionLoader": ("clip_name", "clip_vision"),
           "UpscaleModelLoader": ("model_name", "upscale_models")}


def load(path: Path) -> dict:
    return json.loads(path.read_text())


def ids(paths):
    return [p.stem for p in paths]


def test_all_workflows_are_there_with_thumbnails():
    assert EXPECTED <= {p.stem for p in WORKFLOWS}
    for p in WORKFLOWS:
        jpg = p.with_suffix(".jpg")
        assert jpg.is_file() and jpg.read_bytes()[:2] == b"\xff\xd8", f"{jpg.name}: missing or not a JPEG"


@pytest.mark.parametrize("path", WORKFLOWS, ids=ids(WORKFLOWS))
def test_workflow_format_and_models_list(path):
    wf = load(path)
    assert wf["version"] == 0.4
    assert any(n["type"] in ("Note", "MarkdownNote") for n in wf["nodes"]), "explain the settings in a Note"
    models = {m["name"]: m for m in wf["models"]}
    for m in wf["models"]:
        assert m["url"].startswith("https://"), m
        if path.stem in EXPECTED:  # ours: official Comfy-Org repackaged files, direct download links
            assert m["url"].startswith("https://huggingface.co/Comfy-Org/") and m["url"].endswith(m["name"])
    used = set()
    for node in wf["nodes"]:
        if node["type"] in LOADERS:
            name = node["widgets_values"][0]
            assert name in models, f"{path.name}: {name} is loaded but not in the models list"
            assert models[name]["directory"] == LOADERS[node["type"]][1]
            used.add(name)
    assert used == set(models), f"{path.name}: models listed but never loaded: {set(models) - used}"
    for link in wf["links"]:  # [id, src, src_slot, dst, dst_slot, type]
        assert len(link) == 6


@pytest.mark.parametrize("path", WORKFLOWS, ids=ids(WORKFLOWS))
def test_workflow_converts_against_the_registry(comfy, path):
    prompt = ui_to_api(load(path), comfy.nodes.NODE_CLASS_MAPPINGS)
    types = {n["class_type"] for n in prompt.values()}
    assert any(t.startswith("UltraGen") for t in types) and "SaveVideo" in types
    if path.stem not in EXPECTED:
        return
    assert "UltraGenResolution" in types
    if "compare" in path.stem:
        assert {"UltraGenCompare", "ImageUpscaleWithModel", "UltraGenApply"} <= types
    else:
        assert {"UltraGenApply", "UltraGenAttentionSettings", "UltraGenTiledVAEDecode"} <= types


def test_converter_catches_mistakes(comfy):
    registry = comfy.nodes.NODE_CLASS_MAPPINGS
    good = load(PACK_DIR / "workflows" / "ultragen_wan2.1_t2v_1.3B_1080p.json")

    def broken(edit):
        wf = json.loads(json.dumps(good))
        edit(wf)
        with pytest.raises(ConversionError) as e:
            ui_to_api(wf, registry)
        return str(e.value)

    def node(wf, ntype):
        return next(n for n in wf["nodes"] if n["type"] == ntype)

    assert "unknown node type" in broken(lambda wf: node(wf, "VAELoader").update(type="NoSuchLoader"))
    assert "widget values" in broken(lambda wf: node(wf, "KSampler")["widgets_values"].pop(1))  # control value
    assert "link type" in broken(lambda wf: [l.__setitem__(5, "IMAGE") for l in wf["links"] if l[5] == "LATENT"])
    assert "widget steps (INT)" in broken(lambda wf: node(wf, "KSampler")["widgets_values"].__setitem__(2, "30"))


def test_converter_follows_dynamic_combos(comfy):
    """ComfyUI 0.33's SaveVideo.format is a V3 dynamic combo: each chosen option brings its own widgets,
    named <combo>.<input> in the API prompt. (0.3.64 has plain combos format / codec: same values.)"""
    registry = comfy.nodes.NODE_CLASS_MAPPINGS
    wf = load(PACK_DIR / "workflows" / "ultragen_wan2.1_t2v_1.3B_1080p.json")
    save = next(n for n in wf["nodes"] if n["type"] == "SaveVideo")
    assert save["widgets_values"][1:] == ["auto", "auto"]
    inputs = next(n["inputs"] for n in ui_to_api(wf, registry).values() if n["class_type"] == "SaveVideo")
    if registry["SaveVideo"].INPUT_TYPES()["required"]["format"][0] != "COMFY_DYNAMICCOMBO_V3":
        assert inputs["format"] == "auto" and inputs["codec"] == "auto"
        return
    assert inputs["format"] == "auto" and inputs["format.codec"] == "auto" and "codec" not in inputs
    save["widgets_values"][1:] = ["mp4", "h264", "re-encode", 20.0, "sRGB"]  # nested three deep
    inputs = next(n["inputs"] for n in ui_to_api(wf, registry).values() if n["class_type"] == "SaveVideo")
    assert inputs["format.codec.encoding"] == "re-encode" and inputs["format.codec.encoding.crf"] == 20.0
    assert inputs["format.codec.encoding.color_space"] == "sRGB"
    save["widgets_values"][1:] = ["webm", "h264"]  # webm offers auto / av1 only
    with pytest.raises(ConversionError, match=r"format.codec got 'h264', not one of \['auto', 'av1'\]"):
        ui_to_api(wf, registry)


def test_workflows_saved_before_the_preset_input_still_load(comfy):
    """UltraGen Attention Settings gained `preset` as its last widget: older files have one value less."""
    wf = load(PACK_DIR / "workflows" / "ultragen_wan2.1_t2v_14B_4k.json")
    node = next(n for n in wf["nodes"] if n["type"] == "UltraGenAttentionSettings")
    assert node["widgets_values"][-1] == "quality"
    node["widgets_values"].pop()
    node["widgets_values"][3] = "alternate"  # the shift value such files hold
    _placeholders(comfy, wf["models"])
    prompt = ui_to_api(wf, comfy.nodes.NODE_CLASS_MAPPINGS)
    inputs = next(n["inputs"] for n in prompt.values() if n["class_type"] == "UltraGenAttentionSettings")
    assert "preset" not in inputs and inputs["shift"] == "alternate" and inputs["end_percent"] == 1.0
    ok, error, _, node_errors = comfy.validate(prompt)
    assert ok, f"{error} {node_errors}"


def _placeholders(comfy, prompt_models: list[dict]):
    """Placeholder model files with the workflow's names, in folders ComfyUI searches, and an input image."""
    import numpy as np
    from PIL import Image
    from harness import placeholder
    fp = comfy.folder_paths
    for m in prompt_models:
        folder = comfy.models_dir / m["directory"]
        folder.mkdir(parents=True, exist_ok=True)
        if str(folder) not in fp.get_folder_paths(m["directory"]):
            fp.add_model_folder_path(m["directory"], str(folder))
        placeholder(folder / m["name"])
    image = Path(fp.get_input_directory()) / "example.png"
    if not image.exists():
        Image.fromarray(np.full((32, 32, 3), 128, np.uint8)).save(image)


@pytest.mark.parametrize("path", WORKFLOWS, ids=ids(WORKFLOWS))
def test_workflow_passes_validate_prompt(comfy, path):
    wf = load(path)
    _placeholders(comfy, wf["models"])
    prompt = ui_to_api(wf, comfy.nodes.NODE_CLASS_MAPPINGS)
    ok, error, outputs, node_errors = comfy.validate(prompt)
    assert ok, f"{path.name}: {error} {node_errors}"
    assert outputs  # at least one output node to run


def _tiny_1080p_prompt(comfy) -> dict:
    """The 1.3B 1080p workflow with test stand-ins: a tiny DiT and VAE, random text embeddings, 64x64 x 5."""
    from harness import save_tiny_wan_vae, save_wan
    prompt = ui_to_api(load(PACK_DIR / "workflows" / "ultragen_wan2.1_t2v_1.3B_1080p.json"),
                       comfy.nodes.NODE_CLASS_MAPPINGS)
    by_type = {}
    for nid, node in list(prompt.items()):
        by_type.setdefault(node["class_type"], []).append(nid)
    for i, nid in enumerate(by_type["CLIPTextEncode"]):
        prompt[nid] = {"class_type": "UltraGenTestConditioning", "inputs": {"seed": i, "tokens": 8}}
    for nid in by_type["CLIPLoader"]:
        del prompt[nid]
    prompt[by_type["UNETLoader"][0]]["inputs"]["unet_name"] = save_wan(comfy, "tiny_wan_t2v.safetensors")
    prompt[by_type["VAELoader"][0]]["inputs"]["vae_name"] = save_tiny_wan_vae(comfy, "2.1")
    prompt[by_type["UltraGenResolution"][0]]["inputs"].update(target="custom", custom_width=64, custom_height=64,
                                                             frames=5)
    prompt[by_type["UltraGenAttentionSettings"][0]]["inputs"].update(window_h=2, window_w=2, global_compression=2)
    prompt[by_type["KSampler"][0]]["inputs"]["steps"] = 2
    prefix = f"video/tiny_{uuid.uuid4().hex[:8]}"
    prompt[by_type["SaveVideo"][0]]["inputs"]["filename_prefix"] = prefix
    decode = by_type["UltraGenTiledVAEDecode"][0]
    prompt["900"] = {"class_type": "UltraGenCompare", "inputs": {
        "video_a": [decode, 0], "video_b": [decode, 0], "layout": "side_by_side", "size_mode": "first",
        "length_mode": "trim", "label_a": "a", "label_b": "b", "flow_max_side": 0}}
    prompt["901"] = {"class_type": "PreviewAny", "inputs": {"source": ["900", 1]}}
    return prompt, prefix, by_type["PreviewAny"][0]


def test_tiny_1080p_graph_runs_end_to_end(comfy):
    import av
    from harness import tiny_wan_vaes
    prompt, prefix, res_preview = _tiny_1080p_prompt(comfy)
    with tiny_wan_vaes():
        comfy.run(prompt)
    ui = comfy.executor.history_result["outputs"]
    texts = {nid: out.get("text", [""])[0] for nid, out in ui.items()}
    assert "64x64, 5 frames" in texts[res_preview] and "2x4x4" in texts[res_preview]
    assert "PSNR mean inf dB" in texts["901"] and "SSIM mean 1.0000" in texts["901"]
    out = Path(comfy.folder_paths.get_output_directory())
    files = list(out.glob(prefix + "*"))
    assert len(files) == 1, files
    with av.open(str(files[0])) as container:
        frames = [(f.width, f.height) for f in container.decode(video=0)]
    assert frames == [(64, 64)] * 5
