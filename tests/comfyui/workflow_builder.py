"""A small builder for ComfyUI UI-format workflows (LiteGraph version 0.4), and a thumbnail renderer.

Used by ``tests/make_workflows.py`` to write ``workflows/*.json`` and ``*.jpg``. Node inputs / outputs are
laid out from the real node registry (INPUT_TYPES / RETURN_TYPES), so widget order and socket types are
what the browser builds; ``test_workflows.py`` then checks the written files on their own.
"""
from __future__ import annotations

import uuid

import cv2
import numpy as np

from workflow_api import input_specs, output_types

COLUMN_WIDTH = 420
NODE_WIDTH = 360
ROW_HEIGHT = 26


class Node:
    def __init__(self, graph: "Graph", nid: int, ntype: str, cls, widgets: dict, col: int, title: str | None,
                 models: list[dict] | None, color: str | None):
        self.graph, self.id, self.type, self.cls = graph, nid, ntype, cls
        self.specs = input_specs(cls) if cls is not None else []
        self.widgets = widgets
        self.col, self.title, self.models, self.color = col, title, models, color
        self.links_in: dict[str, int] = {}
        self.links_out: dict[int, list[int]] = {}

    def out(self, slot: int = 0) -> tuple["Node", int]:
        return self, slot


class Graph:
    """Nodes are placed in columns, top to bottom in the order they are added."""

    def __init__(self, registry: dict):
        self.registry = registry
        self.nodes: list[Node] = []
        self.links: list[list] = []
        self.models: list[dict] = []

    def add(self, ntype: str, col: int, title: str | None = None, models: list[dict] | None = None,
            color: str | None = None, **widgets) -> Node:
        cls = self.registry[ntype]
        node = Node(self, len(self.nodes) + 1, ntype, cls, widgets, col, title, models, color)
        names = {s.name for s in node.specs if s.widget}
        unknown = {k for k in widgets if k not in names and not (k.endswith("_control") and k[:-8] in names)}
        if unknown:
            raise KeyError(f"{ntype} has no widget(s) {sorted(unknown)}")
        for m in models or []:
            if m not in self.models:
                self.models.append(m)
        self.nodes.append(node)
        return node

    def note(self, text: str, col: int, title: str = "Read me") -> Node:
        node = Node(self, len(self.nodes) + 1, "MarkdownNote", None, {"text": text}, col, title, None, None)
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
        values = []
        for s in node.specs:
            if not s.widget:
                continue
            if s.name in node.widgets:
                value = node.widgets[s.name]
            elif "default" in s.options:
                value = s.options["default"]
            elif s.type == "COMBO":
                options = s.options.get("options") or []
                value = options[0] if options else ""
            else:
                raise KeyError(f"{node.type}: give a value for widget {s.name}")
            values.append(value)
            if s.extra_values:
                is_control = s.type in ("INT", "COMBO") and (s.options.get("control_after_generate")
                                                             or s.name in ("seed", "noise_seed"))
                if is_control:
                    values.append(node.widgets.get(f"{s.name}_control", "fixed"))
                if any(s.options.get(k) for k in ("image_upload", "video_upload", "audio_upload")):
                    values.append("image")
        return values

    def _inputs(self, node: Node) -> list[dict]:
        entries = []
        for s in node.specs:
            if s.widget and s.name not in node.links_in:
                continue
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
        if node.cls is None:
            return 60 + 18 * (node.widgets["text"].count("\n") + 2)
        widgets = sum(1 for s in node.specs if s.widget)
        return 40 + ROW_HEIGHT * (max(n_inputs, n_outputs) + widgets)

    def to_json(self) -> dict:
        ys: dict[int, int] = {}
        out_nodes = []
        for order, node in enumerate(self.nodes):
            inputs = self._inputs(node)
            outputs = self._outputs(node)
            values = self._widget_values(node)
            width = NODE_WIDTH + (140 if node.cls is None else 0)
            height = self._height(node, len(inputs), len(outputs), len(values))
            y = ys.get(node.col, 0)
            ys[node.col] = y + height + 60
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
        return {
            "id": str(uuid.uuid5(uuid.NAMESPACE_URL, "ultragen/" + "/".join(n.type for n in self.nodes))),
            "revision": 0,
            "last_node_id": len(self.nodes),
            "last_link_id": len(self.links),
            "nodes": out_nodes,
            "links": self.links,
            "groups": [],
            "config": {},
            "extra": {"ds": {"scale": 0.6, "offset": [40, 40]}},
            "models": self.models,
            "version": 0.4,
        }


def render_thumbnail(workflow: dict, title: str, size: tuple[int, int] = (640, 360)) -> np.ndarray:
    """A schematic picture of the graph (boxes, titles, links), BGR uint8, for the template browser."""
    w, h = size
    img = np.full((h, w, 3), (38, 32, 30), np.uint8)
    nodes = {n["id"]: n for n in workflow["nodes"]}
    x0 = min(n["pos"][0] for n in nodes.values())
    y0 = min(n["pos"][1] for n in nodes.values())
    x1 = max(n["pos"][0] + n["size"][0] for n in nodes.values())
    y1 = max(n["pos"][1] + n["size"][1] for n in nodes.values())
    top = 46
    s = min((w - 20) / (x1 - x0), (h - top - 10) / (y1 - y0))

    def p(x, y):
        return int(10 + (x - x0) * s), int(top + (y - y0) * s)

    for link in workflow["links"]:
        a, b = nodes[link[1]], nodes[link[3]]
        pa = p(a["pos"][0] + a["size"][0], a["pos"][1] + 30 + 22 * link[2])
        pb = p(b["pos"][0], b["pos"][1] + 30 + 22 * (link[4] or 0))
        cv2.line(img, pa, pb, (150, 150, 150), 1, cv2.LINE_AA)
    for n in nodes.values():
        ultragen = n["type"].startswith("UltraGen")
        note = n["type"] in ("Note", "MarkdownNote")
        fill = (60, 110, 200) if ultragen else (70, 90, 70) if note else (80, 70, 64)
        (ax, ay), (bx, by) = p(*n["pos"]), p(n["pos"][0] + n["size"][0], n["pos"][1] + n["size"][1])
        cv2.rectangle(img, (ax, ay), (bx, by), fill, -1)
        cv2.rectangle(img, (ax, ay), (bx, by), (200, 200, 200), 1)
        label = n.get("title") or n["type"]
        cv2.putText(img, label[:28], (ax + 3, ay + 11), cv2.FONT_HERSHEY_SIMPLEX, 0.3, (240, 240, 240), 1, cv2.LINE_AA)
    cv2.rectangle(img, (0, 0), (w, top - 8), (25, 20, 20), -1)
    cv2.putText(img, title, (10, 26), cv2.FONT_HERSHEY_SIMPLEX, 0.7, (255, 255, 255), 2, cv2.LINE_AA)
    return img
