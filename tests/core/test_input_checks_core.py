"""The core checks behind the nodes' input checks (issue 25), without ComfyUI: the upscaled latent's size
against the free memory, NaN / empty tensors, proxies, a file that is no torch checkpoint, the memory line
with no room left for work."""
from __future__ import annotations

import pickle

import pytest
import torch

from ultragen_core.checkpoint.io import load_state_dict, weights_file_problem
from ultragen_core.families.wan.wan_proxy import PROXY_MAX_ABS, ProxyHolder, ProxySettings, proxy_problem
from ultragen_core.latent_upscale import GiB, LatentSize, size_problem, upscale_bytes, upscale_video_latent
from ultragen_core.memory import plan_memory
from ultragen_core.tensor_checks import nonfinite_count, values_problem


def test_upscale_bytes_are_the_output_and_its_float32_working_copy():
    for dtype in (torch.float32, torch.bfloat16):
        out = upscale_video_latent(torch.randn(1, 16, 2, 4, 4, dtype=dtype), LatentSize(3, 16, 24))
        assert upscale_bytes(1, 16, LatentSize(3, 16, 24), out.element_size()) == out.numel() * (4 + out.element_size())


def test_a_size_that_fits_is_no_problem_and_one_that_does_not_says_what_fits():
    size = LatentSize(1025, 2048, 2048)  # 16384 x 16384 px, 4097 frames, Wan 2.1 (8 px a cell)
    need = upscale_bytes(1, 16, size, 4)
    assert size_problem(1, 16, size, 4, need, cell_px=8) is None
    message = size_problem(1, 16, size, 4, 64 * GiB, cell_px=8)
    frames = 64 * GiB // (need // 1025)  # latent frames that fit at this width and height
    assert message == (f"the upscaled latent would be 1 x 16 x 1025 x 2048 x 2048 latent cells (16384x16384 px, 4097 "
                       f"frames), {need / GiB:.1f} GiB while resizing, but only 64.0 GiB of memory is free: at this "
                       f"width and height, up to {4 * (frames - 1) + 1} frames (length) fit. Lower width, height or "
                       "length (or the batch).")
    tiny = size_problem(1, 16, size, 4, GiB // 4, cell_px=8)  # not even two frames of this size (512 MiB each)
    assert "2 latent frames fit up to about" in tiny and "px square" in tiny
    assert "latent cells" in size_problem(1, 16, size, 4, GiB) and "px" not in size_problem(1, 16, size, 4, GiB)


def test_values_problem_counts_nan_and_inf_and_refuses_empty_tensors():
    x = torch.zeros(2, 3, 4)
    assert values_problem(x, "latent") is None
    x[0, 0, :2] = float("nan")
    x[1, 2, 3] = float("-inf")
    assert nonfinite_count(x, chunk=5) == 3
    assert values_problem(x, "latent").startswith("the latent holds 3 NaN or infinite value(s) of 24:")
    assert values_problem(torch.zeros(1, 16, 0, 4, 4), "proxy latent") == (
        "the proxy latent is empty (shape (1, 16, 0, 4, 4)): connect one with at least one frame and pixel.")
    assert nonfinite_count(torch.ones(3, dtype=torch.long)) == 0


@pytest.mark.parametrize("proxy, words", [
    (torch.zeros(1, 16, 0, 4, 4), "is empty"),
    (torch.zeros(1, 16, 2, 4, 0), "is empty"),
    (torch.zeros(1, 16, 2, 5, 4), "is 2 x 5 x 4 latent cells (frames x height x width); the model embeds patches of "
                                  "1 x 2 x 2"),
    (torch.full((1, 16, 2, 4, 4), float("nan")), "holds 512 NaN or infinite value(s) of 512"),
    (torch.full((1, 16, 2, 4, 4), 1e30), "holds values up to 1e+30"),
    (torch.zeros(16, 2, 4, 4), "must be a video latent"),
])
def test_proxy_problem_names_what_cannot_guide(proxy, words):
    assert words in proxy_problem(proxy, (1, 2, 2))


def test_a_proxy_within_a_latents_range_is_no_problem():
    assert proxy_problem(torch.randn(2, 16, 2, 4, 4) * 20, (1, 2, 2)) is None
    assert proxy_problem(torch.full((1, 16, 1, 2, 2), PROXY_MAX_ABS), (1, 2, 2)) is None


def test_each_proxy_item_serves_its_video_item_in_every_conditioning():
    latent = torch.arange(2.0).view(2, 1, 1, 1, 1).expand(2, 16, 1, 2, 2).contiguous()  # item i holds i
    holder = ProxyHolder(latent, ProxySettings())
    like = torch.zeros(4, 16, 1, 2, 2)
    rows = holder.noised(0.0, 4, like, video_items=2)  # cond items 0, 1, then uncond items 0, 1
    assert rows[:, 0, 0, 0, 0].tolist() == [0.0, 1.0, 0.0, 1.0]
    one = ProxyHolder(latent[:1], ProxySettings()).noised(0.0, 4, like, video_items=2)
    assert one[:, 0, 0, 0, 0].tolist() == [0.0] * 4
    with pytest.raises(ValueError, match=r"the proxy latent has 2 items and the video 4\. A proxy of 1 item guides"):
        holder.noised(0.0, 4, like, video_items=4)
    with pytest.raises(ValueError, match=r"the proxy latent has 2 items and the video 3"):
        holder.noised(0.0, 3, like[:3], video_items=3)


def test_a_text_file_named_ckpt_is_no_torch_checkpoint(tmp_path):
    path = tmp_path / "notes.ckpt"
    path.write_bytes(b"hello world\n")  # 12 bytes
    message = weights_file_problem(str(path))
    assert message == ("UltraGen: notes.ckpt (12 bytes) cannot be read: it is no torch checkpoint (it starts with "
                       "b'hell', neither a zip archive nor a pickle). The file is probably truncated or damaged (an "
                       "interrupted download or copy): download or convert it again.")
    with pytest.raises(ValueError, match="it is no torch checkpoint"):
        load_state_dict(str(path))  # not PyTorch's "Weights only load failed"


def test_torch_checkpoints_old_and_new_pass_the_cheap_check(tmp_path):
    sd = {"w": torch.ones(2)}
    torch.save(sd, tmp_path / "zip.ckpt")
    torch.save(sd, tmp_path / "legacy.pt", _use_new_zipfile_serialization=False)
    with open(tmp_path / "plain.pth", "wb") as f:
        pickle.dump({"w": 1}, f, protocol=2)
    for name in ("zip.ckpt", "legacy.pt", "plain.pth"):
        assert weights_file_problem(str(tmp_path / name)) is None, name


def test_the_memory_line_explains_a_budget_below_the_blocks_input_and_output():
    plan = plan_memory(tokens=21 * 135 * 240, batch=1, dim=5120, ffn_dim=13824, itemsize=2, device=torch.device("cpu"),
                       budget_gb=4, largest_window=21 * 45 * 80)
    assert plan.workspace < 0 and not plan.fits
    line = plan.describe()
    assert "-" not in line.split("GiB")[1].split(",")[0]  # no negative workspace
    assert (f"which the block's input and output alone exceed by {-plan.workspace / GiB:.1f} GiB (no room left for "
            "work)") in line
    assert "Raise memory_budget_gb (0 = automatic: the free VRAM), or lower the resolution or frames" in line
    roomy = plan_memory(tokens=1000, batch=1, dim=128, ffn_dim=256, itemsize=2, device=torch.device("cpu"),
                        budget_gb=4).describe()
    assert "GiB of it for work beyond the block's input and output" in roomy
