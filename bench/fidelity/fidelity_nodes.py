"""The fidelity bench's own ComfyUI node (loaded into ComfyUI by bench/fidelity/evaluate.py; never shipped
in the pack): the fixed text context the bench model was trained with, in place of a text encoder."""
import torch

TEXT_DIM = 4096  # Wan's T5 width; bench/fidelity/train.py trains with the same (1, 1, 4096) zeros


class UltraGenFidelityContext:
    """Conditioning of zeros (1 token of Wan's 4096-wide text space): the bench model is unconditional."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {}}

    RETURN_TYPES = ("CONDITIONING",)
    FUNCTION = "make"
    CATEGORY = "UltraGen/bench"

    def make(self):
        return ([[torch.zeros(1, 1, TEXT_DIM), {}]],)


NODE_CLASS_MAPPINGS = {"UltraGenFidelityContext": UltraGenFidelityContext}
