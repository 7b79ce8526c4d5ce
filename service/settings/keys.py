"""Secrets read from files: a key given as a mounted file never appears in ``ps`` or in
shell history. Used by :class:`Settings`' before-validators, so the file is read once,
while the settings are built, and a bad file fails start-up with one line."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def key_from_file(data: Any, *, key: str, what: str) -> Any:
    """Fill ``data[key]`` from the file named by ``data[key + "_file"]`` (stripped).

    ``what`` names the key in messages ("the API key"). Giving both the key and its file
    is refused: which one wins would be a guess.
    """
    file_field = f"{key}_file"
    if not isinstance(data, dict) or not data.get(file_field):
        return data
    if data.get(key):
        raise ValueError(f"give {what} once: {key} or {file_field}, not both")
    path = Path(data[file_field])
    try:
        value = path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"cannot read {what} file {path}: {exc}") from None
    if not value:
        raise ValueError(f"{what} file {path} is empty")
    return {**data, key: value}
