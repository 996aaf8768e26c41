"""Test-only ComfyUI nodes for the HunyuanVideo tests (loaded as a custom node file by those tests; never
shipped in the pack): text conditioning with the padding mask HunyuanVideo's text encoders return."""
import torch


class UltraGenTestHunyuanConditioning:
    """Random text embeddings (B=1, tokens, 4096) whose last ``padding`` tokens are padding: an
    ``attention_mask`` (1, tokens) of ones with zeros there, as ComfyUI's Qwen / LLaMA encoders return it."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"seed": ("INT", {"default": 0, "min": 0, "max": 2**31}),
                             "tokens": ("INT", {"default": 8, "min": 1, "max": 512}),
                             "padding": ("INT", {"default": 0, "min": 0, "max": 511})}}

    RETURN_TYPES = ("CONDITIONING",)
    FUNCTION = "make"
    CATEGORY = "UltraGen/tests"

    def make(self, seed, tokens, padding):
        gen = torch.Generator().manual_seed(seed)
        extra = {"pooled_output": None}  # HunyuanVideo reads it (the 1.5 models have no vector input)
        if padding:
            mask = torch.ones(1, tokens, dtype=torch.long)
            mask[:, tokens - padding:] = 0
            extra["attention_mask"] = mask
        return ([[torch.randn(1, tokens, 4096, generator=gen), extra]],)


NODE_CLASS_MAPPINGS = {"UltraGenTestHunyuanConditioning": UltraGenTestHunyuanConditioning}
