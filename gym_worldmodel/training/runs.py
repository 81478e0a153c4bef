"""A recipe call is one run: seeded by its settings, resumed only under the same call.

:func:`seeded` wraps every recipe of ``recipes.py``: it seeds torch's global generator from the
run's ``TrainConfig`` (fresh modules start from the same weights for the same ``--seed``) and
records the call in ``<run>/run.json``, so that a run directory resumes only under the call that
started it (:func:`check_same_run`). The trainer's checkpoint compares the rest: optimisation
settings and the number of training items.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import json
import shlex
import sys
from collections.abc import Callable, Collection
from dataclasses import MISSING
from pathlib import Path
from typing import Any

import torch

from gym_worldmodel.files import atomic_write, exclusive
from gym_worldmodel.hub import WEIGHTS_NAME
from gym_worldmodel.sources.episodes import CARD, sha256


def seeded(recipe: Callable) -> Callable:
    """Run ``recipe`` seeded by its ``train`` settings, in a run directory of this call alone.

    Torch's global generator is seeded with ``train.seed``: fresh modules (a VAE, a student, the
    action probe, the pair net, a critic, a flow warp) then start from the same weights for the
    same ``--seed``; the caller's generator is left as it was. The call itself (the recipe, its
    arguments, the datasets' cards) is written to ``<run_dir>/run.json``; a run directory with a
    checkpoint resumes only under the same call (:func:`check_same_run`), since the trainer
    compares only its own settings and the number of training items.
    """
    signature = inspect.signature(recipe)

    @functools.wraps(recipe)
    def run(*args, **kwargs):
        bound = signature.bind(*args, **kwargs)
        bound.apply_defaults()  # a default given by name is the same call as one left out
        arguments = bound.arguments
        run_dir = arguments.get("run_dir")

        def call():
            # the CUDA generator too where the caller has one (manual_seed seeds it as well)
            cuda = [torch.cuda.current_device()] if torch.cuda.is_initialized() else []
            with torch.random.fork_rng(devices=cuda):
                torch.manual_seed(arguments["train"].seed)
                return recipe(*args, **kwargs)

        if run_dir is None:  # not a run (a test's builder)
            return call()
        run_dir = Path(run_dir)
        created = not run_dir.exists()
        run_dir.mkdir(parents=True, exist_ok=True)
        with exclusive(run_dir, "training run"):  # another job into it now is refused
            params = signature.parameters.values()
            defaults = {
                p.name: p.default for p in params if p.default is not inspect.Parameter.empty
            }
            paths = {p.name for p in params if "Path" in str(p.annotation)}  # data, init, ...
            replaced = check_same_run(
                run_dir,
                run_identity(recipe.__name__, arguments, paths),
                run_identity(recipe.__name__, defaults, paths),
                paths,
                fields=_field_defaults(arguments),
                notes={
                    "command": shlex.join(sys.argv),
                    "settings": dataclasses.asdict(arguments["train"]),
                },
            )
            checkpoints = _checkpoints(run_dir)
            try:
                note_changed_checkpoints(
                    run_dir, {k: arguments[k] for k in paths if k in arguments}
                )
                return call()
            except BaseException:
                if not _started(run_dir):  # refused or failed before a checkpoint of any stage
                    (run_dir / "run.json").unlink(missing_ok=True)
                    (run_dir / CHECKPOINTS_RECORD).unlink(missing_ok=True)
                    if created and not any(run_dir.iterdir()):
                        run_dir.rmdir()
                if _checkpoints(run_dir) == checkpoints:  # it went no further: as they were
                    for path, text in replaced.items():  # (a moved run's records)
                        atomic_write(path, lambda f, text=text: f.write(text))
                raise

    return run


#: Where a run records the weights of the checkpoints it started from (``--init``, a teacher).
CHECKPOINTS_RECORD = "checkpoints.json"
#: The ``train`` option of a recipe argument whose name differs from it.
_FLAGS = {"teacher_dir": "--init"}


def note_changed_checkpoints(run_dir: Path, path_arguments: dict) -> None:
    """Say so when a local checkpoint a resumed run started from holds other weights now.

    Checkpoints are named by path in the run's identity (:func:`run_identity`): a teacher still
    training rewrites its ``model`` in place, and a student may go on distilling from it. The
    SHA-256 of the weights of each checkpoint directory among the path arguments is recorded
    when the run starts (``<run>/checkpoints.json``; a run started before that record existed
    gets it at its next resume); each resume whose checkpoint's weights differ from the record
    prints which, and goes on. A Hub repo id is not followed.
    """
    weights, shown = {}, {}
    for name, value in path_arguments.items():
        for item in value if isinstance(value, (list, tuple)) else [value]:
            file = None if item is None else Path(item).expanduser() / WEIGHTS_NAME
            if file is not None and file.is_file():
                key = f"{name}: {file.parent.resolve()}"  # however the path was spelled
                flag = _FLAGS.get(name)  # the option `train` took it by, beside the argument's
                shown[key] = f"{name} ({flag}) {item}" if flag else f"{name} {item}"
                weights[key] = sha256(file)
    record = run_dir / CHECKPOINTS_RECORD
    if not _started(run_dir) or not record.is_file():
        if weights:
            text = json.dumps(weights, indent=1) + "\n"
            atomic_write(record, lambda f: f.write(text.encode()))
        else:  # one left by a first attempt that stopped before its first checkpoint
            record.unlink(missing_ok=True)
        return
    try:
        saved = json.loads(record.read_text())
    except (OSError, ValueError):
        return  # a record that cannot be read: nothing to compare with
    for key, digest in weights.items():
        if key in saved and saved[key] != digest:
            print(
                f"note: {shown[key]} holds other weights than when {run_dir} started (it was "
                "trained or replaced since); the run resumes from its own checkpoint and reads "
                "that checkpoint as it is now",
                flush=True,
            )


#: Recipe arguments that do not make another run: where it goes, how it shows progress, and
#: the optimisation settings, which the trainer's checkpoint compares itself.
RUN_FREE_ARGUMENTS = ("run_dir", "train", "progress")


def _started(run_dir: Path) -> bool:
    """Whether ``run_dir`` holds a checkpoint of any of its stages.

    ``train flow``'s pair net trains in ``<run>/pair`` before the run's own checkpoint exists.
    """
    return bool(_checkpoints(run_dir))


def _checkpoints(run_dir: Path) -> dict[Path, tuple[int, int, int]]:
    """Each checkpoint of ``run_dir``'s stages, with its file's inode, write time (ns) and size.

    A checkpoint is written as a new file (``atomic_write``): a new one differs in its inode
    even where the file system's clock is coarse.
    """
    if not run_dir.is_dir():
        return {}
    return {
        p: (stat.st_ino, stat.st_mtime_ns, stat.st_size)
        for p in run_dir.rglob("checkpoint.pt")
        if (stat := p.stat())
    }


def _plain(value: Any) -> Any:
    """``value`` as a JSON value: paths as strings, configs (dataclasses) as dicts."""
    if isinstance(value, Path):
        return str(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return _plain(dataclasses.asdict(value))
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value if value is None or isinstance(value, (bool, int, float, str)) else repr(value)


def run_identity(name: str, arguments: dict, paths: Collection[str] = ("data",)) -> dict:
    """What makes a recipe call the run it is: its name, arguments and data (JSON values).

    The arguments named in ``paths`` (those annotated as paths: ``data``, ``init``, ...) are
    resolved where they exist (:func:`_resolved`), so a checkpoint named from another directory
    is the same; other strings are kept as they are. Each dataset directory also stands with
    the SHA-256 of its card, which lists every shard's own, so data collected again or extended
    is another run. Checkpoints are named by path, not content (a teacher still training
    rewrites its ``model`` in place).
    """
    out = {
        k: _resolved(_plain(v)) if k in paths else _plain(v)
        for k, v in arguments.items()
        if k not in RUN_FREE_ARGUMENTS
    }
    data = arguments.get("data")
    if data is not None:
        dirs = [data] if isinstance(data, (str, Path)) else list(data)
        out["data cards"] = {
            str(Path(d).resolve()): sha256(Path(d) / CARD)
            for d in dirs
            if (Path(d) / CARD).is_file()
        }
    return {"recipe": name, **out}


def _resolved(value):
    """A path argument's JSON value with each existing path resolved (a repo id kept as is)."""
    if isinstance(value, list):
        return [_resolved(v) for v in value]
    if isinstance(value, str) and value and Path(value).exists():
        return str(Path(value).resolve())
    return value


#: What ``run.json`` records for the reader and no resume compares: the command line of the
#: latest call and its optimisation settings (the checkpoint compares those itself).
NOTES = ("command", "settings")


def _field_defaults(arguments: dict) -> dict[str, dict]:
    """The defaults of each config argument's fields (a dataclass's), as JSON values."""
    out = {}
    for name, value in arguments.items():
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            fields = dataclasses.fields(value)
            out[name] = {f.name: _plain(f.default) for f in fields if f.default is not MISSING}
    return out


def _with_new_fields(saved: Any, now: Any, defaults: dict | None) -> Any:
    """A recorded config ``saved``, given the fields it lacks where ``now`` has them at default.

    A field added to a config since the run started (``defaults``: the config's field defaults)
    is the same call at its default.
    """
    if not (isinstance(saved, dict) and isinstance(now, dict) and defaults):
        return saved
    added = {k: v for k, v in now.items() if k not in saved and k in defaults and v == defaults[k]}
    return {**saved, **added}


def check_same_run(
    run_dir: Path,
    identity: dict,
    defaults: dict | None = None,
    paths: Collection[str] = ("data",),
    notes: dict | None = None,
    fields: dict[str, dict] | None = None,
) -> dict[Path, bytes]:
    """Refuse to resume a run directory under another call; record the call of a new one.

    ``defaults``: the recipe's defaults, as :func:`run_identity` gives them; an argument the
    record lacks (a keyword added since the run started) is the same call at its default.
    ``fields``: the field defaults of the call's config arguments (``DistillConfig``, ...); a
    recorded config that lacks a field added since is the same call where the field is at its
    default.
    ``paths``: the path arguments, whose recorded values are resolved as the call's are (a
    record may name them relative to where the run started).

    Data or checkpoints that moved with the same content are the same call (:func:`_moved`):
    the records then take the new paths. ``notes`` (:data:`NOTES`) are written beside the call
    and never compared. A resume rewrites the record; what it held before is returned, for
    the caller to put back when the run fails before it goes on (a refusal by the trainer).

    Raises:
        ValueError: ``run_dir`` holds a checkpoint or a trained model of a call that differs
            from ``identity`` (naming what differs), or of a call it has no record of (no
            ``run.json``); nothing in it is changed.
    """
    path = run_dir / "run.json"
    started = _started(run_dir)
    if not path.is_file() and (started or (run_dir / "model").is_dir()):
        made = "a checkpoint" if started else "a trained model (model/)"
        raise ValueError(
            f"{run_dir} holds {made} but no run.json, the record of the call that made it: "
            "this call could continue or overwrite another's run. Give a new run directory, or "
            "move that one away"
        )
    if path.is_file() and (started or (run_dir / "model").is_dir()):
        try:
            saved = json.loads(path.read_text())
        except (OSError, ValueError) as err:
            raise ValueError(f"{path} is not a run record ({err}); move it away") from None
        saved = {k: _resolved(v) if k in paths else v for k, v in saved.items() if k not in NOTES}
        saved = {
            k: _with_new_fields(v, identity.get(k), (fields or {}).get(k)) for k, v in saved.items()
        }
        defaults = defaults or {}
        changed = sorted(
            k
            for k in saved.keys() | identity.keys()
            if saved.get(k) != identity.get(k)
            and not (k not in saved and k in defaults and identity.get(k) == defaults[k])
        )
        moved = [k for k in changed if _moved(run_dir, k, saved, identity)]
        if set(changed) - set(moved):
            what = "; ".join(
                _changed_data(saved.get(k), identity.get(k))
                if k == "data cards"
                else f"{k}: {saved.get(k)!r} -> {identity.get(k)!r}"
                for k in changed
            )
            raise ValueError(
                f"{run_dir} holds a checkpoint of another call ({what}): resuming would continue "
                "neither run. Resume it with the call that started it (its command is in "
                "run.json), or give a new run directory"
                if started
                else f"{run_dir} holds the model of another call ({what}), its checkpoint gone: "
                "this call would overwrite it. Give a new run directory"
            )
        if not started:  # the same call, its checkpoint deleted: it trains from the start
            print(
                f"note: {run_dir} holds this call's model but no checkpoint.pt: the run trains "
                "again from its first step and replaces model/",
                flush=True,
            )
        replaced = {p: p.read_bytes() for p in (path, run_dir / CHECKPOINTS_RECORD) if p.is_file()}
        if moved:
            print(
                f"note: {', '.join(moved)} of {run_dir} moved (same content): the run resumes "
                "and records the new paths",
                flush=True,
            )
            _record_moved_checkpoints(run_dir, moved, identity)
    else:  # a new run (a record left by one that made nothing is replaced)
        replaced = {}
    run_dir.mkdir(parents=True, exist_ok=True)
    text = json.dumps({**identity, **(notes or {})}, indent=1) + "\n"
    atomic_write(path, lambda f: f.write(text.encode()))
    return replaced


def _changed_data(saved: Any, now: Any) -> str:
    """What differs between two runs' ``data cards``, in words (not the cards' hashes)."""
    saved, now = saved or {}, now or {}
    changed = sorted(d for d in saved.keys() & now.keys() if saved[d] != now[d])
    said = [
        f"the data in {d} changed since the run started (collected again or extended)"
        for d in changed
    ]
    return "; ".join(said) or f"data cards: {saved!r} -> {now!r}"  # (other datasets: --data's)


def _moved(run_dir: Path, key: str, saved: dict, identity: dict) -> bool:
    """Whether ``key`` of a run's call differs only by where the same content now lives.

    Datasets: the same cards (each lists its shards' hashes), in the same order. A checkpoint
    (``--init``, a teacher): the same weights as the run recorded when it started
    (:data:`CHECKPOINTS_RECORD`). Clusters copy data and checkpoints to scratch disks.
    """
    if key in ("data", "data cards"):
        was, now = saved.get("data cards"), identity.get("data cards")
        if not (isinstance(was, dict) and isinstance(now, dict)):  # a record before the cards
            return False
        counts = [
            len(d) if isinstance(d, list) else -1 for d in (saved.get("data"), identity.get("data"))
        ]
        # one card per dataset on both sides (a dataset named twice has one card)
        return list(was.values()) == list(now.values()) and counts == [len(was), len(now)]
    return _recorded_weights(run_dir, key, identity.get(key)) is not None


def _recorded_weights(run_dir: Path, key: str, path: Any) -> str | None:
    """The SHA-256 of checkpoint ``path``'s weights if the run recorded them for ``key``."""
    record = run_dir / CHECKPOINTS_RECORD
    weights = Path(path).expanduser() / WEIGHTS_NAME if isinstance(path, str) else None
    if weights is None or not weights.is_file() or not record.is_file():
        return None
    try:
        recorded = json.loads(record.read_text())
    except (OSError, ValueError):
        return None
    digest = sha256(weights)
    ours = [v for k, v in recorded.items() if k.startswith(f"{key}: ")]  # any path it had
    return digest if digest in ours else None


def _record_moved_checkpoints(run_dir: Path, moved: list[str], identity: dict) -> None:
    """Record the weights of moved checkpoints under their new paths too (later moves match)."""
    record = run_dir / CHECKPOINTS_RECORD
    entries = {}
    for key in moved:
        digest = _recorded_weights(run_dir, key, identity.get(key))
        if digest is not None:
            entries[f"{key}: {identity[key]}"] = digest
    if entries:
        text = json.dumps({**json.loads(record.read_text()), **entries}, indent=1) + "\n"
        atomic_write(record, lambda f: f.write(text.encode()))
