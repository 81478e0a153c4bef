"""MiniWorld (first-person 3-D rooms and a city sidewalk) as a camera-modality episode source.

The agent is driven by camera key actions (``envs.actions.CameraHead``, keys mode) rather than by
MiniWorld's own discrete actions: each frame's pose is advanced with ``envs.pose.integrate_camera``
(the same integration the world-model env uses), written into the simulator and rendered, so the
recorded actions and poses mean exactly what they mean in the env. A move that would put the agent
into a wall or an entity (MiniWorld's own collision test) leaves its position unchanged but still
applies the rotation; the recorded pose is always the one actually rendered.

Coordinates, ours against MiniWorld's:
    our x = MiniWorld x, our y = -(MiniWorld z) (MiniWorld is y-up, its forward vector is
    ``(cos dir, 0, -sin dir)``), our yaw_deg = degrees(agent.dir) (counter-clockwise from +x seen
    from above in both), our pitch_deg = ``agent.cam_pitch`` (degrees, positive up).

Behaviour policies (all randomness from ``np.random.default_rng(seed)``):
    ``"random"``  random translation and rotation keys (pitch included), each held 2-8 frames.
    ``"sweep"``   scripted yaw sweeps and full spins, pitch sweeps in place, and straight walks.
    ``"loop"``    walk out along one or two legs, turn 180 degrees and retrace the path, so the
                  agent comes back to where it started (revisits).
    ``"mixed"``   the default: segments of the three above (one-leg loops), drawn at random
                  within an episode.
    ``"revisit"`` the mixed policy for the first part of the episode, then the exact way back:
                  every applied move and turn undone in reverse order (walking backwards, the
                  agent passes through the poses it had on the way out), ending at the start
                  pose. The spatial-memory benchmark's trajectories: a frame on the way back
                  sees what an earlier frame saw, long after it left the view.

Rendering is headless (EGL): pyglet is switched to headless mode before miniworld is first
imported, so code that imports miniworld itself must set ``pyglet.options["headless"] = True``
first (or run under ``xvfb-run``).
"""

from __future__ import annotations

import contextlib
import io
import math
import sys
from collections.abc import Iterator
from typing import Any

import numpy as np

from gym_worldmodel.envs.actions import CAMERA_MOVE, CameraHead
from gym_worldmodel.envs.pose import POSE_FIELDS, integrate_camera, wrap_deg
from gym_worldmodel.envs.state import check_state
from gym_worldmodel.sources.episodes import Episode

POLICIES = ("random", "sweep", "loop", "mixed", "revisit")
_INSTALL_HINT = "pip install gym-worldmodel[simulators]"
# Key probabilities of the random policy: translation (none, W, A, S, D), rotation
# (none, left, right, up, down).
_RANDOM_MOVE_P = (0.2, 0.35, 0.15, 0.15, 0.15)
_RANDOM_TURN_P = (0.4, 0.175, 0.175, 0.125, 0.125)
_WALK_MOVE_P = (0.55, 0.15, 0.15, 0.15)  # W, A, S, D for scripted walks
# The key that undoes a translation (none, W, A, S, D) or a rotation (none, left, right, up, down).
_OPPOSITE_MOVE = (0, 3, 4, 1, 2)
_OPPOSITE_TURN = (0, 2, 1, 4, 3)


def _import_miniworld() -> Any:
    """Import miniworld headless (EGL), or fail with an install hint."""
    try:
        if "miniworld" not in sys.modules and "pyglet.gl" not in sys.modules:
            import pyglet

            pyglet.options["headless"] = True  # must precede pyglet.gl, which miniworld imports
        import miniworld
    except ImportError as err:
        raise ImportError(
            f"MiniWorldSource needs the MiniWorld simulator (miniworld with pyglet<2): "
            f"{_INSTALL_HINT}"
        ) from err
    return miniworld


class _Walker:
    """State the behaviour policies may look at: current pose, last step's outcome, budget."""

    def __init__(self, pose: np.ndarray, remaining: int, free_steps: Any) -> None:
        self.pose = pose
        self.blocked = False  # the last step asked for a move and a collision refused it
        self.remaining = remaining  # actions still to take in this episode
        #: ``free_steps(yaw_deg, n)``: how many of n forward steps along yaw_deg are collision-free
        self.free_steps = free_steps


class _Policy:
    """Infinite stream of (translation, rotation) keys built from scripted segments."""

    def __init__(
        self, name: str, rng: np.random.Generator, walker: _Walker, move_m: float, turn_deg: float
    ) -> None:
        self.name, self.rng, self.w = name, rng, walker
        self.move_m, self.turn_deg = move_m, turn_deg

    def _frames(self, degrees: float) -> int:
        return max(1, round(degrees / self.turn_deg))

    def _steps(self, metres: float) -> int:
        return max(1, round(metres / self.move_m))

    def __iter__(self) -> Iterator[tuple[int, int]]:
        if self.name == "revisit":
            yield from self._revisit()
            return
        segments = {"random": self._random, "sweep": self._sweep, "loop": self._loop}
        while True:
            if self.name == "mixed":
                name = str(self.rng.choice(("random", "sweep", "loop"), p=(0.55, 0.3, 0.15)))
            else:
                name = self.name
            yield from segments[name]()

    def _revisit(self) -> Iterator[tuple[int, int]]:
        """Mixed segments out, then every applied move and turn undone in reverse order.

        A frame's rotation comes before its move (``integrate_camera``), so a frame with both is
        undone in two frames: the opposite move, then the opposite turn. The way out stops while
        the frames left still hold the whole way back.
        """
        out = _Policy("mixed", self.rng, self.w, self.move_m, self.turn_deg)
        undo: list[tuple[int, int]] = []
        budget = self.w.remaining
        for used, (move, turn) in enumerate(out):
            if budget - used < len(undo) + 3:  # this frame may add two undo frames
                break
            yield move, turn
            frame = []
            if move and not self.w.blocked:
                frame.append((_OPPOSITE_MOVE[move], 0))
            if turn:
                frame.append((0, _OPPOSITE_TURN[turn]))
            undo.extend(reversed(frame))
        yield from reversed(undo)
        while True:  # at the start pose again: stand still for what is left
            yield 0, 0

    def _random(self) -> Iterator[tuple[int, int]]:
        """A run of 3-6 random key pairs, each held 2-8 frames (a blocked move ends a hold)."""
        rng = self.rng
        for _ in range(int(rng.integers(3, 7))):
            move = int(rng.choice(5, p=_RANDOM_MOVE_P))
            turn = int(rng.choice(5, p=_RANDOM_TURN_P))
            for _ in range(int(rng.integers(2, 9))):
                pitch = self.w.pose[3]
                if turn in (3, 4) and abs(pitch) > 30.0:  # drift back towards level
                    turn = 4 if pitch > 0 else 3
                yield move, turn
                if move and self.w.blocked:
                    break

    def _sweep(self) -> Iterator[tuple[int, int]]:
        """One scripted segment: a yaw sweep or spin, a pitch sweep, or a straight walk."""
        rng = self.rng
        kind = rng.choice(3, p=(0.35, 0.3, 0.35))
        if kind == 0:  # yaw: there and back (ends at the start yaw), or a full spin
            first = int(rng.integers(1, 3))
            if rng.random() < 0.25:
                yield from [(0, first)] * self._frames(360.0)
                return
            n = self._frames(rng.uniform(30.0, 120.0))
            yield from [(0, first)] * n + [(0, 3 - first)] * (2 * n) + [(0, first)] * n
        elif kind == 1:  # pitch: level off, then up-down-up or down-up-down around level
            pitch = self.w.pose[3]
            if abs(pitch) >= self.turn_deg / 2:
                yield from [(0, 4 if pitch > 0 else 3)] * self._frames(abs(pitch))
            first = int(rng.integers(3, 5))
            n = self._frames(rng.uniform(15.0, 50.0))
            yield from [(0, first)] * n + [(0, 7 - first)] * (2 * n) + [(0, first)] * n
        else:  # walk straight (mostly forward); a blocked walk turns 45-135 degrees and goes on
            move = 1 + int(rng.choice(4, p=_WALK_MOVE_P))
            for _ in range(self._steps(rng.uniform(1.0, 4.0))):
                yield move, 0
                if self.w.blocked:
                    turn = int(rng.integers(1, 3))
                    yield from [(0, turn)] * self._frames(rng.uniform(45.0, 135.0))

    def _loop(self) -> Iterator[tuple[int, int]]:
        """Walk out (one or two legs), turn 180 degrees and retrace: ends where it started.

        Each leg first turns towards open space (the first heading, scanning in turn_deg
        increments, whose path is collision-free, else the freest one).
        """
        rng = self.rng
        n180, n360 = self._frames(180.0), self._frames(360.0)
        legs = []
        for _ in range(1 if self.name == "mixed" else int(rng.integers(1, 3))):
            legs.append((int(rng.integers(1, 3)), self._steps(rng.uniform(1.5, 4.0))))
        if n180 + 2 * sum(n180 + k for _, k in legs) > self.w.remaining:  # shrink to fit
            legs = [(legs[0][0], max(1, min(legs[0][1], (self.w.remaining - n180) // 2)))]
        walked, turned = [], []
        for turn_key, steps in legs:
            sign = 1.0 if turn_key == 1 else -1.0  # key 1 turns left: yaw increases
            start = int(rng.integers(0, n180 // 2 + 1))
            best, best_free = 0, -1
            for turns in [*range(start, n360), *range(start)]:
                free = self.w.free_steps(self.w.pose[2] + sign * turns * self.turn_deg, steps)
                if free > best_free:
                    best, best_free = turns, free
                if free == steps:
                    break
            turns = best if best <= n180 else best - n360  # the shorter way round
            key = turn_key if turns >= 0 else 3 - turn_key
            turned.append((key, abs(turns)))
            yield from [(0, key)] * abs(turns)
            moved = 0
            for _ in range(steps):
                yield 1, 0
                if self.w.blocked:
                    break
                moved += 1
            walked.append(moved)
        yield from [(0, int(rng.integers(1, 3)))] * n180
        for (key, turns), moved in zip(reversed(turned), reversed(walked), strict=True):
            yield from [(1, 0)] * moved
            yield from [(0, 3 - key)] * turns


class MiniWorldSource:
    """Episodes of a MiniWorld env driven by camera key actions under a behaviour policy.

    Args:
        env_name: A registered MiniWorld env id (``MiniWorld-Sidewalk-v0``, ``-Hallway-v0``, ...).
        size: Native square render size in pixels.
        move_m: Metres per frame of one translation key (as the world-model env's ``move_m``).
        turn_deg: Degrees per frame of one rotation key (as the env's ``turn_deg``).
        policy: ``"random"``, ``"sweep"``, ``"loop"``, ``"mixed"`` or ``"revisit"`` (see the
            module docstring).
        domain_rand: Turn on MiniWorld's per-seed domain randomisation (sky, lighting, textures,
            camera height and field of view; the camera pitch is always ours).
    """

    def __init__(
        self,
        env_name: str = "MiniWorld-Sidewalk-v0",
        size: int = 64,
        move_m: float = 0.2,
        turn_deg: float = 6.0,
        policy: str = "mixed",
        domain_rand: bool = False,
    ) -> None:
        if policy not in POLICIES:
            raise ValueError(f"policy must be one of {POLICIES}, got {policy!r}")
        if size < 1 or move_m <= 0 or turn_deg <= 0:
            raise ValueError(
                f"size, move_m and turn_deg must be positive, got {size}, {move_m}, {turn_deg}"
            )
        _import_miniworld()
        self.env_name, self.size, self.policy = env_name, int(size), policy
        self.move_m, self.turn_deg, self.domain_rand = float(move_m), float(turn_deg), domain_rand
        self.info: dict[str, Any] = {
            "source": "miniworld",
            "world": "citywalk",
            "env_name": env_name,
            "modality": "camera",
            "frame_size": self.size,
            "fps": 15,
            "action_width": 12,
            "pose_fields": list(POSE_FIELDS["camera"]),
            "move_m": self.move_m,
            "turn_deg": self.turn_deg,
            "policy": policy,
            "domain_rand": domain_rand,
        }
        head = CameraHead(mode="keys", move_m=self.move_m, turn_deg=self.turn_deg)
        keys = np.array([(t, r) for t in range(5) for r in range(5)], np.int64)
        # The model vector of every (translation, rotation) key pair, indexed 5 * t + r.
        self._vectors = head.encode(keys, len(keys), 1)[:, 0]
        self._env: Any = None
        self._pose = np.zeros(4)
        self._seed: int | None = None  # the last start's: the map (and its entities) it drew
        self.blocked = False

    def _unwrapped(self) -> Any:
        if self._env is None:
            import gymnasium as gym

            _import_miniworld()
            with contextlib.redirect_stdout(io.StringIO()):  # frame-buffer fallback notices
                self._env = gym.make(
                    self.env_name,
                    obs_width=self.size,
                    obs_height=self.size,
                    domain_rand=self.domain_rand,
                )
        return self._env

    def close(self) -> None:
        """Close the simulator (a later rollout opens a new one)."""
        if self._env is not None:
            self._env.close()
            self._env = None

    def rollout(self, seed: int, steps: int) -> Episode:
        """Reset with ``seed`` and record ``steps`` actions of the behaviour policy."""

        def policy(walker: _Walker) -> Iterator[np.ndarray]:
            rng = np.random.default_rng(seed)
            for move, turn in _Policy(self.policy, rng, walker, self.move_m, self.turn_deg):
                yield self._vectors[5 * move + turn]

        return self._record(seed, steps, policy)

    def replay(self, seed: int, actions: np.ndarray) -> Episode:
        """Reset with ``seed`` and record the given model action vectors ``(T, 12)``.

        ``replay(ep.seed, ep.actions)`` reproduces a recorded episode; vectors encoded by
        ``CameraHead`` in look mode (continuous yaw and pitch rates) work as well.
        """
        actions = np.asarray(actions, np.float32)
        if actions.ndim != 2 or actions.shape[1] != 12:
            raise ValueError(f"actions must be (T, 12) camera model vectors, got {actions.shape}")
        return self._record(seed, len(actions), lambda walker: iter(actions))

    def start(self, seed: int) -> tuple[np.ndarray, np.ndarray]:
        """Reset the simulator with ``seed``: the first view and pose (then step with :meth:`act`).

        The camera starts level (pitch 0). Returns the view ``(size, size, 3)`` uint8 and the pose
        ``(x_m, y_m, yaw_deg, pitch_deg)`` float64 in the map's coordinates (the env's pose is
        relative to the start).
        """
        env = self._unwrapped()
        env.reset(seed=int(seed))
        self._seed = int(seed)
        world = env.unwrapped
        agent = world.agent
        yaw = wrap_deg(math.degrees(agent.dir))
        self._pose = np.array([agent.pos[0], -agent.pos[2], yaw, 0.0], np.float64)
        agent.dir, agent.cam_pitch = math.radians(yaw), 0.0
        #: Whether the last :meth:`act` asked for a move and MiniWorld's collision test refused it.
        self.blocked = False
        return world.render_obs(), self._pose.copy()

    def act(self, vector: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """One frame under a camera model vector ``(12,)`` (``CameraHead``, keys or look mode).

        The pose advances by ``integrate_camera``; a move into a wall or an entity leaves the
        position where it was (:attr:`blocked`) but still turns. Returns the view and pose after
        it, as :meth:`start`.
        """
        if self._env is None:
            raise RuntimeError("call start(seed) before act()")
        vec = np.asarray(vector, np.float32)
        world = self._env.unwrapped
        agent = world.agent
        new = integrate_camera(self._pose[None], vec[None, None], self.move_m, self.turn_deg)[0]
        self.blocked = False
        if vec[CAMERA_MOVE].argmax() != 0:  # a translation key: MiniWorld's collision test decides
            target = np.array([new[0], agent.pos[1], -new[1]])
            if world.intersect(agent, target, agent.radius) is None:
                agent.pos = target
            else:
                new[:2] = self._pose[:2]
                self.blocked = True
        agent.dir, agent.cam_pitch = math.radians(new[2]), float(new[3])
        self._pose = new
        return world.render_obs(), new.copy()

    def get_state(self) -> dict[str, Any]:
        """The simulator's state for :meth:`set_state`: the map, the start's seed, the pose.

        The map is what the seed drew at :meth:`start` and the camera moves only by :meth:`act`
        (nothing else in the map moves), so the seed and pose say everything.
        """
        if self._env is None or self._seed is None:
            raise RuntimeError("call start(seed) before get_state()")
        return {
            "env_name": self.env_name,
            "size": self.size,
            "seed": self._seed,
            "pose": self._pose.copy(),
            "blocked": self.blocked,
        }

    def set_state(self, state: dict[str, Any]) -> None:
        """Put the camera back where :meth:`get_state` found it.

        Starts that seed's map again first if another one is loaded. A state of another map or
        frame size, or a malformed one, is a ``ValueError`` and changes nothing.
        """
        template = {"env_name": self.env_name, "size": 0, "seed": 0, "pose": np.zeros(4)}
        check_state(state, template | {"blocked": False}, where="state['source']")
        if state["size"] != self.size or state["seed"] < 0:
            raise ValueError(
                f"state['source'] is of {state['size']} px frames from seed {state['seed']}; "
                f"this source renders {self.size} px from seeds >= 0"
            )
        pose = np.asarray(state["pose"], np.float64)
        if self._env is None or self._seed != int(state["seed"]):
            self.start(int(state["seed"]))
        agent = self._env.unwrapped.agent
        agent.pos = np.array([pose[0], agent.pos[1], -pose[1]])
        agent.dir, agent.cam_pitch = math.radians(pose[2]), float(pose[3])
        self._pose, self.blocked = pose.copy(), bool(state["blocked"])

    def _free_steps(self, yaw_deg: float, n: int) -> int:
        """How many of ``n`` forward steps along ``yaw_deg`` from the pose are collision-free."""
        world = self._env.unwrapped
        agent = world.agent
        x, y = self._pose[0], self._pose[1]
        dx, dy = math.cos(math.radians(yaw_deg)), math.sin(math.radians(yaw_deg))
        for i in range(1, n + 1):
            target = np.array([x + i * self.move_m * dx, agent.pos[1], -(y + i * self.move_m * dy)])
            if world.intersect(agent, target, agent.radius) is not None:
                return i - 1
        return n

    def _record(self, seed: int, steps: int, policy: Any) -> Episode:
        """Reset with ``seed``, then apply ``policy(walker)``'s vectors, rendering each pose."""
        frames = np.empty((steps + 1, self.size, self.size, 3), np.uint8)
        actions = np.empty((steps, 12), np.float32)
        poses = np.empty((steps + 1, 4), np.float64)
        frames[0], poses[0] = self.start(seed)
        walker = _Walker(poses[0], steps, self._free_steps)
        vectors = policy(walker)
        for t in range(steps):
            actions[t] = next(vectors)
            frames[t + 1], poses[t + 1] = self.act(actions[t])
            walker.blocked, walker.pose, walker.remaining = (
                self.blocked,
                poses[t + 1],
                steps - t - 1,
            )
        return Episode(frames=frames, actions=actions, poses=poses, seed=int(seed))
