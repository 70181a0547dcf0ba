"""What a Lightning checkpoint holds, read without PyTorch (so that ``ckpt_path`` is checked
before the heavy imports): its epoch, hyperparameters and noisylab's records.

``torch.save`` writes a zip archive whose ``<name>/data.pkl`` is a pickle of the checkpoint
dict, tensors referring to storages kept beside it. :func:`read_checkpoint` unpickles only
that dict, with every class other than plain containers replaced by an inert stand-in (no
code from the file runs, no tensor is loaded): enough to read numbers, strings and nested
dicts such as ``epoch`` and ``hyper_parameters``.
"""

from __future__ import annotations

import collections
import pickle
import zipfile
from pathlib import Path

from noisylab.errors import ConfigError

LIGHTNING_KEYS = ("pytorch-lightning_version", "state_dict", "epoch")
PLAIN = {("collections", "OrderedDict"): collections.OrderedDict, ("builtins", "set"): set,
         ("builtins", "frozenset"): frozenset, ("builtins", "slice"): slice, ("builtins", "complex"): complex}


class Opaque:
    """Stands in for any object of the pickle that is not a plain container (tensors, RNG states)."""

    def __init__(self, *args, **kwargs):
        pass

    def __setstate__(self, state):
        pass

    def __call__(self, *args, **kwargs):
        return Opaque()


class PlainUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        return PLAIN.get((module, name), Opaque)

    def persistent_load(self, pid):  # tensor storages: not read
        return Opaque()


def read_checkpoint(path: Path) -> dict:
    """The checkpoint dict of ``path`` (tensors as stand-ins); ``ConfigError`` naming the file
    when it is not a readable Lightning checkpoint."""
    where = f"ckpt_path={path}"
    if not path.exists():
        raise ConfigError(f"{where} does not exist; give a checkpoint of an earlier run "
                          "(<run dir>/checkpoints/last.ckpt).")
    if not path.is_file():
        raise ConfigError(f"{where} is not a file; give a checkpoint of an earlier run "
                          "(<run dir>/checkpoints/last.ckpt).")
    try:
        with zipfile.ZipFile(path) as archive:
            pickles = [name for name in archive.namelist() if name.endswith("/data.pkl") or name == "data.pkl"]
            if not pickles:
                raise ValueError("no data.pkl in the archive")
            with archive.open(pickles[0]) as handle:
                checkpoint = PlainUnpickler(handle).load()
    except Exception as error:  # noqa: BLE001 - any reader failure is the same user error
        raise ConfigError(f"{where} is not a readable PyTorch Lightning checkpoint ({type(error).__name__}: "
                          f"{(str(error).splitlines() or ['unreadable'])[0]}).") from None
    if not isinstance(checkpoint, dict) or any(key not in checkpoint for key in LIGHTNING_KEYS):
        raise ConfigError(f"{where} is a PyTorch file but not a Lightning checkpoint (it lacks "
                          f"{', '.join(LIGHTNING_KEYS)}).")
    return checkpoint


def written_by_noisylab(checkpoint: dict) -> bool:
    """Whether a checkpoint dict is one a noisylab run saved: its records (``noisylab_*``) or,
    in older runs, the state of its ``LastCheckpoint`` callback."""
    callbacks = checkpoint.get("callbacks")
    return any(str(key).startswith("noisylab_") for key in checkpoint) or (
        isinstance(callbacks, dict) and "LastCheckpoint" in callbacks)
