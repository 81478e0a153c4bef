"""Observation modes: what each step returns, its space, and row access to batched observations.

A mode names the frames (``"rgb"``, ``"chunk"`` or ``"latent"``) and, with ``"+pose"``
(worlds with a pose), adds the pose integrated from the actions: the observation is then a
``Dict`` of the frames under the frames' name and ``"pose"``, ``(4,)`` float32 in the units of
``info["pose"]`` (see :mod:`gym_worldmodel.envs.pose`), for tasks that depend on where the
agent is, which the frames show only indirectly.

Batched observations are an array (or tensor) or a dict of them; :func:`take`, :func:`put` and
:func:`copy` index and copy either.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from gymnasium import spaces

from gym_worldmodel.envs.options import check_choice

FRAME_MODES = ("rgb", "chunk", "latent")
OBS_MODES = FRAME_MODES + tuple(f"{m}+pose" for m in FRAME_MODES)
LATENT_BOUND = 100.0  # latent observations are clipped to +-this


def parse_obs_mode(obs_mode: str, pose_kind: str | None) -> tuple[str, bool]:
    """``(frames mode, with pose)`` of ``obs_mode``; ``pose_kind`` is the world's (None: none)."""
    check_choice("obs_mode", obs_mode, OBS_MODES)
    frames, _, pose = obs_mode.partition("+")
    if pose and pose_kind is None:
        raise ValueError(
            f"obs_mode {obs_mode!r} needs a world with a pose (camera or driving); this world's "
            f"camera is fixed, so it has none: use obs_mode={frames!r}"
        )
    return frames, bool(pose)


def frames_space(frames: str, config: Any) -> spaces.Box:
    """The space of one row's frames in mode ``frames`` for a model ``config``."""
    size, f = config.vae.image_size, config.dit.chunk_frames
    if frames == "latent":
        shape: tuple[int, ...] = (
            f,
            config.dit.latent_channels,
            config.dit.latent_size,
            config.dit.latent_size,
        )
        return spaces.Box(-LATENT_BOUND, LATENT_BOUND, shape, np.float32)
    shape = (size, size, 3) if frames == "rgb" else (f, size, size, 3)
    return spaces.Box(0, 255, shape, np.uint8)


def pose_space(pose_kind: str, max_speed: float | None = None) -> spaces.Box:
    """One row's pose: position unbounded, angles in degrees, driving speed up to ``max_speed``.

    Angles wrap to [-180, 180); the bound is closed because float32 rounds 179.99999 to 180.
    """
    inf = float(np.finfo(np.float32).max)  # position is unbounded: any float32 (as CartPole)
    if pose_kind == "camera":  # x_m, y_m, yaw_deg, pitch_deg (pitch clipped to +-60)
        low, high = [-inf, -inf, -180.0, -60.0], [inf, inf, 180.0, 60.0]
    else:  # driving: x_m, y_m, heading_deg, speed_mps
        low, high = [-inf, -inf, -180.0, 0.0], [inf, inf, 180.0, max_speed or inf]
    return spaces.Box(np.array(low, np.float32), np.array(high, np.float32), (4,), np.float32)


def observation_space(
    frames: str, with_pose: bool, config: Any, pose_kind: str | None, max_speed: float | None
) -> spaces.Space:
    """One row's observation space: the frames, or a ``Dict`` of them and the pose."""
    frame_space = frames_space(frames, config)
    if not with_pose:
        return frame_space
    assert pose_kind is not None  # parse_obs_mode refuses a pose observation without one
    return spaces.Dict({frames: frame_space, "pose": pose_space(pose_kind, max_speed)})


def with_pose(space: spaces.Space, frames_name: str, frames: Any, pose: Any) -> Any:
    """The observation ``{frames_name: frames, "pose": pose}`` in ``space``'s key order."""
    assert isinstance(space, spaces.Dict)  # a pose observation's space (observation_space's)
    parts = {frames_name: frames, "pose": pose}
    return {k: parts[k] for k in space.spaces}


def take(obs: Any, rows: Any) -> Any:
    """Rows ``rows`` (an index, slice or index array) of batched observations."""
    if isinstance(obs, dict):
        return {k: v[rows] for k, v in obs.items()}
    return obs[rows]


def put(dst: Any, rows: Any, src: Any) -> None:
    """Write ``src`` into rows ``rows`` of batched observations ``dst``, in place."""
    if isinstance(dst, dict):
        for k, v in dst.items():
            v[rows] = src[k]
    else:
        dst[rows] = src


def copy(obs: Any) -> Any:
    """A copy of observations that shares no memory with them."""
    if isinstance(obs, dict):
        return {k: copy(v) for k, v in obs.items()}
    return obs.clone() if isinstance(obs, torch.Tensor) else obs.copy()


def python_value(value: Any) -> Any:
    """NumPy scalars (and 0-d arrays) as Python scalars; arrays copied.

    An info handed out must not alias the env's buffers.
    """
    if isinstance(value, np.ndarray):
        return value.item() if value.ndim == 0 else value.copy()
    if isinstance(value, np.generic):
        return value.item()
    return value


def info_row(infos: dict[str, Any], row: int, skip: tuple[str, ...] = ()) -> dict[str, Any]:
    """Row ``row`` of a vector info dict, for per-row consumers (SB3, PettingZoo).

    Entries masked out for the row (``infos["_key"][row]`` False) and the keys in ``skip`` are
    left out; values go through :func:`python_value`.
    """
    out = {}
    for key, values in infos.items():
        if key.startswith("_") or key in skip:
            continue
        mask = infos.get(f"_{key}")
        if mask is not None and not mask[row]:
            continue
        out[key] = python_value(values[row])
    return out


def rows_only(infos: dict[str, Any], rows: np.ndarray) -> dict[str, Any]:
    """``infos`` of the ``rows`` (bool mask) alone.

    Gymnasium's layout: batched values, zero and masked out elsewhere.
    """
    out = {}
    for key, values in infos.items():
        if not key.startswith("_"):
            out[key] = np.where(rows.reshape(-1, *[1] * (values.ndim - 1)), values, 0)
            out[f"_{key}"] = rows & infos.get(f"_{key}", True)
    return out


def observe(
    space: spaces.Space,
    frames_mode: str,
    frames: torch.Tensor,
    latents: torch.Tensor,
    pose: np.ndarray | None,
    to_device: Any = None,
) -> Any:
    """Batched observations in ``frames_mode``, copies of the env's buffers.

    ``frames``: what the mode shows (the last frames ``(B, H, W, 3)`` or the chunks);
    ``latents``: the chunks' latents (clipped to +-``LATENT_BOUND`` in ``"latent"``);
    ``pose``: ``(B, 4)`` to add (a ``+pose`` mode) or None; ``to_device``: turns a NumPy array
    into a tensor on the env's device (``output="torch"``), None for NumPy observations.
    """
    shown = (
        frames if frames_mode != "latent" else latents.float().clamp(-LATENT_BOUND, LATENT_BOUND)
    )
    obs = shown.clone() if to_device is not None else shown.to("cpu", copy=True).numpy()
    if pose is None:
        return obs
    pose = pose.astype(np.float32)
    return with_pose(space, frames_mode, obs, pose if to_device is None else to_device(pose))


def step_infos(steps: np.ndarray, pose: np.ndarray | None, engine: Any) -> dict[str, Any]:
    """A step's (or reset's) infos of every row: step counts, poses, memory hits and scores."""
    n = len(steps)
    ones = np.ones(n, bool)
    infos: dict[str, Any] = {"step": steps.copy(), "_step": ones}
    if pose is not None:
        infos["pose"], infos["_pose"] = pose.copy(), ones.copy()
    recall = getattr(engine, "recall", None)
    if getattr(engine, "memory", None) is not None:
        hits = np.zeros(n, np.int64) if recall is None else recall.hits
        score = np.zeros(n) if recall is None else recall.score[:, 0].copy()
        infos["memory_hits"], infos["_memory_hits"] = hits, ones.copy()
        infos["memory_score"], infos["_memory_score"] = score, ones.copy()
    return infos


def final_infos(done: np.ndarray, obs: Any, infos: dict[str, Any]) -> dict[str, Any]:
    """Same-step autoreset's record of the done rows: their last observations and infos."""
    final_obs = np.empty(len(done), dtype=object)
    for i in np.flatnonzero(done):
        final_obs[i] = take(obs, i)
    return {
        "final_obs": final_obs,
        "_final_obs": done.copy(),
        "final_info": rows_only(infos, done),
        "_final_info": done.copy(),
    }
