"""UltraGen Apply on HunyuanVideo 1.5 in the real ComfyUI runtime: a tiny random-weight model of ComfyUI's own
``HunyuanVideo`` class with the HunyuanVideo 1.5 config (vision input, 65 input channels, patch 1x1x1, 2 double
+ 1 single blocks, 2 heads of 128), loaded by UNETLoader (ComfyUI's model detection picks HunyuanVideo15) and
sampled by KSampler. Tolerances: float32 on the CPU, 1e-5 where two computations of the same attention are
compared (measured: about 2e-6)."""
import logging
import math
from pathlib import Path

import pytest
import torch

from harness import PromptFailed, captured, eager_weights
from test_apply import LOCAL_ONLY, run, settings

GRID = (2, 12, 12)  # latent frames x height x width = the token grid (patch 1x1x1)
CHANNELS = 32
NODES = Path(__file__).with_name("hunyuan_test_nodes.py")
TOL = dict(rtol=1e-5, atol=1e-5)


def hunyuan15_params(**extra) -> dict:
    params = dict(in_channels=65, out_channels=32, vec_in_dim=None, context_in_dim=4096, hidden_size=256,
                  mlp_ratio=4.0, num_heads=2, depth=2, depth_single_blocks=1, axes_dim=[16, 56, 56], theta=256,
                  patch_size=[1, 1, 1], qkv_bias=True, guidance_embed=False, byt5=False, meanflow=False,
                  use_cond_type_embedding=True, vision_in_dim=1152, meanflow_sum=True)
    params.update(extra)
    return params


@pytest.fixture(scope="module")
def hy(comfy):
    """The tiny HunyuanVideo 1.5 checkpoint's file name (skips where this ComfyUI has no HunyuanVideo 1.5)."""
    import dataclasses

    import comfy.ldm.hunyuan_video.model as hv
    fields = {f.name for f in dataclasses.fields(hv.HunyuanVideoParams)}
    if "vision_in_dim" not in fields:
        pytest.skip("HunyuanVideo 1.5 is missing in this ComfyUI: comfy.ldm.hunyuan_video.model.HunyuanVideoParams "
                    "has no vision_in_dim (no HunyuanVideo15 config)")
    assert comfy.load_node_pack(NODES)
    name = "tiny_hunyuan_video15.safetensors"
    path = comfy.models_dir / "diffusion_models" / name
    if not path.exists():
        from safetensors.torch import save_file
        save_file(random_state_dict(hunyuan15_params()), str(path))
    return name


def random_state_dict(params: dict, seed: int = 0) -> dict:
    import comfy.ldm.hunyuan_video.model as hv
    import comfy.ops
    with eager_weights():
        model = hv.HunyuanVideo(operations=comfy.ops.disable_weight_init, **params)
    gen = torch.Generator().manual_seed(seed)
    sd = {}
    for name, p in model.state_dict().items():
        if "norm" in name and name.endswith("weight"):
            t = torch.ones(p.shape)
        elif p.ndim >= 2:
            t = torch.randn(p.shape, generator=gen) / p[0].numel() ** 0.5
        else:
            t = 0.02 * torch.randn(p.shape, generator=gen)
        sd[name] = t.to(torch.float32).contiguous()
    return sd


def cond(seed=1, tokens=8, padding=0):
    return {"class_type": "UltraGenTestHunyuanConditioning", "inputs": {"seed": seed, "tokens": tokens,
                                                                        "padding": padding}}


def prompt(name, patch=None, cfg=2.0, bump=0.0, denoise=1.0, positive=None, negative=None, batch=1, steps=1,
           key="out", add_noise=True, from_batch=None):
    """UNETLoader -> (settings -> UltraGen Apply) -> KSamplerAdvanced -> capture, on a GRID-sized latent."""
    p = {"load": {"class_type": "UNETLoader", "inputs": {"unet_name": name, "weight_dtype": "default"}},
         "pos": positive or cond(), "neg": negative or cond(seed=5, tokens=5),
         "latent": {"class_type": "UltraGenTestLatent", "inputs": {
             "seed": 2, "channels": CHANNELS, "frames": GRID[0], "height": GRID[1], "width": GRID[2], "batch": batch,
             "corner_bump": bump}}}
    latent = ["latent", 0]
    if from_batch is not None:
        p["pick"] = {"class_type": "LatentFromBatch", "inputs": {"samples": latent, "batch_index": from_batch,
                                                                 "length": 1}}
        latent = ["pick", 0]
    model = ["load", 0]
    if patch is not None:
        p["apply"] = {"class_type": "UltraGenApply", "inputs": {"model": model}}
        if patch != "default":
            p["settings"] = patch
            p["apply"]["inputs"]["settings"] = ["settings", 0]
        model = ["apply", 0]
    start = 0 if denoise >= 1.0 else max(1, round(steps / denoise) - steps)
    p["sample"] = {"class_type": "KSamplerAdvanced", "inputs": {
        "model": model, "add_noise": "enable" if add_noise else "disable", "noise_seed": 3, "steps": steps + start,
        "cfg": cfg, "sampler_name": "euler", "scheduler": "simple", "positive": ["pos", 0], "negative": ["neg", 0],
        "latent_image": latent, "start_at_step": start, "end_at_step": 10000, "return_with_leftover_noise": "disable"}}
    p["capture"] = {"class_type": "UltraGenTestCapture", "inputs": {"samples": ["sample", 0], "key": key}}
    return p


def with_budget(node: dict, gb: float) -> dict:
    node["inputs"]["memory_budget_gb"] = gb
    return node


def token_change(a, b):
    """Largest change per token (t, h, w) between two (1, 32, T, H, W) latents."""
    return (a - b).abs()[0].amax(0)


def reachable(grid, window, seeds, blocks):
    """Tokens a change in ``seeds`` can reach through ``blocks`` windowed blocks (plain, shifted, plain, ...)."""
    from ultragen_core.attention.windows import make_layout
    changed = set(seeds)
    for b in range(blocks):
        layout = make_layout(grid, window, shifted=b % 2 == 1)
        owners = [a.owner_and_offset()[0] for a in layout.axes]
        new = set(changed)
        for tok in ((t, h, w) for t in range(grid[0]) for h in range(grid[1]) for w in range(grid[2])):
            own = [o[c] for o, c in zip(owners, tok)]
            box = [(a.window_starts[i], a.window_lengths[i]) for a, i in zip(layout.axes, own)]
            if any(all(s <= c < s + n for (s, n), c in zip(box, seed)) for seed in changed):
                new.add(tok)
        changed = new
    return changed


# --- identity and the full-attention limit --------------------------------------------------------------------

def test_at_or_below_native_size_the_output_is_comfyuis_bit_for_bit(comfy, hy):
    plain = run(comfy, prompt(hy))
    assert torch.equal(plain, run(comfy, prompt(hy, "default")))  # automatic: the grid is far below 720p
    assert torch.equal(plain, run(comfy, prompt(hy, settings(window=(64, 64, 64), **LOCAL_ONLY))))
    windowed = run(comfy, prompt(hy, settings(window=(1, 4, 4))))
    assert not torch.allclose(plain, windowed, atol=1e-3) and torch.isfinite(windowed).all()


FULL_LIMIT = dict(window=(64, 64, 64), global_compression=1, fusion="gate", global_strength=0.0)


@pytest.mark.parametrize("padding", [0, 3], ids=["no-mask", "padding-mask"])
def test_one_window_over_the_grid_with_every_token_pooled_is_full_attention(comfy, hy, caplog, padding):
    """One window over the whole grid (video queries over all video and text keys) and a global branch of factor
    1 weighted 0 (text queries over all text and video keys): the patched path computes exactly full attention,
    so the result equals ComfyUI's up to float rounding. With a padding mask on the positive prompt (whose
    length differs from the negative's, so cond and uncond run as separate calls) the padding keys are dropped."""
    pos = cond(tokens=8, padding=padding)
    plain = run(comfy, prompt(hy, positive=pos))
    with caplog.at_level(logging.INFO):
        ours = run(comfy, prompt(hy, settings(**FULL_LIMIT), positive=pos))
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("[UltraGen]")]
    assert any("windows 2x12x12" in m and "pooled x1" in m for m in lines), lines
    assert not any("full attention there" in m for m in lines), lines  # the windowed blocks really ran
    assert not torch.equal(plain, ours)  # another computation ...
    torch.testing.assert_close(ours, plain, **TOL)  # ... of the same attention
    if padding:  # and the mask matters: without it the output is another
        assert not torch.allclose(plain, run(comfy, prompt(hy, positive=cond(tokens=8))), atol=1e-3)


# --- locality, conditioning, streaming, batches ---------------------------------------------------------------

def test_a_corner_change_stays_in_its_windows_without_global_branch_and_spreads_with_it(comfy, hy):
    window = (1, 4, 4)
    reach = reachable(GRID, window, {(0, 0, 0), (0, 0, 1), (0, 1, 0), (0, 1, 1)}, blocks=3)
    outside = torch.ones(GRID, dtype=torch.bool)
    for tok in reach:
        outside[tok] = False
    assert outside.sum() > math.prod(GRID) // 2

    def change(extra):
        cfg = settings(window=window, **extra)
        a = run(comfy, prompt(hy, cfg, cfg=1.0, denoise=0.5))
        b = run(comfy, prompt(hy, cfg, cfg=1.0, denoise=0.5, bump=5.0))
        return token_change(a, b)
    local = change(LOCAL_ONLY)
    assert torch.all(local[outside] == 0), "a change crossed windows (through the text tokens?)"
    assert local[~outside].max() > 0
    spread = change(dict(global_compression=3))
    assert (spread[outside] > 0).float().mean() > 0.5, "the global branch should carry the change everywhere"


@pytest.mark.parametrize("extra", [LOCAL_ONLY, dict(global_compression=3)], ids=["local-only", "global"])
def test_the_text_reaches_every_window(comfy, hy, extra):
    cfg = settings(window=(1, 4, 4), **extra)
    a = run(comfy, prompt(hy, cfg, cfg=1.0))
    b = run(comfy, prompt(hy, cfg, cfg=1.0, positive=cond(seed=7)))
    assert token_change(a, b).min() > 0, "some video tokens do not see the text"


def test_a_tiny_memory_budget_streams_windows_and_gives_the_unlimited_result(comfy, hy, caplog):
    cfg = settings(window=(1, 4, 4), global_compression=3)
    whole = run(comfy, prompt(hy, cfg, steps=2))
    with caplog.at_level(logging.INFO):
        streamed = run(comfy, prompt(hy, with_budget(settings(window=(1, 4, 4), global_compression=3), 1e-6),
                                     steps=2))
    line = next(r.getMessage() for r in caplog.records if "memory:" in r.getMessage())
    assert "in chunks of 64" in line, line  # 4 windows of 16 tokens per attention call, of 288
    torch.testing.assert_close(streamed, whole, **TOL)


def test_batch_of_two_with_cfg_equals_each_item_alone(comfy, hy):
    """Two latents in one batch, cfg 2 (cond and uncond batched by ComfyUI: calls of batch 2), no added noise:
    each item equals its own batch-1 run."""
    cfg = settings(window=(1, 4, 4), global_compression=3)
    both = run(comfy, prompt(hy, cfg, batch=2, add_noise=False, steps=2))
    assert both.shape[0] == 2
    for i in range(2):
        alone = run(comfy, prompt(hy, cfg, batch=2, from_batch=i, add_noise=False, steps=2))
        torch.testing.assert_close(both[i:i + 1], alone, **TOL)


def test_sampling_above_the_native_size_is_windowed_through_ultragen_apply(comfy, hy, caplog):
    """A prompt with UltraGen Apply (automatic windows) at a native size the model is run above: the settings'
    480p native on this grid is stood in for by windows a third of the grid, as automatic windows are above
    1080p; the run logs its plan and returns finite latents that differ from ComfyUI's full attention."""
    with caplog.at_level(logging.INFO):
        out = run(comfy, prompt(hy, settings(window=(2, 4, 4), preset="quality"), steps=2))
    line = next(r.getMessage() for r in caplog.records if r.getMessage().startswith("[UltraGen] HunyuanVideo 1.5"))
    assert "grid 2x12x12 (288 tokens): windows 2x4x4" in line and "global branch pooled x3" in line, line
    assert torch.isfinite(out).all() and not torch.allclose(out, run(comfy, prompt(hy, steps=2)), atol=1e-3)


# --- text masks per batch item, the block check, refusals ------------------------------------------------------

def loaded_model(comfy, name):
    import comfy.sd as comfy_sd
    return comfy_sd.load_diffusion_model(str(comfy.models_dir / "diffusion_models" / name))


def block_inputs(dm, batch=2, text=6, seed=0):
    """A double block's inputs for a GRID video: img (B, N, C), txt (B, E, C), vec (B, C), pe of [text; video]."""
    gen = torch.Generator().manual_seed(seed)
    n, c = math.prod(GRID), dm.hidden_size
    img, txt = torch.randn(batch, n, c, generator=gen), torch.randn(batch, text, c, generator=gen)
    vec = torch.randn(batch, c, generator=gen)
    ids = torch.cat((torch.zeros(batch, text, 3), dm.img_ids(torch.zeros(batch, 1, *GRID))), dim=1)
    return img, txt, vec, dm.pe_embedder(ids)


def test_text_masks_that_differ_per_batch_item_run_each_item_with_its_own_keys(comfy, hy):
    """ComfyUI 0.33 builds one mask row for the whole batch; a (B, 1, E+N) mask whose rows differ (as a later
    ComfyUI may pass) runs the items one at a time: the batch equals each item alone, and with the full-attention
    plan it equals ComfyUI's own block under each item's mask."""
    from ultragen_core.attention import kernels
    from ultragen_core.config import AttentionSettings, resolve_plan
    from ultragen_core.families.hunyuan_video.blocks import double_block
    from ultragen_core.families.hunyuan_video.hunyuan_video import flux_math, windowed_joint
    from ultragen_core.families.hunyuan_video.text_mask import kept_text_keys
    dm = loaded_model(comfy, hy).get_model_object("diffusion_model")
    m = dm.double_blocks[0]
    img, txt, vec, pe = block_inputs(dm)
    e, total = txt.shape[1], txt.shape[1] + img.shape[1]
    mask = torch.zeros(2, 1, total)
    mask[0, 0, e - 2:] = -torch.finfo(torch.float32).max  # item 0: its last two text tokens are padding
    mask[0, 0, e:] = 0
    attention = kernels.choose(flux_math(m).optimized_attention, m.num_heads, {}, img.device)

    def ours(settings, b=None):
        rows = slice(None) if b is None else slice(b, b + 1)
        mk = mask[rows]
        kept = kept_text_keys(mk, mk.shape[0], e, total)
        plan = resolve_plan(settings, GRID, (31, 45, 80))
        joint = windowed_joint(plan, 0, m, pe[rows], kept, attention, 64, {})
        with torch.no_grad():
            return double_block(m, img[rows].clone(), txt[rows].clone(), vec[rows], joint)
    windows = AttentionSettings(window=(1, 4, 4), global_compression=3)
    batched = ours(windows)
    for b in range(2):
        for got, want in zip(batched, ours(windows, b)):
            torch.testing.assert_close(got[b:b + 1], want, **TOL)  # batched vs single matmuls: ~2e-6
    full = ours(AttentionSettings(**FULL_LIMIT))
    for b in range(2):
        with torch.no_grad():
            theirs = type(m).forward(m, img[b:b + 1].clone(), txt[b:b + 1].clone(), vec[b:b + 1], pe[b:b + 1],
                                     attn_mask=mask[b:b + 1])
        for got, want in zip(full, theirs):
            torch.testing.assert_close(got[b:b + 1], want, **TOL)


def test_a_block_that_does_not_recompute_as_comfyui_keeps_its_own_forward(comfy, hy, caplog, monkeypatch):
    """A ComfyUI whose DoubleStreamBlock computes something else than the recomputed block (here: its forward
    shifted by 0.1): the check on the first call finds it, warns, and those blocks run ComfyUI's forward."""
    import sys

    import comfy.ldm.flux.layers as layers
    for key, module in list(sys.modules.items()):  # the pack's copies of the check's memory (test and ComfyUI)
        if key.endswith("ultragen_core.families.hunyuan_video.blocks"):
            monkeypatch.setattr(module, "_CHECKED", {})
    real = layers.DoubleStreamBlock.forward

    def drifted(self, *args, **kwargs):
        img, txt = real(self, *args, **kwargs)
        return img + 0.1, txt
    monkeypatch.setattr(layers.DoubleStreamBlock, "forward", drifted)
    plain = run(comfy, prompt(hy))
    with caplog.at_level(logging.INFO):
        ours = run(comfy, prompt(hy, settings(window=(1, 4, 4), full_attention_blocks="2")))
    assert torch.equal(plain, ours)  # double blocks fell back, the single block keeps full attention
    warning = next(r.getMessage() for r in caplog.records if "does not equal its own forward" in r.getMessage())
    assert "DoubleStreamBlock (comfy.ldm.flux.layers, double block, float32)" in warning, warning
    assert "keep ComfyUI's full attention" in warning


@pytest.mark.parametrize("variant,params", [
    ("HUNYUAN_VIDEO_15_SR", dict(in_channels=98)),
    ("HUNYUAN_VIDEO", dict(in_channels=16, vision_in_dim=None, use_cond_type_embedding=False, patch_size=[1, 2, 2],
                           vec_in_dim=768, guidance_embed=True, meanflow_sum=False)),
    ("HUNYUAN_IMAGE_21", dict(in_channels=64, vision_in_dim=None, patch_size=[1, 1], axes_dim=[64, 64],
                              byt5=True, meanflow_sum=False)),
    ("HUNYUAN_IMAGE_21_REFINER", dict(in_channels=128, vision_in_dim=None, meanflow=True, meanflow_sum=False)),
], ids=["sr-1080p", "original", "image-2.1", "image-2.1-refiner"])
def test_other_members_of_the_class_are_refused_by_name(comfy, hy, variant, params):
    import comfy.ldm.hunyuan_video.model as hv
    import comfy.model_patcher as model_patcher
    import comfy.ops as ops
    from ultragen_core.families.hunyuan_video.variants import REFUSED, Variant
    holder = torch.nn.Module()
    holder.diffusion_model = hv.HunyuanVideo(operations=ops.disable_weight_init, device="meta",
                                             **hunyuan15_params(**params))
    patcher = model_patcher.ModelPatcher(holder, torch.device("cpu"), torch.device("cpu"))
    apply_node = comfy.nodes.NODE_CLASS_MAPPINGS["UltraGenApply"]
    with pytest.raises(NotImplementedError) as refused:
        apply_node.execute(model=patcher)
    text = str(refused.value)
    assert "UltraGen does not patch HunyuanVideo (comfy.ldm.hunyuan_video.model)" in text, text
    assert REFUSED[Variant[variant]] in text and "Sample this model without UltraGen Apply" in text, text


def test_the_documented_hunyuan_bench_command_runs_with_smoke(comfy, hy):
    """bench/dit.py --family HunyuanVideo as docs/BENCHMARKS.md gives it (the smoke tests run only each script's
    first documented command): ComfyUI's loader detects HunyuanVideo 1.5 and every variant prints its row."""
    from bench_commands import check_smoke_output, documented_commands, run_smoke
    command = next(c for c in documented_commands() if c.script == "bench/dit.py" and "HunyuanVideo" in c.args)
    out = run_smoke(command, comfy.root)
    check_smoke_output(command, out)
    for res in ("720p", "1080p", "4K"):
        for variant in ("unpatched", "UltraGen default", "UltraGen fast"):
            assert f"| HunyuanVideo 1.5 | {res} |" in out and f"| {variant} |" in out, out
    assert "windows" in out.split("| 4K |")[-1]  # the 4K rows run windows
