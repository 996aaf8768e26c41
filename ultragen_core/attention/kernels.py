"""Which scaled-dot-product kernel runs the windows and the global branch.

The adapters call the model's own attention function (ComfyUI's ``optimized_attention``), so that
Sage / flash-attn / xformers and other packs' ``optimized_attention_override`` apply to UltraGen's
attention too. One case is taken over: ComfyUI's stock PyTorch attention on a Hopper GPU (H100 / H200).
ComfyUI 0.33 orders PyTorch's SDPA backends Flash first, then cuDNN (0.3.64 put cuDNN first). On
Hopper, PyTorch's Flash kernel (FlashAttention-2) runs the windows of native 4K at about 357 TFLOP/s and
cuDNN's at about 561 (H200, docs/BENCHMARKS.md, runs 29-30): one Wan 14B call at 4K with the quality
preset, where attention is 80% of the time, takes 105 s instead of 145 s. So on Hopper, for calls big
enough (ComfyUI's own threshold), the pack runs SDPA with cuDNN first; PyTorch still falls back to
Flash, then the memory-efficient kernel, where cuDNN cannot take the inputs.

``choose`` returns the function a patched block calls; ``pick`` says which one it is (for the log).
"""
from __future__ import annotations

import functools
import inspect
from typing import Callable

import torch
import torch.nn.attention

STOCK_MODULE = "comfy.ldm.modules.attention"  # where ComfyUI defines its attention functions
STOCK_NAME = "attention_pytorch"  # ComfyUI's PyTorch SDPA attention (its default on NVIDIA)
OVERRIDE_KEY = "optimized_attention_override"  # transformer_options key of attention-kernel packs
MIN_ELEMENTS = 1024 * 128  # ComfyUI's own threshold: below it cuDNN was slower (comfy/ops.py)
BATCH_LIMIT = 2**15  # ComfyUI's SDP_BATCH_LIMIT: larger batches run in slices

Attention = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def is_stock_pytorch(fn) -> bool:
    """``fn`` is ComfyUI's own PyTorch attention (not Sage, flash-attn, xformers or a replacement)."""
    return getattr(fn, "__module__", None) == STOCK_MODULE and getattr(fn, "__name__", None) == STOCK_NAME


def _can_order_backends() -> bool:
    sdpa_kernel = getattr(torch.nn.attention, "sdpa_kernel", None)
    return sdpa_kernel is not None and "set_priority" in inspect.signature(sdpa_kernel).parameters


ORDERABLE = _can_order_backends()  # this PyTorch's sdpa_kernel takes set_priority


@functools.lru_cache(maxsize=None)
def cudnn_first_available(device: torch.device) -> bool:
    """A Hopper GPU (compute capability 9.x) with cuDNN, and a PyTorch that can order SDPA backends.
    Asked by every patched block of every call, so remembered per device."""
    if device.type != "cuda" or not ORDERABLE or not torch.backends.cudnn.is_available():
        return False
    return torch.cuda.get_device_capability(device)[0] == 9


def sdpa_cudnn_first(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int) -> torch.Tensor:
    """Attention of q (B, Lq, H*D) over k, v (B, Lk, H*D) with ``heads`` heads -> (B, Lq, H*D), by
    PyTorch's SDPA with the backends tried in the order cuDNN, Flash, memory-efficient, math."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    order = [SDPBackend.CUDNN_ATTENTION, SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION,
             SDPBackend.MATH]
    b, lq, c = q.shape
    d = c // heads

    def one(qs, ks, vs):  # (b, L, H*D) each -> (b, Lq, H*D)
        qs, ks, vs = (t.unflatten(-1, (heads, d)).transpose(1, 2) for t in (qs, ks, vs))  # (b, H, L, D)
        o = torch.nn.functional.scaled_dot_product_attention(qs, ks, vs)  # (b, H, Lq, D), stored (b, Lq, H, D)
        return o.transpose(1, 2).flatten(2)  # a view where the kernel stored it token-major, as cuDNN does

    with sdpa_kernel(order, set_priority=True):
        if b <= BATCH_LIMIT:
            return one(q, k, v)  # no second output buffer: at 4K that would be one more 6.5 GiB tensor
        out = torch.empty_like(q)
        for i in range(0, b, BATCH_LIMIT):
            out[i:i + BATCH_LIMIT] = one(q[i:i + BATCH_LIMIT], k[i:i + BATCH_LIMIT], v[i:i + BATCH_LIMIT])
        return out


def pick(model_attention, transformer_options: dict, device: torch.device) -> tuple[bool, str]:
    """Whether large calls run :func:`sdpa_cudnn_first` instead of ``model_attention``, and a few words
    on which attention runs (for the log line of a sampling run)."""
    if OVERRIDE_KEY in transformer_options:
        return False, "attention: the model's, through the attention override another node set"
    if not is_stock_pytorch(model_attention):
        return False, f"attention: the model's ({getattr(model_attention, '__name__', type(model_attention).__name__)})"
    if not cudnn_first_available(device):
        return False, "attention: ComfyUI's PyTorch SDPA"
    return True, "attention: PyTorch SDPA with cuDNN first (Hopper GPU; ComfyUI's order puts Flash first)"


def choose(model_attention, heads: int, transformer_options: dict, device: torch.device) -> Attention:
    """The attention a patched block runs its windows and global branch with: (q, k, v) -> out, all
    (B, L, heads * D). model_attention: the model's ``optimized_attention(q, k, v, heads=,
    transformer_options=)``."""
    def model_call(q, k, v):
        return model_attention(q, k, v, heads=heads, transformer_options=transformer_options)

    if not pick(model_attention, transformer_options, device)[0]:
        return model_call

    def cudnn_first(q, k, v):
        if q.numel() < MIN_ELEMENTS:
            return model_call(q, k, v)
        return sdpa_cudnn_first(q, k, v, heads)

    return cudnn_first
