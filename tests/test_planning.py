"""imagine: plans played in a vector env's rows, rows that end held where they ended."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.vector import AutoresetMode
from helpers import TINY, counting_env, value

import gym_worldmodel  # noqa: F401  (registers the ids)
from gym_worldmodel.envs import Imagined, PoseDistance, PoseReached, WorldModelVectorEnv, imagine


def walk_futures(n: int, **kwargs) -> tuple[WorldModelVectorEnv, WorldModelVectorEnv]:
    """A city walk 0.4 m on, scored by its distance to (1.6, 0) m, and ``n`` futures of it."""
    env = WorldModelVectorEnv(1, world="citywalk", reward_fn=PoseDistance([1.6, 0.0]), **TINY)
    env.reset(seed=0)
    env.step([[1, 0]])
    return env, env.fork(0, n, max_episode_steps=-1, **kwargs)


def test_without_an_end_it_gives_the_rewards_and_frames_of_stepping_by_hand():
    env, futures = walk_futures(3)
    plans = np.random.default_rng(0).integers(5, size=(3, 4, 2))
    state = env.get_state([0] * 3)
    got = imagine(futures, plans, state, seeds=[5, 6, 7], observations=True)
    futures.set_state(state, seeds=[5, 6, 7])
    steps = [futures.step(plans[:, h]) for h in range(4)]
    rewards = np.stack([s[1] for s in steps], 1)
    assert isinstance(got, Imagined)
    np.testing.assert_array_equal(got.rewards, rewards)
    np.testing.assert_array_equal(got.returns, sum(s[1] for s in steps))  # the same sum, bitwise
    np.testing.assert_array_equal(got.observations, np.stack([s[0] for s in steps], 1))
    assert got.lengths.tolist() == [4, 4, 4]
    assert not got.terminated.any() and not got.truncated.any()
    discounted = imagine(futures, plans, state, seeds=[5, 6, 7], gamma=0.5)
    np.testing.assert_allclose(discounted.returns, rewards @ 0.5 ** np.arange(4))
    assert discounted.observations is None


@pytest.mark.parametrize("mode", list(AutoresetMode))
def test_a_row_that_ends_is_held_where_it_ended_in_every_autoreset_mode(mode):
    """By hand, the env restarts an ended row and its new episode's rewards count in its plan."""
    env, futures = walk_futures(3, autoreset_mode=mode)
    futures.termination_fn = PoseReached([1.6, 0.0], radius_m=0.5)
    plans = np.zeros((3, 5, 2), np.int64)
    plans[0, :, 0] = 1  # forward: reaches the target in its 2nd step and would walk on
    plans[1, :2, 0] = 1  # forward twice, then stand
    state = env.get_state([0] * 3)
    got = imagine(futures, plans, state, observations=True)
    assert got.lengths.tolist() == [2, 2, 5]
    assert got.terminated.tolist() == [True, True, False] and not got.truncated.any()
    assert (got.rewards[:2, 2:] == 0).all() and (got.rewards[2] < 0).all()
    np.testing.assert_array_equal(got.returns, got.rewards.sum(1))
    assert got.returns[0] == got.returns[1] > got.returns[2]
    futures.set_state(state)
    first = futures.step(plans[:, 0])[0]
    second, *_, info = futures.step(plans[:, 1])
    if mode == AutoresetMode.SAME_STEP:  # the step that ends a row returns its next episode's
        second[:2] = np.stack(info["final_obs"][:2])
    np.testing.assert_array_equal(got.observations[:, :2], np.stack([first, second], 1))
    for h in range(2, 5):  # the last frame of the step that ended it, held
        np.testing.assert_array_equal(got.observations[:2, h], second[:2])


@pytest.mark.parametrize("mode", list(AutoresetMode))
def test_the_time_limit_ends_rows_as_truncated_and_no_step_follows_the_last_end(mode):
    futures = counting_env(mode, num_envs=2, max_steps=2)
    futures.reset(seed=0)
    calls = []
    futures.reward_fn = lambda prev, action, obs, info: calls.append(1) or torch.ones(2)
    got = imagine(futures, np.zeros((2, 6, 2), np.float32), observations=True)
    assert len(calls) == 2  # both rows ended at the 2nd step: no 3rd
    assert got.lengths.tolist() == [2, 2] and got.truncated.all() and not got.terminated.any()
    assert got.rewards.tolist() == [[1, 1, 0, 0, 0, 0]] * 2
    assert [value(got.observations[:, h]) for h in range(6)] == [[1, 1]] + [[2, 2]] * 5


def test_a_dict_plan_ends_a_robot_row_at_its_terminate_episode():
    env = WorldModelVectorEnv(2, world="robot", action_mode="dict", **TINY)
    env.reset(seed=0)
    idle = env.idle_action()
    plans = {k: np.repeat(np.asarray(v)[:, None], 3, 1) for k, v in idle.items()}
    plans["terminate_episode"][1, 1] = 0  # row 1 ends the episode at its 2nd step
    got = imagine(env, plans, env.get_state())
    assert got.lengths.tolist() == [3, 2] and got.terminated.tolist() == [False, True]


def test_torch_output_and_gymnasium_s_vector_wrappers():
    envs = gym.make_vec("WorldModel-CityWalk-v0", num_envs=2, output="torch", **TINY)
    envs.reset(seed=0)
    state = envs.unwrapped.get_state()
    plans = torch.ones((2, 3, 2), dtype=torch.long)
    got = imagine(envs, plans, state, observations=True)
    assert isinstance(got.observations, torch.Tensor) and got.observations.shape[:2] == (2, 3)
    assert got.rewards.dtype == np.float64 and got.rewards.shape == (2, 3)
    again = imagine(envs, plans, state, observations=True)
    assert torch.equal(got.observations, again.observations)  # the state's own noise


def test_any_gymnasium_vector_env_plays_plans_from_where_it_is():
    envs = gym.vector.SyncVectorEnv([lambda: gym.make("CartPole-v1")] * 2)
    envs.reset(seed=0)
    got = imagine(envs, np.ones((2, 40), np.int64), observations=True, infos=True)  # it falls
    assert got.infos == {}  # CartPole's infos hold nothing per row
    assert got.terminated.all() and (got.lengths < 40).all()
    assert got.rewards.sum(1).tolist() == got.lengths.tolist()  # CartPole: 1 a step alive
    assert got.observations.shape == (2, 40, 4)
    with pytest.raises(TypeError, match="has no set_state"):
        imagine(envs, np.ones((2, 3), np.int64), {"a": 1})
    with pytest.raises(TypeError, match="a single world env's unwrapped.fork"):
        imagine(gym.make("CartPole-v1"), np.ones((1, 3), np.int64))
    shared = gym.vector.SyncVectorEnv([lambda: gym.make("CartPole-v1")] * 2, copy=False)
    shared.reset(seed=0)  # one observation buffer, written by every step
    got = imagine(shared, np.ones((2, 5), np.int64), observations=True)
    assert len({got.observations[0, h].tobytes() for h in range(5)}) == 5


def test_bad_plans_are_refused_before_any_row_steps():
    env, futures = walk_futures(2)
    state = env.get_state([0, 0])
    futures.set_state(state)
    before = futures.get_state()
    plans = np.zeros((2, 4, 2), np.int64)
    bad = plans.copy()
    bad[1, 2, 0] = 7  # no such key
    with pytest.raises(ValueError, match=r"plans\[:, 2\]: .*camera keys"):
        imagine(futures, bad)
    for wrong, match in (
        (plans[:1], r"N = 2 .* got shape \(1, 4, 2\)"),
        (plans[:, :0], r"H >= 1 steps, got shape \(2, 0, 2\)"),
        (np.zeros(2), r"got shape \(2,\)"),
        ({}, "empty dict"),
        ({"a": plans, "b": plans[:, :3]}, "the same H"),
    ):
        with pytest.raises(ValueError, match=match):
            imagine(futures, wrong)
    for kwargs, match in (
        ({"gamma": 0.0}, "gamma must be a number in"),
        ({"gamma": 1.5}, "gamma must be a number in"),
        ({"gamma": "0.5"}, "gamma must be a number in"),
        ({"gamma": True}, "gamma must be a number in"),
        ({"seeds": [1, 2]}, "give the state too"),
    ):
        with pytest.raises(ValueError, match=match):
            imagine(futures, plans, **kwargs)
    after = futures.get_state()
    assert after["steps"].tolist() == before["steps"].tolist()
    assert torch.equal(after["engine"]["cache"]["k"], before["engine"]["cache"]["k"])


def test_futures_reloaded_after_their_last_step_skip_its_cache_write():
    """Loading every row's state replaces the chunk the last step would write: not written."""
    env, futures = walk_futures(2)
    engine = futures._engine
    writes = []
    commit = engine.rollout.commit
    engine.rollout.commit = lambda *a, **k: writes.append(1) or commit(*a, **k)
    state = env.get_state([0, 0])
    plans = np.ones((2, 2, 2), np.int64)
    for _ in range(3):
        imagine(futures, plans, state)
    assert len(writes) == 3  # each plan's first step's chunk; the second's never


def test_a_state_of_one_row_last_observations_and_a_state_that_is_done():
    env, futures = walk_futures(3)
    futures.termination_fn = PoseReached([1.6, 0.0], radius_m=0.5)
    plans = np.zeros((3, 4, 2), np.int64)
    plans[0, :, 0] = 1  # reaches the target in its 2nd step
    got = imagine(futures, plans, env.get_state(0), observations=True)  # one row into three
    np.testing.assert_array_equal(got.last_obs, got.observations[:, -1])
    np.testing.assert_array_equal(got.last_obs[0], got.observations[0, 1])  # where it ended
    assert got.lengths.tolist() == [2, 4, 4]
    env.termination_fn = PoseReached([1.6, 0.0], radius_m=2.0)
    env.step([[0, 0]])  # ends the real episode: its state is done
    before = futures.get_state()["steps"].tolist()
    with pytest.raises(ValueError, match=r"rows \[0\] are done"):
        imagine(futures, plans, env.get_state(0))
    assert futures.get_state()["steps"].tolist() == before


def test_disabled_autoreset_resets_just_the_rows_the_last_step_ended():
    futures = counting_env(AutoresetMode.DISABLED, num_envs=3, max_steps=None)
    futures.reset(seed=0)
    futures.termination_fn = lambda prev, action, obs, info: info["step"] == torch.tensor([1, 2, 9])
    resets = []
    reset = futures.reset
    futures.reset = lambda **kw: resets.append(kw["options"]["reset_mask"].tolist()) or reset(**kw)
    got = imagine(futures, np.zeros((3, 5, 2), np.float32))
    assert got.lengths.tolist() == [1, 2, 5] and got.terminated.tolist() == [True, True, False]
    # rows 0 and 1 end again in each episode after theirs (held: unscored); row 2 never resets
    assert resets == [[True, False, False], [True, True, False]] * 2


def test_plans_go_through_the_wrappers_actions():
    envs = gym.make_vec("WorldModel-Driving-v0", num_envs=2, **TINY)
    envs = gym.wrappers.vector.ClipAction(envs)
    envs.reset(seed=0)
    plans = np.full((2, 2, 2), 3.0, np.float32)  # beyond the world's [-1, 1]: the wrapper clips
    clipped = imagine(envs, plans, envs.unwrapped.get_state(0))
    same = imagine(envs, np.ones((2, 2, 2), np.float32), envs.unwrapped.get_state(0))
    np.testing.assert_array_equal(clipped.rewards, same.rewards)
    listed = gym.wrappers.vector.DictInfoToList(envs)
    with pytest.raises(TypeError, match="info as a dict of batched values, got list"):
        imagine(listed, plans, envs.unwrapped.get_state(0))


@pytest.mark.parametrize("mode", list(AutoresetMode))
def test_infos_give_each_plan_s_pose_trajectory_held_at_its_end(mode):
    env, futures = walk_futures(2, autoreset_mode=mode)
    futures.termination_fn = PoseReached([1.6, 0.0], radius_m=0.5)
    plans = np.zeros((2, 4, 2), np.int64)
    plans[0, :, 0] = 1  # reaches the target in its 2nd step
    plans[1, :, 1] = 1  # turns on the spot
    state = env.get_state(0)
    got = imagine(futures, plans, state, infos=True)
    futures.set_state(state)
    hand = [futures.step(plans[:, h])[-1] for h in range(2)]
    poses = got.infos["pose"]
    assert poses.shape == (2, 4, 4) and got.infos["step"].shape == (2, 4)
    np.testing.assert_array_equal(poses[:, 0], hand[0]["pose"])
    np.testing.assert_array_equal(poses[1, 1], hand[1]["pose"][1])
    final = hand[1]["final_info"]["pose"][0] if mode == AutoresetMode.SAME_STEP else None
    np.testing.assert_array_equal(poses[0, 1], hand[1]["pose"][0] if final is None else final)
    assert (poses[0, 2:] == poses[0, 1]).all() and poses[0, 1, 0] == pytest.approx(1.2)
    assert got.infos["step"][0].tolist() == [2, 3, 3, 3] and got.observations is None
    assert not any(key.startswith("_") for key in got.infos)
