"""The fidelity bench's own ComfyUI nodes (loaded into ComfyUI by bench/fidelity/sampling.py; never shipped
in the pack): the text context the bench model was trained with, in place of a text encoder (zeros, or the
captions of held-out scenes: captions.py); a latent read from a file (bench/fidelity/grain.py feeds noised
ground truth through ComfyUI's sampler); and Sol-Attn, the block-sparse attention of ComfyUI's core "Model
Sparse Attention" node, for the table's peer row on ComfyUI trees older than that node."""
from __future__ import annotations

import sys
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.append(str(HERE))
import captions  # noqa: E402
import scenes  # noqa: E402

TEXT_DIM = captions.TEXT_DIM  # Wan's T5 width; bench/fidelity/train.py trains with the same context shape


class UltraGenFidelityContext:
    """The bench model's text context: zeros (1 token of Wan's 4096-wide text space; the unconditional model's
    only context, and a captioned model's empty caption), or with ``caption_seed`` >= 0 the captions of the
    held-out scenes scenes.sample_scenes(caption_seed, first + count)[first:], one per video of the batch."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {}, "optional": {
            "caption_seed": ("INT", {"default": -1, "min": -1, "max": 2 ** 31 - 1,
                                     "tooltip": "-1: the empty context (zeros); else the scenes' seed"}),
            "first": ("INT", {"default": 0, "min": 0, "max": 100_000, "tooltip": "the first scene's index"}),
            "count": ("INT", {"default": 1, "min": 1, "max": 4096, "tooltip": "scenes: one per video"}),
            "frames": ("INT", {"default": scenes.FRAMES, "min": 1, "max": 64, "tooltip": "the videos' frames"})}}

    RETURN_TYPES = ("CONDITIONING",)
    FUNCTION = "make"
    CATEGORY = "UltraGen/bench"

    def make(self, caption_seed=-1, first=0, count=1, frames=scenes.FRAMES):
        if caption_seed < 0:
            return ([[torch.zeros(1, 1, TEXT_DIM), {}]],)
        chosen = scenes.sample_scenes(caption_seed, first + count, frames)[first:]
        return ([[captions.encode(captions.of_scenes(chosen, frames)), {}]],)  # (count, 3, 4096)


class UltraGenFidelityLatentFile:
    """A latent (B, C, T, H, W) saved with torch.save at ``path``."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"path": ("STRING", {"default": ""})}}

    RETURN_TYPES = ("LATENT",)
    FUNCTION = "load"
    CATEGORY = "UltraGen/bench"

    def load(self, path):
        return ({"samples": torch.load(path, map_location="cpu")},)


# ComfyUI's core "Model Sparse Attention" node (comfy_extras/nodes_sparse_attention.py, ComfyUI 0.34+; read
# at 0.38.1) with its defaults for method sol-attn: comfy_kitchen.sol_attn(q, k, v, tau=1.3, topk_ratio=0,
# token_aug=256) on (B, N, heads, 128) bf16 / fp16 CUDA tensors, installed as optimized_attention_override,
# dense before 20% of the schedule and below 12,288 tokens, masked / cross-attention calls dense. Off CUDA the
# core node runs dense (comfy_kitchen 0.2.40's eager reference sol_attn runs on the CPU, but the node never
# calls it there), so the bench skips the row instead of measuring what no user runs.
SOL_TAU, SOL_EXTRA_TOKENS, SOL_START, SOL_MIN_TOKENS, SOL_HEAD_DIM = 1.3, 256, 0.2, 12288, 128


def sol_attn_unavailable(device=None) -> str | None:
    """None, or why comfy_kitchen's sol_attn cannot run here (the bench's Sol-Attn row is then skipped)."""
    try:
        import comfy_kitchen as ck
    except ImportError:
        return "comfy_kitchen is not installed (Sol-Attn needs comfy-kitchen >= 0.2.33 with CUDA kernels)"
    if not hasattr(ck, "sol_attn"):
        from importlib.metadata import version
        return f"comfy_kitchen {version('comfy-kitchen')} has no sol_attn (needs >= 0.2.33)"
    if not torch.cuda.is_available():
        return "sol_attn is a CUDA kernel and there is no CUDA device"
    device = device or torch.device("cuda")
    if hasattr(ck, "sol_attn_is_available") and not ck.sol_attn_is_available(device):
        return f"comfy_kitchen has no compiled sol_attn kernel for {torch.cuda.get_device_name(device)}"
    return None


def sol_attn_override(sigma_start: float, previous=None):
    """An optimized_attention_override that runs eligible self-attention calls through comfy_kitchen.sol_attn
    and every other call through ``previous`` (or ComfyUI's own attention ``func``)."""
    import comfy_kitchen as ck

    def override(func, q, k, v, heads, mask=None, attn_precision=None, skip_reshape=False,
                 skip_output_reshape=False, **kwargs):
        def dense():
            kw = dict(mask=mask, attn_precision=attn_precision, skip_reshape=skip_reshape,
                      skip_output_reshape=skip_output_reshape, **kwargs)
            return func(q, k, v, heads, **kw) if previous is None else previous(func, q, k, v, heads, **kw)

        options = kwargs.get("transformer_options") or {}
        sigmas = options.get("sigmas")
        tokens = q.shape[2] if skip_reshape else q.shape[1]
        eligible = mask is None and tokens >= SOL_MIN_TOKENS and q.shape == k.shape == v.shape \
            and q.device.type == "cuda" and (sigmas is None or float(sigmas[0]) <= sigma_start)
        if not eligible:
            return dense()
        if skip_reshape:  # (B, heads, N, D)
            b, _, _, d = q.shape
            qs, ks, vs = (t.transpose(1, 2) for t in (q, k, v))  # (B, N, heads, D)
        else:  # (B, N, heads * D)
            b, d = q.shape[0], q.shape[-1] // heads
            qs, ks, vs = (t.view(b, -1, heads, d) for t in (q, k, v))  # (B, N, heads, D)
        if d != SOL_HEAD_DIM:
            return dense()
        if qs.dtype == torch.float32:
            qs, ks, vs = (t.to(torch.bfloat16) for t in (qs, ks, vs))
        out = ck.sol_attn(qs, ks, vs, tau=SOL_TAU, scale=kwargs.get("scale"), topk_ratio=0.0,
                          token_aug=SOL_EXTRA_TOKENS).to(q.dtype)  # (B, N, heads, D)
        return out.transpose(1, 2) if skip_output_reshape else out.reshape(b, -1, heads * d)

    return override


class UltraGenFidelitySolAttn:
    """The model with Sol-Attn block-sparse attention, as ComfyUI's Model Sparse Attention node applies it
    (defaults, method sol-attn). Raises when comfy_kitchen's kernel cannot run (the bench skips the row)."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"model": ("MODEL",)}}

    RETURN_TYPES = ("MODEL",)
    FUNCTION = "patch"
    CATEGORY = "UltraGen/bench"

    def patch(self, model):
        why = sol_attn_unavailable()
        if why is not None:
            raise RuntimeError(f"Sol-Attn cannot run: {why}.")
        sigma_start = float(model.get_model_object("model_sampling").percent_to_sigma(SOL_START))
        m = model.clone()
        options = m.model_options["transformer_options"]
        options["optimized_attention_override"] = sol_attn_override(
            sigma_start, options.get("optimized_attention_override"))
        return (m,)


NODE_CLASS_MAPPINGS = {"UltraGenFidelityContext": UltraGenFidelityContext,
                       "UltraGenFidelityLatentFile": UltraGenFidelityLatentFile,
                       "UltraGenFidelitySolAttn": UltraGenFidelitySolAttn}
