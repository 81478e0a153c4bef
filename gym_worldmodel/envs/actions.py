"""User-facing action spaces and their encoding into the model's per-frame action vectors.

Each world has an action head: a Gymnasium space for one step, a validator that rejects bad
input with a message naming what was expected, and an encoder to the padded ``(B, F, A)`` vectors
the action experts read. A step takes one action (applied to every frame of the chunk) or a
per-frame sequence with a leading axis of length F; the robot's ``terminate_episode`` is one
per step (a ``(3,)`` row would read both as per-frame values and as RT-1's one-hot).

Units of the user-facing actions (the model vectors, which reward hooks receive, encode them
as the column constants below say: camera keys as one-hots, the robot's rotations divided by
their bound, so pi/2 radians of ``rotation_delta`` is 1.0 there):
    camera, keys mode: ``MultiDiscrete([5, 5])`` = (translation, rotation).
        translation: 0 none, 1 W forward, 2 A left, 3 S back, 4 D right; one press moves
        ``move_m`` metres per frame. rotation: 0 none, 1 left, 2 right, 3 up, 4 down; one press
        turns ``turn_deg`` degrees per frame. Both can be pressed together.
    camera, discrete mode: ``Discrete(25)``, the keys mode's pair as ``5 * translation +
        rotation`` (for agents of one discrete action, such as DQN).
    camera, look mode: ``Dict(move=Discrete(5), look=Box(-1, 1, (2,)))``; look = (yaw, pitch)
        rates as fractions of ``turn_deg`` per frame, yaw positive to the right (which lowers
        ``info["pose"]``'s yaw: it counts counter-clockwise, as the keys' left turn), pitch up.
    robot: the RT-1 dict. world_vector (3,) in [-1, 1] (normalised end-effector translation),
        rotation_delta (3,) radians in [-pi/2, pi/2], gripper_closedness_action (1,) in [-1, 1]
        (-1 open, +1 close), base_displacement_vector (2,) in [-1, 1], base_displacement_vertical
        _rotation (1,) radians in [-pi, pi], terminate_episode Discrete(3) (0 terminate: the
        episode ends after this step, 1 arm, 2 base). Flat mode: ``Box(-1, 1, (10,))`` in that
        order with rotations divided by their bound, terminate fixed to 1 (arm), for SB3.
    driving: ``Box(-1, 1, (2,))`` = (steering, acceleration) as fractions of ``max_steer_deg``
        (positive left) and ``max_accel`` m/s^2 (negative brakes); speed stays in
        [0, ``max_speed``] m/s and starts at 25 m/s (the reset option ``speed`` sets it).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from gymnasium import spaces

CAMERA_ROTATIONS = np.array([[0, 0], [-1, 0], [1, 0], [0, 1], [0, -1]], dtype=np.float32)

#: Where each part of an action sits in its world's model vector (the columns the action expert
#: reads). Camera, 12 wide: the movement key one-hot, the rotation key one-hot, then the look
#: rates (yaw, pitch) as fractions of ``turn_deg``; a rotation key also sets the rates.
CAMERA_MOVE, CAMERA_TURN, CAMERA_LOOK = slice(0, 5), slice(5, 10), slice(10, 12)
CAMERA_YAW, CAMERA_PITCH = 10, 11
#: Robot, 13 wide: the 10 RT-1 values in [-1, 1] (rotations divided by their bound), then
#: ``terminate_episode``'s one-hot (terminate, arm, base).
ROBOT_VALUES, ROBOT_MODE, ROBOT_TERMINATE, ROBOT_ARM = slice(0, 10), slice(10, 13), 10, 11
#: Driving, 2 wide: steering and acceleration fractions.
DRIVING_STEER, DRIVING_ACCEL = 0, 1
RT1_KEYS = (
    ("world_vector", 3, 1.0),
    ("rotation_delta", 3, math.pi / 2),
    ("gripper_closedness_action", 1, 1.0),
    ("base_displacement_vector", 2, 1.0),
    ("base_displacement_vertical_rotation", 1, math.pi),
)


class ActionError(ValueError):
    """An action that does not fit the action space; the message says what was expected."""


def on_host(value: Any, floats: torch.dtype = torch.float32) -> Any:
    """Torch tensors (any device, with or without grad) as NumPy arrays, in lists at any depth.

    Floating tensors become ``floats`` (bf16 has no NumPy dtype): float32 for actions, which
    the model reads so; float64 keeps a reset option's or a hook's value as given. Anything
    else is returned as it is.
    """
    if isinstance(value, torch.Tensor):
        value = value.detach().to("cpu")
        return (value.to(floats) if value.is_floating_point() else value).numpy()
    if isinstance(value, (list, tuple)):
        items = [on_host(v, floats) for v in value]
        if any(new is not old for new, old in zip(items, value, strict=True)):
            return type(value)(items)
    return value


def batch_one(action: Any) -> Any:
    """Add a leading batch axis of 1 to an action (dicts entry by entry).

    Tensors stay tensors (the vector env reads them on any device, with or without grad);
    what cannot be read as an array is an :class:`ActionError`.
    """
    if isinstance(action, Mapping):
        return {k: batch_one(v) for k, v in action.items()}
    if isinstance(action, torch.Tensor):
        return action[None]
    try:
        return np.asarray(action)[None]
    except (TypeError, ValueError) as err:  # ragged lists, a list of dicts, ...
        raise ActionError(f"action: cannot read {type(action).__name__} as an array") from err


#: Where a dict given to a mode that takes arrays belongs (by the action name's first word).
_DICT_MODES = {
    "robot": ": this action_mode takes arrays; the RT-1 dict is action_mode='dict'",
    "camera": ": this action_mode takes arrays; the move / look dict is action_mode='look'",
}


def _as_array(value: Any, name: str) -> np.ndarray:
    value = on_host(value)  # a policy's output may be a tensor on any device, with grad
    if value is None or isinstance(value, Mapping):
        what = "None" if value is None else f"a dict with keys {sorted(map(str, value))}"
        world = name.split()[0]  # a dict is the action of another mode of the robot or camera
        hint = _DICT_MODES.get(world, "") if value is not None else ""
        raise ActionError(f"{name}: expected an array of numbers, got {what}{hint}")
    try:
        arr = np.asarray(value)
    except Exception as err:  # noqa: BLE001 - any conversion failure is a bad action
        raise ActionError(f"{name}: cannot read {type(value).__name__} as an array") from err
    if arr.dtype == object:
        raise ActionError(f"{name}: expected numbers, got an object array")
    return arr


def _frames_axis(
    arr: np.ndarray, shape: tuple[int, ...], batch: int, frames: int, name: str
) -> np.ndarray:
    """``(B, *shape)`` or per-frame ``(B, F, *shape)`` -> ``(B, F, *shape)``."""
    if arr.ndim and arr.shape[0] == batch:
        if arr.shape[1:] == shape:
            return np.repeat(arr[:, None], frames, axis=1)
        if arr.shape[1:] == (frames, *shape):
            return arr
    if batch > 1 and arr.shape == shape:  # one env's, not B of them (a (F, ...) could be rows)
        raise ActionError(
            f"{name}: got one env's action, shape {arr.shape}; this vector env has {batch} rows "
            f"and takes one action per row, shape {(batch, *arr.shape)} (np.stack of the rows')"
        )
    if arr.ndim == 0 or arr.shape[0] != batch:
        raise ActionError(
            f"{name}: expected one action per env, a leading axis of {batch}, got shape {arr.shape}"
        )
    raise ActionError(
        f"{name}: expected shape {shape} per env (or {(frames, *shape)} per frame), "
        f"got {arr.shape[1:]}" + (f" (the batch's shape: {arr.shape})" if batch > 1 else "")
    )


def check_box(
    value: Any,
    low: float,
    high: float,
    shape: tuple[int, ...],
    batch: int,
    frames: int,
    name: str,
) -> np.ndarray:
    """Validate a batch of ``batch`` Box actions; return float32 ``(B, F, *shape)``."""
    arr = _as_array(value, name)
    if arr.dtype.kind not in "iuf":  # not bools, complex numbers, times or objects
        raise ActionError(f"{name}: expected real numbers, got dtype {arr.dtype}")
    arr = _frames_axis(arr, shape, batch, frames, name)  # checked as given, then cast
    not_finite = ~np.isfinite(arr)
    if not_finite.any():
        raise ActionError(f"{name}: expected finite values, got {_first(arr, not_finite, shape)}")
    outside = (arr < low - 1e-6) | (arr > high + 1e-6)
    if outside.any():
        got = _first(arr, outside, shape)
        raise ActionError(f"{name}: expected values in [{low:g}, {high:g}], got {got}")
    return arr.astype(np.float32)


def _first(arr: np.ndarray, bad: np.ndarray, shape: tuple[int, ...]) -> str:
    """The first value ``bad`` flags in ``(B, F, *shape)`` actions, its entry and the rows."""
    first = tuple(np.argwhere(bad)[0])  # (row, frame, *entry)
    at = [int(i) for i in first[2:]]
    entry = f" at entry {at if len(at) > 1 else at[0]}" if shape else ""
    return f"{arr[first]:g}{entry}{_rows(bad)}"


def _rows(bad: np.ndarray) -> str:
    """`` in rows [...]`` naming the rows of a batch ``bad`` flags; nothing for a 1-row batch."""
    if len(bad) < 2:
        return ""
    rows = np.flatnonzero(bad.reshape(len(bad), -1).any(1)).tolist()
    return f" in rows {rows[:8]}{'...' if len(rows) > 8 else ''}"


def check_discrete(
    value: Any, nvec: tuple[int, ...], batch: int, frames: int, name: str
) -> np.ndarray:
    """Validate a batch of ``batch`` (Multi)Discrete actions; return int64 ``(B, F, len(nvec))``."""
    arr = _as_array(value, name)
    if arr.dtype.kind not in "iuf":  # not bools, times or objects
        raise ActionError(f"{name}: expected integers, got dtype {arr.dtype}")
    if arr.dtype.kind == "f":
        bad = ~(np.isfinite(arr) & (arr == np.round(arr)))
        if bad.any():
            got = arr[bad][0].item()
            raise ActionError(f"{name}: expected integers, got {got!r}{_rows(np.atleast_1d(bad))}")
    wide = arr.astype(np.float64) if arr.dtype.kind == "f" else arr  # float16 holds no 2**31
    huge = (wide >= 2**31) | (wide <= -(2**31))  # a cast to int64 could wrap; past any n anyway
    if huge.any():
        raise ActionError(
            f"{name}: expected integers in [0, n) for n = {list(nvec)}, got "
            f"{arr[huge][0].item()!r}{_rows(np.atleast_1d(huge))}"
        )
    shape = (len(nvec),) if len(nvec) > 1 else ()
    arr = _frames_axis(arr.astype(np.int64), shape, batch, frames, name).reshape(batch, frames, -1)
    outside = (arr < 0) | (arr >= np.asarray(nvec))
    if outside.any():
        row = int(np.flatnonzero(outside.reshape(len(arr), -1).any(1))[0])
        got = arr[row].reshape(-1, len(nvec))[outside[row].reshape(-1, len(nvec)).any(1)][0]
        raise ActionError(
            f"{name}: expected integers in [0, n) for n = {list(nvec)}, got {got.tolist()}"
            + _rows(outside)
        )
    return arr


def check_keys(actions: Any, expected: set[str], name: str) -> None:
    """Raise ``ActionError`` unless ``actions`` is a dict of exactly the ``expected`` keys."""
    if not isinstance(actions, Mapping):
        raise ActionError(
            f"{name}: expected a dict with keys {sorted(expected)}, got {type(actions).__name__}"
        )
    missing, extra = sorted(expected - set(actions)), sorted(set(actions) - expected, key=str)
    if missing or extra:
        parts = [
            f"{what} {keys}" for what, keys in (("lacks", missing), ("has unknown", extra)) if keys
        ]
        raise ActionError(
            f"{name}: the dict {' and '.join(parts)}; expected the keys {sorted(expected)}"
        )


def complete_rt1(columns: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """A robot log's per-step RT-1 arrays as the robot world's dict actions, gaps filled in.

    Robot datasets store the arm's 7 values and often nothing else. Each array has one row per
    step (``T``): ``world_vector`` ``(T, 3)``, ``rotation_delta`` ``(T, 3)`` radians,
    ``gripper_closedness_action`` ``(T, 1)`` or ``(T,)``; the base keys may be left out
    (zeros: no base motion), and so may ``terminate_episode`` (1: arm mode for every step),
    which may also be RT-1's one-hot ``(T, 3)``. Values are not range-checked here: the action
    head does that when the actions are encoded (``env.step`` of one row ``t``, in an env made
    with ``action_mode="dict"``: ``{k: v[t] for k, v in complete_rt1(log).items()}``).

    Raises:
        ActionError: An unknown or missing key, arrays of different lengths, or a
            ``terminate_episode`` that is not one-hot.
    """
    if not isinstance(columns, Mapping):
        raise ActionError(f"RT-1 actions: expected a dict of arrays, got {type(columns).__name__}")
    out = {}
    for key, value in columns.items():
        try:
            out[key] = np.asarray(on_host(value))
        except Exception as err:  # noqa: BLE001 - ragged lists, sparse or meta tensors, ...
            raise ActionError(f"RT-1 actions: {key!r} is not an array of numbers ({err})") from err
        if out[key].dtype.kind not in "biuf":
            raise ActionError(
                f"RT-1 actions: {key!r} is not an array of numbers (it holds {out[key].dtype})"
            )
    optional = {k: n for k, n, _ in RT1_KEYS if k.startswith("base_")}
    required = {k for k, _, _ in RT1_KEYS} - set(optional)
    if not required <= set(out) <= required | {*optional, "terminate_episode"}:
        raise ActionError(
            f"RT-1 actions: expected the keys {sorted(required)} (and optionally "
            f"{sorted(optional)} and terminate_episode), got {sorted(out, key=str)}"
        )
    shapes = {k: v.shape for k, v in out.items()}
    steps = {shape[0] if shape else 0 for shape in shapes.values()}
    if len(steps) != 1 or 0 in steps:
        widths = {k: n for k, n, _ in RT1_KEYS} | {"terminate_episode": 3}
        one_step = all(v.shape in {(widths[k],), (1,), ()} for k, v in out.items())
        raise ActionError(
            f"RT-1 actions: every array must have the same number of rows (one per step, at "
            f"least one), got shapes {shapes}"
            + (
                ": these are one step's actions; give each a step axis, "
                "{k: np.asarray(v)[None] for k, v in step.items()}"
                if one_step
                else ""
            )
        )
    (count,) = steps
    for key, n, _ in RT1_KEYS:  # a 1-wide key may be stored flat, (T,)
        if n == 1 and key in out and out[key].ndim == 1:
            out[key] = out[key][:, None]
    for key, n in optional.items():
        out.setdefault(key, np.zeros((count, n), np.float32))
    term = out.setdefault("terminate_episode", np.ones(count, np.int64))
    if term.ndim == 2 and term.shape[1] == 3:  # RT-1's one-hot
        if not np.array_equal(np.sort(term, axis=1), np.tile([0, 0, 1], (count, 1))):
            raise ActionError("RT-1 actions: terminate_episode (T, 3) must be one-hot")
        out["terminate_episode"] = term.argmax(1)
    return out


class _Head:
    """What every action head shares."""

    #: Top speed in m/s of a head that drives (the driving world's); None elsewhere.
    max_speed: float | None = None

    def ends_episode(self, vec: np.ndarray) -> np.ndarray:
        """Rows whose encoded actions ``(B, F, width)`` end the episode: none by default."""
        return np.zeros(len(vec), bool)


def _key_combos(groups: list[dict[str, Any]], action: Callable[[list[Any]], Any]) -> dict:
    """``gymnasium.utils.play``'s keys_to_action: one key or none from each group, held together.

    ``groups`` map a key (a character) to what it means; ``action(meanings)`` builds the action
    from one meaning per group (None where no key of the group is held). Holding no key at all
    is left to ``play``'s ``noop``.
    """
    out = {}
    for combo in itertools.product(*[[*group, None] for group in groups]):
        if any(combo):
            keys = "".join(k for k in combo if k)
            out[keys] = action(
                [None if k is None else g[k] for k, g in zip(combo, groups, strict=True)]
            )
    return out


@dataclass(frozen=True)
class CameraHead(_Head):
    """Camera movement: keyboard keys, or a movement key plus continuous look rates.

    Modes: ``"keys"`` ``MultiDiscrete([5, 5])`` (translation, rotation); ``"discrete"`` the same
    25 key pairs as one ``Discrete(25)`` index, ``5 * translation + rotation``, for agents of one
    discrete action (DQN); ``"look"`` a movement key and (yaw, pitch) rates.
    """

    mode: str = "keys"
    move_m: float = 0.2
    turn_deg: float = 6.0
    modality: str = "camera"
    width: int = 12

    def __post_init__(self) -> None:
        if self.mode not in ("keys", "discrete", "look"):
            raise ValueError(
                f"camera action mode must be 'keys', 'discrete' or 'look', got {self.mode!r}"
            )

    @property
    def space(self) -> spaces.Space:
        """One step's action space."""
        if self.mode == "keys":
            return spaces.MultiDiscrete([5, 5])
        if self.mode == "discrete":
            return spaces.Discrete(25)
        return spaces.Dict(
            {"move": spaces.Discrete(5), "look": spaces.Box(-1.0, 1.0, (2,), np.float32)}
        )

    def idle_action(self) -> Any:
        """One step's do-nothing action: no key, no look."""
        if self.mode == "keys":
            return np.zeros(2, np.int64)
        if self.mode == "discrete":
            return np.int64(0)
        return {"move": np.int64(0), "look": np.zeros(2, np.float32)}

    def keys_to_action(self) -> dict[str, Any]:
        """Keyboard controls for ``gymnasium.utils.play``.

        W A S D move (forward, left, back, right), J L turn left and right, I K look up and
        down; a move and a turn together.
        """
        moves = {k: i for i, k in enumerate("wasd", 1)}
        turns = {k: i for i, k in enumerate("jlik", 1)}

        def action(held: list[Any]) -> Any:
            move, turn = (0 if k is None else k for k in held)
            if self.mode == "keys":
                return np.array([move, turn], np.int64)
            if self.mode == "discrete":
                return np.int64(5 * move + turn)
            return {"move": np.int64(move), "look": CAMERA_ROTATIONS[turn].copy()}

        return _key_combos([moves, turns], action)

    def effort(self, vec: np.ndarray) -> np.ndarray:
        """Mean square of (movement key pressed, yaw rate, pitch rate) per row of ``vec``."""
        moving = 1.0 - vec[..., CAMERA_MOVE.start]  # the first key: no movement
        return np.mean((moving**2 + (vec[..., CAMERA_LOOK] ** 2).sum(-1)) / 3, axis=1)

    def encode(self, actions: Any, batch: int, frames: int) -> np.ndarray:
        """Batch of actions -> ``(B, F, 12)``: move one-hot, rotate one-hot, (yaw, pitch)."""
        out = np.zeros((batch, frames, self.width), np.float32)
        if self.mode in ("keys", "discrete"):
            if self.mode == "keys":
                keys = check_discrete(actions, (5, 5), batch, frames, "camera keys")
                move, rot = keys[..., 0], keys[..., 1]
            else:
                index = check_discrete(actions, (25,), batch, frames, "camera action")[..., 0]
                move, rot = np.divmod(index, 5)
            look = CAMERA_ROTATIONS[rot]
        else:
            check_keys(actions, {"move", "look"}, "camera look action")
            move = check_discrete(actions["move"], (5,), batch, frames, "camera move")[..., 0]
            look = check_box(actions["look"], -1.0, 1.0, (2,), batch, frames, "camera look")
            rot = np.zeros_like(move)
        np.put_along_axis(out[..., CAMERA_MOVE], move[..., None], 1.0, axis=-1)
        np.put_along_axis(out[..., CAMERA_TURN], rot[..., None], 1.0, axis=-1)
        out[..., CAMERA_LOOK] = look
        return out


def rpy_to_rotation_delta(rpy: Any) -> np.ndarray:
    """Roll, pitch, yaw deltas (radians) as the robot world's ``rotation_delta``: axis-angle.

    The robot world was trained on robosuite's OSC_POSE rotations, an axis-angle vector (its
    direction the axis, its length the angle). A policy that outputs a rotation as roll, pitch
    and yaw (RT-1's convention: about the fixed x, y and z axes, in that order, so the
    rotation matrix is ``Rz(yaw) @ Ry(pitch) @ Rx(roll)``) converts it with this. The two are
    the same for a turn about one axis and to first order for small ones: roll and pitch of
    0.1 rad give (0.0999, 0.0999, -0.0050). A component can come out beyond the action space's
    pi/2 for turns of over a radian (the world was trained on at most 0.5 rad a frame, which
    stays within 0.6).

    Args:
        rpy: ``(..., 3)`` roll, pitch, yaw in radians (any leading axes: rows, frames).

    Returns:
        float32 ``(..., 3)`` axis-angle vectors, each of length at most pi.
    """
    a = np.asarray(rpy, np.float64)
    if a.shape[-1:] != (3,) or not np.isfinite(a).all():
        raise ValueError(f"rpy must be finite (..., 3) roll, pitch, yaw, got shape {a.shape}")
    half = np.moveaxis(a, -1, 0) / 2
    (cr, cp, cy), (sr, sp, sy) = np.cos(half), np.sin(half)
    # the quaternion of Rz(yaw) @ Ry(pitch) @ Rx(roll), its scalar part made >= 0 (angle <= pi)
    w = cr * cp * cy + sr * sp * sy
    v = (
        np.stack(
            [sr * cp * cy - cr * sp * sy, cr * sp * cy + sr * cp * sy, cr * cp * sy - sr * sp * cy],
            -1,
        )
        * np.where(w < 0, -1.0, 1.0)[..., None]
    )
    norm = np.linalg.norm(v, axis=-1, keepdims=True)
    angle = 2 * np.arctan2(norm, np.abs(w)[..., None])
    scale = np.where(norm > 1e-12, angle / np.maximum(norm, 1e-12), 2.0)  # 2 v near no turn
    return (v * scale).astype(np.float32)


@dataclass(frozen=True)
class RobotHead(_Head):
    """RT-1 style end-effector and base actions (the robot's camera does not move)."""

    mode: str = "dict"
    modality: str = "robot"
    width: int = 13

    def __post_init__(self) -> None:
        if self.mode not in ("dict", "flat"):
            raise ValueError(f"robot action mode must be 'dict' or 'flat', got {self.mode!r}")

    @property
    def space(self) -> spaces.Space:
        """One step's action space."""
        if self.mode == "flat":
            return spaces.Box(-1.0, 1.0, (10,), np.float32)
        entries = {k: spaces.Box(-b, b, (n,), np.float32) for k, n, b in RT1_KEYS}
        return spaces.Dict({**entries, "terminate_episode": spaces.Discrete(3)})

    def idle_action(self) -> Any:
        """One step's do-nothing action: no motion, in arm mode (not terminate)."""
        if self.mode == "flat":
            return np.zeros(10, np.float32)
        return {k: np.zeros(n, np.float32) for k, n, _ in RT1_KEYS} | {
            "terminate_episode": np.int64(1)
        }

    def keys_to_action(self) -> dict[str, Any]:
        """Keyboard controls for ``gymnasium.utils.play``.

        The end effector at half speed along world_vector's x (W forward, S back), y (A, D)
        and z (R up, F down); C closes the gripper, O opens it; a move and the gripper together.
        """
        moves = {"w": (0, 0.5), "s": (0, -0.5), "a": (1, 0.5), "d": (1, -0.5)}
        moves |= {"r": (2, 0.5), "f": (2, -0.5)}
        grips = {"c": 1.0, "o": -1.0}

        def action(held: list[Any]) -> Any:
            flat = np.zeros(10, np.float32)
            if held[0] is not None:
                flat[held[0][0]] = held[0][1]
            if held[1] is not None:
                flat[6] = held[1]
            return flat if self.mode == "flat" else self.unflatten(flat)

        return _key_combos([moves, grips], action)

    def unflatten(self, flat: np.ndarray) -> dict[str, Any]:
        """A flat-mode action ``(10,)`` as the RT-1 dict (arm mode)."""
        out, col = {}, 0
        for key, n, bound in RT1_KEYS:
            out[key] = (np.asarray(flat[col : col + n], np.float32) * bound).astype(np.float32)
            col += n
        return out | {"terminate_episode": np.int64(1)}

    def ends_episode(self, vec: np.ndarray) -> np.ndarray:
        """Rows whose encoded actions ``(B, F, 13)`` end the episode: terminate_episode = 0."""
        # NumPy's stubs type any(axis=...) as scalar or array; on (B, F) it is the (B,) array
        return (vec[..., ROBOT_TERMINATE] > 0.5).any(axis=1)  # type: ignore[return-value]

    def effort(self, vec: np.ndarray) -> np.ndarray:
        """Mean square of the 10 normalised control values per row (not the mode one-hot)."""
        return np.mean(vec[..., ROBOT_VALUES] ** 2, axis=(1, 2))

    def encode(self, actions: Any, batch: int, frames: int) -> np.ndarray:
        """Batch of actions -> ``(B, F, 13)``: 10 normalised values, terminate one-hot."""
        out = np.zeros((batch, frames, self.width), np.float32)
        if self.mode == "flat":
            out[..., ROBOT_VALUES] = check_box(
                actions, -1.0, 1.0, (10,), batch, frames, "robot action"
            )
            out[..., ROBOT_ARM] = 1.0  # terminate_episode = 1: arm mode
            return out
        check_keys(actions, {k for k, _, _ in RT1_KEYS} | {"terminate_episode"}, "robot action")
        col = 0
        for key, n, bound in RT1_KEYS:
            value = actions[key]
            if n == 1:  # one number per env, as terminate_episode takes it: a (1,) column
                arr = _as_array(value, f"robot {key}")
                value = arr[:, None] if arr.shape == (batch,) else arr
            out[..., col : col + n] = (
                check_box(value, -bound, bound, (n,), batch, frames, f"robot {key}") / bound
            )
            col += n
        term = _as_array(actions["terminate_episode"], "robot terminate_episode")
        if term.ndim == 0 or term.shape[0] != batch:
            raise ActionError(
                "robot terminate_episode: expected one action per env, a leading axis of "
                f"{batch}, got shape {term.shape}"
            )
        if term.shape[1:] == (1,):  # a column, as the other keys are: one int per env still
            term = term[:, 0]
        if term.ndim != 1:  # one per step: a (3,) row would read as per-frame values
            raise ActionError(
                "robot terminate_episode: expected one int per env, shape () or (1,) (0 "
                f"terminate, 1 arm, 2 base), got {term.shape[1:]}; for RT-1's one-hot "
                "[terminate, arm, base] pass its argmax"
            )
        if not np.issubdtype(term.dtype, np.integer):  # a float flag is not RT-1's index
            raise ActionError(
                f"robot terminate_episode: expected ints (0 terminate, 1 arm, 2 base), got dtype "
                f"{term.dtype}; a flag as some Open X-Embodiment datasets store it (1.0 or True "
                "= terminate) reads the other way: pass 0 where it is set, else 1"
            )
        term = check_discrete(term, (3,), batch, frames, "robot terminate_episode")
        np.put_along_axis(out[..., ROBOT_MODE], term, 1.0, axis=-1)
        return out


@dataclass(frozen=True)
class DrivingHead(_Head):
    """Ego-vehicle steering and acceleration."""

    max_steer_deg: float = 30.0
    max_accel: float = 3.0
    max_speed: float = 40.0
    mode: str = "box"
    modality: str = "driving"
    width: int = 2

    def __post_init__(self) -> None:
        if self.mode != "box":
            raise ValueError(f"driving action mode must be 'box', got {self.mode!r}")

    @property
    def space(self) -> spaces.Space:
        """One step's action space."""
        return spaces.Box(-1.0, 1.0, (2,), np.float32)

    def idle_action(self) -> Any:
        """One step's do-nothing action: straight on, speed held."""
        return np.zeros(2, np.float32)

    def keys_to_action(self) -> dict[str, Any]:
        """Keyboard controls for ``gymnasium.utils.play``.

        W accelerates and S brakes at full acceleration, A and D steer left and right at a
        fifth of the full angle (6 degrees); a pedal and the wheel together.
        """
        pedals, wheel = {"w": 1.0, "s": -1.0}, {"a": 0.2, "d": -0.2}

        def action(held: list[Any]) -> np.ndarray:
            accel, steer = (0.0 if k is None else k for k in held)
            return np.array([steer, accel], np.float32)

        return _key_combos([pedals, wheel], action)

    def effort(self, vec: np.ndarray) -> np.ndarray:
        """Mean square of (steering, acceleration) fractions per row."""
        return np.mean(vec**2, axis=(1, 2))

    def encode(self, actions: Any, batch: int, frames: int) -> np.ndarray:
        """Batch of actions -> ``(B, F, 2)``: (steering, acceleration) fractions."""
        return check_box(actions, -1.0, 1.0, (2,), batch, frames, "driving action")


ActionHead = CameraHead | RobotHead | DrivingHead


def encode_rows(head: ActionHead, actions: Any, frames: int, ignored: np.ndarray) -> np.ndarray:
    """``head.encode`` a batch of ``len(ignored)`` rows, reading the rows ``ignored`` flags as idle.

    Whatever those rows hold goes unchecked: a vector env's rows that start over in a step
    (next-step autoreset) ignore their actions, as Gymnasium's vector envs do.
    """
    if ignored.any():
        actions = _idle_rows(actions, ignored, head.idle_action())
    return head.encode(actions, len(ignored), frames)


def _idle_rows(actions: Any, rows: np.ndarray, idle: Any) -> Any:
    """``actions`` with the ``rows`` it flags set to one row's ``idle`` action, where it can.

    A batch that is not one action per row (or a dict of them) is left as it is, for ``encode``
    to say what is wrong with it.
    """
    if isinstance(actions, Mapping) and isinstance(idle, Mapping):
        return {k: _idle_rows(v, rows, idle[k]) if k in idle else v for k, v in actions.items()}
    try:
        arr = np.array(on_host(actions))  # a copy: the caller's batch stays as it was
        if arr.dtype.kind not in "iuf" or arr.ndim == 0 or len(arr) != len(rows):
            return actions
        arr[rows] = idle
    except (TypeError, ValueError):  # ragged, or the idle action does not fit its rows
        return actions
    return arr
