"""The vector env's rows copied out, loaded back and branched: state for planners.

:meth:`RowStateMixin.get_state` copies rows' full state (the engine's KV cache, generators
and memory, the frames, latents, poses, step counts and NumPy generators);
:meth:`RowStateMixin.set_state` checks a state against the rows' own
(:mod:`gym_worldmodel.envs.state`) before it loads any of it; :meth:`RowStateMixin.fork`
makes a new env whose rows continue from some of these.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import torch
from gymnasium.vector import AutoresetMode

from gym_worldmodel.envs import hooks as hook_lib
from gym_worldmodel.envs import observations as obs_lib
from gym_worldmodel.envs.engine import FullEngine, WorldEngine
from gym_worldmodel.envs.options import autoreset_mode as autoreset_mode_of
from gym_worldmodel.envs.options import (
    check_choice,
    check_count,
    checked_seeds,
    parse_rows,
    rng_from_state,
    step_limit,
)
from gym_worldmodel.envs.pose import POSE_FIELDS
from gym_worldmodel.envs.resources import check_fits
from gym_worldmodel.envs.starts import RowStartsMixin
from gym_worldmodel.envs.state import (
    check_pose_range,
    loadable_state,
    repeat_rows,
    to_meta,
    with_rows,
)

if TYPE_CHECKING:
    from gym_worldmodel.envs.vector_env import WorldModelVectorEnv


class RowStateMixin(RowStartsMixin):
    """``get_state``, ``set_state`` and ``fork`` of ``WorldModelVectorEnv``.

    Its ``__init__`` sets the attributes below and it defines the methods. A state of an env
    never reset is learnt by starting every row once (:class:`RowStartsMixin`).
    """

    obs_mode: str
    output: str
    dtype: torch.dtype
    memory: bool
    max_episode_steps: int | None
    reward_fn: Any  # the env's hooks (checked)
    termination_fn: Any
    _settings: dict[str, Any]  # the constructor's arguments, which a fork takes
    _templates: dict[int, dict[str, Any]]
    _started: bool
    _check_open: Callable[[], None]
    _rows: Callable[..., np.ndarray]
    _make_engine: Callable[..., WorldEngine]

    def get_state(self, env_idx: int | Sequence[int] | np.ndarray | None = None) -> dict[str, Any]:
        """Copy of the rows' full state (repeats allowed: ``[0, 0, 0]`` forks row 0 three times).

        ``env_idx``: a list of rows, one row (an int), or None for every row. Covers the KV
        cache, generator states, the last chunk's latents and frames (its last frame, or all of
        them in a chunk ``obs_mode``), pose, step count, done flags and the rows' NumPy
        generators.
        """
        self._check_open()
        if not self._started:
            raise RuntimeError("call reset() before get_state()")
        rows = self._rows(env_idx, repeats=True)
        assert self._engine is not None and self._frames is not None and self._latents is not None
        return {
            "world": self.world.name,
            "engine": self._engine.get_state(rows.tolist()),
            "frames": self._frames[rows].clone(),
            "latents": self._latents[rows].clone(),
            "pose": None if self._pose is None else self._pose[rows].copy(),
            "steps": self._steps[rows].copy(),
            "done": self._done[rows].copy(),
            "rngs": [
                None if self._rngs[i] is None else self._rngs[i].bit_generator.state for i in rows
            ],
        }

    def set_state(
        self,
        state: dict[str, Any],
        env_idx: int | Sequence[int] | np.ndarray | None = None,
        *,
        seeds: int | Iterable[int] | None = None,
    ) -> None:
        """Load :meth:`get_state` output into rows ``env_idx`` (all if None).

        A state of as many rows loads row for row; a state of one row (``get_state(row)``, a
        single env's) loads into every row named, as ``get_state([row] * n)`` would, checked
        once and without its ``n`` copies: a planner's futures.

        The rows draw the noise of the state's generators, unless ``seeds`` (one per loaded row,
        or an int: the i-th loaded row gets ``seeds + i``) reseeds them as :meth:`fork` does: a
        planner that loads one state into its futures every step draws fresh noise so. Without
        ``seeds``, a row loaded from the real env's state draws exactly the noise the real env
        draws next (under the same actions it shows the real env's next frames, bit for bit): a
        plan scored inside the world on a reward that reads frames then sees the noise it will
        meet, so pass ``seeds`` to score plans on noise of their own. The rows' memory switches
        (``set_memory``) are part of the state: loading one puts back the switches it was
        taken with.

        The state is checked against the rows' own first (keys, shapes, dtypes, the world and
        a digest of the weights that made it, read from the engine's model once, when a state
        first needs it; floats finite, the KV cache's and the memory's stored entries
        included; poses in ``info["pose"]``'s range): one from another world, model or env
        configuration is a ``ValueError`` that names the first entry that differs, and the env
        is left as it was.
        Floating tensors may come at another precision (a float32 env's state into a bf16 one);
        they are converted. A chunk ``obs_mode``'s state loads into an env that keeps only the
        last frame (it takes that one); the reverse is refused. On an env never reset, the
        first ``set_state`` starts every row once to learn what a state looks like (row seed 0;
        a ``start_fn`` is called for it).
        """
        self._check_open()
        rows = self._rows(env_idx, repeats=False)
        if isinstance(state, dict) and "source" in state:  # (what a Simulator-* env's holds)
            raise ValueError(
                "this is a simulator env's state (Simulator-*-v0's get_state()); a world model "
                "env loads only what its own get_state() returns"
            )
        if not isinstance(state, dict) or "steps" not in state:
            raise ValueError(f"state must be what get_state() returns, got {type(state).__name__}")
        steps = state["steps"]
        if not isinstance(steps, np.ndarray) or steps.ndim != 1:
            raise ValueError(
                "state['steps'] must be a 1-D array (one step count per row, as get_state() "
                f"gives it), got {type(steps).__name__} of shape {np.shape(steps)}"
            )
        if len(steps) != len(rows) and not (len(steps) == 1 and len(rows)):
            into = (
                f"env_idx names {len(rows)}" if env_idx is not None else f"this env has {len(rows)}"
            )
            raise ValueError(
                f"state holds {len(steps)} rows, {into} (a state of one row loads into any)"
            )
        if not self._started and len(rows) != self.num_envs:
            raise RuntimeError("set the state of every row (or reset) before a partial one")
        if not len(rows):
            return  # a state of no rows, into none
        started = self._started
        try:
            template = self._state_template(len(steps))
            check_engine = getattr(self._engine, "check_state", None)  # optional (see Engine)
            state = loadable_state(state, template, self.device, self.obs_mode, check_engine)
            if len(steps) < len(rows):  # one row's, into every row named
                state = repeat_rows(state, template, self._state_template(len(rows)))
            if self.world.pose is not None:  # in the pose space, as info["pose"] gives them
                space = obs_lib.pose_space(self.world.pose, self.head.max_speed)
                check_pose_range(state["pose"], space, POSE_FIELDS[self.world.pose])
            seeds = checked_seeds(seeds, len(rows), "set_state seeds")
        except ValueError:
            self._started = started  # an env never reset stays so
            raise
        self._load_state(state, rows)
        if seeds is not None:
            self._reseed(rows, seeds)

    def _state_template(self, n: int) -> dict[str, Any]:
        """What the state of ``n`` rows looks like (tensors on the meta device), made once."""
        template = self._templates.get(n)
        if template is None:
            rngs = list(self._rngs)  # what an env never reset draws its unseeded starts from
            if not self._started:  # an env never reset is started (from row seed 0) to say
                self._start_rows(np.arange(self.num_envs), [0] * self.num_envs, None)
                self._started = True
            # From the states of one and two rows, not of n: a state is megabytes a row.
            one, two = (to_meta(self.get_state(np.zeros(k, np.int64))) for k in (1, 2))
            template = with_rows(one, two, n)
            self._rngs[:] = rngs  # and keeps: a refused state leaves no seed 0 behind
            self._templates[n] = template
        return template

    def _load_state(self, state: dict[str, Any], rows: np.ndarray) -> None:
        """Load a state known to fit (checked, or this env class's own) into ``rows``."""
        self._build_engine()
        if not self._started:
            self._frames = torch.zeros_like(state["frames"], device=self.device)
            self._latents = torch.zeros_like(
                state["latents"], device=self.device, dtype=torch.float32
            )
        assert self._engine is not None and self._frames is not None and self._latents is not None
        self._engine.set_state(state["engine"], rows.tolist())
        self._frames[rows] = state["frames"].to(self._frames.device)
        self._latents[rows] = state["latents"].to(self._latents)
        if self._pose is not None:
            self._pose[rows] = state["pose"]
        self._steps[rows], self._done[rows] = state["steps"], state["done"]
        for row, rng_state in zip(rows, state["rngs"], strict=True):
            self._rngs[row] = None if rng_state is None else rng_from_state(rng_state)
        self._started = True

    def fork(
        self,
        row: int | Sequence[int] | np.ndarray,
        n: int,
        seeds: int | Iterable[int] | None = None,
        *,
        autoreset_mode: AutoresetMode | str | None = None,
        output: str | None = None,
        max_episode_steps: int | None = None,
    ) -> WorldModelVectorEnv:
        """A new ``n``-row env whose rows all continue from row ``row`` (the model is shared).

        ``row`` may be a list of B rows: the new env then has ``B * n`` rows, row ``row[i]``'s
        futures at ``i * n`` to ``(i + 1) * n - 1`` (planning for B envs in one batch; its
        ``seeds`` are one per new row).

        Without ``seeds`` every fork draws the same noise (common random numbers: futures differ
        only by their actions), and it is the noise row ``row`` draws next: a fork under the
        actions the row then takes shows its next frames bit for bit, so a plan scored on a
        reward that reads frames knows the noise it will meet. ``seeds`` (one per fork, or an
        int: fork i gets ``seeds + i``, as in :meth:`reset`) reseeds each fork's generators (the
        model's noise and the NumPy generator that picks start frames on autoreset) so their
        futures differ. A state loaded
        later (:meth:`set_state`) brings its rows' generators with it, unless its ``seeds``
        reseed them. With memory, each fork gets its own copy of the row's memory. Hooks with values
        per row (a goal image or target per row) keep row ``row``'s in every fork (``select``,
        see :mod:`gym_worldmodel.envs.hooks`).

        ``output`` (``"numpy"`` or ``"torch"``; default this env's) is what the forks return: a
        planner scoring futures on the GPU takes ``"torch"`` from an env that gives an agent NumPy.
        Forks render as this env does, but for ``"human"``: a fork of an env that shows its
        frames in a window renders ``"rgb_array"``, unseen.

        Forks keep the rows' step counts and, unless ``max_episode_steps`` says otherwise (-1:
        no limit), this env's ``max_episode_steps``: ``max_episode_steps=-1`` imagines past the
        episode's time limit (a future forked near its end would restart inside a planning
        horizon). A fork that
        ends inside a planning horizon (a termination hook, the robot's
        ``terminate_episode = 0``, ``max_episode_steps``) restarts as ``autoreset_mode`` says
        (default: this env's): with ``NEXT_STEP`` its next step begins a new episode (reward 0)
        and the rewards after it are that episode's; with ``DISABLED`` stepping it raises.
        :func:`gym_worldmodel.envs.planning.imagine` plays a batch of plans from a state and
        counts each plan's rewards until its row is done::

            futures = env.fork(0, 64, max_episode_steps=-1)  # once
            returns = imagine(futures, plans, env.get_state(0)).returns
        """
        # the class this mixes into, imported here as it imports this module
        from gym_worldmodel.envs.vector_env import WorldModelVectorEnv

        self._check_open()
        if not self._started:
            raise RuntimeError("call reset() before fork()")
        # rows picked on the device (a torch planner's argmax) too
        parents = parse_rows(row, self.num_envs, "row", repeats=True, empty=False).tolist()
        check_count("n", n, "forks")
        if output is not None:
            check_choice("output", output, ("numpy", "torch"))
        limit = self.max_episode_steps if max_episode_steps is None else max_episode_steps
        step_limit("max_episode_steps", limit)  # checked before the fork is built
        copies = 1 if len(parents) == 1 else 2  # one row's state is broadcast (below)
        check_fits(self._state_template(1), len(parents) * n, self.device, "a fork", copies)
        mode = autoreset_mode_of(autoreset_mode or self.metadata["autoreset_mode"])
        rows = np.repeat(np.asarray(parents, np.int64), n).tolist()  # each parent's n futures
        seeds = checked_seeds(seeds, len(rows), "fork seeds")
        if len(parents) == 1:  # one row's state, broadcast as it loads: no n copies of it
            template = self._state_template(1)
            state = repeat_rows(self.get_state(parents), template, self._state_template(len(rows)))
        else:
            state = self.get_state(rows)
        source = cast(FullEngine, self._engine)  # forking needs the engine's model (see Engine)
        engine = self._make_engine(
            source.model, len(rows), source.memory is not None, weights=source.weights
        )
        child = WorldModelVectorEnv(
            len(rows),
            **{
                **self._settings,  # as this env was made, but for what is its own now:
                "model": None,  # the engine brings it (a fork keeps no model alive of its own)
                "device": self.device,
                "dtype": self.dtype,
                # imagined futures are not shown (a planner's forks would fill the window)
                "render_mode": "rgb_array" if self.render_mode == "human" else self.render_mode,
                "output": output or self.output,
                "autoreset_mode": mode,
                "max_episode_steps": limit,
                "reward_fn": hook_lib.select(self.reward_fn, rows),
                "termination_fn": hook_lib.select(self.termination_fn, rows),
                "start_fn": self.start_fn,
                "memory": self.memory,
                "memory_shared": False,  # each fork its own copy of its row's memory
                "engine": engine,  # the model, its nfe and the memory come with the engine
            },
        )
        child.checkpoint_dir = self.checkpoint_dir  # its start frames for the forks' autoresets
        child._load_state(state, np.arange(len(rows)))  # this env's own state: nothing to check
        if seeds is not None:
            child._reseed(np.arange(len(rows)), seeds)
        return child

    def _reseed(self, rows: np.ndarray, seeds: list[int]) -> None:
        """Reseed the rows' generators: the model's noise and the NumPy one of their autoresets."""
        assert self._engine is not None  # built by the reset, set_state or fork before
        self._engine.seed(seeds, env_idx=rows.tolist())
        for row, seed in zip(rows, seeds, strict=True):
            self._rngs[row] = np.random.default_rng(seed)
