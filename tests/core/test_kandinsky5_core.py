"""The Kandinsky 5 family without ComfyUI: which member of the shared class a config is, the refusals, NABLA found
on stand-ins, the registry entry and its sizes, and the rebuild's pieces (RoPE rows, chunked output) on tensors."""
import pytest
import torch

from ultragen_core import api
from ultragen_core.families.kandinsky5.kandinsky5 import token_grid
from ultragen_core.families.kandinsky5.kandinsky5_attention import freqs_select, output
from ultragen_core.families.kandinsky5.variants import REFUSED, Variant, nabla_found, refusal, variant_of
from ultragen_core.families.registry import Capability, family_of
from ultragen_core.models import FAMILIES, KANDINSKY5_LITE, KANDINSKY5_PRO

LITE = dict(model_dim=1792, visual_embed_dim=132, patch_size=(1, 2, 2))


def fake_model(cls_name="Kandinsky5", **config):
    """A stand-in with the class name and module of ComfyUI's Kandinsky5 and its config attributes."""
    dm = type(cls_name, (), {"__module__": "comfy.ldm.kandinsky5.model"})()
    dm.__dict__.update(config)
    return dm


@pytest.mark.parametrize("config,variant", [
    (LITE, Variant.VIDEO_LITE),
    (dict(LITE, model_dim=4096), Variant.VIDEO_PRO),
    (dict(LITE, model_dim=128), Variant.VIDEO_LITE),  # the tiny test models: Lite's facts
    (dict(LITE, model_dim=2560, visual_embed_dim=64), Variant.IMAGE_LITE),
    (dict(LITE, visual_embed_dim=100), Variant.OTHER),
])
def test_the_variant_comes_from_the_config(config, variant):
    dm = fake_model(**config)
    assert variant_of(dm) is variant
    if variant in (Variant.VIDEO_LITE, Variant.VIDEO_PRO):
        assert refusal(dm) is None and family_of(dm).name == "Kandinsky 5"
    else:
        assert refusal(dm).startswith(REFUSED[variant])
        assert f"visual_embed_dim {config['visual_embed_dim']}" in refusal(dm)
        with pytest.raises(NotImplementedError,
                           match=r"UltraGen does not patch Kandinsky5 \(comfy.ldm.kandinsky5.model\)"):
            family_of(dm)


def test_facts_and_resolution_names():
    assert api.model_facts(fake_model(**LITE)) is KANDINSKY5_LITE
    assert api.model_facts(fake_model(**dict(LITE, model_dim=4096))) is KANDINSKY5_PRO
    assert KANDINSKY5_LITE.native_grid == (31, 32, 48)  # 768x512 x 121 frames: 8x VAE, patch 1x2x2
    assert KANDINSKY5_PRO.native_grid == (31, 48, 80)
    assert list(FAMILIES)[10:12] == ["Kandinsky 5 Video Lite", "Kandinsky 5 Video Pro"]  # appended: workflows hold names
    entry = api.family_named("Kandinsky 5")
    assert entry.can_run(Capability.WINDOWS_GLOBAL, fake_model(**LITE)) is None
    for capability in (Capability.SPLIT, Capability.PROXY, Capability.STREAMING, Capability.CHECKPOINT):
        assert f"UltraGen {capability.value} is not available for Kandinsky5" in entry.can_run(capability,
                                                                                                fake_model(**LITE))
    assert entry.patch_module().__name__.endswith("families.kandinsky5.kandinsky5")


def test_an_unknown_class_of_the_package_is_refused_not_guessed():
    with pytest.raises(NotImplementedError, match=r"does not patch Kandinsky6 \(comfy.ldm.kandinsky5.model\): it is a "
                                                  r"Kandinsky 5 variant this version of the pack does not know"):
        family_of(fake_model("Kandinsky6", **LITE))


class Attention:  # stand-in of a visual self-attention module
    pass


@pytest.mark.parametrize("where,value,found", [
    ("options", {"nabla": {"P": 0.9}}, "transformer_options['nabla'] is set (dict)"),
    ("options", {"sparse_params": {"wT": 11}}, "transformer_options['sparse_params'] is set"),
    ("model", {"attention_type": "nabla"}, "the diffusion model has attention_type = 'nabla'"),
    ("model", {"sparse_attention": True}, "the diffusion model has 'sparse_attention' set (bool)"),
    ("block", {"nabla_mask": torch.zeros(1)}, "visual_transformer_blocks.0.self_attention has 'nabla_mask' set"),
], ids=["options-nabla", "options-sparse-params", "model-attention-type", "model-flag", "module-mask"])
def test_nabla_is_found_on_stand_ins(where, value, found):
    attention = Attention()
    block = type("Block", (), {})()
    block.self_attention = attention
    dm = fake_model(**LITE, visual_transformer_blocks=[block])
    options = value if where == "options" else {}
    if where == "model":
        dm.__dict__.update(value)
    if where == "block":
        attention.__dict__.update(value)
    assert found in nabla_found(dm, options)
    assert "Remove the NABLA option (or node) from this model, or remove UltraGen Apply" in refusal(dm) \
        if where != "options" else refusal(dm) is None


def test_nothing_is_found_without_nabla():
    block = type("Block", (), {})()
    block.self_attention = Attention()
    dm = fake_model(**LITE, visual_transformer_blocks=[block], rope_scale_factor=(1.0, 2.0, 2.0))
    assert nabla_found(dm, {"rope_options": {"scale_x": 0.5}, "nabla": None, "sparse_params": {}}) is None


def test_the_token_grid_pads_to_whole_patches():
    dm = fake_model(**LITE)
    assert token_grid(dm, torch.zeros(1, 16, 31, 64, 96)) == (31, 32, 48)
    assert token_grid(dm, torch.zeros(1, 16, 3, 63, 95)) == (3, 32, 48)  # the model pads the latent
    assert token_grid(dm, torch.zeros(1, 16, 64, 96)) == (1, 32, 48)  # an image latent: one frame


def test_rope_rows_and_the_chunked_output_projection():
    freqs = torch.randn(1, 10, 1, 4, 2, 2)
    tokens = torch.tensor([7, 2, 9])
    assert torch.equal(freqs_select(freqs, tokens), freqs[:, [7, 2, 9]])
    m = type("M", (), {})()
    m.out_layer = torch.nn.Linear(6, 6)
    out = torch.randn(2, 10, 6)
    with torch.no_grad():
        torch.testing.assert_close(output(m, out, 3), m.out_layer(out), rtol=1e-6, atol=1e-6)
