"""The simulator a world was trained on, behind that world's env interface (ground truth).

``gym.make("Simulator-Driving-v0")`` is highway-env, ``gym.make("Simulator-CityWalk-v0")``
MiniWorld and ``gym.make("Simulator-Robot-v0")`` robosuite (in its own venv, through the
source's worker process), each driven exactly as the episodes the world learned from were
recorded (:mod:`gym_worldmodel.sources.highway`, ``.miniworld``, ``.robosuite_source``), with the
world env's action and observation spaces, step length (one action held for a step's
``chunk_frames`` simulator frames), start-relative ``info["pose"]``, reward, termination and
initial-conditions hooks. A policy, a reward and a training script written for
``WorldModel-Driving-v0`` run here unchanged, so the same agent can be trained or scored in the
world and in the real simulator side by side. Needs the ``simulators`` extra. One simulator per
env: ``gym.make_vec(id, n, vectorization_mode="async")`` runs ``n`` of them in processes.
"""

from __future__ import annotations

import copy
import importlib.util
import math
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium.utils import seeding

from gym_worldmodel.envs import hooks as hook_lib
from gym_worldmodel.envs import observations as obs_lib
from gym_worldmodel.envs.actions import CameraHead, batch_one
from gym_worldmodel.envs.options import (
    check_choice,
    check_seed,
    initial_conditions,
    rng_from_state,
    start_options,
    step_limit,
)
from gym_worldmodel.envs.pose import wrap_deg
from gym_worldmodel.envs.state import check_state
from gym_worldmodel.envs.window import Window
from gym_worldmodel.envs.worlds import get_world, model_config

#: world -> (the simulator its episodes were recorded in, the module it needs in this process;
#: robosuite runs in its own venv, which its source checks)
SIMULATORS = {
    "driving": ("highway-env", "highway_env"),
    "citywalk": ("miniworld", "miniworld"),
    "robot": ("robosuite", None),
}


#: The env's own part of an episode's state (beside the simulator's): state key -> attribute.
_EPISODE = {
    "origin": "_origin",
    "frames": "_frames",
    "pose": "_pose",
    "steps": "_steps",
    "blocked": "_blocked",
    "done": "_done",
}


class SimulatorEnv(gym.Env):
    """A world's simulator as a Gymnasium env with the world env's interface.

    Description:
        ``world="driving"``: highway-env's ``highway-fast-v0`` (traffic included), the 64 x 64
        top-down view centred on the ego car. ``world="citywalk"``: MiniWorld's
        ``MiniWorld-Sidewalk-v0``, the 64 x 64 first-person view, the camera moved by setting
        its pose (MiniWorld's collision test stops moves into walls). ``env_name`` picks
        another map of the same simulator: any MiniWorld map; for driving a highway-env id
        whose road runs straight along +x (``highway-v0``, ``highway-fast-v0``), which the
        pose's "heading 0 along the road" and lateral ``y`` assume. ``world="robot"``:
        robosuite's ``Lift`` with the Panda arm under the OSC_POSE controller, the fixed
        ``sideview`` camera, run by robosuite's own venv (``$GYM_WORLDMODEL_ROBOSUITE_PYTHON``;
        see :mod:`gym_worldmodel.sources.robosuite_source`); no pose.

    Action Space:
        The world env's (``action_mode`` as there): camera keys or look rates; driving
        (steering, acceleration) as fractions of 30 degrees and 3 m/s^2; the robot's RT-1
        action (flat or dict), sent as OSC_POSE inputs. One action is held
        for the ``chunk_frames`` (3) simulator frames of a step, as the world generates them.

    Observation Space:
        The world env's ``obs_mode``: ``"rgb"`` (the last frame), ``"chunk"`` (the step's
        frames), each with ``"+pose"``. ``"latent"`` is the world's own encoding and is not
        offered here. Driving's speed stays in the world's [0, 40] m/s (highway-env alone
        would reverse a braking car).

    Rewards / Episode End:
        The hooks (``reward_fn``, ``termination_fn``) are called with the same arguments as in
        the world env (frames, encoded actions, poses, step, effort), batched as one row.
        Driving: a crash ends the episode (``terminated``) unless ``crash_ends=False``;
        ``info["crashed"]`` says whether the car has crashed. City walk: ``info["blocked"]``
        says a move of the step ran into a wall. ``max_episode_steps`` truncates
        (``gym.make`` adds a ``TimeLimit`` of 200 steps).

    Starting State:
        The simulator's reset, seeded from the env's ``np_random``; the pose starts at zero
        (driving: along the road at 25 m/s, highway-env's start) and is relative to it, as the
        world env's is. Driving takes ``reset(options={"speed": v, "heading": h})`` and
        ``start_fn`` as the world env does; a start picture (``image``/``frames``) is refused:
        the simulator draws its own scene.

    Arguments:
        world: ``"driving"``, ``"citywalk"`` or ``"robot"``.
        action_mode, obs_mode, max_episode_steps, render_mode, reward_fn, termination_fn,
            start_fn: As :class:`gym_worldmodel.envs.WorldModelVectorEnv`.
        env_name: The simulator's env id, for the robot a robosuite task (``Stack``, ...); None:
            the one the world was trained on.
        crash_ends: Driving only (ignored elsewhere: nothing to crash): end the episode when
            the car crashes; False drives on (highway-env brakes a crashed car).

    ``render_mode="human"`` shows the simulator's frames in the world env's pygame window (the
    ``play`` extra): a step's frames in turn at the world's frame rate, :meth:`render` None,
    :meth:`close` closes it. Hooks get their tensors on the CPU (the world env gives them on
    its device).
    """

    metadata = {"render_modes": ["human", "rgb_array"], "render_fps": 5}
    # assigned later too (env.reward_fn = hook), each is checked as at make
    reward_fn = hook_lib.CheckedHook()
    termination_fn = hook_lib.CheckedHook()
    start_fn = hook_lib.CheckedHook()

    def __init__(
        self,
        world: str = "driving",
        *,
        action_mode: str | None = None,
        obs_mode: str = "rgb",
        max_episode_steps: int | None = None,
        render_mode: str | None = None,
        reward_fn: hook_lib.Hook | list[hook_lib.Hook] | None = None,
        termination_fn: hook_lib.Hook | list[hook_lib.Hook] | None = None,
        start_fn: hook_lib.StartHook | None = None,
        env_name: str | None = None,
        crash_ends: bool = True,
    ) -> None:
        if world not in SIMULATORS:
            raise ValueError(f"world must be one of {sorted(SIMULATORS)}, got {world!r}")
        check_choice("render_mode", render_mode, (None, "human", "rgb_array"))
        self.world = get_world(world)
        # (pygame imported now: without it, making the env is what fails)
        self._window = (
            Window(f"gym-worldmodel {world} simulator") if render_mode == "human" else None
        )
        self.frames_mode, self.pose_obs = obs_lib.parse_obs_mode(obs_mode, self.world.pose)
        if self.frames_mode == "latent":
            raise ValueError(
                "obs_mode 'latent' is the world model's encoding; the simulator gives frames: "
                "use 'rgb' or 'chunk' (with '+pose' if wanted)"
            )
        self.head = self.world.action_head(action_mode)
        self.config = model_config(self.world, None)  # frame size, frames per step, fps
        self.frames_per_step = self.config.dit.chunk_frames
        self.max_episode_steps = step_limit("max_episode_steps", max_episode_steps)
        self.render_mode, self.crash_ends = render_mode, crash_ends
        self.reward_fn, self.termination_fn, self.start_fn = reward_fn, termination_fn, start_fn
        self._env_name, self._source = env_name, None  # made on first use (see source)
        self._check_installed()
        self.metadata = {
            **self.metadata,
            "render_fps": self.config.fps / self.frames_per_step,
            "world_fps": self.config.fps,
        }
        max_speed = self.head.max_speed  # driving: the world's speed range
        self.observation_space = obs_lib.observation_space(
            self.frames_mode, self.pose_obs, self.config, self.world.pose, max_speed
        )
        self.action_space = self.head.space
        self._act_kwargs = {} if max_speed is None else {"max_speed": max_speed}
        self._frames: np.ndarray | None = None  # (F, H, W, 3) the last step's frames
        self._origin: np.ndarray | None = None  # the start's absolute pose (4,)
        self._pose: np.ndarray | None = None  # the pose relative to the start (4,)
        self._steps, self._blocked, self._done = 0, False, False

    def _check_installed(self) -> None:
        """A clear ImportError now, rather than at the first reset, if the simulator is missing."""
        package, module = SIMULATORS[self.world.name]
        if module is None:  # robosuite: its source checks its venv (and starts no process yet)
            self._source = self._make_source()
        elif importlib.util.find_spec(module) is None:
            raise ImportError(
                f"Simulator-* ids of the {self.world.name} world need {package} (module "
                f"{module}): pip install gym-worldmodel[simulators]"
            )

    @property
    def source(self) -> Any:
        """The episode source that steps the simulator, made on first use.

        Not in the constructor: ``AsyncVectorEnv`` builds one env in the parent process to read
        the spaces before it forks its workers, and an OpenGL context made there (MiniWorld's)
        would hang the forked children.
        """
        if self._source is None:
            self._source = self._make_source()
        return self._source

    def _make_source(self) -> Any:
        size = self.config.vae.image_size
        kwargs: dict[str, Any] = {} if self._env_name is None else {"env_name": self._env_name}
        if self.world.name == "driving":
            from gym_worldmodel.sources.highway import HighwaySource

            return HighwaySource(size=size, **kwargs)
        if self.world.name == "robot":
            from gym_worldmodel.sources.robosuite_source import RobosuiteSource

            return RobosuiteSource(size=size, task=self._env_name or "Lift")
        from gym_worldmodel.sources.miniworld import MiniWorldSource

        head = self.head
        assert isinstance(head, CameraHead)  # (the camera worlds' head)
        return MiniWorldSource(size=size, move_m=head.move_m, turn_deg=head.turn_deg, **kwargs)

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        """Reset the simulator from a seed drawn from ``np_random``; options as described.

        Everything is checked and drawn on a copy of the generator first: a refused reset
        leaves the env, its generator included, as it was.
        """
        check_seed(seed)
        options = dict(options or {})
        _refuse_pictures(options, "reset options")
        frames, start = self._start_options(options, 1)
        if seed is not None:
            rng, rng_seed = seeding.np_random(seed)
        else:
            rng, rng_seed = rng_from_state(self.np_random.bit_generator.state), self.np_random_seed
        if self.start_fn is not None:
            parse = self._start_fn_options
            frames, start = initial_conditions(self.start_fn, [rng], parse, frames, start)
        sim_seed = int(rng.integers(2**31 - 1))
        if self._window is not None:  # before the simulator's own pygame use finds none
            self._window.open_display()
        if self.world.name == "driving":
            speed, heading = (float(start[c][0]) if c in start else None for c in (3, 2))
            frame, pose = self.source.start(sim_seed, speed=speed, heading_deg=heading)
            origin: np.ndarray | None = np.array([pose[0], pose[1], 0.0, 0.0])
        else:
            frame, pose = self.source.start(sim_seed)
            origin = None if pose is None else np.array([pose[0], pose[1], pose[2], 0.0])
        self._np_random, self._np_random_seed = rng, rng_seed  # as gym.Env.reset sets them
        self._origin, self._frames = origin, np.repeat(frame[None], self.frames_per_step, 0)
        self._pose, self._steps, self._blocked, self._done = self._relative(pose), 0, False, False
        self._show(self._frames[-1:])  # the start, for a step's time
        return self._obs(), self._info()

    def step(self, action: Any):
        """Hold ``action`` for one step's simulator frames; rewards from the hooks."""
        if self._frames is None:
            raise RuntimeError("call reset() before step()")
        if self._done:
            raise RuntimeError("the episode is over (terminated or truncated): call reset()")
        vec = self.head.encode(batch_one(action), 1, self.frames_per_step)  # (1, F, w), checked
        prev_frame, prev_pose = self._frames[-1], self._pose
        frames, pose, self._blocked = [], None, False
        for k in range(self.frames_per_step):
            frame, pose = self.source.act(vec[0, k], **self._act_kwargs)
            frames.append(frame)
            self._blocked |= bool(getattr(self.source, "blocked", False))
        self._frames, self._pose = np.stack(frames), self._relative(pose)
        self._steps += 1
        rewards, ended = self._judge(prev_frame, vec, prev_pose)
        crashed = bool(getattr(self._source, "crashed", False))
        terminated = bool(ended[0] or (crashed and self.crash_ends))
        truncated = self.max_episode_steps is not None and self._steps >= self.max_episode_steps
        self._done = terminated or bool(truncated)
        self._show(self._frames)
        return self._obs(), float(rewards[0]), terminated, bool(truncated), self._info()

    def render(self) -> np.ndarray | None:
        """The current frame with ``"rgb_array"``; None in ``"human"`` mode (the window's)."""
        if self.render_mode != "rgb_array" or self._frames is None:
            return None
        return self._frames[-1].copy()

    def close(self) -> None:
        """Close the window and the simulator; calling it again does nothing."""
        if self._window is not None:
            self._window.close()
        if self._source is not None:
            self._source.close()
            self._source, self._frames = None, None

    def idle_action(self) -> Any:
        """The do-nothing action (no key; straight on at the same speed; no motion, arm mode).

        ``gymnasium.utils.play.play(env, fps=5, noop=env.unwrapped.idle_action())`` plays it
        while no key is held (its default ``noop=0`` is not an action of these spaces).
        """
        return self.head.idle_action()

    def get_keys_to_action(self) -> dict[str, Any]:
        """Keyboard controls for ``gymnasium.utils.play.play``: the world env's, the same keys."""
        return self.head.keys_to_action()

    # --- state for planners ----------------------------------------------------------------------

    def get_state(self) -> dict[str, Any]:
        """A copy of the episode's state, the simulator's included, for :meth:`set_state`.

        Planning with the simulator itself, as with the world env's ``get_state``/``set_state``:
        take the state, try a plan, set it back, try the next. It holds the simulator's state
        (MiniWorld's seed and camera pose; a copy of highway-env's road; robosuite's MuJoCo
        state, gripper actions and clock, from its worker process), the env's frames, pose,
        step count and flags, and its generator (a later ``reset()`` draws the same episode).
        """
        if self._frames is None:
            raise RuntimeError("call reset() before get_state()")
        episode = {key: getattr(self, attr) for key, attr in _EPISODE.items()}
        return {
            "world": self.world.name,
            "source": self.source.get_state(),
            "np_random": self.np_random.bit_generator.state,
            **copy.deepcopy(episode),
        }

    def set_state(self, state: dict[str, Any]) -> None:
        """Restore a state from :meth:`get_state` (of this world's simulator; it stays reusable).

        The state is checked first: one of another world, map or frame size, or a malformed
        one, is a ``ValueError`` naming what differs, and changes nothing. Into an env made by
        ``gym.make`` that was never reset, call it on ``env.unwrapped`` and step that
        (Gymnasium's order check refuses a step before the first ``reset()``), and make the env
        with ``max_episode_steps=-1``: ``TimeLimit`` counts steps outside the state.
        """
        if not isinstance(state, dict) or "source" not in state:
            raise ValueError(f"state must be what {self.spec_name}.get_state() returns")
        own = {k: v for k, v in state.items() if k != "source"}
        check_state(own, self._state_template(), where="state")
        try:
            rng = rng_from_state(state["np_random"])
        except (TypeError, ValueError, OverflowError) as err:
            raise ValueError(f"state['np_random'] is not a generator's state: {err}") from err
        self.source.set_state(state["source"])  # checks its own part before changing anything
        for key, attr in _EPISODE.items():
            setattr(self, attr, copy.deepcopy(state[key]))
        self._np_random = rng

    def _state_template(self) -> dict[str, Any]:
        """What a state of this env looks like, less the simulator's part (its source checks it)."""
        size = self.config.vae.image_size
        pose = None if self.world.pose is None else np.zeros(4)  # the robot's camera: no pose
        return {
            "world": self.world.name,
            "np_random": self.np_random.bit_generator.state,
            "origin": pose,
            "frames": np.zeros((self.frames_per_step, size, size, 3), np.uint8),
            "pose": pose,
            "steps": 0,
            "blocked": False,
            "done": False,
        }

    def _start_options(self, options: dict, n: int):
        """Reset options as the world env reads them: ``(start chunks or None, pose columns)``.

        A start picture is refused (the simulator draws its own scene), and so is any option
        the world env would not take either.
        """
        known = {"speed", "heading"} if self.world.pose == "driving" else set()
        unknown = sorted(set(options) - known - {"image", "frames"})
        if unknown:
            raise ValueError(
                f"unknown reset options {unknown}; {self.spec_name} takes {sorted(known) or 'none'}"
            )
        speed = self.head.max_speed
        return start_options(options, n, self.config, self.world.pose, speed)

    def _start_fn_options(self, options: dict, n: int):
        """``start_fn``'s return, read as reset options are (a start picture named as its)."""
        _refuse_pictures(options, "start_fn's options")
        return self._start_options(options, n)

    @property
    def spec_name(self) -> str:
        """The env's registered id (or its class, made directly)."""
        return self.spec.id if self.spec is not None else f"SimulatorEnv({self.world.name!r})"

    def _relative(self, pose: np.ndarray | None) -> np.ndarray | None:
        """An absolute simulator pose in the env's frame: the start at the origin, its yaw 0."""
        if pose is None:  # the robot's fixed camera
            return None
        assert self._origin is not None  # (a start with a pose set it)
        rel = pose - self._origin
        if self.world.pose == "camera":  # rotate into the start's heading
            c, s = math.cos(math.radians(self._origin[2])), math.sin(math.radians(self._origin[2]))
            rel[:2] = (c * rel[0] + s * rel[1], -s * rel[0] + c * rel[1])
            rel[2] = wrap_deg(rel[2])
        return rel

    def _judge(self, prev_frame: np.ndarray, vec: np.ndarray, prev_pose: np.ndarray | None):
        """The hooks on this step, with the world env's arguments for one row."""

        def arguments() -> tuple:
            assert self._frames is not None  # (a step set them)
            frames = (torch.from_numpy(f[None].copy()) for f in (prev_frame, self._frames[-1]))
            steps, effort = np.array([self._steps]), self.head.effort(vec)
            pose, prev = (None if p is None else p[None] for p in (self._pose, prev_pose))
            return hook_lib.arguments(next(frames), vec, next(frames), pose, prev, steps, effort)

        ends = self.head.ends_episode(vec)
        return hook_lib.judge(self.reward_fn, self.termination_fn, arguments, 1, ends)

    def _show(self, frames: np.ndarray) -> None:
        """Draw frames ``(T, H, W, 3)`` in the window (human mode), in a step's time."""
        if self._window is not None:
            self._window.show(frames, self.metadata["render_fps"] * len(frames))

    def _obs(self) -> Any:
        assert self._frames is not None  # (a reset or step set them)
        frames = self._frames[-1] if self.frames_mode == "rgb" else self._frames
        frames = frames.copy()
        if not self.pose_obs:
            return frames
        assert self._pose is not None  # (pose_obs: the world has poses)
        pose = self._pose.astype(np.float32)
        return obs_lib.with_pose(self.observation_space, self.frames_mode, frames, pose)

    def _info(self) -> dict[str, Any]:
        info: dict[str, Any] = {"step": self._steps}
        if self._pose is not None:
            info["pose"] = self._pose.copy()
        if self.world.name == "driving":
            info["crashed"] = bool(self.source.crashed)
        elif self.world.name == "citywalk":
            info["blocked"] = self._blocked
        return info


def _refuse_pictures(options: Any, where: str) -> None:
    """A simulator draws its own scene: a start picture is refused, naming where it came from."""
    given = sorted({"image", "frames"} & set(options)) if isinstance(options, dict) else []
    if given:
        raise ValueError(
            f"{where} give {given}, but a simulator draws its own scene: a start picture "
            "starts only a world model (WorldModel-* ids)"
        )
