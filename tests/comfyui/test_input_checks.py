"""Graph-time checks of UltraGen nodes through ComfyUI's validate_prompt: one error entry per bad value,
at the input it is about, and ComfyUI's own min / max / combo checks stay on for every other input."""
from __future__ import annotations

import pytest


def entries(node_errors: dict, node_id: str) -> list[tuple[str, str, str]]:
    """(type, input name, details) of every error ComfyUI reports for one node."""
    return [(e["type"], e["extra_info"].get("input_name"), e["details"]) for e in node_errors[node_id]["errors"]]


def only_error(comfy, prompt: dict, node_id: str) -> tuple[str, str, str]:
    ok, _, _, node_errors = comfy.validate(prompt)
    assert not ok and set(node_errors) == {node_id}, node_errors
    found = entries(node_errors, node_id)
    assert len(found) == 1, found
    return found[0]


def bad_combo_is_refused(comfy, prompt: dict, node_id: str, name: str, value: str) -> None:
    """ComfyUI 0.33 checks V3 combos itself (one entry at the input); 0.3.64's executor does not check V3
    combos at all, so there the node refuses the value when it runs, naming the input."""
    from harness import PromptFailed
    if not comfy.validate(prompt)[0]:
        assert only_error(comfy, prompt, node_id)[:2] == ("value_not_in_list", name)
        return
    with pytest.raises(PromptFailed, match=rf"{name} must be one of .*got '{value}'|{name} '{value}' is unknown"):
        comfy.run(prompt)


# --- UltraGen Resolution ----------------------------------------------------------------------------------

def resolution(**inputs) -> dict:
    values = dict(model_family="Wan 2.1 T2V/I2V 14B", target="custom", orientation="landscape", frames=81,
                  custom_width=1920, custom_height=1080, rounding="nearest")
    values.update(inputs)
    return {"1": {"class_type": "UltraGenResolution", "inputs": values},
            "2": {"class_type": "PreviewAny", "inputs": {"source": ["1", 4]}}}


@pytest.mark.parametrize("inputs, name, kind", [
    (dict(frames=10 ** 9), "frames", "value_bigger_than_max"),
    (dict(frames=0), "frames", "value_smaller_than_min"),
    (dict(custom_width=10 ** 6), "custom_width", "value_bigger_than_max"),
])
def test_resolution_bad_value_is_one_entry_at_its_input(comfy, inputs, name, kind):
    assert only_error(comfy, resolution(**inputs), "1")[:2] == (kind, name)


@pytest.mark.parametrize("name, value", [("rounding", "sideways"), ("model_family", "Wan 9")])
def test_resolution_bad_choice_is_refused_at_its_input(comfy, name, value):
    bad_combo_is_refused(comfy, resolution(**{name: value}), "1", name, value)


def test_resolution_accepts_a_custom_size_below_one_step(comfy):
    ok, error, _, node_errors = comfy.validate(resolution(model_family="LTX-Video", custom_width=16))
    assert ok, (error, node_errors)


# --- UltraGen Tiled VAE Decode ----------------------------------------------------------------------------

def tiled_decode(**inputs) -> dict:
    values = dict(max_vram_gb=0.0, tile_size=0, overlap=64, temporal_size=0, temporal_overlap=8)
    values.update(inputs)
    return {"1": {"class_type": "UltraGenTestLatent", "inputs": {"seed": 0, "channels": 16, "frames": 2, "height": 8,
                                                                 "width": 8, "batch": 1, "corner_bump": 0.0}},
            "2": {"class_type": "VAELoader", "inputs": {"vae_name": "tiny_wan21_vae.safetensors"}},
            "3": {"class_type": "UltraGenTiledVAEDecode", "inputs": {"samples": ["1", 0], "vae": ["2", 0], **values}},
            "4": {"class_type": "PreviewImage", "inputs": {"images": ["3", 0]}}}


@pytest.mark.parametrize("inputs, name, kind, words", [
    (dict(tile_size=32), "tile_size", "custom_validation_failed", "at least 64"),
    (dict(tile_size=10 ** 6), "tile_size", "custom_validation_failed", "1000000 is outside 0 to 8192"),
    (dict(tile_size=-16), "tile_size", "custom_validation_failed", "-16 is outside 0 to 8192"),
    (dict(overlap=10 ** 6), "overlap", "value_bigger_than_max", ""),
    (dict(max_vram_gb=float("inf")), "max_vram_gb", "value_bigger_than_max", ""),
    (dict(temporal_overlap=-8), "temporal_overlap", "value_smaller_than_min", ""),
])
def test_tiled_decode_bad_value_is_one_entry_at_its_input(comfy, inputs, name, kind, words):
    from harness import save_tiny_wan_vae
    save_tiny_wan_vae(comfy, "2.1")
    found = only_error(comfy, tiled_decode(**inputs), "3")
    assert found[:2] == (kind, name) and words in found[2], found


def test_tiled_decode_overlap_above_half_the_tile_is_no_error(comfy):
    from harness import save_tiny_wan_vae
    save_tiny_wan_vae(comfy, "2.1")
    ok, error, _, node_errors = comfy.validate(tiled_decode(tile_size=64, overlap=48, temporal_size=8,
                                                            temporal_overlap=8))
    assert ok, (error, node_errors)


# --- UltraGen Compare -------------------------------------------------------------------------------------

def compare(**inputs) -> dict:
    values = dict(layout="side_by_side", size_mode="first", length_mode="trim", label_a="A", label_b="B",
                  flow_max_side=0, wall_time_a=0.0, peak_vram_a=0.0, wall_time_b=0.0, peak_vram_b=0.0)
    values.update(inputs)
    image = {"class_type": "EmptyImage", "inputs": {"width": 16, "height": 16, "batch_size": 2, "color": 0}}
    return {"1": image, "2": {**image, "inputs": {**image["inputs"], "color": 255}},
            "3": {"class_type": "UltraGenCompare", "inputs": {"video_a": ["1", 0], "video_b": ["2", 0], **values}},
            "4": {"class_type": "PreviewAny", "inputs": {"source": ["3", 1]}}}


@pytest.mark.parametrize("inputs, name, kind", [
    (dict(wall_time_a=float("inf")), "wall_time_a", "value_bigger_than_max"),
    (dict(peak_vram_b=-1.0), "peak_vram_b", "value_smaller_than_min"),
    (dict(flow_max_side=10 ** 6), "flow_max_side", "value_bigger_than_max"),
])
def test_compare_bad_value_is_one_entry_at_its_input(comfy, inputs, name, kind):
    assert only_error(comfy, compare(**inputs), "3")[:2] == (kind, name)


@pytest.mark.parametrize("name, value", [("layout", "diagonal"), ("size_mode", "huge")])
def test_compare_bad_choice_is_refused_at_its_input(comfy, name, value):
    bad_combo_is_refused(comfy, compare(**{name: value}), "3", name, value)


def test_compare_nan_wall_time_is_refused_naming_the_input(comfy):
    from harness import PromptFailed
    prompt = compare(wall_time_b=float("nan"))
    assert comfy.validate(prompt)[0]  # NaN passes ComfyUI's min / max checks ...
    with pytest.raises(PromptFailed, match=r"wall_time_b must be a finite number >= 0 \(0 = not given\), got nan"):
        comfy.run(prompt)  # ... and the node refuses it before measuring


# --- UltraGen Split Video Across GPUs (issue 25) ----------------------------------------------------------

def split(comfy, **inputs) -> dict:
    from harness import save_wan
    values = dict(gpus=2, cfg_groups=1)
    values.update(inputs)
    return {"1": {"class_type": "UNETLoader", "inputs": {"unet_name": save_wan(comfy, "checks_wan.safetensors"),
                                                         "weight_dtype": "default"}},
            "2": {"class_type": "UltraGenSplitAcrossGPUs", "inputs": {"model": ["1", 0], **values}},
            "3": {"class_type": "UltraGenTestSink", "inputs": {"value": ["2", 0], "key": "split"}}}


@pytest.mark.parametrize("inputs, name, kind", [
    (dict(gpus=0), "gpus", "value_smaller_than_min"),
    (dict(gpus=1), "gpus", "value_smaller_than_min"),
    (dict(gpus=100), "gpus", "value_bigger_than_max"),
    (dict(cfg_groups=-1), "cfg_groups", "value_smaller_than_min"),
    (dict(cfg_groups=0), "cfg_groups", "value_smaller_than_min"),  # was "integer modulo by zero" under model
    (dict(gpus="two"), "gpus", "invalid_input_type"),  # was a string-formatting error under model
])
def test_split_bad_value_is_one_entry_at_its_input(comfy, inputs, name, kind):
    found = only_error(comfy, split(comfy, **inputs), "2")
    assert found[:2] == (kind, name) and "Exception" not in found[2], found


def test_split_groups_that_do_not_divide_the_gpus_are_one_message_before_any_copy(comfy):
    from harness import PromptFailed, captured
    prompt = split(comfy, gpus=3, cfg_groups=2)
    assert comfy.validate(prompt)[0]  # a rule about two inputs: not shown under both of them
    captured().pop("split", None)
    with pytest.raises(PromptFailed, match=r"^UltraGen Split Video Across GPUs: cfg_groups is 2, which does not "
                                           r"divide gpus \(3\)\. Use 1, or a divisor of 3") as caught:
        comfy.run(prompt)
    assert str(caught.value).count("does not divide") == 1 and "split" not in captured()


# --- UltraGen Upscale Latent (issue 25) -------------------------------------------------------------------

def upscale(**inputs) -> dict:
    values = dict(width=64, height=64, length=9, upscale_method="bilinear")
    values.update(inputs)
    return {"1": {"class_type": "UltraGenTestLatent", "inputs": {"seed": 0, "channels": 16, "frames": 2, "height": 4,
                                                                 "width": 4, "batch": 1, "corner_bump": 0.0}},
            "2": {"class_type": "UltraGenUpscaleLatent", "inputs": {"latent": ["1", 0], **values}},
            "3": {"class_type": "UltraGenTestCapture", "inputs": {"samples": ["2", 0], "key": "upscaled"}}}


@pytest.mark.parametrize("length, words", [
    (4101, "4101 is outside 1 to 4097"),  # was accepted: the node's own check turned ComfyUI's max off
    (4 * 2**36 + 1, "274877906945 is outside 1 to 4097"),  # was a raw allocator error
    (0, "0 is outside 1 to 4097"),
    (80, "length - must be 4n+1 video frames"),
])
def test_upscale_length_is_checked_within_the_widgets_limits(comfy, length, words):
    kind, name, details = only_error(comfy, upscale(length=length), "2")
    assert (kind, name) == ("custom_validation_failed", "length") and words in details, details
    assert details.count("length") == 1, details  # ComfyUI's "length - " prefix only


def test_upscale_output_too_large_for_memory_is_refused_before_allocating(comfy):
    """16384 x 16384 x 4097 frames is within every widget's limits: 275 GB of latent at 16 channels."""
    from harness import PromptFailed, captured
    prompt = upscale(width=16384, height=16384, length=4097)
    assert comfy.validate(prompt)[0]
    captured().pop("upscaled", None)
    with pytest.raises(PromptFailed, match=r"UltraGen Upscale Latent: the upscaled latent would be 1 x 16 x 1025 x "
                                           r"2048 x 2048 latent cells \(16384x16384 px, 4097 frames\), 512\.5 GiB "
                                           r"while resizing, but only .* GiB of memory is free: at this width and "
                                           r"height, up to \d+ frames \(length\) fit|2 latent frames fit") as caught:
        comfy.run(prompt)
    assert "tried to allocate" not in str(caught.value) and "upscaled" not in captured()


def test_upscale_within_memory_still_runs(comfy):
    from harness import captured
    comfy.run(upscale(width=64, height=32, length=9))
    assert tuple(captured()["upscaled"].shape) == (1, 16, 3, 4, 8)


# --- Error text without a doubled input name, Load Weights' queue check (issue 25) ------------------------

def test_full_attention_blocks_message_does_not_repeat_the_input_name(comfy):
    settings = {i.id: i.default for i in comfy.nodes.NODE_CLASS_MAPPINGS["UltraGenAttentionSettings"]
                .define_schema().inputs if i.default is not None}
    prompt = {"1": {"class_type": "UltraGenAttentionSettings", "inputs": {**settings, "full_attention_blocks": "abc"}},
              "2": {"class_type": "UltraGenTestSink", "inputs": {"value": ["1", 0], "key": "settings"}}}
    kind, name, details = only_error(comfy, prompt, "1")
    assert (kind, name) == ("custom_validation_failed", "full_attention_blocks")
    assert details.startswith("full_attention_blocks - 'abc' is not a block number"), details


@pytest.mark.parametrize("fusion,strength,warned", [("gate", 1.0, True), ("gate", 0.5, False), ("band", 1.0, False)])
def test_gate_at_full_strength_warns_that_it_drops_the_windows(comfy, caplog, fusion, strength, warned):
    """gate mixes (1 - w) windows + w global: at w = 1 the output is the pooled global branch alone (the
    fidelity bench's grain check, docs/FIDELITY.md), so the settings node says so in the log."""
    import logging
    settings = {i.id: i.default for i in comfy.nodes.NODE_CLASS_MAPPINGS["UltraGenAttentionSettings"]
                .define_schema().inputs if i.default is not None}
    prompt = {"1": {"class_type": "UltraGenAttentionSettings",
                    "inputs": {**settings, "fusion": fusion, "global_strength": strength}},
              "2": {"class_type": "UltraGenTestSink", "inputs": {"value": ["1", 0], "key": "gate_settings"}}}
    with caplog.at_level(logging.WARNING):
        comfy.run(prompt)
    said = [r.getMessage() for r in caplog.records if "windows' detail is dropped" in r.getMessage()]
    assert len(said) == int(warned), said
    if warned:
        assert said[0].startswith("[UltraGen] fusion gate with global_strength 1: the output is the pooled global")


def test_a_text_file_named_ckpt_is_refused_when_queued(comfy):
    from harness import save_wan
    (comfy.models_dir / "diffusion_models" / "checks_text.ckpt").write_bytes(b"hello world\n")  # 12 bytes
    prompt = {"1": {"class_type": "UNETLoader", "inputs": {"unet_name": save_wan(comfy, "checks_wan.safetensors"),
                                                           "weight_dtype": "default"}},
              "2": {"class_type": "UltraGenLoadWeights", "inputs": {"model": ["1", 0], "weights": "checks_text.ckpt"}},
              "3": {"class_type": "UltraGenTestSink", "inputs": {"value": ["2", 0], "key": "weights"}}}
    kind, name, details = only_error(comfy, prompt, "2")
    assert (kind, name) == ("custom_validation_failed", "weights")
    assert details.startswith("weights - UltraGen: checks_text.ckpt (12 bytes) cannot be read: it is no torch "
                              "checkpoint (it starts with b'hell'"), details
    assert "Weights only load failed" not in details


# --- Search aliases (issue 25) ----------------------------------------------------------------------------

def test_native_resolution_searches_find_every_pack_node(comfy):
    from comfy_api.latest import io
    import inspect
    if "search_aliases" not in inspect.signature(io.Schema).parameters:
        pytest.skip("this ComfyUI has no node search aliases (added after 0.3.64)")
    from harness import pack_nodes
    nodes = pack_nodes(comfy.nodes.NODE_CLASS_MAPPINGS)
    assert "UltraGenApply" in nodes and "UltraGenSplitAcrossGPUs" in nodes, sorted(nodes)
    for name, cls in nodes.items():
        aliases = cls.GET_NODE_INFO_V1().get("search_aliases") or []  # what /object_info sends the frontend
        assert {"native resolution", "native 4k"} <= set(aliases), (name, aliases)
