"""Turn a ComfyUI UI-format workflow (LiteGraph, version 0.4) into an API prompt, checked against the real
node registry, the way the browser frontend does it.

What the frontend does, and this module mirrors:
- every input of a node class whose type is INT / FLOAT / STRING / BOOLEAN / COMBO (or a V1 option list)
  and that is not ``forceInput`` is a widget, in INPUT_TYPES order (required, then optional);
- ``widgets_values`` holds one value per widget, plus one extra value after an INT (or COMBO) with
  ``control_after_generate`` (INT inputs named ``seed`` / ``noise_seed`` get it by default), and after an
  input with ``image_upload`` / ``video_upload`` / ``audio_upload`` (the upload button);
- a widget converted to an input and connected takes its value from the link; its old value stays in
  ``widgets_values``;
- a workflow saved before optional widgets were appended to a node has fewer values; those widgets keep
  their defaults (left out of the API prompt);
- Note / MarkdownNote nodes exist only in the browser; muted nodes (mode 2) are left out.
"""
from __future__ import annotations

from dataclasses import dataclass

WIDGET_TYPES = ("INT", "FLOAT", "STRING", "BOOLEAN", "COMBO")
FRONTEND_ONLY = ("Note", "MarkdownNote")
UPLOAD_KEYS = ("image_upload", "video_upload", "audio_upload")
MUTED, BYPASSED = 2, 4


def _plain(t) -> str:
    """Type names as plain str: ComfyUI's IO / _StringIOType make "*" compare equal to everything."""
    return "COMBO" if isinstance(t, (list, tuple)) else str.__str__(t)


@dataclass(frozen=True)
class InputSpec:
    name: str
    type: str          # "COMBO" for option lists
    options: dict
    required: bool
    widget: bool
    extra_values: int  # values after this widget's own in widgets_values (control / upload widgets)


def input_specs(node_class) -> list[InputSpec]:
    """The inputs of a registered node class, in the order the frontend lays out its widgets."""
    types = node_class.INPUT_TYPES()
    specs = []
    for section in ("required", "optional"):
        for name, spec in (types.get(section) or {}).items():
            kind, opts = _plain(spec[0]), (spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {})
            widget = kind in WIDGET_TYPES and not opts.get("forceInput", False)
            extra = 0
            if widget:
                control = opts.get("control_after_generate")
                if kind == "INT" and (control if control is not None else name in ("seed", "noise_seed")):
                    extra += 1
                elif kind == "COMBO" and control:
                    extra += 1
                extra += sum(1 for k in UPLOAD_KEYS if opts.get(k))
            specs.append(InputSpec(name, kind, opts, section == "required", widget, extra))
    return specs


def output_types(node_class) -> list[str]:
    return [_plain(t) for t in node_class.RETURN_TYPES]


def types_match(output: str, wanted: str) -> bool:
    if output == "*" or wanted == "*":
        return True
    return bool(set(output.split(",")) & set(wanted.split(",")))


def _value_ok(spec: InputSpec, value) -> bool:
    if spec.type == "INT":
        return isinstance(value, int) and not isinstance(value, bool)
    if spec.type == "FLOAT":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if spec.type == "BOOLEAN":
        return isinstance(value, bool)
    if spec.type == "STRING":
        return isinstance(value, str)
    return isinstance(value, (str, int, float))  # COMBO: membership is validate_prompt's job (files vary)


class ConversionError(ValueError):
    pass


def ui_to_api(workflow: dict, registry: dict) -> dict:
    """API prompt ``{id: {class_type, inputs, _meta}}`` of a UI workflow; raises ConversionError listing
    every unknown node, bad link, wrong link type, wrong widget count or wrong widget value type."""
    problems: list[str] = []
    nodes = {n["id"]: n for n in workflow["nodes"]}
    links = {}
    for link in workflow.get("links", []):
        link_id, src, src_slot, dst, dst_slot, ltype = link[:6]
        links[link_id] = (src, src_slot, dst, dst_slot, ltype)
    prompt = {}
    for node in workflow["nodes"]:
        nid, ntype = node["id"], node["type"]
        where = f"node {nid} ({ntype})"
        if ntype in FRONTEND_ONLY or node.get("mode", 0) == MUTED:
            continue
        if node.get("mode", 0) == BYPASSED:
            problems.append(f"{where}: bypassed nodes are not supported by this converter")
            continue
        cls = registry.get(ntype)
        if cls is None:
            problems.append(f"{where}: unknown node type (not in NODE_CLASS_MAPPINGS)")
            continue
        specs = input_specs(cls)
        by_name = {s.name: s for s in specs}
        inputs: dict = {}
        # widgets, in order
        values = list(node.get("widgets_values") or [])
        widgets = [s for s in specs if s.widget]
        # a workflow saved before optional widgets were appended to a node has fewer values: the
        # frontend keeps those widgets at their defaults, and the API prompt leaves them out
        present = widgets
        while present and not present[-1].required and sum(1 + s.extra_values for s in present) > len(values):
            present = present[:-1]
        expected = sum(1 + s.extra_values for s in present)
        if len(values) != expected:
            problems.append(f"{where}: {len(values)} widget values, the node has "
                            f"{sum(1 + s.extra_values for s in widgets)} ({[s.name for s in widgets]})")
        else:
            i = 0
            for s in present:
                if not _value_ok(s, values[i]):
                    problems.append(f"{where}: widget {s.name} ({s.type}) got {values[i]!r}")
                inputs[s.name] = values[i]
                i += 1 + s.extra_values
        # links
        for slot, inp in enumerate(node.get("inputs") or []):
            link_id = inp.get("link")
            name = inp.get("name")
            if name not in by_name:
                problems.append(f"{where}: input {name!r} does not exist on the node")
                continue
            if link_id is None:
                continue
            if link_id not in links:
                problems.append(f"{where}: input {name} names link {link_id}, which is not in links")
                continue
            src, src_slot, dst, dst_slot, ltype = links[link_id]
            if dst != nid or dst_slot != slot:
                problems.append(f"{where}: link {link_id} ends at node {dst} slot {dst_slot}, not here (slot {slot})")
            src_node = nodes.get(src)
            src_cls = registry.get(src_node["type"]) if src_node else None
            if src_cls is None:
                problems.append(f"{where}: input {name} comes from unknown node {src}")
                continue
            outs = output_types(src_cls)
            if src_slot >= len(outs):
                problems.append(f"{where}: link {link_id} leaves output {src_slot} of {src_node['type']}, "
                                f"which has {len(outs)} outputs")
                continue
            wanted = by_name[name].type
            if not types_match(outs[src_slot], ltype) or not types_match(ltype, wanted):
                problems.append(f"{where}: input {name} ({wanted}) linked to {src_node['type']} output "
                                f"{src_slot} ({outs[src_slot]}) with link type {ltype}")
            inputs[name] = [str(src), src_slot]
        for s in specs:
            if s.required and not s.widget and s.name not in inputs:
                problems.append(f"{where}: required input {s.name} ({s.type}) is not connected")
        prompt[str(nid)] = {"class_type": ntype, "inputs": inputs, "_meta": {"title": node.get("title", ntype)}}
    if problems:
        raise ConversionError("workflow does not match the node registry:\n  " + "\n  ".join(problems))
    return prompt
