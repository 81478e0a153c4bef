"""robosuite source: action mapping always; rollouts only where robosuite's venv is configured."""

import os

import numpy as np
import pytest
from helpers import assert_same_episode

from gym_worldmodel.envs.actions import RobotHead
from gym_worldmodel.sources.robosuite_source import (
    PYTHON_ENV,
    RobosuiteSource,
    model_to_osc,
    osc_to_model,
)
from gym_worldmodel.sources.robosuite_worker import Policy


def test_osc_and_rt1_vectors_round_trip():
    osc = np.random.default_rng(0).uniform(-1, 1, (50, 7)).astype(np.float32)
    vec = osc_to_model(osc)
    assert vec.shape == (50, 13) and (vec[:, 11] == 1).all() and not vec[:, 7:11].any()
    assert np.abs(vec[:, 3:6]).max() <= 0.5 / (np.pi / 2) + 1e-6  # 0.5 rad per frame at most
    assert RobotHead(mode="flat").space.contains(vec[0, :10])
    assert np.allclose(model_to_osc(vec), osc, atol=1e-6)


def test_missing_venv_is_a_clear_error(monkeypatch):
    monkeypatch.delenv(PYTHON_ENV, raising=False)
    with pytest.raises(ImportError, match="own venv"):
        RobosuiteSource()


def test_unknown_policy_is_a_clear_error():
    with pytest.raises(ValueError, match="agile"):
        RobosuiteSource(policy="fast")


def _policy_actions(style: str, steps: int = 2000) -> np.ndarray:
    """OSC inputs of a style's policy for an end effector held at the workspace's centre."""
    policy = Policy(np.random.default_rng(0), style)
    obs = {"robot0_eef_pos": np.array([0.0, 0.0, 1.05]), "cube_pos": np.array([0.0, 0.0, 0.82])}
    return np.stack([policy(obs) for _ in range(steps)])


def test_agile_policy_moves_faster_and_changes_more_often_than_smooth():
    stats = {}
    for style in ("smooth", "agile"):
        a = _policy_actions(style)
        assert a.shape == (2000, 7) and np.abs(a).max() <= 1.0
        lag1 = np.mean([np.corrcoef(a[:-1, d], a[1:, d])[0, 1] for d in range(3)])
        stats[style] = (np.abs(a[:, :3]).mean(), lag1)
    assert stats["agile"][0] > 1.5 * stats["smooth"][0]
    assert stats["agile"][1] < stats["smooth"][1] - 0.1


needs_robosuite = pytest.mark.skipif(
    not os.environ.get(PYTHON_ENV), reason=f"robosuite venv not configured ({PYTHON_ENV})"
)


@needs_robosuite
def test_rollout_replay_and_seeds():
    src = RobosuiteSource()
    ep = src.rollout(0, 20)
    assert ep.frames.shape == (21, 64, 64, 3) and ep.frames.dtype == np.uint8
    assert ep.actions.shape == (20, 13) and ep.poses is None
    assert ep.frames.std() > 5  # a rendered scene, not a blank buffer
    assert not np.array_equal(ep.frames[0], ep.frames[-1])  # the arm moved
    assert_same_episode(ep, src.rollout(0, 20))
    assert not np.array_equal(ep.frames, src.rollout(1, 20).frames)
    assert_same_episode(ep, src.replay(0, ep.actions))
    src.close()


@needs_robosuite
def test_a_frame_shows_the_action_it_follows():
    """robosuite's step() returns the state before the action acted; the source must not."""
    src = RobosuiteSource()
    still = np.zeros((6, 7), np.float32)
    still[:, 6] = -1.0
    up = still.copy()
    up[3:, 2] = 0.8  # move up from the 4th action on
    rest, moved = src.replay(0, osc_to_model(still)), src.replay(0, osc_to_model(up))
    change = np.abs(moved.frames.astype(int) - rest.frames).mean((1, 2, 3))
    assert change[:4].max() == 0  # frames up to the one the first move leads to: identical
    assert change[4] > 1.0  # the frame after the first move already shows it (before: 0)
    src.close()


@needs_robosuite
def test_stepping_one_frame_at_a_time_gives_the_rollouts_frames():
    src = RobosuiteSource()
    ep = src.rollout(3, 6)
    frames = [src.start(3)[0]] + [src.act(vector)[0] for vector in ep.actions]
    np.testing.assert_array_equal(np.stack(frames), ep.frames)
    assert src.act(ep.actions[0])[1] is None  # no pose: the camera is fixed
    src.close()


@needs_robosuite
def test_simulator_robot_env_has_the_worlds_interface():
    import gymnasium as gym
    from gymnasium.utils.env_checker import check_env

    import gym_worldmodel  # noqa: F401

    sim, world = gym.make("Simulator-Robot-v0"), gym.make("WorldModel-Robot-v0")
    assert sim.observation_space == world.observation_space
    assert sim.action_space == world.action_space
    check_env(sim.unwrapped, skip_render_check=True)
    hooks = []
    env = gym.make("Simulator-Robot-v0", reward_fn=lambda *args: hooks.append(args) or [1.0])
    obs, info = env.reset(seed=4)
    assert "pose" not in info
    up = np.zeros(10, np.float32)
    up[2] = 0.8  # world_vector z: up
    after, reward, terminated, truncated, info = env.step(up)
    assert reward == 1.0 and not terminated and info["step"] == 1
    assert np.abs(after.astype(int) - obs).mean() > 1.0  # the arm moved in robosuite
    prev_obs, action, new_obs, hook_info = hooks[0]
    assert action.shape == (1, 3, 13) and hook_info["pose"] is None  # the world's layout
    np.testing.assert_array_equal(new_obs[0].numpy(), after)
    with pytest.raises(ValueError, match="draws its own scene"):
        env.reset(options={"image": obs})
    sim.close(), world.close(), env.close()


@needs_robosuite
def test_simulator_robot_state_replays_bit_identically_and_a_bad_one_changes_nothing():
    import gymnasium as gym

    import gym_worldmodel  # noqa: F401

    rng = np.random.default_rng(0)
    actions = rng.uniform(-0.6, 0.6, (4, 10)).astype(np.float32)
    env = gym.make("Simulator-Robot-v0", max_episode_steps=-1).unwrapped
    env.reset(seed=4)
    at_reset = env.get_state()  # some controller values are None until the first step
    env.step(actions[0])
    state = env.get_state()
    first = [env.step(a)[0] for a in actions]
    env.set_state(state)
    np.testing.assert_array_equal(np.stack([env.step(a)[0] for a in actions]), first)
    env.set_state(at_reset)  # into a stepped episode: those values go back to None
    from_reset = np.stack([env.step(a)[0] for a in actions])
    env.reset(seed=4)
    np.testing.assert_array_equal(np.stack([env.step(a)[0] for a in actions]), from_reset)
    other = gym.make("Simulator-Robot-v0").unwrapped  # never reset: its worker starts anew
    other.set_state(state)
    np.testing.assert_array_equal(np.stack([other.step(a)[0] for a in actions]), first)
    source = state["source"]
    for bad, match in [
        ({**state, "source": {**source, "env_name": "Stack-Panda-OSC_POSE"}}, "Stack"),
        ({**state, "source": {**source, "mujoco": source["mujoco"][:5]}}, "must have shape"),
        ({**state, "source": {**source, "gripper": source["gripper"][:0]}}, "must have 1 rows"),
        ({**state, "source": {**source, "gripper": source["gripper"] * np.nan}}, "NaN"),
        ({**state, "source": {**source, "gripper": np.zeros((1, 5))}}, "width in"),
        ({**state, "source": {**source, "clock": np.array(["noon", "1"])}}, "array of numbers"),
        ({**state, "source": {**source, "controller/right/new_update": np.array(0.5)}}, "bool"),
        ({**state, "source": {**source, "extra": np.zeros(1)}}, "unexpected entries"),
    ]:
        env.set_state(state)
        with pytest.raises(ValueError, match=match):
            env.set_state(bad)
        np.testing.assert_array_equal(np.stack([env.step(a)[0] for a in actions]), first)
    env.close(), other.close()
