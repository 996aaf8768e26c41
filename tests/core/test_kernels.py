"""Which attention function a patched block runs (attention/kernels.py), and the cuDNN-first SDPA against a
naive reference (on the CPU PyTorch takes its own kernels; the GPU tier checks the cuDNN kernel itself)."""
import math

import pytest
import torch

from ultragen_core.attention import kernels


def naive(q, k, v, heads):
    B, Lq, C = q.shape
    D = C // heads
    qh, kh, vh = (t.view(B, -1, heads, D).transpose(1, 2).double() for t in (q, k, v))  # (B, H, L, D)
    out = (qh @ kh.transpose(-1, -2) / math.sqrt(D)).softmax(-1) @ vh  # (B, H, Lq, D)
    return out.transpose(1, 2).reshape(B, Lq, C)


def stock(name="attention_pytorch", module=kernels.STOCK_MODULE, calls=None):
    """A stand-in for ComfyUI's optimized_attention, named as ComfyUI names its functions."""
    def fn(q, k, v, heads, transformer_options=None):
        if calls is not None:
            calls.append(q.shape)
        return naive(q, k, v, heads).to(q.dtype)
    fn.__name__, fn.__module__ = name, module
    return fn


@pytest.mark.parametrize("batch,lq,lk,heads", [(1, 37, 37, 2), (3, 5, 70, 4), (5, 64, 11, 1)])
def test_cudnn_first_sdpa_matches_naive_attention(batch, lq, lk, heads):
    g = torch.Generator().manual_seed(0)
    q = torch.randn(batch, lq, heads * 16, generator=g)
    k, v = (torch.randn(batch, lk, heads * 16, generator=g) for _ in range(2))
    out = kernels.sdpa_cudnn_first(q, k, v, heads)
    assert out.shape == q.shape
    torch.testing.assert_close(out.double(), naive(q, k, v, heads), rtol=1e-5, atol=1e-5)


def test_cudnn_first_sdpa_slices_large_batches_like_comfyui(monkeypatch):
    monkeypatch.setattr(kernels, "BATCH_LIMIT", 2)
    g = torch.Generator().manual_seed(1)
    q, k, v = (torch.randn(5, 9, 32, generator=g) for _ in range(3))
    torch.testing.assert_close(kernels.sdpa_cudnn_first(q, k, v, 2).double(), naive(q, k, v, 2), rtol=1e-5, atol=1e-5)


def big(n=kernels.MIN_ELEMENTS):
    g = torch.Generator().manual_seed(2)
    return [torch.randn(1, n // 64, 64, generator=g) for _ in range(3)]


def test_stock_pytorch_attention_on_hopper_runs_cudnn_first_for_large_calls(monkeypatch):
    monkeypatch.setattr(kernels, "cudnn_first_available", lambda device: True)
    calls, ours = [], []
    monkeypatch.setattr(kernels, "sdpa_cudnn_first", lambda q, k, v, heads: ours.append(q.shape) or q)
    fn = kernels.choose(stock(calls=calls), 2, {}, torch.device("cpu"))
    assert "cuDNN first" in kernels.pick(stock(), {}, torch.device("cpu"))[1]
    fn(*big())
    assert ours == [(1, kernels.MIN_ELEMENTS // 64, 64)] and calls == []
    fn(*(t[:, :10] for t in big()))  # below ComfyUI's threshold: its own call
    assert calls == [(1, 10, 64)] and len(ours) == 1


@pytest.mark.parametrize("case,expected", [
    ("override", "attention override"),
    ("sage", "attention_sage"),
    ("other module", "attention_pytorch"),
    ("not hopper", "ComfyUI's PyTorch SDPA"),
])
def test_the_model_attention_runs_unless_it_is_stock_pytorch_on_hopper(monkeypatch, case, expected):
    monkeypatch.setattr(kernels, "cudnn_first_available", lambda device: case != "not hopper")
    calls = []
    fn = stock("attention_sage" if case == "sage" else "attention_pytorch",
               "some_pack.attention" if case == "other module" else kernels.STOCK_MODULE, calls)
    options = {kernels.OVERRIDE_KEY: object()} if case == "override" else {}
    attention = kernels.choose(fn, 2, options, torch.device("cpu"))
    assert expected in kernels.pick(fn, options, torch.device("cpu"))[1]
    q, k, v = big()
    torch.testing.assert_close(attention(q, k, v).double(), naive(q, k, v, 2), rtol=1e-5, atol=1e-5)
    assert calls == [q.shape]


def test_cudnn_first_needs_a_hopper_gpu():
    assert not kernels.cudnn_first_available(torch.device("cpu"))
