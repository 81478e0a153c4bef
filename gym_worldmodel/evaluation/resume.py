"""Long loops that keep their progress on disk, so that a stopped eval goes on where it stopped.

``eval`` of the three worlds runs for about half an hour on a CPU, ``eval --revisit`` for 5 to
20 minutes, nearly all of it in rollouts of hundreds of steps and in training the
inverse-dynamics probe (minutes per world where the probe cache does not hold it). A
:class:`Progress` keeps one such loop's progress in a folder of its own under the run's resume
folder (``eval``'s ``OUT/.resume``), held by its process alone while the loop runs (another
process running the same loop into it is refused). :class:`LoopProgress` keeps a loop whose
state is one dict (the probe's training: its weights, optimizer, best probe so far and random
streams, keyed as the probe cache keys the probe). A :class:`RolloutProgress` keeps a rollout:

* every :data:`SAVE_EVERY_S` seconds, at the end of the step that passes it, it writes the
  outputs of the steps since its last save (``part-<first step>.pt``), then ``state.pt``: the
  step reached, each part's first step, steps and SHA-256, and every engine's state
  (``WorldEngine.get_state``). Each file is written atomically and holds a SHA-256 of its
  content, a part before the state that names it, so a kill at any moment leaves the last
  whole save;
* Ctrl-C or SIGTERM is deferred to the end of the step it arrives in (as training does): the
  progress is saved, then ``KeyboardInterrupt`` raised. A second one stops at once;
* a finished rollout keeps its outputs (no engine state), so that a run stopped later, in
  another world, does not run it again;
* a save that fails (a full disk, a quota) is said in one line on stderr, and the rollout goes
  on without saving: progress is a convenience, never a reason for an evaluation to fail.

A rerun with the same inputs finds the folder by :func:`rollout_key`, which holds what sets the
rollout's bits: the model's weights (their SHA-256) and settings, the rows' modality, start
frames, actions, poses and seeds, the precision, the device, and :func:`bits_environment`
(torch's and NumPy's versions, the CPU instruction set, torch's thread count) and the package's
code. It restores the engines and goes on from the saved step, which gives the same bits as a
run that never stopped (tested). Progress that cannot be read back (damaged, or its parts not
those its state names) is said in one line on stderr, removed, and the rollout run again from
its start; a loop's state that its ``check`` refuses, likewise. Progress of other inputs
(another version of the package, other settings) is another folder, never read: it stays until
the run it belongs to finishes, or ``OUT/.resume`` is removed by hand. :func:`clear` removes the
folders the loops of this process used, :func:`discard_progress` one whose result is at hand.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple, Self

import numpy as np
import torch

from gym_worldmodel.envs.engine import WorldEngine
from gym_worldmodel.files import atomic_write, exclusive, remove_stale_temps
from gym_worldmodel.hub import weights_sha256
from gym_worldmodel.models import WorldModel
from gym_worldmodel.training.trainer import fingerprint, interrupt_after_step

#: Seconds of a loop between two saves of its progress (the most a kill loses).
SAVE_EVERY_S = 120.0
#: The layout of a progress folder (in every key: another layout is another folder, not read).
FORMAT = "gym-worldmodel/progress/1"
_PACKAGE = Path(__file__).resolve().parents[1]


def code_sha256() -> str:
    """SHA-256 of the package's Python sources (any edit makes saved progress another run's)."""
    digest = hashlib.sha256()
    for path in sorted(_PACKAGE.rglob("*.py")):
        digest.update(path.relative_to(_PACKAGE).as_posix().encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def array_sha256(array: Any) -> str | None:
    """SHA-256 of an array's dtype, shape and bytes (None for None)."""
    if array is None:
        return None
    a = np.ascontiguousarray(array)
    digest = hashlib.sha256(f"{a.dtype.str}{a.shape}".encode())
    digest.update(a.data)  # (C-contiguous: its bytes in order, not copied)
    return digest.hexdigest()


def rollout_key(
    kind: str, model: WorldModel, engine: WorldEngine, inputs: dict[str, Any]
) -> dict[str, Any]:
    """What the bits of a rollout of ``model`` by ``engine`` depend on, as a JSON-able dict.

    ``inputs``: the rollout's own (arrays are hashed; seeds, names and flags kept as they are).
    """
    return {
        "kind": kind,
        "weights": weights_sha256(model.state_dict()),
        "config": engine.config.to_dict(),  # the model's, with the sampler the rows run
        "modality": engine.modality.tolist(),  # each row's action expert
        "dtype": str(engine.dtype),
        "device": engine.device.type,
        "inputs": {
            name: array_sha256(value) if isinstance(value, np.ndarray) else value
            for name, value in inputs.items()
        },
        **bits_environment(),
    }


class SaveAt(NamedTuple):
    """Where a loop keeps its progress (the run's resume folder) and what its bits depend on."""

    root: Path
    key: dict[str, Any]


def bits_environment() -> dict[str, Any]:
    """What else sets the bits of a computation on the CPU: versions, instruction set, threads.

    (The same run on 1 and 4 threads gives other bits; on another CPU model of the same
    instruction set it is not told apart.)
    """
    return {
        "torch": torch.__version__,
        "numpy": np.__version__,
        "cpu": torch.backends.cpu.get_cpu_capability(),
        "threads": torch.get_num_threads(),
    }


class Progress:
    """A long loop's progress in a folder of its own under ``root`` (module docstring).

    Use as a context manager around the loop: entering it takes the folder for this process
    and reads back what a stopped run saved (:attr:`step` is then the step to go on from, else
    0); the loop calls :meth:`done_step` after each step, which saves when due and stops the
    loop (``KeyboardInterrupt``) when a signal came. ``root`` None keeps nothing (and defers no
    signal). Subclasses say what a save holds (:meth:`_state`, :meth:`_write_extra`) and check
    what is read back (:meth:`_restore`).

    Args:
        root: The run's resume folder (the loop's own is made inside it), or None.
        kind: What the loop is (the first word of its folder's name).
        key: What the loop's bits depend on (JSON-able), or a function that gives it (called
            only with a ``root``: a key can take time to make). The layout of the files
            (:data:`FORMAT`) and the package's code (:func:`code_sha256`) are added to it.
        steps: The loop's steps.
        what: What the messages call the loop.
    """

    def __init__(
        self,
        root: Path | None,
        kind: str,
        key: dict[str, Any] | Callable[[], dict[str, Any]],
        steps: int,
        what: str = "loop",
    ) -> None:
        self.steps, self.step, self.what = steps, 0, what
        self.folder: Path | None = None
        if root is not None:
            key = key() if callable(key) else key
            key = {"progress": FORMAT, "code": code_sha256(), **key}
            self.key = json.dumps(key, sort_keys=True, default=_plain)
            digest = hashlib.sha256(self.key.encode()).hexdigest()
            self.folder = Path(root) / f"{kind}-{digest[:16]}"
        self._saved_at = time.monotonic()
        self._unsaved = False  # a save failed: no more are tried
        self._interrupted: Callable[[], bool] = lambda: False
        self._stack = contextlib.ExitStack()

    def __enter__(self) -> Self:
        if self.folder is None:
            return self
        with self._stack as stack:  # (closed here only if what follows raises)
            self.folder.mkdir(parents=True, exist_ok=True)
            stack.enter_context(exclusive(self.folder, f"{self.what}'s progress"))
            _USED.add(self.folder)
            remove_stale_temps(self.folder, older_than_s=0.0)  # (held: no live writer)
            if (self.folder / "state.pt").is_file():
                self._read()
            self._interrupted = stack.enter_context(
                interrupt_after_step(f"saving this {self.what}'s progress")
            )
            self._stack = stack.pop_all()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stack.close()

    def discard(self) -> None:
        """Remove what a stopped run saved of this loop, its result being at hand (unless held)."""
        if self.folder is None or not self.folder.is_dir():
            return
        try:
            with exclusive(self.folder, f"{self.what}'s progress"):
                shutil.rmtree(self.folder)
        except (ValueError, OSError):  # another process runs the loop, or it is gone
            pass

    def done_step(self) -> None:
        """One more step done: save if due, and stop if a signal came.

        A save is due when :data:`SAVE_EVERY_S` has passed, at the last step, and when a signal
        came (the loop then stops: ``KeyboardInterrupt``).
        """
        self.step += 1
        if self.folder is None:
            return
        due = time.monotonic() - self._saved_at >= SAVE_EVERY_S
        stop = self._interrupted()  # (read once: one landing now is saved before stopping)
        if due or self.step == self.steps or stop:
            self._save()
        if stop:
            if not self._unsaved:
                print(
                    f"progress saved at step {self.step} of {self.steps} in {self.folder}",
                    file=sys.stderr,
                    flush=True,
                )
            raise KeyboardInterrupt

    def _state(self) -> dict[str, Any]:
        """What ``state.pt`` holds beside the key and the step (tensors, arrays, plain values)."""
        return {}

    def _write_extra(self) -> dict[str, Any]:
        """Files written before ``state.pt`` (which names them): what the state adds for them."""
        return {}

    def _restore(self, state: dict[str, Any]) -> Callable[[], None]:
        """Check what ``state`` holds (raise if it cannot be read back); give what loads it."""
        return lambda: None

    def _save(self) -> None:
        """Write the progress; a save that fails is said, and the loop goes on without."""
        if self._unsaved:  # a save failed before
            return
        assert self.folder is not None
        try:
            extra = self._write_extra()
            state = {"key": self.key, "step": self.step, **extra, **self._state()}
            _write(self.folder / "state.pt", _to_tensors(state))
        except OSError as err:
            self._unsaved = True
            print(
                f"note: this {self.what}'s progress cannot be saved in {self.folder} ({err}); it "
                "goes on without saving it",
                file=sys.stderr,
                flush=True,
            )
        self._saved_at = time.monotonic()

    def _read(self) -> None:
        """The saved progress, restored; what cannot be read is removed and said."""
        assert self.folder is not None
        try:
            state = _from_tensors(_load(self.folder / "state.pt"))
            if state["key"] != self.key:
                raise ValueError(f"it was saved by another {self.what}")
            step = int(state["step"])
            if not 0 < step <= self.steps:
                raise ValueError(f"its step {step} is not one of 1 to {self.steps}")
            load = self._restore(state)
        except Exception as err:  # noqa: BLE001 - any failure: the loop runs again
            print(
                f"note: the progress saved in {self.folder} cannot be read back ({err}); "
                f"removed, and this {self.what} run again from its start",
                file=sys.stderr,
                flush=True,
            )
            for path in self.folder.iterdir():  # (the folder itself is held)
                path.unlink()
            return
        load()
        self.step = step
        said = (
            f"going on from step {step} of {self.steps}, where a stopped run saved it"
            if step < self.steps
            else f"all {step} steps read back: a stopped run had finished this {self.what}"
        )
        print(f"note: {said} ({self.folder})", file=sys.stderr, flush=True)


class RolloutProgress(Progress):
    """One rollout's progress: its engines' states and the outputs of its steps.

    Each step's outputs go to :meth:`record`; :meth:`outputs` gives them all after the loop.
    Entering restores the engines where a stopped run saved.

    Args:
        root: The run's resume folder (the rollout's own is made inside it), or None.
        kind: What the rollout is (the first word of its folder's name).
        model: The model the engines run.
        engines: The engines the loop steps, by name (the first's settings enter the key);
            restored where progress is read back.
        inputs: The rollout's own inputs, for :func:`rollout_key`.
        steps: The rollout's steps.
    """

    def __init__(
        self,
        root: Path | None,
        kind: str,
        model: WorldModel,
        engines: dict[str, WorldEngine],
        inputs: dict[str, Any],
        steps: int,
    ) -> None:
        first = next(iter(engines.values()))
        key = lambda: rollout_key(kind, model, first, inputs)  # noqa: E731
        super().__init__(root, kind, key, steps, "rollout")
        self.engines = engines
        self._parts: list[dict[str, Any]] = []  # the parts saved: name, first, steps, sha256
        self._saved: dict[str, list[np.ndarray]] = {}  # their outputs
        self._new: dict[str, list[np.ndarray]] = {}  # outputs since the last save

    def record(self, **outputs: np.ndarray) -> None:
        """One step's outputs, then :meth:`done_step`.

        Each output is ``(rows, ...)``; :meth:`outputs` joins them along axis 1.
        """
        for name, value in outputs.items():
            self._new.setdefault(name, []).append(value)
        self.done_step()

    def outputs(self, name: str) -> np.ndarray:
        """Every step's ``name`` output, read back and new, joined along axis 1."""
        return np.concatenate([*self._saved.get(name, []), *self._new.get(name, [])], 1)

    def _write_extra(self) -> dict[str, Any]:
        """The outputs since the last save, as a part (``part-<first step>.pt``)."""
        assert self.folder is not None
        if self._new:
            joined = {k: np.concatenate(v, 1) for k, v in self._new.items()}
            steps = len(next(iter(self._new.values())))
            part = {"outputs": {k: torch.from_numpy(v) for k, v in joined.items()}}
            name = f"part-{self.step - steps:06d}.pt"
            sha = _write(self.folder / name, part)
            self._parts.append(
                {"name": name, "first": self.step - steps, "steps": steps, "sha256": sha}
            )
            for k, v in joined.items():
                self._saved.setdefault(k, []).append(v)
            self._new = {}
        return {"parts": json.dumps(self._parts)}

    def _state(self) -> dict[str, Any]:
        if self.step == self.steps:  # a finished rollout needs its outputs only
            return {"engines": {}}
        return {"engines": {k: e.get_state(range(e.num_envs)) for k, e in self.engines.items()}}

    def _restore(self, state: dict[str, Any]) -> Callable[[], None]:
        assert self.folder is not None
        step, parts = int(state["step"]), json.loads(state["parts"])
        saved: dict[str, list[np.ndarray]] = {}
        done = 0
        for part in parts:  # contiguous, each the file the state names, making its steps
            content = _load(self.folder / part["name"])
            if part["first"] != done or content["sha256"] != part["sha256"]:
                raise ValueError(f"{part['name']} is not the part its state names")
            for k, v in content["outputs"].items():
                if v.shape[1] % part["steps"]:
                    raise ValueError(f"{part['name']} does not hold {part['steps']} steps")
                saved.setdefault(k, []).append(v.numpy())
            done += part["steps"]
        if step != done:
            raise ValueError(f"its parts make {done} steps, not its {step}")
        # (the key names the code and settings that wrote it: its layout is the engines')
        engines = state["engines"] if step < self.steps else {}
        for name, engine in self.engines.items() if engines else ():  # all, before any loads
            engine.check_state(engines[name])

        def load() -> None:
            for name, engine in self.engines.items() if engines else ():
                engine.set_state(engines[name], range(engine.num_envs))
            self._parts, self._saved = parts, saved

        return load


class LoopProgress(Progress):
    """The progress of a loop whose state is one dict (a training loop's weights and streams).

    Args:
        at: Where it is kept and its key (:class:`SaveAt`), or None to keep nothing.
        kind, steps, what: As :class:`Progress`'s.
        snapshot: Gives the loop's state at the end of a step (tensors, arrays, plain values).
        load: Loads a state ``snapshot`` gave back into the loop, which then goes on from
            :attr:`step`.
        check: Raises where a state cannot be loaded; run before anything is, so that a state
            that fails it is said, removed and the loop run from its start (``load`` then
            cannot fail half way).
    """

    def __init__(
        self,
        at: SaveAt | None,
        kind: str,
        steps: int,
        what: str,
        snapshot: Callable[[], dict[str, Any]],
        load: Callable[[dict[str, Any]], None],
        check: Callable[[dict[str, Any]], None],
    ) -> None:
        super().__init__(
            None if at is None else at.root, kind, {} if at is None else at.key, steps, what
        )
        self.snapshot, self.load, self.check = snapshot, load, check

    def _state(self) -> dict[str, Any]:
        return {"loop": self.snapshot()}

    def _restore(self, state: dict[str, Any]) -> Callable[[], None]:
        loop = state["loop"]
        if not isinstance(loop, dict):
            raise ValueError("it holds no loop state")
        self.check(loop)
        return lambda: self.load(loop)


def discard_progress(at: SaveAt, kind: str) -> None:
    """Remove what a stopped run saved of the loop ``at`` names, its result being at hand."""
    Progress(at.root, kind, at.key, 0).discard()


#: The progress folders this process used (:func:`clear` removes them).
_USED: set[Path] = set()


def saved_in(root: Path) -> bool:
    """Whether a loop this process ran in ``root`` has saved progress there."""
    return any((f / "state.pt").is_file() for f in _USED if f.parent == Path(root))


def clear(root: Path) -> None:
    """Remove the progress of the loops this process ran in ``root``, then ``root`` if empty.

    For a run whose results are written: other runs' progress there (another eval into the same
    folder, stopped or running) is left as it is.
    """
    for folder in sorted(f for f in _USED if f.parent == Path(root)):
        shutil.rmtree(folder, ignore_errors=True)
        _USED.discard(folder)
    with contextlib.suppress(OSError):  # not empty, or gone
        Path(root).rmdir()


def _plain(value: Any) -> Any:
    """A NumPy scalar of a key as the Python number it holds (``json.dumps``'s ``default``)."""
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"a progress key holds {type(value).__name__}, not JSON")


def _write(path: Path, content: dict[str, Any]) -> str:
    """``content`` with its fingerprint, written atomically with ``torch.save``; the fingerprint."""
    content = {**content, "sha256": fingerprint(content)}
    try:
        atomic_write(path, lambda f: torch.save(content, f))
    except RuntimeError as err:  # torch's writer on a failed write (a quota, a size limit)
        raise OSError(f"cannot write {path}: {err}") from err
    return content["sha256"]


def _load(path: Path) -> dict[str, Any]:
    """A file of :func:`_write`, its fingerprint checked."""
    content = torch.load(path, map_location="cpu", weights_only=True)
    if content.get("sha256") != fingerprint({k: v for k, v in content.items() if k != "sha256"}):
        raise ValueError(f"{path.name} does not match its SHA-256: altered or damaged")
    return content


def _to_tensors(value: Any) -> Any:
    """``value`` with each NumPy array as ``{"__ndarray__": tensor}`` (``weights_only`` loads)."""
    if isinstance(value, np.ndarray):
        return {"__ndarray__": torch.from_numpy(np.ascontiguousarray(value))}
    if isinstance(value, dict):
        return {k: _to_tensors(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_to_tensors(v) for v in value]
    return value


def _from_tensors(value: Any) -> Any:
    """The inverse of :func:`_to_tensors`."""
    if isinstance(value, dict):
        if set(value) == {"__ndarray__"}:
            return value["__ndarray__"].numpy()
        return {k: _from_tensors(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_from_tensors(v) for v in value]
    return value
