"""robosuite (Panda arm, OSC_POSE controller) as a robot-modality episode source.

robosuite pins numpy<2, so it lives in its own venv and runs in a worker process
(``robosuite_worker.py``, executed by that venv's Python). Set-up, once::

    python3.11 -m venv ~/.venvs/robosuite
    ~/.venvs/robosuite/bin/pip install robosuite==1.5.2 mujoco==3.3.0
    export GYM_WORLDMODEL_ROBOSUITE_PYTHON=~/.venvs/robosuite/bin/python

Rendering is headless (``MUJOCO_GL=egl``; Mesa's EGL is enough, no GPU needed).

Actions, RT-1 model vectors (``envs.actions.RobotHead``, 13 wide) against OSC_POSE inputs: one
env step is one control step is one frame at 15 Hz, the camera (``sideview`` by default) is fixed.
Each frame is read after its step: robosuite's ``step()`` returns observations sampled at the
step's first physics substep, before the action acted.
    world_vector (3)        = OSC translation input along the robot base's x (forward), y
                              (left), z (up); 1 sets the controller's goal 5 cm away each
                              frame, and under a held input the arm moves about 0.8 cm in the
                              first frame and settles at about 1.6 cm a frame
                              (docs/experiments.md, ``oscstep.py``)
    rotation_delta (3)      = OSC axis-angle input x 0.5 rad, stored normalised by pi/2 as the
                              env does (so |value| <= 0.5 rad per frame)
    gripper_closedness (1)  = OSC gripper input (+1 closes, -1 opens)
    base displacement (3)   = 0 (the base is fixed); terminate_episode = 1 (arm mode)
Poses are not recorded (fixed camera): episodes carry ``poses=None``.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from gym_worldmodel.sources.episodes import Episode
from gym_worldmodel.sources.robosuite_worker import STYLES

PYTHON_ENV = "GYM_WORLDMODEL_ROBOSUITE_PYTHON"
_WORKER = Path(__file__).with_name("robosuite_worker.py")
_ROT_SCALE = 0.5 / (math.pi / 2)  # OSC rotation input -> RotHead's normalised rotation_delta


def osc_to_model(osc: np.ndarray) -> np.ndarray:
    """OSC_POSE inputs ``(T, 7)`` -> RT-1 model vectors ``(T, 13)`` (see the module docstring)."""
    out = np.zeros((len(osc), 13), np.float32)
    out[:, :3] = osc[:, :3]
    out[:, 3:6] = osc[:, 3:6] * _ROT_SCALE
    out[:, 6] = osc[:, 6]
    out[:, 11] = 1.0  # terminate_episode = 1: arm mode
    return out


def model_to_osc(vectors: np.ndarray) -> np.ndarray:
    """RT-1 model vectors ``(T, 13)`` (or flat ``(T, 10)``) -> OSC_POSE inputs ``(T, 7)``."""
    vectors = np.asarray(vectors, np.float32)
    osc = np.concatenate([vectors[:, :3], vectors[:, 3:6] / _ROT_SCALE, vectors[:, 6:7]], 1)
    return np.clip(osc, -1.0, 1.0)


class RobosuiteSource:
    """Episodes of a robosuite task, recorded in a worker process in robosuite's venv.

    Args:
        task: robosuite task (``Lift``, ``Stack``, ``PickPlaceCan``, ``Door``, ...).
        size: Native square render size in pixels.
        camera: robosuite camera name (``sideview`` shows the arm large; ``frontview`` shows
            it whole but small).
        python: The robosuite venv's Python (default: ``$GYM_WORLDMODEL_ROBOSUITE_PYTHON``).
        policy: Behaviour policy style, a key of ``robosuite_worker.STYLES``: ``smooth`` (slow,
            long-held, filtered end-effector velocities) or ``agile`` (faster, changing every
            1-6 frames).
    """

    def __init__(
        self,
        task: str = "Lift",
        size: int = 64,
        camera: str = "sideview",
        python: str = "",
        policy: str = "smooth",
    ) -> None:
        if policy not in STYLES:
            raise ValueError(f"policy must be one of {sorted(STYLES)}, got {policy!r}")
        python = python or os.environ.get(PYTHON_ENV, "")
        if not python or not Path(python).expanduser().is_file():
            raise ImportError(
                "RobosuiteSource needs robosuite in its own venv (it pins numpy<2): create it "
                "with `pip install robosuite==1.5.2 mujoco==3.3.0` and set "
                f"{PYTHON_ENV} to its python (got {python!r}); see "
                "gym_worldmodel/sources/robosuite_source.py"
            )
        self.python = str(Path(python).expanduser())
        self.task, self.size, self.camera, self.policy = task, int(size), camera, policy
        self.info: dict[str, Any] = {
            "source": "robosuite",
            "world": "robot",
            "env_name": f"{task}-Panda-OSC_POSE",
            "modality": "robot",
            "frame_size": self.size,
            "fps": 15,
            "action_width": 13,
            "pose_fields": [],
            "camera": camera,
            "policy": policy,
        }
        self._proc: subprocess.Popen | None = None
        self._tmp = tempfile.TemporaryDirectory(prefix="gwm-robosuite-")

    def _request(self, request: dict[str, Any]) -> np.lib.npyio.NpzFile:
        if self._proc is None or self._proc.poll() is not None:
            env = {**os.environ, "MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl")}
            self._log = open(os.path.join(self._tmp.name, "worker.log"), "w")  # noqa: SIM115
            self._proc = subprocess.Popen(
                [self.python, str(_WORKER), self.task, str(self.size), self.camera, self.policy],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=self._log,
                text=True,
                env=env,
            )
        out = os.path.join(self._tmp.name, "episode.npz")
        assert self._proc.stdin is not None and self._proc.stdout is not None
        self._proc.stdin.write(json.dumps({**request, "out": out}) + "\n")
        self._proc.stdin.flush()
        line = self._proc.stdout.readline()
        if not line:
            log = Path(self._log.name).read_text()[-2000:]
            raise RuntimeError(f"the robosuite worker ({self.python}) exited:\n{log}")
        reply = json.loads(line)
        if not reply["ok"]:
            kind = ValueError if reply.get("bad_input") else RuntimeError
            raise kind(f"robosuite worker: {reply['error']}")
        return np.load(out)

    def rollout(self, seed: int, steps: int) -> Episode:
        """Reset with ``seed`` and record ``steps`` actions of the behaviour policy."""
        data = self._request({"cmd": "rollout", "seed": int(seed), "steps": int(steps)})
        return self._episode(data, seed)

    def replay(self, seed: int, actions: np.ndarray) -> Episode:
        """Reset with ``seed`` and record the given RT-1 model vectors ``(T, 13)``."""
        actions = np.asarray(actions, np.float32)
        if actions.ndim != 2 or actions.shape[1] not in (10, 13):
            raise ValueError(f"actions must be (T, 13) robot model vectors, got {actions.shape}")
        path = os.path.join(self._tmp.name, "actions.npy")
        np.save(path, model_to_osc(actions))
        return self._episode(
            self._request({"cmd": "replay", "seed": int(seed), "actions": path}), seed
        )

    def start(self, seed: int) -> tuple[np.ndarray, None]:
        """Reset with ``seed``: the first frame and no pose (then step with :meth:`act`).

        The frame is ``(size, size, 3)`` uint8; the camera is fixed, so there is no pose.
        """
        return self._request({"cmd": "start", "seed": int(seed)})["frames"][0], None

    def act(self, vector: np.ndarray) -> tuple[np.ndarray, None]:
        """One control step (one frame) under an RT-1 model vector ``(13,)`` or flat ``(10,)``.

        Returns the frame after it and no pose, as :meth:`start`.
        """
        self._check_running()
        osc = model_to_osc(np.asarray(vector, np.float32)[None])
        return self._request({"cmd": "act", "osc": osc.tolist()})["frames"][0], None

    def get_state(self) -> dict[str, Any]:
        """The running episode's state for :meth:`set_state` (see ``robosuite_worker``).

        MuJoCo's integration state, the grippers' current actions, the controllers' state and
        the step clock, with the task, camera and frame size they belong to. An episode
        replays from it bit for bit, in this worker or a new one.
        """
        self._check_running()
        with self._request({"cmd": "get_state"}) as data:
            arrays = {k: data[k] for k in data.files}
        return {
            "env_name": self.info["env_name"],
            "camera": self.camera,
            "size": self.size,
        } | arrays

    def set_state(self, state: dict[str, Any]) -> None:
        """Restore :meth:`get_state`'s episode (starting a worker if none runs).

        A state of another task, camera or frame size, or arrays that do not fit, is a
        ``ValueError`` and changes nothing.
        """
        if not isinstance(state, dict):
            raise ValueError(f"state['source'] must be a dict, got {type(state).__name__}")
        mine = {"env_name": self.info["env_name"], "camera": self.camera, "size": self.size}
        theirs = {k: state.get(k) for k in mine}
        if theirs != mine:
            raise ValueError(f"state['source'] is of {theirs}, this source runs {mine}")
        path = os.path.join(self._tmp.name, "state.npz")
        arrays = {k: np.asarray(v) for k, v in state.items() if k not in mine}
        if any(a.dtype == object for a in arrays.values()):  # np.savez would need pickles
            raise ValueError("state['source'] must hold arrays of numbers")
        clash = sorted({"file", "allow_pickle"} & set(arrays))  # np.savez's own arguments
        if clash:
            raise ValueError(f"state['source'] has unexpected entries {clash}")
        np.savez(path, **arrays)  # type: ignore[arg-type]  # allow_pickle is excluded above
        self._request({"cmd": "set_state", "state": path}).close()

    def _check_running(self) -> None:
        if self._proc is None or self._proc.poll() is not None:  # a new worker has no episode
            raise RuntimeError(
                "no robosuite episode is running (worker not started or gone): "
                "call start(seed) first"
            )

    @staticmethod
    def _episode(data: Any, seed: int) -> Episode:
        return Episode(
            frames=data["frames"],
            actions=osc_to_model(data["osc"]),
            poses=None,
            seed=int(seed),
        )

    def close(self) -> None:
        """Stop the worker (a later rollout starts a new one)."""
        if self._proc is not None:
            if self._proc.poll() is None:
                assert self._proc.stdin is not None
                self._proc.stdin.write(json.dumps({"cmd": "quit"}) + "\n")
                self._proc.stdin.close()
                self._proc.wait(timeout=30)
            self._proc = None

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # noqa: BLE001 - best effort at interpreter exit
            pass
