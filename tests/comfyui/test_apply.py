"""UltraGenApply in the real ComfyUI runtime: UNETLoader -> settings -> apply -> KSampler, tiny Wan models."""
import asyncio

import pytest
import torch

from harness import PromptFailed, captured, save_wan

WAN_T2V = dict(name="tiny_wan_t2v.safetensors")
WAN_5B = dict(name="tiny_wan22_5b.safetensors", in_dim=48, out_dim=48)
WAN_I2V = dict(name="tiny_wan_i2v.safetensors", in_dim=36, model_type="i2v")
WAN_VACE = dict(name="tiny_wan_vace.safetensors", model_class="VaceWanModel", vace_layers=1, vace_in_dim=96)
WAN_REF = dict(name="tiny_wan_ref.safetensors", in_dim_ref_conv=16)
WAN_CAMERA = dict(name="tiny_wan_camera.safetensors", model_class="CameraWanModel", in_dim=32, model_type="camera",
                  in_dim_control_adapter=24)

LOCAL_ONLY = dict(global_branch=False, fusion="local_only")


def settings(window=(0, 0, 0), shift="alternate", global_branch=True, global_compression=0, fusion="band",
             global_strength=1.0, full_attention_blocks="", start_percent=0.0, end_percent=1.0, preset=None):
    """The settings node; ``preset`` None leaves that optional input out, as prompts made before it did."""
    node = {"class_type": "UltraGenAttentionSettings", "inputs": {
        "window_t": window[0], "window_h": window[1], "window_w": window[2], "shift": shift,
        "global_branch": global_branch, "global_compression": global_compression, "fusion": fusion,
        "global_strength": global_strength, "full_attention_blocks": full_attention_blocks,
        "start_percent": start_percent, "end_percent": end_percent}}
    if preset is not None:
        node["inputs"]["preset"] = preset
    return node


def sample_prompt(model_file, patch=None, channels=16, frames=2, size=32, bump=0.0, cfg=2.0, steps=1, key="out",
                  cond_extra=None, probe=False, denoise=1.0):
    """API prompt: load, (probe), (patch), sample, capture. ``patch`` is a settings dict, "default" or None."""
    p = {"load": {"class_type": "UNETLoader", "inputs": {"unet_name": model_file, "weight_dtype": "default"}},
         "cond": {"class_type": "UltraGenTestConditioning", "inputs": {"seed": 1, "tokens": 8, **(cond_extra or {})}},
         "latent": {"class_type": "UltraGenTestLatent", "inputs": {
             "seed": 2, "channels": channels, "frames": frames, "height": size, "width": size, "batch": 1,
             "corner_bump": bump}}}
    model = ["load", 0]
    if probe:
        p["probe"] = {"class_type": "UltraGenTestAttentionProbe", "inputs": {"model": model, "key": key + "_probe"}}
        model = ["probe", 0]
    if patch is not None:
        p["apply"] = {"class_type": "UltraGenApply", "inputs": {"model": model}}
        if patch != "default":
            p["settings"] = patch
            p["apply"]["inputs"]["settings"] = ["settings", 0]
        model = ["apply", 0]
    p["sample"] = {"class_type": "KSampler", "inputs": {
        "model": model, "seed": 3, "steps": steps, "cfg": cfg, "sampler_name": "euler", "scheduler": "simple",
        "positive": ["cond", 0], "negative": ["cond", 0], "latent_image": ["latent", 0], "denoise": denoise}}
    p["capture"] = {"class_type": "UltraGenTestCapture", "inputs": {"samples": ["sample", 0], "key": key}}
    return p


def run(comfy, prompt, key="out"):
    captured().pop(key, None)
    comfy.run(prompt)
    return captured()[key]


def model_file(comfy, spec):
    spec = dict(spec)
    return save_wan(comfy, spec.pop("name"), **spec)


@pytest.mark.parametrize("spec,channels", [(WAN_T2V, 16), (WAN_5B, 48), (WAN_I2V, 16), (WAN_VACE, 16)])
def test_windows_covering_the_grid_reproduce_the_model_exactly(comfy, spec, channels):
    name = model_file(comfy, spec)
    plain = run(comfy, sample_prompt(name, channels=channels))
    same = run(comfy, sample_prompt(name, settings(window=(64, 64, 64), **LOCAL_ONLY), channels=channels))
    assert torch.equal(plain, same)
    windowed = run(comfy, sample_prompt(name, settings(window=(1, 4, 4)), channels=channels))
    assert not torch.allclose(plain, windowed, atol=1e-4)  # the patch really changes attention
    assert torch.isfinite(windowed).all()


def test_automatic_settings_leave_a_native_size_grid_unchanged(comfy):
    name = model_file(comfy, WAN_T2V)
    assert torch.equal(run(comfy, sample_prompt(name)), run(comfy, sample_prompt(name, "default")))


def reachable(grid, window, seeds):
    """Tokens that two blocks (plain windows, then shifted windows) can carry a change in ``seeds`` to."""
    from ultragen_core.attention.windows import make_layout  # the pack's core, for the layouts
    T, H, W = grid
    changed = set(seeds)
    for shifted in (False, True):
        layout = make_layout(grid, window, shifted)
        owners = [a.owner_and_offset()[0] for a in layout.axes]
        new = set(changed)
        for t in range(T):
            for h in range(H):
                for w in range(W):
                    own = [o[c] for o, c in zip(owners, (t, h, w))]
                    starts = [a.window_starts[i] for a, i in zip(layout.axes, own)]
                    lengths = [a.window_lengths[i] for a, i in zip(layout.axes, own)]
                    if any(all(s <= c < s + n for s, c, n in zip(starts, tok, lengths)) for tok in changed):
                        new.add((t, h, w))
        changed = new
    return changed


def test_locality_a_corner_change_stays_in_reach_without_global_branch(comfy):
    """One sampling step, cfg 1: a bump in one latent corner may only move tokens its windows reach.

    denoise 0.5 so that the input latent (not only the noise) reaches the model."""
    name = model_file(comfy, WAN_T2V)
    window, grid = (2, 4, 4), (2, 16, 16)  # 32x32 latent, patch 2x2 -> 16x16 tokens, 2 frames
    reach = reachable(grid, window, {(0, 0, 0)})
    assert 0 < len(reach) < 2 * 16 * 16 // 2

    def token_change(global_branch):
        extra = {} if global_branch else LOCAL_ONLY
        cfg = settings(window=window, global_compression=4 if global_branch else 0, **extra)
        a = run(comfy, sample_prompt(name, cfg, cfg=1.0, denoise=0.5))
        b = run(comfy, sample_prompt(name, cfg, cfg=1.0, bump=5.0, denoise=0.5))
        diff = (a - b).abs()[0].amax(0)  # (frames, 32, 32)
        return diff.view(2, 16, 2, 16, 2).amax(dim=(2, 4))  # per token (t, h, w)

    outside = torch.ones(grid, dtype=torch.bool)
    for tok in reach:
        outside[tok] = False
    local = token_change(global_branch=False)
    assert torch.all(local[outside] == 0), "a token outside the reachable windows changed"
    assert local[~outside].max() > 0
    mixed = token_change(global_branch=True)
    assert (mixed[outside] > 0).float().mean() > 0.5, "the global branch should carry the change everywhere"


def test_input_model_is_not_mutated(comfy):
    import comfy.sd as comfy_sd  # the runtime fixture has set ComfyUI up
    name = model_file(comfy, WAN_T2V)
    path = comfy.models_dir / "diffusion_models" / name
    model = comfy_sd.load_diffusion_model(str(path))
    before = (dict(model.object_patches), {k: dict(v) for k, v in model.wrappers.items()},
              dict(model.model_options.get("transformer_options", {})))
    apply_node = comfy.nodes.NODE_CLASS_MAPPINGS["UltraGenApply"]
    patched = asyncio.run(_execute(apply_node, model=model))
    assert patched is not model
    assert any("self_attn.forward" in k for k in patched.object_patches)
    after = (dict(model.object_patches), {k: dict(v) for k, v in model.wrappers.items()},
             dict(model.model_options.get("transformer_options", {})))
    assert before == after
    # and the original keeps producing its original output after the patched one ran
    plain = run(comfy, sample_prompt(name))
    patched_out = run(comfy, sample_prompt(name, settings(window=(1, 4, 4))))
    assert not torch.equal(plain, patched_out)
    assert torch.equal(plain, run(comfy, sample_prompt(name)))


async def _execute(node_cls, **inputs):
    out = node_cls.execute(**inputs)
    if asyncio.iscoroutine(out):
        out = await out
    return out.result[0] if hasattr(out, "result") else out[0]


def test_attention_overrides_of_other_packs_see_our_window_batches(comfy):
    name = model_file(comfy, WAN_T2V)
    run(comfy, sample_prompt(name, settings(window=(2, 8, 8), **LOCAL_ONLY), cfg=2.0, probe=True, key="w"), "w")
    shapes = captured()["w_probe"]
    # self-attention: 16x16 tokens x 2 frames in 2x2 windows of 2x8x8, cond + uncond -> (2*4, 128, 128)
    assert (8, 128, 128, 128) in shapes
    assert (2, 512, 128, 512) not in shapes  # no full-length self-attention call was left
    assert (2, 512, 128, 8) in shapes  # cross-attention untouched


def test_sigma_range_limits_where_the_patch_is_active(comfy):
    name = model_file(comfy, WAN_T2V)
    # Wan's flow shift 8 puts the 4 steps at sigma 1, 0.96, 0.89, 0.73; start 0.6 is sigma 0.84: last step only
    plain = run(comfy, sample_prompt(name, steps=4))
    late = run(comfy, sample_prompt(name, settings(window=(1, 4, 4), start_percent=0.6), steps=4))
    full = run(comfy, sample_prompt(name, settings(window=(1, 4, 4)), steps=4))
    assert not torch.equal(plain, late) and not torch.equal(late, full)
    never = run(comfy, sample_prompt(name, settings(window=(1, 4, 4), start_percent=0.999, end_percent=1.0), steps=4))
    assert torch.equal(plain, never)  # sigma never enters the window: full attention throughout


def test_full_attention_blocks_keep_full_attention(comfy):
    name = model_file(comfy, WAN_T2V)
    plain = run(comfy, sample_prompt(name))
    both_full = run(comfy, sample_prompt(name, settings(window=(1, 4, 4), full_attention_blocks="0,-1")))
    assert torch.equal(plain, both_full)
    one_full = run(comfy, sample_prompt(name, settings(window=(1, 4, 4), full_attention_blocks="1")))
    assert not torch.equal(plain, one_full)


def test_time_dim_concat_and_reference_frames_extend_the_grid(comfy):
    t2v, ref = model_file(comfy, WAN_T2V), model_file(comfy, WAN_REF)
    extra = {"class_type": "UltraGenTestLatent", "inputs": {"seed": 9, "channels": 16, "frames": 1, "height": 32,
                                                            "width": 32, "batch": 1, "corner_bump": 0.0}}
    for name, key in ((t2v, "time_dim_concat"), (ref, "reference_latent")):
        prompts = [sample_prompt(name, patch, cond_extra={key: ["extra", 0]})
                   for patch in (None, settings(window=(64, 64, 64), **LOCAL_ONLY), settings(window=(1, 4, 4)))]
        for p in prompts:
            p["extra"] = extra
        plain, same, windowed = (run(comfy, p) for p in prompts)
        assert torch.equal(plain, same), key
        assert not torch.allclose(plain, windowed, atol=1e-4), key


def test_bad_settings_are_refused_once_at_the_input_they_are_about(comfy):
    """Each bad value gives exactly one node error, under its own input; ComfyUI's own checks stay on."""
    name = model_file(comfy, WAN_T2V)
    for bad, field, message in (
            (settings(full_attention_blocks="0,x"), "full_attention_blocks", "'x' is not a block number"),
            (settings(global_compression=999), "global_compression", "bigger than max of 64"),
            (settings(window=(0, -1, 0)), "window_h", "smaller than min of 0"),
            (settings(global_strength=1.5), "global_strength", "bigger than max of 1.0"),
            (settings(fusion="blend"), "fusion", "'blend' not in"),
            (settings(preset=""), "preset", "'' not in")):
        ok, _, _, node_errors = comfy.validate(sample_prompt(name, bad))
        if ok and field in ("fusion", "preset"):
            # ComfyUI 0.3.64 does not check a V3 combo's options (0.33 does); the frontend only sends
            # listed values, and a prompt from elsewhere is refused when the settings node runs
            with pytest.raises(PromptFailed, match=f"{field} must be one of"):
                comfy.run(sample_prompt(name, bad))
            continue
        assert not ok, field
        errors = node_errors["settings"]["errors"]
        assert len(errors) == 1, errors
        assert errors[0]["extra_info"]["input_name"] == field
        assert message in errors[0]["details"] + errors[0]["message"], errors[0]


def test_global_branch_off_or_local_only_is_one_choice_not_an_error(comfy):
    """Either switch alone runs the windows without the global branch: the same result, no refusal."""
    name = model_file(comfy, WAN_T2V)
    outs = [run(comfy, sample_prompt(name, settings(window=(1, 4, 4), global_branch=g, fusion=f)))
            for g, f in ((False, "local_only"), (False, "band"), (True, "local_only"))]
    assert torch.equal(outs[0], outs[1]) and torch.equal(outs[0], outs[2])


def test_an_empty_active_range_is_refused_before_sampling(comfy):
    name = model_file(comfy, WAN_T2V)
    prompt = sample_prompt(name, settings(start_percent=0.8, end_percent=0.2))
    assert comfy.validate(prompt)[0]  # a relation of two inputs: refused when the settings node runs
    with pytest.raises(PromptFailed, match=r"start_percent \(0.8\) must be below end_percent \(0.2\)"):
        comfy.run(prompt)


def test_one_info_line_per_sampling_run(comfy, caplog):
    import logging
    name = model_file(comfy, WAN_T2V)
    with caplog.at_level(logging.INFO):
        run(comfy, sample_prompt(name, settings(window=(1, 4, 4), global_compression=2), steps=3))
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("[UltraGen]")]
    assert len(lines) == 1, lines
    assert "grid 2x16x16 (512 tokens): windows 1x4x4, 2x4x4 = 32 windows (32 of 1x4x4)" in lines[0]
    assert "pooled x2 -> 2x8x8" in lines[0] and "active 0%-100%" in lines[0]


def test_the_run_line_says_which_attention_runs_the_windows(comfy, caplog):
    import logging
    import comfy.ldm.modules.attention as attention
    from ultragen_core.attention import kernels
    # the name and module the pack recognises ComfyUI's own PyTorch attention by (cuDNN first on Hopper)
    assert kernels.is_stock_pytorch(attention.attention_pytorch)
    assert not kernels.is_stock_pytorch(attention.attention_basic)
    name = model_file(comfy, WAN_T2V)
    with caplog.at_level(logging.INFO):
        run(comfy, sample_prompt(name, settings(window=(1, 4, 4)), steps=1))
        run(comfy, sample_prompt(name, settings(window=(1, 4, 4)), steps=1, probe=True, key="k"), "k")
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("[UltraGen]")]
    used = attention.optimized_attention.__name__
    expected = "ComfyUI's PyTorch SDPA" if used == "attention_pytorch" else f"the model's ({used})"
    assert f"attention: {expected}" in lines[0]  # on the CPU: never cuDNN first
    assert "attention: the model's, through the attention override another node set" in lines[1]


def test_fast_preset_runs_its_automatic_windows_unshifted(comfy, caplog):
    import logging
    name = model_file(comfy, WAN_T2V)  # native grid 21x30x52: fast windows 7x12x20, clamped to 2x16x16
    with caplog.at_level(logging.INFO):
        fast = run(comfy, sample_prompt(name, settings(shift="auto", preset="fast")))
    line = next(r.getMessage() for r in caplog.records if r.getMessage().startswith("[UltraGen]"))
    assert "windows 2x12x16, 1x2x1 = 2 windows" in line and "shifted" not in line, line
    assert "pooled x2 -> 2x8x8" in line, line
    explicit = run(comfy, sample_prompt(name, settings(window=(2, 12, 16), shift="none", preset="quality")))
    assert torch.equal(fast, explicit)
    quality = run(comfy, sample_prompt(name, settings(shift="auto", preset="quality")))
    assert torch.equal(quality, run(comfy, sample_prompt(name)))  # native size: quality leaves it unchanged
    assert not torch.allclose(fast, quality, atol=1e-4)


def test_blocks_get_contiguous_tokens_only_when_the_patch_changes_the_call(comfy, monkeypatch):
    import comfy.ldm.wan.model as wan
    seen = []
    forward = wan.WanAttentionBlock.forward

    def recording(self, x, *args, **kwargs):
        seen.append(x.is_contiguous())
        return forward(self, x, *args, **kwargs)
    monkeypatch.setattr(wan.WanAttentionBlock, "forward", recording)
    name = model_file(comfy, WAN_T2V)
    plain = run(comfy, sample_prompt(name, key="plain"), "plain")
    # ComfyUI's own token view of the embedding is strided (0.33 copies it at the start of each block,
    # so from the second block on its blocks see contiguous tokens; 0.3.64 never copies it)
    assert seen and not seen[0]
    unpatched, seen[:] = list(seen), []
    same = run(comfy, sample_prompt(name, settings(window=(64, 64, 64), **LOCAL_ONLY), key="same"), "same")
    assert seen == unpatched and torch.equal(plain, same)  # unchanged calls stay as ComfyUI runs them
    seen.clear()
    run(comfy, sample_prompt(name, settings(window=(1, 4, 4)), key="win"), "win")
    assert seen and all(seen)
