"""UltraGen with ComfyUI's EasyCache and TorchCompileModel nodes on the patched model, in either node order."""
import logging
import os
import re

import pytest
import torch

from harness import captured
from test_apply import WAN_T2V, model_file, run, settings
from test_stacking_attention import probe, stacked, ultragen

WINDOWS = settings(window=(1, 4, 4))
COMPILE_BACKEND = os.environ.get("ULTRAGEN_TEST_COMPILE", "")  # "", "eager" or "inductor"


def easycache(threshold: float) -> list[tuple[str, dict]]:
    return [("easycache", {"class_type": "EasyCache", "inputs": {"reuse_threshold": threshold, "start_percent": 0.0,
                                                                 "end_percent": 1.0, "verbose": False}})]


def skipped_steps(caplog) -> tuple[int, int]:
    """EasyCache's own summary line of the last sampling run: (skipped, total steps)."""
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("EasyCache - skipped")]
    skipped, total = re.match(r"EasyCache - skipped (\d+)/(\d+) steps", lines[-1]).groups()
    return int(skipped), int(total)


def test_easycache_that_reuses_nothing_leaves_the_patched_result_unchanged(comfy, caplog):
    name = model_file(comfy, WAN_T2V)
    patched = run(comfy, stacked(name, ultragen(WINDOWS), steps=3))
    with caplog.at_level(logging.INFO):
        for stages in ((ultragen(WINDOWS), easycache(0.0)), (easycache(0.0), ultragen(WINDOWS))):
            assert torch.equal(run(comfy, stacked(name, *stages, steps=3)), patched)
            assert skipped_steps(caplog) == (0, 3)


def test_easycache_skips_whole_steps_of_the_patched_model_in_either_order(comfy, caplog):
    """A skipped step reuses EasyCache's cached output change and never calls the model: the patched attention
    runs for the other steps only, and both node orders give the same result."""
    name = model_file(comfy, WAN_T2V)
    results, runs = [], []
    with caplog.at_level(logging.INFO):
        for i, stages in enumerate(((ultragen(WINDOWS), easycache(3.0)), (easycache(3.0), ultragen(WINDOWS)))):
            captured().pop(f"cache{i}", None)
            results.append(run(comfy, stacked(name, *stages, probe(f"cache{i}"), steps=6, cfg=1.0)))
            runs.append((skipped_steps(caplog), len(captured()[f"cache{i}"])))
    assert torch.equal(results[0], results[1])
    assert runs[0] == runs[1]
    (skipped, total), attention_calls = runs[0]
    assert total == 6 and 0 < skipped < 6
    captured().pop("uncached", None)
    uncached = run(comfy, stacked(name, ultragen(WINDOWS), probe("uncached"), steps=6, cfg=1.0))
    per_step = len(captured()["uncached"]) // 6
    assert attention_calls == (total - skipped) * per_step  # skipped steps never reached the patched blocks
    assert torch.isfinite(results[0]).all() and not torch.equal(results[0], uncached)


@pytest.fixture
def compile_backend(monkeypatch):
    """TorchCompileModel with ULTRAGEN_TEST_COMPILE's backend: "inductor" runs the node as it is; "eager" keeps
    the node and TorchDynamo's tracing, guards and graph breaks, without code generation."""
    if COMPILE_BACKEND not in ("eager", "inductor"):
        pytest.skip("TorchCompileModel compiles the whole diffusion model, too slow for the default run on a CPU "
                    "(2 shared cores: TorchDynamo's tracing alone, backend eager, took 75 s for the tiny plain model "
                    "and 100 s patched; inductor 280 s). Run it with ULTRAGEN_TEST_COMPILE=eager or =inductor.")
    if COMPILE_BACKEND == "eager":
        import comfy_extras.nodes_torch_compile as node_module
        real = node_module.set_torch_compile_wrapper
        monkeypatch.setattr(node_module, "set_torch_compile_wrapper",
                            lambda model, backend, **kw: real(model=model, backend="eager", **kw))
    return [("compile", {"class_type": "TorchCompileModel", "inputs": {"backend": "inductor"}})]


def test_torch_compile_of_the_patched_model_gives_the_eager_result(comfy, compile_backend):
    """Both node orders; the second step only is patched (start_percent 0.3: sigma 0.95 lies between the two
    steps' 1.0 and 0.89), so the compiled model runs the unpatched and the patched call."""
    name = model_file(comfy, WAN_T2V)
    for cfg in (settings(window=(1, 4, 4), start_percent=0.3), WINDOWS):
        eager = run(comfy, stacked(name, ultragen(cfg), steps=2))
        for stages in ((ultragen(cfg), compile_backend), (compile_backend, ultragen(cfg))):
            torch.testing.assert_close(run(comfy, stacked(name, *stages, steps=2)), eager, rtol=1e-5, atol=1e-5)
