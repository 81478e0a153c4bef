r"""Your own recordings as a data source: ``gym-worldmodel collect --source recordings``.

Record each episode as one ``.npz`` file in a folder, with the actions in the env's own action
space (what you would pass to ``env.step``):

    frames   uint8 (T + 1, H, W, 3)   the start frame and the frame after each action (any
                                      size: centre-cropped to a square and resized to the
                                      world's 64x64, as the env prepares a start picture)
    actions  (T, ...) in the world's action space; or one array per key with a leading T
             axis: the robot's RT-1 keys (the arm's 7 values are enough: the base keys and
             ``terminate_episode`` are filled in, and a one-hot ``terminate_episode`` is read
             as RT-1 stores it: ``envs.actions.complete_rt1``), the camera's look mode
             (move, look)
    poses    float64 (T + 1, 4)       the pose at each frame, for the camera and driving worlds
                                      only, in the units of ``gym_worldmodel.envs.pose``
                                      (camera: x m, y m, yaw deg, pitch deg; driving: x m, y m,
                                      heading deg, speed m/s)

Other arrays in a file (timestamps, joint positions) are refused by name unless ``ignore``
names them. This source hands the recordings to ``collect`` one episode per seed (recording
number ``seed``, in file name order; a seed past the last recording is refused, since a
recording taken twice could be both a training and a held-out episode), with the actions
encoded by the world's action head into the model action vectors a dataset holds, and the card
fields the training recipes check (world, modality, frame size, frame rate, action width).
With the recordings in ``my_recordings/``::

    gym-worldmodel collect --source recordings \
        --source-option folder=my_recordings --source-option world=robot \
        --source-option fps=15 --out data/my-robot --episodes 40 --steps 100 --heldout-every 10

``fps`` is the rate the recordings were taken at: a multiple of the worlds' 3 frames a step,
15 to fine-tune a shipped world (which runs at 15; resample recordings taken at another rate).
``--episodes`` is how many to take, at most the number of recordings (with the default
``--seed 0``), ``--steps`` the actions of each: a recording shorter than that, or whose actions
the world's action space refuses, is refused with its name. Episode ``i`` is the ``i``-th
file in name order: the card records the folder's listing, so a collection resumed after
recordings were added or removed is refused (their episodes would shift between the splits).
The class is also a template for a source of your own: an ``info`` dict and
``rollout(seed, steps) -> Episode`` (docs/datasets.md).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from gym_worldmodel.envs.actions import complete_rt1
from gym_worldmodel.envs.pose import POSE_FIELDS
from gym_worldmodel.envs.worlds import fit_frames, get_world
from gym_worldmodel.files import load_numbers, numpy_load_error
from gym_worldmodel.sources.episodes import DatasetError, Episode

FRAME_SIZE = 64  # the shipped worlds' VAE
FPS = 15  # the frame rate the shipped worlds run at
STEP_FRAMES = 3  # the shipped worlds' frames a step: a recording's rate is a multiple of it


def _listing(files: list[Path]) -> str:
    """The recordings' names and sizes, as a count and a short digest."""
    digest = hashlib.sha256()
    for path in files:
        digest.update(f"{path.name}\0{path.stat().st_size}\0".encode())
    return f"{len(files)} files, sha256 {digest.hexdigest()[:16]}"


class Recordings:
    """Episodes recorded as ``.npz`` files in ``folder``, for the world ``world``.

    Args:
        folder: Folder of ``*.npz`` recordings (see the module docstring).
        world: ``citywalk``, ``robot`` or ``driving``: whose action space the actions are in.
        fps: The frame rate they were recorded at, frames a second: a multiple of 3 (15 to
            fine-tune a shipped world).
        action_mode: The action head's mode the actions are in (the camera's ``keys`` or
            ``look``, the robot's ``flat``); None: the world's default. A recording that holds
            the RT-1 keys instead of ``actions`` is read in the robot's ``dict`` mode.
        ignore: Names of other arrays the recordings hold, to leave out (a list, or one
            comma-separated string: ``timestamps,joint_positions``).
    """

    def __init__(
        self,
        folder: str,
        world: str,
        fps: int = FPS,
        action_mode: str | None = None,
        ignore: str | Sequence[str] = (),
    ) -> None:
        if isinstance(fps, bool) or not isinstance(fps, int) or fps < 1 or fps % STEP_FRAMES:
            raise ValueError(
                f"fps must be the recordings' frame rate, a positive multiple of the worlds' "
                f"{STEP_FRAMES} frames a step (15 to fine-tune a shipped world), got {fps!r}: "
                "resample recordings taken at another rate (keep every k-th frame and sum the "
                "actions between)"
            )
        if not isinstance(folder, (str, os.PathLike)) or not isinstance(world, str):
            folder, world = str(folder), str(world)  # --source-option values read as JSON
        # (not hidden files: macOS's ._name.npz beside each recording is no recording)
        self.files = sorted(p for p in Path(folder).expanduser().glob("*.npz") if p.name[0] != ".")
        if not self.files:
            raise FileNotFoundError(f"no .npz recordings in {folder!r}")
        self.seeds = range(len(self.files))  # recording number i is episode seed i
        self.world = get_world(world)
        self.head = self.world.action_head(action_mode)
        names = ignore.split(",") if isinstance(ignore, str) else ignore
        if not isinstance(names, Sequence) or not all(isinstance(n, str) for n in names):
            raise ValueError(
                f"ignore must name arrays, comma-separated (ignore=timestamps,joint_positions), "
                f"got {ignore!r}"
            )
        self.ignore = {n.strip() for n in names} - {""}
        self.info = {
            "source": "recordings",
            "folder": str(Path(folder).expanduser().resolve()),
            "world": world,
            "modality": self.head.modality,
            "frame_size": FRAME_SIZE,
            "fps": fps,
            "action_width": self.head.width,
            "pose_fields": list(POSE_FIELDS[self.world.pose]) if self.world.pose else [],
            # which file is which episode: a recording added or removed between two runs of
            # collect would shift them, and a held-out episode could come back as a training
            # one, so a resume into the same dataset is then refused (other settings)
            "recordings": _listing(self.files),
        }

    def rollout(self, seed: int, steps: int) -> Episode:
        """The first ``steps`` actions of recording number ``seed`` and the frames they led to.

        A recording that cannot serve is a ``DatasetError`` naming its file and why.
        """
        if not 0 <= seed < len(self.files):
            raise DatasetError(
                f"episode seed {seed}: {self.info['folder']} holds {len(self.files)} recordings "
                f"(seeds 0-{len(self.files) - 1}): ask for at most {len(self.files)} episodes "
                "with --seed 0 (a recording taken twice could be both a training and a "
                "held-out episode)"
            )
        path = self.files[seed]
        try:
            data = load_numbers(path, skip=self.ignore)
        except (OSError, ValueError) as err:
            raise DatasetError(f"{path}: not a readable .npz ({numpy_load_error(err)})") from err
        if not isinstance(data, dict):
            raise DatasetError(f"{path}: one array (an .npy's), not a recording's named arrays")
        try:
            return self._episode(path, data, steps, seed)
        except DatasetError:
            raise
        except (ValueError, TypeError, IndexError) as err:  # its arrays' shapes, kinds, values
            raise DatasetError(f"{path}: {type(err).__name__}: {err}") from err

    def _episode(self, path: Path, arrays: dict[str, Any], steps: int, seed: int) -> Episode:
        """The episode of one recording's ``arrays`` (those ``ignore`` does not name)."""
        if "frames" not in arrays:
            raise DatasetError(f"{path}: no frames array (it holds {sorted(arrays)})")
        frames = arrays.pop("frames")
        poses = arrays.pop("poses", None)
        if (
            frames.dtype != np.uint8
            or frames.ndim != 4
            or frames.shape[-1] != 3
            or 0 in frames.shape
        ):
            scale = (
                " (floats in [0, 1]: (frames * 255).round().astype(np.uint8))"
                if frames.dtype.kind == "f"
                else ""
            )
            raise DatasetError(
                f"{path}: frames must be uint8 (T+1, H, W, 3), got {frames.dtype} "
                f"{frames.shape}{scale}"
            )
        if poses is not None and self.world.pose is None:
            raise DatasetError(
                f"{path}: the {self.world.name} world has no pose (its camera is fixed): leave "
                "the poses out, or ignore=poses"
            )
        if len(frames) < steps + 1:
            raise DatasetError(f"{path}: {len(frames)} frames, fewer than --steps {steps} + 1")
        head = self.head
        if "actions" in arrays:
            actions = arrays.pop("actions")
            if arrays:
                raise DatasetError(
                    f"{path}: arrays {sorted(arrays)} besides frames, actions and poses: "
                    f"ignore={','.join(sorted(arrays))} leaves them out"
                )
        elif head.modality == "driving":
            raise DatasetError(
                f"{path}: no actions array (driving's: (T, 2) steering and acceleration "
                f"fractions; it holds {sorted(arrays)})"
            )
        else:  # one array per key: the robot's RT-1 dict, or the camera's look mode
            actions = arrays
            head = self.world.action_head({"robot": "dict", "camera": "look"}[head.modality])
            if head.modality == "camera" and not {"move", "look"} <= set(arrays):
                raise DatasetError(
                    f"{path}: no actions array, nor the look mode's move and look (it holds "
                    f"{sorted(arrays)})"
                )
            extra = sorted(set(arrays) - {"move", "look"})
            if head.modality == "camera" and extra:
                raise DatasetError(
                    f"{path}: arrays {extra} besides frames, poses and the look mode's move and "
                    f"look (or actions): ignore={','.join(extra)} leaves them out"
                )
            if head.modality == "robot":  # the arm's 7 values are enough
                try:
                    actions = complete_rt1(arrays)
                except ValueError as err:  # (ActionError)
                    raise DatasetError(
                        f"{path}: its actions: {err} (ignore=NAME,... leaves other arrays out)"
                    ) from err
        columns = list(actions.values()) if isinstance(actions, dict) else [actions]
        if any(np.ndim(c) == 0 for c in columns):
            raise DatasetError(f"{path}: actions need one row per step, got a single number")
        count = min(map(len, columns))
        if count < steps:
            raise DatasetError(f"{path}: {count} actions, fewer than --steps {steps}")
        if isinstance(actions, dict):
            actions = {k: v[:steps] for k, v in actions.items()}
        else:
            actions = actions[:steps]
        try:
            vectors = head.encode(actions, batch=steps, frames=1)[:, 0]  # (steps, width)
        except ValueError as err:  # ActionError: out of range, wrong shape or dtype
            raise DatasetError(f"{path}: its actions: {err}") from err
        frames = frames[: steps + 1]
        frames = fit_frames(frames, FRAME_SIZE)  # as the env fits a start picture
        try:
            return Episode(
                frames=frames,
                actions=vectors.astype(np.float32),
                poses=None if poses is None else np.asarray(poses[: steps + 1], np.float64),
                seed=seed,
            )
        except DatasetError as err:  # poses of the wrong shape
            raise DatasetError(f"{path}: {err}") from err
