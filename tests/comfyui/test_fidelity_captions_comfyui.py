"""Captions in the fidelity bench, in the real ComfyUI runtime at smoke size: a model trained on them keeps them
in its weights and across calls, and the evaluation prompts it with held-out scenes' captions, the empty caption
as the negative, at its cfg, through ComfyUI's own nodes and range checks (bench/fidelity/captions.py)."""
import json
import sys
from dataclasses import replace

import pytest

from comfyui_finder import PACK_DIR

sys.path.insert(0, str(PACK_DIR / "bench" / "fidelity"))


def test_a_captioned_run_shows_each_video_its_caption_and_its_weights_say_so(comfy, tmp_path, monkeypatch):
    import captions
    import scenes
    import torch
    import bench_model
    import train
    fmt = bench_model.wan_latent_format()
    x0, context = train.batch_latents(7, 64, 2, fmt, "cpu", "mixed", with_context=True)
    assert x0.shape == (64, 16, 2, 64, 64) and context.shape == (64, captions.TOKENS, captions.TEXT_DIM)
    seed = train.TRAIN_SEED + 1_000_003 * 7
    zoom, origin = scenes.sample_views(seed, 64)
    full = captions.encode(captions.of_scenes(scenes.sample_scenes(seed, 64, 2, scenes.TRAIN_RADIUS), 2, zoom, origin))
    kept = context.flatten(1).abs().sum(1) > 0
    assert torch.equal(context[kept], full[kept]) and 0 < int((~kept).sum()) < 20  # a tenth emptied (or no object)
    assert torch.equal(train.batch_latents(7, 64, 2, fmt, "cpu", "mixed"), x0)  # the same videos either way

    asked, batch_latents = [], train.batch_latents

    def recording(*args, with_context=False, **kw):
        asked.append(with_context)
        return batch_latents(*args, with_context=with_context, **kw)

    monkeypatch.setattr(train, "batch_latents", recording)
    info = train.train(tmp_path / "a", 0.0, True, batch=2, lr=4e-4, frames=2, captioned=True)
    assert info["captioned"] is True and asked == [True] * 3  # every step's videos come with their captions
    meta = bench_model.load(tmp_path / "a" / bench_model.WEIGHTS.name)[1]
    assert meta["context"] == captions.SPACE and bench_model.captioned_of(meta)
    # resumed, the run stays captioned; a state file keeps it for the next call; from scratch it is off
    resumed = train.train(tmp_path / "b", 0.0, True, batch=2, lr=4e-4, frames=2,
                          resume=tmp_path / "a" / bench_model.WEIGHTS.name)
    assert resumed["captioned"] is True
    state = tmp_path / "run.pt"
    train.train(tmp_path / "c", 1.0, True, batch=2, lr=4e-4, frames=2, captioned=True, state=state,
                schedule_minutes=2.0)
    assert train.train(tmp_path / "d", 1.0, True, batch=2, lr=4e-4, frames=2, state=state)["captioned"] is True
    asked.clear()
    plain = train.train(tmp_path / "e", 0.0, True, batch=2, lr=4e-4, frames=2)
    assert plain["captioned"] is False and asked == [False] * 3
    assert bench_model.load(tmp_path / "e" / bench_model.WEIGHTS.name)[1]["context"] == "zeros (1, 1, 4096)"
    with pytest.raises(ValueError, match="half_size trains every step at half size; low_res_minutes"):
        train.train(tmp_path / "f", 1.0, True, batch=2, lr=4e-4, frames=2, low_res_minutes=0.5, half_size=True)


def test_the_context_node_gives_held_out_scenes_captions_within_comfyuis_range_checks(comfy):
    import captions
    import evaluate
    import sampling
    import scenes
    import torch
    sampling.load_bench_nodes(comfy)
    node = comfy.nodes.NODE_CLASS_MAPPINGS["UltraGenFidelityContext"]()
    (cond,), = node.make()
    assert torch.equal(cond[0], torch.zeros(1, 1, captions.TEXT_DIM))  # the empty caption
    (cond,), = node.make(caption_seed=5, first=1, count=2, frames=8)
    assert torch.equal(cond[0], captions.encode(captions.of_scenes(scenes.sample_scenes(5, 3)[1:])))
    p = sampling.prompt("full", "missing.safetensors", 1, evaluate.EvalConfig(frames=2, captioned=True), seed=3,
                        batch=2)
    p["cond"]["inputs"]["caption_seed"] = -2
    ok, _, _, node_errors = comfy.validate(p)
    assert not ok and "caption_seed" in json.dumps(node_errors["cond"])  # ComfyUI's own min check


def test_a_captioned_model_is_sampled_with_its_captions_against_the_empty_one(comfy, tmp_path):
    import evaluate
    import sampling
    import torch
    import bench_model
    import train
    from safetensors.torch import save_file
    train.train(tmp_path, 0.0, True, batch=2, lr=4e-4, frames=2, captioned=True)
    weights = tmp_path / bench_model.WEIGHTS.name
    # three steps barely teach the model its captions: give the caption features and the output head weight, so
    # that whether the captions reach the model shows in its samples
    sd, meta = bench_model.load(weights)
    g = torch.Generator().manual_seed(0)
    sd["text_embedding.0.weight"][:, :8] = torch.randn(sd["text_embedding.0.weight"][:, :8].shape, generator=g)
    sd["head.head.weight"] = 0.1 * torch.randn(sd["head.head.weight"].shape, generator=g)
    save_file({k: v.to(torch.bfloat16).contiguous() for k, v in sd.items()}, str(weights), metadata=meta)
    sampling.load_bench_nodes(comfy)
    assert sampling.weights_captioned(weights)
    cfg = evaluate.EvalConfig(scales=(1,), modes=("full",), samples=2, gate_samples=2, steps=2, frames=2, gt_pool=4,
                              captioned=True)
    assert cfg.cfg_scale == 3.0 and replace(cfg, guidance=1.5).cfg_scale == 1.5
    assert replace(cfg, captioned=False).cfg_scale == 1.0
    p = sampling.prompt("coarse_to_fine", "m", 2, cfg, seed=40, batch=2)
    assert p["cond"]["inputs"] == {"caption_seed": sampling.CAPTION_SEED + 40, "first": 0, "count": 2, "frames": 2}
    assert p["uncond"]["inputs"] == {} and p["native"]["inputs"]["cfg"] == p["sample"]["inputs"]["cfg"] == 3.0
    assert p["sample"]["inputs"]["negative"] == ["uncond", 0] and p["native"]["inputs"]["positive"] == ["cond", 0]
    # proxy: one prompt for the cell too, its native passes a batch (one proxy per video), captioned alike
    proxy = sampling.prompt("proxy", "m", 2, cfg, seed=40, batch=2)
    assert proxy["cond"]["inputs"] == p["cond"]["inputs"] and proxy["proxy"]["inputs"]["proxy"] == ["native", 0]
    assert proxy["native_latent"]["inputs"]["batch_size"] == 2
    name = sampling.install_weights(comfy, weights)
    captioned = sampling.generate(comfy, "full", name, 1, cfg)
    assert torch.equal(sampling.generate(comfy, "full", name, 1, cfg), captioned)  # seeded
    unconditional = sampling.generate(comfy, "full", name, 1, replace(cfg, captioned=False))
    assert captioned.shape == unconditional.shape == (2, 2, 3, 64, 64)
    assert (captioned - unconditional).abs().max() > 0.01  # the captions reach the model
    results = evaluate.run_evaluation(weights, tmp_path / "eval", replace(cfg, captioned=False), smoke=True,
                                      runtime=comfy)
    assert results["config"]["captioned"] is True and results["cfg"] == 3.0  # the weights' metadata decides


def test_the_cpu_pilot_trains_at_half_size_and_counts_its_samples_against_a_perfect_floor(comfy, tmp_path,
                                                                                           capsys):
    """pilot.py: a tiny model trained at half size through train.py's loop, sampled (the captioned arm at cfg 1 and
    at captions.CFG) and counted; the truth, through the same half size and upsampling, is the floor: no error."""
    import pilot
    import bench_model
    result = pilot.run("captions", 0.02, tmp_path, videos=2, batch=2, steps=4)
    info = result["train"]
    assert info["captioned"] is True and info["model"] == bench_model.MODELS["tiny"]
    assert info["low_res_steps"] == info["steps"] >= 1  # every step at half size
    assert result["truth"]["count_error"] == [0.0, 0.0] and result["truth"]["continuity"][0] == 1.0
    assert set(result["samples"]) == {"cfg 1", "cfg 3"}
    assert all(0 <= row["count_error"][0] and set(row["per_100"]) >= {"no_object", "appears_or_vanishes"}
               for row in result["samples"].values())
    assert json.loads((tmp_path / "pilot.json").read_text())["arm"] == "captions"
    with pytest.raises(ValueError, match=r"arm must be one of \['baseline', 'captions', 'high_noise'\], got 'x'"):
        pilot.run("x", 0.02, tmp_path)
    # the same weights counted without training (pilot.py --weights: a device run's model read at half size), at the
    # guidance asked for: the pilot's own counts again (seeded)
    weights = tmp_path / bench_model.WEIGHTS.name
    counted = pilot.count_samples(weights, videos=2, steps=4, guidance=(3.0,))
    assert counted == {"truth": result["truth"], "samples": {"cfg 3": result["samples"]["cfg 3"]}}
    for argv, message in ((["--out", str(tmp_path)], "give one of --arm"),
                          (["--arm", "captions", "--weights", str(weights)], "give one of --arm"),
                          (["--arm", "captions"], "--arm trains a pilot: give --out"),
                          (["--arm", "captions", "--out", str(tmp_path), "--cfg", "2"], "--cfg 2 applies to --weights"),
                          (["--weights", str(weights), "--videos", "0"], "at least 1, got 0"),
                          (["--weights", str(weights), "--cfg", "x"], "--cfg takes guidance scales, comma-separated")):
        with pytest.raises(SystemExit):
            pilot.main(argv)
        assert message in capsys.readouterr().err
