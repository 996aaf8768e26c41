"""Damaged weight files and non-finite weights (no ComfyUI): clear errors naming the file or the tensor."""
from __future__ import annotations

import struct

import pytest
import torch
from safetensors.torch import save_file

from test_ultragen_weights_reference import random_extras
from ultragen_core.checkpoint.io import check_finite, load_state_dict, weights_file_problem
from ultragen_core.checkpoint.keys import split_checkpoint
from ultragen_core.convert import convert

REMEDY = "download or convert it again"


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    folder = tmp_path_factory.mktemp("weights")
    sd = random_extras(128, blocks=(1,), rank=4)
    save_file(sd, str(folder / "good.safetensors"))
    torch.save(sd, folder / "good.ckpt")
    return folder, sd


def damaged(folder, name: str, data: bytes):
    path = folder / name
    path.write_bytes(data)
    return str(path)


@pytest.mark.parametrize("name, cut, words", [
    ("empty.safetensors", lambda d: b"", "shorter than the 8 bytes"),
    ("half.safetensors", lambda d: d[:len(d) // 2], "the file ends after"),
    ("header.safetensors", lambda d: d[:40], "more than the file holds"),
    ("huge.safetensors", lambda d: struct.pack("<Q", 10 ** 12) + b"{}", "more than safetensors allows"),
    ("notjson.safetensors", lambda d: struct.pack("<Q", 4) + b"{ab}", "not valid JSON"),
    ("empty.ckpt", lambda d: b"", "it is empty"),
    ("half.ckpt", lambda d: d[:len(d) // 2], "its end is missing"),
])
def test_damaged_files_name_the_file_and_the_remedy(good, name, cut, words):
    folder, _ = good
    source = (folder / ("good" + name[name.index("."):])).read_bytes()
    path = damaged(folder, name, cut(source))
    with pytest.raises(ValueError) as e:
        load_state_dict(path)
    message = str(e.value)
    assert message.startswith(f"UltraGen: {name} (") and words in message and REMEDY in message, message
    assert weights_file_problem(path) == message  # the graph-time check says the same, without loading


def test_pickle_that_is_not_a_checkpoint_gets_the_same_kind_of_error(good):
    folder, _ = good
    with pytest.raises(ValueError, match=rf"garbage.ckpt \(111 bytes\) cannot be read: torch.load failed .*{REMEDY}"):
        load_state_dict(damaged(folder, "garbage.ckpt", b"\x80" + b"hello world" * 10))  # starts like a pickle
    text = damaged(folder, "text.ckpt", b"hello world" * 10)  # neither a zip nor a pickle: refused when queued
    assert "it is no torch checkpoint" in weights_file_problem(text) and REMEDY in weights_file_problem(text)


def test_graph_time_check_reads_names_only(good, tmp_path):
    folder, sd = good
    assert weights_file_problem(str(folder / "good.safetensors")) is None
    assert weights_file_problem(str(folder / "good.ckpt")) is None  # pickles: checked when loaded
    save_file({f"model.diffusion_model.{k}": v for k, v in sd.items()}, str(tmp_path / "prefixed.safetensors"))
    assert weights_file_problem(str(tmp_path / "prefixed.safetensors")) is None
    plain = {"blocks.0.self_attn.q.weight": torch.zeros(4, 4), "head.head.weight": torch.zeros(4, 4)}
    save_file(plain, str(tmp_path / "wan.safetensors"))
    message = weights_file_problem(str(tmp_path / "wan.safetensors"))
    assert message.startswith("wan.safetensors holds no UltraGen weights (2 tensors, e.g. blocks.0.self_attn.q.weight")
    assert "plain Wan model" in message


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_weights_are_refused_by_name(good, tmp_path, bad):
    _, sd = good
    sd = {**sd, "blocks.0.self_attn.q.weight": torch.ones(8, 8)}
    sd["blocks.1.self_attn.k_lora_2.lora_B.weight"] = sd["blocks.1.self_attn.k_lora_2.lora_B.weight"].clone()
    sd["blocks.1.self_attn.k_lora_2.lora_B.weight"][3, 1] = bad
    sd["blocks.0.self_attn.q.weight"][0, 0] = bad  # a base weight too
    with pytest.raises(ValueError, match=r"UltraGen: blocks.0.self_attn.q.weight in x.ckpt holds 1 NaN or infinite "
                                         r"value\(s\) of 64 \(and 1 more tensor\(s\)\): every output would be NaN"):
        check_finite(split_checkpoint(sd).named_tensors(), "x.ckpt")
    torch.save(sd, tmp_path / "bad.ckpt")
    with pytest.raises(ValueError, match="blocks.0.self_attn.q.weight in .*bad.ckpt holds 1 NaN"):
        convert(str(tmp_path / "bad.ckpt"), str(tmp_path / "out.safetensors"))
    assert not (tmp_path / "out.safetensors").exists()
