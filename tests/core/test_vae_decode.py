"""The tiled VAE decode's glue in the core (no ComfyUI): input rules, latent checks, budget, overlap."""
import logging

import pytest
import torch

from test_tiled_decode import WAN, PointwiseDecoder
from ultragen_core.tiled_decode import GIB
from ultragen_core.vae_decode import (CausalVae, DeviceMemory, decode_within_budget, latent_problem,
                                      latent_tile_and_overlap, plan_budget, tile_size_problem)


def fake_vae(weights_gb: float = 1.0, per_elem: float = 1000.0) -> CausalVae:
    return CausalVae(name="Wan 2.1", scale=WAN, latent_channels=4, weights_bytes=int(weights_gb * GIB), dtype_size=2,
                     own_estimate=lambda shape: per_elem * shape[-1] * shape[-2], decode=PointwiseDecoder(WAN))


class FakeMemory(DeviceMemory):
    def __init__(self, total_gb: float, free_gb: float):
        self.loads = []
        super().__init__(total=lambda: int(total_gb * GIB), free=lambda: int(free_gb * GIB), load=self.loads.append)


@pytest.mark.parametrize("value, words", [(32, "at least 64"), (-16, "0 (automatic) to 8192"),
                                          (10 ** 6, "got 1000000")])
def test_tile_size_rule(value, words):
    assert words in tile_size_problem(value) and "tile_size" in tile_size_problem(value)
    assert tile_size_problem(0) is None and tile_size_problem(64) is None


@pytest.mark.parametrize("shape, video, channels, words", [
    ((1, 16, 8, 8), True, 16, ["(1, 16, 8, 8)", "an image latent", "video latents"]),
    ((1, 48, 2, 8, 8), True, 16, ["48 channels", "expects 16", "wan2.2_vae"]),
    ((1, 16, 0, 8, 8), True, 16, ["empty", "(1, 16, 0, 8, 8)"]),
    ((1, 4, 2, 8, 8), False, None, ["image VAE", "(1, 4, 2, 8, 8)", "wan_2.1_vae"]),
])
def test_latent_problems_say_what_is_connected_and_expected(shape, video, channels, words):
    message = latent_problem(shape, "Wan 2.1", video, channels)
    assert message.startswith("samples:") and all(w in message for w in words), message
    assert latent_problem((1, 16, 2, 8, 8), "Wan 2.1", True, 16) is None


def test_budget_from_max_vram_or_free_memory(caplog):
    vae = fake_vae(weights_gb=1.0)
    memory = FakeMemory(total_gb=80, free_gb=10)
    assert plan_budget(vae, memory, (1, 4, 2, 8, 8), 4.0) == 3 * GIB  # 4 GiB minus the weights
    assert memory.loads == [vae.estimate((1, 4, 2, 8, 8))]  # asks only for what the decode needs
    with caplog.at_level(logging.WARNING):
        assert plan_budget(vae, memory, (1, 4, 2, 8, 8), 40.0) == int(0.9 * 10 * GIB)
    assert "only 9.00 GiB are free" in caplog.text
    assert plan_budget(vae, memory, (1, 4, 2, 8, 8), 0.0) == int(0.9 * 10 * GIB)  # automatic: what is free
    with pytest.raises(ValueError, match=r"max_vram_gb is 0.5 GiB, less than the Wan 2.1 VAE's own weights"):
        plan_budget(vae, memory, (1, 4, 2, 8, 8), 0.5)


def test_overlap_above_half_an_explicit_tile_is_lowered_with_a_warning(caplog):
    with caplog.at_level(logging.WARNING):
        assert latent_tile_and_overlap(fake_vae(), 64, 64) == (8, 4)
    assert "overlap 64 px is more than half of tile_size 64 px: using 32 px" in caplog.text
    assert latent_tile_and_overlap(fake_vae(), 0, 64) == (0, 8)  # automatic tile: fitted to the grid later


def test_decode_within_budget_checks_the_latent_and_matches_untiled():
    vae, memory = fake_vae(weights_gb=0.0), FakeMemory(total_gb=1, free_gb=1)
    latent = torch.randn(1, 4, 2, 9, 30)
    ref = vae.decode(latent).movedim(1, -1)
    vae.decode.calls.clear()
    out = decode_within_budget(latent, vae, memory, 0.0, 128, 64)  # tiles of 16 latents, overlap 8
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
    assert [c[-2:] for c in vae.decode.calls] == [(9, 16), (9, 16), (9, 16)]  # one tile covers the height
    with pytest.raises(ValueError, match="expects 4"):
        decode_within_budget(torch.randn(1, 16, 2, 9, 30), vae, memory, 0.0, 0, 64)
    with pytest.raises(ValueError, match="at least 64"):
        decode_within_budget(latent, vae, memory, 0.0, 16, 64)


def test_core_does_not_import_comfyui():
    import ultragen_core.vae_decode
    source = open(ultragen_core.vae_decode.__file__).read()
    assert "import comfy" not in source and "from comfy" not in source
