"""Reward and termination hooks: batched callables over one step's transition.

A hook is called as ``hook(prev_obs, action, obs, info)`` with, for B rows (every tensor on the
env's device, whatever its ``output``: a hook that works on the CPU and calls ``.numpy()`` or
mixes in a CPU tensor fails on a GPU; ``.cpu()`` first, or keep it in torch):
    prev_obs, obs: uint8 tensors ``(B, H, W, 3)``, the last frame before and after the step.
    action: float tensor ``(B, F, w)``, the step's per-frame action vectors as the model reads
        them, not as they were given (:mod:`gym_worldmodel.envs.actions`, whose ``CAMERA_*``,
        ``ROBOT_*`` and ``DRIVING_*`` constants name the columns): camera keys as one-hots
        (``action[..., CAMERA_MOVE].argmax(-1)`` is the movement key) and look rates as
        fractions of ``turn_deg``; the robot's 10 RT-1 values in [-1, 1], rotations divided by
        their bound (1.0 is pi/2 radians of ``rotation_delta``, pi of the base's rotation), then
        ``terminate_episode`` one-hot; driving's steering and acceleration fractions.
    info: ``{"pose": (B, 4) float64 tensor or None, "prev_pose": ..., "step": (B,) long,
        "effort": (B,) float}``; effort is the mean square of the step's control values (camera:
        a movement key pressed counts 1, look rates as fractions of the turn rate; robot: the
        10 normalised values, not the mode; driving: steering and acceleration fractions), 0
        for a step that does nothing.
A reward hook returns ``(B,)`` floats, a termination hook ``(B,)`` bools (tensor or array). Pass
one hook or a list (rewards are summed, terminations or-ed). Each hook gets copies of the
arguments: it may change them in place, and neither the env nor the next hook sees it. Under
``NEXT_STEP`` autoreset, a row that starts its next episode in this step (its action ignored)
comes with ``info["step"]`` 0, its new start frame as ``obs`` and its start pose; what the
hooks return for it is dropped (reward 0, not done).

A hook with values per row (a goal image or a target per row) also has ``select(rows)``, which
returns the hook for an env of those rows (``rows[i]``: the row whose values row ``i`` takes);
``fork`` calls it, so each future keeps its own row's goal. A hook without ``select`` is passed
to a fork as it is (one object for both: a hook that keeps counts of its own counts the
fork's rows too). An env's ``get_state`` / ``set_state`` do not cover a hook's own state.

A hook may also have ``check_env(frame_size, num_envs, pose)``, which raises ``ValueError``
when it cannot serve an env of that frame side, row count and pose kind (``"camera"``,
``"driving"`` or None): a world env calls it when the hook is given, at make or assigned later
(``env.reward_fn = hook``, or ``env.unwrapped.reward_fn`` of a made single env; a simulator
env's too), so a goal image whose ``pool`` does not
divide the frame side, goals for another number of rows or a pose reward in the robot world is
refused then, not after a step (a goal of another size is fitted to the frames).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeGuard

import numpy as np
import torch
from torch import Tensor

from gym_worldmodel.envs.actions import on_host
from gym_worldmodel.envs.options import check_count
from gym_worldmodel.envs.pictures import picture_hint, pil_as_rgb
from gym_worldmodel.envs.worlds import fit_frames

Hook = Callable[[Tensor, Tensor, Tensor, dict[str, Any]], Any]
#: An initial-conditions hook: the starting rows' generators -> their reset options.
StartHook = Callable[[list[np.random.Generator]], dict[str, Any]]


def _hint(picture: Tensor) -> str:
    """:func:`picture_hint` of a tensor (bf16 and half read as float32)."""
    values = picture.detach().cpu()
    return picture_hint((values.float() if values.is_floating_point() else values).numpy())


class GoalImageSimilarity:
    """Reward ``1 - mean |obs - goal| / 255`` in [0, 1]: 1 when the frame equals the goal image.

    Args:
        goal: uint8 ``(H, W, 3)`` image (one goal for all rows) or ``(B, H, W, 3)``, one per row
            (``(1, H, W, 3)``: one for all), of any size: a goal that is not the env's frame
            size is centre-cropped to a square and resized to it, as a start picture is at
            ``reset``, so a camera picture gives the reward the same frame the env starts from.
        pool: Compare ``pool`` x ``pool`` pixel means (average pooling) instead of pixels: 1
            compares pixels; larger is less sensitive to blur and to shifts of a few pixels.
            The env's frame side must be a multiple of it.
    """

    def __init__(self, goal: np.ndarray | Tensor, pool: int = 1) -> None:
        if not isinstance(goal, Tensor):  # PIL images as RGB, as reset takes a start picture
            goal = torch.from_numpy(np.array(pil_as_rgb("goal image", goal)))
        if goal.dtype != torch.uint8:  # a cast would wrap 300 to 44 and floor [0, 1] floats to 0
            raise ValueError(f"goal image must be uint8 RGB (0-255), got {goal.dtype}{_hint(goal)}")
        if goal.shape[-1:] != (3,) or goal.dim() not in (3, 4) or 0 in goal.shape:
            raise ValueError(
                f"goal image must be (H, W, 3) or (B, H, W, 3), got {tuple(goal.shape)}"
                f"{_hint(goal)}"
            )
        self.goal = goal.detach().clone()
        check_count("pool", pool, "pixels a side")
        self.pool = pool
        self._fitted = self.goal  # the goal at the frame size last asked for, on its device

    def __repr__(self) -> str:
        return f"GoalImageSimilarity(goal {tuple(self.goal.shape)}, pool={self.pool})"

    def __call__(self, prev_obs: Tensor, action: Tensor, obs: Tensor, info: dict) -> Tensor:
        """Similarity of each row's frame to the goal."""
        self._check_pool(obs.shape[-2])
        goal = self.fitted(obs.shape[-2], obs.device)
        if goal.dim() == 4:
            _check_rows("goal images", len(goal), len(obs))
        diff = (self._pooled(obs) - self._pooled(goal)).abs().mean(dim=(-3, -2, -1))
        return 1.0 - diff / 255.0

    def fitted(self, size: int, device: torch.device | str = "cpu") -> Tensor:
        """The goal as the reward compares it: ``(..., size, size, 3)`` uint8 on ``device``."""
        if self._fitted.shape[-3:-1] != (size, size):  # fitted once, not every step
            flat = self.goal.reshape(-1, *self.goal.shape[-3:]).cpu().numpy()
            fit = torch.from_numpy(fit_frames(flat, size))
            self._fitted = fit.reshape(*self.goal.shape[:-3], size, size, 3)
        if self._fitted.device != torch.device(device):  # moved once, not copied every step
            self._fitted = self._fitted.to(device)
        return self._fitted

    def check_env(self, frame_size: int, num_envs: int, pose: str | None) -> None:
        """Refuse an env whose frame side ``pool`` does not divide, or with another row count."""
        self._check_pool(frame_size)
        if self.goal.dim() == 4:
            _check_rows("goal images", len(self.goal), num_envs)

    def _check_pool(self, frame_size: int) -> None:
        if frame_size % self.pool:
            raise ValueError(
                f"goal image reward: pool {self.pool} does not divide the frame side {frame_size}"
            )

    def select(self, rows: Sequence[int]) -> GoalImageSimilarity:
        """This reward for an env of rows ``rows`` of this one (one goal for all: itself)."""
        if self.goal.dim() == 3 or len(self.goal) == 1:
            return self
        return GoalImageSimilarity(self.goal[list(rows)], self.pool)

    def _pooled(self, frames: Tensor) -> Tensor:
        """``(..., H, W, 3)`` uint8 -> float ``(..., H / pool, W / pool, 3)`` means."""
        x = frames.float()
        if self.pool == 1:
            return x
        h, w = x.shape[-3] // self.pool, x.shape[-2] // self.pool
        x = x.reshape(*x.shape[:-3], h, self.pool, w, self.pool, 3)
        return x.mean(dim=(-4, -2))


class PoseDistance:
    """Reward ``-distance`` in metres from the pose's (x, y) to a target (camera and driving).

    Args:
        target: ``(2,)`` or ``(B, 2)`` target (x, y) in metres (``(1, 2)``: one for all rows).
    """

    def __init__(self, target: Sequence[float] | np.ndarray) -> None:
        target = _floats(target, "target must be finite (x, y) metres")
        if target.shape[-1:] != (2,) or target.ndim not in (1, 2) or not np.isfinite(target).all():
            raise ValueError(
                f"target must be finite (x, y) metres, (2,) or one per row (B, 2), got {target!r}"
            )
        self.target = torch.from_numpy(target)

    def __repr__(self) -> str:
        return f"PoseDistance(target={self.target.tolist()})"

    def __call__(self, prev_obs: Tensor, action: Tensor, obs: Tensor, info: dict) -> Tensor:
        """Negative Euclidean distance of each row."""
        if info["pose"] is None:
            raise ValueError("PoseDistance needs a world with a pose (camera or driving)")
        if self.target.dim() == 2:
            _check_rows("targets", len(self.target), len(info["pose"]))
        return -(info["pose"][:, :2] - self.target.to(info["pose"].device)).norm(dim=-1)

    def check_env(self, frame_size: int, num_envs: int, pose: str | None) -> None:
        """Refuse a world without a pose (the robot's), or another row count."""
        if pose is None:
            raise ValueError(f"{type(self).__name__} needs a world with a pose (camera or driving)")
        if self.target.dim() == 2:
            _check_rows("targets", len(self.target), num_envs)

    def select(self, rows: Sequence[int]) -> PoseDistance:
        """This reward for an env of rows ``rows`` of this one (one target for all: itself)."""
        if self.target.dim() == 1 or len(self.target) == 1:
            return self
        return PoseDistance(self.target[list(rows)].numpy())


class PoseReached:
    """Termination when the pose's (x, y) is within ``radius_m`` metres of a target."""

    def __init__(self, target: Sequence[float] | np.ndarray, radius_m: float = 0.5) -> None:
        radius = _floats(radius_m, "radius_m must be a distance >= 0 in metres")
        if not (radius.ndim == 0 and np.isfinite(radius) and radius >= 0):
            raise ValueError(f"radius_m must be a distance >= 0 in metres, got {radius_m!r}")
        self.distance, self.radius = PoseDistance(target), float(radius_m)

    def __repr__(self) -> str:
        return f"PoseReached(target={self.distance.target.tolist()}, radius_m={self.radius})"

    def __call__(self, prev_obs: Tensor, action: Tensor, obs: Tensor, info: dict) -> Tensor:
        """True for rows within the radius."""
        return -self.distance(prev_obs, action, obs, info) <= self.radius

    def check_env(self, frame_size: int, num_envs: int, pose: str | None) -> None:
        """As :meth:`PoseDistance.check_env`."""
        self.distance.check_env(frame_size, num_envs, pose)

    def select(self, rows: Sequence[int]) -> PoseReached:
        """This termination for an env of rows ``rows`` of this one."""
        distance = self.distance.select(rows)
        return (
            self if distance is self.distance else PoseReached(distance.target.numpy(), self.radius)
        )


class LaneCentre:
    """Reward ``-(|y - lane_y| + heading_weight * |heading|)`` for the driving world.

    Metres off the centre line of a lane at ``y = lane_y`` (y is to the left; highway-env's
    lanes are 4 m apart, the car starts at y = 0) plus radians off the road's direction, times
    ``heading_weight`` metres per radian: the car moves over to that lane and straightens out.
    Reads ``info["pose"]`` (x m, y m, heading deg, speed m/s).
    """

    def __init__(self, lane_y: float, heading_weight: float = 2.0) -> None:
        what = "LaneCentre needs a finite lane_y (metres) and heading_weight >= 0 (m per radian)"
        lane, weight = _floats(lane_y, what), _floats(heading_weight, what)
        if not (
            lane.ndim == weight.ndim == 0 and np.isfinite([lane, weight]).all() and weight >= 0
        ):
            raise ValueError(f"{what}, got {lane_y!r} and {heading_weight!r}")
        self.lane_y, self.heading_weight = float(lane), float(weight)

    def check_env(self, frame_size: int, num_envs: int, pose: str | None) -> None:
        """Refuse a world other than driving."""
        if pose != "driving":
            raise ValueError("LaneCentre needs the driving world's pose")

    def __repr__(self) -> str:
        return f"LaneCentre(lane_y={self.lane_y}, heading_weight={self.heading_weight})"

    def __call__(self, prev_obs: Tensor, action: Tensor, obs: Tensor, info: dict) -> Tensor:
        """Negative lateral offset plus weighted heading of each row."""
        pose = info["pose"]
        if pose is None:
            raise ValueError("LaneCentre needs the driving world's pose")
        offset = (pose[:, 1] - self.lane_y).abs()
        return -(offset + self.heading_weight * pose[:, 2].deg2rad().abs())


class ActionCost:
    """Reward ``-weight * info["effort"]``: the mean square of the step's control values.

    Doing nothing costs 0 in every world (a camera step with no key pressed, a robot holding
    still whatever its mode, zero steering and acceleration); see the module docstring.
    """

    def __init__(self, weight: float = 0.01) -> None:
        value = _floats(weight, "weight must be a number >= 0 (a cost per unit of effort)")
        if not (value.ndim == 0 and np.isfinite(value) and value >= 0):
            raise ValueError(f"weight must be >= 0 (a cost per unit of effort), got {weight!r}")
        self.weight = float(value)

    def __repr__(self) -> str:
        return f"ActionCost(weight={self.weight})"

    def __call__(self, prev_obs: Tensor, action: Tensor, obs: Tensor, info: dict) -> Tensor:
        """Quadratic cost of each row's actions."""
        if "effort" not in info:
            raise ValueError(
                "ActionCost reads info['effort'], which the env's step passes to its hooks; "
                "called by hand, pass it too (see gym_worldmodel.envs.hooks)"
            )
        return -self.weight * torch.as_tensor(info["effort"]).float()


def arguments(
    prev_obs: Tensor,
    action: np.ndarray,
    obs: Tensor,
    pose: np.ndarray | None,
    prev_pose: np.ndarray | None,
    step: np.ndarray,
    effort: np.ndarray,
    to: Callable[[np.ndarray], Tensor] = torch.from_numpy,
) -> tuple[Tensor, Tensor, Tensor, dict[str, Any]]:
    """The hooks' arguments ``(prev_obs, action, obs, info)`` (the contract above) for B rows.

    ``prev_obs`` and ``obs`` are the last frames as uint8 tensors; the NumPy values (action
    vectors, poses or None, step counts, effort) become tensors through ``to`` (e.g. onto the
    env's device). They may share memory with the env's own (``torch.from_numpy`` does on the
    CPU): :func:`run_hooks` hands each hook copies.
    """
    as_t = lambda a: None if a is None else to(np.ascontiguousarray(a))  # noqa: E731
    info = {"pose": as_t(pose), "prev_pose": as_t(prev_pose), "step": as_t(step)}
    return prev_obs, to(np.ascontiguousarray(action)), obs, {**info, "effort": as_t(effort)}


#: Hooks run after the model's step: what their errors add (the step is not undone).
AFTER_THE_STEP = "(after the rows stepped: the step is done, its frames are the env's now)"


def check_env_hooks(
    reward_fn: Any,
    termination_fn: Any,
    start_fn: Any,
    frame_size: int,
    num_envs: int,
    pose: str | None,
) -> None:
    """Refuse an env's hooks that are not callables, or that say they cannot serve the env.

    Args:
        reward_fn: A hook, a list of hooks or None.
        termination_fn: The same, for termination.
        start_fn: An initial-conditions hook (:data:`StartHook`) or None.
        frame_size: The env's frame side in pixels.
        num_envs: Its rows.
        pose: Its pose kind (``"camera"``, ``"driving"`` or None).
    """
    for name, hooks in (("reward_fn", reward_fn), ("termination_fn", termination_fn)):
        for hook in hook_list(hooks):
            if not callable(hook):
                raise ValueError(
                    f"{name} must be a hook (prev_obs, action, obs, info) -> (B,) values, a list "
                    f"of them or None, got {type(hook).__name__} {hook!r}"[:200]
                )
            if hasattr(hook, "check_env"):
                hook.check_env(frame_size, num_envs, pose)
    if start_fn is not None and not callable(start_fn):
        raise ValueError(f"start_fn must be a callable (rngs) -> reset options, got {start_fn!r}")


class CheckedHook:
    """An env's hook attribute (``reward_fn``, ...), checked when set.

    :func:`check_env_hooks` runs on every assignment, at make and later, against the env's
    frame side (``env.config``), rows (``env.num_envs``, 1 for a single env) and pose kind
    (``env.world.pose``), so a hook that cannot serve the env is refused then, not at the next
    step, and not kept.
    A list (any sequence) of hooks is copied as a tuple: the caller's list, changed later,
    changes nothing (to add a hook, assign the longer list).
    """

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, env: Any, owner: type | None = None) -> Any:
        return self if env is None else env.__dict__.get(self.name)

    def __set__(self, env: Any, hooks: Any) -> None:
        given = {"reward_fn": None, "termination_fn": None, "start_fn": None, self.name: hooks}
        size, rows = env.config.vae.image_size, getattr(env, "num_envs", 1)  # a single env: 1
        check_env_hooks(**given, frame_size=size, num_envs=rows, pose=env.world.pose)
        # a list (any sequence) of hooks is kept as a tuple: one changed later would go
        # unchecked (start_fn is one callable, kept as it is)
        many = self.name != "start_fn" and _many(hooks)
        env.__dict__[self.name] = tuple(hooks) if many else hooks


def _floats(value: Any, what: str) -> np.ndarray:
    """``value`` as a float64 array; what it must be, named, where it holds no numbers."""
    try:
        array = np.array(on_host(value, torch.float64))  # tensors on any device too
    except (TypeError, ValueError):  # ragged
        array = np.array(None)
    if array.dtype.kind not in "biuf":  # strings, objects, complex numbers
        raise ValueError(f"{what}, got {value!r}")
    return array.astype(np.float64)


def _check_rows(what: str, count: int, num_envs: int) -> None:
    """Values given per row must be one for all (``count`` 1) or one for each of the rows."""
    if count not in (1, num_envs):
        raise ValueError(
            f"{count} {what} (one per row) for {num_envs} rows: give one for all rows or one "
            "for each"
        )


def _many(hooks: Any) -> TypeGuard[Sequence[Any]]:
    """Whether ``hooks`` is a list (any sequence) of hooks, not one; a string is neither."""
    return isinstance(hooks, Sequence) and not isinstance(hooks, (str, bytes))


def hook_list(hooks: Hook | Sequence[Hook] | None) -> list[Any]:
    """``hooks`` as a list: none, one, or a sequence of them (a string is one, refused later)."""
    if hooks is None:
        return []
    return list(hooks) if _many(hooks) else [hooks]


def select(hooks: Hook | Sequence[Hook] | None, rows: Sequence[int]) -> Any:
    """The hooks for an env of rows ``rows`` of this one (see the module docstring).

    ``select`` where a hook has one, the hook itself where not.
    """
    if hooks is None:
        return None
    pick = lambda hook: hook.select(rows) if hasattr(hook, "select") else hook  # noqa: E731
    return [pick(h) for h in hooks] if _many(hooks) else pick(hooks)


def _copies(args: tuple) -> tuple:
    """The hook arguments with every tensor cloned (the info dict's too)."""
    clone = lambda v: v.clone() if isinstance(v, Tensor) else v  # noqa: E731
    *tensors, info = args
    return (*map(clone, tensors), {k: clone(v) for k, v in info.items()})


def run_hooks(
    hooks: Hook | Sequence[Hook] | None, args: tuple | None, batch: int, kind: str
) -> np.ndarray:
    """Run hooks and combine them into a ``(B,)`` float64 (reward) or bool (termination) array."""
    dtype = np.float64 if kind == "reward" else np.bool_
    total: np.ndarray = np.zeros(batch, dtype)
    if hooks is None:
        return total
    for hook in hook_list(hooks):
        assert args is not None  # callers with hooks build their arguments
        # Each hook gets its own copies: one may change them in place. Floats come back as
        # float64 (a reward's precision kept; bf16 read, which NumPy cannot); a value NumPy
        # cannot take is the hook's error too.
        try:
            value = np.asarray(on_host(hook(*_copies(args)), torch.float64))
        except Exception as err:
            if hasattr(err, "add_note"):  # Python >= 3.11
                err.add_note(f"raised by the {kind} hook {hook!r} {AFTER_THE_STEP}")
            raise
        if value.shape != (batch,):
            raise ValueError(
                f"{kind} hook {hook!r} returned shape {value.shape}, expected ({batch},): hooks "
                f"are batched, one value per row, a single env's too {AFTER_THE_STEP}"
            )
        if kind == "reward":
            if value.dtype.kind not in "biuf":  # strings, objects, complex numbers
                raise ValueError(
                    f"reward hook {hook!r} returned {value.dtype} values, expected real "
                    f"numbers {AFTER_THE_STEP}"
                )
            if not np.isfinite(value).all():
                raise ValueError(f"reward hook {hook!r} returned NaN or inf {AFTER_THE_STEP}")
            with np.errstate(over="ignore"):  # an overflowing sum is refused below
                total += value
        elif value.dtype == np.bool_ or (
            np.issubdtype(value.dtype, np.number) and np.isin(value, (0, 1)).all()
        ):
            total |= value.astype(bool)
        else:  # a distance read as "true when not 0" would end every episode at its first step
            raise ValueError(
                f"termination hook {hook!r} returned {value.dtype} values {value[:4].tolist()}, "
                f"expected bools (e.g. distance < radius) or numbers that are all 0 or 1 "
                f"{AFTER_THE_STEP}"
            )
    if kind == "reward" and not np.isfinite(total).all():  # finite alone, too large together
        raise ValueError(f"the reward hooks' sum overflows float64 {AFTER_THE_STEP}")
    return total


def judge(
    reward_fn: Hook | Sequence[Hook] | None,
    termination_fn: Hook | Sequence[Hook] | None,
    arguments: Callable[[], tuple],
    batch: int,
    ends: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """A step's rewards ``(B,)`` and terminations ``(B,)``: the hooks' or-ed with ``ends``.

    ``arguments()`` builds the hooks' arguments, only when there are hooks; ``ends`` are the
    rows the action itself ends (RT-1's ``terminate_episode``).
    """
    args = None if reward_fn is None and termination_fn is None else arguments()
    rewards = run_hooks(reward_fn, args, batch, "reward")
    return rewards, run_hooks(termination_fn, args, batch, "termination") | ends
