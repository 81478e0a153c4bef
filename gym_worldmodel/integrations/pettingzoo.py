"""PettingZoo ``ParallelEnv``: agents are the rows of one batched :class:`WorldModelVectorEnv`.

Every agent explores the same world (same model, its own noise stream) and all live agents
advance in one batched model forward per step. With spatial memory (worlds with a pose), the
agents share one memory bank and start from the same image at the same origin, so what one agent
saw, another finds when it looks at the same place: each agent's own context (KV cache) stays
its own, but the chunks retrieved into it may come from any agent. ``shared_memory=False`` gives
every agent its own bank and its own start frame.

Example::

    from gym_worldmodel.integrations.pettingzoo import WorldModelParallelEnv

    env = WorldModelParallelEnv("WorldModel-CityWalk-v0", num_agents=4, max_cycles=100)
    obs, infos = env.reset(seed=0)
    while env.agents:
        actions = {agent: env.action_space(agent).sample() for agent in env.agents}
        obs, rewards, terminations, truncations, infos = env.step(actions)

As PettingZoo's own environment modules, this module has :func:`parallel_env` (the same class)
and :func:`env` (its AEC form: PettingZoo's ``pettingzoo.utils.parallel_to_aec`` wrapper, which
here checks each agent's action when that agent gives it), so
``pettingzoo.test.max_cycles_test(gym_worldmodel.integrations.pettingzoo)`` and
``from gym_worldmodel.integrations.pettingzoo import env`` work as they do there.

Done agents (PettingZoo semantics): an agent that terminates or truncates leaves
``env.agents`` and stays out until the next :meth:`~WorldModelParallelEnv.reset`. The vector env
still steps all rows together, so a dead agent's row is restarted internally (a partial reset
with ``options={"env_idx": ...}``, as the vector env's disabled autoreset requires) at the
start of the next step, fed its action head's idle action, and its outputs are dropped: they
never appear in the returned dicts, :meth:`~WorldModelParallelEnv.state`,
:meth:`~WorldModelParallelEnv.render` or the ``"human"`` window. The hidden rows cost compute
but keep the batch shape (and the other rows' results) fixed. With memory, a dead agent's row
stops storing (its idle chunks are no one's view); in a shared bank what it stored stays for the
live agents (its hidden restart hands it over) until the next reset, from which every agent
stores again. Reward and termination hooks are batched over every row, hidden ones included
(with the idle action and the hidden episode's ``info["step"]``): a hook that keeps counts of
its own should count only ``env.agents``' rows.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Mapping
from typing import Any, cast

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces
from gymnasium.vector import AutoresetMode
from gymnasium.vector.utils import batch_space

try:
    from pettingzoo import AECEnv, ParallelEnv
    from pettingzoo.utils.conversions import parallel_to_aec_wrapper
    from pettingzoo.utils.wrappers import OrderEnforcingWrapper
except ImportError as err:  # pragma: no cover - depends on the installed extras
    raise ImportError(
        "gym_worldmodel.integrations.pettingzoo needs PettingZoo: "
        'pip install "gym-worldmodel[pettingzoo]"'
    ) from err

from gym_worldmodel.envs import observations as obs_lib
from gym_worldmodel.envs.actions import ActionError, batch_one
from gym_worldmodel.envs.options import (
    check_count,
    check_options,
    check_seed,
    rng_from_state,
    row_picks,
    step_limit,
    user_frames,
    world_reset_options,
)
from gym_worldmodel.envs.registration import check_world_id
from gym_worldmodel.envs.vector_env import WorldModelVectorEnv
from gym_worldmodel.envs.window import Window, tile
from gym_worldmodel.envs.worlds import start_frames

#: Keyword arguments this adapter sets itself.
_OWN_KWARGS = ("num_envs", "autoreset_mode", "max_episode_steps", "output", "memory_shared")


class WorldModelParallelEnv(ParallelEnv):
    """``num_agents`` agents in one world, stepped by one batched forward.

    Args:
        env_id: A registered id (``"WorldModel-CityWalk-v0"``, ``"WorldModel-Robot-v0"``,
            ``"WorldModel-Driving-v0"``).
        num_agents: Agents, named ``"agent_0"``, ``"agent_1"``, ...
        max_cycles: Truncate every agent after this many steps (None: never). Settable later
            through the ``max_cycles`` attribute.
        render_mode: None, ``"rgb_array"`` (:meth:`render` returns the first live agent's
            frame) or ``"human"``: a pygame window (the ``play`` extra) shows every agent's
            view, tiled as the vector env's rows, each step's frames in turn at the world's
            frame rate; a done agent's view keeps its last frame (its hidden row is not shown).
            :meth:`render` then returns None, and :meth:`close` closes the window.
        shared_memory: One spatial-memory bank for all agents, who then start from one image
            (see the module docstring); ignored when the env has no memory.
        **env_kwargs: Other keyword arguments of :class:`WorldModelVectorEnv` (``model``,
            ``obs_mode``, ``reward_fn``, ``termination_fn``, ``device``, ``memory``, ...).

    Attributes:
        venv: The underlying vector env (``AutoresetMode.DISABLED``, NumPy output).
        state_space: Space of :meth:`state`: the agents' observations stacked,
            ``(num_agents, H, W, 3)`` uint8 for ``obs_mode="rgb"`` (a ``Dict`` of stacked
            entries for a ``"+pose"`` mode).
    """

    metadata = {
        "render_modes": ["human", "rgb_array"],
        "render_fps": 5,  # the shipped worlds' steps a second; each env sets its world's
        "name": "worldmodel_parallel_v0",
        "is_parallelizable": True,
    }

    def __init__(
        self,
        env_id: str = "WorldModel-CityWalk-v0",
        num_agents: int = 2,
        max_cycles: int | None = 100,
        render_mode: str | None = None,
        shared_memory: bool = True,
        **env_kwargs: Any,
    ) -> None:
        for name in _OWN_KWARGS:
            if name in env_kwargs:
                raise TypeError(
                    f"WorldModelParallelEnv sets {name!r} itself (use num_agents, max_cycles "
                    "and shared_memory)"
                )
        check_count("num_agents", num_agents)
        if render_mode not in (None, "human", "rgb_array"):
            raise ValueError(
                f"render_mode {render_mode!r}: this env renders 'rgb_array' (render() returns "
                "the first live agent's frame, uint8 (H, W, 3)), 'human' (a window) or None"
            )
        step_limit("max_cycles", max_cycles)  # named as PettingZoo's, not as the vector env's
        check_world_id(env_id)  # before make_vec, which another env would refuse obscurely
        venv = gym.make_vec(
            env_id,
            num_envs=num_agents,
            autoreset_mode=AutoresetMode.DISABLED,
            max_episode_steps=-1 if max_cycles is None else max_cycles,  # -1: no limit
            render_mode=render_mode,
            output="numpy",
            memory_shared=shared_memory,
            **env_kwargs,
        ).unwrapped
        assert isinstance(venv, WorldModelVectorEnv)  # its vector entry point, checked above
        if shared_memory and venv.memory and venv.start_fn is not None:
            venv.close()
            raise ValueError(
                "start_fn draws each agent's start, and agents sharing a memory bank start from "
                "one picture (it would be replaced by a bundled one): give it as "
                "reset(options={'image': ...}), or make the env with shared_memory=False"
            )
        self.venv = venv
        self._window: _AgentsWindow | None = None
        if render_mode == "human":  # the vector env draws into it; _keep_frames shows the agents
            self._window = _AgentsWindow(f"gym-worldmodel {env_id}, {num_agents} agents")
            venv.set_window(self._window)
        self.env_id, self.render_mode = env_id, render_mode
        self.metadata = {
            **self.metadata,
            "render_fps": venv.metadata["render_fps"],
            "world_fps": venv.metadata["world_fps"],
            "name": env_id.lower().replace("-", "_"),
        }
        self.possible_agents = [f"agent_{i}" for i in range(num_agents)]
        self.agents: list[str] = []
        self._rows = {agent: i for i, agent in enumerate(self.possible_agents)}
        # One space object per agent, built once: observation_space(agent) is always the same
        # object, and seeding one agent's action space leaves the others' streams alone.
        self.observation_spaces = {
            a: copy.deepcopy(venv.single_observation_space) for a in self.possible_agents
        }
        self.action_spaces = {
            a: copy.deepcopy(venv.single_action_space) for a in self.possible_agents
        }
        # copies of one space hold copies of its generator: seed each from a stream of its own,
        # or every agent's sample() would draw the same actions
        streams = np.random.SeedSequence().spawn(num_agents)
        for space, stream in zip(self.action_spaces.values(), streams, strict=True):
            space.seed(int(stream.generate_state(1)[0]))
        self.state_space = batch_space(venv.single_observation_space, num_agents)
        self._noop = venv.head.idle_action()
        self._needs_reset = np.zeros(num_agents, bool)  # done rows to restart before a step
        self._last_obs: Any = None  # per row, frozen once its agent is done
        # last rendered (or, with "human", shown) frame per row, frozen likewise
        self._frames: np.ndarray | None = None
        self.shared_memory = shared_memory and venv.memory
        self._start_rng = np.random.default_rng()
        self._start: dict[str, Any] = {}  # the shared start image (hidden restarts reuse it)

    @property
    def max_cycles(self) -> int | None:
        """Steps after which every agent truncates (the vector env's ``max_episode_steps``)."""
        return self.venv.max_episode_steps

    @max_cycles.setter
    def max_cycles(self, value: int | None) -> None:
        self.venv.max_episode_steps = step_limit("max_cycles", value)

    def observation_space(self, agent: str) -> spaces.Space:
        """The observation space of ``agent`` (the same object on every call)."""
        return self.observation_spaces[self._known(agent)]

    def action_space(self, agent: str) -> spaces.Space:
        """The action space of ``agent`` (the same object on every call)."""
        return self.action_spaces[self._known(agent)]

    def _known(self, agent: str) -> str:
        if agent not in self._rows:
            raise ValueError(f"unknown agent {agent!r}; this env's are {self.possible_agents}")
        return agent

    def reset(
        self, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
        """Start a new episode for every agent.

        Args:
            seed: Agent ``i`` is seeded with ``seed + i``; None continues the agents' streams.
            options: ``"image"`` or ``"frames"`` as in :meth:`WorldModelVectorEnv.reset` (one
                for all agents, or one per agent where they do not share memory), and for
                driving ``"speed"`` (m/s) and ``"heading"`` (degrees). Other keys are ignored
                with a warning.

        Returns:
            Observation and info dicts keyed by agent.
        """
        check_seed(seed)
        check_options(options)
        options = dict(options or {})
        picked = row_picks(options)
        if picked:
            raise ValueError(f"reset resets every agent; options {picked} are not supported")
        known = world_reset_options(self.venv.world.pose)
        unknown = sorted(set(options) - set(known))
        if unknown:
            warnings.warn(
                f"WorldModelParallelEnv.reset ignores unknown options {unknown}; "
                f"this world takes {known}",
                stacklevel=2,
            )
        passed = {k: options[k] for k in known if k in options}
        pictured = "image" in passed or "frames" in passed
        # Nothing of the env changes until the vector env's reset succeeds: a bad option leaves
        # the start image, its generator and the dead agents' memory switches as they were.
        start_rng = self._start_rng
        if self.shared_memory and pictured:
            fitted = user_frames(passed, len(self.possible_agents), self.venv.config)
            assert fitted is not None  # passed holds an image or frames
            if not (fitted == fitted[:1]).all():
                raise ValueError(
                    "agents sharing a memory bank start from one picture (their poses share its "
                    "origin, so each would retrieve the others' starts as its own view): pass "
                    "one image or stack, or make the env with shared_memory=False"
                )
        if self.shared_memory and not pictured:  # one seeded start image for every agent
            bundled = start_frames(
                self.venv.world, self.venv.config.vae.image_size, self.venv.checkpoint_dir
            )
            start_rng = (
                np.random.default_rng(seed)
                if seed is not None
                else rng_from_state(self._start_rng.bit_generator.state)
            )
            passed = {**passed, "image": bundled[start_rng.integers(len(bundled))]}
        dead = [i for i, a in enumerate(self.possible_agents) if a not in self.agents]
        dead = [] if self._last_obs is None else dead  # before the first reset all store
        if self.venv.memory and not self.venv.closed:  # every agent stores again (dead ones
            self.venv.set_memory(None, store=True)  # stopped); a reopened env's all store
        try:
            obs, infos = self.venv.reset(seed=seed, options=passed or None)
        except Exception:
            if self.venv.memory and dead and not self.venv.closed:
                self.venv.set_memory(None, dead, store=False)
            raise
        self._start = passed if self.shared_memory else {}
        self._start_rng = start_rng
        self.agents = list(self.possible_agents)
        self._needs_reset[:] = False
        self._last_obs = obs_lib.copy(obs)
        self._frames = None
        self._keep_frames(list(range(len(self.possible_agents))))
        agents = list(enumerate(self.possible_agents))
        return (
            {a: obs_lib.take(obs, i) for i, a in agents},
            {a: obs_lib.info_row(infos, i) for i, a in agents},
        )

    def check_action(self, agent: str, action: Any) -> None:
        """Raise as :meth:`step` would for ``agent``'s action, without stepping.

        Raises:
            ActionError: The action does not fit the agent's action space (its shape, a value
                out of range, NaN); the message names the agent.
        """
        self._known(agent)
        try:
            self.venv.head.encode(batch_one(action), 1, self.venv.config.dit.chunk_frames)
        except ActionError as err:
            raise ActionError(f"{agent}'s action: {err}") from None

    def _blame(self, actions: dict[str, Any]) -> ActionError | None:
        """The first live agent's action that does not fit its space, as an error naming it."""
        for agent in self.agents:
            try:
                self.check_action(agent, actions[agent])
            except ActionError as err:
                return err
        return None

    def step(self, actions: dict[str, Any]) -> tuple[dict[str, Any], ...]:
        """Step every live agent in one batched forward.

        Args:
            actions: One action per live agent (exactly the names in ``env.agents``).

        Returns:
            ``(observations, rewards, terminations, truncations, infos)``, dicts keyed by the
            agents live before the step; rewards are Python floats, flags Python bools. Once
            every agent is done, a step of no actions returns five empty dicts and changes
            nothing, as PettingZoo's own parallel envs do (SuperSuit's ``black_death`` steps so).
        """
        if self._last_obs is None:
            raise RuntimeError("call reset() before step()")
        if not self.agents:
            if isinstance(actions, Mapping) and not actions:
                return {}, {}, {}, {}, {}
            raise RuntimeError(
                f"every agent is done: call reset() to start a new episode (got actions for "
                f"{sorted(map(str, actions)) if isinstance(actions, Mapping) else actions!r})"
            )
        if not isinstance(actions, Mapping):
            raise ValueError(
                f"step takes a dict {{agent: action}} for the live agents {self.agents}, got "
                f"{type(actions).__name__}"
            )
        unknown = sorted(map(str, set(actions) - set(self.possible_agents)))
        if unknown:
            raise ValueError(f"unknown agents {unknown}; this env's are {self.possible_agents}")
        extra = sorted(set(actions) - set(self.agents))
        missing = [a for a in self.agents if a not in actions]
        if extra or missing:
            raise ValueError(
                f"step needs one action per live agent {self.agents}; "
                f"missing {missing}, not live {extra}"
            )
        try:
            batch = _stack(
                [actions.get(a, self._noop) for a in self.possible_agents],
                self.venv.config.dit.chunk_frames,
            )
        except (KeyError, IndexError, TypeError, ValueError) as err:
            raise self._blame(actions) or ActionError(f"actions do not stack: {err}") from err
        try:  # checked before the dead agents' rows restart: a refused step changes nothing
            self.venv.head.encode(batch, self.venv.num_envs, self.venv.config.dit.chunk_frames)
        except ActionError as err:
            blamed = self._blame(actions)
            if blamed is None:
                raise
            raise blamed from err
        if self._needs_reset.any():  # dead agents' rows: restart them, hidden from the agents
            dead = np.flatnonzero(self._needs_reset)
            if self.shared_memory:  # what they saw stays in the bank for the live agents
                self.venv.hand_over_memory(dead)
            self.venv.reset(options={"env_idx": dead, **_rows_of(self._start, dead)})
            self._needs_reset[:] = False
        obs, rewards, terminated, truncated, infos = self.venv.step(batch)
        live = [(a, self._rows[a]) for a in self.agents]
        rows = [i for _, i in live]
        obs_lib.put(self._last_obs, rows, obs_lib.take(obs, rows))
        self._keep_frames(rows)
        self._needs_reset = np.asarray(terminated, bool) | np.asarray(truncated, bool)
        if self.venv.memory and self._needs_reset.any():
            # A dead agent's hidden row idles on: what it generates is no one's view.
            self.venv.set_memory(None, np.flatnonzero(self._needs_reset), store=False)
        self.agents = [a for a, i in live if not self._needs_reset[i]]
        return (
            {a: obs_lib.take(obs, i) for a, i in live},
            {a: float(rewards[i]) for a, i in live},
            {a: bool(terminated[i]) for a, i in live},
            {a: bool(truncated[i]) for a, i in live},
            {a: obs_lib.info_row(infos, i) for a, i in live},
        )

    def _keep_frames(self, rows: list[int]) -> None:
        """Keep the last frame of ``rows``, the agents of a step (every agent at a reset).

        With ``"human"``, show the agents' frames as the vector env drew them in the window,
        every other agent's (done) kept frame in its place.
        """
        if self.render_mode == "rgb_array":
            frames = np.stack(cast(tuple, self.venv.render()))  # the vector env renders too
            if self._frames is None:
                self._frames = frames
            self._frames[rows] = frames[rows]
            return
        if self._window is None or self._window.drawn is None:  # no window, or closed by
            return  # its user: the vector env draws nothing
        drawn, fps = self._window.drawn  # (B, T, H, W, 3), every row (hidden ones included)
        self._window.drawn = None
        if self._frames is not None:
            done = np.setdiff1d(np.arange(len(self.possible_agents)), rows)
            drawn[done] = self._frames[done, None]
        self._frames = drawn[:, -1].copy()
        self._window.show(tile(drawn), fps)

    def render(self) -> np.ndarray | None:
        """The frame of the first live agent (else ``agent_0``'s last), uint8 ``(H, W, 3)``.

        None with ``"human"``, whose window :meth:`reset` and :meth:`step` draw themselves.
        """
        if self.render_mode is None:
            gym.logger.warn("render() needs render_mode='rgb_array'; returning None")
            return None
        if self.render_mode == "human" or self._frames is None:
            return None
        row = self._rows[self.agents[0]] if self.agents else 0
        return self._frames[row].copy()

    def state(self) -> Any:
        """Global state: every agent's latest observation stacked (a dead agent's is frozen)."""
        if self._last_obs is None:
            raise RuntimeError("call reset() before state()")
        return obs_lib.copy(self._last_obs)

    def get_state(self) -> dict[str, Any]:
        """Copy of the episode's full state: the vector env's and who is live.

        :meth:`set_state` restores it, into this env or another made alike; rewinding
        ``env.venv`` alone would leave the live agents, ``state()`` and the hidden restarts of
        the agents done since as they are now.
        """
        if self._last_obs is None:
            raise RuntimeError("call reset() before get_state()")
        return {
            "venv": self.venv.get_state(),
            "agents": list(self.agents),
            "needs_reset": self._needs_reset.copy(),
            "last_obs": obs_lib.copy(self._last_obs),
            "frames": None if self._frames is None else self._frames.copy(),
            "start": dict(self._start),
            "start_rng": self._start_rng.bit_generator.state,
        }

    def set_state(self, state: dict[str, Any]) -> None:
        """Restore :meth:`get_state` output; a state that does not fit changes nothing."""
        keys = {"venv", "agents", "needs_reset", "last_obs", "frames", "start", "start_rng"}
        if not isinstance(state, dict) or set(state) != keys:
            raise ValueError(f"state must be what get_state() returns (keys {sorted(keys)})")
        agents, needs_reset = state["agents"], np.asarray(state["needs_reset"])
        n = len(self.possible_agents)
        if not isinstance(agents, list) or any(a not in self.possible_agents for a in agents):
            raise ValueError(
                f"state of other agents: {agents!r} (this env's are {self.possible_agents})"
            )
        if needs_reset.shape != (n,) or needs_reset.dtype != bool:
            raise ValueError(
                f"state['needs_reset'] must be a ({n},) bool array, one flag per possible "
                f"agent, got {needs_reset.dtype} of shape {needs_reset.shape}"
            )
        self._check_start(state["start"], state["frames"])
        with warnings.catch_warnings():  # a Box asked of a dict warns that it casts it
            warnings.simplefilter("ignore")
            fits = self.state_space.contains(state["last_obs"])
        if not fits:
            raise ValueError(
                "state of another observation: its last observations are not in this env's "
                f"state_space {self.state_space}"
            )
        start_rng = rng_from_state(state["start_rng"])  # checked before anything changes
        self.venv.set_state(state["venv"])
        self.agents = list(agents)
        self._needs_reset = needs_reset.astype(bool)
        self._last_obs = obs_lib.copy(state["last_obs"])
        frames = state["frames"]
        if self.render_mode is None:  # a state of a rendering env keeps no frames here
            self._frames = None
        elif frames is None:  # one of an env that did not render: a copy of the rows' frames
            self._frames = state["venv"]["frames"][:, -1].to("cpu", copy=True).numpy()
        else:
            self._frames = np.array(frames)
        self._start, self._start_rng = dict(state["start"]), start_rng

    def _check_start(self, start: Any, frames: Any) -> None:
        """Refuse a state's reset options or rendered frames that this env could not have kept."""
        known = world_reset_options(self.venv.world.pose)
        if not isinstance(start, Mapping) or not set(start) <= set(known):
            raise ValueError(
                f"state['start'] must be a dict of reset options {known} (the ones the dead "
                f"agents restart from), got {start!r:.120}"
            )
        try:
            self.venv.check_reset_options(start, len(self.possible_agents))
        except ValueError as err:
            raise ValueError(f"state['start'] does not start this env's agents: {err}") from None
        size = self.venv.config.vae.image_size
        shape = (len(self.possible_agents), size, size, 3)
        if frames is not None and (
            not isinstance(frames, np.ndarray) or frames.shape != shape or frames.dtype != np.uint8
        ):
            raise ValueError(
                f"state['frames'] must be None or uint8 of shape {shape} (the agents' last "
                f"frames), got {frames!r:.80}"
            )

    def close(self) -> None:
        """Close the vector env and release the model; calling it again does nothing."""
        if not self.venv.closed:
            self.venv.close()


class _AgentsWindow(Window):
    """The window of a parallel env in ``"human"`` mode, which its vector env draws into.

    Given to the vector env by :meth:`WorldModelVectorEnv.set_window`, in place of its own.

    The vector env draws every row, the hidden rows of done agents included: a draw is kept
    here (``drawn``: the frames and their rate) for the parallel env, which shows it after its
    reset or step with each done agent's last frame in that agent's place.
    """

    drawn: tuple[np.ndarray, float] | None = None

    def show_rows(self, frames: np.ndarray, fps: float) -> None:
        """Keep the vector env's draw of its rows ``(B, T, H, W, 3)`` (see the class)."""
        self.drawn = (frames, fps)


def parallel_env(env_id: str = "WorldModel-CityWalk-v0", **kwargs: Any) -> WorldModelParallelEnv:
    """A :class:`WorldModelParallelEnv` (PettingZoo's module-level name for the parallel API)."""
    return WorldModelParallelEnv(env_id, **kwargs)


def env(env_id: str = "WorldModel-CityWalk-v0", **kwargs: Any) -> AECEnv:
    """The same agents under PettingZoo's AEC API (one agent acts at a time; steps batch).

    Each agent's action is checked when that agent gives it: a bad one raises naming the
    agent, who is still the one to act (the actions given before it are kept).
    """
    return OrderEnforcingWrapper(_CheckedAEC(WorldModelParallelEnv(env_id, **kwargs)))


class _CheckedAEC(parallel_to_aec_wrapper):
    """PettingZoo's AEC form of a parallel env, checking each agent's action as it is given.

    PettingZoo's own form (``parallel_to_aec``) keeps the actions until the cycle's last agent
    acts and steps the parallel env then: an earlier agent's bad action raised at another
    agent's turn, and stayed in the cycle, which could not go on.
    """

    env: WorldModelParallelEnv

    def step(self, action: Any) -> None:
        """Check the selected agent's action (a done agent's is None), then take it."""
        agent = self.agent_selection
        if not (self.terminations[agent] or self.truncations[agent]):
            self.env.check_action(agent, action)
        super().step(action)


def _rows_of(options: dict[str, Any], rows: np.ndarray) -> dict[str, Any]:
    """Reset options given for every agent, cut to ``rows`` (one-for-all values kept whole)."""
    per_row_ndim = {"image": 4, "frames": 5, "speed": 1, "heading": 1}
    out = {}
    for key, value in options.items():
        if isinstance(value, (list, tuple)) and np.ndim(value[0]) == per_row_ndim[key] - 1:
            out[key] = [value[i] for i in rows]  # pictures of different sizes
        elif np.ndim(value) == per_row_ndim[key]:
            out[key] = np.asarray(value)[rows]
        else:
            out[key] = value
    return out


def _stack(actions: list[Any], frames: int) -> Any:
    """Per-agent actions -> one batched action (dict actions entry by entry).

    Where some agents give one action for the step and others one per frame (``frames`` of
    them), the step's are repeated over its frames, as the env reads them.
    """
    if isinstance(actions[0], dict):
        return {k: _stack([a[k] for a in actions], frames) for k in actions[0]}
    rows = [a if isinstance(a, torch.Tensor) else np.asarray(a) for a in actions]
    shapes = [tuple(a.shape) for a in rows]
    longest = max(len(shape) for shape in shapes)
    if {len(shape) for shape in shapes} == {longest - 1, longest}:  # per step beside per frame
        rows = [_per_frame(a, frames) if a.ndim < longest else a for a in rows]
    if any(isinstance(a, torch.Tensor) for a in rows):  # the vector env reads tensors itself
        tensors = [torch.as_tensor(a) for a in rows]
        if len({a.shape for a in tensors}) == 1:
            return torch.stack([a.detach().to(tensors[0].device) for a in tensors])
    elif len({a.shape for a in rows}) == 1:
        return np.stack(rows)
    raise ValueError(f"agents' actions have different shapes {shapes}")


def _per_frame(action: Any, frames: int) -> Any:
    """One step's action (an array or tensor) repeated over the step's ``frames``."""
    if isinstance(action, torch.Tensor):
        return action.unsqueeze(0).expand(frames, *action.shape)
    return np.repeat(action[None], frames, axis=0)
