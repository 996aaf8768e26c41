"""Turn a ComfyUI UI-format workflow (LiteGraph, version 0.4) into an API prompt, checked against the real
node registry, the way the browser frontend does it.

What the frontend does, and this module mirrors:
- every input of a node class whose type is INT / FLOAT / STRING / BOOLEAN / COMBO (or a V1 option list),
  or whose options name such a ``widgetType`` (a V3 multi-type input such as ``"FLOAT,INT"``), and that is
  not ``forceInput`` is a widget, in INPUT_TYPES order (required, then optional);
- ``widgets_values`` holds one value per widget, plus one extra value after an INT (or COMBO) with
  ``control_after_generate`` (INT inputs named ``seed`` / ``noise_seed`` get it by default), and after an
  input with ``image_upload`` / ``video_upload`` / ``audio_upload`` (the upload button);
- a widget converted to an input and connected takes its value from the link; its old value stays in
  ``widgets_values``;
- a workflow saved before optional widgets were appended to a node has fewer values; those widgets keep
  their defaults (left out of the API prompt);
- a V3 dynamic combo (``COMFY_DYNAMICCOMBO_V3``, e.g. ``SaveVideo.format`` in ComfyUI 0.33) is one widget
  whose chosen option brings its own widgets right after it, recursively; the API prompt names them
  ``<combo>.<input>`` (``format.codec``). Inputs marked ``hidden`` have no widget.
- Note / MarkdownNote nodes exist only in the browser; muted nodes (mode 2) are left out.
"""
from __future__ import annotations

from dataclasses import dataclass

DYNAMIC_COMBO = "COMFY_DYNAMICCOMBO_V3"
WIDGET_TYPES = ("INT", "FLOAT", "STRING", "BOOLEAN", "COMBO", DYNAMIC_COMBO)
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
    return specs_of(node_class.INPUT_TYPES())


def specs_of(types: dict) -> list[InputSpec]:
    """InputSpecs of an INPUT_TYPES-style dict (a node's, or a dynamic combo option's ``inputs``)."""
    specs = []
    for section in ("required", "optional"):
        for name, spec in (types.get(section) or {}).items():
            kind, opts = _plain(spec[0]), (spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {})
            shown = _widget_type(kind, opts)
            widget = shown in WIDGET_TYPES and not opts.get("forceInput", False) and not opts.get("hidden", False)
            extra = 0
            if widget:
                control = opts.get("control_after_generate")
                if shown == "INT" and (control if control is not None else name in ("seed", "noise_seed")):
                    extra += 1
                elif shown == "COMBO" and control:
                    extra += 1
                extra += sum(1 for k in UPLOAD_KEYS if opts.get(k))
            specs.append(InputSpec(name, kind, opts, section == "required", widget, extra))
    return specs


def _widget_type(kind: str, opts: dict) -> str:
    """The widget an input shows: its type, or for a V3 multi-type input (e.g. ``"FLOAT,INT"``, ComfyUI 0.33's
    LTXVEmptyLatentAudio.frame_rate) the ``widgetType`` its options name."""
    return opts.get("widgetType", kind)


def read_widgets(specs: list[InputSpec], values: list, pos: int, prefix: str, inputs: dict,
                 problems: list[str], where: str) -> int:
    """Assign ``values[pos:]`` to the widgets of ``specs`` (into ``inputs``, names prefixed); returns the
    position after the last value used. Trailing optional widgets without a value keep their defaults."""
    widgets = [s for s in specs if s.widget]
    for n, s in enumerate(widgets):
        if pos >= len(values):
            missing = [w.name for w in widgets[n:] if w.required]
            if missing:
                problems.append(f"{where}: {len(values)} widget values, no value for {prefix}{missing[0]}")
            return pos
        value = values[pos]
        if not _value_ok(s, value):
            problems.append(f"{where}: widget {prefix}{s.name} ({s.type}) got {value!r}")
        inputs[prefix + s.name] = value
        pos += 1 + s.extra_values
        if s.type == DYNAMIC_COMBO:
            chosen = [o for o in s.options.get("options", []) if o.get("key") == value]
            if not chosen:
                keys = [o.get("key") for o in s.options.get("options", [])]
                problems.append(f"{where}: widget {prefix}{s.name} got {value!r}, not one of {keys}")
                return pos
            pos = read_widgets(specs_of(chosen[0].get("inputs") or {}), values, pos, f"{prefix}{s.name}.",
                               inputs, problems, where)
    return pos


def output_types(node_class) -> list[str]:
    return [_plain(t) for t in node_class.RETURN_TYPES]


def types_match(output: str, wanted: str) -> bool:
    if output == "*" or wanted == "*":
        return True
    return bool(set(output.split(",")) & set(wanted.split(",")))


def _value_ok(spec: InputSpec, value) -> bool:
    shown = _widget_type(spec.type, spec.options)
    if shown == "INT":
        return isinstance(value, int) and not isinstance(value, bool)
    if shown == "FLOAT":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if shown == "BOOLEAN":
        return isinstance(value, bool)
    if shown in ("STRING", DYNAMIC_COMBO):
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
        used = read_widgets(specs, values, 0, "", inputs, problems, where)
        if used < len(values):
            problems.append(f"{where}: {len(values)} widget values, the node "
                            f"takes {used} ({[s.name for s in specs if s.widget]} and their options)")
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
