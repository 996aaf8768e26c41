"""Test-only ComfyUI node for the Kandinsky 5 tests (loaded as a custom node file by those tests; never shipped in
the pack): text conditioning as ComfyUI's Kandinsky 5 text encoder returns it, Qwen2.5-VL hidden states (3584 wide)
and the CLIP pooled output (768 wide)."""
import torch


class UltraGenTestKandinskyConditioning:
    """Random text embeddings (1, tokens, 3584) with a random ``pooled_output`` (1, 768)."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"seed": ("INT", {"default": 0, "min": 0, "max": 2**31}),
                             "tokens": ("INT", {"default": 8, "min": 1, "max": 512})}}

    RETURN_TYPES = ("CONDITIONING",)
    FUNCTION = "make"
    CATEGORY = "UltraGen/tests"

    def make(self, seed, tokens):
        gen = torch.Generator().manual_seed(seed)
        text = torch.randn(1, tokens, 3584, generator=gen)
        return ([[text, {"pooled_output": torch.randn(1, 768, generator=gen)}]],)


NODE_CLASS_MAPPINGS = {"UltraGenTestKandinskyConditioning": UltraGenTestKandinskyConditioning}
