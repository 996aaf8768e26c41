"""One place that builds the pack's io.Schema, passing only what the running ComfyUI supports, and the rule
every node's own input check follows.

The rule (ComfyUI's execution.validate_inputs, 0.3.64 and 0.33): for every input that a node's
``validate_inputs`` names (every input, with ``**kwargs``), ComfyUI

- skips its own min / max / combo check,
- still converts the value to the widget's type first, reporting a failed conversion itself, and then
  calls ``validate_inputs`` with the raw value anyway,
- shows the node's message once under each named input, prefixed with that input's name,
- shows an exception raised by ``validate_inputs`` as "Exception when validating inner node", under an
  input of the node downstream.

So a node's own check names only the input it is about (a rule about two inputs is checked when the node
runs: a message here would be shown twice), re-does what it takes over (:func:`own_check`), returns
True for a value of the wrong type (ComfyUI already said so), never raises, and does not repeat the input
name. Anything ComfyUI's checks let through (NaN floats, V3 combos on 0.3.64, tensors) is refused when the
node runs, by a message naming the input. tests/comfyui/test_schema_walk.py holds every node to this.
"""
from __future__ import annotations

import inspect
import math
from typing import Any, Callable

from comfy_api.latest import io

# search_aliases came to io.Schema after ComfyUI 0.3.64; older versions would refuse the keyword.
SUPPORTS_SEARCH_ALIASES = "search_aliases" in inspect.signature(io.Schema).parameters

# Words users type in node search that no node name contains; every UltraGen node answers to them.
PACK_ALIASES = ("ultragen", "native resolution", "native 4k", "4k video", "1080p video", "high resolution video")

# The Python type ComfyUI converts each widget type's value to before validate_inputs sees it.
WIDGET_TYPES = {"INT": int, "FLOAT": float, "STRING": str, "BOOLEAN": bool}


def schema(*, search_aliases: tuple[str, ...] = (), **kwargs) -> io.Schema:
    """io.Schema(**kwargs), plus the pack's and the node's search aliases where ComfyUI supports them."""
    if SUPPORTS_SEARCH_ALIASES:
        kwargs["search_aliases"] = list(dict.fromkeys((*search_aliases, *PACK_ALIASES)))
    return io.Schema(**kwargs)


def widget(node: type[io.ComfyNode], name: str) -> io.WidgetInput:
    """The input ``name`` of a node's schema."""
    for item in node.define_schema().inputs:
        if item.id == name:
            return item
    raise KeyError(f"{node.__name__} has no input {name!r}")


def own_check(node: type[io.ComfyNode], name: str, value: Any,
              rule: Callable[[Any], str | None] = lambda value: None) -> bool | str:
    """What ``validate_inputs`` returns for the input ``name`` it takes over: ComfyUI's skipped min / max /
    options check re-done from the schema, then the node's own ``rule`` (a message without the input's name,
    or None). True for None (a linked input: checked when the node runs) and for a value ComfyUI could not
    convert to the widget's type (it reported that itself)."""
    if value is None:
        return True
    item = widget(node, name)
    io_type = item.get_io_type()
    expected = WIDGET_TYPES.get(io_type)
    if expected is not None and (not isinstance(value, expected) or (expected is int and isinstance(value, bool))):
        return True
    if io_type in ("INT", "FLOAT"):
        low, high = getattr(item, "min", None), getattr(item, "max", None)
        if low is not None and value < low or high is not None and value > high:
            return f"{value} is outside {low} to {high}: set a value within the widget's limits."
        if expected is float and not math.isfinite(value):
            return f"{value} is not a number: set one from {low} to {high}."
    options = getattr(item, "options", None)
    if io_type == "COMBO" and options is not None and value not in options:
        shown = ", ".join(repr(o) for o in options[:8]) + (f" ({len(options)} in all)" if len(options) > 8 else "")
        return f"{value!r} is not one of the choices: {shown or 'none'}."
    return rule(value) or True


def unnamed(message: str | None, name: str) -> str | None:
    """A core message without its leading input name (ComfyUI puts the name in front of the node's own)."""
    if message is None:
        return None
    for prefix in (f"{name}: ", f"{name} "):
        if message.startswith(prefix):
            return message[len(prefix):]
    return message
