"""Stable-Baselines3 ``VecEnv`` over one batched :class:`WorldModelVectorEnv`.

SB3's own ``DummyVecEnv`` / ``SubprocVecEnv`` step N single envs one after the other (or in N
processes, each with its own copy of the model). This adapter hands SB3 the native vector env
instead: every step of all ``num_envs`` rows is one batched model forward.

Example::

    from stable_baselines3 import PPO
    from stable_baselines3.common.vec_env import VecMonitor
    from gym_worldmodel.integrations.sb3 import WorldModelSB3VecEnv

    venv = WorldModelSB3VecEnv.make(
        "WorldModel-Driving-v0", num_envs=8, max_episode_steps=64, reward_fn=my_reward_hook
    )
    venv = VecMonitor(venv)  # episode returns and lengths in SB3's logs and evaluate_policy
    PPO("CnnPolicy", venv).learn(10_000)

Rewards are 0 unless a hook is given (``gym_worldmodel.envs.hooks``). ``agents/ppo_citywalk.py``
is a complete run: a task from hooks, a frame encoder sized for 64 px, atomic saves, resume and
an evaluation against random actions. SB3's default ``CnnPolicy`` (NatureCNN) takes the shipped
worlds' 64 px frames, not the 32 px of ``model="random-tiny"`` (its kernels are larger than
that); wrap the env in ``VecNormalize(venv, norm_obs=False)`` to scale rewards, since normalised
frames are no longer images to SB3's image policies.

Semantics follow ``DummyVecEnv``: ``step_wait`` returns ``(obs, rewards, dones, infos)`` with
float32 rewards, ``dones = terminated | truncated`` and one info dict per row. A done row has
already been reset: ``obs[i]`` is the first observation of its next episode,
``infos[i]["terminal_observation"]`` the last observation of the finished one and ``infos[i]``
the info of its last step; the new episode's reset info goes to ``reset_infos[i]``. Every info
carries ``"TimeLimit.truncated"`` (truncated and not terminated). The underlying vector env must
therefore run in ``AutoresetMode.SAME_STEP`` with ``output="numpy"``.

All rows live in one Python object, so ``get_attr`` reads it once and returns that one result
for each requested index, and ``set_attr`` can only set an attribute for every row at once.
``env_method`` calls a method that takes ``env_idx`` (``get_state``, ``set_state``,
``set_memory``) once per requested row, one result each, as SB3's own envs answer; any other
it calls once, for every row. As SB3's own VecEnvs give them, ``get_attr("observation_space")``
and ``"action_space"`` are a row's spaces, ``env_method("render")`` is each row's frame,
``env_method("idle_action")`` each row's action and ``env_method("get_wrapper_attr", name)``
reads ``name``.

Render modes: ``"human"`` shows the rows in the vector env's pygame window (the ``play`` extra),
drawn by ``reset`` and ``step`` (every frame of a step's chunk, at the world's frame rate);
SB3's ``render()`` then returns None. ``"rgb_array"``: ``render()`` tiles the rows' frames as
SB3 does, and ``render("human")`` shows them, the last frame of each row, in the same window
(where SB3's own VecEnvs would show them with OpenCV), paced at a step's time a call.
"""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Sequence
from typing import Any, cast

import gymnasium as gym
import numpy as np
from gymnasium.vector import AutoresetMode

try:
    from stable_baselines3.common.vec_env.base_vec_env import (
        VecEnv,
        VecEnvIndices,
        VecEnvObs,
        VecEnvStepReturn,
    )
except ImportError as err:  # pragma: no cover - depends on the installed extras
    raise ImportError(
        'gym_worldmodel.integrations.sb3 needs stable-baselines3: pip install "gym-worldmodel[sb3]"'
    ) from err

from gym_worldmodel.envs import observations as obs_lib
from gym_worldmodel.envs.options import autoreset_mode, check_seed, row_picks
from gym_worldmodel.envs.registration import check_world_id
from gym_worldmodel.envs.row_access import ROW_SPACES
from gym_worldmodel.envs.vector_env import WorldModelVectorEnv
from gym_worldmodel.envs.window import Window

#: Reset options that pick rows; an SB3 reset always resets every row.


#: What step_async has not been given (None is an action the vector env refuses clearly).
_NO_ACTIONS = object()


class WorldModelSB3VecEnv(VecEnv):
    """SB3 ``VecEnv`` whose rows are the rows of one :class:`WorldModelVectorEnv`.

    Args:
        venv: A vector env built with ``autoreset_mode=AutoresetMode.SAME_STEP`` and
            ``output="numpy"`` (see :meth:`make`). The adapter owns it from now on: ``close``
            closes it.

    Raises:
        TypeError: ``venv`` is not a :class:`WorldModelVectorEnv`.
        ValueError: ``venv`` is not in SAME_STEP autoreset mode or does not output NumPy.
    """

    def __init__(self, venv: WorldModelVectorEnv) -> None:
        if not isinstance(venv, WorldModelVectorEnv):
            raise TypeError(
                f"WorldModelSB3VecEnv wraps a WorldModelVectorEnv, got {type(venv).__name__}; "
                "use WorldModelSB3VecEnv.make(env_id, num_envs, ...) to build one"
            )
        mode = venv.metadata.get("autoreset_mode")
        if mode != AutoresetMode.SAME_STEP:
            raise ValueError(
                "WorldModelSB3VecEnv needs a vector env with "
                f"autoreset_mode=AutoresetMode.SAME_STEP (SB3 resets done rows within the step "
                f"and reads the terminal observation from the infos), got {mode!r}"
            )
        if venv.output != "numpy":
            raise ValueError(f'WorldModelSB3VecEnv needs output="numpy", got {venv.output!r}')
        self.venv = venv  # before super().__init__, which reads render_mode through get_attr
        self._actions: Any = _NO_ACTIONS
        self._window: Window | None = None  # render("human") of an "rgb_array" env's
        super().__init__(venv.num_envs, venv.single_observation_space, venv.single_action_space)
        self.metadata = {**venv.metadata, "render_modes": self.metadata["render_modes"]}

    @classmethod
    def make(cls, env_id: str, num_envs: int = 1, **kwargs: Any) -> WorldModelSB3VecEnv:
        """Build the vector env with ``gymnasium.make_vec`` in SAME_STEP mode and wrap it.

        Args:
            env_id: A registered id, e.g. ``"WorldModel-Driving-v0"``.
            num_envs: Rows.
            **kwargs: Keyword arguments of :class:`WorldModelVectorEnv` (``model``,
                ``max_episode_steps``, ``render_mode``, ``reward_fn``, ...).

        Returns:
            The adapter.
        """
        check_world_id(env_id)  # before make_vec, which another env would refuse obscurely
        mode = autoreset_mode(kwargs.pop("autoreset_mode", AutoresetMode.SAME_STEP))
        if mode != AutoresetMode.SAME_STEP:
            raise ValueError(f"WorldModelSB3VecEnv needs autoreset_mode SAME_STEP, got {mode!r}")
        if kwargs.get("output", "numpy") != "numpy":  # refused before the model loads
            raise ValueError(f'WorldModelSB3VecEnv needs output="numpy", got {kwargs["output"]!r}')
        envs = gym.make_vec(
            env_id, num_envs=num_envs, autoreset_mode=AutoresetMode.SAME_STEP, **kwargs
        )
        return cls(cast(WorldModelVectorEnv, envs.unwrapped))  # __init__ checks it is one

    # --- SB3 VecEnv API ---------------------------------------------------------------------

    def seed(self, seed: int | None = None) -> Sequence[None | int]:
        """Seeds for the next reset: row i gets ``seed + i`` (SB3's VecEnv); checked now."""
        check_seed(seed)
        return super().seed(seed)

    def reset(self) -> VecEnvObs:
        """Reset every row with the seeds of :meth:`seed` and options of :meth:`set_options`.

        Both are used by this reset only (SB3 semantics). Rows may get different options (e.g.
        their own ``"image"``); ``"env_idx"`` / ``"reset_mask"`` are not allowed since an SB3
        reset resets every row. Rows with options of their own are reset once each (a
        ``start_fn`` asked once a row), except at the first reset and where rows share a memory
        bank: every row is then reset at once, and those rows again from their options.

        Returns:
            The batched first observations; their infos are in ``self.reset_infos``.
        """
        seeds = None if all(s is None for s in self._seeds) else list(self._seeds)
        groups = self._option_groups()
        self.reset_infos = [{} for _ in range(self.num_envs)]
        # A reset of every row at once: the first (it must cover every row), and one of rows
        # sharing a memory bank, which empties the bank only when all its rows reset together
        # (what no row owns, views handed over or restored, goes with the episodes that end).
        whole = not self.venv.started or (self.venv.memory and self.venv.memory_shared)
        if len(groups) == 1 or whole:
            options = groups[0][1] if len(groups) == 1 else None
            obs, infos = self.venv.reset(seed=seeds, options=options or None)
            self.reset_infos = [_row_info(infos, i) for i in range(self.num_envs)]
            # rows with options of their own then start again from them (a row's seed reseeds
            # it, so a seeded reset is as if each row was reset once; a start_fn is asked twice)
            groups = [] if len(groups) == 1 else [(r, o) for r, o in groups if o]
        for rows, options in groups:  # each row reset once, with its own options
            obs, part = self.venv.reset(seed=seeds, options={**options, "env_idx": rows})
            for i in rows:  # a partial reset's infos are its rows' alone
                self.reset_infos[i] = _row_info(part, i)
        self._reset_seeds()
        self._reset_options()
        self._actions = _NO_ACTIONS  # those given before the reset were for the old episodes
        return obs

    def step_async(self, actions: np.ndarray) -> None:
        """Store the batched actions for :meth:`step_wait`."""
        self._actions = actions

    def step_wait(self) -> VecEnvStepReturn:
        """Step every row in one batched forward.

        Returns:
            ``(obs, rewards, dones, infos)``: obs ``(n, ...)``, float32 rewards ``(n,)``, bool
            dones ``(n,)`` and a list of ``n`` info dicts (see the module docstring).
        """
        if self._actions is _NO_ACTIONS:
            raise RuntimeError("call step_async(actions) before step_wait()")
        actions, self._actions = self._actions, _NO_ACTIONS
        obs, rewards, terminated, truncated, infos = self.venv.step(actions)
        dones = np.asarray(terminated, bool) | np.asarray(truncated, bool)
        has_final = infos.get("_final_obs", np.zeros(self.num_envs, bool))
        out: list[dict[str, Any]] = []
        for i in range(self.num_envs):
            info = _row_info(infos, i)
            if dones[i]:
                if not has_final[i]:
                    raise RuntimeError(f"row {i} is done but the vector env gave no final_obs")
                self.reset_infos[i] = info  # the info of the row's new episode
                info = obs_lib.info_row(infos["final_info"], i)
                info["terminal_observation"] = infos["final_obs"][i]
            info["TimeLimit.truncated"] = bool(truncated[i] and not terminated[i])
            out.append(info)
        return obs, np.asarray(rewards, np.float32), dones, out

    def render(self, mode: str | None = None) -> np.ndarray | None:
        """SB3's ``render``, but ``"human"`` of an ``"rgb_array"`` env draws in a pygame window.

        The rows' current frames, tiled as the vector env's ``"human"`` window tiles them,
        shown for at least a step's time (``1 / metadata["render_fps"]``, counted from the
        call before); SB3's own VecEnvs show them with OpenCV, which this package does not
        use. :meth:`close` closes the window.
        """
        if mode != "human" or self.render_mode != "rgb_array":
            return super().render(mode)
        frames = np.stack(cast(list, self.get_images()))[:, None]  # (B, 1, H, W, 3)
        if self._window is None:  # (pygame imported now: the play extra)
            self._window = Window(f"gym-worldmodel {self.venv.world.name}")
        self._window.show_rows(frames, self.venv.metadata["render_fps"])
        return None

    def close(self) -> None:
        """Close the window and the vector env (and release the model); again does nothing."""
        if self._window is not None:
            self._window.close()
        if not self.venv.closed:
            self.venv.close()

    def get_images(self) -> Sequence[np.ndarray | None]:
        """The current frame of every row (``render_mode="rgb_array"``), without a forward."""
        if self.render_mode != "rgb_array":
            warnings.warn(
                f"The render mode is {self.render_mode}, but get_images needs "
                'render_mode="rgb_array" (pass it to WorldModelSB3VecEnv.make)',
                stacklevel=2,
            )
            return [None] * self.num_envs
        if not self.venv.started:
            raise RuntimeError("call reset() before render(): no row has a frame yet")
        return list(cast(tuple, self.venv.render()))

    def get_attr(self, attr_name: str, indices: VecEnvIndices = None) -> list[Any]:
        """The vector env's attribute, once per index (all rows share one object).

        ``observation_space`` and ``action_space`` are a row's, as SB3's VecEnvs give them:
        the vector env's own ``get_attr`` answers per row.
        """
        values = self.venv.get_attr(attr_name)
        return [values[row] for row in self._checked_indices(indices)]

    def set_attr(self, attr_name: str, value: Any, indices: VecEnvIndices = None) -> None:
        """Set an attribute of the vector env; it is shared, so ``indices`` must name every row.

        The spaces are the world's and cannot be set: a wrapper changes what an agent sees.
        """
        rows = self._checked_indices(indices)
        if attr_name in ROW_SPACES or attr_name in ROW_SPACES.values():
            raise AttributeError(
                f"{attr_name} is the world's and cannot be set; wrap this VecEnv in an SB3 "
                "VecEnvWrapper to change what an agent sees or sends (the adapter takes the "
                "bare WorldModelVectorEnv, not a Gymnasium wrapper of it)"
            )
        if not self._every_row(rows):
            raise ValueError(
                f"all rows share one vector env: set_attr({attr_name!r}) can only set every row, "
                f"got indices {rows}"
            )
        self.venv.set_attr(attr_name, [value] * self.num_envs)  # SB3's one value, in every row

    def env_method(
        self,
        method_name: str,
        *method_args: Any,
        indices: VecEnvIndices = None,
        **method_kwargs: Any,
    ) -> list[Any]:
        """Call a method of the vector env for the rows ``indices`` name (all if None).

        As each of SB3's own envs answers for itself: a method that takes ``env_idx``
        (``get_state``, ``set_state``, ``set_memory``) is called once per row with
        ``env_idx=[row]``, one result each (a state of one row: ``set_state`` of it goes back
        with the same ``indices``); ``idle_action`` gives each row's own. Any other method acts
        on every row of the shared vector env: it is called once, its result repeated for each
        index, and it raises for some of the rows. ``env_idx`` passed explicitly calls the
        method once, as given (``venv`` is the vector env itself, for whole-batch calls).
        """
        rows = self._checked_indices(indices)
        if method_name == "get_wrapper_attr":  # Gymnasium 1.x's way to read through wrappers
            name = method_args[0] if method_args else method_kwargs.get("name")
            if not isinstance(name, str):
                raise TypeError("env_method('get_wrapper_attr', name): give the attribute name")
            return self.get_attr(name, rows)
        if method_name == "render":  # each row its own frame, as each of SB3's envs renders
            if self.render_mode == "human":  # (SB3's render() asks it; the window is drawn)
                return [None] * len(rows)
            images = self.get_images()
            return [images[row] for row in rows]
        if method_name == "idle_action":  # each row's own, not the batch's
            actions = self.venv.call("idle_action", *method_args, **method_kwargs)
            return [actions[row] for row in rows]
        method = getattr(self.venv, method_name)
        if not callable(method):
            raise TypeError(
                f"env_method({method_name!r}): {method_name} is an attribute, not a method; "
                "read it with get_attr"
            )
        parameters = inspect.signature(method).parameters
        bound = inspect.signature(method).bind_partial(*method_args, **method_kwargs).arguments
        if "env_idx" in parameters and "env_idx" not in bound:
            return [method(*method_args, env_idx=[row], **method_kwargs) for row in rows]
        if not self._every_row(rows) and "env_idx" not in bound:
            raise ValueError(
                f"env_method({method_name!r}) acts on every row of the shared vector env "
                f"(it takes no env_idx), got indices {rows}"
            )
        result = method(*method_args, **method_kwargs)
        return [result] * len(rows)

    def env_is_wrapped(
        self, wrapper_class: type[gym.Wrapper], indices: VecEnvIndices = None
    ) -> list[bool]:
        """Rows are not ``gymnasium.Wrapper`` instances: False for each index."""
        return [False] * len(self._checked_indices(indices))

    # --- internals ------------------------------------------------------------------------------

    def _every_row(self, rows: list[int]) -> bool:
        return sorted(set(rows)) == list(range(self.num_envs))

    def _checked_indices(self, indices: VecEnvIndices) -> list[int]:
        rows = [int(i) for i in self._get_indices(indices)]
        bad = [i for i in rows if not 0 <= i < self.num_envs]
        if bad:
            raise IndexError(f"env indices {bad} out of range for {self.num_envs} envs")
        return rows

    def _option_groups(self) -> list[tuple[list[int], dict[str, Any]]]:
        """Rows grouped by their reset options (``set_options(dict)`` shares one dict)."""
        if len(self._options) != self.num_envs:
            raise ValueError(
                f"set_options got {len(self._options)} option dicts for {self.num_envs} envs"
            )
        groups: dict[int, tuple[list[int], dict[str, Any]]] = {}
        for row, options in enumerate(self._options):
            options = options or {}
            bad = row_picks(options)
            if bad:
                raise ValueError(
                    f"reset options {bad} pick rows, but an SB3 reset resets every row; "
                    "use the vector env (adapter.venv) for partial resets"
                )
            key = 0 if not options else id(options)
            groups.setdefault(key, ([], options))[0].append(row)
        for rows, options in groups.values():  # all of them, before any row is reset
            if options:
                try:
                    self.venv.check_reset_options(options, len(rows))
                except ValueError as err:
                    which = "every row" if len(rows) == self.num_envs else f"rows {rows}"
                    raise ValueError(f"set_options for {which}: {err}") from None
        return list(groups.values())


def _row_info(infos: dict[str, Any], row: int) -> dict[str, Any]:
    """Row ``row`` of a vector info dict, without the SAME_STEP terminal entries.

    SB3 keeps the terminal observation under its own key.
    """
    return obs_lib.info_row(infos, row, skip=("final_obs", "final_info"))
