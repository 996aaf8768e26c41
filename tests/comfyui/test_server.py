"""One prompt through the real ComfyUI server on 127.0.0.1, with the pack installed in custom_nodes."""
import json
import shutil
import time
import urllib.request

import pytest
import torch
from safetensors.torch import load_file

from comfyui_finder import PACK_DIR
from harness import PACK_NAME, TEST_NODES, running_server
from test_apply import WAN_T2V, model_file, run, sample_prompt, settings


def get(url, timeout=5.0):
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return json.loads(r.read())


def post(url, body):
    req = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read())


@pytest.fixture
def server(comfy, tmp_path):
    base = tmp_path / "base"
    (base / "custom_nodes").mkdir(parents=True)
    (base / "models" / "diffusion_models").mkdir(parents=True)
    (base / "custom_nodes" / PACK_NAME).symlink_to(PACK_DIR, target_is_directory=True)
    shutil.copy(TEST_NODES, base / "custom_nodes" / TEST_NODES.name)
    name = model_file(comfy, WAN_T2V)
    shutil.copy(comfy.models_dir / "diffusion_models" / name, base / "models" / "diffusion_models" / name)
    with running_server(comfy.root, base, tmp_path / "server.log") as url:
        yield url, base, name


def test_prompt_through_the_real_server(server, comfy):
    url, base, name = server
    info = get(url + "/object_info/UltraGenApply")["UltraGenApply"]
    assert info["display_name"] == "UltraGen Apply" and info["category"] == "UltraGen/attention"
    assert info["input"]["required"]["model"][1]["tooltip"]
    all_info = get(url + "/object_info")
    assert "UltraGenAttentionSettings" in all_info

    # node search: the words users type find the pack where ComfyUI's schema has search_aliases (0.33 on)
    import inspect
    from comfy_api.latest import io
    if "search_aliases" in inspect.signature(io.Schema).parameters:
        pack = ("UltraGenAttentionSettings", "UltraGenApply", "UltraGenResolution", "UltraGenCompare",
                "UltraGenTiledVAEDecode", "UltraGenLoadWeights", "UltraGenUpscaleLatent")
        ours = {k: all_info[k].get("search_aliases") or [] for k in pack}
        for words in ("window attention", "4k video", "dual branch", "hierarchical"):
            assert any(words in alias for alias in ours["UltraGenApply"]), (words, ours["UltraGenApply"])
        assert all(ours.values()), ours

    prompt = sample_prompt(name, settings(window=(1, 4, 4), global_compression=2), cfg=2.0)
    prompt["capture"] = {"class_type": "SaveLatent", "inputs": {"samples": ["sample", 0],
                                                                "filename_prefix": "latents/ultragen"}}
    prompt_id = post(url + "/prompt", {"prompt": prompt, "client_id": "ultragen-test"})["prompt_id"]
    deadline = time.time() + 240
    while time.time() < deadline:
        history = get(url + f"/history/{prompt_id}")
        if prompt_id in history:
            break
        time.sleep(0.5)
    else:
        pytest.fail("the prompt did not finish in time")
    status = history[prompt_id]["status"]
    assert status["status_str"] == "success", status
    files = list((base / "output" / "latents").glob("ultragen*.latent"))
    assert len(files) == 1
    served = load_file(str(files[0]))["latent_tensor"]

    # the same prompt in-process gives the same latent (SaveLatent stores the raw sampler output)
    local = run(comfy, sample_prompt(name, settings(window=(1, 4, 4), global_compression=2), cfg=2.0))
    torch.testing.assert_close(served, local, rtol=0, atol=1e-5)

    bad = sample_prompt(name, settings(full_attention_blocks="0,x"))
    req = urllib.request.Request(url + "/prompt", data=json.dumps({"prompt": bad}).encode(),
                                 headers={"Content-Type": "application/json"})
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(req, timeout=10)
    assert refused.value.code == 400
    node_errors = json.loads(refused.value.read().decode())["node_errors"]
    errors = node_errors["settings"]["errors"]
    assert len(errors) == 1 and errors[0]["extra_info"]["input_name"] == "full_attention_blocks", errors
    assert "'x' is not a block number" in errors[0]["details"]
