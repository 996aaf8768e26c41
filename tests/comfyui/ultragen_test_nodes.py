"""Test-only ComfyUI nodes (loaded as a custom node file by the tests; never shipped in the pack).

They stand in for what cannot run here (a text encoder) and let tests read results back.
"""
import torch

CAPTURED: dict = {}


class UltraGenTestConditioning:
    """Random text embeddings (Wan's 4096-wide T5 space), optionally with extra Wan conditioning."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"seed": ("INT", {"default": 0, "min": 0, "max": 2**31}),
                             "tokens": ("INT", {"default": 8, "min": 1, "max": 512})},
                "optional": {"time_dim_concat": ("LATENT",), "reference_latent": ("LATENT",),
                             "context_latent": ("LATENT",)}}

    RETURN_TYPES = ("CONDITIONING",)
    FUNCTION = "make"
    CATEGORY = "UltraGen/tests"

    def make(self, seed, tokens, time_dim_concat=None, reference_latent=None, context_latent=None):
        gen = torch.Generator().manual_seed(seed)
        extra = {}
        if time_dim_concat is not None:
            extra["time_dim_concat"] = time_dim_concat["samples"]
        if reference_latent is not None:
            extra["reference_latents"] = [reference_latent["samples"]]
        if context_latent is not None:  # ComfyUI 0.33's in-context latents (appended after the video tokens)
            extra["context_latents"] = [context_latent["samples"]]
        return ([[torch.randn(1, tokens, 4096, generator=gen), extra]],)


FILLS = ("random", "nan", "half_nan", "inf", "huge")


def filled(samples: torch.Tensor, how: str) -> torch.Tensor:
    """Random values, or broken ones: all NaN, the first half NaN, all +inf, or about 1e30."""
    if how == "nan":
        samples.fill_(float("nan"))
    elif how == "half_nan":
        samples.view(-1)[:samples.numel() // 2] = float("nan")
    elif how == "inf":
        samples.fill_(float("inf"))
    elif how == "huge":
        samples.mul_(1e30)
    return samples


class UltraGenTestLatent:
    """A random video latent (B, C, T, H, W), with an optional bump in one corner; frames, height or width 0
    and the broken fills make the bad latents the input-check tests queue."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"seed": ("INT", {"default": 0, "min": 0, "max": 2**31}),
                             "channels": ("INT", {"default": 16, "min": 1, "max": 128}),
                             "frames": ("INT", {"default": 2, "min": 0, "max": 64}),
                             "height": ("INT", {"default": 16, "min": 0, "max": 512}),
                             "width": ("INT", {"default": 16, "min": 0, "max": 512}),
                             "batch": ("INT", {"default": 1, "min": 1, "max": 8}),
                             "corner_bump": ("FLOAT", {"default": 0.0, "min": -100.0, "max": 100.0})},
                "optional": {"fill": (list(FILLS), {"default": "random"})}}

    RETURN_TYPES = ("LATENT",)
    FUNCTION = "make"
    CATEGORY = "UltraGen/tests"

    def make(self, seed, channels, frames, height, width, batch, corner_bump, fill="random"):
        gen = torch.Generator().manual_seed(seed)
        samples = torch.randn(batch, channels, frames, height, width, generator=gen)
        if samples.numel():
            samples[:, :, 0, :2, :2] += corner_bump
        return ({"samples": filled(samples, fill)},)


class UltraGenTestImage:
    """A random IMAGE batch (frames, H, W, 3) in 0..1, empty or broken as UltraGenTestLatent's."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"seed": ("INT", {"default": 0, "min": 0, "max": 2**31}),
                             "frames": ("INT", {"default": 2, "min": 0, "max": 64}),
                             "height": ("INT", {"default": 16, "min": 0, "max": 512}),
                             "width": ("INT", {"default": 16, "min": 0, "max": 512}),
                             "fill": (list(FILLS), {"default": "random"})}}

    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "make"
    CATEGORY = "UltraGen/tests"

    def make(self, seed, frames, height, width, fill):
        gen = torch.Generator().manual_seed(seed)
        return (filled(torch.rand(frames, height, width, 3, generator=gen), fill),)


class AnyType(str):
    """A socket type every other type connects to (ComfyUI compares types with !=)."""

    def __ne__(self, other):
        return False


class UltraGenTestSink:
    """An output node for any value: records that it ran (CAPTURED["sink"]), so a test sees what executed."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"value": (AnyType("*"),), "key": ("STRING", {"default": "sink"})}}

    RETURN_TYPES = ()
    FUNCTION = "take"
    OUTPUT_NODE = True
    CATEGORY = "UltraGen/tests"

    def take(self, value, key):
        CAPTURED.setdefault(key, []).append(value)
        return {}


class UltraGenTestCapture:
    """Keeps a latent in CAPTURED[key] for the test to read."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"samples": ("LATENT",), "key": ("STRING", {"default": "out"})}}

    RETURN_TYPES = ()
    FUNCTION = "capture"
    OUTPUT_NODE = True
    CATEGORY = "UltraGen/tests"

    def capture(self, samples, key):
        CAPTURED[key] = samples["samples"].clone()
        return {}


class UltraGenTestCaptureImage:
    """Keeps an IMAGE batch in CAPTURED[key] for the test to read."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"images": ("IMAGE",), "key": ("STRING", {"default": "image"})}}

    RETURN_TYPES = ()
    FUNCTION = "capture"
    OUTPUT_NODE = True
    CATEGORY = "UltraGen/tests"

    def capture(self, images, key):
        CAPTURED[key] = images.clone()
        return {}


class UltraGenTestAttentionProbe:
    """Sets an optimized_attention_override (as attention-kernel packs do) that records the shapes it sees."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"model": ("MODEL",), "key": ("STRING", {"default": "probe"})}}

    RETURN_TYPES = ("MODEL",)
    FUNCTION = "patch"
    CATEGORY = "UltraGen/tests"

    def patch(self, model, key):
        seen = CAPTURED.setdefault(key, [])

        def override(func, *args, **kwargs):
            seen.append((*args[0].shape, args[1].shape[1]))  # (B, Lq, C, Lk)
            return func(*args, **kwargs)

        model = model.clone()
        model.model_options.setdefault("transformer_options", {})["optimized_attention_override"] = override
        return (model,)


class UltraGenTestAttn1Patch:
    """Adds an attn1_patch (as ComfyUI's own patches do) that keeps the q / k of each call and scales x."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"model": ("MODEL",), "key": ("STRING", {"default": "attn1"}),
                             "scale": ("FLOAT", {"default": 1.0, "min": -10.0, "max": 10.0})}}

    RETURN_TYPES = ("MODEL",)
    FUNCTION = "patch"
    CATEGORY = "UltraGen/tests"

    def patch(self, model, key, scale):
        seen = CAPTURED.setdefault(key, [])

        def attn1(args):
            seen.append((args["x"].shape, args["q"].clone(), args["k"].clone()))
            return args["x"] * scale

        model = model.clone()
        model.set_model_attn1_patch(attn1)
        return (model,)


class UltraGenTestSplitOnCPU:
    """UltraGen Split Video Across GPUs over ``ranks`` simulated devices (all the CPU). ``fail_rank`` > 0 makes
    that rank's clone fail in block 1's cross-attention."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"model": ("MODEL",), "ranks": ("INT", {"default": 2, "min": 2, "max": 8}),
                             "fail_rank": ("INT", {"default": 0, "min": 0, "max": 8})}}

    RETURN_TYPES = ("MODEL",)
    FUNCTION = "make"
    CATEGORY = "UltraGen/tests"

    def make(self, model, ranks, fail_rank):
        import comfy.multigpu
        from ultragen_core.families.wan.wan_split import OneDevice, enable_split
        clones = [model.deepclone_multigpu(new_load_device=torch.device("cpu")) for _ in range(ranks - 1)]
        if fail_rank:
            def fail(*args, **kwargs):
                raise RuntimeError(f"simulated failure on rank {fail_rank}")
            clones[fail_rank - 1].model.diffusion_model.blocks[1].cross_attn.forward = fail
        patched = model.clone()
        patched.set_additional_models("ultragen_test_split", clones)  # loaded (and patched) with the model
        CAPTURED["split"] = setup = OneDevice(clones, torch.device("cpu"),
                                              lambda d: comfy.multigpu.MultiGPUThreadPool([d]))
        return (enable_split(patched, setup),)


NODE_CLASS_MAPPINGS = {c.__name__: c for c in (UltraGenTestConditioning, UltraGenTestLatent, UltraGenTestImage,
                                               UltraGenTestSink, UltraGenTestCapture,
                                               UltraGenTestCaptureImage, UltraGenTestAttentionProbe,
                                               UltraGenTestAttn1Patch, UltraGenTestSplitOnCPU)}
