"""Run results: ``results.json`` written atomically, never half-written."""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path


def to_number(value):
    """Tensors and numpy scalars -> float; NaN -> None (JSON has no NaN)."""
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def write_bytes_atomic(path: str | Path, data: bytes) -> Path:
    """Writes ``data`` to a temp file beside ``path`` and renames it into place, so a reader
    sees the old file or the whole new one, never half of it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_json_atomic(path: str | Path, payload: dict) -> Path:
    return write_bytes_atomic(path, (json.dumps(payload, indent=2) + "\n").encode())


def read_results(path: str | Path) -> dict:
    with open(path) as f:
        return json.load(f)
