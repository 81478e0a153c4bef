"""Imagined futures: a batch of action plans played in a vector env, one plan a row.

:func:`imagine` is the loop a planner (CEM, MPPI, random shooting) runs at every real step:
load one state into every row, step each row through its own plan, and score the plans by
their rewards::

    futures = env.fork(0, 64, max_episode_steps=-1)  # once: 64 rows
    ...
    scores = imagine(futures, plans, env.get_state(0)).returns  # plans (64, H, ...)

A row whose episode ends inside the horizon (a termination hook such as ``PoseReached``, RT-1's
``terminate_episode``, a time limit) is held where it ended: its later rewards count 0 and its
later observations repeat its last one. Stepping by hand, the env's autoreset restarts such a
row, so its later rewards are a new episode's, counted into the plan that ended. Once every row
has ended, no more steps are taken.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from numbers import Real
from typing import Any

import numpy as np
import torch
from gymnasium.vector import AutoresetMode, VectorEnv

from gym_worldmodel.envs.actions import on_host
from gym_worldmodel.envs.vector_env import WorldModelVectorEnv


@dataclass(frozen=True)
class Imagined:
    """What :func:`imagine` measured of ``N`` plans of ``H`` steps.

    Attributes:
        rewards: ``(N, H)`` float64 on the host, each step's reward; 0 from the step after a
            row's end.
        returns: ``(N,)`` float64, the sum of ``gamma**h * rewards[:, h]`` over the steps, added
            in step order (with ``gamma=1`` the very sum a loop of ``returns += reward`` gives).
        lengths: ``(N,)`` int64, the steps each row ran: ``H``, or the step that ended it.
        terminated: ``(N,)`` bool, rows ended by a termination (a hook, ``terminate_episode``).
        truncated: ``(N,)`` bool, rows ended by the time limit alone.
        last_obs: ``(N, ...)``, each row's observation after its last step (the one that ended
            it, or step ``H``), as the env gives observations (arrays or tensors; a dict of such
            for dict observations): what a terminal value or cost reads.
        observations: with ``observations=True``, every step's observations stacked on axis 1,
            ``(N, H, ...)``, a row's last repeated after its end; else None.
        infos: with ``infos=True``, every info entry of one value per row (the world envs'
            ``pose``, ``step``, ``memory_hits``, ``memory_score``), by key, stacked the same way
            as NumPy arrays ``(N, H, ...)``: the pose trajectory of each plan. The keys are the
            first step's: a key a later step lacks repeats its last value, and one that first
            comes later is left out. Else None.
    """

    rewards: np.ndarray
    returns: np.ndarray
    lengths: np.ndarray
    terminated: np.ndarray
    truncated: np.ndarray
    last_obs: Any
    observations: Any = None
    infos: dict[str, np.ndarray] | None = None


def imagine(
    futures: VectorEnv,
    plans: Any,
    state: Any = None,
    *,
    seeds: Any = None,
    gamma: float = 1.0,
    observations: bool = False,
    infos: bool = False,
) -> Imagined:
    """Play ``plans[i]`` in row ``i`` of ``futures`` from ``state``, holding rows that end.

    Args:
        futures: A vector env of ``N`` rows: a :class:`WorldModelVectorEnv` (usually
            ``env.fork(row, N, max_episode_steps=-1)``, made once and reused), one behind
            Gymnasium's vector wrappers (``gym.make_vec``), or any Gymnasium vector env when
            ``state`` is None. Wrappers that keep statistics of their own (``NormalizeReward``,
            ``RecordEpisodeStatistics``) count the imagined steps too: imagine in a bare fork.
        plans: ``(N, H, *action)`` actions, ``plans[:, h]`` being step ``h``'s batch as
            ``futures.step`` takes it: an array or tensor, or a dict of them for dict actions
            (RT-1: ``terminate_episode`` ``(N, H)``). In a world model env (not behind action
            wrappers, whose actions are theirs) every step's actions are checked before the
            first step, so a bad one changes nothing; elsewhere it raises at its step.
        state: Loaded into every row first (``set_state``, on ``futures.unwrapped`` behind
            wrappers): a state of one row, loaded into all ``N`` (``env.get_state(row)``, a
            single env's ``get_state()``), or of ``N`` rows. None plays the plans from where
            the rows are. A state of a row whose episode has ended is refused: its plan would
            begin with the next episode's start.
        seeds: Reseed the loaded rows' noise, as ``set_state``'s ``seeds`` (an int ``s`` gives
            row ``i`` the seed ``s + i``: noise of each plan's own); only with ``state``. Without
            them every row draws the noise the state holds (the env's own next noise, for a
            state of the env now: common random numbers, plans that differ only by their
            actions).
        gamma: Discount in (0, 1] of ``returns``.
        observations: Keep every step's observations (memory: ``N x H`` observations).
        infos: Keep every step's info entries of one value per row (``Imagined.infos``).

    Returns:
        An :class:`Imagined`. The rows are left where the loop stopped: load a state before the
        next call rather than reading them.

    Raises:
        ValueError: ``plans`` not ``N`` rows of the same ``H >= 1`` steps, an action the env
            refuses (naming its step), ``seeds`` without ``state``, a ``gamma`` outside (0, 1],
            a state of a row that is done.
        TypeError: ``futures`` not a Gymnasium vector env, a ``state`` for one without
            ``set_state``, or infos that are not a dict (Gymnasium's ``DictInfoToList``).
    """
    if not isinstance(futures, VectorEnv):
        raise TypeError(
            f"imagine plays plans in a Gymnasium vector env's rows, got {type(futures).__name__} "
            "(a single world env's unwrapped.fork(n) is one of n rows)"
        )
    n = int(futures.num_envs)
    horizon = _horizon(plans, n)
    if isinstance(gamma, bool) or not isinstance(gamma, Real) or not 0.0 < gamma <= 1.0:
        raise ValueError(f"gamma must be a number in (0, 1], got {gamma!r}")
    if seeds is not None and state is None:
        raise ValueError("seeds reseed a loaded state: give the state too (or reset with seed=)")
    actions = [_step_of(plans, h) for h in range(horizon)]
    base = futures.unwrapped
    own = futures is base and isinstance(base, WorldModelVectorEnv)  # (no wrapper in between)
    if own:
        _check_actions(base, actions)
    if state is not None:
        _load(futures, base, state, seeds)
    mode = base.metadata.get("autoreset_mode", AutoresetMode.NEXT_STEP)

    rewards = np.zeros((n, horizon))
    returns = np.zeros(n)
    lengths = np.full(n, horizon, np.int64)
    terminated, truncated = np.zeros(n, bool), np.zeros(n, bool)
    alive, done = np.ones(n, bool), np.zeros(n, bool)
    kept: list[Any] = []
    kept_infos: list[dict[str, np.ndarray]] = []
    last: Any = None
    for h, action in enumerate(actions):
        if not alive.any():
            break
        if mode == AutoresetMode.DISABLED and done.any():  # it steps no done row
            futures.reset(options={"reset_mask": done})
        obs, reward, term, trunc, info = futures.step(action)
        if not isinstance(info, Mapping):  # (DictInfoToList's list of each row's dict)
            raise TypeError(
                f"imagine reads a vector env's info as a dict of batched values, got "
                f"{type(info).__name__} (as Gymnasium's DictInfoToList gives it): imagine in "
                "the env that wrapper wraps"
            )
        reward = np.asarray(on_host(reward), np.float64)
        term, trunc = np.asarray(on_host(term), bool), np.asarray(on_host(trunc), bool)
        rewards[alive, h] = reward[alive]
        returns[alive] += gamma**h * reward[alive]
        done = term | trunc  # (a held row too, whose next episode ends)
        ended = alive & done
        lengths[ended] = h + 1
        terminated |= ended & term
        truncated |= ended & ~term
        if not own:  # (the world env's are copies; another may hand out one buffer a step)
            obs = _copy(obs)
        if mode == AutoresetMode.SAME_STEP and ended.any():  # obs is the next episode's
            obs = _put_rows(obs, np.flatnonzero(ended), info["final_obs"])
        if last is not None and not alive.all():
            obs = _hold(obs, ~alive, last)
        last = obs
        if observations:
            kept.append(obs)
        if infos:
            kept_infos.append(_row_infos(info, n, ended, kept_infos[-1] if kept_infos else None))
            if len(kept_infos) > 1 and not alive.all():
                kept_infos[-1] = _hold(kept_infos[-1], ~alive, kept_infos[-2])
        alive &= ~ended
    return Imagined(
        rewards,
        returns,
        lengths,
        terminated,
        truncated,
        last,
        _held(kept, horizon) if observations else None,
        _held(kept_infos, horizon) if infos else None,
    )


def _held(steps: list[Any], horizon: int) -> Any:
    """The steps kept, the last repeated to ``horizon`` (every row had ended), stacked."""
    return _stack(steps + steps[-1:] * (horizon - len(steps)))


def _row_infos(
    info: dict[str, Any], n: int, ended: np.ndarray, last: dict[str, np.ndarray] | None
) -> dict[str, np.ndarray]:
    """A step's info entries of one value per row, as NumPy copies, by key.

    Same-step autoreset's ended rows take their finished episode's (``final_info``); a key of
    the first step missing later (a wrapper's) repeats its last value.
    """
    final = info.get("final_info") if ended.any() else None
    out = {}
    for key in last.keys() if last is not None else info.keys():
        value = on_host(info.get(key), torch.float64)
        if not isinstance(value, np.ndarray) or value.ndim == 0 or len(value) != n:
            if last is not None:  # (its keys were such entries)
                out[key] = last[key].copy()
            continue
        if key.startswith("_") or value.dtype == object:  # Gymnasium's masks, final_obs
            continue
        out[key] = np.array(value, copy=True)
        if isinstance(final, Mapping) and key in final:  # SAME_STEP: the ended rows' own
            out[key][ended] = on_host(final[key], torch.float64)[ended]
    return out


def _load(futures: VectorEnv, base: Any, state: Any, seeds: Any) -> None:
    """``state`` into every row of ``futures``, refused where a row of it is done."""
    set_state = getattr(futures, "set_state", None) or getattr(base, "set_state", None)
    if set_state is None:
        raise TypeError(f"{type(base).__name__} has no set_state: pass state=None")
    done = state.get("done") if isinstance(state, Mapping) else None
    if isinstance(done, np.ndarray) and done.dtype == bool and done.any():
        raise ValueError(
            f"the state's rows {np.flatnonzero(done).tolist()} are done (their episode ended in "
            "the step before it was taken): a plan from there would begin with the next "
            "episode's start; plan from a state taken before that step, or after a reset"
        )
    set_state(state, seeds=seeds)


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
    for h, action in enumerate(actions):
        try:
            env.head.encode(action, env.num_envs, env.config.dit.chunk_frames)
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


def _copy(obs: Any) -> Any:
    """A copy of a step's observations (dicts key by key)."""
    if isinstance(obs, Mapping):
        return {k: _copy(v) for k, v in obs.items()}
    return obs.clone() if isinstance(obs, torch.Tensor) else np.array(obs, copy=True)


def _stack(steps: list[Any]) -> Any:
    """Observations of every step, stacked on a new axis 1."""
    if isinstance(steps[0], Mapping):
        return {k: _stack([s[k] for s in steps]) for k in steps[0]}
    if isinstance(steps[0], torch.Tensor):
        return torch.stack(steps, 1)
    return np.stack(steps, 1)
