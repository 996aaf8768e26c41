"""Tier 3: UltraGen Split Video Across GPUs on real GPUs (two or more): ComfyUI's loader, its multi-GPU clones
and worker threads, a 1.3B-wide Wan of two random blocks at 720p. The split result equals one GPU's."""
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
    if torch.cuda.device_count() < 2 or not os.environ.get("COMFYUI_PATH"):
        pytest.skip("needs two CUDA GPUs and COMFYUI_PATH (a ComfyUI 0.33+ tree)")
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


@pytest.mark.parametrize("preset,cfg", [("quality", 1.0), ("quality", 5.0), ("fast", 5.0)])
def test_the_split_over_all_gpus_equals_one_gpu(wan, preset, cfg):
    import comfy.model_management as mm
    import comfy.multigpu
    import comfy.sample
    from ultragen_core.adapters import apply_attention
    from ultragen_core.adapters.wan_split import ComfyMultiGPU, enable_split
    from ultragen_core.config import AttentionSettings
    patched = apply_attention(wan, AttentionSettings(preset=preset))
    setup = ComfyMultiGPU()
    split = enable_split(comfy.multigpu.create_multigpu_deepclones(patched, torch.cuda.device_count()), setup)
    gen = torch.Generator().manual_seed(0)
    latent = torch.randn(1, 16, 9, 720 // 8, 1280 // 8, generator=gen)  # 9 x 45 x 80 tokens
    cond = [[torch.randn(1, 64, 4096, generator=gen), {}]]
    uncond = [[torch.randn(1, 64, 4096, generator=gen), {}]]

    def sample(model):
        noise = torch.randn(latent.shape, generator=torch.Generator().manual_seed(1))
        out = comfy.sample.sample(model, noise, 2, cfg, "euler", "simple", cond, uncond, latent, seed=1,
                                  disable_pbar=True)
        mm.unload_all_models()
        return out
    one, shared = sample(patched), sample(split)
    run = setup.last_run
    assert run is not None and run.ranks == torch.cuda.device_count()
    assert len(run.received) >= 2 and all(min(c) > 0 for c in run.received)  # every call shared, every GPU took part
    scale = one.abs().max()
    assert math.isfinite(float(scale))
    torch.testing.assert_close(shared / scale, one / scale, rtol=0, atol=2e-3)  # TF32 matmuls may round
