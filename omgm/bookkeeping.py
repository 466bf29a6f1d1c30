"""The one reader of omgm's bookkeeping files (the fetch lock, reproduce's state, output locks, parts manifests,
stage summaries, run settings): JSON checked against a small shape, so a damaged or hand-edited file is one line
that names the file and what to do (usually: delete it; nothing else is lost), never a traceback deep inside a
stage.

A shape is a type (``int``, ``str``, ``(int, float)``...; ``bool`` is not an ``int`` here), a list ``[shape]``
of items of one shape, or a dict of keys to shapes; a key ending in ``?`` may be absent; the key ``*`` gives the
shape of every other value (a mapping keyed by names). ``object`` accepts anything.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from omgm.errors import OmgmError

DELETE = "delete it and run the command again; nothing else is lost"


class BookkeepingError(OmgmError, OSError):
    """A bookkeeping file that is not in the shape omgm writes."""


def problem(value: Any, shape: Any, where: str = "") -> str | None:
    """What in ``value`` does not fit ``shape`` (``where`` names the place), or None."""
    if isinstance(shape, dict):
        if not isinstance(value, dict):
            return f"{where or 'the file'} is a {type(value).__name__}, not an object"
        rest = shape.get("*")
        named = {k.rstrip("?"): (s, k.endswith("?")) for k, s in shape.items() if k != "*"}
        for key, (sub, optional) in named.items():
            if key not in value:
                if not optional:
                    return f"{where}.{key} is missing" if where else f"'{key}' is missing"
                continue
            found = problem(value[key], sub, f"{where}.{key}" if where else key)
            if found:
                return found
        if rest is not None:
            for key, item in value.items():
                if key not in named:
                    found = problem(item, rest, f"{where}[{key!r}]")
                    if found:
                        return found
        return None
    if isinstance(shape, list):
        if not isinstance(value, list):
            return f"{where or 'the file'} is a {type(value).__name__}, not a list"
        for i, item in enumerate(value):
            found = problem(item, shape[0], f"{where}[{i}]")
            if found:
                return found
        return None
    types = shape if isinstance(shape, tuple) else (shape,)
    if shape is object or (isinstance(value, types) and not (isinstance(value, bool) and bool not in types)):
        return None
    return f"{where or 'the value'} is {json.dumps(value)[:40]}, not {' or '.join(t.__name__ for t in types)}"


def read_bookkeeping(path: str | Path, shape: Any, *, what: str, fix: str = DELETE) -> Any:
    """The JSON of ``path`` checked against ``shape``; None when the file does not exist. ``what`` names the file
    in the error ("the fetch lock"), ``fix`` says what to do about a damaged one."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, RecursionError) as exc:      # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise BookkeepingError(f"{path} ({what}) is damaged ({type(exc).__name__}): {fix}") from None
    found = problem(value, shape)
    if found:
        raise BookkeepingError(f"{path} ({what}) is damaged: {found}: {fix}")
    return value
