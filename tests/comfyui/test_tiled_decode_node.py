"""UltraGenTiledVAEDecode in the real ComfyUI runtime, with tiny Wan 2.1 / 2.2 VAEs loaded by VAELoader.

Tolerances: the tiny decoders (harness.tiny_wan_vae_state_dict, residual_scale 0.1) mix each pixel mostly
with its neighbourhood, plus a per-frame attention over the whole frame, so tiles are an approximation.
Measured here: mean |tiled - untiled| < 0.01 of the 0..1 range, worst values inside the overlap bands.
"""
import gc
import logging

import pytest
import torch

from harness import PromptFailed, captured, save_tiny_wan_vae, tiny_wan_vaes

MEAN_TOL, MAX_TOL = 0.015, 0.15  # measured: mean 0.006 / 0.008, max 0.09 (2.1 / 2.2)
# A latent whose whole decode (256x288 px) exceeds the smallest budget (0.5 GiB) in both tested ComfyUI
# versions: their Wan 2.1 estimates differ (0.3.64: 7000 * h * w * 64 bytes per element size; 0.33:
# 2178 * 2.73 * h * w * 64), so the budget test cannot rely on one version's numbers.
BUDGET_GB, BUDGET_H, BUDGET_W = 0.5, 32, 36


def prompt(vae_name, channels, frames, height, width, untiled=True, **node):
    inputs = dict(max_vram_gb=0.0, tile_size=0, overlap=64, temporal_size=0, temporal_overlap=8)
    inputs.update(node)
    p = {
        "1": {"class_type": "VAELoader", "inputs": {"vae_name": vae_name}},
        "2": {"class_type": "UltraGenTestLatent", "inputs": {"seed": 0, "channels": channels, "frames": frames,
                                                             "height": height, "width": width, "batch": 1,
                                                             "corner_bump": 0.0}},
        "3": {"class_type": "UltraGenTiledVAEDecode", "inputs": {"samples": ["2", 0], "vae": ["1", 0], **inputs}},
        "5": {"class_type": "UltraGenTestCaptureImage", "inputs": {"images": ["3", 0], "key": "tiled"}},
    }
    if untiled:
        p["4"] = {"class_type": "VAEDecode", "inputs": {"samples": ["2", 0], "vae": ["1", 0]}}
        p["6"] = {"class_type": "UltraGenTestCaptureImage", "inputs": {"images": ["4", 0], "key": "untiled"}}
    return p


def run(comfy, p):
    images = captured()
    images.pop("tiled", None), images.pop("untiled", None)
    with tiny_wan_vaes():
        comfy.run(p)
    return images["tiled"], images.get("untiled")


def frame_steps(images):
    """Mean absolute change from each frame to the next: (frames - 1,)."""
    return (images[1:] - images[:-1]).abs().mean(dim=(1, 2, 3))


@pytest.fixture
def decode_calls(comfy, monkeypatch):
    """Latent shapes of every Wan VAE decode call (both versions) during the test."""
    import comfy.ldm.wan.vae as wan21
    import comfy.ldm.wan.vae2_2 as wan22
    calls = []
    for cls in (wan21.WanVAE, wan22.WanVAE):
        def recording(self, z, _real=cls.decode):
            calls.append(tuple(z.shape))
            return _real(self, z)
        monkeypatch.setattr(cls, "decode", recording)
    return calls


@pytest.mark.parametrize("version,channels,height,width,tile,overlap", [("2.1", 16, 10, 14, 64, 32),
                                                                        ("2.2", 48, 8, 10, 96, 48)])
def test_tiled_matches_untiled_and_keeps_frames_together(comfy, caplog, decode_calls, version, channels, height,
                                                         width, tile, overlap):
    name = save_tiny_wan_vae(comfy, version)
    s = 8 if version == "2.1" else 16
    with caplog.at_level(logging.INFO):
        tiled, untiled = run(comfy, prompt(name, channels, 3, height, width, tile_size=tile, overlap=overlap))
    assert tiled.shape == untiled.shape == (9, height * s, width * s, 3)
    assert "Wan " + version in caplog.text and "tile(s)" in caplog.text  # our tiler ran, not the fallback
    tiles = [c for c in decode_calls if c[-2:] != (height, width)]  # the untiled VAEDecode call excluded
    assert len(tiles) == 6 and len(decode_calls) == 7  # 2 x 3 tiles: the sizes divide nothing evenly
    assert all(c[2] == 3 for c in tiles)  # every tile decoded over all latent frames
    diff = (tiled - untiled).abs()
    assert float(diff.mean()) < MEAN_TOL and float(diff.max()) < MAX_TOL
    # the frame-to-frame change follows the untiled decode's (a temporal tile border would restart the
    # causal cache and show up as a jump in one step)
    steps_t, steps_u = frame_steps(tiled), frame_steps(untiled)
    assert torch.allclose(steps_t, steps_u, rtol=0.05, atol=0.005), (steps_t, steps_u)


def test_budget_chooses_tiles_and_overlap_hides_seams(comfy, caplog):
    name = save_tiny_wan_vae(comfy, "2.1")
    with caplog.at_level(logging.INFO):
        tiled, untiled = run(comfy, prompt(name, 16, 2, BUDGET_H, BUDGET_W, max_vram_gb=BUDGET_GB, overlap=32))
    assert "from the VRAM budget" in caplog.text and " 1 tile(s)" not in caplog.text
    feathered = (tiled - untiled).abs()
    hard, _ = run(comfy, prompt(name, 16, 2, BUDGET_H, BUDGET_W, untiled=False, max_vram_gb=BUDGET_GB, overlap=0))
    cut = (hard - untiled).abs()
    assert float(feathered.mean()) < MEAN_TOL
    assert float(feathered.max()) < 0.7 * float(cut.max())  # overlap + feather: smaller worst-case seam


def test_interrupt_between_tiles_then_rerun(comfy, monkeypatch):
    import comfy.ldm.wan.vae as wan21
    import comfy.model_management as mm
    name = save_tiny_wan_vae(comfy, "2.1")
    p = prompt(name, 16, 2, 8, 12, untiled=False, tile_size=64, overlap=16)
    real_decode, calls = wan21.WanVAE.decode, []

    def decode_then_interrupt(self, z):
        calls.append(tuple(z.shape))
        out = real_decode(self, z)
        mm.interrupt_current_processing(True)  # the user presses Cancel during the first tile
        return out

    monkeypatch.setattr(wan21.WanVAE, "decode", decode_then_interrupt)
    with pytest.raises(PromptFailed):
        run(comfy, p)
    assert len(calls) == 1  # stopped before the second tile
    gc.collect()
    out_bytes = 5 * 64 * 96 * 3 * 4
    assert not [o for o in gc.get_objects() if isinstance(o, torch.Tensor) and o.untyped_storage().nbytes() == out_bytes]
    assert any(e == "execution_interrupted" for e, _ in comfy.executor.status_messages)
    monkeypatch.setattr(wan21.WanVAE, "decode", real_decode)
    first, _ = run(comfy, p)  # a rerun works and is complete
    second, _ = run(comfy, p)
    assert torch.equal(first, second) and first.shape == (5, 64, 96, 3)


def execute(comfy, vae, latent, **widgets):
    node = comfy.nodes.NODE_CLASS_MAPPINGS["UltraGenTiledVAEDecode"]
    inputs = dict(max_vram_gb=0.0, tile_size=0, overlap=64, temporal_size=0, temporal_overlap=8)
    inputs.update(widgets)
    return node.execute(samples={"samples": latent}, vae=vae, **inputs).result[0]


@pytest.fixture(scope="module")
def wan_vaes(comfy):
    with tiny_wan_vaes():
        return {v: comfy.nodes.VAELoader().load_vae(save_tiny_wan_vae(comfy, v))[0] for v in ("2.1", "2.2")}


def test_small_videos_decode_with_default_and_oversized_tiles(comfy, wan_vaes):
    """64 px high frames: the default overlap (64 px) and a 512 px tile fit the latent (one tile, no overlap);
    tile 64 with overlap 64 lowers the overlap to 32 px (two tiles across the width)."""
    vae = wan_vaes["2.1"]
    latent = torch.randn(1, 16, 1, 8, 12, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        untiled = vae.decode(latent).reshape(-1, 64, 96, 3)
        for widgets in (dict(), dict(tile_size=512), dict(tile_size=64, overlap=64)):
            diff = (execute(comfy, vae, latent, **widgets) - untiled).abs()
            assert diff.shape == (1, 64, 96, 3)
            assert float(diff.max()) < (MAX_TOL if widgets.get("tile_size") == 64 else 1e-5), widgets


@pytest.mark.parametrize("version, shape, words", [
    ("2.1", (1, 16, 8, 8), ["Wan 2.1 VAE decodes video latents", "(1, 16, 8, 8)"]),
    ("2.1", (1, 48, 2, 8, 8), ["48 channels", "expects 16"]),
    ("2.2", (1, 16, 2, 8, 8), ["16 channels", "expects 48"]),
    ("2.1", (1, 16, 0, 8, 8), ["empty", "(1, 16, 0, 8, 8)"]),
])
def test_latents_the_vae_cannot_decode_are_named(comfy, wan_vaes, version, shape, words):
    with pytest.raises(ValueError) as e:
        execute(comfy, wan_vaes[version], torch.zeros(shape))
    assert all(w in str(e.value) for w in words), str(e.value)


def test_image_vae_given_a_video_latent_is_named(comfy):
    import comfy.sd as comfy_sd
    vae = comfy_sd.VAE(sd={"pixel_space_vae": torch.tensor(1.0)})  # an image VAE (latent_dim 2)
    with pytest.raises(ValueError, match=r"is an image VAE .* video latent of shape \(1, 3, 2, 8, 8\)"):
        execute(comfy, vae, torch.zeros(1, 3, 2, 8, 8))


def test_unknown_vae_falls_back_to_comfy_tiled_decode(comfy, caplog):
    import comfy.sd as comfy_sd
    node = comfy.nodes.NODE_CLASS_MAPPINGS["UltraGenTiledVAEDecode"]
    vae = comfy_sd.VAE(sd={"pixel_space_vae": torch.tensor(1.0)})  # a VAE family UltraGen does not tile
    latent = torch.rand(1, 3, 40, 56) * 2 - 1
    with caplog.at_level(logging.WARNING):
        out = node.execute(samples={"samples": latent}, vae=vae, max_vram_gb=0.0, tile_size=0, overlap=64,
                           temporal_size=0, temporal_overlap=8).result[0]
    assert "falling back to ComfyUI's own tiled decode" in caplog.text and "PixelspaceConversionVAE" in caplog.text
    torch.testing.assert_close(out, vae.decode(latent), atol=1e-5, rtol=0)
