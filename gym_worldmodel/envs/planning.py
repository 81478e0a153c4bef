"""Imagined futures: a batch of action plans played in a vector env, one plan a row.

:func:`imagine` is the loop a planner (CEM, MPPI, random shooting) runs at every real step:
load one state into every row, step each row through its own plan, and score the plans by
their rewards::

    futures = env.fork(0, 64, max_episode_steps=-1)  # once: 64 rows, each row 0's state
    ...
    scores = imagine(futures, plans, env.get_state([0] * 64)).returns  # plans (64, H, ...)

A row whose episode ends inside the horizon (a termination hook such as ``PoseReached``, RT-1's
``terminate_episode``, a time limit) is held where it ended: its later rewards count 0 and its
later observations repeat its last one. Stepping by hand, the env's autoreset restarts such a
row, so its later rewards are a new episode's, counted into the plan that ended. Once every row
has ended, no more steps are taken.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from gymnasium.vector import AutoresetMode

from gym_worldmodel.envs.actions import encode_rows, on_host
from gym_worldmodel.envs.vector_env import WorldModelVectorEnv


@dataclass(frozen=True)
class Imagined:
    """What :func:`imagine` measured of ``N`` plans of ``H`` steps (all on the host).

    Attributes:
        rewards: ``(N, H)`` float64, each step's reward; 0 from the step after a row's end.
        returns: ``(N,)`` float64, ``sum(gamma**h * rewards[:, h])``, added step by step (with
            ``gamma=1`` the very sum a loop of ``returns += reward`` gives).
        lengths: ``(N,)`` int64, the steps each row ran: ``H``, or the step that ended it.
        terminated: ``(N,)`` bool, rows ended by a termination (a hook, ``terminate_episode``).
        truncated: ``(N,)`` bool, rows ended by the time limit alone.
        observations: with ``observations=True``, every step's observations stacked on axis 1,
            ``(N, H, ...)`` as the env gives them (arrays or tensors; a dict of such for dict
            observations), a row's last repeated after its end; else None.
    """

    rewards: np.ndarray
    returns: np.ndarray
    lengths: np.ndarray
    terminated: np.ndarray
    truncated: np.ndarray
    observations: Any = None


def imagine(
    futures: Any,
    plans: Any,
    state: Any = None,
    *,
    seeds: Any = None,
    gamma: float = 1.0,
    observations: bool = False,
) -> Imagined:
    """Play ``plans[i]`` in row ``i`` of ``futures`` from ``state``, holding rows that end.

    Args:
        futures: A vector env of ``N`` rows: a :class:`WorldModelVectorEnv` (usually
            ``env.fork(row, N, max_episode_steps=-1)``, made once and reused), one behind
            Gymnasium's vector wrappers (``gym.make_vec``), or any vector env when ``state`` is
            None.
        plans: ``(N, H, *action)`` actions, ``plans[:, h]`` being step ``h``'s batch as the env's
            ``step`` takes it: an array or tensor, or a dict of them for dict actions (RT-1:
            ``terminate_episode`` ``(N, H)``). In a world model env every step's actions are
            checked before the first step, so a bad one changes nothing.
        state: Loaded into every row first (``set_state``, on ``futures.unwrapped`` behind
            wrappers): a state of ``N`` rows, e.g. ``env.get_state([row] * N)``. None plays the
            plans from where the rows are.
        seeds: Reseed the loaded rows' noise, as ``set_state``'s ``seeds`` (fresh noise per
            plan); only with ``state``. Without them the rows draw the noise the state holds.
        gamma: Discount in (0, 1] of ``returns``.
        observations: Keep every step's observations (memory: ``N x H`` observations).

    Returns:
        An :class:`Imagined`. The rows are left where the loop stopped: load a state before the
        next call rather than reading them.

    Raises:
        ValueError: ``plans`` not ``N`` rows of the same ``H >= 1`` steps, an action the env
            refuses (naming its step), ``seeds`` without ``state``, a ``gamma`` outside (0, 1].
        TypeError: ``futures`` not a vector env, or a ``state`` for one without ``set_state``.
    """
    if not hasattr(futures, "num_envs"):
        raise TypeError(
            f"imagine plays plans in a vector env's rows, got {type(futures).__name__} (a single "
            "env's fork(n) is a vector env of n rows)"
        )
    n = int(futures.num_envs)
    horizon = _horizon(plans, n)
    gamma = float(gamma)
    if not 0.0 < gamma <= 1.0:
        raise ValueError(f"gamma must be in (0, 1], got {gamma!r}")
    if seeds is not None and state is None:
        raise ValueError("seeds reseed a loaded state: give the state too (or reset with seed=)")
    actions = [_step_of(plans, h) for h in range(horizon)]
    base = futures.unwrapped
    if isinstance(base, WorldModelVectorEnv):
        _check_actions(base, actions)
    if state is not None:
        set_state = getattr(futures, "set_state", None) or getattr(base, "set_state", None)
        if set_state is None:
            raise TypeError(f"{type(base).__name__} has no set_state: pass state=None")
        set_state(state, seeds=seeds)
    mode = base.metadata.get("autoreset_mode", AutoresetMode.NEXT_STEP)

    rewards = np.zeros((n, horizon))
    returns = np.zeros(n)
    lengths = np.full(n, horizon, np.int64)
    terminated, truncated = np.zeros(n, bool), np.zeros(n, bool)
    alive = np.ones(n, bool)
    kept: list[Any] = []
    for h, action in enumerate(actions):
        if not alive.any():
            break
        if mode == AutoresetMode.DISABLED and not alive.all():  # it steps no done row
            futures.reset(options={"reset_mask": ~alive})
        obs, reward, term, trunc, info = futures.step(action)
        reward = np.asarray(on_host(reward), np.float64)
        term, trunc = np.asarray(on_host(term), bool), np.asarray(on_host(trunc), bool)
        rewards[alive, h] = reward[alive]
        returns[alive] += gamma**h * reward[alive]
        ended = alive & (term | trunc)
        lengths[ended] = h + 1
        terminated |= ended & term
        truncated |= ended & ~term
        if observations:
            if mode == AutoresetMode.SAME_STEP and ended.any():  # obs is the next episode's
                obs = _put_rows(obs, np.flatnonzero(ended), info["final_obs"])
            if kept and not alive.all():
                obs = _hold(obs, ~alive, kept[-1])
            kept.append(obs)
        alive &= ~ended
    held = kept + kept[-1:] * (horizon - len(kept)) if observations else None
    return Imagined(
        rewards, returns, lengths, terminated, truncated, None if held is None else _stack(held)
    )


def _horizon(plans: Any, n: int) -> int:
    """The plans' step count ``H``, checking every array is ``(n, H, ...)``."""
    leaves = list(_leaves(plans, "plans"))
    if not leaves:
        raise ValueError("plans is an empty dict: give one (N, H, ...) array per action key")
    shapes = {name: tuple(leaf.shape) for name, leaf in leaves}
    for name, shape in shapes.items():
        if len(shape) < 2 or shape[0] != n or shape[1] < 1:
            raise ValueError(
                f"{name} must be (N, H, ...) with N = {n} (the env's rows, one plan each) and "
                f"H >= 1 steps, got shape {shape}"
            )
    horizons = {shape[1] for shape in shapes.values()}
    if len(horizons) > 1:
        raise ValueError(f"every key of plans must have the same H steps, got shapes {shapes}")
    return horizons.pop()


def _leaves(plans: Any, name: str):
    """(name, array) for every array of a plan or dict of plans."""
    if isinstance(plans, Mapping):
        for key, value in plans.items():
            yield from _leaves(value, f"{name}[{key!r}]")
    elif isinstance(plans, torch.Tensor | np.ndarray):
        yield name, plans
    else:
        try:
            yield name, np.asarray(plans)
        except (TypeError, ValueError) as err:  # ragged lists
            raise ValueError(f"{name} must be an (N, H, ...) array, got {err}") from err


def _step_of(plans: Any, h: int) -> Any:
    """Step ``h``'s batch of actions: ``plans[:, h]`` (per key for a dict)."""
    if isinstance(plans, Mapping):
        return {key: _step_of(value, h) for key, value in plans.items()}
    if not isinstance(plans, torch.Tensor | np.ndarray):
        plans = np.asarray(plans)
    return plans[:, h]


def _check_actions(env: WorldModelVectorEnv, actions: list[Any]) -> None:
    """Refuse a plan with a step the env would refuse, before any row steps."""
    none = np.zeros(env.num_envs, bool)
    for h, action in enumerate(actions):
        try:
            encode_rows(env.head, action, env.config.dit.chunk_frames, none)
        except ValueError as err:
            raise ValueError(f"plans[:, {h}]: {err}") from err


def _put_rows(obs: Any, rows: np.ndarray, values: Any) -> Any:
    """``obs`` with rows ``rows`` replaced by ``values[row]`` (one row's observation each)."""
    if isinstance(obs, Mapping):
        return {
            k: _put_rows(v, rows, [None if x is None else x[k] for x in values])
            for k, v in obs.items()
        }
    for row in rows:
        obs[row] = values[row]
    return obs


def _hold(obs: Any, rows: np.ndarray, last: Any) -> Any:
    """``obs`` with the rows ``rows`` flags taken from ``last``."""
    if isinstance(obs, Mapping):
        return {k: _hold(v, rows, last[k]) for k, v in obs.items()}
    if isinstance(obs, torch.Tensor):
        mask = torch.from_numpy(rows).to(obs.device)
        obs[mask] = last[mask]
    else:
        obs[rows] = last[rows]
    return obs


def _stack(steps: list[Any]) -> Any:
    """Observations of every step, stacked on a new axis 1."""
    if isinstance(steps[0], Mapping):
        return {k: _stack([s[k] for s in steps]) for k in steps[0]}
    if isinstance(steps[0], torch.Tensor):
        return torch.stack(steps, 1)
    return np.stack(steps, 1)
