"""The fidelity bench's pipeline in the real ComfyUI runtime, at smoke size: a few training steps of the
bench model, then one x2 cell sampled through UNETLoader / UltraGen nodes / KSampler, measured and written
out (bench/fidelity/run.py does the same at full size on a GPU)."""
import json
import math
import sys

import pytest

from comfyui_finder import PACK_DIR

sys.path.insert(0, str(PACK_DIR / "bench" / "fidelity"))


def test_train_then_evaluate_one_cell_through_comfyui(comfy, tmp_path):
    import evaluate
    import sampling
    import bench_model
    import train
    import weight_parts
    info = train.train(tmp_path / "first", 0.0, True, batch=2, lr=4e-4, frames=2, framing="evaluation")
    assert info["steps"] == 3 and info["loss_first"] > 0
    # resuming starts from the saved weights and counts steps on; weights that came back from a device run in
    # parts (weight_parts.split) resume and install under the file's name, joined first
    first = tmp_path / "first" / bench_model.WEIGHTS.name
    assert len(weight_parts.split(first, limit=1_200_000)) > 1 and not first.exists()  # text embedding: 1 MiB
    assert bench_model.world_of(bench_model.load(first)[1]) == "plain"  # the world a run from scratch trains in
    assert bench_model.framing_of(bench_model.load(first)[1]) == "evaluation"
    # a resumed run may move to the detailed world; its weights say so, and the evaluation follows them. It keeps
    # the weights' framings unless told otherwise
    info = train.train(tmp_path, 0.0, True, batch=2, lr=4e-4, frames=2, resume=first, world="detailed")
    assert info["steps"] == 3 and info["steps_total"] == 6 and info["resumed_from"] == str(first)
    assert info["framing"] == info["native_framing"] == "evaluation"
    sd, meta = bench_model.load(tmp_path / bench_model.WEIGHTS.name)
    assert meta["steps"] == "6" and meta["latent_space"] == train.latents.SPACE and meta["world"] == "detailed"
    assert bench_model.pixels_of(meta) == 1  # from scratch: the first space
    assert meta["framing"] == "evaluation" and bench_model.half_size_steps_of(meta) == 0  # all 6 at native size
    assert len(weight_parts.split(tmp_path / bench_model.WEIGHTS.name, limit=1_200_000)) > 1
    cfg = evaluate.EvalConfig(scales=(2,), modes=("quality_band", "proxy", "sol_attn", "learned_sr"), samples=2,
                              steps=2, frames=2, gt_pool=4, seeds=2)
    sampling.load_bench_nodes(comfy)
    results = evaluate.run_evaluation(tmp_path / bench_model.WEIGHTS.name, tmp_path, cfg, smoke=True, runtime=comfy)
    cells = {c["mode"]: c for c in results["cells"]}
    assert results["config"]["world"] == "detailed"
    assert results["trained"] == {"steps": 6, "half_size_steps": 0}  # from the weights' metadata
    assert set(cells) == {"ground_truth", "quality_band", "proxy", "sol_attn", "learned_sr", "learned_sr_of_truth"}
    # no CUDA sol_attn here (comfy_kitchen < 0.2.33, or no GPU): the row says why
    why = sampling.sol_attn_unavailable()
    assert why is not None and cells["sol_attn"]["status"] == f"skipped: {why}" and "sol" in why.lower()
    truth = cells["ground_truth"]
    assert truth["count_error"][0] == 0 and truth["duplication"][0] == 0 and truth["continuity"][0] == 1
    band = cells["quality_band"]
    assert band["status"] == "ok" and band["videos"] == 4 and band["seeds"] == 2  # 2 videos x 2 seeds
    assert band["seam"][0] > 0 and not math.isnan(band["detail_error"][1])
    assert 0 <= band["count_error"][0] and 0 <= band["colour_js"][0] <= 1 and 0 <= band["edge_js"][0] <= 1
    # the upscaler row upscales the model's native pass; its _of_truth row the true native video: exact objects
    assert cells["learned_sr"]["status"] == "ok" and cells["learned_sr"]["videos"] == 4
    perfect = cells["learned_sr_of_truth"]
    assert perfect["videos"] == 2 and perfect["count_error"][0] <= 0.5 and perfect["continuity"][0] >= 0.5
    if sampling.proxy_supported() is None:
        assert cells["proxy"]["status"] == "ok" and cells["proxy"]["videos"] == 4
    else:
        assert cells["proxy"]["status"].startswith("skipped: needs ComfyUI 0.33")
    assert json.loads((tmp_path / "results.json").read_text())["cells"] == json.loads(json.dumps(results["cells"]))
    table = (tmp_path / "results.md").read_text().splitlines()
    assert "**Gate**" in table[0] and "not measured" in "\n".join(table)  # no x1 cell in this run
    table = table[table.index(next(line for line in table if line.startswith("| scale"))):]
    assert len(table) == 2 + 6 and "| x2 | quality_band | 4 |" in table[3]
    assert "| x2 | sol_attn | 0 | skipped" in table[5] and "| x2 | learned_sr_of_truth | 2 |" in table[7]
    import cv2
    grid = cv2.imread(str(tmp_path / "samples_x2.png"))
    rows = 3 if sampling.proxy_supported() else 4
    assert grid.shape == (rows * (128 + 4), 170 + 2 * 128, 3)


def test_progressive_training_starts_at_half_size_and_ends_native_with_a_fresh_ema(comfy, tmp_path):
    """--low-res-minutes: the first part of the budget on scenes averaged 2 x 2 (the same scenes), then native size
    with the EMA restarted; a budget spent at half size only is refused (the model must end native)."""
    import comfy.latent_formats
    import torch
    import train
    fmt = comfy.latent_formats.Wan21()
    native = train.batch_latents(5, 2, 2, fmt, "cpu", "evaluation")
    half = train.batch_latents(5, 2, 2, fmt, "cpu", "evaluation", low_res=True)
    assert native.shape == (2, 16, 2, 64, 64) and half.shape == (2, 16, 2, 32, 32)
    # the latent space is affine per channel, so averaging pixels is averaging latents
    pooled = torch.nn.functional.avg_pool2d(native.flatten(1, 2), 2).unflatten(1, (16, 2))
    assert torch.allclose(half, pooled, atol=1e-5)
    info = train.train(tmp_path, 4.5, True, batch=2, lr=4e-4, frames=2, framing="evaluation", low_res_minutes=2.0)
    assert info["steps"] == 3 and info["low_res_steps"] == 2 and info["ema"].endswith("from step 2")
    with pytest.raises(ValueError, match="low_res_minutes.*4.5 minutes.*end at native size"):
        train.train(tmp_path, 4.5, True, batch=2, lr=4e-4, frames=2, low_res_minutes=4.5)
    with pytest.raises(ValueError, match="model must be one of .'small', 'wide', 'tiny'., got 'huge'"):
        train.train(tmp_path, 4.5, True, batch=2, lr=4e-4, frames=2, model="huge")
    with pytest.raises(ValueError, match="native_framing .'mostly_whole'. is the framing from where progressive "
                                         "resolution moves to native size: give --low-res-minutes"):
        train.train(tmp_path, 4.5, True, batch=2, lr=4e-4, frames=2, native_framing="mostly_whole")
    for share in (-0.1, 1.0):
        with pytest.raises(ValueError, match=f"high_noise_share is a share of the training draws, at least 0 and "
                                             f"below 1, got {share:g}"):
            train.train(tmp_path, 4.5, True, batch=2, lr=4e-4, frames=2, high_noise_share=share)
    with pytest.raises(ValueError, match="native_framing must be one of .*got 'close'"):
        train.train(tmp_path, 4.5, True, batch=2, lr=4e-4, frames=2, low_res_minutes=2.0, native_framing="close")


def test_a_run_kept_in_a_state_file_goes_on_across_calls_as_one_schedule(comfy, tmp_path, monkeypatch):
    """--state: a schedule of two calls (smoke: 3 steps a call, 6 in the schedule), half size for its first half.
    The second call goes on where the first stopped: the optimiser's moments, the step count, the switch to native
    size (and the EMA's restart, and the native framing) in the second call, the weights' step count; its own
    settings give way to the run's. A state file and --resume together are refused."""
    import torch
    import bench_model
    import train
    framings, batch_latents = [], train.batch_latents

    def recording(step, batch, frames, fmt, device, framing="mixed", low_res=False, world="plain", **kw):
        framings.append((framing, low_res))
        return batch_latents(step, batch, frames, fmt, device, framing, low_res, world, **kw)

    monkeypatch.setattr(train, "batch_latents", recording)
    state = tmp_path / "run.pt"
    first = train.train(tmp_path / "a", 1.0, True, batch=2, lr=4e-4, frames=2, framing="evaluation",
                        low_res_minutes=1.0, state=state, schedule_minutes=2.0, native_framing="mostly_whole",
                        high_noise_share=0.25)
    assert first["steps"] == 3 and first["schedule_steps"] == 3 and first["low_res_steps"] == 3 and state.exists()
    saved = torch.load(state)
    assert saved["run"]["steps"] == 3 and max(v["step"] for v in saved["opt"]["state"].values()) == 3
    second = train.train(tmp_path / "b", 1.0, True, batch=4, lr=1.0, frames=2, state=state)  # batch, lr: the run's
    assert second["steps"] == 3 and second["steps_total"] == 6 and second["batch"] == 2 and second["lr"] == 4e-4
    assert second["low_res_steps"] == 3 and second["ema"].endswith("from step 3")  # native from the 4th step
    assert second["framing"] == "evaluation" and second["native_framing"] == "mostly_whole"
    assert first["high_noise_share"] == second["high_noise_share"] == 0.25
    assert second["schedule_minutes"] == 2.0
    assert framings == [("evaluation", True)] * 3 + [("mostly_whole", False)] * 3
    saved = torch.load(state)
    assert saved["run"]["steps"] == 6 and max(v["step"] for v in saved["opt"]["state"].values()) == 6
    assert bench_model.load(tmp_path / "b" / bench_model.WEIGHTS.name)[1]["steps"] == "6"
    # the weights record how many of their steps were at half size: all 3 after the first call, 3 of 6 after both
    assert bench_model.half_size_steps_of(bench_model.load(tmp_path / "a" / bench_model.WEIGHTS.name)[1]) == 3
    assert bench_model.half_size_steps_of(bench_model.load(tmp_path / "b" / bench_model.WEIGHTS.name)[1]) == 3
    assert first["half_size_steps_total"] == second["half_size_steps_total"] == 3
    done = train.train(tmp_path / "c", 1.0, True, batch=2, lr=4e-4, frames=2, state=state)  # the schedule is over
    assert done["steps"] == 0 and done["steps_total"] == 6
    with pytest.raises(ValueError, match="--state .*run.pt exists.*--resume"):
        train.train(tmp_path / "d", 1.0, True, batch=2, lr=4e-4, frames=2, state=state,
                    resume=tmp_path / "b" / bench_model.WEIGHTS.name)


def test_compiled_blocks_train_as_the_uncompiled_ones_and_a_failing_compile_falls_back(comfy, tmp_path, monkeypatch,
                                                                                       caplog):
    """--compile (the default on CUDA) compiles each block's forward in place: the same losses as uncompiled steps,
    the same state-dict keys. A compiler that fails makes the step run again uncompiled, logged, and the run goes
    on."""
    import logging

    import torch
    import bench_model
    import train
    torch.manual_seed(0)  # the same noise and noise levels for every run
    plain = train.train(tmp_path / "plain", 1.0, True, batch=2, lr=4e-4, frames=2, compile_blocks=False)
    torch.manual_seed(0)
    fast = train.train(tmp_path / "fast", 1.0, True, batch=2, lr=4e-4, frames=2, compile_blocks=True)
    assert plain["compiled"] is False and fast["compiled"] is True and fast["steps"] == plain["steps"] == 3
    assert fast["loss_first"] == pytest.approx(plain["loss_first"], rel=1e-4)
    assert fast["loss_last50"] == pytest.approx(plain["loss_last50"], rel=1e-3)
    assert list(bench_model.load(tmp_path / "fast" / bench_model.WEIGHTS.name)[0]) == \
        list(bench_model.load(tmp_path / "plain" / bench_model.WEIGHTS.name)[0])

    def broken(fn, **kwargs):
        def fails(*args, **kw):
            raise RuntimeError("inductor: no compiler for this\nmore detail")
        return fails

    monkeypatch.setattr(torch, "compile", broken)
    torch.manual_seed(0)
    with caplog.at_level(logging.WARNING, logger="fidelity.train"):
        fell_back = train.train(tmp_path / "fell_back", 1.0, True, batch=2, lr=4e-4, frames=2, compile_blocks=True)
    assert fell_back["compiled"] is False and fell_back["steps"] == 3
    assert fell_back["loss_first"] == pytest.approx(plain["loss_first"], rel=1e-4)
    warnings = [r.getMessage() for r in caplog.records if "failed compiled" in r.getMessage()]
    assert warnings == ["step 0 failed compiled (RuntimeError: inductor: no compiler for this); the blocks run "
                        "uncompiled from here"]


def test_sampling_from_the_noised_truth_keeps_what_the_truth_fixed(comfy, tmp_path):
    """diagnose.py --from-truth through ComfyUI: from the last step of 20 (sigma 0.14) every object of the truth
    is kept, whatever the model; from pure noise an untrained model draws none of them."""
    import diagnose
    import sampling
    import bench_model
    import train
    train.train(tmp_path, 0.0, True, batch=2, lr=4e-4, frames=2)
    sampling.load_bench_nodes(comfy)
    name = sampling.install_weights(comfy, tmp_path / bench_model.WEIGHTS.name)
    late, = diagnose.from_truth(comfy, name, videos=2, start_steps=[19])
    assert late["sigma"] == 0.136 and late["videos"] == 2
    assert late["count_error"][0] == 0 and late["duplication"][0] == 0 and late["continuity"][0] == 1
    assert all(v == 0 for v in late["per_100"].values())
    noise, = diagnose.from_truth(comfy, name, videos=2, start_steps=[0], steps=2)
    assert noise["sigma"] == 1.0 and noise["count_error"][0] >= 1 and noise["per_100"]["no_object"] == 100


def test_the_bench_latents_are_wan21_latents_as_comfyui_normalises_them(comfy):
    """ComfyUI's own Wan 2.1 format maps the bench's encode() to what the model was trained on."""
    import comfy.latent_formats
    import latents
    import scenes
    import torch
    video = scenes.render(scenes.sample_scenes(4, 2, frames=2), 1, frames=2)
    fmt = comfy.latent_formats.Wan21()
    z = latents.encode(video)
    assert torch.allclose(fmt.process_in(z), latents.normalised(video), atol=1e-5)
    assert torch.allclose(latents.decode(fmt.process_out(latents.normalised(video))), video, atol=1e-5)


def test_resume_refuses_weights_of_another_latent_space(comfy, tmp_path):
    import train
    from safetensors.torch import save_file
    import torch
    path = tmp_path / "old.safetensors"
    save_file({"x": torch.zeros(1)}, str(path), metadata={"config": "{}", "latent_space": "bench/fidelity/latents.py"})
    with pytest.raises(ValueError, match="latent space 'bench/fidelity/latents.py', which this bench does not know"):
        train.train(tmp_path, 0.0, True, batch=2, lr=4e-4, frames=2, resume=path)
    with pytest.raises(ValueError, match=r"pixels \(per latent pixel\) must be one of \[1, 2\], got 4"):
        train.train(tmp_path, 0.0, True, batch=2, lr=4e-4, frames=2, pixels=4)
    with pytest.raises(ValueError, match=r"world must be one of \['plain', 'detailed'\], got 'noisy'"):
        train.train(tmp_path, 0.0, True, batch=2, lr=4e-4, frames=2, world="noisy")


def test_resume_asks_for_the_framing_weights_do_not_record(comfy, tmp_path):
    """Weights written before the framings were recorded (the committed ones) cannot say whether they saw crops:
    a resume of them without --framing is refused, naming the choices, before any step (run 54 resumed whole-scene
    weights on crops by default)."""
    import bench_model
    import train
    path = tmp_path / "older.safetensors"
    bench_model.save(bench_model.build_model(bench_model.SMOKE_MODEL), path, bench_model.SMOKE_MODEL, smoke=True,
                     steps=3, seconds=1.0)
    assert bench_model.framing_of(bench_model.load(path)[1]) is None
    with pytest.raises(ValueError, match=r"older.safetensors does not record the framings .*give --framing, one of "
                                         r"mixed, evaluation, mostly_whole"):
        train.train(tmp_path / "out", 0.0, True, batch=2, lr=4e-4, frames=2, resume=path)
    assert not (tmp_path / "out" / bench_model.WEIGHTS.name).exists()
    with pytest.raises(ValueError, match=r"framing must be one of \['mixed', 'evaluation', 'mostly_whole'\], "
                                         r"got 'crops'"):
        train.train(tmp_path / "out", 0.0, True, batch=2, lr=4e-4, frames=2, resume=path, framing="crops")
    # given the framing, the resume runs; how many of the older weights' steps were at half size is not known, so the
    # new weights do not say either
    info = train.train(tmp_path / "out", 0.0, True, batch=2, lr=4e-4, frames=2, resume=path, framing="evaluation")
    assert info["half_size_steps_total"] is None
    assert bench_model.half_size_steps_of(bench_model.load(tmp_path / "out" / bench_model.WEIGHTS.name)[1]) is None


def test_the_sampled_latent_is_the_one_the_graph_asks_for(comfy, tmp_path):
    """Prompts of every mode validate in this ComfyUI (proxy only where it runs), with the latent sizes the
    scale asks for."""
    import evaluate
    import sampling
    sampling.load_bench_nodes(comfy)
    cfg = evaluate.EvalConfig(frames=2)
    for mode in evaluate.MODES:
        if mode == "proxy" and sampling.proxy_supported():
            continue
        p = sampling.prompt(mode, "missing.safetensors", 3, cfg, seed=0, batch=2)
        latent = p.get("latent", p.get("native_latent"))["inputs"]
        assert latent["length"] == 5
        assert latent["width"] == (1536 if "latent" in p else 512)  # 8 x the latent: 192 (x3) or 64 (x1) wide
        if mode in ("full", "sol_attn", *evaluate.UPSCALERS):
            assert "apply" not in p and ("sol" in p) == (mode == "sol_attn")
        else:  # the native grid: 2 frames x 32 x 32 tokens; the fast preset's windows 3/8 of that
            assert p["settings"]["inputs"]["window_h"] == (12 if mode == "fast" else 32)
        ok, error, _, node_errors = comfy.validate(p)
        assert not ok and "missing.safetensors" in json.dumps(node_errors), (mode, error, node_errors)


def test_a_row_may_be_a_variant_of_a_mode_with_its_settings_changed(comfy):
    """MODE@KEY=VALUE rows (how the defaults are chosen from the table): the settings reach the nodes, the prompt
    validates, and a key unknown, of another mode or of the wrong type is refused before any work, by name."""
    import evaluate
    import sampling
    sampling.load_bench_nodes(comfy)
    cfg = evaluate.EvalConfig(frames=2)
    p = sampling.prompt("coarse_to_fine@start=0.3@fusion=gate", "missing.safetensors", 2, cfg, seed=0, batch=2)
    assert p["sample"]["inputs"]["start_at_step"] == 6  # 0.3 x 20 steps; the plain row starts at 10
    assert p["settings"]["inputs"]["fusion"] == "gate" and p["settings"]["inputs"]["global_strength"] == 0.5
    p = sampling.prompt("proxy@proxy_strength=0.5@neighbourhood=all@radius=3@compression=4", "missing.safetensors",
                        2, cfg, seed=0, batch=2)
    assert {k: p["proxy"]["inputs"][k] for k in ("strength", "neighbourhood", "radius_cells")} == {
        "strength": 0.5, "neighbourhood": "all", "radius_cells": 3}
    assert p["settings"]["inputs"]["global_compression"] == 4 and p["settings"]["inputs"]["fusion"] == "band"
    # coarse to fine guided by its native pass, as the "proxy to 4K" templates run it
    p = sampling.prompt("coarse_to_fine@proxy_strength=1", "missing.safetensors", 2, cfg, seed=0, batch=2)
    assert p["proxy"]["inputs"]["proxy"] == ["native", 0] and p["sample"]["inputs"]["model"] == ["proxy", 0]
    assert p["sample"]["inputs"]["latent_image"] == ["upscaled", 0]
    assert "proxy" not in sampling.prompt("coarse_to_fine", "missing.safetensors", 2, cfg, seed=0, batch=2)
    p = sampling.prompt("quality_gate@global_strength=0.25", "missing.safetensors", 2, cfg, seed=0, batch=2)
    assert p["settings"]["inputs"]["fusion"] == "gate" and p["settings"]["inputs"]["global_strength"] == 0.25
    assert sampling.prompt("quality_band", "m", 2, cfg, 0, 2)["settings"]["inputs"]["global_strength"] == 1.0
    ok, _, _, node_errors = comfy.validate(p)
    assert not ok and list(node_errors) == ["load"]  # only the missing weights: the variant's values are in range
    # a value ComfyUI's own range check refuses is refused there, at its input
    ok, _, _, node_errors = comfy.validate(sampling.prompt("quality_gate@global_strength=1.5", "m", 2, cfg, 0, 2))
    assert not ok and "global_strength" in json.dumps(node_errors["settings"])
    for spec, message in (("nope", "'nope' is not among full, windows"),
                          ("proxy@start=0.3", "start applies to coarse_to_fine, not to proxy"),
                          ("coarse_to_fine@start=early", "start takes a float, got 'early'"),
                          ("quality_band@compresion=4", "'compresion=4' is not KEY=VALUE with KEY one of start")):
        with pytest.raises(SystemExit):
            evaluate.main(["--weights", "w", "--out", "o", "--modes", f"full,{spec}"])
        with pytest.raises(ValueError, match=message):
            evaluate.base_mode(spec)


def test_evaluation_refuses_weights_of_another_latent_space(comfy, tmp_path):
    """Weights trained before issue 24 (the old latent space) would sample noise: evaluating them is refused."""
    import sampling
    import torch
    from safetensors.torch import save_file
    path = tmp_path / "old.safetensors"
    save_file({"x": torch.zeros(1)}, str(path), metadata={"config": "{}", "latent_space": "bench/fidelity/latents.py"})
    with pytest.raises(ValueError, match="trained on the latent space 'bench/fidelity/latents.py', this bench "
                                         "samples in"):
        sampling.install_weights(comfy, path)


def test_a_model_in_the_space_of_2_x_2_pixels_trains_resumes_and_is_evaluated_in_it(comfy, tmp_path):
    """--pixels 2 (2 x 2 pixels averaged per latent pixel): the weights say so, a resume keeps the space and refuses
    another, the evaluation samples latents of half the side and decodes them to the full frame, its ground truth
    through the space (what a perfect latent decodes to), and the tools that read the first space only say so."""
    from dataclasses import replace

    import bench_model
    import evaluate
    import latents
    import numpy as np
    import pilot
    import sampling
    import scenes
    import train
    info = train.train(tmp_path / "a", 0.0, True, batch=2, lr=4e-4, frames=2, framing="evaluation", pixels=2)
    assert info["latent_space"] == latents.space_name(2)
    first = tmp_path / "a" / bench_model.WEIGHTS.name
    assert bench_model.pixels_of(bench_model.load(first)[1]) == 2
    x0 = train.batch_latents(0, 2, 2, bench_model.wan_latent_format(), "cpu", "evaluation", pixels=2)
    assert x0.shape == (2, 16, 2, 32, 32)  # the native 64 px frame, 32 x 32 latent pixels
    with pytest.raises(ValueError, match="space of 2 px per latent pixel; --pixels 1 would show it another"):
        train.train(tmp_path / "b", 0.0, True, batch=2, lr=4e-4, frames=2, resume=first, pixels=1)
    info = train.train(tmp_path / "b", 0.0, True, batch=2, lr=4e-4, frames=2, resume=first)
    assert info["latent_space"] == latents.space_name(2) and info["steps_total"] == 6
    weights = tmp_path / "b" / bench_model.WEIGHTS.name
    cfg = evaluate.EvalConfig(scales=(1, 2), modes=("full", "quality_band", "bicubic"), samples=2, gate_samples=2,
                              steps=2, frames=2, gt_pool=4)
    two = replace(cfg, pixels=2)
    assert sampling.native_grid(two) == (2, 16, 16) and evaluate.seam_borders(two, 2) == [32, 64, 96]
    p = sampling.prompt("quality_band", "w.safetensors", 2, two, seed=0, batch=2)
    assert p["latent"]["inputs"]["width"] == 512 and p["settings"]["inputs"]["window_h"] == 16  # 64 x 64 latent
    truth = evaluate.ground_truth(two, 1)
    rendered = scenes.render(truth["scenes"], 1, 2)
    np.testing.assert_array_equal(truth["videos"],
                                  evaluate.metrics.to_numpy(latents.through_space(rendered, 2)))
    assert not np.array_equal(truth["videos"], evaluate.metrics.to_numpy(rendered))
    sampling.load_bench_nodes(comfy)
    results = evaluate.run_evaluation(weights, tmp_path / "ev", cfg, smoke=True, runtime=comfy)
    assert results["config"]["pixels"] == 2 and results["trained"] == {"steps": 6, "half_size_steps": 0}
    cells = {(c["scale"], c["mode"]): c for c in results["cells"]}
    assert all(c["status"] == "ok" for c in cells.values()) and (2, "bicubic_of_truth") in cells
    videos = np.load(tmp_path / "ev" / "videos_x1.npz")
    assert next(iter(videos.values())).shape[-3:] == (64, 64, 3)  # decoded to the full native frame
    counted = pilot.count_samples(weights, videos=2, steps=1)  # read at its own native size
    assert counted["truth"]["count_error"][0] == 0 and list(counted["samples"]) == ["cfg 1"]
    for tool in ("grain.py", "diagnose.py"):
        with pytest.raises(SystemExit, match=f"{tool} reads weights of 1 px per latent pixel only"):
            sampling.first_space_only(weights, tool)
    older = tmp_path / "first_space.safetensors"  # the first space's weights pass
    bench_model.save(bench_model.build_model(bench_model.SMOKE_MODEL), older, bench_model.SMOKE_MODEL, smoke=True,
                     steps=3, seconds=1.0)
    assert sampling.first_space_only(older, "grain.py") is None


def test_the_learned_upscaler_row_is_what_comfyuis_upscale_nodes_give(comfy, tmp_path):
    """The learned_sr row runs the committed network as a user's graph runs it: a decoded native pass through
    Load Upscale Model + Upscale Image (using Model) gives the frames upscaler.upscale gives the bench."""
    pytest.importorskip("spandrel")
    import sampling
    import latents
    import scenes
    import torch
    import upscaler
    sampling.load_bench_nodes(comfy)
    video = scenes.render(scenes.sample_scenes(5, 2, frames=2), 1, 2)  # (2 videos, 2 frames, 3, 64, 64)
    torch.save(latents.encode(video, 2), tmp_path / "native.pt")  # Demo Decode reads the demo's space
    name = upscaler.file_name(3)
    target = comfy.models_dir / "upscale_models" / name
    if not target.exists():
        target.symlink_to(upscaler.WEIGHTS_DIR / name)
    comfy.run({
        "native": {"class_type": "UltraGenFidelityLatentFile", "inputs": {"path": str(tmp_path / "native.pt")}},
        "decode": {"class_type": "UltraGenDemoDecode", "inputs": {"samples": ["native", 0]}},
        "sr": {"class_type": "UpscaleModelLoader", "inputs": {"model_name": name}},
        "up": {"class_type": "ImageUpscaleWithModel", "inputs": {"upscale_model": ["sr", 0], "image": ["decode", 0]}},
        "capture": {"class_type": "UltraGenTestCaptureImage", "inputs": {"images": ["up", 0], "key": "sr"}}})
    from harness import captured
    comfy_frames = captured()["sr"].float().reshape(2, 2, 192, 192, 3).permute(0, 1, 4, 2, 3)
    bench_frames = upscaler.upscale(latents.through_space(video, 2), 3, "learned_sr")
    assert comfy_frames.shape == bench_frames.shape == (2, 2, 3, 192, 192)
    assert (comfy_frames - bench_frames).abs().max() < 2e-3


def test_run_py_measures_the_truth_rows_in_the_space_it_is_given(tmp_path):
    """run.py --truth-only --pixels 2: the ground truth and the upscalers' native pass go through the space of
    2 x 2 pixels per latent pixel (the floor of run 56's space), softer than the first space's."""
    import run
    rows = {}
    for pixels in (1, 2):
        out = run.main(["--truth-only", "--scales", "2", "--modes", "bicubic", "--samples", "2", "--gate-samples", "2",
                        "--world", "detailed", "--pixels", str(pixels), "--out", str(tmp_path / f"p{pixels}")])
        assert out["config"]["pixels"] == pixels
        rows[pixels] = {c["mode"]: c for c in out["cells"]}
    assert set(rows[2]) == {"ground_truth", "bicubic_of_truth"}
    truth, soft = rows[1]["ground_truth"], rows[2]["ground_truth"]
    assert truth["count_error"][0] == soft["count_error"][0] == 0  # the objects survive the space
    assert soft["edge_js"][0] > truth["edge_js"][0]  # its edges are softer than the render's
