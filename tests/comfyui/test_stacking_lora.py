"""UltraGen with a LoRA (LoraLoaderModelOnly) in the step-distilled recipe (4 steps, cfg 1): the two compose in
either order, and the patched output is the patched output of the LoRA-merged weights."""
import torch

from test_apply import WAN_T2V, model_file, run, settings
from test_stacking_attention import stacked, ultragen

LORA_TARGETS = ("self_attn.q", "self_attn.k", "self_attn.v", "self_attn.o", "cross_attn.q", "cross_attn.o",
                "ffn.0", "ffn.2")  # what Wan step-distillation LoRAs train (lightx2v and similar)
RANK, ALPHA = 4, 2.0
DISTILLED = dict(steps=4, cfg=1.0)
WINDOWS = settings(window=(1, 4, 4))


def lora_weights(base: dict[str, torch.Tensor], seed: int = 7) -> dict[str, torch.Tensor]:
    """A random rank-4 LoRA for ``base`` in ComfyUI's generic key format (``diffusion_model.<layer>.lora_up``)."""
    gen = torch.Generator().manual_seed(seed)
    lora = {}
    blocks = sorted({int(k.split(".")[1]) for k in base if k.startswith("blocks.")})
    for b in blocks:
        for target in LORA_TARGETS:
            out_dim, in_dim = base[f"blocks.{b}.{target}.weight"].shape
            key = f"diffusion_model.blocks.{b}.{target}"
            lora[f"{key}.lora_down.weight"] = torch.randn(RANK, in_dim, generator=gen) / in_dim ** 0.5
            lora[f"{key}.lora_up.weight"] = 0.5 * torch.randn(out_dim, RANK, generator=gen) / RANK ** 0.5
            lora[f"{key}.alpha"] = torch.tensor(ALPHA)
    return lora


def merged(base: dict[str, torch.Tensor], lora: dict[str, torch.Tensor], strength: float) -> dict[str, torch.Tensor]:
    """W + strength * alpha / rank * up @ down: the weights the LoRA makes."""
    out = dict(base)
    for key in lora:
        if key.endswith(".lora_up.weight"):
            layer = key[len("diffusion_model."):-len(".lora_up.weight")]
            stem = key[:-len(".lora_up.weight")]
            delta = lora[key] @ lora[f"{stem}.lora_down.weight"] * (float(lora[f"{stem}.alpha"]) / RANK)
            out[f"{layer}.weight"] = base[f"{layer}.weight"] + strength * delta
    return out


def lora_folder(comfy):
    """models/loras of the test runtime, registered with ComfyUI."""
    import folder_paths
    loras = comfy.models_dir / "loras"
    loras.mkdir(exist_ok=True)
    if str(loras) not in folder_paths.get_folder_paths("loras"):
        folder_paths.add_model_folder_path("loras", str(loras), is_default=True)
    return loras


def lora_files(comfy, strength: float = 0.8) -> tuple[str, str, str]:
    """(the base model, the LoRA, the base with the LoRA merged in at ``strength``) file names."""
    from safetensors.torch import load_file, save_file
    base_name = model_file(comfy, WAN_T2V)
    loras = lora_folder(comfy)
    merged_name = f"tiny_wan_t2v_lora_merged_{strength}.safetensors"
    if not (loras / "tiny_wan_distill_lora.safetensors").exists():
        base = load_file(str(comfy.models_dir / "diffusion_models" / base_name))
        lora = lora_weights(base)
        save_file(lora, str(loras / "tiny_wan_distill_lora.safetensors"))
    merged_path = comfy.models_dir / "diffusion_models" / merged_name
    if not merged_path.exists():
        base = load_file(str(comfy.models_dir / "diffusion_models" / base_name))
        save_file(merged(base, load_file(str(loras / "tiny_wan_distill_lora.safetensors")), strength), str(merged_path))
    return base_name, "tiny_wan_distill_lora.safetensors", merged_name


def lora(name: str, strength: float) -> list[tuple[str, dict]]:
    return [("lora", {"class_type": "LoraLoaderModelOnly", "inputs": {"lora_name": name, "strength_model": strength}})]


def test_ultragen_and_a_lora_compose_in_either_order_in_the_distilled_recipe(comfy):
    base, lora_name, merged_name = lora_files(comfy, 0.8)
    lora_first = run(comfy, stacked(base, lora(lora_name, 0.8), ultragen(WINDOWS), **DISTILLED))
    ultragen_first = run(comfy, stacked(base, ultragen(WINDOWS), lora(lora_name, 0.8), **DISTILLED))
    torch.testing.assert_close(ultragen_first, lora_first, rtol=1e-6, atol=1e-6)
    # the LoRA's effect is in the patched output: it is the patched output of the merged weights
    of_merged = run(comfy, stacked(merged_name, ultragen(WINDOWS), **DISTILLED))
    torch.testing.assert_close(lora_first, of_merged, rtol=1e-5, atol=1e-5)
    without = run(comfy, stacked(base, ultragen(WINDOWS), **DISTILLED))
    assert (lora_first - without).abs().mean() > 100 * (lora_first - of_merged).abs().max()
    # and the patch is in the LoRA model's output: LoRA alone is not the same
    lora_alone = run(comfy, stacked(base, lora(lora_name, 0.8), **DISTILLED))
    assert not torch.allclose(lora_alone, lora_first, atol=1e-4)


def test_a_lora_on_a_streamed_patched_model(comfy):
    """Below the memory budget the blocks stream: LoRA weights (patched into the layers by ComfyUI) still apply."""
    from test_memory_budget import TINY_BUDGET, budget
    base, lora_name, merged_name = lora_files(comfy, 0.8)
    cfg = budget(settings(window=(1, 4, 4)), TINY_BUDGET)
    streamed = run(comfy, stacked(base, ultragen(cfg), lora(lora_name, 0.8), **DISTILLED))
    of_merged = run(comfy, stacked(merged_name, ultragen(WINDOWS), **DISTILLED))
    torch.testing.assert_close(streamed, of_merged, rtol=1e-5, atol=1e-5)
