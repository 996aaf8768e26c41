"""Tier 3: UltraGen Split Video Across GPUs on CUDA: ComfyUI's loader, its multi-GPU clones and worker threads,
a 1.3B-wide Wan of two random blocks at 720p, float32. The split result equals one GPU's: over every GPU of
the machine (two or more), and with three ranks on the first GPU (threads, exchange and CUDA streams on one
card; runs with one GPU)."""
import math
import os
import sys
import tempfile
from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.gpu
BENCH = Path(__file__).resolve().parents[2] / "bench"


@pytest.fixture(scope="module")
def wan():
    if not torch.cuda.is_available() or not os.environ.get("COMFYUI_PATH"):
        pytest.skip("needs CUDA and COMFYUI_PATH (a ComfyUI 0.33+ tree)")
    sys.path.insert(0, os.environ["COMFYUI_PATH"])
    sys.path.insert(0, str(BENCH))
    pytest.importorskip("comfy.multigpu")
    import comfy.sd
    from dit import MODELS, build
    from safetensors.torch import save_file
    path = Path(tempfile.mkdtemp(prefix="ultragen-split-gpu-")) / "wan.safetensors"
    model = build(MODELS["1.3B"], 2, torch.device("cpu"), torch.float32)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return comfy.sd.load_diffusion_model(str(path), model_options={"dtype": torch.float32})


def inputs():
    gen = torch.Generator().manual_seed(0)
    latent = torch.randn(1, 16, 9, 720 // 8, 1280 // 8, generator=gen)  # 9 x 45 x 80 tokens
    return latent, [[torch.randn(1, 64, 4096, generator=gen), {}]], [[torch.randn(1, 64, 4096, generator=gen), {}]]


def sample(model, cfg):
    import comfy.model_management as mm
    import comfy.sample
    latent, cond, uncond = inputs()
    noise = torch.randn(latent.shape, generator=torch.Generator().manual_seed(1))
    out = comfy.sample.sample(model, noise, 2, cfg, "euler", "simple", cond, uncond, latent, seed=1, disable_pbar=True)
    mm.unload_all_models()
    return out


def assert_same(shared, one):
    scale = one.abs().max()
    assert math.isfinite(float(scale))
    torch.testing.assert_close(shared / scale, one / scale, rtol=0, atol=2e-3)  # TF32 matmuls may round


def test_three_ranks_on_one_gpu_equal_one_rank(wan):
    """The split's ranks all on the first GPU: ComfyUI deep clones there, one ComfyUI worker thread each."""
    import comfy.multigpu
    from ultragen_core.adapters import apply_attention
    from ultragen_core.families.wan.wan_split import OneDevice, enable_split
    from ultragen_core.config import AttentionSettings
    patched = apply_attention(wan, AttentionSettings())
    clones = [patched.deepclone_multigpu(new_load_device=torch.device("cuda", 0)) for _ in range(2)]
    shared = patched.clone()
    shared.set_additional_models("ultragen_test_split", clones)
    setup = OneDevice(clones, torch.device("cuda", 0), lambda d: comfy.multigpu.MultiGPUThreadPool([d]))
    try:
        one, split = sample(patched, 5.0), sample(enable_split(shared, setup), 5.0)
    finally:
        setup.shutdown()
    assert len(setup.last_run.received) >= 2 and all(min(c) > 0 for c in setup.last_run.received)
    assert_same(split, one)


@pytest.mark.parametrize("preset,cfg", [("quality", 1.0), ("quality", 5.0), ("fast", 5.0)])
def test_the_split_over_all_gpus_equals_one_gpu(wan, preset, cfg):
    if torch.cuda.device_count() < 2:
        pytest.skip("needs two or more CUDA GPUs")
    import comfy.multigpu
    from ultragen_core.adapters import apply_attention
    from ultragen_core.families.wan.wan_split import ComfyMultiGPU, enable_split
    from ultragen_core.config import AttentionSettings
    patched = apply_attention(wan, AttentionSettings(preset=preset))
    setup = ComfyMultiGPU()
    split = enable_split(comfy.multigpu.create_multigpu_deepclones(patched, torch.cuda.device_count()), setup)
    one, shared = sample(patched, cfg), sample(split, cfg)
    run = setup.last_run
    assert run is not None and run.ranks == torch.cuda.device_count()
    assert len(run.received) >= 2 and all(min(c) > 0 for c in run.received)  # every call shared, every GPU took part
    assert_same(shared, one)


def test_two_cfg_groups_on_four_or_more_gpus_equal_one_gpu(wan):
    """cfg_groups 2: ComfyUI's CFG split over the groups' first GPUs, each call split by windows in its group."""
    gpus = torch.cuda.device_count()
    if gpus < 4 or gpus % 2:
        pytest.skip("needs an even number of CUDA GPUs, four or more")
    import comfy.multigpu
    from ultragen_core.adapters import apply_attention
    from ultragen_core.families.wan.wan_split import ComfyMultiGPU, enable_split
    from ultragen_core.config import AttentionSettings
    patched = apply_attention(wan, AttentionSettings())
    setup = ComfyMultiGPU(groups=2)
    split = enable_split(comfy.multigpu.create_multigpu_deepclones(patched, gpus), setup)
    one, shared = sample(patched, 5.0), sample(split, 5.0)
    (_, runs), = setup._runs.values()
    assert [len(r.devices) for r in runs] == [gpus // 2] * 2
    assert all(r.received and all(min(c) > 0 for c in r.received) for r in runs)  # both groups split their calls
    assert_same(shared, one)
