"""Bundle start frames for the shipped worlds: first frames of recorded training episodes.

``gym-worldmodel ship`` writes ``gym_worldmodel/worlds/<world>/start_frames.npz`` (key
``frames``, uint8 ``(N, H, W, 3)``) for the world each dataset's card names. Envs reset from one
of these, drawn with the reset seed, when no image is given. ``ship --out`` and the training
recipes (with each checkpoint, :class:`RunStartFrames`) also write them into the checkpoint
directory (``<checkpoint>/start_frames/<world>.npz``), which an env running that checkpoint
prefers.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np

from gym_worldmodel.files import (
    START_FRAMES,
    WORLDS_DIR,
    atomic_write,
    atomic_write_all,
    checkpoint_start_frames,
)
from gym_worldmodel.sources.episodes import DatasetError, load_episodes, read_card


def pick_start_frames(data: Path, count: int = 16) -> tuple[str, np.ndarray]:
    """``data``'s world and ``count`` start frames, all different where the data has as many.

    The first frames of evenly spaced training episodes; one that repeats a frame already picked
    (episodes of a simulator that begin alike) gives way to the next episode's that does not.
    Reads and checks the dataset, writes nothing.
    """
    world = read_card(Path(data))["world"]
    if not isinstance(world, str) or not world.isidentifier():  # it names the folder written
        raise DatasetError(f"{data}: the card's world must be a plain name, got {world!r}")
    episodes = load_episodes(Path(data), "train")
    if not episodes:
        raise DatasetError(f"{data}: no training episodes to take start frames from")
    spaced = np.linspace(0, len(episodes) - 1, min(count, len(episodes))).round().astype(int)
    rest = np.setdiff1d(np.arange(len(episodes)), spaced)
    picked: dict[bytes, np.ndarray] = {}  # by content: a repeat is skipped
    for i in (*spaced, *rest):
        frame = episodes[i].frames[0]
        picked.setdefault(frame.tobytes(), frame)
        if len(picked) == len(spaced):
            break
    return world, np.stack(list(picked.values()))


def pick_world_start_frames(data: Sequence[Path], count: int = 16) -> dict[str, np.ndarray]:
    """Each world's start frames over ``data``: ``count`` from each of its datasets.

    A world's datasets must hold frames of one size (a ``DatasetError`` names them).
    """
    picked: dict[str, list[tuple[Path, np.ndarray]]] = {}
    for d in data:
        world, frames = pick_start_frames(d, count)
        picked.setdefault(world, []).append((Path(d), frames))
    for world, sets in picked.items():
        if len({f.shape[1:] for _, f in sets}) > 1:
            sizes = {f"{d} {f.shape[1]}x{f.shape[2]}" for d, f in sets}
            raise DatasetError(
                f"the {world} datasets hold frames of different sizes ({', '.join(sorted(sizes))})"
                ": a model takes one size; collect them at one"
            )
    return {world: np.concatenate([f for _, f in sets]) for world, sets in picked.items()}


def write_start_frames(world: str, frames: np.ndarray, out_root: Path = WORLDS_DIR) -> Path:
    """Write ``frames`` as ``world``'s bundled start frames under ``out_root``."""
    return _write(Path(out_root) / world / "start_frames.npz", frames)


def write_checkpoint_start_frames(
    checkpoint: Path, starts: dict[str, np.ndarray], carry_from: Path | None = None
) -> list[Path]:
    """Write each world's ``starts`` as checkpoint directory ``checkpoint``'s own start frames.

    An env running the checkpoint starts from them (``files.checkpoint_start_frames``). With
    ``carry_from`` (the checkpoint it was trained from), that one's start frames of the other
    worlds are kept too, as the record of what its denoiser learned is. All are written before
    any replaces the one there (``files.atomic_write_all``).
    """
    frames = {checkpoint_start_frames(checkpoint, world): f for world, f in starts.items()}
    if carry_from is not None and Path(carry_from).resolve() != Path(checkpoint).resolve():
        for path in sorted((Path(carry_from) / START_FRAMES).glob("*.npz")):
            if path.stem not in starts:
                with np.load(path) as saved:
                    frames[checkpoint_start_frames(checkpoint, path.stem)] = saved["frames"]
    for path in frames:
        path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_all({path: _npz(f) for path, f in frames.items()})
    return list(frames)


@dataclass(frozen=True)
class RunStartFrames:
    """The start frames a training run writes into its model directory with each checkpoint.

    So that a run stopped or killed after any checkpoint leaves a model an env starts from
    frames of its data, as a finished one.

    Attributes:
        frames: Each world's, picked from the run's data (:func:`pick_world_start_frames`).
        carry_from: The checkpoint directory the run trains from, whose start frames of other
            worlds are kept (None: a fresh model).
    """

    frames: dict[str, np.ndarray]
    carry_from: Path | None = None

    @classmethod
    def pick(cls, data: Sequence[Path], carry_from: Path | None = None) -> RunStartFrames:
        """Pick ``data``'s start frames now (which reads and checks the datasets)."""
        return cls(pick_world_start_frames(data), carry_from)

    def write(self, checkpoint: Path) -> list[Path]:
        """Write them into ``checkpoint`` (:func:`write_checkpoint_start_frames`)."""
        return write_checkpoint_start_frames(checkpoint, self.frames, self.carry_from)


def _write(path: Path, frames: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, _npz(frames))
    return path


def _npz(frames: np.ndarray) -> Callable[[IO[bytes]], Any]:
    """A writer of ``frames`` as a start-frames file (key ``frames``)."""
    return lambda f: np.savez_compressed(f, frames=frames)
