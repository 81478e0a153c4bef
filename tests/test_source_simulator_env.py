"""The simulators behind the worlds' env interface (``Simulator-*`` ids; the simulators extra)."""

import importlib.util
import math

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env

import gym_worldmodel  # noqa: F401  (registers the ids)
from gym_worldmodel.envs import ActionCost, LaneCentre
from gym_worldmodel.envs.actions import ActionError
from gym_worldmodel.sources.simulator_env import SimulatorEnv

needs_highway = pytest.mark.skipif(
    importlib.util.find_spec("highway_env") is None, reason="needs highway-env (simulators extra)"
)
needs_miniworld = pytest.mark.skipif(
    importlib.util.find_spec("miniworld") is None, reason="needs miniworld (simulators extra)"
)


def pair(sim_id: str, **kwargs):
    """The simulator env and its world's env (the shipped world, no memory)."""
    world_id = sim_id.replace("Simulator-", "WorldModel-")
    return gym.make(sim_id, **kwargs), gym.make(world_id, memory=False, **kwargs)


@pytest.mark.parametrize(
    "sim_id",
    [
        pytest.param("Simulator-Driving-v0", marks=needs_highway),
        pytest.param("Simulator-CityWalk-v0", marks=needs_miniworld),
    ],
)
@pytest.mark.parametrize("obs_mode", ["rgb", "chunk+pose"])
def test_same_spaces_as_the_world_and_gymnasiums_checker(sim_id, obs_mode):
    sim, world = pair(sim_id, obs_mode=obs_mode)
    assert sim.observation_space == world.observation_space
    assert sim.action_space == world.action_space
    assert sim.unwrapped.metadata["render_fps"] == world.unwrapped.metadata["render_fps"]
    check_env(sim.unwrapped, skip_render_check=True)
    obs, _ = sim.reset(seed=2)
    assert sim.observation_space.contains(obs)
    sim.close(), world.close()


@needs_highway
def test_driving_pose_is_the_worlds_under_the_same_actions_and_start():
    actions = np.random.default_rng(0).uniform(-0.3, 0.3, (8, 2)).astype(np.float32)
    poses = []
    for env in pair("Simulator-Driving-v0"):
        _, info = env.reset(seed=0, options={"heading": -4.0, "speed": 22.0})
        np.testing.assert_allclose(info["pose"], [0.0, 0.0, -4.0, 22.0])
        for action in actions:
            info = env.step(action)[-1]
        poses.append(info["pose"])
        env.close()
    # The world integrates highway-env's kinematics: metres and degrees agree to 1e-4.
    np.testing.assert_allclose(poses[0], poses[1], atol=1e-4)
    assert poses[0][0] > 30  # it drove (about 22 m/s for 1.6 s)


@needs_highway
def test_driving_seeds_hooks_and_start_fn():
    hooks = [LaneCentre(4.0), ActionCost(0.1)]
    env = gym.make("Simulator-Driving-v0", obs_mode="rgb+pose", reward_fn=hooks)
    a, _ = env.reset(seed=5)
    b, _ = env.reset(seed=5)
    c, _ = env.reset(seed=6)
    np.testing.assert_array_equal(a["rgb"], b["rgb"])
    assert not np.array_equal(a["rgb"], c["rgb"])  # another traffic scene
    action = np.array([0.1, -0.2], np.float32)
    obs, reward, terminated, truncated, info = env.step(action)
    x, y, heading, _ = info["pose"]
    expected = -abs(y - 4.0) - 2.0 * abs(math.radians(heading)) - 0.1 * np.mean(action**2)
    assert reward == pytest.approx(expected, rel=1e-6)
    np.testing.assert_array_equal(obs["pose"], info["pose"].astype(np.float32))
    assert (terminated, truncated, info["step"], info["crashed"]) == (False, False, 1, False)
    env.close()

    starts = gym.make(
        "Simulator-Driving-v0",
        start_fn=lambda rngs: {"heading": [rng.uniform(5, 10) for rng in rngs], "speed": 15.0},
    )
    info = starts.reset(seed=0)[1]
    assert 5 <= info["pose"][2] <= 10 and info["pose"][3] == 15.0
    info = starts.reset(seed=0, options={"heading": 0.0})[1]  # reset's options win
    assert info["pose"][2] == 0.0 and info["pose"][3] == 15.0
    starts.close()


@needs_highway
def test_a_crash_ends_the_episode_unless_told_otherwise():
    full_throttle = np.array([0.0, 1.0], np.float32)  # seed 25: into the car ahead at step 10
    env = gym.make("Simulator-Driving-v0", max_episode_steps=-1)
    env.reset(seed=25)
    flags = [env.step(full_throttle)[2] for _ in range(10)]
    assert flags == [False] * 9 + [True]
    with pytest.raises(RuntimeError, match="episode is over"):
        env.step(full_throttle)
    env.close()
    env = gym.make("Simulator-Driving-v0", max_episode_steps=-1, crash_ends=False)
    env.reset(seed=25)
    for _ in range(14):
        _, _, terminated, _, info = env.step(full_throttle)
        assert not terminated
    assert info["crashed"] and info["pose"][3] < 20  # highway-env brakes a crashed car
    env.close()


@needs_highway
def test_speed_stays_in_the_worlds_range():
    """highway-env would reverse a braking car to -40 m/s; the world's speed stops at 0."""
    env = gym.make("Simulator-Driving-v0", obs_mode="rgb+pose", max_episode_steps=-1)
    env.reset(seed=0)
    for _ in range(45):  # 9 s at -3 m/s^2 from 25 m/s
        obs, *_, info = env.step(np.array([0.0, -1.0], np.float32))
        assert env.observation_space.contains(obs)
    assert info["pose"][3] == 0.0
    env.reset(seed=0, options={"speed": 39.0})
    for _ in range(10):
        obs, *_ = env.step(np.array([0.0, 1.0], np.float32))
    assert obs["pose"][3] == 40.0
    env.close()


@needs_highway
def test_a_made_simulator_whose_first_reset_was_refused_steps_after_a_good_one():
    """As the world ids: Gymnasium's PassiveEnvChecker broke every later step (a TypeError)."""
    env = gym.make("Simulator-Driving-v0")
    with pytest.raises(ValueError, match="speed"):
        env.reset(options={"speed": -1.0})
    env.reset(seed=0)
    assert env.step(np.zeros(2, np.float32))[0].shape == env.observation_space.shape


@needs_highway
def test_bad_input_is_refused_and_changes_nothing():
    env = gym.make("Simulator-Driving-v0", obs_mode="rgb+pose")
    obs, info = env.reset(seed=1)
    for bad in (np.array([2.0, 0.0]), np.array([np.nan, 0.0]), np.zeros(3), "left"):
        with pytest.raises(ActionError):
            env.step(bad)
    after = env.unwrapped._obs()
    np.testing.assert_array_equal(after["rgb"], obs["rgb"])
    np.testing.assert_array_equal(after["pose"], obs["pose"])
    rng_state = env.unwrapped.np_random.bit_generator.state
    image = np.zeros((64, 64, 3), np.uint8)
    for seed, options, match in [
        (7, {"image": image}, "reset options give \\['image'\\].* draws its own scene"),
        (7, {"speed": -1.0}, "speed"),
        (None, {"lane": 2}, "unknown reset options \\['lane'\\]; Simulator-Driving-v0 takes"),
    ]:
        with pytest.raises(ValueError, match=match):
            env.reset(seed=seed, options=options)
    # a refused reset changes nothing: not the frame, the pose, nor the generator
    assert env.unwrapped.np_random.bit_generator.state == rng_state
    pictures = gym.make("Simulator-Driving-v0", start_fn=lambda rngs: {"image": image})
    with pytest.raises(ValueError, match="start_fn's options give"):
        pictures.reset(seed=0)

    def draws_then_fails(rngs):
        rngs[0].uniform(size=100)  # draws from the generator it was given, then returns junk
        return {"speed": "fast"}

    env.unwrapped.start_fn = draws_then_fails
    with pytest.raises(ValueError, match="start_fn must return"):
        env.reset()
    assert env.unwrapped.np_random.bit_generator.state == rng_state  # it drew from a copy
    env.unwrapped.start_fn = None
    with pytest.raises(ValueError, match="latent"):
        gym.make("Simulator-Driving-v0", obs_mode="latent")
    with pytest.raises(ValueError, match="world must be one of"):
        gym.make("Simulator-Driving-v0", world="boat")
    with pytest.raises(RuntimeError, match="reset"):
        gym.make("Simulator-Driving-v0").unwrapped.step(np.zeros(2, np.float32))
    env.close()


@needs_highway
def test_vectorised_with_gymnasiums_sync_env_and_same_step_autoreset():
    envs = gym.make_vec(
        "Simulator-Driving-v0",
        num_envs=2,
        vectorization_mode="sync",
        vector_kwargs={"autoreset_mode": gym.vector.AutoresetMode.SAME_STEP},
        max_episode_steps=2,
        reward_fn=LaneCentre(0.0),
    )
    envs = gym.wrappers.vector.RecordEpisodeStatistics(envs)
    envs.reset(seed=0)
    for _ in range(2):
        obs, reward, terminated, truncated, info = envs.step(np.zeros((2, 2), np.float32))
    assert truncated.all() and obs.shape == (2, 64, 64, 3) and reward.shape == (2,)
    assert info["_final_obs"].all() and len(info["episode"]["r"]) == 2
    envs.close()


@needs_miniworld
def test_citywalk_pose_follows_the_keys_from_the_start_and_reports_walls():
    env = gym.make("Simulator-CityWalk-v0", max_episode_steps=-1)
    _, info = env.reset(seed=3)
    np.testing.assert_array_equal(info["pose"], np.zeros(4))
    info = env.step([0, 1])[-1]  # turn left: 3 frames of 6 degrees
    np.testing.assert_allclose(info["pose"], [0.0, 0.0, 18.0, 0.0], atol=1e-9)
    info = env.step([1, 0])[-1]  # forward along the new yaw: 3 x 0.2 m
    expected = 0.6 * np.array([math.cos(math.radians(18)), math.sin(math.radians(18))])
    assert not info["blocked"]
    np.testing.assert_allclose(info["pose"][:2], expected, atol=1e-9)
    blocked = [env.step([1, 0])[-1]["blocked"] for _ in range(200)]
    assert any(blocked)  # walking straight on meets a wall or a building
    env.close()


def test_ids_are_registered_and_a_missing_simulator_says_how_to_install(monkeypatch):
    from gym_worldmodel.sources.robosuite_source import PYTHON_ENV

    ids = {"Simulator-Driving-v0", "Simulator-CityWalk-v0", "Simulator-Robot-v0"}
    assert ids <= set(gym.registry)
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *args: None)
    for sim_id in ("Simulator-Driving-v0", "Simulator-CityWalk-v0"):
        with pytest.raises(ImportError, match=r"pip install gym-worldmodel\[simulators\]"):
            gym.make(sim_id)
    monkeypatch.delenv(PYTHON_ENV, raising=False)
    with pytest.raises(ImportError, match=f"own venv.*{PYTHON_ENV}"):
        gym.make("Simulator-Robot-v0")


@pytest.mark.parametrize("bad", [0, -2, 2.5, "100"])
def test_a_step_limit_that_is_not_one_is_refused_when_the_env_is_made(bad):
    """As the world env's: 0 truncated every episode after its first step, "100" at the first."""
    with pytest.raises(ValueError, match="max_episode_steps must be an int >= 1"):
        SimulatorEnv("driving", max_episode_steps=bad)


@needs_miniworld
def test_async_vectorisation_forks_working_miniworld_workers():
    """AsyncVectorEnv makes one env in the parent before it forks: no GL context may be made
    there (a forked child would hang in it), so the simulator starts at the first reset."""
    import subprocess
    import sys

    code = (
        "import gymnasium as gym, numpy as np, gym_worldmodel\n"
        "envs = gym.make_vec('Simulator-CityWalk-v0', num_envs=2, vectorization_mode='async')\n"
        "envs.reset(seed=0)\n"
        "obs = envs.step(np.array([[1, 0], [0, 1]]))[0]\n"
        "print(obs.shape, obs.std() > 5)\n"
        "envs.close()\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "(2, 64, 64, 3) True"


class FakeSource:
    """A simulator stand-in with the sources' stepping contract: the camera walks 0.2 m a frame
    along its yaw for a W key and turns 6 degrees for a yaw key, from a start pose that is not
    the origin; frames show the step count."""

    def __init__(self, start_pose):
        self.start_pose, self.pose, self.blocked = np.asarray(start_pose, float), None, False
        self.frames = 0

    def _frame(self):
        return np.full((64, 64, 3), self.frames % 256, np.uint8)

    def start(self, seed):
        self.pose, self.frames = self.start_pose.copy(), 0
        return self._frame(), self.pose.copy()

    def act(self, vector):
        yaw = math.radians(self.pose[2])
        if vector[1] > 0:  # W
            self.pose[:2] += 0.2 * np.array([math.cos(yaw), math.sin(yaw)])
        self.pose[2] += 6.0 * vector[6] - 6.0 * vector[7]  # rotation keys left / right
        self.frames += 1
        return self._frame(), self.pose.copy()

    def get_state(self):
        return {"pose": self.pose.copy(), "frames": self.frames}

    def set_state(self, state):
        self.pose, self.frames = state["pose"].copy(), state["frames"]

    def close(self):
        pass


def fake_env(monkeypatch, **kwargs):
    """Simulator-CityWalk-v0's env over a fake source (no simulator needed: runs in CI)."""
    from gym_worldmodel.sources import simulator_env

    monkeypatch.setattr(simulator_env.SimulatorEnv, "_check_installed", lambda self: None)
    monkeypatch.setattr(
        simulator_env.SimulatorEnv, "_make_source", lambda self: FakeSource([5.0, -3.0, 90.0, 0])
    )
    return gym.make("Simulator-CityWalk-v0", max_episode_steps=-1, **kwargs)


def test_the_pose_is_relative_to_the_start_and_turned_into_its_view(monkeypatch):
    env = fake_env(monkeypatch, obs_mode="rgb+pose")
    obs, info = env.reset(seed=0)
    np.testing.assert_array_equal(info["pose"], np.zeros(4))  # not (5, -3, 90, 0)
    obs, *_, info = env.step([1, 0])  # W for 3 frames: straight ahead is +x from the start
    np.testing.assert_allclose(info["pose"], [0.6, 0.0, 0.0, 0.0], atol=1e-12)
    np.testing.assert_array_equal(obs["pose"], info["pose"].astype(np.float32))
    assert obs["rgb"].max() == 3  # the step's last frame (3 simulator frames)
    env.close()


def test_hooks_get_the_world_envs_layout_and_a_refused_reset_changes_nothing(monkeypatch):
    seen = []

    def reward(prev_obs, action, obs, info):
        seen.append((prev_obs, action, obs, info))
        return -info["pose"][:, :2].norm(dim=-1)

    env = fake_env(monkeypatch, obs_mode="chunk", reward_fn=reward)
    env.reset(seed=3)
    obs, r, *_ = env.step([1, 0])
    prev_obs, action, new_obs, info = seen[0]
    assert prev_obs.shape == new_obs.shape == (1, 64, 64, 3) and prev_obs.dtype == torch.uint8
    assert action.shape == (1, 3, 12) and action.dtype == torch.float32
    assert info["pose"].dtype == info["prev_pose"].dtype == torch.float64
    assert info["step"].tolist() == [1] and info["effort"].shape == (1,)
    assert r == pytest.approx(-0.6) and obs.shape == (3, 64, 64, 3)
    state = env.unwrapped.np_random.bit_generator.state
    with pytest.raises(ValueError, match="Simulator-CityWalk-v0 takes none"):
        env.reset(seed=9, options={"speed": 3.0})
    assert env.unwrapped.np_random.bit_generator.state == state
    assert env.unwrapped._steps == 1  # the episode goes on
    env.close()


def replay(env, actions):
    """Frames, rewards, poses and flags of ``actions`` played from the env's current state."""
    out = []
    for action in actions:
        obs, r, terminated, truncated, info = env.step(action)
        out.append((obs.copy(), r, terminated, truncated, info["pose"].copy()))
    return out


def assert_same(a, b):
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x[0], y[0])
        assert x[1:4] == y[1:4]
        np.testing.assert_array_equal(x[4], y[4])


def test_state_restores_the_episode_and_a_bad_state_changes_nothing(monkeypatch):
    env = fake_env(monkeypatch, reward_fn=lambda p, a, o, info: info["step"].double())
    env.reset(seed=0)
    env.step([1, 1])
    state = env.unwrapped.get_state()
    actions = [[1, 0], [0, 2], [1, 1]]
    first = replay(env, actions)
    after_first = env.unwrapped.np_random.bit_generator.state
    env.reset()  # draws from the env's generator: set_state must bring it back too
    for _ in range(2):  # the state stays reusable
        env.unwrapped.set_state(state)
        assert_same(replay(env, actions), first)
        assert env.unwrapped.np_random.bit_generator.state == after_first
    before = env.unwrapped.get_state()
    for bad, match in [
        ({**state, "world": "driving"}, "state\\['world'\\] must be 'citywalk'"),
        ({**state, "frames": np.zeros((1, 2, 3), np.uint8)}, "state\\['frames'\\] must be"),
        ({**state, "steps": "many"}, "state\\['steps'\\] must be an int"),
        ({**state, "pose": np.full(4, np.nan)}, "state\\['pose'\\] holds NaN"),
        ({k: v for k, v in state.items() if k != "done"}, "lacks \\['done'\\]"),
        (
            {**state, "np_random": {**state["np_random"], "state": {"state": -1, "inc": 1}}},
            "not a generator's state",
        ),
        ({"frames": 1}, "what Simulator-CityWalk-v0.get_state"),
        ([1, 2], "what Simulator-CityWalk-v0.get_state"),
    ]:
        with pytest.raises(ValueError, match=match):
            env.unwrapped.set_state(bad)
    after = env.unwrapped.get_state()
    np.testing.assert_array_equal(after["frames"], before["frames"])
    assert after["steps"] == before["steps"] == 4 and after["np_random"] == before["np_random"]
    env.close()


@pytest.mark.parametrize(
    "sim_id, actions",
    [
        pytest.param(
            "Simulator-Driving-v0", [[0.3, 0.5], [-0.2, 0.0], [0.0, -1.0]] * 2, marks=needs_highway
        ),
        pytest.param("Simulator-CityWalk-v0", [[1, 1], [1, 0], [3, 2]] * 2, marks=needs_miniworld),
    ],
)
def test_a_simulators_state_replays_bit_identically_here_and_in_another_env(sim_id, actions):
    env = gym.make(sim_id, obs_mode="rgb+pose", max_episode_steps=-1)
    env.reset(seed=4)
    replay(env, actions[:2])
    state = env.unwrapped.get_state()
    first = [(o["rgb"], *rest) for o, *rest in replay(env, actions)]
    env.unwrapped.set_state(state)
    again = [(o["rgb"], *rest) for o, *rest in replay(env, actions)]
    assert_same(again, first)
    other = gym.make(sim_id, obs_mode="rgb+pose").unwrapped  # never reset
    other.set_state(state)
    assert_same([(o["rgb"], *rest) for o, *rest in replay(other, actions)], first)
    env.close(), other.close()


@pytest.mark.parametrize(
    "sim_id, actions, other_map",
    [
        pytest.param(
            "Simulator-Driving-v0", [[0.3, 0.5], [0.0, -1.0]], "highway-v0", marks=needs_highway
        ),
        pytest.param(
            "Simulator-CityWalk-v0", [[1, 1], [3, 2]], "MiniWorld-Hallway-v0", marks=needs_miniworld
        ),
    ],
)
def test_a_bad_simulator_state_is_refused_before_anything_changes(sim_id, actions, other_map):
    env = gym.make(sim_id, max_episode_steps=-1).unwrapped
    env.reset(seed=4)
    state = env.get_state()
    source = state["source"]
    other = gym.make(sim_id, env_name=other_map, max_episode_steps=-1).unwrapped
    other.reset(seed=4)
    for bad, match in [
        ({**state, "source": {**source, "size": 32}}, "32 px"),
        ({**state, "source": {k: v for k, v in source.items() if k != "env_name"}}, "env_name"),
        ({**state, "source": other.get_state()["source"]}, other_map),
    ]:
        env.reset(seed=9)  # another episode, which a refused state must leave as it is
        replay(env, actions[:1])
        before = env.get_state()
        expected = replay(env, actions)
        env.set_state(before)
        with pytest.raises(ValueError, match=match):
            env.set_state(bad)
        assert_same(replay(env, actions), expected)
    env.close(), other.close()


@needs_miniworld
def test_goal_image_agent_plans_in_the_world_and_in_miniworld_itself():
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    args = ["--episodes", "2", "--goal-steps", "2", "--horizon", "2", "--population", "6"]
    args += ["--iterations", "2", "--elites", "2", "--model", "random"]
    done = subprocess.run(
        [
            sys.executable,
            "agents/cem_goal_image.py",
            *args,
            "--plan-in",
            "none",
            "world",
            "simulator",
        ],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    lines = [line for line in done.stdout.splitlines() if line.startswith("episode ")]
    assert len(lines) == 6
    for line in lines[::3]:  # standing still ends as far from the goal as the goal is away
        away, left = line.split("(")[1].split(" m")[0], line.split(": ")[1].split(" m")[0]
        assert away == left
    assert all(f"| {name} |" in done.stdout for name in ("none", "world", "simulator"))
    small = subprocess.run(
        [
            sys.executable,
            "agents/cem_goal_image.py",
            "--model",
            "random-tiny",
            "--plan-in",
            "world",
        ],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert small.returncode != 0 and "the world's frames are (32, 32, 3)" in small.stderr


@needs_highway
def test_a_driving_state_with_entries_of_the_wrong_kind_is_refused():
    env = gym.make("Simulator-Driving-v0", max_episode_steps=-1).unwrapped
    env.reset(seed=1)
    state = env.get_state()
    for entry, value in [("time", "noon"), ("road", None), ("controlled_vehicles", [])]:
        with pytest.raises(ValueError, match=entry):
            env.set_state({**state, "source": {**state["source"], entry: value}})
    env.set_state(state)  # the good one still loads
    env.close()


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"start_fn": 3}, "start_fn must be a callable"),
        ({"reward_fn": 5}, "reward_fn must be a hook"),
        ({"reward_fn": LaneCentre(4.0)}, "LaneCentre needs the driving world's pose"),
    ],
)
def test_hooks_that_cannot_serve_a_simulator_env_are_refused_when_it_is_made(
    kwargs, match, monkeypatch
):
    """Checked before the simulator is looked for: this runs without the simulators extra."""
    world = "Simulator-CityWalk-v0" if "reward_fn" in kwargs else "Simulator-Driving-v0"
    with pytest.raises(ValueError, match=match):
        gym.make(world, **kwargs)
    # and when assigned later, the hook before kept (the simulator is not needed to see it)
    monkeypatch.setattr(SimulatorEnv, "_check_installed", lambda self: None)
    env = gym.make(world).unwrapped
    (name, hook), kept = next(iter(kwargs.items())), getattr(env, next(iter(kwargs)))
    with pytest.raises(ValueError, match=match):
        setattr(env, name, hook)
    assert getattr(env, name) is kept
