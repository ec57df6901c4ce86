"""Small JSON state files, replaced atomically and readable by root only."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from typing import Any


def write_json(path: str, doc: Any) -> None:
    """Replace ``path`` atomically with ``doc`` as JSON, readable by root only."""
    directory = os.path.dirname(path)
    os.makedirs(directory, mode=0o700, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(doc, fh, indent=1, sort_keys=True)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
