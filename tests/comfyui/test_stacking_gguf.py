"""UltraGen on a GGUF-quantised Wan loaded by city96's ComfyUI-GGUF (``UnetLoaderGGUF``), the way most 12-24 GB
users load Wan 14B. The pack is loaded unmodified from ``../shared/custom_nodes/ComfyUI-GGUF`` (read-only).

A tiny random Wan (dim 256, so every linear layer's rows hold whole 256-value Q4_K super-blocks) is written as a
.gguf file the way ComfyUI-GGUF's ``tools/convert.py`` lays Wan out: the linear weights quantised (Q8_0 or Q4_K),
1-D tensors, small tensors and ``.modulation`` kept F32, the 5-D patch embedding added back as F32. The gguf
package quantises Q8_0; it has no Q4_K quantiser in Python (``gguf.quants.quantize`` raises
NotImplementedError for the K-quants), so :func:`quantize_q4_k` packs the blocks here, checked against the gguf
package's own Q4_K dequantiser. The reference model holds the same weights dequantised by the gguf package
(numpy, independent of ComfyUI-GGUF's torch dequantiser) as a float32 safetensors file.
"""
import os
import sys
import types

import numpy as np
import pytest
import torch

from harness import random_wan_state_dict, shared_custom_node
from test_apply import run, sample_prompt, settings
from test_memory_budget import TINY_BUDGET, budget, ultragen_lines

GGUF_PACK = "ComfyUI-GGUF"
QK_K = 256  # values per K-quant super-block
TINY = dict(dim=256, num_layers=2)  # dim 256: Q4_K needs rows of whole 256-value blocks
REQUIRED = os.environ.get("ULTRAGEN_REQUIRE_COMFYUI") == "1" or os.environ.get("CI", "").lower() == "true"
pack_writes: list[str] = []


def _missing(what: str):
    """Skip (fail under ULTRAGEN_REQUIRE_COMFYUI / CI, where tests/install_deps.py provides it)."""
    if REQUIRED:
        pytest.fail(what)
    pytest.skip(what)


def _watch_writes(folder: str):
    """Audit hook: remember every write, create, move or delete under ``folder`` (the read-only pack)."""
    prefix = os.path.join(folder, "")

    def hook(event, args):
        if not args or not isinstance(args[0], str) or not os.path.realpath(args[0]).startswith(prefix):
            return
        if event == "open" and len(args) >= 3:
            mode, flags = args[1], args[2]
            if (any(c in mode for c in "wax+") if isinstance(mode, str)
                    else isinstance(flags, int) and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT)):
                pack_writes.append(f"open {args[0]} ({mode or flags})")
        elif event in ("os.mkdir", "os.remove", "os.rename", "os.replace", "os.rmdir", "os.truncate"):
            pack_writes.append(f"{event} {args[0]}")

    sys.addaudithook(hook)


@pytest.fixture(scope="module")
def gguf_pack(comfy):
    """ComfyUI-GGUF loaded into the test runtime from the shared folder; its modules by file name."""
    try:
        import gguf  # noqa: F401
    except ImportError:
        _missing("the gguf package is missing (pip install 'gguf>=0.13.0'; tests/install_deps.py installs it)")
    path = shared_custom_node(GGUF_PACK)
    if not (path / "nodes.py").is_file():
        _missing(f"ComfyUI-GGUF is not at {path} (set ULTRAGEN_SHARED to the folder holding custom_nodes/)")
    real = os.path.realpath(path)
    _watch_writes(real)
    assert comfy.load_node_pack(path), f"ComfyUI could not load {path}"
    assert "UnetLoaderGGUF" in comfy.nodes.NODE_CLASS_MAPPINGS
    modules = {os.path.basename(m.__file__)[:-3]: m for m in list(sys.modules.values())
               if getattr(m, "__file__", None) and os.path.dirname(os.path.realpath(m.__file__)) == real}
    yield types.SimpleNamespace(**modules)  # .ops, .loader, .dequant, .nodes
    assert not pack_writes, f"the test run wrote into the shared ComfyUI-GGUF folder: {pack_writes[:5]}"


# --- writing a tiny Wan as GGUF ------------------------------------------------------------------------------

def quantize_q4_k(x: np.ndarray) -> np.ndarray:
    """Q4_K blocks of ``x`` (rows of whole 256-value super-blocks) as ggml lays them out: (rows, 144 * blocks) bytes.

    Per super-block: d, dmin (float16), twelve bytes of eight 6-bit scales and eight 6-bit mins, then 128 bytes
    of 4-bit values; value = d * scale_j * q - dmin * min_j for the 32 values of sub-block j. A plain min / max
    fit per sub-block (llama.cpp searches for better scales; any valid fit serves a test)."""
    rows = x.reshape(-1, x.shape[-1]).astype(np.float32)
    blocks = rows.reshape(-1, 8, 32)  # (super-blocks, sub-block, value)
    n = blocks.shape[0]
    low = np.minimum(blocks.min(axis=2), 0.0)  # (n, 8)
    scale, offset = (blocks.max(axis=2) - low) / 15.0, -low
    d = (scale.max(axis=1) / 63.0).astype(np.float16)
    dmin = (offset.max(axis=1) / 63.0).astype(np.float16)
    d32, dmin32 = d.astype(np.float32)[:, None], dmin.astype(np.float32)[:, None]

    def ratio(a, b):
        return np.divide(a, b, out=np.zeros_like(a), where=b > 0)
    sc = np.clip(np.round(ratio(scale, d32)), 0, 63).astype(np.uint8)  # (n, 8)
    mn = np.clip(np.round(ratio(offset, dmin32)), 0, 63).astype(np.uint8)
    q = np.clip(np.round(ratio(blocks + (dmin32 * mn)[:, :, None], (d32 * sc)[:, :, None])), 0, 15).astype(np.uint8)
    scales = np.empty((n, 12), dtype=np.uint8)  # low 6 bits of scales / mins 0-3, then 4-7 split over the bytes
    scales[:, 0:4] = sc[:, :4] | ((sc[:, 4:] >> 4) << 6)
    scales[:, 4:8] = mn[:, :4] | ((mn[:, 4:] >> 4) << 6)
    scales[:, 8:12] = (sc[:, 4:] & 0x0F) | ((mn[:, 4:] & 0x0F) << 4)
    qs = (q[:, 0::2] | (q[:, 1::2] << 4)).reshape(n, 128)  # byte c*32+l: sub-block 2c low nibble, 2c+1 high
    out = np.concatenate([d.view(np.uint8).reshape(n, 2), dmin.view(np.uint8).reshape(n, 2), scales, qs], axis=1)
    return out.reshape(rows.shape[0], -1)


def storage_type(gguf, key: str, t: torch.Tensor, qtype):
    """How tools/convert.py stores a Wan tensor: F32 for 1-D, small (<= 1024 values), ``.modulation`` and 5-D
    tensors (added back by tools/fix_5d_tensors.py), else quantised; Q8_0 where a row is not whole Q4_K blocks."""
    if t.ndim <= 1 or t.numel() <= 1024 or ".modulation" in key or t.ndim > 4:
        return gguf.GGMLQuantizationType.F32
    if qtype == gguf.GGMLQuantizationType.Q4_K and t.shape[-1] % QK_K:
        return gguf.GGMLQuantizationType.Q8_0
    return qtype


def write_gguf(path, sd: dict[str, torch.Tensor], qtype) -> None:
    """Write ``sd`` as a Wan GGUF file."""
    import gguf
    writer = gguf.GGUFWriter(path=None, arch="wan")
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    for key, t in sd.items():
        kind = storage_type(gguf, key, t, qtype)
        data = t.numpy().astype(np.float32)
        raw = quantize_q4_k(data) if kind == gguf.GGMLQuantizationType.Q4_K else gguf.quants.quantize(data, kind)
        writer.add_tensor(key, raw, raw_dtype=kind)
    writer.write_header_to_file(path=str(path))
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def quantised_pair(comfy, pack, qtype_name: str) -> tuple[str, str]:
    """(a .gguf file, a safetensors file of the same weights dequantised) in models/diffusion_models.

    The weights are dequantised by ComfyUI-GGUF's own dequantiser to float32, as its ops do in forward for a
    float32 model (its Q8_0 / Q4_K scales are multiplied in float16 there: the gguf package's numpy
    dequantiser differs from it by float16 rounding)."""
    import gguf
    from safetensors.torch import save_file
    folder = comfy.models_dir / "diffusion_models"
    name = f"tiny_wan_{qtype_name.lower()}"
    if not (folder / f"{name}.gguf").exists():
        write_gguf(folder / f"{name}.gguf", random_wan_state_dict(seed=5, **TINY),
                   getattr(gguf.GGMLQuantizationType, qtype_name))
        stored = pack.loader.gguf_sd_loader(str(folder / f"{name}.gguf"))
        dequantised = {k: torch.Tensor(pack.dequant.dequantize_tensor(t, torch.float32)).contiguous().clone()
                       for k, t in stored.items()}
        save_file(dequantised, str(folder / f"{name}_dequantised.safetensors"))
    return f"{name}.gguf", f"{name}_dequantised.safetensors"


def gguf_prompt(name: str, patch=None, **kw) -> dict:
    prompt = sample_prompt(name, patch, **kw)
    prompt["load"] = {"class_type": "UnetLoaderGGUF", "inputs": {"unet_name": name}}
    return prompt


# --- tests ---------------------------------------------------------------------------------------------------

def test_our_q4_k_blocks_decode_with_the_gguf_packages_dequantiser():
    gguf = pytest.importorskip("gguf")
    x = torch.randn(64, 512, generator=torch.Generator().manual_seed(0)).numpy() / 16
    raw = quantize_q4_k(x)
    assert raw.shape == (64, 2 * 144)  # 144 bytes per super-block, ggml's Q4_K size
    assert gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType.Q4_K] == (256, 144)
    back = gguf.quants.dequantize(raw, gguf.GGMLQuantizationType.Q4_K)
    step = (x.reshape(-1, 32).max(1) - np.minimum(x.reshape(-1, 32).min(1), 0)) / 15  # per sub-block
    err = np.abs(back - x).reshape(-1, 32).max(1)
    assert np.all(err <= 0.5 * step * 1.1 + 1e-4)  # within half a quantisation step (6-bit scale rounding)


@pytest.mark.parametrize("qtype", ["Q8_0", "Q4_K"])
def test_ultragen_on_a_gguf_model_equals_ultragen_on_its_dequantised_weights(comfy, gguf_pack, qtype):
    quantised, dequantised = quantised_pair(comfy, gguf_pack, qtype)
    loader = comfy.nodes.NODE_CLASS_MAPPINGS["UnetLoaderGGUF"]()
    model = loader.load_unet(quantised)[0]
    dm = model.get_model_object("diffusion_model")
    q_weight = dm.blocks[0].self_attn.q.weight
    assert getattr(q_weight, "tensor_type", None).name == qtype  # the weights stay quantised in the model
    assert isinstance(dm.blocks[0].self_attn.q, gguf_pack.ops.GGMLLayer)

    cfg = settings(window=(1, 4, 4))
    patched_q = run(comfy, gguf_prompt(quantised, cfg, steps=2))
    patched_d = run(comfy, sample_prompt(dequantised, cfg, steps=2))
    # the same weights: ComfyUI-GGUF dequantises in forward what the gguf package dequantised up front
    torch.testing.assert_close(patched_q, patched_d, rtol=1e-5, atol=1e-5)
    plain_q = run(comfy, gguf_prompt(quantised, steps=2))
    assert not torch.allclose(plain_q, patched_q, atol=1e-4)  # the patch is active on the GGUF model
    covering = settings(window=(64, 64, 64), global_branch=False, fusion="local_only")
    assert torch.equal(plain_q, run(comfy, gguf_prompt(quantised, covering, steps=2)))


@pytest.mark.parametrize("qtype", ["Q8_0", "Q4_K"])
def test_streaming_runs_the_quantised_ops_and_never_reads_their_weights(comfy, gguf_pack, qtype, caplog,
                                                                        monkeypatch):
    """Below the memory budget the blocks stream; every weight is still read by ComfyUI-GGUF's own ops (which
    dequantise in forward), never by the pack: a ``.weight`` read elsewhere would get raw quantised bytes."""
    import logging
    from comfyui_finder import PACK_DIR
    quantised, _ = quantised_pair(comfy, gguf_pack, qtype)
    cfg = settings(window=(1, 4, 4))
    whole = run(comfy, gguf_prompt(quantised, cfg, steps=2))
    readers: dict[str, int] = {}
    layer_getattr = torch.nn.Module.__getattr__

    def spy(self, name):  # parameters live in _parameters: every read of layer.weight / .bias passes here
        if name in ("weight", "bias"):
            where = sys._getframe(1).f_code.co_filename
            readers[where] = readers.get(where, 0) + 1
        return layer_getattr(self, name)
    monkeypatch.setattr(gguf_pack.ops.GGMLLayer, "__getattr__", spy, raising=False)
    with caplog.at_level(logging.INFO):
        streamed = run(comfy, gguf_prompt(quantised, budget(settings(window=(1, 4, 4)), TINY_BUDGET), steps=2))
    assert any("the blocks run their per-token work in chunks of 64 of" in m for m in ultragen_lines(caplog))
    torch.testing.assert_close(streamed, whole, rtol=1e-5, atol=1e-5)
    assert any(os.path.basename(f) == "ops.py" for f in readers), readers  # the spy saw ComfyUI-GGUF's reads
    ours = [f for f in readers if os.path.realpath(f).startswith(os.path.join(str(PACK_DIR), "ultragen_core", ""))
            or os.path.realpath(f).startswith(os.path.join(str(PACK_DIR), "nodes", ""))]
    assert not ours, f"the pack read quantised weights directly in {ours}"


def test_a_lora_on_a_gguf_model_under_streamed_ultragen(comfy, gguf_pack):
    """ComfyUI-GGUF applies a LoRA to quantised weights in forward (its patches ride on the quantised tensor):
    cfg 1 with the LoRA on the Q8_0 model equals the same on its dequantised weights."""
    from safetensors.torch import load_file, save_file
    from test_stacking_attention import stacked, ultragen
    from test_stacking_lora import lora, lora_folder, lora_weights
    quantised, dequantised = quantised_pair(comfy, gguf_pack, "Q8_0")
    lora_path = lora_folder(comfy) / "tiny_wan_gguf_lora.safetensors"
    if not lora_path.exists():
        save_file(lora_weights(load_file(str(comfy.models_dir / "diffusion_models" / dequantised))), str(lora_path))
    cfg = budget(settings(window=(1, 4, 4)), TINY_BUDGET)

    def sampled(name, with_lora=True):
        stages = (ultragen(cfg), lora(lora_path.name, 0.8)) if with_lora else (ultragen(cfg),)
        prompt = stacked(name, *stages, steps=2, cfg=1.0)
        if name.endswith(".gguf"):
            prompt["load"] = {"class_type": "UnetLoaderGGUF", "inputs": {"unet_name": name}}
        return run(comfy, prompt)
    on_gguf = sampled(quantised)
    torch.testing.assert_close(on_gguf, sampled(dequantised), rtol=1e-5, atol=1e-5)
    assert (on_gguf - sampled(quantised, with_lora=False)).abs().mean() > 1e-3  # the LoRA is applied
