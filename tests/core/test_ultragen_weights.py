"""Checkpoint mode in the core (no ComfyUI): the published forward, key checks, safe loading, conversion."""
from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from test_ultragen_weights_reference import apply_rope, block_tensors, random_extras, reference_block
from ultragen_core.checkpoint import forward as fw
from ultragen_core.checkpoint.io import load_state_dict
from ultragen_core.checkpoint.keys import check_extras, expected_shapes, split_checkpoint
from ultragen_core.checkpoint.modules import UltraGenExtras
from ultragen_core.convert import main as convert_main

PACK = Path(__file__).resolve().parents[2]
WIDTH, HEADS = 256, 2  # head_dim 128 as in every Wan model


def base_weights(width: int, block: int, seed: int = 1) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    sd = {}
    for n in ("q", "k", "v", "o"):
        sd[f"blocks.{block}.self_attn.{n}.weight"] = torch.randn(width, width, generator=gen) / width ** 0.5
        sd[f"blocks.{block}.self_attn.{n}.bias"] = 0.02 * torch.randn(width, generator=gen)
    for n in ("norm_q", "norm_k"):
        sd[f"blocks.{block}.self_attn.{n}.weight"] = 1 + 0.1 * torch.randn(width, generator=gen)
    return sd


def production(x, grid, block, base, extras_module, timestep):
    """ultragen_attention with plain torch layers standing in for the model's own."""
    layers = {n: torch.nn.Linear(WIDTH, WIDTH) for n in "qkvo"}
    for n, layer in layers.items():
        layer.weight.data, layer.bias.data = base[f"{n}.weight"], base[f"{n}.bias"]
    norms = {n: torch.nn.RMSNorm(WIDTH, eps=1e-6) for n in ("norm_q", "norm_k")}
    for n, norm in norms.items():
        norm.weight.data = base[f"{n}.weight"]

    def rope(t, sub):
        T, h, w = sub
        pos = [(a, i, j) for a in range(T) for i in range(h) for j in range(w)]
        return torch.stack([apply_rope(item.double(), pos, HEADS) for item in t]).to(t.dtype)

    def attention(q, k, v):
        split = lambda t: t.unflatten(-1, (HEADS, -1)).transpose(1, 2)  # (B, H, L, D)
        return F.scaled_dot_product_attention(split(q), split(k), split(v)).transpose(1, 2).flatten(2)

    ops = fw.BaseAttention(layers["q"], layers["k"], layers["v"], layers["o"], norms["norm_q"], norms["norm_k"],
                           rope, attention)
    with torch.no_grad():
        return fw.ultragen_attention(x, grid, block, extras_module.blocks[str(block)], timestep, ops)


@pytest.fixture(scope="module")
def weights():
    sd = random_extras(WIDTH, blocks=(1, 2), seed=3)
    for b in (1, 2):
        sd.update(base_weights(WIDTH, b, seed=b))
    split = split_checkpoint(sd)
    return sd, UltraGenExtras.from_tensors(split.extras, WIDTH, 64, torch.float32)


@pytest.mark.parametrize("block", [1, 2])  # odd: K=5 local / B=3 hierarchical windows; even: K=4 / B=2
def test_forward_matches_naive_reference(weights, block):
    sd, extras = weights
    grid = (2, 10, 13)  # resized down and up in both branches, global pooled with floor
    gen = torch.Generator().manual_seed(block)
    x = torch.randn(2, math.prod(grid), WIDTH, generator=gen)
    timestep = torch.tensor([900.0, 250.0])
    out = production(x, grid, block, *_split(sd, block, extras), timestep)
    base, ext = block_tensors(sd, block)
    for i in range(2):
        want = reference_block(x[i], grid, block, base, ext, float(timestep[i]), HEADS)
        torch.testing.assert_close(out[i].double(), want, atol=2e-4, rtol=2e-4)


def _split(sd, block, extras):
    return block_tensors(sd, block)[0], extras


def test_batch_two_equals_two_batch_one_runs(weights):
    sd, extras = weights
    grid = (3, 9, 11)
    x = torch.randn(2, math.prod(grid), WIDTH, generator=torch.Generator().manual_seed(7))
    t = torch.tensor([500.0, 500.0])
    both = production(x, grid, 1, *_split(sd, 1, extras), t)
    for i in range(2):
        one = production(x[i:i + 1], grid, 1, *_split(sd, 1, extras), t[i:i + 1])
        torch.testing.assert_close(both[i:i + 1], one, atol=1e-5, rtol=1e-5)


def test_too_small_grid_is_a_clear_error(weights):
    sd, extras = weights
    with pytest.raises(ValueError, match="at least 4x4 tokens per frame"):
        production(torch.randn(1, 2 * 3 * 8, WIDTH), (2, 3, 8), 1, *_split(sd, 1, extras), torch.tensor([1.0]))


def test_gates_use_cos_first_embedding_of_raw_timestep():
    emb = fw.timestep_embedding(torch.tensor([0.0, 1000.0]))
    assert emb.shape == (2, 256)
    assert torch.equal(emb[0, :128], torch.ones(128, dtype=torch.float64))  # cos(0)
    assert torch.equal(emb[0, 128:], torch.zeros(128, dtype=torch.float64))
    assert emb[1, 0] == pytest.approx(math.cos(1000.0))


def test_published_layout_has_277m_extra_parameters():
    per_block = sum(math.prod(s) for s in expected_shapes(1536, 64).values())
    assert per_block * 24 == 277_005_312  # 24 blocks: all but the full-attention blocks 0, 1, 2, 27, 28, 29


def test_key_checks_explain_what_is_wrong():
    good = random_extras(128, blocks=(1,), rank=8)
    assert check_extras(split_checkpoint(good), 128, 4, "f") == ["LoRA rank 8 (published: 64)"]
    with pytest.raises(ValueError, match=r"width 256 .*connected model has width 128"):
        check_extras(split_checkpoint(random_extras(256, blocks=(1,))), 128, 4, "wide.ckpt")
    with pytest.raises(ValueError, match="no UltraGen weights|without UltraGen weights"):
        check_extras(split_checkpoint({"blocks.0.self_attn.q.weight": torch.zeros(2, 2)}), 128, 4, "wan.safetensors")
    with pytest.raises(ValueError, match=r"block\(s\) \[7\].*only 4 blocks"):
        check_extras(split_checkpoint(random_extras(128, blocks=(7,))), 128, 4, "deep.ckpt")
    partial = {k: v for k, v in good.items() if "upsample_conv." not in k}
    with pytest.raises(ValueError, match="missing 2 of the 44 UltraGen weights of block 1"):
        check_extras(split_checkpoint(partial), 128, 4, "cut.ckpt")
    prefixed = split_checkpoint({f"model.diffusion_model.{k}": v for k, v in good.items()})
    assert list(prefixed.extras) == [1] and prefixed.width == 128


class _Payload:
    """A pickle payload that would create a file if a loader ran its code."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_pickle_with_code_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.ckpt"
    torch.save({"blocks.1.self_attn.q_lora_1.lora_A.weight": torch.zeros(1), "x": _Payload(str(marker))}, path)
    with pytest.raises(ValueError, match="refuses to load evil.ckpt.*weights_only=True"):
        load_state_dict(str(path))
    assert not marker.exists()
    assert convert_main([str(path), str(tmp_path / "out.safetensors")]) == 1
    assert not marker.exists() and not (tmp_path / "out.safetensors").exists()


def test_loading_formats(tmp_path):
    sd = random_extras(128, blocks=(1,), rank=4)
    torch.save({"state_dict": sd, "epoch": 3}, tmp_path / "a.pt")
    assert load_state_dict(str(tmp_path / "a.pt")).keys() == sd.keys()
    with pytest.raises(ValueError, match="extension '.bin'"):
        load_state_dict(str(tmp_path / "a.bin"))


def test_convert_full_and_extras_only(tmp_path):
    sd = {**random_extras(128, blocks=(1,), rank=4), **base_weights(128, 0), "head.head.weight": torch.randn(4, 128)}
    src = tmp_path / "ultragen.ckpt"
    torch.save(sd, src)
    assert convert_main([str(src), str(tmp_path / "full.safetensors")]) == 0
    full = load_state_dict(str(tmp_path / "full.safetensors"))
    assert full.keys() == sd.keys() and all(torch.equal(full[k], sd[k]) for k in sd)
    assert convert_main([str(src), str(tmp_path / "extras.safetensors"), "--extras-only", "--dtype", "bf16"]) == 0
    extras = load_state_dict(str(tmp_path / "extras.safetensors"))
    assert set(extras) == {k for k in sd if "lora" in k or "alpha" in k or "conv" in k}
    assert all(t.dtype == torch.bfloat16 for t in extras.values())


def test_core_never_imports_comfyui():
    code = ("import sys; import ultragen_core.checkpoint, ultragen_core.convert; "
            "import ultragen_core.families.wan.wan_ultragen; "
            "bad = [m for m in sys.modules if m.split('.')[0] in ('comfy', 'folder_paths', 'nodes', 'server')]; "
            "assert not bad, bad")
    env = {**os.environ, "PYTHONPATH": str(PACK)}
    subprocess.run([sys.executable, "-c", code], check=True, cwd=str(PACK), env=env)
