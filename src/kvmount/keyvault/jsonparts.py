"""Parts of a JSON secret as files: an object's `jmesPath`, as the AWS provider reads it.

Each path is a JMESPath expression (the `jmespath` package, the language's reference
implementation and the one AWS's provider is ported from) searched in the secret's value
parsed as JSON. A string result is written as it is, any other JSON value JSON-encoded.
Messages name the object and the path, never the value.

A class author writes the paths, so what they may build is bounded: the few functions that
make new strings (to_string, join) and every result written are counted as they grow, against
the provider's --max-object-bytes; a path is at most MAX_PATH_LENGTH characters.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from kvmount.keyvault.errors import Category, InvalidSpec, KeyVaultError
from kvmount.keyvault.types import JsonPart, ObjectSpec

if TYPE_CHECKING:
    from jmespath.functions import Functions
    from jmespath.visitor import Options

# AWS's own examples are a few names deep; 1024 characters leave room for any real path
# and keep the parser's recursion (per nesting level) far from Python's limit.
MAX_PATH_LENGTH = 1024


class _TooLarge(Exception):
    pass


def _bounded(chunks: Iterable[str], limit: int) -> str:
    """Chunks joined, refused once they pass ``limit`` characters (before they are all made)."""
    out: list[str] = []
    size = 0
    for chunk in chunks:
        size += len(chunk)
        if size > limit:
            raise _TooLarge
        out.append(chunk)
    return "".join(out)


def _encode(value: object, limit: int) -> str:
    # Results share their parts (`[@, @]` holds the document twice without copying it), so
    # the encoding is counted as it is made: a few characters of path cannot fill memory.
    encoder = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), check_circular=False)
    return _bounded(encoder.iterencode(value), limit)


def _functions(limit: int) -> Functions:
    """JMESPath's built-in functions, those that build strings bounded by ``limit``."""
    from jmespath import functions

    class Bounded(functions.Functions):
        @functions.signature({"types": []})
        def _func_to_string(self, arg: Any) -> str:
            return arg if isinstance(arg, str) else _encode(arg, limit)

        @functions.signature({"types": ["string"]}, {"types": ["array-string"]})
        def _func_join(self, separator: str, array: list[str]) -> str:
            pieces = (p for i, item in enumerate(array) for p in ((separator, item) if i else (item,)))
            return _bounded(pieces, limit)

    return Bounded()


def check_path(field: str, path: str) -> None:
    """A path's syntax, before any network call (`kvmount validate` too)."""
    # Imported on first use: a node whose classes use no jmesPath never loads it.
    import jmespath

    if len(path) > MAX_PATH_LENGTH:
        raise InvalidSpec(field, f"is {len(path)} characters long, above the limit of {MAX_PATH_LENGTH}")
    try:
        jmespath.compile(path)
    except (jmespath.exceptions.JMESPathError, RecursionError) as err:
        problem = "is nested too deeply" if isinstance(err, RecursionError) else "has a syntax error"
        raise InvalidSpec(field, f"{problem}: {path!r} is not a JMESPath expression") from None


def _where(part: JsonPart) -> str:
    return f"jmesPath {part.path!r} (objectAlias {part.alias!r})"


def _refused(spec: ObjectSpec, problem: str) -> KeyVaultError:
    return KeyVaultError(f"{spec.describe()}: {problem}", Category.INVALID)


def json_part_files(spec: ObjectSpec, value: str, limit: int) -> list[tuple[str, bytes]]:
    """(file name, bytes) of each of the object's JSON parts, in the order of its `jmesPath`."""
    try:
        document = json.loads(value)
    except (ValueError, RecursionError):
        raise _refused(spec, f"{_where(spec.json_parts[0])} needs JSON, and the value is not JSON") from None
    import jmespath

    options = jmespath.Options(custom_functions=_functions(limit))
    files: list[tuple[str, bytes]] = []
    for part in spec.json_parts:
        files.append((part.alias, _search(spec, part, document, options, limit)))
    return files


def _search(spec: ObjectSpec, part: JsonPart, document: object, options: Options, limit: int) -> bytes:
    import jmespath

    where = _where(part)
    try:
        found = jmespath.search(part.path, document, options=options)
        if found is None:
            raise _refused(spec, f"{where} matches nothing in the value")
        text = found if isinstance(found, str) else _encode(found, limit)
    except _TooLarge:
        raise _refused(
            spec, f"{where} makes more than {limit} characters, the provider's limit (--max-object-bytes)"
        ) from None
    except (jmespath.exceptions.JMESPathError, RecursionError):
        # Runtime errors (a function given the wrong type) name the function only; the value stays out.
        raise _refused(spec, f"{where} cannot be evaluated on the value's JSON") from None
    try:
        data = text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate escaped in the JSON (\ud800)
        raise _refused(spec, f"{where} selects text that is not valid Unicode") from None
    if len(data) > limit:
        raise _refused(
            spec, f"{where} makes more than {limit} bytes, the provider's limit (--max-object-bytes)"
        )
    return data
