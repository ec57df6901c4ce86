"""The `objects` YAML read as upstream's Go YAML library reads it into its fields.

Users' SecretProviderClasses were written for the Go provider, which decodes
each object into string fields with gopkg.in/yaml.v3. That library gives a
string field the scalar exactly as written: unquoted `filePermission: 0644`
is the text "0644", where a YAML 1.1 reader (PyYAML) would see the integer
420. So scalars are taken from the composed node tree, never constructed.
"""

from __future__ import annotations

import re
import threading
from collections import OrderedDict

import yaml

from kvmount.base import numbers
from kvmount.keyvault.errors import InvalidSpec

_NULL = "tag:yaml.org,2002:null"
_GO_FLOAT = re.compile(r"[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?")
_INT32 = 2**31
# A class's objects are composed again on every mount of every pod that uses it, and
# PyYAML's pure-Python composer was a sixth of a mount's CPU (bench/RESULTS.md). Recent
# documents' node trees are kept, up to this many bytes of text (nodes are only read).
_CACHE_BYTES = 256 * 1024
_cache: OrderedDict[str, yaml.Node | None] = OrderedDict()
_cache_bytes = 0
_cache_lock = threading.Lock()


def _where(err: yaml.YAMLError) -> str:
    mark = getattr(err, "problem_mark", None)
    return f"line {mark.line + 1}, column {mark.column + 1}" if mark else "syntax error"


def _composed(text: str) -> yaml.Node | None:
    global _cache_bytes
    with _cache_lock:
        if text in _cache:
            _cache.move_to_end(text)
            return _cache[text]
    node = yaml.compose(text)
    if len(text) <= _CACHE_BYTES // 8:
        with _cache_lock:
            if text not in _cache:
                _cache[text] = node
                _cache_bytes += len(text)
            while _cache_bytes > _CACHE_BYTES:
                _cache_bytes -= len(_cache.popitem(last=False)[0])
    return node


def compose(field: str, text: str) -> yaml.Node | None:
    try:
        return _composed(text)
    except yaml.YAMLError as err:
        raise InvalidSpec(field, f"is not valid YAML ({_where(err)})") from None
    except RecursionError:  # the composer recurses per level: thousands of [ or { exhaust the stack
        raise InvalidSpec(field, "is nested too deeply; objects are a list of flat mappings") from None


def is_null(node: yaml.Node | None) -> bool:
    return node is None or (isinstance(node, yaml.ScalarNode) and node.tag == _NULL and not node.style)


def mapping(field: str, node: yaml.Node, what: str) -> dict[str, yaml.Node]:
    """A mapping's entries by key; duplicate keys are refused, as yaml.v3 refuses them."""
    if not isinstance(node, yaml.MappingNode):
        raise InvalidSpec(field, f"must be a YAML mapping of {what}")
    entries: dict[str, yaml.Node] = {}
    for key, value in node.value:
        if not isinstance(key, yaml.ScalarNode):
            raise InvalidSpec(field, "has a key that is not a plain name")
        if key.value in entries:
            raise InvalidSpec(field, f"sets {key.value!r} twice")
        entries[key.value] = value
    return entries


def string(field: str, node: yaml.Node | None) -> str:
    """A string field: the scalar as written (null is empty), surrounding whitespace trimmed as upstream."""
    if is_null(node):
        return ""
    if not isinstance(node, yaml.ScalarNode):
        raise InvalidSpec(field, "must be a single value, not a list or mapping")
    return str(node.value).strip()


def int32(field: str, node: yaml.Node | None) -> int:
    """An integer field as yaml.v3 decodes one: unquoted, Go's integer spellings or an integral float."""
    if is_null(node):
        return 0
    if not isinstance(node, yaml.ScalarNode) or node.style:
        raise InvalidSpec(field, "must be an unquoted whole number, e.g. 3")
    plain = node.value.replace("_", "")
    try:
        # Bounded in length there: a number of thousands of digits is refused, not int()'s error.
        return numbers.go_integer(plain, -_INT32, _INT32 - 1)
    except numbers.NumberError as err:
        refused = str(err)
    if len(plain) <= numbers.MAX_LENGTH and _GO_FLOAT.fullmatch(plain) and float(plain).is_integer():
        number = int(float(plain))
        if -_INT32 <= number < _INT32:
            return number
    raise InvalidSpec(field, refused)
