"""Graph-time checks of UltraGen nodes through ComfyUI's validate_prompt: one error entry per bad value,
at the input it is about, and ComfyUI's own min / max / combo checks stay on for every other input."""
from __future__ import annotations

import pytest


def entries(node_errors: dict, node_id: str) -> list[tuple[str, str, str]]:
    """(type, input name, details) of every error ComfyUI reports for one node."""
    return [(e["type"], e["extra_info"].get("input_name"), e["details"]) for e in node_errors[node_id]["errors"]]


def only_error(comfy, prompt: dict, node_id: str) -> tuple[str, str, str]:
    ok, _, _, node_errors = comfy.validate(prompt)
    assert not ok and set(node_errors) == {node_id}, node_errors
    found = entries(node_errors, node_id)
    assert len(found) == 1, found
    return found[0]


# --- UltraGen Resolution ----------------------------------------------------------------------------------

def resolution(**inputs) -> dict:
    values = dict(model_family="Wan 2.1 T2V/I2V 14B", target="custom", orientation="landscape", frames=81,
                  custom_width=1920, custom_height=1080, rounding="nearest")
    values.update(inputs)
    return {"1": {"class_type": "UltraGenResolution", "inputs": values},
            "2": {"class_type": "PreviewAny", "inputs": {"source": ["1", 4]}}}


@pytest.mark.parametrize("inputs, name, kind", [
    (dict(frames=10 ** 9), "frames", "value_bigger_than_max"),
    (dict(frames=0), "frames", "value_smaller_than_min"),
    (dict(custom_width=10 ** 6), "custom_width", "value_bigger_than_max"),
    (dict(rounding="sideways"), "rounding", "value_not_in_list"),
])
def test_resolution_bad_value_is_one_entry_at_its_input(comfy, inputs, name, kind):
    assert only_error(comfy, resolution(**inputs), "1")[:2] == (kind, name)


def test_resolution_accepts_a_custom_size_below_one_step(comfy):
    ok, error, _, node_errors = comfy.validate(resolution(model_family="LTX-Video", custom_width=16))
    assert ok, (error, node_errors)
