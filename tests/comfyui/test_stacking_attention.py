"""UltraGen with core's "Model Sparse Attention" (Sol-Attn, ComfyUI 0.34+), through a stand-in that hooks in the
way that node does (stacking_test_nodes.py): its attention override runs inside each UltraGen window and on the
global branch's pooled tokens, in either node order; calls below its min_tokens stay dense."""
import copy
import logging
import os
import sys
from pathlib import Path

import pytest
import torch

from harness import captured
from test_apply import WAN_T2V, model_file, run, sample_prompt, settings

NODES_FILE = Path(__file__).with_name("stacking_test_nodes.py")
WINDOWS = settings(window=(2, 8, 8), shift="none", global_branch=False, fusion="local_only")  # 4 windows, 128 tokens each


@pytest.fixture(scope="module")
def stand_in(comfy):
    """The stacking test nodes' module, loaded into ComfyUI as a custom node file."""
    assert comfy.load_node_pack(NODES_FILE)
    return next(m for m in list(sys.modules.values())
                if getattr(m, "__file__", None) and os.path.realpath(m.__file__) == str(NODES_FILE.resolve()))


def ultragen(cfg: dict) -> list[tuple[str, dict]]:
    return [("settings", copy.deepcopy(cfg)), ("apply", {"class_type": "UltraGenApply", "inputs": {}})]


def sparse(key: str, min_tokens: int, dense_blocks: str = "") -> list[tuple[str, dict]]:
    return [("sparse", {"class_type": "UltraGenTestSparseAttention",
                        "inputs": {"key": key, "min_tokens": min_tokens, "dense_blocks": dense_blocks}})]


def probe(key: str) -> list[tuple[str, dict]]:
    """UltraGen's attention probe: an override that takes the hook's one slot without chaining."""
    return [("probe", {"class_type": "UltraGenTestAttentionProbe", "inputs": {"key": key}})]


def stacked(name: str, *stages: list, **sampling) -> dict:
    """load -> stages (in order) -> KSampler -> capture "out"; ``sampling``: sample_prompt's options."""
    prompt = sample_prompt(name, **sampling)
    model = ["load", 0]
    for i, stage in enumerate(stages):
        settings_id = None
        for role, node in stage:
            node_id = f"{role}{i}"
            prompt[node_id] = node = copy.deepcopy(node)
            if role == "settings":
                settings_id = node_id
                continue
            node["inputs"]["model"] = model
            if role == "apply":
                node["inputs"]["settings"] = [settings_id, 0]
            model = [node_id, 0]
    prompt["sample"]["inputs"]["model"] = model
    return prompt


def calls(stand_in, key: str) -> list[tuple[int, str, int | None]]:
    return stand_in.CALLS.setdefault(key, [])


def self_attention(records):
    return [r for r in records if r[1] != "dense: cross-attention"]


def test_sparse_attention_runs_inside_each_ultragen_window_in_either_order(comfy, stand_in, caplog):
    name = model_file(comfy, WAN_T2V)
    stand_in.CALLS.clear()
    with caplog.at_level(logging.INFO):
        after = run(comfy, stacked(name, ultragen(WINDOWS), sparse("after", 64)))
    before = run(comfy, stacked(name, sparse("before", 64), ultragen(WINDOWS)))
    assert torch.equal(after, before)
    for key in ("after", "before"):
        records = calls(stand_in, key)
        # 2 blocks x 1 step, cond and uncond in one batch: each window call holds 128 tokens, never 512
        assert self_attention(records) == [(128, "sparse", r[2]) for r in self_attention(records)], records
        assert len(self_attention(records)) == 2
        assert any(r[1] == "dense: cross-attention" for r in records)
    line = next(r.getMessage() for r in caplog.records if r.getMessage().startswith("[UltraGen]"))
    assert "attention: the model's, through the attention override another node set" in line
    windows_only = run(comfy, stacked(name, ultragen(WINDOWS)))
    assert not torch.allclose(after, windows_only, atol=1e-4)  # the sparse attention did change the windows
    whole = run(comfy, stacked(name, sparse("whole", 64)))  # without UltraGen: the whole 512-token sequence
    assert {r[0] for r in self_attention(calls(stand_in, "whole"))} == {512}
    assert not torch.allclose(whole, after, atol=1e-4)


def test_windows_below_min_tokens_run_dense_and_leave_ultragen_unchanged(comfy, stand_in):
    """Sol-Attn keeps calls under min_tokens (12,288 by default) dense: windows that small get exactly the
    model's own attention, so the result is UltraGen's alone."""
    name = model_file(comfy, WAN_T2V)
    stand_in.CALLS.clear()
    cfg = settings(window=(1, 4, 4), shift="none", global_compression=2)  # 16-token windows, 128 pooled tokens
    stacked_out = run(comfy, stacked(name, sparse("dense", 12288), ultragen(cfg)))
    assert torch.equal(stacked_out, run(comfy, stacked(name, ultragen(cfg))))
    records = self_attention(calls(stand_in, "dense"))
    assert {r[0] for r in records} == {16, 128}  # the windows and the global branch, each through the override
    assert all(r[1].startswith("dense: ") and "< min_tokens 12288" in r[1] for r in records), records


def test_the_override_reinstalls_itself_on_top_each_step_and_chains(comfy, stand_in):
    """Core's node puts its override back on top at ON_PREPARE_STATE before every step, chained to whatever
    override a later node put on the hook; its dense_blocks come from Wan's block_index, which UltraGen's windows
    pass on."""
    if not stand_in.prepare_state_passes_model_options():
        pytest.skip("this ComfyUI's ModelPatcher.prepare_state(timestep) passes no model_options, so an override "
                    "cannot put itself back per step (core's Model Sparse Attention needs ComfyUI 0.34+)")
    name = model_file(comfy, WAN_T2V)
    stand_in.CALLS.clear()
    captured().pop("later", None)
    out = run(comfy, stacked(name, sparse("reinstalled", 64, dense_blocks="0"), ultragen(WINDOWS), probe("later"),
                             steps=2))
    records = calls(stand_in, "reinstalled")
    windows = self_attention(records)
    # 2 steps x 2 blocks, each one call of all windows: block 0 dense (dense_blocks), block 1 sparse
    assert [(r[0], r[1], r[2]) for r in windows] == [(128, "dense: dense block", 0), (128, "sparse", 1)] * 2
    later = captured()["later"]  # the probe the sparse override chained to: it sees the dense calls only
    assert len(later) == sum(r[1] != "sparse" for r in records)
    assert (8, 128, 128, 128) in later  # block 0's windows (cond and uncond: 2 x 4 windows)
    expected = run(comfy, stacked(name, ultragen(WINDOWS), sparse("plain", 64, dense_blocks="0"), steps=2))
    assert torch.equal(out, expected)
