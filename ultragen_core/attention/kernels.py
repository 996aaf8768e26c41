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

ComfyUI 0.38's Wan attention hands ``optimized_attention`` its q / k / v in ``AttentionTensorContainer``s
(single owner: the backend ``take``s the tensor, so it can free it early, e.g. after quantizing it) and
passes ``preferred_attention``, the layer's ``ComfyAttention`` module (whose ``function``, when a checkpoint
sets one, runs instead of the global attention). The pack calls the model's attention the same way when
the model's module does (:class:`ModelAttention`, found by looking, see :func:`interface_of`); the function
``choose`` returns accepts tensors or containers (anything with ``take``, e.g. :class:`Handover`).
"""
from __future__ import annotations

import functools
import inspect
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.attention

STOCK_MODULE = "comfy.ldm.modules.attention"  # where ComfyUI defines its attention functions
STOCK_NAME = "attention_pytorch"  # ComfyUI's PyTorch SDPA attention (its default on NVIDIA)
OVERRIDE_KEY = "optimized_attention_override"  # transformer_options key of attention-kernel packs
MIN_ELEMENTS = 1024 * 128  # ComfyUI's own threshold: below it cuDNN was slower (comfy/ops.py)
BATCH_LIMIT = 2**15  # ComfyUI's SDP_BATCH_LIMIT: larger batches run in slices

Attention = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


class Handover:
    """A tensor handed to the attention with its ownership (ComfyUI's container protocol: ``take`` once).
    Hold only the Handover, not the tensor, and the backend can free it as soon as it is done with it."""

    __slots__ = ("tensor",)

    def __init__(self, tensor: torch.Tensor):
        self.tensor = tensor

    def peek(self) -> torch.Tensor:
        if self.tensor is None:
            raise RuntimeError("UltraGen: this attention input was already handed over (taken).")
        return self.tensor

    def take(self) -> torch.Tensor:
        tensor, self.tensor = self.peek(), None
        return tensor


def hand_over(*tensors: torch.Tensor) -> list[Handover]:
    """Wrap tensors for one attention call (drop your own references to them before the call)."""
    return [Handover(t) for t in tensors]


def accepts_containers(attention) -> bool:
    """The attention function takes containers (:class:`Handover`) for q / k / v (those :func:`choose` makes)."""
    return getattr(attention, "accepts_containers", False)


def _tensor(t) -> torch.Tensor:
    """A tensor, or the tensor a container holds (taken: the container is spent)."""
    return t if isinstance(t, torch.Tensor) else t.take()


@dataclass(frozen=True)
class ModelAttention:
    """How the model's own attention layer calls ``optimized_attention`` (ComfyUI 0.38 and later).

    container: the container class its q / k / v go in (``AttentionTensorContainer``), None: plain tensors.
    preferred: the layer's ``ComfyAttention`` module, passed as ``preferred_attention``; None: not passed.
    """

    container: type | None = None
    preferred: object | None = None

    @property
    def preferred_function(self):
        """The per-layer attention function the preferred module holds (a checkpoint's choice), or None."""
        return getattr(self.preferred, "function", None)


def interface_of(namespace, module) -> ModelAttention:
    """What the model's attention layer uses, looked up, not read from source: its defining module
    (``namespace``) imports ``AttentionTensorContainer`` and the layer holds a ``comfy_attention`` module
    (0.38); ComfyUI 0.3.64 / 0.33's Wan has neither (plain tensors, no preferred attention)."""
    container = getattr(namespace, "AttentionTensorContainer", None)
    preferred = getattr(module, "comfy_attention", None)
    return ModelAttention(container if isinstance(container, type) else None,
                          preferred if preferred is not None and hasattr(preferred, "function") else None)


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


def pick(model_attention, transformer_options: dict, device: torch.device,
         interface: ModelAttention = ModelAttention()) -> tuple[bool, str]:
    """Whether large calls run :func:`sdpa_cudnn_first` instead of ``model_attention``, and a few words
    on which attention runs (for the log line of a sampling run)."""
    if OVERRIDE_KEY in transformer_options:
        return False, "attention: the model's, through the attention override another node set"
    chosen = interface.preferred_function
    if chosen is not None:
        return False, f"attention: the model's per-layer choice ({getattr(chosen, '__name__', type(chosen).__name__)})"
    if not is_stock_pytorch(model_attention):
        return False, f"attention: the model's ({getattr(model_attention, '__name__', type(model_attention).__name__)})"
    if not cudnn_first_available(device):
        return False, "attention: ComfyUI's PyTorch SDPA"
    return True, "attention: PyTorch SDPA with cuDNN first (Hopper GPU; ComfyUI's order puts Flash first)"


def choose(model_attention, heads: int, transformer_options: dict, device: torch.device,
           interface: ModelAttention = ModelAttention()) -> Attention:
    """The attention a patched block runs its windows and global branch with: (q, k, v) -> out, all
    (B, L, heads * D); q / k / v may be tensors or containers (taken). model_attention: the model's
    ``optimized_attention(q, k, v, heads=, transformer_options=)``, called as the model's layer calls it
    (``interface``: containers, ``preferred_attention``)."""
    extra = {"preferred_attention": interface.preferred} if interface.preferred is not None else {}
    wrap = interface.container

    def model_call(q, k, v):
        if wrap is not None:  # ownership moves on: a container-aware backend frees them when it can
            q, k, v = wrap(_tensor(q)), wrap(_tensor(k)), wrap(_tensor(v))
        else:
            q, k, v = _tensor(q), _tensor(k), _tensor(v)
        return model_attention(q, k, v, heads=heads, transformer_options=transformer_options, **extra)

    model_call.accepts_containers = True
    if not pick(model_attention, transformer_options, device, interface)[0]:
        return model_call

    def cudnn_first(q, k, v):
        if (q if isinstance(q, torch.Tensor) else q.peek()).numel() < MIN_ELEMENTS:
            return model_call(q, k, v)
        return sdpa_cudnn_first(_tensor(q), _tensor(k), _tensor(v), heads)

    cudnn_first.accepts_containers = True
    return cudnn_first
