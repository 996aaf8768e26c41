"""The Wan patch with what ComfyUI 0.33 adds: tokens outside the video grid, attn1 patches, RoPE options,
the model classes, the native-size input, and clones of one patched model running side by side."""
import importlib
import inspect
import logging
import os
import pkgutil
import threading

import pytest
import torch

from harness import PromptFailed, captured
from test_apply import (LOCAL_ONLY, WAN_CAMERA, WAN_REF, WAN_T2V, model_file, reachable, run, sample_prompt,
                        settings)


def wan_source_has(name: str, text: str) -> bool:
    import comfy.ldm.wan.model as wan
    return text in inspect.getsource(getattr(wan, name))


def with_extra_latent(prompt: dict, key: str, seed: int = 9, size: int = 32, frames: int = 1) -> dict:
    prompt["extra"] = {"class_type": "UltraGenTestLatent", "inputs": {
        "seed": seed, "channels": 16, "frames": frames, "height": size, "width": size, "batch": 1, "corner_bump": 0.0}}
    prompt["cond"]["inputs"][key] = ["extra", 0]
    return prompt


def token_change(a, b, grid=(2, 16, 16)):
    """Largest change per video token (t, h, w) between two (1, 16, 2, 32, 32) latents."""
    diff = (a - b).abs()[0].amax(0)
    return diff.view(grid[0], grid[1], 2, grid[2], 2).amax(dim=(2, 4))


EXTRA_TOKENS = [("reference_latent", WAN_REF, "prepended by ref_conv"),
                ("context_latent", WAN_T2V, "in-context latents appended after the video (0.33)")]


@pytest.mark.parametrize("key,spec,what", EXTRA_TOKENS, ids=["reference", "context"])
def test_tokens_outside_the_grid_keep_their_effect_and_are_not_windowed(comfy, key, spec, what):
    if key == "context_latent" and not wan_source_has("WanModel", "context_latents"):
        pytest.skip("this ComfyUI has no in-context latents")
    name = model_file(comfy, spec)
    window, grid = (2, 4, 4), (2, 16, 16)
    cfg = settings(window=window, **LOCAL_ONLY)
    # their conditioning still reaches the video: another reference / context latent, another output
    first = run(comfy, with_extra_latent(sample_prompt(name, cfg, cfg=1.0, denoise=0.5), key, seed=9))
    other = run(comfy, with_extra_latent(sample_prompt(name, cfg, cfg=1.0, denoise=0.5), key, seed=10))
    assert token_change(first, other).min() > 0, f"{what}: some video tokens ignore the extra tokens"
    # and they do not join a window: a corner bump of the video reaches only its windows' tokens
    bumped = run(comfy, with_extra_latent(sample_prompt(name, cfg, cfg=1.0, denoise=0.5, bump=5.0), key, seed=9))
    outside = torch.ones(grid, dtype=torch.bool)
    for tok in reachable(grid, window, {(0, 0, 0)}):
        outside[tok] = False
    change = token_change(first, bumped)
    assert torch.all(change[outside] == 0), f"{what}: a change crossed windows through the extra tokens"
    assert change[~outside].max() > 0


def test_reference_tokens_are_logged_and_cover_the_video_with_the_global_branch(comfy, caplog):
    name = model_file(comfy, WAN_REF)
    with caplog.at_level(logging.INFO):
        out = run(comfy, with_extra_latent(sample_prompt(name, settings(window=(1, 4, 4))), "reference_latent"))
    line = next(r.getMessage() for r in caplog.records if r.getMessage().startswith("[UltraGen]"))
    assert "grid 2x16x16" in line and "256 reference tokens before the video, not windowed" in line, line
    assert torch.isfinite(out).all()


def test_camera_model_is_patched(comfy):
    name = model_file(comfy, WAN_CAMERA)
    plain = run(comfy, sample_prompt(name, channels=16))
    same = run(comfy, sample_prompt(name, settings(window=(64, 64, 64), **LOCAL_ONLY), channels=16))
    windowed = run(comfy, sample_prompt(name, settings(window=(1, 4, 4)), channels=16))
    assert torch.equal(plain, same) and not torch.allclose(plain, windowed, atol=1e-4)


def attn1_prompt(name, patch, scale, key):
    p = sample_prompt(name, patch, key=key)
    p["attn1"] = {"class_type": "UltraGenTestAttn1Patch", "inputs": {"model": ["load", 0], "key": key + "_attn1",
                                                                     "scale": scale}}
    (p["apply"] if "apply" in p else p["sample"])["inputs"]["model"] = ["attn1", 0]
    return p


def test_attn1_patches_run_as_in_comfyui(comfy):
    import comfy.ldm.wan.model as wan
    name = model_file(comfy, WAN_T2V)
    runs_them = "attn1_patch" in inspect.getsource(wan.WanSelfAttention.forward)
    plain = run(comfy, attn1_prompt(name, None, 0.5, "plain"), "plain")
    ours = run(comfy, attn1_prompt(name, settings(window=(1, 4, 4)), 0.5, "ours"), "ours")
    mine, theirs = captured()["ours_attn1"], captured()["plain_attn1"]
    if not runs_them:  # ComfyUI 0.3.64: Wan self-attention ignores attn1_patch, and so does the patch
        assert mine == [] and theirs == []
        return
    assert len(mine) == len(theirs) > 0
    # the first block of the first step sees the same input either way: same x shape, same q and k
    shape, q, k = mine[0]
    assert shape == theirs[0][0] and q.shape == (2, 512, 1, 128)
    torch.testing.assert_close(q, theirs[0][1], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(k, theirs[0][2], rtol=1e-5, atol=1e-5)
    # and the patch's return value is used: scale 1 gives another result than 0.5
    unscaled = run(comfy, attn1_prompt(name, settings(window=(1, 4, 4)), 1.0, "one"), "one")
    assert not torch.allclose(ours, unscaled, atol=1e-4) and not torch.allclose(plain, ours, atol=1e-4)


def scaled_rope_prompt(name, patch, key, **rope):
    p = sample_prompt(name, patch, key=key)
    values = dict(scale_x=1.0, shift_x=0.0, scale_y=1.0, shift_y=0.0, scale_t=1.0, shift_t=0.0)
    values.update(rope)
    p["rope"] = {"class_type": "ScaleROPE", "inputs": {"model": ["load", 0], **values}}
    p["apply"]["inputs"]["model"] = ["rope", 0]
    return p


def test_rope_options_reach_windows_and_global_branch(comfy):
    if "ScaleROPE" not in comfy.nodes.NODE_CLASS_MAPPINGS:
        pytest.skip("this ComfyUI has no ScaleROPE / rope_options")
    name = model_file(comfy, WAN_T2V)
    cfg = settings(window=(1, 4, 4), global_compression=2)
    base = run(comfy, sample_prompt(name, cfg, key="base"), "base")
    # positions enter attention only as differences: a shift changes nothing, a scale does
    shifted = run(comfy, scaled_rope_prompt(name, cfg, "shifted", shift_x=7.0, shift_y=-3.0, shift_t=2.0), "shifted")
    torch.testing.assert_close(shifted, base, rtol=1e-4, atol=1e-4)
    scaled = run(comfy, scaled_rope_prompt(name, cfg, "scaled", scale_x=2.0, scale_y=0.5), "scaled")
    assert not torch.allclose(scaled, base, atol=1e-3)


def test_native_resolution_is_an_input_and_logged(comfy, caplog):
    name = model_file(comfy, WAN_T2V)
    cfg = settings()  # automatic windows: the 1.3B width is trained at 832x480 (grid 30x52)
    cfg["inputs"]["native_resolution"] = "720p (1280x720)"
    with caplog.at_level(logging.INFO):
        run(comfy, sample_prompt(name, cfg, size=96))  # 48x48 tokens: one window at 720p, two at 480p
    line = next(r.getMessage() for r in caplog.records if r.getMessage().startswith("[UltraGen]"))
    assert "native 1280x720 (set in the settings)" in line and "unchanged" in line, line
    caplog.clear()
    with caplog.at_level(logging.INFO):
        run(comfy, sample_prompt(name, settings(), size=96))
    line = next(r.getMessage() for r in caplog.records if r.getMessage().startswith("[UltraGen]"))
    assert "native 832x480 (automatic, Wan 2.1 T2V/I2V 1.3B)" in line and "windows 2x24x48" in line, line
    cfg["inputs"]["native_resolution"] = "360p"
    ok, _, _, errors = comfy.validate(sample_prompt(name, cfg))
    if ok:  # ComfyUI 0.3.64 does not check a V3 combo's options (0.33 does): refused when the node runs
        with pytest.raises(PromptFailed, match="native_resolution must be one of"):
            comfy.run(sample_prompt(name, cfg))
    else:
        assert [e["extra_info"]["input_name"] for e in errors["settings"]["errors"]] == ["native_resolution"]


def wan_model_classes():
    """Every diffusion-model class (WanModel and its subclasses) in this ComfyUI's comfy.ldm.wan."""
    import comfy.ldm.wan as package
    from comfy.ldm.wan.model import WanModel
    found = {}
    for info in pkgutil.iter_modules(package.__path__):
        module = importlib.import_module(f"comfy.ldm.wan.{info.name}")
        for obj in vars(module).values():
            if inspect.isclass(obj) and issubclass(obj, WanModel):
                found[obj.__name__] = obj
    return found


def test_every_wan_class_is_supported_or_refused_with_its_reason(comfy):
    import comfy.model_patcher as model_patcher
    import comfy.ops as ops
    from ultragen_core.models import WAN_REFUSED, WAN_SUPPORTED
    classes = wan_model_classes()
    assert set(classes) <= set(WAN_SUPPORTED) | set(WAN_REFUSED), sorted(set(classes) - set(WAN_SUPPORTED) - set(WAN_REFUSED))
    apply_node = comfy.nodes.NODE_CLASS_MAPPINGS["UltraGenApply"]
    for name, cls in classes.items():
        if name not in WAN_REFUSED:
            continue
        holder = torch.nn.Module()
        holder.diffusion_model = cls(dim=128, num_heads=1, num_layers=1, ffn_dim=256, in_dim=16, out_dim=16,
                                     text_dim=4096, freq_dim=256, operations=ops.disable_weight_init,
                                     device="meta")
        patcher = model_patcher.ModelPatcher(holder, torch.device("cpu"), torch.device("cpu"))
        with pytest.raises(NotImplementedError) as refused:
            apply_node.execute(model=patcher)
        assert f"does not patch {name}" in str(refused.value) and WAN_REFUSED[name] in str(refused.value)


def test_a_wrong_value_in_the_settings_socket_is_refused(comfy):
    import comfy.sd as comfy_sd
    model = comfy_sd.load_diffusion_model(str(comfy.models_dir / "diffusion_models" / model_file(comfy, WAN_T2V)))
    apply_node = comfy.nodes.NODE_CLASS_MAPPINGS["UltraGenApply"]
    with pytest.raises(TypeError, match="settings must come from UltraGen Attention Settings, got a dict"):
        apply_node.execute(model=model, settings={"window": 4})


def test_clones_on_two_devices_run_their_own_modules_side_by_side(comfy):
    """ComfyUI 0.33's MultiGPU CFG Split deep-clones a patched model per extra device and runs the clones
    in threads at once; object patches are shared by reference. Here both "devices" are the CPU: the
    deep clone gets other weights, and each clone must run its own."""
    if os.environ.get("ULTRAGEN_TEST_DEVICE") == "cuda":
        pytest.skip("a CPU simulation of two devices; on CUDA the engine puts each clone on its own GPU")
    import comfy.sample as comfy_sample
    import comfy.sd as comfy_sd
    from ultragen_core.adapters import apply_attention
    from ultragen_core.config import AttentionSettings
    path = comfy.models_dir / "diffusion_models" / model_file(comfy, WAN_T2V)
    patched = apply_attention(comfy_sd.load_diffusion_model(str(path)), AttentionSettings(window=(1, 4, 4)))
    if not hasattr(patched, "deepclone_multigpu"):
        pytest.skip("this ComfyUI has no multi-GPU deep clones")
    clone = patched.deepclone_multigpu(new_load_device=torch.device("cpu"))
    assert clone.model is not patched.model
    with torch.no_grad():
        clone.model.diffusion_model.blocks[0].self_attn.o.weight.mul_(-1.0)  # the clone's own weights differ

    gen = torch.Generator().manual_seed(0)
    latent = torch.randn(1, 16, 2, 32, 32, generator=gen)
    cond = [[torch.randn(1, 8, 4096, generator=gen), {}]]

    def sample(model):
        noise = torch.randn(latent.shape, generator=torch.Generator().manual_seed(1))
        return comfy_sample.sample(model, noise, 2, 2.0, "euler", "simple", cond, cond, latent, seed=1)

    alone = [sample(patched), sample(clone)]
    assert not torch.allclose(alone[0], alone[1], atol=1e-4), "the clone ran the original's modules"
    together, errors = [None, None], []

    def worker(i, model):
        try:
            together[i] = sample(model)
        except Exception as e:  # surfaced below
            errors.append(e)
    threads = [threading.Thread(target=worker, args=(i, m)) for i, m in enumerate((patched, clone))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert torch.equal(together[0], alone[0]) and torch.equal(together[1], alone[1])


def test_bad_model_gets_a_clear_error_through_the_graph(comfy):
    name = model_file(comfy, WAN_T2V)
    with pytest.raises(PromptFailed, match="block 7 does not exist in a model with 2 blocks"):
        comfy.run(sample_prompt(name, settings(full_attention_blocks="7")))
