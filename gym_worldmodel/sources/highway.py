"""highway-env (top-down 2-D highway traffic) as a driving-modality episode source.

The ego vehicle is driven by ``envs.actions.DrivingHead`` actions, (steering fraction of 30
degrees, positive = left; acceleration fraction of 3 m/s^2), mapped onto highway-env's
``ContinuousAction`` configured with ``steering_range = +-30 deg`` and
``acceleration_range = +-3 m/s^2``. highway-env orders its action (acceleration, steering) and
works in screen coordinates (y down, heading clockwise on screen), so one model action
``(s, a)`` is sent as ``(a, -s)``. Simulation and policy frequency are both 15 Hz: one env step is
one simulator step is one recorded frame (``fps`` 15).

Coordinates, ours against highway-env's:
    our x = x_hw, our y = -y_hw, our heading_deg = -degrees(heading_hw) wrapped to [-180, 180)
    (counter-clockwise from +x in a y-up frame, so a positive steering action increases it),
    our speed_mps = vehicle speed. Recorded poses are read back from the simulator.

Frames are ``env.render()`` at the configured native screen size (``size`` x ``size``), the
view centred on the ego vehicle at 2 px per metre (a 32 m square around the car).

Crashes: highway-env ends an episode when the ego vehicle crashes, and a crashed vehicle's
actions are overridden (it brakes to a halt), so a crash cannot simply be driven through. The
time limit is disabled (``duration`` is effectively infinite) and off-road driving does not end
an episode, so a crash is the only early end. When one happens, the rollout is restarted from
scratch with reset seed ``seed + 10_000 * k`` and policy RNG ``default_rng([seed, k])`` for
attempt ``k = 1, 2, ...``; the returned episode keeps ``seed`` (the collection index), and
``last_attempt`` tells which attempt it came from (``replay(seed, actions, attempt)``).

Behaviour policies (all randomness from ``np.random.default_rng([seed, attempt])``):
    ``"random"``    smooth random steering and acceleration (targets held 3-20 frames, low-pass
                    filtered), a weak pull towards the nearest lane centre so the car wanders
                    across lanes but stays on the road, braking for a close car ahead, and a
                    speed guard keeping 6-33 m/s.
    ``"lanekeep"``  a lane-following controller with random target speeds (braking phases
                    included), car following, and lane changes to the left or right when the
                    gap in the target lane is safe.
    ``"mixed"``     the default: one of the two, drawn per episode.
"""

from __future__ import annotations

import copy
import math
import os
from collections.abc import Callable
from typing import Any

import numpy as np

from gym_worldmodel.envs.actions import DrivingHead
from gym_worldmodel.envs.pose import POSE_FIELDS, wrap_deg
from gym_worldmodel.memory.spatial import DRIVING_VIEW_M
from gym_worldmodel.sources.episodes import Episode

POLICIES = ("random", "lanekeep", "mixed")
_INSTALL_HINT = "pip install gym-worldmodel[simulators]"
MAX_STEER_RAD = math.radians(DrivingHead().max_steer_deg)  # the world's action bounds
MAX_ACCEL = DrivingHead().max_accel
FPS = 15
SEED_STRIDE = 10_000  # reset seed of restart attempt k: seed + SEED_STRIDE * k
MAX_ATTEMPTS = 50
_KP_LATERAL = 1.0 / 0.6  # [1/s] lateral position -> lateral speed
_KP_HEADING = 1.0 / 0.25  # [1/s] heading error -> heading rate


def _import_highway_env() -> Any:
    """Import highway_env, or fail with an install hint."""
    try:
        import highway_env
    except ImportError as err:
        raise ImportError(
            f"HighwaySource needs the highway-env simulator (highway-env): {_INSTALL_HINT}"
        ) from err
    return highway_env


def _start_display() -> None:
    """Start pygame's display for highway-env's viewer, leaving ``SDL_VIDEODRIVER`` as it was.

    The viewer starts the display itself and draws off screen on any driver (it opens no
    window), so it is started here first on the driver SDL picks: a desktop's own, on which a
    window opened later in the process (``render_mode="human"``) is shown; SDL's off-screen one
    where there is no display. Only an SDL that finds no driver at all is asked for the
    off-screen one, for this one start: the variable left set would hide every later window.
    Not SDL's dummy driver: highway-env draws black frames under it.
    """
    import pygame

    if pygame.display.get_init():  # a window's, or started before: the viewer keeps it
        return
    try:
        pygame.display.init()
    except pygame.error as err:
        if "SDL_VIDEODRIVER" in os.environ:  # the driver the user asked for is missing
            raise OSError(
                f"highway-env draws with pygame, whose display did not start on "
                f"SDL_VIDEODRIVER={os.environ['SDL_VIDEODRIVER']!r} ({err}): unset the "
                "variable, or set it to 'offscreen'"
            ) from err
        os.environ["SDL_VIDEODRIVER"] = "offscreen"
        try:
            pygame.display.init()
        finally:
            del os.environ["SDL_VIDEODRIVER"]


def _render(env: Any) -> np.ndarray:
    """``env.render()``, leaving the caption of a window open in this process as it was.

    highway-env's viewer, made at the first render, names the process's one pygame window
    "Highway-env" (its frames are drawn off screen, not in the window).
    """
    if env.unwrapped.viewer is not None:
        return env.render()
    import pygame

    shown = pygame.display.get_init() and pygame.display.get_surface() is not None
    caption = pygame.display.get_caption() if shown else ()
    frame = env.render()
    if caption:
        pygame.display.set_caption(*caption)
    return frame


def _wrap(angle: float) -> float:
    """Wrap an angle in radians to [-pi, pi)."""
    return (angle + math.pi) % (2.0 * math.pi) - math.pi


def _steer_to(world: Any, lane_index: Any, gain: float = 1.0) -> float:
    """highway-env steering angle (rad) that brings the ego vehicle onto the lane's centre."""
    v = world.vehicle
    lane = world.road.network.get_lane(lane_index)
    long, lat = lane.local_coordinates(v.position)
    speed = max(abs(v.speed), 1.0)
    lateral_speed = float(np.clip(-gain * _KP_LATERAL * lat, -3.0, 3.0))  # m/s
    heading_ref = lane.heading_at(long + speed / FPS) + math.asin(
        float(np.clip(lateral_speed / speed, -1.0, 1.0))
    )
    heading_rate = gain * _KP_HEADING * _wrap(heading_ref - v.heading)
    slip = math.asin(float(np.clip(v.LENGTH / 2 / speed * heading_rate, -1.0, 1.0)))
    return math.atan(2.0 * math.tan(slip))


def _gap(world: Any, lane_index: Any) -> tuple[float, float, float]:
    """(distance to the car ahead, its speed, distance to the car behind) in a lane."""
    v = world.vehicle
    lane = world.road.network.get_lane(lane_index)
    front, rear = world.road.neighbour_vehicles(v, lane_index)
    s = lane.local_coordinates(v.position)[0]
    ahead = lane.local_coordinates(front.position)[0] - s if front is not None else math.inf
    behind = s - lane.local_coordinates(rear.position)[0] if rear is not None else math.inf
    return ahead, (front.speed if front is not None else math.inf), behind


def _follow_accel(world: Any, lane_index: Any, target_speed: float) -> float:
    """Acceleration (m/s^2) towards ``target_speed``, braking for a close car ahead."""
    v = world.vehicle
    ahead, front_speed, _ = _gap(world, lane_index)
    safe = 8.0 + 1.0 * max(v.speed, 0.0)  # metres: about a one-second gap plus a car
    if ahead < safe:
        target_speed = min(target_speed, front_speed - 2.0 * (safe - ahead) / safe * 5.0)
    return float(np.clip(0.8 * (target_speed - v.speed), -MAX_ACCEL, MAX_ACCEL))


def _to_model(steer_rad: float, accel: float) -> np.ndarray:
    """highway-env (steering rad, acceleration m/s^2) -> our DrivingHead fractions."""
    action = np.array([-steer_rad / MAX_STEER_RAD, accel / MAX_ACCEL], np.float32)
    return np.clip(action, -1.0, 1.0)


class _RandomPolicy:
    """Smooth random steering and acceleration with persistence; stays on the road."""

    def __init__(self, rng: np.random.Generator) -> None:
        self.rng = rng
        self.hold = 0
        self.steer_target = self.accel_target = 0.0
        self.steer = self.accel = 0.0

    def __call__(self, world: Any) -> np.ndarray:
        rng, v = self.rng, world.vehicle
        if self.hold <= 0:
            self.hold = int(rng.integers(3, 21))
            self.steer_target = float(rng.uniform(-0.2, 0.2)) * MAX_STEER_RAD
            self.accel_target = float(rng.choice((-1.0, -0.4, 0.0, 0.4, 1.0))) * MAX_ACCEL
        self.hold -= 1
        self.steer += 0.3 * (self.steer_target - self.steer)
        self.accel += 0.3 * (self.accel_target - self.accel)
        lane_index = world.road.network.get_closest_lane_index(v.position, v.heading)
        steer = self.steer + _steer_to(world, lane_index, gain=0.35)
        accel = self.accel
        if v.speed < 6.0:
            accel = max(accel, 0.5 * MAX_ACCEL)
        elif v.speed > 33.0:
            accel = min(accel, -0.5 * MAX_ACCEL)
        accel = min(accel, _follow_accel(world, lane_index, math.inf))
        return _to_model(steer, accel)


class _LaneKeepPolicy:
    """Lane following with random target speeds and safe lane changes to either side."""

    def __init__(self, rng: np.random.Generator) -> None:
        self.rng = rng
        self.lane_index: Any = None
        self.speed_hold = 0
        self.target_speed = 25.0
        self.change_in = int(rng.integers(15, 60))

    def __call__(self, world: Any) -> np.ndarray:
        rng, v = self.rng, world.vehicle
        network = world.road.network
        if self.lane_index is None:
            self.lane_index = network.get_closest_lane_index(v.position, v.heading)
        if self.speed_hold <= 0:
            self.speed_hold = int(rng.integers(15, 60))
            braking = rng.random() < 0.25
            self.target_speed = float(rng.uniform(8.0, 14.0) if braking else rng.uniform(18, 30))
        self.speed_hold -= 1
        self.change_in -= 1
        if self.change_in <= 0:
            self.change_in = int(rng.integers(20, 75))
            sides = list(network.side_lanes(self.lane_index))
            rng.shuffle(sides)
            for side in sides:
                ahead, _, behind = _gap(world, side)
                if ahead > 12.0 + 0.5 * v.speed and behind > 15.0:
                    self.lane_index = side
                    break
        steer = _steer_to(world, self.lane_index)
        accel = _follow_accel(world, self.lane_index, self.target_speed)
        current = network.get_closest_lane_index(v.position, v.heading)
        if current != self.lane_index:  # mid lane change: mind both lanes
            accel = min(accel, _follow_accel(world, current, self.target_speed))
        return _to_model(steer, accel)


def _make_policy(name: str, rng: np.random.Generator) -> Callable[[Any], np.ndarray]:
    if name == "mixed":
        name = str(rng.choice(("random", "lanekeep")))
    return _RandomPolicy(rng) if name == "random" else _LaneKeepPolicy(rng)


def _of_world(
    policy: Callable[[Any], np.ndarray],
) -> Callable[[Any, np.ndarray, np.ndarray], np.ndarray]:
    """``policy`` (of the world alone) as a ``_record`` policy of ``(world, frame, pose)``."""
    return lambda world, frame, pose: policy(world)


#: What changes while highway-env runs: its state (the rest is its configuration and viewer).
#: One deep copy keeps the vehicles on the road and the controlled ones the same objects.
_DYNAMIC = ("road", "controlled_vehicles", "time", "steps", "done", "np_random")


class HighwaySource:
    """Episodes of a highway-env env driven by DrivingHead actions under a behaviour policy.

    Args:
        env_name: A registered highway-env id (``highway-fast-v0``, ``highway-v0``, ...).
        size: Native square render size in pixels.
        policy: ``"random"``, ``"lanekeep"`` or ``"mixed"`` (see the module docstring).
    """

    def __init__(self, env_name: str = "highway-fast-v0", size: int = 64, policy: str = "mixed"):
        if policy not in POLICIES:
            raise ValueError(f"policy must be one of {POLICIES}, got {policy!r}")
        if size < 1:
            raise ValueError(f"size must be positive, got {size}")
        _import_highway_env()
        self.env_name, self.size, self.policy = env_name, int(size), policy
        self.info: dict[str, Any] = {
            "source": "highway",
            "world": "driving",
            "env_name": env_name,
            "modality": "driving",
            "frame_size": self.size,
            "fps": FPS,
            "action_width": 2,
            "pose_fields": list(POSE_FIELDS["driving"]),
            "policy": policy,
        }
        #: The restart attempt the last ``rollout`` episode came from (0: no crash).
        self.last_attempt = 0
        self._env: Any = None

    def _make(self) -> Any:
        if self._env is None:
            import gymnasium as gym

            _import_highway_env()
            _start_display()  # (the viewer's, started at the first render)
            config = {
                "action": {
                    "type": "ContinuousAction",
                    "steering_range": [-MAX_STEER_RAD, MAX_STEER_RAD],
                    "acceleration_range": [-MAX_ACCEL, MAX_ACCEL],
                },
                "simulation_frequency": FPS,
                "policy_frequency": FPS,
                "duration": 1e9,  # no time limit: the rollout decides the length
                "offroad_terminal": False,
                "screen_width": self.size,
                "screen_height": self.size,
                "centering_position": [0.5, 0.5],
                "scaling": self.size / DRIVING_VIEW_M,  # pixels a metre, as the world's
            }
            self._env = gym.make(self.env_name, render_mode="rgb_array", config=config)
        return self._env

    def close(self) -> None:
        """Close the simulator (a later rollout opens a new one).

        Its viewer is dropped, not closed: highway-env's viewer closes by quitting all of
        pygame, which would close a window another env has open in this process.
        """
        if self._env is not None:
            self._env.unwrapped.viewer = None
            self._env.close()
            self._env = None

    def rollout(self, seed: int, steps: int) -> Episode:
        """Reset with ``seed`` and record ``steps`` actions of the behaviour policy.

        A crash restarts the rollout (see the module docstring); ``last_attempt`` records which
        attempt the episode came from.
        """
        for attempt in range(MAX_ATTEMPTS):
            policy = _make_policy(self.policy, np.random.default_rng([int(seed), attempt]))
            seed_k = seed + SEED_STRIDE * attempt
            episode = self._record(seed_k, steps, _of_world(policy), stop_on_crash=True)
            if episode is not None:
                self.last_attempt = attempt
                return Episode(episode.frames, episode.actions, episode.poses, int(seed))
        raise RuntimeError(f"every one of {MAX_ATTEMPTS} rollouts from seed {seed} crashed")

    def replay(self, seed: int, actions: np.ndarray, attempt: int = 0) -> Episode:
        """Reset with ``seed`` (restart ``attempt``) and record the given actions ``(T, 2)``.

        ``replay(ep.seed, ep.actions, source.last_attempt)`` reproduces a rollout. A crash does
        not stop a replay: the simulator's crash behaviour shows in the frames and poses.
        """
        actions = np.asarray(actions, np.float32)
        if actions.ndim != 2 or actions.shape[1] != 2:
            raise ValueError(f"actions must be (T, 2) driving actions, got {actions.shape}")
        it = iter(actions)
        episode = self._record(
            seed + SEED_STRIDE * attempt,
            len(actions),
            lambda w, f, p: next(it),
            stop_on_crash=False,
        )
        assert episode is not None
        return Episode(episode.frames, episode.actions, episode.poses, int(seed))

    def start(
        self, seed: int, speed: float | None = None, heading_deg: float | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Reset the simulator with ``seed``: the first view and pose (then step with :meth:`act`).

        ``speed`` (m/s) and ``heading_deg`` (our convention: degrees counter-clockwise from the
        road's direction, +x) overwrite the ego car's after highway-env's reset (None keeps
        highway-env's: 25 m/s along the road).

        Returns:
            The view ``(size, size, 3)`` uint8 and the pose ``(x_m, y_m, heading_deg,
            speed_mps)`` float64, absolute (the env's pose is relative to the start).
        """
        env = self._make()
        env.reset(seed=int(seed))
        vehicle = env.unwrapped.vehicle
        if speed is not None:
            vehicle.speed = float(speed)
        if heading_deg is not None:
            vehicle.heading = -math.radians(float(heading_deg))  # highway-env's is clockwise
        return _render(env), self._pose(env.unwrapped)

    def act(
        self, action: np.ndarray, max_speed: float | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """One simulator step (one frame) under a DrivingHead action ``(2,)``, clipped to [-1, 1].

        ``max_speed`` (m/s): keep the car's speed in ``[0, max_speed]`` after the step, as the
        driving world's pose does (highway-env itself lets it reverse to -40 m/s and pass 40 by
        a little); None leaves highway-env's. Returns the view and pose after the step, as
        :meth:`start`. After a crash (:attr:`crashed`) highway-env brakes the car to a halt
        whatever the action says.
        """
        if self._env is None:
            raise RuntimeError("call start(seed) before act()")
        action = np.clip(np.asarray(action, np.float32), -1.0, 1.0)
        self._env.step(np.array([action[1], -action[0]], np.float32))  # (accel, steering_hw)
        vehicle = self._env.unwrapped.vehicle
        if max_speed is not None:
            vehicle.speed = float(np.clip(vehicle.speed, 0.0, max_speed))
        return _render(self._env), self._pose(self._env.unwrapped)

    def get_state(self) -> dict[str, Any]:
        """The simulator's state for :meth:`set_state`.

        A copy of the road, every vehicle on it (the ego car's crash flag included), the clock
        and the generator, with the env id and frame size they belong to.
        """
        if self._env is None:
            raise RuntimeError("call start(seed) before get_state()")
        world = self._env.unwrapped
        dynamic = copy.deepcopy({k: getattr(world, k) for k in _DYNAMIC})
        return {"env_name": self.env_name, "size": self.size, **dynamic}

    def set_state(self, state: dict[str, Any]) -> None:
        """Put the road back as :meth:`get_state` found it (a copy: the state stays reusable).

        A state of another env id or frame size, or a malformed one, is a ``ValueError`` and
        changes nothing.
        """
        if not isinstance(state, dict):
            raise ValueError(f"state['source'] must be a dict, got {type(state).__name__}")
        missing = sorted({"env_name", "size", *_DYNAMIC} - set(state))
        if missing:
            raise ValueError(f"state['source'] is not a HighwaySource state: {missing} missing")
        if (state["env_name"], state["size"]) != (self.env_name, self.size):
            raise ValueError(
                f"state['source'] is of {state['env_name']} at {state['size']} px, this source "
                f"runs {self.env_name} at {self.size} px"
            )
        from highway_env.road.road import Road
        from highway_env.vehicle.kinematics import Vehicle

        vehicles = state["controlled_vehicles"]
        fits = {
            "road": isinstance(state["road"], Road),
            "controlled_vehicles": isinstance(vehicles, list)
            and len(vehicles) > 0
            and all(isinstance(v, Vehicle) for v in vehicles),
            "time": isinstance(state["time"], (int, float)) and math.isfinite(state["time"]),
            "steps": isinstance(state["steps"], int) and state["steps"] >= 0,
            "done": isinstance(state["done"], bool),
            "np_random": isinstance(state["np_random"], np.random.Generator),
        }
        bad = [k for k, ok in fits.items() if not ok]
        if bad:
            raise ValueError(f"state['source'] entries {bad} are not what get_state() holds")
        if self._env is None:
            self.start(0)  # an env to load it into (its road is replaced)
        world = self._env.unwrapped
        for key, value in copy.deepcopy({k: state[k] for k in _DYNAMIC}).items():
            setattr(world, key, value)

    @property
    def crashed(self) -> bool:
        """Whether the ego car has crashed since the last :meth:`start`."""
        return self._env is not None and bool(self._env.unwrapped.vehicle.crashed)

    def drive(
        self, seed: int, steps: int, policy: Callable[[np.ndarray, np.ndarray], np.ndarray]
    ) -> tuple[Episode, bool]:
        """Closed loop: reset with ``seed``, then ``steps`` actions of ``policy(frame, pose)``.

        The policy sees the current ``(size, size, 3)`` uint8 view and the absolute pose
        ``(x_m, y_m, heading_deg, speed_mps)`` in our convention and returns one DrivingHead
        action ``(2,)`` in [-1, 1] (clipped). ``gym.make("Simulator-Driving-v0")`` is the same
        loop behind the driving world's env interface.

        Returns:
            The episode and whether the ego car crashed in it (highway-env then brakes it to a
            halt whatever the policy says; the episode goes on to ``steps``).
        """
        episode = self._record(
            int(seed), steps, lambda world, frame, pose: policy(frame, pose), stop_on_crash=False
        )
        assert episode is not None
        return episode, self.crashed

    def _record(
        self,
        reset_seed: int,
        steps: int,
        policy: Callable[[Any, np.ndarray, np.ndarray], np.ndarray],
        stop_on_crash: bool,
    ) -> Episode | None:
        """Reset and apply ``policy(world, frame, pose)``'s actions (the view and pose before each).

        Returns None if ``stop_on_crash`` and the car crashed.
        """
        frames = np.empty((steps + 1, self.size, self.size, 3), np.uint8)
        actions = np.empty((steps, 2), np.float32)
        poses = np.empty((steps + 1, 4), np.float64)
        frames[0], poses[0] = self.start(reset_seed)
        world = self._env.unwrapped
        for t in range(steps):
            action = policy(world, frames[t], poses[t])
            actions[t] = np.clip(np.asarray(action, np.float32), -1.0, 1.0)
            frames[t + 1], poses[t + 1] = self.act(actions[t])
            if stop_on_crash and self.crashed:
                return None
        return Episode(frames=frames, actions=actions, poses=poses, seed=int(reset_seed))

    @staticmethod
    def _pose(world: Any) -> np.ndarray:
        """The ego vehicle's pose in our convention (y up, heading counter-clockwise)."""
        v = world.vehicle
        heading = wrap_deg(-math.degrees(v.heading))
        return np.array([v.position[0], -v.position[1], heading, v.speed], np.float64)
