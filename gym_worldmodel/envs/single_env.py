"""Single (unbatched) Gymnasium env with NumPy I/O: one row of the native vector env."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium.vector import AutoresetMode

from gym_worldmodel.envs.actions import batch_one, on_host
from gym_worldmodel.envs.observations import info_row, take
from gym_worldmodel.envs.options import check_options, check_seed, row_picks, user_rng
from gym_worldmodel.envs.pictures import PICTURE_SHAPES, one_picture
from gym_worldmodel.envs.vector_env import WorldModelVectorEnv


class _OfTheVector:
    """An attribute the single env reads and sets on its vector env of one row.

    So ``env.unwrapped.reward_fn = hook`` reaches the env that steps (and is checked there).
    """

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, env: Any, owner: type | None = None) -> Any:
        return self if env is None else getattr(env.vector, self.name)

    def __set__(self, env: Any, value: Any) -> None:
        setattr(env.vector, self.name, value)


class WorldModelEnv(gym.Env):
    """One world-model environment (see ``envs/`` for the card of each registered id).

    Takes the keyword arguments of :class:`WorldModelVectorEnv` except ``num_envs``, ``output``
    and ``autoreset_mode``. Row 0 of a vector env with the same seed and actions produces the
    same frames, bit for bit on the CPU (tested; not checked on a GPU).

    ``render_mode="human"`` shows the env in a pygame window (the ``play`` extra), drawn by
    :meth:`reset` and :meth:`step`: every frame of a step's chunk in turn, at the world's frame
    rate (``metadata["world_fps"]``, ``metadata["render_fps"]`` steps a second), enlarged to
    about 512 pixels; :meth:`render` then returns None and :meth:`close` closes the window.
    Closing the window itself lets the env step on, unseen and unpaced.

    ``gym.make`` adds Gymnasium's ``TimeLimit`` wrapper (``max_episode_steps``), and Gymnasium
    wrappers do not pass other methods on: reach :meth:`get_state`, :meth:`set_state` and
    :meth:`fork` through ``env.unwrapped``. ``TimeLimit`` counts steps itself, outside the env's
    state; a planner that restores states should make the env with
    ``gym.make(id, max_episode_steps=-1)`` (no wrapper) or construct it with
    ``WorldModelEnv(world=..., max_episode_steps=N)``, whose step count is part of the state.
    Gymnasium's ``OrderEnforcing`` (also added by ``gym.make``) refuses a step before the first
    ``reset()``, even after a :meth:`set_state`: reset a new env once before restoring a state.
    """

    metadata = {"render_modes": ["human", "rgb_array"], "render_fps": 5}  # each env: its world's
    # the vector env's, read and set through: a hook assigned later acts on the steps
    reward_fn = _OfTheVector()
    termination_fn = _OfTheVector()
    start_fn = _OfTheVector()
    #: The env's own limit (its step count is part of its state), made with
    #: ``WorldModelEnv(max_episode_steps=N)``; None under ``gym.make``, whose ``TimeLimit``
    #: wrapper holds the limit (``env.spec.max_episode_steps``).
    max_episode_steps = _OfTheVector()

    def __init__(self, render_mode: str | None = None, **kwargs: Any) -> None:
        vector = "gym.make_vec(id, num_envs=N{})"
        for name, hint in (
            ("num_envs", vector.format("")),
            ("output", vector.format(", output=...") + " (this package's vector env, the default)"),
            (
                "autoreset_mode",
                vector.format(", autoreset_mode=...") + "; with vectorization_mode 'sync' or "
                "'async', Gymnasium's vector env takes it as vector_kwargs={'autoreset_mode': ...}",
            ),
        ):
            if name in kwargs:
                raise TypeError(f"WorldModelEnv is one env and does not take {name!r}: {hint}")
        self.vector = WorldModelVectorEnv(
            1,
            render_mode=render_mode,
            output="numpy",
            autoreset_mode=AutoresetMode.DISABLED,
            **kwargs,
        )
        vector_meta = self.vector.metadata
        self.metadata = {
            **self.metadata,
            "render_fps": vector_meta["render_fps"],
            "world_fps": vector_meta["world_fps"],
        }
        self.render_mode = render_mode
        self.observation_space = self.vector.single_observation_space
        self.action_space = self.vector.single_action_space

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        """Start an episode; ``options`` as :meth:`WorldModelVectorEnv.reset` for one row."""
        check_seed(seed)
        check_options(options)
        options = dict(options or {})
        rows = row_picks(options)
        if rows:
            raise ValueError(f"a single env has one row: options {rows} are for vector envs")
        rng, rng_seed = self._np_random, self._np_random_seed
        rng_state = None if rng is None else rng.bit_generator.state
        try:
            super().reset(seed=None if seed is None else int(seed))  # Gymnasium: no np.int64
            if seed is not None:  # as the vector env's: not the row's own stream
                self._np_random = user_rng(seed)
            for key in PICTURE_SHAPES.keys() & options.keys():
                options[key] = one_picture(key, on_host(options[key], torch.float64))[None]
            # A seed seeds the row as it seeds row 0 of a vector env; seed=None continues the
            # row's generators, or on the first reset draws a row seed from this env's
            # (unseeded) np_random.
            if seed is not None:
                row_seed = int(seed)
            elif self.vector.started:
                row_seed = None
            else:
                row_seed = int(self.np_random.integers(2**63 - 1))
            obs, infos = self.vector.reset(seed=[row_seed], options=options)
        except Exception:  # a refused reset leaves np_random as it was, as it leaves the row
            self._np_random, self._np_random_seed = rng, rng_seed
            if rng is not None and rng_state is not None:
                rng.bit_generator.state = rng_state
            raise
        return take(obs, 0), info_row(infos, 0)

    def step(self, action: Any):
        """One chunk; Python ``float`` reward and ``bool`` flags."""
        if self.vector.started and self.vector.done[0]:
            raise RuntimeError("the episode is over (terminated or truncated): call reset()")
        obs, reward, terminated, truncated, infos = self.vector.step(batch_one(action))
        flags = float(reward[0]), bool(terminated[0]), bool(truncated[0])
        return take(obs, 0), *flags, info_row(infos, 0)

    def render(self) -> np.ndarray | None:
        """The current frame (no model forward); None in ``"human"`` mode (the window's)."""
        frames = self.vector.render()
        return None if frames is None else frames[0]

    def close(self) -> None:
        """Release the model and close the window; calling it again does nothing."""
        if not self.vector.closed:
            self.vector.close()

    def idle_action(self) -> Any:
        """The do-nothing action (no key; straight on at the same speed; no motion, arm mode).

        ``gymnasium.utils.play.play(env, fps=5, noop=env.unwrapped.idle_action())`` plays it
        while no key is held (its default ``noop=0`` is not an action of these spaces).
        """
        return self.vector.head.idle_action()

    def get_keys_to_action(self) -> dict[str, Any]:
        """Keyboard controls for ``gymnasium.utils.play.play`` (``gym-worldmodel play``).

        The action head's ``keys_to_action`` (:mod:`gym_worldmodel.envs.actions`).
        """
        return self.vector.head.keys_to_action()

    @property
    def dtype(self) -> torch.dtype:
        """The precision the env computes in (``dtype="auto"`` resolved)."""
        return self.vector.dtype

    def fork(
        self,
        n: int,
        *,
        seeds: int | Iterable[int] | None = None,
        autoreset_mode: AutoresetMode | str = AutoresetMode.NEXT_STEP,
        output: str = "numpy",
        max_episode_steps: int | None = None,
    ) -> WorldModelVectorEnv:
        """An ``n``-row vector env continuing this episode (:meth:`WorldModelVectorEnv.fork`).

        Its rows restart as ``autoreset_mode`` says when they end (``NEXT_STEP`` by default, so
        the fork docstring's return count runs through a future that ends; this env's own
        vector env is ``DISABLED``). ``output="torch"`` keeps the forks' returns on the device.
        ``max_episode_steps`` is the forks' time limit (-1: none; default this env's own, which
        is None under ``gym.make``: its ``TimeLimit`` wrapper stays with this env).
        """
        return self.vector.fork(
            0,
            n,
            seeds,
            autoreset_mode=autoreset_mode,
            output=output,
            max_episode_steps=max_episode_steps,
        )

    def get_state(self) -> dict[str, Any]:
        """Full state of the episode (see :meth:`WorldModelVectorEnv.get_state`)."""
        return self.vector.get_state()

    def set_state(self, state: dict[str, Any], *, seeds: int | None = None) -> None:
        """Restore a state from :meth:`get_state`; ``seeds`` (an int) reseeds its noise from there.

        Named as the vector env's and :meth:`fork`'s ``seeds``: one seed for this env's one row.
        """
        self.vector.set_state(state, seeds=seeds)

    def set_memory(self, enabled: bool | None, store: bool | None = None) -> None:
        """Turn spatial-memory retrieval (and with ``store``, storing) on or off.

        As :meth:`WorldModelVectorEnv.set_memory` for this env's one row; None leaves a switch
        as it is. Turning memory on needs an env made with it.
        """
        self.vector.set_memory(enabled, None, store)
