"""Test-only ComfyUI nodes for the HunyuanVideo tests (loaded as a custom node file by those tests; never
shipped in the pack): text conditioning with the padding mask HunyuanVideo's text encoders return, and the
image-to-video inputs (SigLIP vision tokens, the image latent) HunyuanVideo 1.5's I2V node adds."""
from types import SimpleNamespace

import torch


class UltraGenTestHunyuanConditioning:
    """Random text embeddings (B=1, tokens, 4096) whose last ``padding`` tokens are padding: an
    ``attention_mask`` (1, tokens) of ones with zeros there, as ComfyUI's Qwen / LLaMA encoders return it."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"seed": ("INT", {"default": 0, "min": 0, "max": 2**31}),
                             "tokens": ("INT", {"default": 8, "min": 1, "max": 512}),
                             "padding": ("INT", {"default": 0, "min": 0, "max": 511})},
                "optional": {"vision_tokens": ("INT", {"default": 0, "min": 0, "max": 729}),
                             "pooled": ("BOOLEAN", {"default": False}),
                             "image_latent": ("LATENT",)}}

    RETURN_TYPES = ("CONDITIONING",)
    FUNCTION = "make"
    CATEGORY = "UltraGen/tests"

    def make(self, seed, tokens, padding, vision_tokens=0, image_latent=None, pooled=False):
        gen = torch.Generator().manual_seed(seed)
        # HunyuanVideo reads it: the original model's CLIP-L vector (768), the 1.5 models have no vector input
        extra = {"pooled_output": torch.randn(1, 768, generator=gen) if pooled else None}
        if padding:
            mask = torch.ones(1, tokens, dtype=torch.long)
            mask[:, tokens - padding:] = 0
            extra["attention_mask"] = mask
        if vision_tokens:  # as a CLIP vision encode returns it: ComfyUI puts them before the text
            extra["clip_vision_output"] = SimpleNamespace(
                last_hidden_state=torch.randn(1, vision_tokens, 1152, generator=gen))
        if image_latent is not None:  # the I2V image latent, concatenated to the noise's channels
            extra["concat_latent_image"] = image_latent["samples"]
        return ([[torch.randn(1, tokens, 4096, generator=gen), extra]],)


class UltraGenTestBlockReplace:
    """Replaces a double block through ``patches_replace["dit"]`` as other packs do (e.g. caching packs): the
    replacement calls ComfyUI's ``original_block`` (pass_through), or skips the block (returns its inputs)."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"model": ("MODEL",), "block": ("INT", {"default": 0, "min": 0, "max": 99}),
                             "pass_through": ("BOOLEAN", {"default": True})}}

    RETURN_TYPES = ("MODEL",)
    FUNCTION = "patch"
    CATEGORY = "UltraGen/tests"

    def patch(self, model, block, pass_through):
        def replace(args, extra):
            if pass_through:
                return extra["original_block"](args)
            return {"img": args["img"], "txt": args["txt"]}
        model = model.clone()
        model.set_model_patch_replace(replace, "dit", "double_block", block)
        return (model,)


NODE_CLASS_MAPPINGS = {c.__name__: c for c in (UltraGenTestHunyuanConditioning, UltraGenTestBlockReplace)}
