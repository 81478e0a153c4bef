"""Reward, termination and initial-conditions hooks of the environments, on tiny models."""

from __future__ import annotations

import sys

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.vector import AutoresetMode
from helpers import TINY, on_device, rows_equal, snapshot

import gym_worldmodel  # noqa: F401  (registers the ids)
from gym_worldmodel.envs import (
    ActionCost,
    GoalImageSimilarity,
    LaneCentre,
    PoseDistance,
    PoseReached,
    WorldModelEnv,
    WorldModelVectorEnv,
)


def test_builtin_hooks():
    goal = np.full((32, 32, 3), 128, np.uint8)
    env = WorldModelVectorEnv(
        2,
        world="driving",
        **TINY,
        termination_fn=PoseReached([100.0, 0.0], radius_m=1.0),
        reward_fn=[GoalImageSimilarity(goal), PoseDistance([3.0, 4.0]), ActionCost(0.5)],
    )
    obs, _ = env.reset(seed=0)
    _, reward, terminated, _, info = env.step(np.array([[0, 1], [0, 0]], np.float32))
    sim = 1 - np.abs(env._obs().astype(float) - 128).mean(axis=(1, 2, 3)) / 255
    dist = -np.linalg.norm(info["pose"][:, :2] - [3.0, 4.0], axis=1)
    cost = -0.5 * np.array([0.5, 0.0])
    assert np.allclose(reward, sim + dist + cost)
    assert terminated.tolist() == [False, False]


def test_goal_image_similarity_pools_blocks_and_refuses_a_pool_that_does_not_fit():
    goal = np.zeros((8, 8, 3), np.uint8)
    goal[:, :4] = 200  # left half bright
    shifted = np.roll(goal, 1, axis=1)[None]  # one pixel to the right: two columns differ
    one, four = GoalImageSimilarity(goal), GoalImageSimilarity(goal, pool=4)
    frames = torch.from_numpy(shifted)
    assert one(None, None, frames, {}).item() == pytest.approx(1 - 2 * 8 * 3 * 200 / 192 / 255)
    # 4 x 4 blocks: each differs by one column of four (50 in the block's mean), 2 blocks of 4
    assert four(None, None, frames, {}).item() == pytest.approx(1 - 2 * 2 * 3 * 50 / 12 / 255)
    assert four(None, None, torch.from_numpy(goal[None]), {}).item() == 1.0
    for bad in (0, 2.0):
        with pytest.raises(ValueError, match="int >= 1"):
            GoalImageSimilarity(goal, pool=bad)
    with pytest.raises(ValueError, match="pool 3 does not divide the frame side 8"):
        GoalImageSimilarity(goal, pool=3)(None, None, frames, {})
    with pytest.raises(ValueError, match="pool 3 does not divide the frame side 32"):
        WorldModelVectorEnv(1, world="driving", **TINY, reward_fn=GoalImageSimilarity(goal, 3))


def test_a_goal_image_of_another_size_is_fitted_as_a_start_picture_is():
    """A camera picture as the goal: cropped and resized as reset does, for every row."""
    picture = np.random.default_rng(0).integers(0, 256, (48, 80, 3), np.uint8)
    env = WorldModelVectorEnv(2, world="driving", **TINY)
    start, _ = env.reset(seed=0, options={"image": picture})
    goal = GoalImageSimilarity(np.stack([picture, 255 - picture]))
    assert np.array_equal(goal.fitted(32)[0].numpy(), start[0])
    similarity = goal(None, None, torch.from_numpy(start), {}).tolist()
    assert similarity[0] == 1.0 and similarity[1] < 0.9  # row 1's goal is the negative
    env.reward_fn = goal
    obs, reward, *_ = env.step(np.zeros((2, 2), np.float32))
    np.testing.assert_allclose(reward, goal(None, None, torch.from_numpy(obs), {}).double())


def test_lane_centre_pays_metres_off_the_lane_and_radians_of_heading():
    env = WorldModelVectorEnv(2, world="driving", **TINY, reward_fn=LaneCentre(4.0, 3.0))
    env.reset(seed=0)
    for _ in range(3):  # steer left, then right: both rows leave y = 0 with a heading
        _, reward, *_, info = env.step(np.array([[0.5, 0.0], [-0.3, 0.2]], np.float32))
    y, heading = info["pose"][:, 1], np.deg2rad(info["pose"][:, 2])
    assert np.all(heading != 0) and np.allclose(reward, -(np.abs(y - 4.0) + 3.0 * np.abs(heading)))
    with pytest.raises(ValueError, match="heading_weight >= 0"):
        LaneCentre(4.0, -1.0)
    with pytest.raises(ValueError, match="driving world's pose"):
        LaneCentre(4.0)(None, None, None, {"pose": None})


def test_action_cost_is_zero_for_doing_nothing_in_every_mode():
    for world, mode, idle, busy in (
        ("citywalk", "keys", np.zeros((1, 2), np.int64), np.array([[1, 1]])),  # W + turn left
        ("robot", "flat", np.zeros((1, 10), np.float32), np.full((1, 10), 0.5, np.float32)),
        ("driving", None, np.zeros((1, 2), np.float32), np.array([[1.0, 0.0]], np.float32)),
    ):
        env = WorldModelVectorEnv(1, world=world, action_mode=mode, **TINY, reward_fn=ActionCost(1))
        env.reset(seed=0)
        assert env.step(idle)[1].tolist() == [0.0]
        cost = env.step(busy)[1][0]
        assert cost == pytest.approx({"citywalk": -2 / 3, "robot": -0.25, "driving": -0.5}[world])


def test_fork_keeps_each_rows_own_goal_in_hooks_with_values_per_row():
    env = WorldModelVectorEnv(2, world="driving", **TINY)
    obs, _ = env.reset(seed=0)
    env.reward_fn = [
        GoalImageSimilarity(np.stack([obs[0], 255 - obs[1]])),
        ActionCost(0.1),
        PoseDistance([[1.0, 2.0], [30.0, -4.0]]),
    ]
    env.termination_fn = PoseReached([[0.0, 0.0], [500.0, 0.0]], radius_m=50.0)
    forks = env.fork(row=1, n=3)
    act = np.array([[0.2, 0.1], [-0.1, 0.3]], np.float32)
    _, reward, terminated, *_ = env.step(act)
    _, forked, forked_end, *_ = forks.step(np.repeat(act[1:], 3, 0))
    assert np.allclose(forked, reward[1]) and forked_end.tolist() == [terminated[1]] * 3
    assert terminated.tolist() == [True, False]  # the rows' targets differ


def test_hook_arguments_are_checked_where_they_are_made():
    for bad, hint in (
        (np.full((8, 8, 3), 0.5), r"floats in \[0, 1\]"),
        (np.full((8, 8, 3), 200), "integers in 0-255"),
        (np.full((8, 8, 3), 300), r"values up to 300: \(x / x.max\(\) \* 255\)"),  # not a cast
        (np.full((8, 8, 3), 40000, np.uint16), r"16 bits a channel: \(x >> 8\)"),
        (np.full((8, 8, 3), -0.5), r"floats in \[-1, 1\]: \(\(x \+ 1\) \* 127.5\)"),
        (np.full((8, 8, 3), -7), "values from -7 to -7: scale them into 0-255"),
        (np.full((8, 8, 3), -1), "values from -1 to -1"),  # integers: not "floats in [-1, 1]"
        (np.linspace(-0.002, 0.9, 192).reshape(8, 8, 3), r"floats in \[0, 1\]: \(x \* 255\)"),
        (np.zeros((8, 8), np.uint8), "grey"),
        (np.zeros((3, 8, 8), np.uint8), "channels first"),
        (torch.full((8, 8, 3), 90.0, dtype=torch.bfloat16), "floats in 0-255"),
        (np.full((8, 8, 3), np.nan), "every value is NaN or inf: there is no picture"),
        (np.zeros((8, 0, 3), np.uint8), "it holds no pixels"),
    ):
        with pytest.raises(ValueError, match=f"goal image must be .*{hint}"):
            GoalImageSimilarity(bad)
    from PIL import Image  # converted to RGB as a start picture is

    for mode in ("L", "RGBA", "P"):
        goal = GoalImageSimilarity(Image.new(mode, (10, 8)))
        assert goal.goal.shape == (8, 10, 3) and goal.goal.dtype == torch.uint8
    for bad in ([np.nan, 0.0], [1.0, 2.0, 3.0], np.zeros((2, 3))):
        with pytest.raises(ValueError, match="finite"):
            PoseDistance(bad)
    with pytest.raises(ValueError, match="radius_m must be a distance >= 0"):
        PoseReached([0.0, 0.0], radius_m=-1.0)
    with pytest.raises(ValueError, match="weight must be >= 0"):
        ActionCost(-1.0)
    for make, match in (
        (lambda: ActionCost("a"), "weight must be a number >= 0"),
        (lambda: PoseDistance("ab"), "target must be finite"),
        (lambda: PoseDistance([[1.0, 2.0], [3.0]]), "target must be finite"),
        (lambda: PoseReached([0.0, 0.0], radius_m="1"), "radius_m must be a distance"),
        (lambda: LaneCentre("4"), r"LaneCentre needs a finite lane_y .*, got '4'"),
    ):
        with pytest.raises(ValueError, match=match):
            make()
    env = WorldModelVectorEnv(3, world="driving", **TINY)
    env.reset(seed=0)
    with pytest.raises(ValueError, match="2 goal images .* for 3 rows"):  # assigned: checked
        env.reward_fn = GoalImageSimilarity(np.zeros((2, 32, 32, 3), np.uint8))
    with pytest.raises(ValueError, match="needs a world with a pose"):
        WorldModelVectorEnv(1, world="robot", **TINY).termination_fn = PoseReached([0.0, 0.0])
    with pytest.raises(ValueError, match="start_fn must be a callable"):
        env.start_fn = 3
    assert env.reward_fn is None and env.start_fn is None  # a refused hook is not taken
    # one entry on a per-row axis is one for all rows, in the env and in its forks
    env.reward_fn = [GoalImageSimilarity(np.zeros((1, 32, 32, 3), np.uint8))]
    with pytest.raises(AttributeError):  # kept as a tuple: a hook appended would go unchecked
        env.reward_fn.append(PoseDistance([[1.0, 2.0]]))
    given = [ActionCost(0.0)]
    env.reward_fn = given
    given.append(PoseDistance([[1.0, 2.0]]))  # the caller's list: copied when assigned
    assert len(env.reward_fn) == 1
    env.reward_fn = [*env.reward_fn, PoseDistance([[1.0, 2.0]])]
    env.termination_fn = PoseReached([[1.0, 2.0]], radius_m=0.0)
    rewards = env.step(np.zeros((3, 2), np.float32))[1]
    forked = env.fork(2, 2).step(np.zeros((2, 2), np.float32))[1]
    assert rewards.shape == (3,) and forked.shape == (2,)


def test_single_env_hooks_assigned_later_act_on_its_steps():
    """``env.unwrapped.reward_fn = hook`` used to set an attribute the steps never read."""
    env = gym.make("WorldModel-Driving-v0", max_episode_steps=-1, **TINY)
    env.reset(seed=0)
    inner = env.unwrapped
    assert inner.reward_fn is None and inner.termination_fn is None
    inner.reward_fn = ActionCost(1.0)
    inner.termination_fn = [lambda p, a, o, info: info["step"] >= 2]
    _, reward, terminated, _, _ = env.step(np.array([1.0, 0.0], np.float32))
    assert reward == pytest.approx(-0.5) and not terminated  # effort: the mean square, 0.5
    assert env.step(np.zeros(2, np.float32))[2]  # ended by the hook set later
    with pytest.raises(ValueError, match="needs a world with a pose"):
        gym.make("WorldModel-Robot-v0", **TINY).unwrapped.termination_fn = PoseReached([0, 0])
    assert isinstance(inner.reward_fn, ActionCost) and inner.vector.reward_fn is inner.reward_fn
    assert inner.max_episode_steps is None  # gym.make's TimeLimit holds the limit, if any
    own = WorldModelEnv(world="driving", max_episode_steps=2, **TINY)  # a limit in its state
    own.max_episode_steps = 3  # set later: the steps read it
    own.reset(seed=0)
    assert [own.step(np.zeros(2, np.float32))[3] for _ in range(3)] == [False, False, True]
    with pytest.raises(ValueError, match="max_episode_steps must be"):
        own.max_episode_steps = 0


def test_hooks_get_copies_and_see_a_next_step_restart_as_its_start():
    """A hook may edit its arguments; a row restarting under NEXT_STEP comes as step 0, and a
    hook that raises there still leaves the row restarted (it used to stay done for good)."""
    seen = []

    def vandal(prev_obs, action, obs, info):
        seen.append((info["step"].clone(), obs.clone(), info["pose"].clone()))
        for value in (prev_obs, action, obs, info["pose"], info["step"], info["effort"]):
            value.zero_()
        return torch.zeros(len(obs))

    def witness(prev_obs, action, obs, info):  # a later hook sees the step, not the edits
        going = info["step"] > 0  # (rows starting over ignore their action: it reads as idle)
        assert obs.any() and prev_obs.any()
        assert action[going].abs().sum(-1).all() and info["effort"][going].all()
        assert not action[~going].any()
        return torch.zeros(len(obs), dtype=torch.bool)

    env = WorldModelVectorEnv(
        2,
        world="driving",
        **TINY,
        max_episode_steps=2,
        reward_fn=[vandal, vandal],
        termination_fn=witness,
    )
    ref = WorldModelVectorEnv(2, world="driving", **TINY, max_episode_steps=2)
    steer = np.array([[0.5, 0.2], [-0.3, 0.0]], np.float32)
    for e in (env, ref):
        e.reset(seed=0)
    for _ in range(3):  # the third step restarts both rows
        obs, _, _, _, info = env.step(steer)
        want, _, _, _, want_info = ref.step(steer)
        assert np.array_equal(obs, want) and np.array_equal(info["pose"], want_info["pose"])
    step, frame, pose = seen[-1]
    assert step.tolist() == [0, 0] and np.array_equal(frame.numpy(), obs)
    assert np.array_equal(pose.numpy(), info["pose"])

    def by_step(prev_obs, action, obs, info):  # a target per step of the episode
        return torch.tensor([1.0, 2.0])[info["step"] - 1]

    env = WorldModelVectorEnv(1, world="driving", **TINY, max_episode_steps=2, reward_fn=by_step)
    env.reset(seed=0)
    for _ in range(5):  # steps 1, 2, restart (step 0 reads index -1), 1, 2
        env.step(np.zeros((1, 2), np.float32))
    env.reward_fn = lambda *args: 1 / 0
    with pytest.raises(ZeroDivisionError):
        env.step(np.zeros((1, 2), np.float32))  # restarts the row, then the hook raises
    assert env.get_state()["steps"].tolist() == [0] and not env.done.any()


@pytest.mark.skipif(sys.version_info < (3, 11), reason="exception notes are Python 3.11+")
def test_an_error_inside_a_hook_names_the_hook():
    def broken(prev_obs, action, obs, info):
        raise KeyError("no such entry")

    env = WorldModelVectorEnv(1, world="driving", **TINY, reward_fn=broken)
    env.reset(seed=0)
    with pytest.raises(KeyError) as caught:
        env.step(np.zeros((1, 2), np.float32))
    assert any("reward hook" in note and "broken" in note for note in caught.value.__notes__)


def test_a_broken_hook_is_a_clear_error():
    env = WorldModelVectorEnv(2, world="driving", **TINY, reward_fn=lambda *a: np.zeros(3))
    env.reset(seed=0)
    with pytest.raises(ValueError, match=r"expected \(2,\)"):
        env.step(np.zeros((2, 2), np.float32))
    huge = lambda *a: np.full(2, 1e308)  # noqa: E731
    env.reward_fn = [huge, huge]  # each finite, their sum not
    with pytest.raises(ValueError, match="the reward hooks' sum overflows float64"):
        env.step(np.zeros((2, 2), np.float32))


def random_heading(rngs):
    """An initial-conditions hook: each episode starts up to 10 degrees off the road."""
    return {"heading": [rng.uniform(-10.0, 10.0) for rng in rngs]}


def test_start_fn_sets_every_start_seeded_and_reset_options_win():
    env = WorldModelVectorEnv(
        3,
        world="driving",
        start_fn=random_heading,
        autoreset_mode=AutoresetMode.SAME_STEP,
        max_episode_steps=2,
        **TINY,
    )
    _, info = env.reset(seed=0)
    headings = info["pose"][:, 2].copy()
    assert len(set(headings.tolist())) == 3 and np.abs(headings).max() <= 10
    assert np.array_equal(env.reset(seed=0)[1]["pose"][:, 2], headings)  # seeded
    assert not np.array_equal(env.reset(seed=1)[1]["pose"][:, 2], headings)
    _, info = env.reset(seed=0, options={"heading": 5.0, "env_idx": [1]})
    assert info["pose"][1, 2] == 5.0  # an option given to reset wins
    env.reset(seed=0)
    zero = np.zeros((3, 2), np.float32)
    env.step(zero)
    _, _, _, truncated, info = env.step(zero)  # autoreset: new episodes from start_fn
    assert truncated.all() and (info["pose"][:, :2] == 0).all()
    assert np.abs(info["pose"][:, 2]).max() > 0 and not np.array_equal(info["pose"][:, 2], headings)
    assert env.fork(0, 2).start_fn is random_heading


def test_start_fn_can_pick_the_start_image_and_a_bad_one_changes_nothing():
    pictures = np.stack([np.full((32, 32, 3), v, np.uint8) for v in (40, 200)])
    env = WorldModelVectorEnv(
        2, world="citywalk", start_fn=lambda rngs: {"image": pictures[: len(rngs)]}, **TINY
    )
    obs, _ = env.reset(seed=0)
    assert np.array_equal(obs, pictures)
    before = env.get_state()
    env.start_fn = lambda rngs: {"heading": 3.0}  # the city walk has no start heading
    with pytest.raises(ValueError, match="start_fn must return .*unknown reset options"):
        env.reset(seed=1)
    env.start_fn = lambda rngs: [1, 2]
    with pytest.raises(ValueError, match="start_fn must return a dict"):
        env.reset(seed=1)
    assert rows_equal(env.get_state(), before, [0, 1])

    def emptying(rngs):  # a hook that consumes its list: the rows keep their generators
        while rngs:
            rngs.pop().random()
        return {}

    env.start_fn = emptying
    env.reset(seed=1)
    assert all(rng is not None for rng in env._rngs)


@pytest.mark.parametrize(
    ("world", "kwargs", "match"),
    [
        ("driving", {"reward_fn": 5}, "reward_fn must be a hook"),
        ("driving", {"reward_fn": "goal"}, "reward_fn must be a hook .* got str 'goal'"),
        ("driving", {"termination_fn": [PoseReached([1, 0]), "no"]}, "termination_fn must be"),
        ("driving", {"start_fn": 3}, "start_fn must be a callable"),
        ("driving", {"reward_fn": GoalImageSimilarity(np.zeros((3, 8, 8, 3), np.uint8))}, "3 goal"),
        ("robot", {"reward_fn": PoseDistance([1, 0])}, "PoseDistance needs a world with a pose"),
        ("robot", {"termination_fn": PoseReached([1, 0])}, "needs a world with a pose"),
        ("citywalk", {"reward_fn": [ActionCost(), LaneCentre(4.0)]}, "LaneCentre needs"),
        ("driving", {"reward_fn": PoseDistance(np.zeros((3, 2)))}, "3 targets .one per row. for 2"),
    ],
)
def test_hooks_that_cannot_serve_the_env_are_refused_when_it_is_made(world, kwargs, match):
    with pytest.raises(ValueError, match=match):
        WorldModelVectorEnv(2, world=world, **kwargs, **TINY)


def test_a_start_fn_that_fails_at_an_autoreset_raises_before_the_model_steps():
    calls = []

    def start_fn(rngs):
        calls.append(len(rngs))
        return {"speed": 99.0 if len(calls) > 1 else 20.0}  # past max_speed at the autoreset

    env = WorldModelVectorEnv(2, world="driving", max_episode_steps=1, start_fn=start_fn, **TINY)
    env.reset(seed=0)
    act = np.zeros((2, 2), np.float32)
    env.step(act)  # both rows truncated: they reset at the next step
    before = snapshot(env)
    with pytest.raises(ValueError, match="speed"):
        env.step(act)
    after = snapshot(env)
    assert calls == [2, 2] and before["steps"].tolist() == after["steps"].tolist() == [1, 1]
    assert torch.equal(before["engine"]["cache"]["k"], after["engine"]["cache"]["k"])


def test_start_fns_and_hook_values_given_as_device_tensors_are_read():
    """A torch start_fn or hook target worked on the CPU and was refused on a GPU."""
    picture = np.full((32, 32, 3), 90, np.uint8)
    start = lambda rngs: {"image": on_device(picture), "speed": on_device([20.0] * len(rngs))}  # noqa: E731
    env = WorldModelVectorEnv(2, world="driving", start_fn=start, **TINY)
    _, infos = env.reset(seed=0)
    assert infos["pose"][:, 3].tolist() == [20.0, 20.0]
    target = torch.tensor([0.1, 1e7 + 0.3], dtype=torch.float64)  # not rounded to float32
    assert PoseDistance(on_device(target)).target.tolist() == [0.1, 1e7 + 0.3]
    assert PoseDistance([[on_device(0.1), on_device(2.0)]]).target.tolist() == [[0.1, 2.0]]
    assert ActionCost(on_device(torch.tensor(0.1, dtype=torch.float64))).weight == 0.1
