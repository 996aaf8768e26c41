"""A small builder for ComfyUI UI-format workflows (LiteGraph version 0.4), and a thumbnail renderer.

Used by ``tests/make_workflows.py`` to write ``workflows/*.json`` and ``*.jpg``. Node inputs / outputs are
laid out from the real node registry (INPUT_TYPES / RETURN_TYPES), so widget order and socket types are
what the browser builds; ``test_workflows.py`` then checks the written files on their own.
"""
from __future__ import annotations

import uuid

import cv2
import numpy as np

from workflow_api import DYNAMIC_COMBO, input_specs, output_types, specs_of

COLUMN_WIDTH = 370
NODE_WIDTH = 330
ROW_HEIGHT = 26
GAP = 50  # between nodes of a column
GROUP_PAD = 20  # around a group's nodes; its title bar takes GROUP_TITLE more above them
GROUP_TITLE = 50  # the title bar, and room for the node badges drawn above a node's title bar
GROUP_FONT = 24  # frontend 1.27 reads it; 1.49 draws every group title in its own size
NOTE_CHARS_PER_PX = 1 / 5.5  # a MarkdownNote body: characters per row per px of node width (measured 1 / 5.2)
NOTE_ROW = 12  # px per row of note text (measured: about 10 in frontends 1.27 and 1.49, and a margin)


class Node:
    def __init__(self, graph: "Graph", nid: int, ntype: str, cls, widgets: dict, col: int, title: str | None,
                 models: list[dict] | None, color: str | None, span: int = 1):
        self.graph, self.id, self.type, self.cls = graph, nid, ntype, cls
        self.specs = input_specs(cls) if cls is not None else []
        self.widgets = widgets
        self.col, self.title, self.models, self.color, self.span = col, title, models, color, span
        self.below: Node | None = None
        self.links_in: dict[str, int] = {}
        self.links_out: dict[int, list[int]] = {}

    def out(self, slot: int = 0) -> tuple["Node", int]:
        return self, slot


class Graph:
    """Nodes are placed in columns, top to bottom in the order they are added; a note may span columns."""

    def __init__(self, registry: dict):
        self.registry = registry
        self.nodes: list[Node] = []
        self.links: list[list] = []
        self.models: list[dict] = []
        self.aligns: list[tuple[int, tuple[int, ...]]] = []  # (before node index, columns)
        self.groups: list[tuple[str, list[Node], str]] = []

    def align(self, *cols: int) -> None:
        """Start the next nodes of ``cols`` at one height, below everything placed in them so far
        (room for a group title included)."""
        self.aligns.append((len(self.nodes), cols))

    def group(self, title: str, nodes: list[Node], color: str) -> None:
        """A LiteGraph group (a titled frame) around ``nodes``."""
        self.groups.append((title, list(nodes), color))

    def add(self, ntype: str, col: int, title: str | None = None, models: list[dict] | None = None,
            color: str | None = None, below: Node | None = None, **widgets) -> Node:
        """A node at the bottom of column ``col`` (and not higher than the bottom of ``below``)."""
        cls = self.registry[ntype]
        node = Node(self, len(self.nodes) + 1, ntype, cls, widgets, col, title, models, color)
        node.below = below
        names = _widget_names(node.specs, widgets)
        unknown = {k for k in widgets if k not in names and not (k.endswith("_control") and k[:-8] in names)}
        if unknown:
            raise KeyError(f"{ntype} has no widget(s) {sorted(unknown)}")
        for m in models or []:
            if m not in self.models:
                self.models.append(m)
        self.nodes.append(node)
        return node

    def note(self, text: str, col: int, title: str = "Read me", span: int = 2) -> Node:
        """A MarkdownNote ``span`` columns wide (the next nodes of those columns start below it)."""
        node = Node(self, len(self.nodes) + 1, "MarkdownNote", None, {"text": text}, col, title, None, None, span)
        self.nodes.append(node)
        return node

    def connect(self, src: tuple[Node, int] | Node, dst: Node, name: str) -> None:
        node, slot = src if isinstance(src, tuple) else (src, 0)
        spec = next(s for s in dst.specs if s.name == name)
        ltype = output_types(node.cls)[slot]
        link_id = len(self.links) + 1
        self.links.append([link_id, node.id, slot, dst.id, None, ltype if ltype != "*" else spec.type])
        dst.links_in[name] = link_id
        node.links_out.setdefault(slot, []).append(link_id)

    # --- serialisation -------------------------------------------------------------------------------------

    def _widget_values(self, node: Node) -> list:
        if node.cls is None:
            return [node.widgets["text"]]
        return _values(node.type, node.specs, node.widgets)

    def _inputs(self, node: Node) -> list[dict]:
        entries = []
        for s in node.specs:
            if (s.widget or s.options.get("hidden")) and s.name not in node.links_in:
                continue  # hidden inputs (e.g. 0.33 SaveVideo's legacy codec) get no socket either
            link_id = node.links_in.get(s.name)
            entry = {"name": s.name, "type": s.type, "link": link_id}
            if s.widget:
                entry["widget"] = {"name": s.name}
            if not s.required:
                entry["shape"] = 7
            if link_id is not None:
                self.links[link_id - 1][4] = len(entries)
            entries.append(entry)
        return entries

    def _outputs(self, node: Node) -> list[dict]:
        if node.cls is None:
            return []
        names = getattr(node.cls, "RETURN_NAMES", None) or output_types(node.cls)
        return [{"name": name, "type": t, "slot_index": i, "links": node.links_out.get(i, [])}
                for i, (name, t) in enumerate(zip(names, output_types(node.cls)))]

    def _height(self, node: Node, n_inputs: int, n_outputs: int, n_values: int) -> int:
        if node.cls is None:  # a note: its text's rows at its width, and the title bar
            return 50 + NOTE_ROW * _note_rows(node.widgets["text"], int(_width(node) * NOTE_CHARS_PER_PX))
        widgets = sum(1 for s in node.specs if s.widget)
        return 40 + ROW_HEIGHT * (max(n_inputs, n_outputs) + widgets)

    def to_json(self) -> dict:
        ys: dict[int, int] = {}
        out_nodes = []
        boxes: dict[int, tuple[int, int, int, int]] = {}
        for order, node in enumerate(self.nodes):
            for at, cols in self.aligns:
                if at == order:
                    top = max(ys.get(c, 0) for c in cols) + (GROUP_TITLE + 2 * GROUP_PAD if order else 0)
                    ys.update({c: top for c in cols})
            inputs = self._inputs(node)
            outputs = self._outputs(node)
            values = self._widget_values(node)
            width = _width(node)
            height = self._height(node, len(inputs), len(outputs), len(values))
            cols = range(node.col, node.col + node.span)
            y = max(ys.get(c, 0) for c in cols)
            if node.below is not None:
                y = max(y, boxes[node.below.id][1] + boxes[node.below.id][3] + GAP)
            ys.update({c: y + height + GAP for c in cols})
            boxes[node.id] = (node.col * COLUMN_WIDTH, y, width, height)
            props = {"Node name for S&R": node.type}
            if node.models:
                props["models"] = node.models
            entry = {"id": node.id, "type": node.type, "pos": [node.col * COLUMN_WIDTH, y], "size": [width, height],
                     "flags": {}, "order": order, "mode": 0, "inputs": inputs, "outputs": outputs,
                     "properties": props, "widgets_values": values}
            if node.title:
                entry["title"] = node.title
            if node.color:
                entry["color"], entry["bgcolor"] = node.color, node.color
            out_nodes.append(entry)
        groups = []
        for title, members, color in self.groups:
            x0 = min(boxes[n.id][0] for n in members) - GROUP_PAD
            y0 = min(boxes[n.id][1] for n in members) - GROUP_PAD - GROUP_TITLE
            x1 = max(boxes[n.id][0] + boxes[n.id][2] for n in members) + GROUP_PAD
            y1 = max(boxes[n.id][1] + boxes[n.id][3] for n in members) + GROUP_PAD
            groups.append({"id": len(groups) + 1, "title": title, "bounding": [x0, y0, x1 - x0, y1 - y0],
                           "color": color, "font_size": GROUP_FONT, "flags": {}})
        return {
            "id": str(uuid.uuid5(uuid.NAMESPACE_URL, "ultragen/" + "/".join(n.type for n in self.nodes))),
            "revision": 0,
            "last_node_id": len(self.nodes),
            "last_link_id": len(self.links),
            "nodes": out_nodes,
            "links": self.links,
            "groups": groups,
            "config": {},
            "extra": {"ds": {"scale": 0.6, "offset": [40, 40]}},
            "models": self.models,
            "version": 0.4,
        }


def _note_rows(text: str, chars: int) -> int:
    """Rows a MarkdownNote renders ``text`` in, at ``chars`` characters a row: a paragraph's lines join (soft
    breaks), list items and headings start rows, a blank line between blocks takes about one row."""
    lines = []
    for line in text.strip().split("\n"):
        if lines and line.strip() and lines[-1] and not line.startswith(("- ", "#")):
            lines[-1] += " " + line.strip()
        else:
            lines.append(line.strip())
    return sum(1 + len(line) // chars if line else 1 for line in lines)


def _width(node: Node) -> int:
    return NODE_WIDTH + (node.span - 1) * COLUMN_WIDTH


def _chosen(spec, widgets: dict):
    """The inputs (specs) a V3 dynamic combo's chosen option brings, [] for other widgets."""
    if spec.type != DYNAMIC_COMBO:
        return []
    key = widgets.get(spec.name, spec.options.get("default", (spec.options.get("options") or [{}])[0].get("key")))
    option = next((o for o in spec.options.get("options") or [] if o.get("key") == key), None)
    if option is None:
        raise KeyError(f"{spec.name}: {key!r} is not one of its options")
    return specs_of(option.get("inputs") or {})


def _widget_names(specs, widgets: dict) -> set[str]:
    """Widget names of a node, with those of the chosen options of dynamic combos (e.g. SaveVideo's
    ``codec`` under ``format`` in ComfyUI 0.33), which take their values by their own names."""
    names = set()
    for s in specs:
        if s.widget:
            names.add(s.name)
            names |= _widget_names(_chosen(s, widgets), widgets)
    return names


def _values(ntype: str, specs, widgets: dict) -> list:
    """widgets_values in the frontend's order: each widget, its control / upload values, then the widgets of a
    dynamic combo's chosen option (recursively)."""
    values = []
    for s in specs:
        if not s.widget:
            continue
        if s.name in widgets:
            value = widgets[s.name]
        elif "default" in s.options:
            value = s.options["default"]
        elif s.type in ("COMBO", DYNAMIC_COMBO):
            options = s.options.get("options") or []
            value = (options[0].get("key") if s.type == DYNAMIC_COMBO else options[0]) if options else ""
        else:
            raise KeyError(f"{ntype}: give a value for widget {s.name}")
        values.append(value)
        if s.extra_values:
            is_control = s.type in ("INT", "COMBO") and (s.options.get("control_after_generate")
                                                         or s.name in ("seed", "noise_seed"))
            if is_control:
                values.append(widgets.get(f"{s.name}_control", "fixed"))
            if any(s.options.get(k) for k in ("image_upload", "video_upload", "audio_upload")):
                values.append("image")
        values += _values(ntype, _chosen(s, widgets), widgets)
    return values


def _wrap(text: str, width: int, scale: float, thick: int) -> list[str]:
    lines, line = [], ""
    for word in text.split():
        trial = f"{line} {word}".strip()
        if line and cv2.getTextSize(trial, cv2.FONT_HERSHEY_DUPLEX, scale, thick)[0][0] > width:
            lines.append(line)
            line = word
        else:
            line = trial
    return lines + [line] if line else lines


def render_thumbnail(workflow: dict, title: str, description: str, subtitle: str = "UltraGen for ComfyUI",
                     size: tuple[int, int] = (512, 512)) -> np.ndarray:
    """A card picture for the template browser, BGR uint8: the title in large type and the description below
    it, over a dim sketch of the graph. The browsers show the card about 250 px wide (square in ComfyUI
    frontends 1.27 to 1.58) and read nothing but the file name for a custom node pack's template, so this
    picture is where the description is; text is sized to stay readable at half this size."""
    w, h = size
    img = np.full((h, w, 3), (38, 32, 30), np.uint8)
    nodes = {n["id"]: n for n in workflow["nodes"]}
    x0 = min(n["pos"][0] for n in nodes.values())
    y0 = min(n["pos"][1] for n in nodes.values())
    x1 = max(n["pos"][0] + n["size"][0] for n in nodes.values())
    y1 = max(n["pos"][1] + n["size"][1] for n in nodes.values())
    s = min((w - 20) / (x1 - x0), (h - 20) / (y1 - y0))

    def p(x, y):
        return int(10 + (x - x0) * s), int(10 + (y - y0) * s)

    for link in workflow["links"]:
        a, b = nodes[link[1]], nodes[link[3]]
        pa = p(a["pos"][0] + a["size"][0], a["pos"][1] + 30 + 22 * link[2])
        pb = p(b["pos"][0], b["pos"][1] + 30 + 22 * (link[4] or 0))
        cv2.line(img, pa, pb, (90, 90, 90), 1, cv2.LINE_AA)
    for n in nodes.values():
        ultragen = n["type"].startswith("UltraGen")
        fill = (150, 80, 60) if ultragen else (70, 62, 58)
        (ax, ay), (bx, by) = p(*n["pos"]), p(n["pos"][0] + n["size"][0], n["pos"][1] + n["size"][1])
        cv2.rectangle(img, (ax, ay), (bx, by), fill, -1)
    img = (img * 0.35).astype(np.uint8)  # the sketch stays in the background
    font = cv2.FONT_HERSHEY_DUPLEX
    blocks = [(_wrap(title, w - 36, 1.45, 2), 1.45, 2, (255, 255, 255)),
              (_wrap(description, w - 36, 1.0, 2), 1.0, 2, (215, 225, 235))]
    top = 24
    for lines, scale, thick, color in blocks:
        line_h = cv2.getTextSize("Ag", font, scale, thick)[0][1] + int(16 * scale)
        for line in lines:
            top += line_h
            cv2.putText(img, line, (18, top), font, scale, (0, 0, 0), thick + 4, cv2.LINE_AA)
            cv2.putText(img, line, (18, top), font, scale, color, thick, cv2.LINE_AA)
        top += 18
    if top > h - 50:
        raise ValueError(f"thumbnail text for {title!r} runs {top - (h - 50)} px into the footer: shorten it")
    cv2.rectangle(img, (0, h - 44), (w, h), (120, 60, 50), -1)
    tw = cv2.getTextSize(subtitle, font, 0.9, 2)[0][0]
    cv2.putText(img, subtitle, ((w - tw) // 2, h - 13), font, 0.9, (255, 255, 255), 2, cv2.LINE_AA)
    return img
