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


# ComfyUI 0.38's interfaces, as stand-ins: AttentionTensorContainer (single owner), optimized_attention's wrapper
# (preferred_attention popped; a layer's ComfyAttention.function runs instead when set; an override with a
# container_function gets the containers; otherwise the tensors are taken), a Wan layer holding comfy_attention.
class Container:
    __slots__ = ("tensor",)

    def __init__(self, tensor):
        self.tensor = tensor

    def peek(self):
        if self.tensor is None:
            raise RuntimeError("consumed")
        return self.tensor

    def take(self):
        tensor, self.tensor = self.peek(), None
        return tensor


class PreferredAttention:  # ComfyAttention: function None unless a checkpoint chose one
    def __init__(self, function=None):
        self.function = function


def wrapped(calls, name="attention_pytorch"):
    """optimized_attention as 0.38 wraps it: records what arrived, then computes naive attention."""
    def fn(q, k, v, heads, transformer_options=None, **kwargs):
        preferred = kwargs.pop("preferred_attention", None)
        containers = isinstance(q, Container)
        if containers != isinstance(k, Container) or containers != isinstance(v, Container):
            raise TypeError("q, k, and v must all be attention tensor containers")
        calls.append({"containers": containers, "preferred": preferred})
        override = (transformer_options or {}).get(kernels.OVERRIDE_KEY)
        if override is not None and containers and hasattr(override, "container_function"):
            return override.container_function(q, k, v, heads=heads)
        if preferred is not None and preferred.function is not None:
            return preferred.function(q, k, v, heads=heads)
        if containers:
            q, k, v = q.take(), k.take(), v.take()
        return naive(q, k, v, heads).to(q.dtype)
    fn.__name__, fn.__module__ = name, kernels.STOCK_MODULE
    return fn


def wan_038(preferred=None):
    """(namespace, layer): the Wan model module imports the container class; the layer holds comfy_attention."""
    import types
    namespace = types.ModuleType("stand_in_wan_model")
    namespace.AttentionTensorContainer = Container
    layer = types.SimpleNamespace(comfy_attention=preferred or PreferredAttention())
    return namespace, layer


def test_interfaces_are_found_by_looking():
    namespace, layer = wan_038()
    found = kernels.interface_of(namespace, layer)
    assert found.container is Container and found.preferred is layer.comfy_attention
    import types
    old = kernels.interface_of(types.ModuleType("wan_033"), types.SimpleNamespace())  # 0.3.64 / 0.33: neither
    assert old == kernels.ModelAttention() and old.container is None and old.preferred is None


@pytest.mark.parametrize("hand_over", [False, True])
def test_a_model_that_uses_containers_gets_them_with_its_preferred_attention(hand_over):
    calls = []
    namespace, layer = wan_038()
    interface = kernels.interface_of(namespace, layer)
    attention = kernels.choose(wrapped(calls), 2, {}, torch.device("cpu"), interface)
    q, k, v = big()
    args = kernels.hand_over(q, k, v) if hand_over else (q, k, v)
    out = attention(*args)
    torch.testing.assert_close(out.double(), naive(q, k, v, 2), rtol=1e-5, atol=1e-5)
    assert calls == [{"containers": True, "preferred": layer.comfy_attention}]
    if hand_over:  # ownership moved on: the caller's handovers are spent
        assert all(h.tensor is None for h in args)
        with pytest.raises(RuntimeError, match="already handed over"):
            args[0].take()


def test_a_model_without_containers_gets_plain_tensors_even_from_handovers():
    calls = []
    attention = kernels.choose(wrapped(calls), 2, {}, torch.device("cpu"))
    q, k, v = big()
    out = attention(*kernels.hand_over(q, k, v))
    torch.testing.assert_close(out.double(), naive(q, k, v, 2), rtol=1e-5, atol=1e-5)
    assert calls == [{"containers": False, "preferred": None}] and kernels.accepts_containers(attention)


def test_a_layers_own_attention_function_runs_and_cudnn_first_stays_out(monkeypatch):
    monkeypatch.setattr(kernels, "cudnn_first_available", lambda device: True)  # a Hopper GPU
    ran = []

    def int8_attention(q, k, v, heads):  # a checkpoint's per-layer choice, container-aware
        ran.append(type(q).__name__)
        return naive(q.take(), k.take(), v.take(), heads).float()
    int8_attention.__name__ = "attention_comfy_kitchen_int8"
    calls = []
    namespace, layer = wan_038(PreferredAttention(int8_attention))
    interface = kernels.interface_of(namespace, layer)
    assert kernels.pick(wrapped(calls), {}, torch.device("cpu"), interface) == (
        False, "attention: the model's per-layer choice (attention_comfy_kitchen_int8)")
    attention = kernels.choose(wrapped(calls), 2, {}, torch.device("cpu"), interface)
    q, k, v = big()
    torch.testing.assert_close(attention(q, k, v).double(), naive(q, k, v, 2), rtol=1e-5, atol=1e-5)
    assert ran == ["Container"] and len(calls) == 1


def test_an_override_with_a_container_function_gets_the_containers():
    seen = []

    class Override:
        def __call__(self, func, *args, **kwargs):
            raise AssertionError("the container function should run")

        def container_function(self, q, k, v, heads):
            seen.append(type(q).__name__)
            return naive(q.take(), k.take(), v.take(), heads).float()

    calls = []
    options = {kernels.OVERRIDE_KEY: Override()}
    attention = kernels.choose(wrapped(calls), 2, options, torch.device("cpu"), kernels.interface_of(*wan_038()))
    q, k, v = big()
    torch.testing.assert_close(attention(q, k, v).double(), naive(q, k, v, 2), rtol=1e-5, atol=1e-5)
    assert seen == ["Container"]


def test_cudnn_first_takes_handed_over_inputs(monkeypatch):
    monkeypatch.setattr(kernels, "cudnn_first_available", lambda device: True)
    attention = kernels.choose(wrapped([]), 2, {}, torch.device("cpu"), kernels.interface_of(*wan_038()))
    q, k, v = big()
    handed = kernels.hand_over(q, k, v)
    torch.testing.assert_close(attention(*handed).double(), naive(q, k, v, 2), rtol=1e-5, atol=1e-5)
    assert all(h.tensor is None for h in handed)
