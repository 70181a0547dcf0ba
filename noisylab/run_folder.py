"""The run folder's life: one decision, made before anything is written (DESIGN.md).

A run folder is *empty*, *unfinished* (``checkpoints/last.ckpt``, no ``results.json``),
*finished* (``results.json``) or *failed* (``error.txt`` only). A run first works out its
*identity* — every resolved config key that can change the training trajectory (method and
settings, data and split, noise, model, protocol and epochs, schedule, quirks, seed, speed
numerics, trainer limits), plus a hash of each file it names (``contents``: the table, the
trusted list, the noise files, a ``data=folder`` tree's image paths), less the
``data.trusted_*`` keys for a method that takes no trusted set — and validates
everything it can, writing nothing. Then
:func:`decide`, a pure function of (folder state, identity, ``resume``, ``ckpt_path``), says
what to do:

=================  ====================  ==========================================
folder             same identity         another identity (or unknown)
=================  ====================  ==========================================
empty / failed     start                 start
unfinished         resume from its       replace (say so), start
                   last.ckpt
finished           skip (one line;       replace (say so), start
                   results.json stays)
foreign            refused (one sentence naming the files), whatever the settings
=================  ====================  ==========================================

A folder is *foreign* when it holds a file a run would remove or write over (its own
``results.json``, a Lightning ``checkpoints/last.ckpt``, another Hydra app's ``.hydra/``) and
nothing shows that noisylab wrote it (:func:`foreign_files`): another tool's outputs are never
cleared to make room.

``resume=false`` starts afresh and replaces whatever the folder holds. An explicit
``ckpt_path=<file>`` resumes from that file (its identity must equal this run's: one sentence
names the first key that differs, with both values) and replaces the folder's earlier run.
``ckpt_path=last`` / ``auto`` name the default's resume, but never replace: a folder holding
another run (or one of unknown settings) is then refused with one sentence. Nothing is removed until
every check has passed (``noisylab.checkpoints.prepare_run_dir`` runs after the decision).

What may change between a run and its resume, because it cannot change what is trained:
``FREE_KEYS`` below (loggers, output paths, progress display, the data's location and
download, the evaluation batch size, where the data lives, the accelerator kind). Everything
else, the number of epochs included (every learning-rate plan, forget-rate schedule and
stage plan is a function of it), is part of the identity.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

# Keys (and key prefixes) that cannot change the training trajectory.
FREE_KEYS = (
    "logger", "paths", "callbacks", "ckpt_path", "resume", "optimized_metric", "task_name", "hydra", "sweep",
    "wandb", "experiment",
    "trainer.enable_progress_bar", "trainer.enable_model_summary", "trainer.log_every_n_steps",
    "trainer.default_root_dir", "trainer.accelerator", "trainer.deterministic", "trainer.enable_checkpointing",
    "trainer.max_time",  # where a run stops (to resume later), not what it trains
    "data.root", "data.download", "data.eval_batch_size", "data.num_workers", "data.on_device",
    "speed.name", "speed.data_on_device",
)
# Files the config names whose contents decide what is trained: the same command after an edit
# of one (labels fixed after `noisylab.suspects`, a rewritten noise file) is another run.
CONTENT_FILES = ("data.file", "data.trusted_list", "noise.load_from", "noise.file", "noise.student_file")
START, RESUME, SKIP = "start", "resume", "skip"
LAST = "last.ckpt"  # noisylab.checkpoints.LAST (not imported: that module imports Lightning)


def _free(key: str) -> bool:
    return any(key == free or key.startswith(free + ".") for free in FREE_KEYS)


def _flatten(value, prefix: str = "") -> dict:
    if isinstance(value, dict):
        flat = {}
        for key, item in value.items():
            flat.update(_flatten(item, f"{prefix}.{key}" if prefix else str(key)))
        return flat
    return {prefix: json.loads(json.dumps(value, default=str))}  # tuples as lists, as read back


def identity(values: dict) -> dict:
    """The run's identity: the resolved config (a plain dict) as ``dotted.key -> value``,
    less the keys that cannot change what is trained."""
    return {key: value for key, value in _flatten(values).items() if not _free(key)}


def contents(values: dict) -> dict:
    """``<key>:sha256`` for each file of ``CONTENT_FILES`` that the resolved config ``values``
    names, and for ``data=folder`` a hash of its image paths (an image's class is its folder):
    added to the identity, so an edited file makes another run, refused as a resume."""
    import hashlib

    mine, found = _flatten(values), {}
    for key in CONTENT_FILES:
        path = Path(str(mine.get(key))).expanduser()
        if mine.get(key) and path.is_file():
            digest = hashlib.sha256()
            with open(path, "rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    digest.update(block)
            found[f"{key}:sha256"] = digest.hexdigest()[:16]
    if mine.get("data.name") == "folder" and mine.get("data.root"):
        from noisylab.data.image_lists import _images_in

        root = Path(str(mine["data.root"])).expanduser()
        if root.is_dir():
            listed = "\n".join(p.relative_to(root).as_posix() for p in _images_in(root))
            found["data.root:images"] = hashlib.sha256(listed.encode()).hexdigest()[:16]
    return found


# A key only one side has is compared (as unset on the other: `+trainer.limit_train_batches=2`,
# `+data.drop_last=true`, `+protocol.optimizer.momentum=0.9` change what is trained), except
# where being absent is no difference: the model of model=auto (its network is resolved later
# and checked when the checkpoint loads), the groups a method may not read (left out of its
# identity), and the files' hashes (records older than them).
ABSENT_IS_SAME = ("model.", "schedule.", "data.trusted_")
UNSET = "unset"


def difference(then: dict, now: dict) -> tuple[str, str] | None:
    """The first key whose value differs, as ``key=old`` / ``key=new`` (None: the same); a
    key set on one side only is ``unset`` on the other (but see ``ABSENT_IS_SAME``)."""
    for key in sorted(then.keys() | now.keys()):
        if (key not in then or key not in now) and (":" in key or key.startswith(ABSENT_IS_SAME)):
            continue
        old, new = then.get(key, UNSET), now.get(key, UNSET)
        if old != new:
            return f"{key}={_shown(old)}", f"{key}={_shown(new)}"
    return None


def _shown(value) -> str:
    return json.dumps(value) if isinstance(value, (list, dict)) else str(value)


@dataclass(frozen=True)
class FolderState:
    kind: str  # empty, unfinished, finished, failed, foreign
    identity: dict | None = None  # None: unknown (an older run, an unreadable file)
    checkpoint: Path | None = None
    epochs_done: int | None = None
    foreign: tuple[Path, ...] = ()  # the folder, then the files no noisylab run wrote that a run would replace


@dataclass(frozen=True)
class Decision:
    action: str  # start, resume or skip
    checkpoint: Path | None = None  # resume from it
    replace: bool = False  # the folder's earlier run is removed first (after every check)
    notice: str | None = None  # one line for the user


def read_state(folder: Path) -> FolderState:
    """What ``folder`` holds, read without writing anything (and without PyTorch)."""
    from noisylab.checkpoint_info import read_checkpoint
    from noisylab.errors import ConfigError

    foreign = foreign_files(folder)
    if foreign:
        return FolderState("foreign", foreign=(folder, *foreign))
    results, checkpoint = folder / "results.json", folder / "checkpoints" / LAST
    if results.is_file():
        from noisylab.results import not_a_record

        try:
            record = json.loads(results.read_text())
            usable = not_a_record(record) is None  # a hand-edited record is no run to skip to
            known = (record.get("identity") or (identity(record["config"]) if "config" in record else None)) \
                if usable else None
        except (OSError, ValueError, KeyError, AttributeError):
            known = None
        return FolderState("finished", known)
    if checkpoint.is_file():
        try:
            held = read_checkpoint(checkpoint)
        except ConfigError:  # a torn or foreign file: nothing to resume from
            return FolderState("unfinished", None, checkpoint)
        known = held.get("noisylab_identity")
        epoch = held.get("epoch")
        return FolderState("unfinished", known if isinstance(known, dict) else None, checkpoint,
                           epoch + 1 if isinstance(epoch, int) else None)
    if (folder / "error.txt").is_file():
        return FolderState("failed")
    return FolderState("empty")


def decide(state: FolderState, mine: dict, resume: bool = True, ckpt_path: str | None = None) -> Decision:
    """What a run with identity ``mine`` does in a folder in ``state`` (see the table above)."""
    if state.kind == "foreign":
        from noisylab.errors import ConfigError

        folder, files = state.foreign[0], state.foreign[1:]
        names = ", ".join(path.relative_to(folder).as_posix() for path in files[:4])
        more = f" and {len(files) - 4} more" if len(files) > 4 else ""
        raise ConfigError(f"the run folder {folder} holds files no noisylab run wrote ({names}{more}), which a run "
                          "would replace; choose another folder with hydra.run.dir=<folder>, or move them away.")
    occupied = state.kind in ("finished", "unfinished")
    if ckpt_path not in (None, "last", "auto"):
        replaced = f"the folder's earlier run is replaced by this one, resumed from {ckpt_path}" if occupied else None
        return Decision(RESUME, Path(ckpt_path).expanduser(), replace=state.kind != "empty", notice=replaced)
    if not resume:
        return Decision(START, replace=state.kind != "empty",
                        notice="resume=false: the folder's earlier run is replaced" if occupied else None)
    if not occupied:
        named = "nothing to resume in the run folder: starting" if ckpt_path in ("last", "auto") else None
        return Decision(START, replace=state.kind == "failed", notice=named)
    differs = difference(state.identity, mine) if state.identity is not None else None
    if state.identity is None or differs:
        why = f" ({differs[0]}, this run {differs[1]})" if differs else " (of unknown settings)"
        if ckpt_path in ("last", "auto"):  # asked to resume, not to replace: the checkpoint stays
            from noisylab.errors import ConfigError

            raise ConfigError(f"ckpt_path={ckpt_path}: the run folder holds another run{why}; a resume must "
                              "train what the checkpoint trained (leave out ckpt_path to replace that run, "
                              "or choose another folder with hydra.run.dir=<folder>).")
        return Decision(START, replace=True,
                        notice=f"the folder held another run{why}: it is replaced by this run")
    if state.kind == "finished":
        return Decision(SKIP, notice="the folder already holds this run's results: skipped "
                                     "(resume=false runs it again)")
    done = f" after {state.epochs_done} epochs" if state.epochs_done is not None else ""
    return Decision(RESUME, state.checkpoint, notice=f"resuming this run from its checkpoint{done}")


def check_resume(checkpoint: Path, mine: dict) -> None:
    """An explicit ``ckpt_path``: its run's identity must be this run's (one sentence naming
    the first key that differs, with both values; the files the config names by content)."""
    from noisylab.checkpoint_info import read_checkpoint
    from noisylab.errors import ConfigError

    held = read_checkpoint(checkpoint).get("noisylab_identity")
    differs = difference(held, mine) if isinstance(held, dict) else None
    if differs:
        raise ConfigError(f"ckpt_path={checkpoint} was trained with {differs[0]}, but this run has {differs[1]}; a "
                          "resume must train what the checkpoint trained (start a new run without ckpt_path).")


# ----------------------------------------------------------------------------- one process per folder
LOCK = ".noisylab.lock"  # held (flock) by the process whose run owns the folder; released when it exits
_locks: dict[str, int] = {}


def lock(folder: Path) -> None:
    """Takes the folder's lock, or refuses with one sentence while another process holds it (a
    job requeued while its first copy still runs, the same command typed twice): two runs
    writing one folder would mix their checkpoints and records. A kill releases the lock."""
    import errno
    import fcntl
    import os

    from noisylab.errors import ConfigError

    key = str(folder.resolve())
    if key in _locks:
        return
    descriptor = os.open(folder / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as error:
        holder = os.pread(descriptor, 32, 0).decode(errors="replace").strip()
        os.close(descriptor)
        if error.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            by = f" (pid {holder})" if holder.isdigit() else ""
            raise ConfigError(f"the run folder {folder} is in use by another noisylab process{by}; wait for it to "
                              "end, or choose another folder with hydra.run.dir=<folder>.") from None
        return  # a file system without locks (some network mounts): run unlocked, as before
    os.ftruncate(descriptor, 0)
    os.pwrite(descriptor, f"{os.getpid()}\n".encode(), 0)
    _locks[key] = descriptor


# What a run writes in its folder: each must be a file, or a folder, if it is already there.
RUN_FILES = ("results.json", "per_sample.npz", "suspects.csv", "suspects.png", "noisy_labels.npz", "error.txt",
             "train.log", "wandb_run_id", LOCK, "checkpoints/" + LAST, "csv/metrics.csv", "csv/hparams.yaml",
             ".hydra/config.yaml", ".hydra/hydra.yaml", ".hydra/overrides.yaml")
RUN_FOLDERS = ("checkpoints", "csv", ".hydra", "wandb")


def misshapen(folder: Path) -> str | None:
    """One sentence when ``folder`` holds a folder where a run writes a file (or a file where it
    makes a folder): found before anything is written, not as a traceback after training."""
    for name in RUN_FILES:
        if (folder / name).is_dir():
            return (f"the run folder {folder} holds a folder {name} where a run writes a file; remove it or choose "
                    "another folder with hydra.run.dir=<folder>.")
    for name in RUN_FOLDERS:
        if (folder / name).exists() and not (folder / name).is_dir():
            return (f"the run folder {folder} holds a file {name} where a run makes a folder; remove it or choose "
                    "another folder with hydra.run.dir=<folder>.")
    return None


def at_stake(folder: Path) -> list[Path]:
    """The files of ``folder`` that a run writes over or removes (its checkpoints included)."""
    named = [folder / name for name in RUN_FILES if name != LOCK]
    found = [path for path in named if path.is_file()]
    return found + sorted(p for p in (folder / "checkpoints").glob("*.ckpt") if p.is_file() and p not in found)


def noisylab_wrote(folder: Path) -> bool:
    """Whether a noisylab run has written into ``folder``: its lock file (every run since the
    lock; a run refused in an empty folder leaves it beside its error.txt), a noisylab
    ``results.json``, a checkpoint holding noisylab's records, or ``.hydra/config.yaml`` of a
    noisylab config (runs older than the lock)."""
    import yaml

    from noisylab.checkpoint_info import read_checkpoint, written_by_noisylab
    from noisylab.errors import ConfigError
    from noisylab.results import not_a_record

    if (folder / LOCK).is_file():
        return True
    try:
        if not_a_record(json.loads((folder / "results.json").read_text())) is None:
            return True
    except (OSError, ValueError):
        pass
    try:
        if written_by_noisylab(read_checkpoint(folder / "checkpoints" / LAST)):
            return True
    except ConfigError:
        pass
    try:
        composed = yaml.safe_load((folder / ".hydra" / "config.yaml").read_text())
        return isinstance(composed, dict) and all(isinstance(composed.get(k), dict) for k in ("method", "data", "noise"))
    except (OSError, yaml.YAMLError):
        return False


def foreign_files(folder: Path) -> list[Path]:
    """The files a run would replace in ``folder`` when no noisylab run wrote there (another
    tool's results, a Lightning project's checkpoints, another Hydra app's record): []
    when there are none or the folder is noisylab's."""
    found = at_stake(folder) if folder.is_dir() else []
    return found if found and not noisylab_wrote(folder) else []


def mark(folder: Path) -> None:
    """Leaves the lock file (empty, unlocked) in a folder that holds nothing a run would
    replace: a refused run's ``error.txt`` is then known as noisylab's by the run that follows."""
    if not at_stake(folder) or at_stake(folder) == [folder / "error.txt"]:
        (folder / LOCK).touch(exist_ok=True)


def release_locks() -> None:
    """Lets go of the folders this process's earlier runs held (a multirun's next job)."""
    import os

    while _locks:
        os.close(_locks.popitem()[1])
