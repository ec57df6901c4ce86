"""Manifests as composed YAML nodes, so that every finding can name its line.

A manifest is composed, never constructed: node marks give line numbers, and
scalars stay as written (the API server and the provider read them as text).
The `objects` parameter is YAML inside a YAML string; its items' lines are
mapped back into the file when it is a literal block (`objects: |`), the form
every example uses.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import yaml

from kvmount.base import yamlread
from kvmount.base.yamlread import Unreadable
from kvmount.keyvault import InvalidSpec, goyaml, object_items

_STEP = re.compile(r"\.?([^.\[\]]+)|\[(\d+)\]")


def documents(text: str) -> list[yaml.Node]:
    """The non-empty documents of a multi-document YAML stream; raises Unreadable (exit status 2)."""
    return [doc for doc in yamlread.read(lambda: list(yaml.compose_all(text))) if doc is not None]


def line(node: yaml.Node) -> int:
    return int(node.start_mark.line) + 1


def entries(node: yaml.Node | None) -> dict[str, tuple[yaml.Node, yaml.Node]]:
    """A mapping's (key node, value node) by key; anything else is empty."""
    if not isinstance(node, yaml.MappingNode):
        return {}
    return {str(k.value): (k, v) for k, v in node.value if isinstance(k, yaml.ScalarNode)}


def scalar(node: yaml.Node | None) -> str:
    return str(node.value) if isinstance(node, yaml.ScalarNode) and not goyaml.is_null(node) else ""


def locate(root: yaml.Node, path: str) -> int:
    """The line of ``path`` (``spec.secretObjects[0].data[1].key``), or of its deepest existing part."""
    node, found = root, line(root)
    for name, index in _STEP.findall(path):
        if name:
            pair = entries(node).get(name)
            if pair is None:
                break
            node, found = pair[1], line(pair[0])
        else:
            if not isinstance(node, yaml.SequenceNode) or int(index) >= len(node.value):
                break
            node = node.value[int(index)]
            found = line(node)
    return found


@dataclass
class ObjectItem:
    """One item of `objects`: its index, line and its fields' lines (1-based, in the file)."""

    index: int
    line: int
    name: str = ""
    fields: dict[str, int] = field(default_factory=dict)


def object_lines(value: yaml.Node, key_line: int) -> list[ObjectItem]:
    """Each item of the `objects` parameter (the same items the provider parses), with file lines.

    Lines are exact for a literal block (`objects: |`); otherwise everything is on the key's line.
    """
    text = scalar(value)
    stripped = text.strip()  # the provider trims every parameter
    exact = isinstance(value, yaml.ScalarNode) and value.style == "|"
    # A literal block's content starts on the line after the `|`; trimming drops leading lines.
    base = line(value) + 1 + text[: len(text) - len(text.lstrip())].count("\n") if exact else key_line

    def at(offset: int) -> int:
        return base + offset if exact else key_line

    try:
        nodes = object_items(stripped)
    except InvalidSpec:
        return []
    items: list[ObjectItem] = []
    for index, node in enumerate(nodes):
        item = ObjectItem(index, at(int(node.start_mark.line)))
        inner_base = int(node.start_mark.line)
        if isinstance(node, yaml.ScalarNode):
            # Upstream's `- |` form: a YAML document inside the item, starting on the next line.
            try:
                inner = yamlread.read(yaml.compose, node.value)
            except Unreadable:
                inner = None
            inner_base += 1 if node.style == "|" else 0
            exact_inner = node.style == "|"
        else:
            inner, inner_base, exact_inner = node, 0, True
        for name, (key, val) in entries(inner).items():
            item.fields[name] = at(inner_base + int(key.start_mark.line)) if exact_inner else item.line
            if name == "objectName":
                item.name = scalar(val).strip()
        items.append(item)
    return items
