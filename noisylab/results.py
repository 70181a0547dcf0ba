"""Run results: ``results.json`` written atomically, never half-written, readable by others
like any file the user creates (mode 0666 less the umask, usually 0644)."""

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


def file_mode() -> int:
    """The mode ``open(path, "w")`` would give a new file: 0666 less the umask (mkstemp's
    temp files are 0600, unreadable by the user's group)."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def commit(tmp: str | Path, path: str | Path) -> None:
    """Makes the finished temp file ``tmp`` the file ``path``: flushed to disk, given the
    normal mode, renamed over ``path`` in one step (atomic on one file system)."""
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.chmod(tmp, file_mode())
    os.replace(tmp, path)


def write_bytes_atomic(path: str | Path, data: bytes) -> Path:
    """Writes ``data`` to a temp file beside ``path`` and renames it into place, so a reader
    sees the old file or the whole new one, never half of it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as f:
            f.write(data)
        commit(tmp, path)
    except BaseException as error:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(error, OSError) and error.filename == tmp:  # name the file the user knows
            error.filename = str(path)
        raise
    return path


def unwritable(error: OSError, where) -> str:
    """One sentence for an output that cannot be written (no permission, a file where a
    folder goes, a full disk)."""
    if isinstance(error, (FileExistsError, NotADirectoryError)):  # mkdir of a folder over a file
        return f"cannot write {error.filename or where}: a file stands where a folder must be; choose another place."
    return f"cannot write {error.filename or where} ({error.strerror or error}); choose another place."


def write_json_atomic(path: str | Path, payload: dict) -> Path:
    return write_bytes_atomic(path, (json.dumps(payload, indent=2) + "\n").encode())


def read_results(path: str | Path) -> dict:
    with open(path) as f:
        return json.load(f)


def _json_kind(value) -> str:
    return "null" if value is None else type(value).__name__


def not_a_record(run) -> str | None:
    """What makes a parsed ``results.json`` unusable here (another tool's file, a hand edit),
    or None: the fields the report reads, with their types."""
    if not isinstance(run, dict):
        return f"a JSON {_json_kind(run)}, not an object"
    for key, wanted in (("method", str), ("data", str), ("metrics", dict), ("noise", dict)):
        if key not in run:
            return f"its {key} is missing"
        if not isinstance(run[key], wanted):
            return f"its {key} is {_json_kind(run[key])}, expected {wanted.__name__}"
    for key in ("config", "identity"):
        if key in run and not isinstance(run[key], dict):
            return f"its {key} is {_json_kind(run[key])}, expected dict"
    for name, value in run["metrics"].items():
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
            return f"its metric {name} is {value!r}, not a number"
    return None
