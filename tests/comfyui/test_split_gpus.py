"""One model call shared out over several devices by windows (UltraGen Split Video Across GPUs). Here every
"device" is the CPU: ComfyUI's deep clones of the model run in ComfyUI's worker threads, exchange rows after
every block, and the result must be the one-device result (float32: only the batching differs)."""
import logging

import pytest
import torch

from harness import captured
from test_apply import WAN_5B, WAN_I2V, WAN_REF, WAN_T2V, WAN_VACE, model_file, run, sample_prompt, settings
from test_memory_budget import TINY_BUDGET, budget, ultragen_lines
from test_wan_variants import with_extra_latent


def has_multigpu_engine() -> bool:
    try:
        import comfy.multigpu  # noqa: F401 (only whether it exists)
    except ImportError:
        return False
    return True


@pytest.fixture
def engine(comfy):
    """The comfy fixture, on a ComfyUI with the multi-GPU engine (0.33 and later)."""
    if not has_multigpu_engine():
        pytest.skip("this ComfyUI has no multi-GPU engine (0.33+): the node refuses, see the last test")
    return comfy


def split(prompt: dict, ranks: int, fail_rank: int = 0) -> dict:
    prompt["split"] = {"class_type": "UltraGenTestSplitOnCPU",
                       "inputs": {"model": prompt["sample"]["inputs"]["model"], "ranks": ranks, "fail_rank": fail_rank}}
    prompt["sample"]["inputs"]["model"] = ["split", 0]
    return prompt


@pytest.mark.parametrize("spec,channels,ranks", [(WAN_T2V, 16, 2), (WAN_T2V, 16, 3), (WAN_5B, 48, 2),
                                                 (WAN_I2V, 16, 2), (WAN_VACE, 16, 4), (WAN_T2V, 16, 8)],
                         ids=["t2v-2", "t2v-3", "5b-2", "i2v-2", "vace-4", "t2v-8"])
def test_a_split_call_gives_the_one_device_result(engine, caplog, spec, channels, ranks):
    comfy = engine
    name = model_file(comfy, spec)

    def prompt():  # cfg 2: cond and uncond in one batch of 2, two steps, shifted windows, band fusion
        return sample_prompt(name, settings(window=(1, 4, 4)), channels=channels, steps=2)

    whole = run(comfy, prompt())
    with caplog.at_level(logging.INFO):
        shared = run(comfy, split(prompt(), ranks))
    assert any(f"shared out by windows over {ranks} devices" in m for m in ultragen_lines(caplog))
    calls = captured()["split"].last_run.received  # per call: bytes each rank got from the others
    assert len(calls) == 2 and all(all(b > 0 for b in call) for call in calls)  # every rank did a share
    torch.testing.assert_close(shared, whole, rtol=1e-5, atol=1e-5)


def test_full_attention_blocks_gate_fusion_no_global_branch_and_streaming_split_too(engine):
    comfy = engine
    name = model_file(comfy, WAN_T2V)
    for cfg in (settings(window=(2, 4, 4), full_attention_blocks="0"), settings(window=(1, 8, 4), fusion="gate"),
                settings(window=(1, 4, 4), shift="none", global_branch=False, fusion="local_only"),
                budget(settings(window=(1, 4, 4)), TINY_BUDGET)):
        whole = run(comfy, sample_prompt(name, cfg))
        shared = run(comfy, split(sample_prompt(name, dict(cfg, inputs=dict(cfg["inputs"]))), 2))
        torch.testing.assert_close(shared, whole, rtol=1e-5, atol=1e-5)


def test_more_devices_than_windows_leaves_some_idle_and_still_agrees(engine):
    comfy = engine
    name = model_file(comfy, WAN_T2V)  # 2 x 16 x 16 tokens, windows of 2 x 8 x 16: 2 windows, 4 ranks
    cfg = settings(window=(2, 8, 16), shift="none")
    whole = run(comfy, sample_prompt(name, cfg))
    shared = run(comfy, split(sample_prompt(name, dict(cfg, inputs=dict(cfg["inputs"]))), 4))
    torch.testing.assert_close(shared, whole, rtol=1e-5, atol=1e-5)


def test_a_call_it_cannot_share_runs_on_the_first_device_and_says_why(engine, caplog):
    comfy = engine
    name = model_file(comfy, WAN_REF)
    prompt = with_extra_latent(sample_prompt(name, settings(window=(1, 4, 4))), "reference_latent")
    whole = run(comfy, prompt)
    prompt = with_extra_latent(sample_prompt(name, settings(window=(1, 4, 4))), "reference_latent")
    with caplog.at_level(logging.INFO):
        shared = run(comfy, split(prompt, 2))
    assert any("alone: a reference frame or proxy-guidance tokens" in m for m in ultragen_lines(caplog))
    assert torch.equal(shared, whole)


def test_a_failure_on_another_device_reaches_the_user_and_nothing_hangs(engine):
    comfy = engine
    from harness import PromptFailed
    name = model_file(comfy, WAN_T2V)
    with pytest.raises(PromptFailed, match="simulated failure on rank 2"):
        comfy.run(split(sample_prompt(name, settings(window=(1, 4, 4))), 3, fail_rank=2))
    run(comfy, split(sample_prompt(name, settings(window=(1, 4, 4))), 3))  # the next prompt runs


def test_the_node_says_what_this_comfyui_or_machine_lacks(comfy):
    name = model_file(comfy, WAN_T2V)
    p = sample_prompt(name, settings(window=(1, 4, 4)))
    p["split"] = {"class_type": "UltraGenSplitAcrossGPUs", "inputs": {"model": p["sample"]["inputs"]["model"], "gpus": 2}}
    p["sample"]["inputs"]["model"] = ["split", 0]
    from harness import PromptFailed
    expected = "ComfyUI sees 1 device" if has_multigpu_engine() else "needs ComfyUI's multi-GPU engine"
    if torch.cuda.device_count() > 1:
        pytest.skip("a machine with several GPUs: the node works here")
    with pytest.raises(PromptFailed, match=expected):
        comfy.run(p)


def test_cfg_groups_that_do_not_divide_the_gpus_are_refused_before_sampling(comfy):
    """A rule about two inputs: refused once when the node runs (a graph-time message would be shown under both
    inputs, issue 25), before any copy of the model is made or a step sampled."""
    from harness import PromptFailed
    name = model_file(comfy, WAN_T2V)
    p = sample_prompt(name, settings(window=(1, 4, 4)))
    p["split"] = {"class_type": "UltraGenSplitAcrossGPUs",
                  "inputs": {"model": p["sample"]["inputs"]["model"], "gpus": 4, "cfg_groups": 3}}
    p["sample"]["inputs"]["model"] = ["split", 0]
    assert comfy.validate(p)[0]
    with pytest.raises(PromptFailed, match=r"cfg_groups is 3, which does not divide gpus \(4\)"):
        comfy.run(p)
