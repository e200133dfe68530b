"""File names are bytes on Linux. Python hands a name that is not valid UTF-8 over as a str with lone surrogates
(surrogateescape), which SQLite refuses as TEXT. Such a path is stored as a BLOB of its exact bytes instead, and
read back into the same str: every name round-trips losslessly, and `WHERE path = ?` finds it either way."""

from __future__ import annotations

import os


def to_db(path: str) -> str | bytes:
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        return os.fsencode(path)
    return path


def from_db(value: str | bytes) -> str:
    return os.fsdecode(value) if isinstance(value, bytes) else value


def maybe_from_db(value: str | bytes | None) -> str | None:
    return None if value is None else from_db(value)
