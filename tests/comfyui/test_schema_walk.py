"""Every registered UltraGen node, checked the same way from its schema (issue 25): for every widget, values
below its min and above its max, a wrong type, NaN / inf for floats and an empty string; for every LATENT /
IMAGE input, empty, NaN / inf / huge tensors and a second batch item. Each problem must give exactly one
error entry, under the input it is about, without raw Python exception text; ComfyUI's own range check must
still fire for every input the node's validate_inputs does not take over; what ComfyUI lets through (NaN,
V3 combos on 0.3.64, tensors) must be refused when the node runs, naming the input, before anything
downstream runs. test_a_validate_inputs_that_hides_a_range_check_fails_the_walk proves the walk catches the
bug class it is for.
"""
from __future__ import annotations

import inspect
import itertools

import pytest

RAW = ("Exception when validating inner node", "you tried to allocate", "DefaultCPUAllocator",
       "Calculated padded input size", "Kernel size", "not all arguments converted", "modulo by zero",
       "Traceback", "has no attribute", "not supported between", "unsupported operand", "Weights only load failed",
       "out of memory", "must match the size of tensor", "shape '[")
RANGE_TYPES = {"below min": "value_smaller_than_min", "above max": "value_bigger_than_max"}
# LATENT / IMAGE inputs whose NaN / infinite values must be refused (others may use them: Compare leaves
# such frames out of its metrics, a reference latent gives only its size)
REFUSES_NONFINITE = {("UltraGenProxyGuidance", "proxy"), ("UltraGenUpscaleLatent", "latent"),
                     ("UltraGenTiledVAEDecode", "samples"), ("UltraGenDemoDecode", "samples")}
REFUSES_HUGE = {("UltraGenProxyGuidance", "proxy")}
WAN = "walk_wan.safetensors"
WEIGHTS = "walk_weights.ckpt"
BASE_VALUES = {("UltraGenLoadWeights", "weights"): WEIGHTS}
_keys = itertools.count()


@pytest.fixture(scope="module")
def files(comfy):
    from harness import placeholder, save_tiny_wan_vae, save_wan
    save_wan(comfy, WAN)
    save_tiny_wan_vae(comfy, "2.1")
    placeholder(comfy.models_dir / "diffusion_models" / WEIGHTS)  # an empty but well-formed torch checkpoint
    return comfy


def pack_nodes(comfy) -> dict:
    from harness import pack_nodes as registered_by_pack
    return registered_by_pack(comfy.nodes.NODE_CLASS_MAPPINGS)


def taken_over(cls) -> set[str]:
    """The inputs ComfyUI hands to the node's validate_inputs (and skips its own checks for), as it decides:
    the arguments of an override of io.ComfyNode.validate_inputs, every input with **kwargs."""
    from comfy_api.latest import io
    own, base = getattr(cls, "validate_inputs", None), getattr(io.ComfyNode, "validate_inputs", None)
    if own is None or getattr(own, "__func__", own) is getattr(base, "__func__", base):
        return set()
    spec = inspect.getfullargspec(own)
    if spec.varkw is not None:
        return {i.id for i in cls.define_schema().inputs}
    return set(spec.args) - {"cls"}


def producer(io_type: str, **overrides) -> dict:
    if io_type == "MODEL":
        return {"class_type": "UNETLoader", "inputs": {"unet_name": WAN, "weight_dtype": "default"}}
    if io_type == "LATENT":
        return {"class_type": "UltraGenTestLatent",
                "inputs": {"seed": 0, "channels": 16, "frames": 2, "height": 8, "width": 8, "batch": 1,
                           "corner_bump": 0.0, "fill": "random", **overrides}}
    if io_type == "IMAGE":
        return {"class_type": "UltraGenTestImage",
                "inputs": {"seed": 0, "frames": 2, "height": 16, "width": 16, "fill": "random", **overrides}}
    if io_type == "VAE":
        return {"class_type": "VAELoader", "inputs": {"vae_name": "tiny_wan21_vae.safetensors"}}
    if io_type == "ULTRAGEN_ATTENTION_SETTINGS":
        return {"class_type": "UltraGenAttentionSettings", "inputs": {}}  # defaults filled in by base_prompt
    raise KeyError(f"the walk has no producer for {io_type}: add one")


def default_of(comfy, node: str, item):
    if (node, item.id) in BASE_VALUES:
        return BASE_VALUES[(node, item.id)]
    if item.get_io_type() == "COMBO" and item.default is None:
        return item.options[0]
    return item.default


def widgets(cls) -> list:
    return [i for i in cls.define_schema().inputs if i.get_io_type() in ("INT", "FLOAT", "STRING", "BOOLEAN", "COMBO")]


def base_prompt(comfy, node: str, links: dict | None = None) -> dict:
    """A valid prompt: the node with its defaults, its required links from tiny producers (``links``: input
    -> producer overrides, which also connects optional inputs), its first output into a sink."""
    cls = pack_nodes(comfy)[node]
    prompt, inputs = {}, {}
    for item in cls.define_schema().inputs:
        io_type = item.get_io_type()
        if io_type in ("INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"):
            inputs[item.id] = default_of(comfy, node, item)
        elif not item.optional or (links and item.id in links):
            source = producer(io_type, **(links or {}).get(item.id, {}))
            if source["class_type"] == "UltraGenAttentionSettings":
                settings = pack_nodes(comfy)["UltraGenAttentionSettings"]
                source["inputs"] = {i.id: default_of(comfy, "UltraGenAttentionSettings", i) for i in widgets(settings)}
            prompt[f"p_{item.id}"] = source
            inputs[item.id] = [f"p_{item.id}", 0]
    prompt["n"] = {"class_type": node, "inputs": inputs}
    prompt["sink"] = {"class_type": "UltraGenTestSink", "inputs": {"value": ["n", 0], "key": f"walk{next(_keys)}"}}
    return prompt


def widget_cases(item) -> list[tuple[str, object]]:
    io_type = item.get_io_type()
    cases = []
    if io_type in ("INT", "FLOAT"):
        step = 1 if io_type == "INT" else 1.0
        if getattr(item, "min", None) is not None:
            cases.append(("below min", item.min - step))
        if getattr(item, "max", None) is not None:
            cases.append(("above max", item.max + step))
        cases += [("wrong type", "abc"), ("empty string", "")]
        if io_type == "FLOAT":
            cases += [("nan", float("nan")), ("inf", float("inf")), ("-inf", float("-inf"))]
    elif io_type == "COMBO":
        cases += [("not a choice", "no such choice"), ("wrong type", 5), ("empty string", "")]
    else:  # STRING, BOOLEAN: any value converts; the node takes it or refuses it once
        cases += [("wrong type", 5 if io_type == "STRING" else "abc"), ("empty string", "")]
    return cases


def raw_text(text: str) -> list[str]:
    return [marker for marker in RAW if marker in text]


def run_refuses(comfy, prompt: dict, name: str, what: str) -> list[str]:
    """[] when running the prompt fails at the node with a clean message naming ``name`` and the sink never
    ran; else what went wrong."""
    from harness import PromptFailed, captured, tiny_wan_vaes
    key = prompt["sink"]["inputs"]["key"]
    try:
        with tiny_wan_vaes():
            comfy.run(prompt)
        message = None
    except PromptFailed as e:
        message = str(e)
    if message is None:
        return [f"{what}: accepted and ran"]
    problems = [f"{what}: raw exception text {raw_text(message)}: {message[:300]}"] if raw_text(message) else []
    if name not in message:
        problems.append(f"{what}: the message does not name {name}: {message[:300]}")
    if key in captured():
        problems.append(f"{what}: the sink ran although the node refused")
    return problems


def walk_widgets(comfy, node: str, combos_checked: bool) -> list[str]:
    cls = pack_nodes(comfy)[node]
    own = taken_over(cls)
    problems = []
    for item in widgets(cls):
        for case, value in widget_cases(item):
            prompt = base_prompt(comfy, node)
            prompt["n"]["inputs"][item.id] = value
            what = f"{node}.{item.id} {case} ({value!r})"
            ok, _, _, node_errors = comfy.validate(prompt)
            if not ok:
                found = [(nid, e["type"], e["extra_info"].get("input_name"), f"{e['message']}: {e['details']}")
                         for nid, errors in node_errors.items() for e in errors["errors"]]
                if len(found) != 1 or found[0][:1] != ("n",) or found[0][2] != item.id:
                    problems.append(f"{what}: expected one error at {item.id}, got {found}")
                    continue
                kind, text = found[0][1], found[0][3]
                if raw_text(text):
                    problems.append(f"{what}: raw exception text: {text}")
                if case in RANGE_TYPES:
                    limit = item.min if case == "below min" else item.max
                    if item.id not in own and kind != RANGE_TYPES[case]:
                        problems.append(f"{what}: ComfyUI's own range check did not fire ({kind}: {text})")
                    if item.id in own and str(limit) not in text:
                        problems.append(f"{what}: the node's re-check does not give the limit {limit}: {text}")
                if text.count(f"{item.id} ") + text.count(f"{item.id}:") > 1:
                    problems.append(f"{what}: the input's name is repeated: {text}")
                continue
            # ComfyUI let it through: allowed only for what its checks cannot see, then refused when run
            if case in ("nan",) or (item.get_io_type() == "COMBO" and not combos_checked):
                problems += run_refuses(comfy, prompt, item.id, what)
            elif item.get_io_type() not in ("STRING", "BOOLEAN"):
                problems.append(f"{what}: passed validation")
    return problems


def tensor_cases(io_type: str) -> list[tuple[str, dict]]:
    return [("no frames", {"frames": 0}), ("no width", {"width": 0}), ("all NaN", {"fill": "nan"}),
            ("half NaN", {"fill": "half_nan"}), ("all inf", {"fill": "inf"}), ("values of 1e30", {"fill": "huge"}),
            ("another batch", {"batch": 2} if io_type == "LATENT" else {"frames": 3})]


def walk_tensors(comfy, node: str) -> list[str]:
    cls = pack_nodes(comfy)[node]
    problems = []
    for item in cls.define_schema().inputs:
        io_type = item.get_io_type()
        if io_type not in ("LATENT", "IMAGE"):
            continue
        for case, overrides in tensor_cases(io_type):
            prompt = base_prompt(comfy, node, links={item.id: overrides})
            what = f"{node}.{item.id} {case}"
            ok, error, _, node_errors = comfy.validate(prompt)
            if not ok:
                problems.append(f"{what}: refused at validation ({error}, {node_errors})")
                continue
            must_refuse = (case.startswith("no ") or ("NaN" in case or "inf" in case) and (node, item.id) in
                           REFUSES_NONFINITE or case == "values of 1e30" and (node, item.id) in REFUSES_HUGE)
            refused = run_refuses(comfy, prompt, item.id, what)
            if must_refuse:
                problems += refused
            elif refused and refused != [f"{what}: accepted and ran"]:
                problems += refused  # a refusal is allowed, but a clean one
    return problems


@pytest.fixture(scope="module")
def combos_checked(files):
    """Whether this ComfyUI checks V3 combo values itself (0.33 does, 0.3.64 does not), found by running."""
    prompt = base_prompt(files, "UltraGenResolution")
    prompt["n"]["inputs"]["rounding"] = "sideways"
    return not files.validate(prompt)[0]


def test_the_walk_sees_every_pack_node(comfy):
    assert {"UltraGenAttentionSettings", "UltraGenApply", "UltraGenResolution", "UltraGenCompare",
            "UltraGenTiledVAEDecode", "UltraGenLoadWeights", "UltraGenProxyGuidance", "UltraGenUpscaleLatent",
            "UltraGenSplitAcrossGPUs", "UltraGenDemoModel", "UltraGenDemoPrompt", "UltraGenDemoLatent",
            "UltraGenDemoDecode"} <= set(pack_nodes(comfy))


def test_every_base_prompt_is_valid(files):
    for node in pack_nodes(files):
        ok, error, _, node_errors = files.validate(base_prompt(files, node))
        assert ok, (node, error, node_errors)


@pytest.mark.parametrize("node", ["UltraGenAttentionSettings", "UltraGenApply", "UltraGenResolution",
                                  "UltraGenCompare", "UltraGenTiledVAEDecode", "UltraGenLoadWeights",
                                  "UltraGenProxyGuidance", "UltraGenUpscaleLatent", "UltraGenSplitAcrossGPUs",
                                  "UltraGenDemoModel", "UltraGenDemoPrompt", "UltraGenDemoLatent",
                                  "UltraGenDemoDecode"])
def test_every_widget_value_is_refused_once_at_its_input(files, combos_checked, node):
    assert walk_widgets(files, node, combos_checked) == []


def test_no_pack_node_is_left_out_of_the_walk(comfy):
    walked = {"UltraGenAttentionSettings", "UltraGenApply", "UltraGenResolution", "UltraGenCompare",
              "UltraGenTiledVAEDecode", "UltraGenLoadWeights", "UltraGenProxyGuidance", "UltraGenUpscaleLatent",
              "UltraGenSplitAcrossGPUs", "UltraGenDemoModel", "UltraGenDemoPrompt", "UltraGenDemoLatent",
              "UltraGenDemoDecode"}
    assert set(pack_nodes(comfy)) == walked, "a new node: add it to the walk's parametrize lists"


@pytest.mark.parametrize("node", ["UltraGenCompare", "UltraGenTiledVAEDecode", "UltraGenProxyGuidance",
                                  "UltraGenUpscaleLatent", "UltraGenDemoDecode"])
def test_every_bad_tensor_is_refused_cleanly_or_used(files, node):
    assert walk_tensors(files, node) == []


def test_only_these_nodes_take_tensors(comfy):
    takes = {name for name, cls in pack_nodes(comfy).items()
             if any(i.get_io_type() in ("LATENT", "IMAGE") for i in cls.define_schema().inputs)}
    assert takes == {"UltraGenCompare", "UltraGenTiledVAEDecode", "UltraGenProxyGuidance", "UltraGenUpscaleLatent",
                     "UltraGenDemoDecode"}


def test_a_validate_inputs_that_hides_a_range_check_fails_the_walk(files, combos_checked, monkeypatch):
    """The bug class of issue 25: a node's own check names inputs (turning ComfyUI's min / max off for them)
    and checks only its own rule. Put back into Split Video Across GPUs, the walk must say so."""
    cls = pack_nodes(files)["UltraGenSplitAcrossGPUs"]

    def validate_inputs(cls, gpus=None, cfg_groups=None):
        if gpus is None or cfg_groups is None:
            return True
        return "cfg_groups must divide gpus" if gpus % cfg_groups else True

    monkeypatch.setattr(cls, "validate_inputs", classmethod(validate_inputs), raising=False)
    problems = walk_widgets(files, "UltraGenSplitAcrossGPUs", combos_checked)
    assert any(p.startswith("UltraGenSplitAcrossGPUs.gpus below min") and "passed validation" in p for p in problems)
    assert any(p.startswith("UltraGenSplitAcrossGPUs.cfg_groups below min") for p in problems)  # modulo by zero
    assert any("gpus wrong type" in p for p in problems), problems  # "two" % 1: raised inside validate_inputs
