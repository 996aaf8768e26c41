"""Test-only ComfyUI nodes for the stacking tests (loaded as a custom node file; never shipped in the pack).

``UltraGenTestSparseAttention`` stands in for core's "Model Sparse Attention" (BlockSparseAttention, Sol-Attn;
ComfyUI 0.34+, comfy_extras/nodes_sparse_attention.py), which needs comfy-kitchen's CUDA kernel. It hooks in
the way that node does: an ``optimized_attention_override`` that chains to the override that was on the hook
before it, put back on top at ON_PREPARE_STATE before every step, dense (the previous override, or ComfyUI's
attention) for masks, cross-attention (q and k of different shapes), blocks listed as dense and calls of
fewer than ``min_tokens`` tokens; the other calls run a block-sparse attention (blocks of 8 tokens, each query
block keeps its own key block and the half of the key blocks whose mean key scores highest with its mean query).
"""
import inspect

import torch

CALLS: dict = {}  # key -> [(tokens, "sparse" | "dense: why", block_index)]
BLOCK = 8


def block_sparse_attention(q, k, v, heads):
    """q, k, v (B, L, H*D), L a multiple of BLOCK -> (B, L, H*D)."""
    b, n, c = q.shape
    qh, kh, vh = (t.view(b, n, heads, c // heads).transpose(1, 2) for t in (q, k, v))  # (B, H, L, D)
    qb, kb = (t.unflatten(2, (n // BLOCK, BLOCK)).mean(3) for t in (qh, kh))  # (B, H, L/BLOCK, D)
    score = qb @ kb.transpose(-1, -2)  # (B, H, Lq/BLOCK, Lk/BLOCK)
    keep = score >= score.median(dim=-1, keepdim=True).values
    keep |= torch.eye(n // BLOCK, dtype=torch.bool, device=q.device)
    mask = keep.repeat_interleave(BLOCK, dim=-2).repeat_interleave(BLOCK, dim=-1)  # (B, H, L, L)
    out = torch.nn.functional.scaled_dot_product_attention(qh, kh, vh, attn_mask=mask)
    return out.transpose(1, 2).reshape(b, n, c)


class SparsePatch:
    def __init__(self, key: str, min_tokens: int, dense_blocks: set):
        self.key, self.min_tokens, self.dense_blocks = key, min_tokens, dense_blocks
        self.installed = set()

    def dense_reason(self, q, k, mask, heads, transformer_options):
        if mask is not None:
            return "mask"
        if q.shape != k.shape:
            return "cross-attention"
        if transformer_options.get("block_index") in self.dense_blocks:
            return "dense block"
        if q.shape[1] < self.min_tokens:
            return f"{q.shape[1]} tokens < min_tokens {self.min_tokens}"
        if q.shape[1] % BLOCK:
            return "not whole blocks"
        return None


def make_override(patch: SparsePatch, previous):
    def override(func, q, k, v, heads, mask=None, attn_precision=None, skip_reshape=False,
                 skip_output_reshape=False, **kwargs):
        options = kwargs.get("transformer_options") or {}
        reason = "skip_reshape" if skip_reshape else patch.dense_reason(q, k, mask, heads, options)
        CALLS.setdefault(patch.key, []).append((q.shape[1], "sparse" if reason is None else f"dense: {reason}",
                                                options.get("block_index")))
        if reason is not None:
            args, kw = (q, k, v, heads), dict(mask=mask, attn_precision=attn_precision, skip_reshape=skip_reshape,
                                              skip_output_reshape=skip_output_reshape, **kwargs)
            return func(*args, **kw) if previous is None else previous(func, *args, **kw)
        return block_sparse_attention(q, k, v, heads)
    return override


def install_override(patch: SparsePatch, transformer_options: dict) -> None:
    """On top of whatever override is on the hook; nothing to do when this patch's own is on top."""
    current = transformer_options.get("optimized_attention_override")
    if current in patch.installed:
        return
    override = make_override(patch, current)
    patch.installed.add(override)
    transformer_options["optimized_attention_override"] = override


def prepare_state_passes_model_options() -> bool:
    """ComfyUI 0.33's ModelPatcher.prepare_state(timestep, model_options); 0.3.64's takes the timestep only."""
    import comfy.model_patcher
    return "model_options" in inspect.signature(comfy.model_patcher.ModelPatcher.prepare_state).parameters


class UltraGenTestSparseAttention:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"model": ("MODEL",), "key": ("STRING", {"default": "sparse"}),
                             "min_tokens": ("INT", {"default": 12288, "min": 0, "max": 1 << 20}),
                             "dense_blocks": ("STRING", {"default": ""})}}

    RETURN_TYPES = ("MODEL",)
    FUNCTION = "patch"
    CATEGORY = "UltraGen/tests"

    def patch(self, model, key, min_tokens, dense_blocks):
        import comfy.patcher_extension
        patch = SparsePatch(key, min_tokens, {int(b) for b in dense_blocks.split(",") if b.strip()})
        m = model.clone()
        install_override(patch, m.model_options.setdefault("transformer_options", {}))
        if prepare_state_passes_model_options():
            m.add_callback_with_key(comfy.patcher_extension.CallbacksMP.ON_PREPARE_STATE, "test_sparse_attention",
                                    lambda patcher, timestep, model_options:
                                    install_override(patch, model_options["transformer_options"]))
        return (m,)


NODE_CLASS_MAPPINGS = {"UltraGenTestSparseAttention": UltraGenTestSparseAttention}
