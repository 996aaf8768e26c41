"""The Kandinsky 5 family (ComfyUI's Kandinsky5 class, the video layout) in the real ComfyUI runtime: a tiny
random-weight model of ComfyUI's own class, loaded by ComfyUI's loader, sampled by ComfyUI's sampler. On a ComfyUI
without Kandinsky 5 (0.3.64) every test skips, naming the missing class."""
import logging
from pathlib import Path

import pytest
import torch

from kandinsky5_models import build, load, model_class, model_file, sample, text, token_change, video
from harness import sampled_prompt
from test_apply import reachable

from ultragen_core import api
from ultragen_core.config import AttentionSettings, DualBranchPlan

LOCAL_ONLY = dict(global_branch=False, fusion="local_only")
FLOAT32 = 1e-5  # float32: another order of the same sums (windows batched, rows chunked)
NODES = Path(__file__).with_name("kandinsky5_test_nodes.py")


@pytest.fixture(scope="module")
def k5(comfy):
    """The tiny Kandinsky 5 model as ComfyUI's loader loads it (skips where this ComfyUI has none)."""
    model_class()
    return load(comfy)


def patched(model, **settings):
    return api.apply(model, AttentionSettings(**settings))


def test_at_native_size_or_one_window_the_output_is_comfyuis_bit_for_bit(k5):
    x = video()
    plain = sample(k5, x, cfg=2.0)
    assert torch.equal(plain, sample(patched(k5), x, cfg=2.0))  # automatic: 2x8x8 tokens are below Lite's native
    assert torch.equal(plain, sample(patched(k5, window=(64, 64, 64), **LOCAL_ONLY), x, cfg=2.0))
    windowed = sample(patched(k5, window=(1, 4, 4)), x, cfg=2.0)
    assert not torch.allclose(plain, windowed, atol=1e-4)  # the patch really changes attention
    assert torch.isfinite(windowed).all()


ROPE_OPTIONS = {"scale_x": 0.5, "scale_y": 0.75, "scale_t": 1.0, "shift_x": 3.0, "shift_y": 0.0, "shift_t": 1.0}


@pytest.mark.parametrize("grid,options", [
    ((3, 8, 12), {}),
    ((3, 8, 12), {"rope_options": ROPE_OPTIONS}),
    ((1, 96, 96), {}),  # 9216 tokens: ComfyUI computes q / k in two chunks of tokens
], ids=["model-rope", "rope_options", "above-8192-tokens"])
def test_one_window_over_the_grid_through_the_patch_equals_comfyuis_attention(k5, grid, options):
    """The full-attention limit through the patched path (not its shortcut): q / k / v from the module's parts,
    every token's row of the RoPE table the model computes for the call (its rope_scale_factor, or rope_options),
    the output projection in chunks of rows; also where ComfyUI chunks q / k itself."""
    from ultragen_core.attention import kernels
    from ultragen_core.families.kandinsky5.kandinsky5 import windowed_self_attention
    from ultragen_core.families.kandinsky5.kandinsky5_attention import model_attention, namespace
    dm = k5.get_model_object("diffusion_model")
    m = dm.visual_transformer_blocks[1].self_attention
    T, H, W = grid
    freqs = dm.rope_encode_3d(T, 2 * H, 2 * W, dtype=torch.float32, transformer_options=options)  # latent size
    n = T * H * W
    assert freqs.shape[1] == n
    x = torch.randn(1, n, dm.model_dim, generator=torch.Generator().manual_seed(0))
    plan = DualBranchPlan(grid, grid, False, 0, "local_only", 1.0)
    attention = kernels.choose(model_attention(m), m.num_heads, {}, x.device, kernels.interface_of(namespace(m), m))
    with torch.no_grad():
        ours = windowed_self_attention(m, x, freqs, plan, 1, attention, 1000, None)
        theirs = type(m).forward(m, x, freqs, transformer_options=options)
    torch.testing.assert_close(ours, theirs, rtol=FLOAT32, atol=FLOAT32)
    if options:  # the positions matter: rope_options give another result than the model's own scale
        with torch.no_grad():
            plain = type(m).forward(m, x, dm.rope_encode_3d(T, 2 * H, 2 * W, dtype=torch.float32))
        assert not torch.allclose(plain, theirs, atol=1e-3)


def test_windows_run_on_the_positions_of_rope_options(k5):
    """rope_options in transformer_options change the positions the model computes; the patched model (windows
    of 1x4x4) follows them: another output than without them, equal to a model whose table is the same."""
    x = video()
    m = patched(k5, window=(1, 4, 4), **LOCAL_ONLY)
    scaled = m.clone()
    scaled.model_options["transformer_options"]["rope_options"] = dict(ROPE_OPTIONS)
    a, b = sample(m, x), sample(scaled, x)
    assert not torch.allclose(a, b, atol=1e-4)
    assert torch.equal(b, sample(scaled, x))  # deterministic: the same table every call


def test_a_corner_change_stays_in_its_windows_and_the_global_branch_carries_it(k5):
    """One step, cfg 1, denoise 0.5 (the input reaches the model): a bump in one corner token may move only the
    tokens its windows reach in two blocks (plain, then shifted); with the global branch most others move too."""
    window, grid = (1, 2, 2), (2, 8, 8)
    outside = torch.ones(grid, dtype=torch.bool)
    for tok in reachable(grid, window, {(0, 0, 0)}):
        outside[tok] = False
    assert 0 < int((~outside).sum()) < outside.numel() // 2

    def change(**extra):
        m = patched(k5, window=window, shift="alternate", **extra)
        return token_change(sample(m, video()), sample(m, video(bump=5.0)))
    local = change(**LOCAL_ONLY)
    assert torch.all(local[outside] == 0), "a token outside the reachable windows changed"
    assert local[~outside].max() > 0
    mixed = change(global_compression=4)
    assert (mixed[outside] > 0).float().mean() > 0.5, "the global branch should carry the change everywhere"


def test_the_text_reaches_every_window(k5):
    """Kandinsky 5 has no tokens besides the video in its self-attention (text enters by cross-attention, left as
    ComfyUI runs it): another prompt changes every token, with windows of 1x2x2 and no global branch."""
    m = patched(k5, window=(1, 2, 2), **LOCAL_ONLY)
    outs = [sample(m, video(), text(seed=s), text(seed=s)) for s in (1, 9)]
    assert token_change(outs[0], outs[1]).min() > 0, "a window does not see the text"


def test_a_tiny_memory_budget_streams_to_the_same_result(k5):
    """memory_budget_gb 0.01: the memory plan's smallest chunk (64 query tokens) instead of all 128 at once;
    equal within float32 rounding."""
    x = video()
    cfg = dict(window=(1, 4, 4), global_compression=2)
    whole = sample(patched(k5, **cfg), x, cfg=2.0)
    streamed = sample(patched(k5, memory_budget_gb=0.01, **cfg), x, cfg=2.0)
    torch.testing.assert_close(streamed, whole, rtol=FLOAT32, atol=FLOAT32)


def test_batch_of_two_with_cfg_equals_each_item_alone(k5):
    """cond + uncond (cfg 3) over a batch of two latents equals sampling each latent on its own (same noise)."""
    import comfy.sample as comfy_sample
    model = patched(k5, window=(1, 4, 4), global_compression=2)
    both = video(batch=2)
    noise = comfy_sample.prepare_noise(both, 11)
    together = sample(model, both, cfg=3.0, noise=noise)
    for i in range(2):
        alone = sample(model, both[i:i + 1], cfg=3.0, noise=noise[i:i + 1])
        # float32 relative to the largest value: ComfyUI's own text blocks and cross-attention round a batch of
        # two in another order than one item
        torch.testing.assert_close(alone, together[i:i + 1], rtol=FLOAT32, atol=FLOAT32 * float(together.abs().max()))
    assert not torch.allclose(together[0], together[1], atol=1e-3)  # two different items


def test_capabilities_the_family_lacks_are_refused_by_name(k5):
    with pytest.raises(NotImplementedError, match="UltraGen split is not available for Kandinsky5"):
        api.enable_split(k5, setup=None)
    with pytest.raises(NotImplementedError, match="UltraGen proxy is not available for Kandinsky5"):
        api.apply_proxy_guidance(k5, None, api.ProxySettings())
    with pytest.raises(NotImplementedError, match="UltraGen checkpoint mode is not available for Kandinsky5"):
        api.load_weights(k5, "x.safetensors")


def patcher_of(dm):
    import comfy.model_patcher as model_patcher
    holder = torch.nn.Module()
    holder.diffusion_model = dm
    return model_patcher.ModelPatcher(holder, torch.device("cpu"), torch.device("cpu"))


@pytest.mark.parametrize("config,reason", [
    (dict(model_dim=128, visual_embed_dim=64), "it is Kandinsky 5 Image Lite, an image model"),
    (dict(visual_embed_dim=100), "its input layout is neither the video models'"),
], ids=["image-lite", "unknown-layout"])
def test_other_members_of_the_class_are_refused_by_name(comfy, k5, config, reason):
    apply_node = comfy.nodes.NODE_CLASS_MAPPINGS["UltraGenApply"]
    with pytest.raises(NotImplementedError) as refused:
        apply_node.execute(model=patcher_of(build(meta=True, **config)))
    text_ = str(refused.value)
    assert "UltraGen does not patch Kandinsky5 (comfy.ldm.kandinsky5.model)" in text_, text_
    assert reason in text_ and "Sample this model without UltraGen Apply" in text_, text_


NABLA_MESSAGE = ("NABLA sparse attention is on this model", "Remove the NABLA option (or node) from this model, "
                 "or remove UltraGen Apply")


def test_nabla_on_the_model_is_refused_naming_what_was_found(k5, monkeypatch):
    """Stand-ins for what NABLA support would add: a sparse-attention setting on the model, or a NABLA method on
    its self-attention class. UltraGen Apply refuses, saying what it found, why, and the fix."""
    dm = k5.get_model_object("diffusion_model")
    monkeypatch.setattr(dm, "attention_type", "nabla", raising=False)
    with pytest.raises(NotImplementedError) as refused:
        patched(k5)
    assert "the diffusion model has attention_type = 'nabla'" in str(refused.value)
    assert all(part in str(refused.value) for part in NABLA_MESSAGE), str(refused.value)
    monkeypatch.delattr(dm, "attention_type")
    cls = type(dm.visual_transformer_blocks[0].self_attention)
    monkeypatch.setattr(cls, "nabla", lambda self, *a: None, raising=False)
    with pytest.raises(NotImplementedError, match=r"\(SelfAttention\) defines 'nabla'"):
        patched(k5)


def test_nabla_in_the_options_is_refused_at_apply_and_at_sampling(k5):
    """A NABLA entry in transformer_options (as a node would set it) before UltraGen Apply: refused at apply; set
    after it: the first windowed call refuses; at a size UltraGen leaves unchanged, NABLA runs alone."""
    nabla = k5.clone()
    nabla.model_options.setdefault("transformer_options", {})["nabla"] = {"P": 0.9, "wT": 11}
    with pytest.raises(NotImplementedError, match=r"transformer_options\['nabla'\] is set \(dict\)"):
        patched(nabla)
    late = patched(k5, window=(1, 4, 4)).clone()
    late.model_options["transformer_options"]["sparse_params"] = {"P": 0.9}
    with pytest.raises(NotImplementedError, match=r"transformer_options\['sparse_params'\] is set"):
        sample(late, video())
    unchanged = patched(k5).clone()  # automatic windows: the tiny grid is below native, nothing is windowed
    unchanged.model_options["transformer_options"]["sparse_params"] = {"P": 0.9}
    assert torch.isfinite(sample(unchanged, video())).all()


def test_a_self_attention_that_computes_something_else_keeps_comfyuis_and_says_why(comfy, caplog, monkeypatch):
    """The rebuild is checked against the module's own forward by running it (first call per class and dtype):
    a forward that computes something else (here: twice the output) keeps ComfyUI's forward, logged. A freshly
    loaded model: ComfyUI's unpatching leaves the original forward bound on the modules it patched before."""
    model_class()
    import comfy.ldm.kandinsky5.model as k5model
    from ultragen_core.families.kandinsky5.kandinsky5_attention import forget_checks
    k5 = load(comfy)
    forward = k5model.SelfAttention.forward
    monkeypatch.setattr(k5model.SelfAttention, "forward", lambda self, *a, **k: 2 * forward(self, *a, **k))
    forget_checks()
    try:
        plain = sample(k5, video())
        with caplog.at_level(logging.WARNING):
            ours = sample(patched(k5, window=(1, 4, 4)), video())
    finally:
        forget_checks()
    assert torch.equal(plain, ours)
    assert any("differs from ComfyUI's forward" in r.getMessage() for r in caplog.records)


def k5_prompt(name, preset, width, height, frames=2, key="k5"):
    """API prompt: UNETLoader -> (UltraGen Attention Settings -> UltraGen Apply) -> KSampler -> capture."""
    nodes = {"latent": {"class_type": "UltraGenTestLatent", "inputs": {
                 "seed": 2, "channels": 16, "frames": frames, "height": height, "width": width, "batch": 1,
                 "corner_bump": 0.0}},
             "pos": {"class_type": "UltraGenTestKandinskyConditioning", "inputs": {"seed": 1, "tokens": 8}},
             "neg": {"class_type": "UltraGenTestKandinskyConditioning", "inputs": {"seed": 5, "tokens": 5}}}
    return sampled_prompt(nodes, name, preset, key, cfg=2.0, positive="pos", negative="neg")


def test_sampling_above_the_native_size_through_ultragen_apply_in_a_prompt(comfy, k5, caplog):
    """UNETLoader -> UltraGen Attention Settings (automatic) -> UltraGen Apply -> KSampler, executed by ComfyUI:
    a 2x128x192 latent is 2x64x96 tokens (12288: ComfyUI chunks q / k), twice Lite's native 768x512 (32x48 tokens)
    per side, so 2x2 windows of 2x32x48 run, with the global branch pooled x2."""
    from harness import captured
    assert comfy.load_node_pack(NODES)
    name = model_file(comfy)
    comfy.run(k5_prompt(name, None, 192, 128, key="plain"))
    with caplog.at_level(logging.INFO):
        comfy.run(k5_prompt(name, "quality", 192, 128, key="ours"))
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("[UltraGen] Kandinsky 5")]
    assert len(lines) == 1, lines
    assert "Kandinsky 5 Video Lite [Kandinsky5, 128 wide, 2 visual blocks], native 768x512 (automatic" in lines[0]
    assert "grid 2x64x96 (12288 tokens): windows 2x32x48" in lines[0] and "pooled x2" in lines[0], lines[0]
    plain, ours = captured()["plain"], captured()["ours"]
    assert ours.shape == plain.shape == (1, 16, 2, 128, 192)
    assert torch.isfinite(ours).all() and not torch.allclose(ours, plain, atol=1e-4)


def test_the_kandinsky5_bench_command_runs_with_smoke(comfy, k5):
    """bench/dit.py --family kandinsky5 as its docstring gives it: ComfyUI's loader detects Kandinsky 5 from the
    Pro layout's weights (at smoke width) and every variant prints its row, the 4K ones with windows."""
    from bench_commands import check_smoke_output, docstring_commands, run_smoke
    command = next(c for c in docstring_commands() if c.script == "bench/dit.py" and "kandinsky5" in c.args)
    out = run_smoke(command, comfy.root)
    check_smoke_output(command, out)
    for res in ("1080p", "4K"):
        for variant in ("unpatched", "UltraGen default", "UltraGen fast"):
            assert f"| Kandinsky 5 Pro | {res} |" in out and f"| {variant} |" in out, out
    assert "windows" in out.split("| 4K |")[-1]  # the 4K rows run windows


def tiny_kandinsky_vae():
    """Kandinsky 5's VAE as ComfyUI loads it: HunyuanVideo's (a 3-D ``AutoencoderKL``, 8x8x4, 16 channels; ComfyUI
    fixes its widths, so it is not tiny, only small in what it decodes here), random weights."""
    import comfy.ldm.models.autoencoder as autoencoder
    import comfy.sd as comfy_sd
    ddconfig = {"double_z": True, "z_channels": 16, "resolution": 256, "in_channels": 3, "out_ch": 3, "ch": 128,
                "ch_mult": [1, 2, 4, 4], "num_res_blocks": 2, "attn_resolutions": [], "dropout": 0.0, "conv3d": True,
                "time_compress": 4}
    with torch.device("meta"):
        shapes = autoencoder.AutoencoderKL(ddconfig=ddconfig, embed_dim=16).state_dict()
    gen, sd = torch.Generator().manual_seed(0), {}
    for k, v in shapes.items():
        if "norm" in k and k.endswith("weight"):
            sd[k] = torch.ones(v.shape)
        elif v.ndim >= 2:
            sd[k] = torch.randn(v.shape, generator=gen) / v[0].numel() ** 0.5
        else:
            sd[k] = 0.02 * torch.randn(v.shape, generator=gen)
    return comfy_sd.VAE(sd=sd)


def test_the_tiled_decode_hands_kandinskys_vae_to_comfyuis_tiled_decode_naming_it(comfy, caplog):
    """UltraGen Tiled VAE Decode tiles Wan's VAEs itself; Kandinsky 5's (HunyuanVideo's AutoencoderKL, 8 px x 4
    frames) goes to ComfyUI's own tiled decode, logged with its class. A latent within one tile decodes as the VAE
    decodes it whole."""
    model_class()
    vae = tiny_kandinsky_vae()
    assert type(vae.first_stage_model).__name__ == "AutoencoderKL" and vae.latent_channels == 16
    node = comfy.nodes.NODE_CLASS_MAPPINGS["UltraGenTiledVAEDecode"]
    latent = torch.randn(1, 16, 2, 4, 6, generator=torch.Generator().manual_seed(1))
    with caplog.at_level(logging.WARNING), torch.inference_mode():
        out = node.execute(samples={"samples": latent}, vae=vae, max_vram_gb=0.0, tile_size=0, overlap=64,
                           temporal_size=0, temporal_overlap=8).result[0]
        whole = vae.decode(latent)
    assert "falling back to ComfyUI's own tiled decode" in caplog.text, caplog.text
    assert "AutoencoderKL (comfy.ldm.models.autoencoder)" in caplog.text, caplog.text
    assert whole.shape[-4:] == (5, 32, 48, 3)  # 2 latent frames -> 1 + 4 (causal), 8x
    torch.testing.assert_close(out, whole.reshape(out.shape), atol=1e-5, rtol=0)
