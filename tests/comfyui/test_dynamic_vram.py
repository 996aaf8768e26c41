"""ComfyUI 0.33's dynamic VRAM (ModelPatcherDynamic with comfy-aimdo, its default loader path on CUDA)
with the patch and with checkpoint mode's extra weights.

Runs where ComfyUI loads diffusion models dynamically: on a CUDA machine with ULTRAGEN_TEST_DEVICE=cuda
(the harness then leaves ComfyUI its own device choice); skipped elsewhere, saying why.
"""
import pytest
import torch

from test_apply import LOCAL_ONLY, WAN_T2V, model_file, run, sample_prompt, settings
from test_checkpoint_mode import files, prompt  # noqa: F401  (files: the module's checkpoint fixture)


def require_dynamic(comfy, name):
    import comfy.sd as comfy_sd
    model = comfy_sd.load_diffusion_model(str(comfy.models_dir / "diffusion_models" / name))
    if not (hasattr(model, "is_dynamic") and model.is_dynamic()):
        pytest.skip(f"ComfyUI loads this model with {type(model).__name__}, not dynamic VRAM "
                    "(needs ComfyUI 0.33+ on CUDA with ULTRAGEN_TEST_DEVICE=cuda)")
    return model


def test_the_patch_on_a_dynamically_loaded_model(comfy):
    name = model_file(comfy, WAN_T2V)
    model = require_dynamic(comfy, name)
    apply_node = comfy.nodes.NODE_CLASS_MAPPINGS["UltraGenApply"]
    assert apply_node.execute(model=model).args[0].is_dynamic()  # the clone keeps dynamic loading
    plain = run(comfy, sample_prompt(name))
    same = run(comfy, sample_prompt(name, settings(window=(64, 64, 64), **LOCAL_ONLY)))
    windowed = run(comfy, sample_prompt(name, settings(window=(1, 4, 4))))
    # on the GPU the model runs in half precision: the identity patch matches within its rounding (on the
    # CPU it is bit-identical, test_apply), and the windows change the result by far more than that
    rounding = float((same - plain).abs().mean())
    assert rounding < 1e-2 and torch.isfinite(windowed).all()
    assert float((windowed - plain).abs().mean()) > 10 * max(rounding, 1e-4)


def test_checkpoint_extras_on_a_dynamically_loaded_model(comfy, files):  # noqa: F811
    """The extras are an additional model that the sampler loads beside the dynamically loaded base."""
    require_dynamic(comfy, "ug_stock.safetensors")
    a = run(comfy, prompt("ug_stock.safetensors", "ug_full.ckpt", "dyn_a"), "dyn_a")
    b = run(comfy, prompt("ug_full.ckpt", "ug_extras.safetensors", "dyn_b"), "dyn_b")
    stock = run(comfy, prompt("ug_stock.safetensors", "ug_extras.safetensors", "dyn_c"), "dyn_c")
    assert torch.isfinite(a).all()
    torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-4)  # the same weights, reached two ways
    assert (stock - a).abs().max() > 1e-4  # the file's base weight was applied on the dynamic model
