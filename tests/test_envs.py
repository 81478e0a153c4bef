"""Gymnasium contracts of the environments, on tiny random-weight models."""

from __future__ import annotations

import re
import sys
import types
import warnings

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.error import DependencyNotInstalled
from gymnasium.utils.env_checker import check_env
from gymnasium.vector import AutoresetMode
from helpers import TINY, CountingEngine, counting_env, rows_equal, snapshot, value

import gym_worldmodel  # noqa: F401  (registers the ids)
from gym_worldmodel.envs import (
    LaneCentre,
    TorchEpisodeStatistics,
    WorldModelEnv,
    WorldModelVectorEnv,
)
from gym_worldmodel.envs.actions import ActionError, rpy_to_rotation_delta
from gym_worldmodel.envs.registration import IDS
from gym_worldmodel.models import WorldModel, WorldModelConfig


@pytest.mark.parametrize("env_id", sorted(IDS))
def test_check_env_passes_without_warnings(env_id, monkeypatch):
    monkeypatch.setenv("SDL_VIDEODRIVER", "dummy")  # check_env makes it with "human" too: a window
    env = gym.make(env_id, **TINY)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        check_env(env.unwrapped)  # made by gym.make, so it has a spec: render checks run too
    assert [str(w.message) for w in caught] == []
    env.close()


@pytest.mark.parametrize("env_id", sorted(IDS))
def test_same_seed_same_rollout_over_the_registry(env_id):
    def rollout(seed):
        env = gym.make(env_id, **TINY)
        env.action_space.seed(seed)
        obs, _ = env.reset(seed=seed)
        frames, rewards = [obs], []
        for _ in range(4):
            obs, reward, *_ = env.step(env.action_space.sample())
            frames.append(obs)
            rewards.append(reward)
        env.close()
        return np.stack(frames), rewards

    a, b, c = rollout(3), rollout(3), rollout(4)
    assert np.array_equal(a[0], b[0]) and a[1] == b[1]
    assert not np.array_equal(a[0], c[0])


def test_a_seeded_reset_seeds_the_vector_envs_own_generator_as_gymnasiums_do():
    """A user's loop may draw its noise from ``envs.np_random``: reproducible from the seed."""
    draws = []
    for seed in (5, torch.tensor(5), 6):  # a 0-d tensor is a seed too (the rows take it)
        envs = gym.make_vec("WorldModel-CityWalk-v0", num_envs=2, **TINY)
        envs.reset(seed=seed)
        draws.append((envs.np_random_seed, int(envs.np_random.integers(1 << 62))))
    assert draws[0] == draws[1] and draws[0][0] == 5 and draws[2][1] != draws[0][1]
    envs.reset(seed=[1, 2])  # per-row seeds seed the rows only
    assert envs.np_random_seed == 6
    # a gym.make env's too, from a stream apart from the one its row starts from
    env = gym.make("WorldModel-CityWalk-v0", **TINY)
    env.reset(seed=5)
    row_stream = np.random.default_rng(5).integers(1 << 62)
    assert env.unwrapped.np_random_seed == 5
    assert int(env.unwrapped.np_random.integers(1 << 62)) == draws[0][1] != row_stream


@pytest.mark.parametrize(
    ("kwargs", "hint"),
    [
        ({"num_envs": 2}, r"gym.make_vec\(id, num_envs=N\)$"),
        ({"autoreset_mode": "SameStep"}, r"vector_kwargs=\{'autoreset_mode': ...\}"),
    ],
)
def test_a_single_env_given_a_vector_envs_option_names_how_to_make_one(kwargs, hint):
    with pytest.raises(TypeError, match=hint):
        WorldModelEnv(world="citywalk", **TINY, **kwargs)


@pytest.mark.parametrize("world", ["citywalk", "robot", "driving"])
def test_vector_row_equals_single_env(world):
    vec = WorldModelVectorEnv(3, world=world, **TINY)
    single = WorldModelEnv(world=world, **TINY)
    vec.action_space.seed(0)
    obs_v, _ = vec.reset(seed=7)  # rows seeded 7, 8, 9
    obs_s, info_s = single.reset(seed=7)
    assert np.array_equal(obs_v[0], obs_s)
    for _ in range(4):
        actions = vec.action_space.sample()
        obs_v, rew_v, *_ = vec.step(actions)
        row0 = {k: v[0] for k, v in actions.items()} if isinstance(actions, dict) else actions[0]
        obs_s, rew_s, *_, info_s = single.step(row0)
        assert np.array_equal(obs_v[0], obs_s)
    if world != "robot":
        assert np.allclose(vec._infos()["pose"][0], info_s["pose"])


def test_async_vectorisation_works_after_torch_has_run_in_the_parent():
    """Gymnasium's AsyncVectorEnv forks one process per env; a child forked after torch's thread
    pool ran (a world stepped, any convolution) used to hang at its first step."""
    import subprocess

    code = (
        "import gymnasium as gym, numpy as np, torch, gym_worldmodel\n"
        "torch.nn.functional.conv2d(torch.randn(8, 16, 64, 64), torch.randn(16, 16, 3, 3))\n"
        "kw = dict(model='random-tiny')\n"
        "env = gym.make('WorldModel-CityWalk-v0', **kw); env.reset(seed=0); env.step([1, 0])\n"
        "envs = gym.make_vec('WorldModel-CityWalk-v0', 2, vectorization_mode='async', **kw)\n"
        "envs.reset(seed=0)\n"
        "print(envs.step(np.array([[1, 0], [0, 1]]))[0].shape)\n"
        "envs.close()\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "(2, 32, 32, 3)"


def test_make_vec_uses_the_native_vector_env():
    envs = gym.make_vec("WorldModel-Driving-v0", num_envs=4, **TINY)
    assert isinstance(envs.unwrapped, WorldModelVectorEnv)
    assert envs.metadata["autoreset_mode"] == AutoresetMode.NEXT_STEP
    obs, info = envs.reset(seed=1)
    assert obs.shape == (4, 32, 32, 3) and obs.dtype == np.uint8
    obs, rewards, terminated, truncated, info = envs.step(envs.action_space.sample())
    assert rewards.shape == (4,) and info["pose"].shape == (4, 4)
    envs.close()


def test_call_get_attr_and_set_attr_answer_row_by_row_as_a_sync_vector_env():
    """Gymnasium's contract: a tuple of one value per sub-env, here per row of one env."""
    kw = dict(num_envs=2, render_mode="rgb_array", reward_fn=LaneCentre(4.0), **TINY)
    native = gym.make_vec("WorldModel-Driving-v0", **kw).unwrapped
    sync = gym.make_vec("WorldModel-Driving-v0", vectorization_mode="sync", **kw)
    for envs in (native, sync):
        envs.reset(seed=0)
        envs.step(np.array([[0.5, 0.2], [-0.3, 0.0]], np.float32))
    for name in ("render", "idle_action"):  # each row's own, as each sub-env's
        ours, theirs = native.call(name), sync.call(name)
        assert isinstance(ours, tuple) and len(ours) == 2
        assert all(np.array_equal(a, b) for a, b in zip(ours, theirs, strict=True))
    for name in ("observation_space", "action_space", "render_mode"):
        assert native.get_attr(name) == sync.get_attr(name)
    assert native.get_attr("spec")[1].id == sync.get_attr("spec")[1].id == "WorldModel-Driving-v0"
    assert native.call("max_episode_steps") == (native.max_episode_steps,) * 2  # shared
    states = native.call("get_state")  # methods that take env_idx: once per row
    assert [s["steps"].tolist() for s in states] == [[1], [1]]
    assert not np.array_equal(states[0]["frames"], states[1]["frames"])
    assert native.call("set_state", states[1]) == (None, None)  # every row gets row 1's
    assert np.array_equal(native.render()[0], sync.call("render")[1])
    for name in ("reset", "step", "fork", "close", "reward_fn"):  # every row at once
        with pytest.raises(ValueError, match=rf"call\('{name}'\): .*envs.unwrapped.{name}\("):
            native.call(name)
    with pytest.raises(TypeError, match="with each row's env_idx itself"):
        native.call("get_state", [0])
    with pytest.raises(TypeError, match="is an attribute, not a method"):
        native.call("render_mode", 1)
    native.set_attr("max_episode_steps", 7)  # one value for every row
    native.set_attr("max_episode_steps", [5, 5])  # or one per row, all one value
    assert native.max_episode_steps == 5
    for values, match in (
        ([4, 6], r"holds one max_episode_steps, but rows \[1\] got other values than row 0"),
        ([4, 4, 4], "one value per row: expected 2, got 3"),
        (-5, "max_episode_steps"),  # the attribute's own check
    ):
        with pytest.raises(ValueError, match=match):
            native.set_attr("max_episode_steps", values)
    assert native.max_episode_steps == 5  # refused: unchanged
    native.set_attr("my_offsets", (np.zeros(3), np.zeros(3)))  # equal arrays are one value
    with pytest.raises(ValueError, match=r"rows \[1\] got other values"):
        native.set_attr("my_offsets", (np.zeros(3), np.ones(3)))
    with pytest.raises(AttributeError, match="the spaces are the world's"):
        native.set_attr("observation_space", native.single_observation_space)
    assert native.get_attr("observation_space")[0] is native.single_observation_space
    native.close()
    sync.close()


def test_a_step_limit_of_none_is_the_ids_in_every_mode_as_gym_make_reads_it():
    """make_vec hands a vector entry point max_episode_steps=None as given; sync, async and
    gym.make read it as the id's limit, and so does the native vector env's entry point."""
    limit = gym.spec("WorldModel-Driving-v0").max_episode_steps
    for given, want in ((None, limit), (-1, None), (7, 7)):
        envs = gym.make_vec("WorldModel-Driving-v0", 1, max_episode_steps=given, **TINY)
        assert envs.unwrapped.max_episode_steps == want
    default = gym.make_vec("WorldModel-Driving-v0", 1, **TINY)
    assert default.unwrapped.max_episode_steps == limit
    for made in (default, gym.make("WorldModel-Driving-v0", **TINY)):  # specs serialise
        assert gym.envs.registration.EnvSpec.from_json(made.spec.to_json()).id == made.spec.id
    assert WorldModelVectorEnv(1, world="driving", **TINY).max_episode_steps is None


@pytest.mark.parametrize("mode", [AutoresetMode.NEXT_STEP, AutoresetMode.SAME_STEP])
def test_gymnasiums_vector_wrappers_run_on_the_native_env(mode):
    """The CleanRL stack: episode statistics, clipped actions and scaled rewards."""

    def make():
        kw = dict(autoreset_mode=mode, max_episode_steps=3, reward_fn=LaneCentre(4.0), **TINY)
        return gym.make_vec("WorldModel-Driving-v0", num_envs=2, **kw)

    wild = np.array([[3.0, 0.0], [-0.2, -5.0]], np.float32)  # out of the box: clipped
    plain = make()
    plain.reset(seed=0)
    raw = [plain.step(np.clip(wild, -1, 1))[1] for _ in range(3)]
    plain.close()
    envs = gym.wrappers.vector.RecordEpisodeStatistics(make())
    scaled = gym.wrappers.vector.NormalizeReward(gym.wrappers.vector.ClipAction(envs))
    scaled.reset(seed=0)
    for _ in range(3):
        _, reward, _, truncated, info = scaled.step(wild)
    assert truncated.tolist() == [True, True] and info["_episode"].tolist() == [True, True]
    assert info["episode"]["l"].tolist() == [3, 3]
    # the statistics count the hooks' own rewards; NormalizeReward scales what the agent sees
    assert np.allclose(info["episode"]["r"], sum(raw)) and not np.allclose(reward, raw[-1])
    if mode == AutoresetMode.NEXT_STEP:  # Gymnasium's NormalizeObservation takes no other
        obs, _ = gym.wrappers.vector.NormalizeObservation(scaled).reset(seed=1)
        assert obs.dtype == np.float32 and obs.shape == (2, 32, 32, 3)
    scaled.close()


@pytest.mark.parametrize("mode", [AutoresetMode.NEXT_STEP, AutoresetMode.SAME_STEP])
def test_torch_episode_statistics_keep_gymnasiums_books_on_the_device(mode):
    """With output="torch", TorchEpisodeStatistics gives what Gymnasium's wrapper gives for
    NumPy returns: rows ending at different steps, a termination hook, a partial reset."""

    def make(output):
        return gym.make_vec(
            "WorldModel-Driving-v0",
            num_envs=3,
            autoreset_mode=mode,
            max_episode_steps=4,
            output=output,
            reward_fn=lambda prev, action, obs, info: info["step"].double() * 0.5 + 1.0,
            termination_fn=lambda prev, action, obs, info: (
                info["step"] == 2 + (info["pose"][:, 1] < 0)
            ),
            **TINY,
        )

    numpy_envs = gym.wrappers.vector.RecordEpisodeStatistics(make("numpy"))
    torch_envs = TorchEpisodeStatistics(make("torch"))
    actions = np.random.default_rng(0).uniform(-0.3, 0.3, (9, 3, 2)).astype(np.float32)
    ended = 0
    for envs in (numpy_envs, torch_envs):
        envs.reset(seed=0)
    for t, action in enumerate(actions):
        if t == 5:  # a partial reset restarts those rows' books only
            for envs in (numpy_envs, torch_envs):
                envs.reset(options={"reset_mask": np.array([False, True, False])})
        ref = numpy_envs.step(action)[-1]
        got = torch_envs.step(torch.from_numpy(action))[-1]
        assert ("episode" in got) == ("episode" in ref) and ("_episode" in got) == (
            "episode" in ref
        )
        if "episode" in ref:
            assert got["_episode"].tolist() == ref["_episode"].tolist()
            ended += int(ref["_episode"].sum())
            for key in ("r", "l"):
                assert isinstance(got["episode"][key], torch.Tensor)
                np.testing.assert_allclose(got["episode"][key].numpy(), ref["episode"][key])
            assert (got["episode"]["t"] >= 0).all()
    assert ended >= 4  # rows ended at different steps, by the hook and by the time limit
    numpy_envs.close(), torch_envs.close()
    wrong = TorchEpisodeStatistics(make("numpy"))
    wrong.reset(seed=0)
    with pytest.raises(TypeError, match="output='torch'"):
        wrong.step(actions[0])
    wrong.close()


# --- autoreset semantics with a counting world ---


def test_autoreset_next_step():
    env = counting_env(AutoresetMode.NEXT_STEP)
    act = np.zeros((1, 2), np.float32)
    assert value(env.reset(seed=0)[0]) == [0]
    expected = [([1], False), ([2], True), ([0], False), ([1], False), ([2], True)]
    for want, trunc in expected:
        obs, reward, terminated, truncated, _ = env.step(act)
        assert (value(obs), bool(truncated[0]), bool(terminated[0])) == (want, trunc, False)
        assert reward[0] == 0.0


def test_next_step_autoreset_ignores_the_actions_of_rows_that_start_over():
    """As Gymnasium's SyncVectorEnv does: they go unchecked; the other rows' are checked."""
    env = counting_env(AutoresetMode.NEXT_STEP, num_envs=2, max_steps=1)
    env.reset(seed=0)
    env.step(np.zeros((2, 2), np.float32))  # both rows end
    bad = np.array([[np.nan, 0.0], [5.0, 0.0]], np.float32)
    obs, reward, terminated, truncated, _ = env.step(bad)
    assert value(obs) == [0, 0] and not (reward.any() or terminated.any() or truncated.any())
    assert np.isnan(bad[0, 0])  # the caller's batch is left as it was
    with pytest.raises(ValueError, match=r"finite values, got nan at entry 0 in rows \[0\]"):
        env.step(bad)  # now the rows step: the same actions are refused
    assert value(env.step(np.zeros((2, 2), np.float32))[0]) == [1, 1]


def test_autoreset_same_step():
    env = counting_env(AutoresetMode.SAME_STEP)
    act = np.zeros((1, 2), np.float32)
    env.reset(seed=0)
    obs, _, _, truncated, info = env.step(act)
    assert value(obs) == [1] and not truncated[0] and "final_obs" not in info
    obs, _, _, truncated, info = env.step(act)
    assert value(obs) == [0] and truncated[0]  # reset obs, terminal obs in info
    assert info["_final_obs"].tolist() == [True] and info["final_obs"][0][0, 0, 0] == 2
    assert info["final_info"]["step"][0] == 2 and info["step"][0] == 0
    assert info["final_info"]["_step"].tolist() == [True]
    assert value(env.step(act)[0]) == [1]


def test_same_step_final_info_has_gymnasiums_layout():
    """As SyncVectorEnv gives it: batched values and ``_key`` masks, zero in rows not done."""
    env = counting_env(AutoresetMode.SAME_STEP, num_envs=2, max_steps=2)
    env.reset(seed=0, options={"reset_mask": np.array([True, True])})
    env.step(np.zeros((2, 2), np.float32))
    env.reset(options={"env_idx": [1]})  # row 1 is a step behind: only row 0 ends next
    _, _, _, truncated, info = env.step(np.zeros((2, 2), np.float32))
    final = info["final_info"]
    assert truncated.tolist() == [True, False] and isinstance(final, dict)
    assert final["_step"].tolist() == [True, False] and final["_pose"].tolist() == [True, False]
    assert final["step"].tolist() == [2, 0] and final["pose"].shape == (2, 4)
    assert not final["pose"][1].any()
    assert info["final_obs"][1] is None and info["final_obs"][0].shape == (32, 32, 3)


def test_autoreset_disabled_needs_a_partial_reset():
    env = counting_env(
        AutoresetMode.DISABLED,
        num_envs=2,
        max_steps=None,
        termination_fn=lambda p, a, o, i: i["step"].numpy() >= np.array([1, 3]),
    )
    act = np.zeros((2, 2), np.float32)
    env.reset(seed=0)
    obs, _, terminated, _, _ = env.step(act)
    assert terminated.tolist() == [True, False]
    with pytest.raises(RuntimeError, match="reset_mask"):
        env.step(act)
    obs, _ = env.reset(options={"reset_mask": np.array([True, False])})
    assert value(obs) == [0, 1]  # row 1 untouched
    assert value(env.step(act)[0]) == [1, 2]


def test_autoreset_mode_metadata_and_staggered_rows():
    env = counting_env(
        "NextStep",
        num_envs=2,
        max_steps=None,
        termination_fn=lambda p, a, o, i: i["step"].numpy() >= np.array([1, 2]),
    )
    assert env.metadata["autoreset_mode"] is AutoresetMode.NEXT_STEP
    act = np.zeros((2, 2), np.float32)
    env.reset(seed=0)
    seen = [value(env.step(act)[0]) for _ in range(4)]
    assert seen == [[1, 1], [0, 2], [1, 0], [0, 1]]


# --- partial reset, seeds, state and fork ---


@pytest.mark.parametrize("how", ["env_idx", "reset_mask"])
def test_partial_reset_leaves_other_rows_bitwise_unchanged(how):
    env = WorldModelVectorEnv(4, world="citywalk", **TINY)
    env.reset(seed=0)
    for _ in range(2):
        env.step(env.action_space.sample())
    before = snapshot(env)
    option = [1, 3] if how == "env_idx" else np.array([False, True, False, True])
    obs, info = env.reset(options={how: option})
    after = snapshot(env)
    assert rows_equal(before, after, [0, 2])
    assert info["step"].tolist() == [0, 0, 0, 0] and env._steps.tolist() == [2, 0, 2, 0]
    assert info["_step"].tolist() == [False, True, False, True]  # as SyncVectorEnv's
    assert not rows_equal(before, after, [1])


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_a_row_reset_alone_starts_as_in_a_full_reset_and_in_a_smaller_env(dtype):
    """Its start does not depend on how many rows reset with it (an autoreset resets one).

    The shipped world: the tiny model's convolutions are too narrow to take the CPU's other path.
    """
    picture = np.random.default_rng(0).integers(0, 256, (48, 40, 3), dtype=np.uint8)
    kwargs = dict(world="driving", obs_mode="chunk", dtype=dtype)
    env = WorldModelVectorEnv(2, **kwargs)
    env.reset(seed=10, options={"image": picture})
    full = snapshot(env)
    env.step(env.action_space.sample())
    env.reset(seed=10, options={"image": picture, "env_idx": [1]})
    again = snapshot(env)
    assert rows_equal(full, again, [1]) and torch.equal(again["latents"][1], full["latents"][1])
    alone = WorldModelVectorEnv(1, **kwargs)
    alone.reset(seed=10, options={"image": picture})
    assert rows_equal(full, snapshot(alone), [0])
    assert torch.equal(alone.get_state()["latents"][0], full["latents"][0])


def test_rgb_observations_are_the_chunks_last_frames_decoded_alone():
    """rgb decodes only each chunk's last frame: the same bits as the chunk mode's last frame.

    And their states move between the two: a chunk env's state gives an rgb env its last
    frames; an rgb env's state (one frame a row) is refused by a chunk env, which shows all.
    """
    kwargs = dict(world="citywalk", dtype="bfloat16")
    rgb, chunk = (WorldModelVectorEnv(2, obs_mode=m, **kwargs) for m in ("rgb", "chunk"))
    acts = np.random.default_rng(0).integers(0, 5, (3, 2, 2))
    first = [env.reset(seed=3)[0] for env in (rgb, chunk)]
    assert np.array_equal(first[0], first[1][:, -1])
    for a in acts:
        assert np.array_equal(rgb.step(a)[0], chunk.step(a)[0][:, -1])
    assert rgb.get_state()["frames"].shape[1] == 1
    rgb.set_state(chunk.get_state())
    assert torch.equal(rgb.get_state()["frames"], chunk.get_state()["frames"][:, -1:])
    assert np.array_equal(rgb.step(acts[0])[0], chunk.step(acts[0])[0][:, -1])
    with pytest.raises(ValueError, match="holds 1 frame"):
        chunk.set_state(rgb.get_state())


def test_a_row_is_not_moved_by_another_rows_reset_or_first_memory():
    """Row 0 never retrieves memory; row 1, reset, retrieves its start chunk: bf16, bit for bit.

    (Attention read the memory slots only while some row held memory, so row 1's first
    retrieval changed the keys, and in bf16 the bits, of row 0: the shipped city walk shows
    it, the tiny model does not.)
    """

    def row0(reset_at: int) -> np.ndarray:
        env = WorldModelVectorEnv(2, world="citywalk", dtype="bfloat16")
        env.reset(seed=0)
        frames = []
        for t in range(6):
            if t == reset_at:
                env.reset(options={"reset_mask": np.array([False, True])})
            frames.append(env.step(np.array([[1, 1], [2, 0]]))[0][0])
        return np.stack(frames)

    assert np.array_equal(row0(-1), row0(2))


def test_reset_options_may_be_tensors_as_array_libraries_hand_them_over():
    """Gymnasium's ArrayConversion turns reset options into the env's tensors (CUDA ones too)."""
    env = WorldModelVectorEnv(3, world="driving", **TINY, autoreset_mode=AutoresetMode.DISABLED)
    picture = np.random.default_rng(0).integers(0, 256, (40, 50, 3), dtype=np.uint8)
    obs, info = env.reset(seed=0, options={"image": picture, "speed": [10.0, 20.0, 30.0]})
    env.step(np.zeros((3, 2), np.float32))
    as_tensors = {"image": torch.from_numpy(picture), "speed": torch.tensor([10.0, 20.0, 30.0])}
    again, info_t = env.reset(seed=0, options=as_tensors)
    assert np.array_equal(again, obs) and np.array_equal(info_t["pose"], info["pose"])
    env.step(np.zeros((3, 2), np.float32))
    _, info = env.reset(options={"reset_mask": torch.tensor([False, True, False])})
    assert info["_step"].tolist() == [False, True, False]  # the reset rows' infos, as Gymnasium
    _, info = env.reset(options={"env_idx": torch.tensor([2])})
    assert info["_step"].tolist() == [False, False, True] and info["_pose"][2]
    assert env._steps.tolist() == [1, 0, 0]


def test_per_env_seeds_and_seed_list():
    env = WorldModelVectorEnv(3, world="robot", **TINY)
    a, _ = env.reset(seed=[5, 6, 7])
    b, _ = env.reset(seed=5)  # int seed: row i gets 5 + i
    assert np.array_equal(a, b)
    for seeds in (torch.arange(5, 8), torch.tensor(5), np.arange(5, 8)):  # a planner's seeds
        assert np.array_equal(env.reset(seed=seeds)[0], a)
    with pytest.raises(ValueError, match="num_envs=3"):
        env.reset(seed=[1, 2])
    for bad in (torch.tensor([5.0, 6.0, 7.0]), torch.tensor([True, False, True])):
        with pytest.raises(ValueError, match="non-negative ints"):
            env.reset(seed=bad)
    with pytest.raises(ValueError, match="num_envs must be an int"):  # only seeds: a count
        WorldModelVectorEnv(torch.tensor(2), world="robot", **TINY)  # stays a Python int


def test_a_photos_exif_orientation_is_applied(tmp_path):
    """A phone stores a portrait shot turned, with an EXIF tag that says how to show it."""
    from PIL import Image

    from gym_worldmodel.envs.pictures import pil_as_rgb

    photo = Image.new("RGB", (40, 30))  # stored 40 wide, 30 high
    photo.paste((255, 0, 0), (0, 0, 40, 10))  # the stored top: red
    exif = photo.getexif()
    exif[0x0112] = 6  # orientation: turn 90 degrees clockwise to show
    photo.save(tmp_path / "portrait.jpg", exif=exif)
    with Image.open(tmp_path / "portrait.jpg") as opened:
        upright = pil_as_rgb("image", opened)
    assert upright.shape == (40, 30, 3)  # shown 30 wide, 40 high
    assert upright[:, -5:, 0].mean() > 200 and upright[:, :5, 0].mean() < 50  # red on the right


def test_reset_from_the_users_image_and_frames():
    env = WorldModelVectorEnv(2, world="robot", **TINY)
    picture = np.random.default_rng(0).integers(0, 256, (100, 80, 3), dtype=np.uint8)
    obs, _ = env.reset(seed=0, options={"image": picture})
    assert obs.shape == (2, 32, 32, 3) and np.array_equal(obs[0], obs[1])
    assert abs(obs.mean() - picture.mean()) < 5
    stack = np.stack([picture, 255 - picture, picture])
    obs, _ = env.reset(seed=0, options={"frames": np.stack([stack, stack])})
    assert np.array_equal(obs[0], obs[1])
    # A wide photo is centre-cropped, not stretched; rows may bring pictures of different sizes.
    wide = np.zeros((40, 120, 3), np.uint8)
    wide[:, 40:80] = 255  # the centre square is white, the sides black
    obs, _ = env.reset(seed=0, options={"image": [wide, picture]})
    assert obs[0].mean() > obs[1].mean() > 64
    for bad in ([wide, picture, picture], [wide, picture[..., 0]]):
        with pytest.raises(ValueError, match=r"one \(H, W, 3\) per reset row"):
            env.reset(seed=0, options={"image": bad})


def test_a_picture_of_any_strides_is_taken_and_a_bad_one_is_named_as_given():
    picture = np.random.default_rng(0).integers(0, 256, (48, 40, 3), dtype=np.uint8)
    env = WorldModelEnv(world="robot", **TINY)
    for view in (picture[..., ::-1], picture[::-1], picture[:32, :32][:, ::-1]):  # BGR, flips
        obs, _ = env.reset(seed=0, options={"image": view})
        assert np.array_equal(obs, env.reset(seed=0, options={"image": view.copy()})[0])
    for bad, shape in [(picture[..., 0], (48, 40)), (picture[..., :1], (48, 40, 1))]:
        with pytest.raises(
            ValueError, match=re.escape(f"must be (H, W, 3) RGB, got shape {shape}")
        ):
            env.reset(seed=0, options={"image": bad})
    # The common mistakes are refused with the fix.
    alpha = np.concatenate([picture, picture[..., :1]], -1)
    for bad, fix in [
        (picture / 255, "(x * 255).round().clip(0, 255).astype(np.uint8)"),
        (picture.astype(np.int64), "x.astype(np.uint8)"),
        (picture[..., 0], "np.repeat(x[..., None], 3, axis=-1)"),
        (picture[..., :1], "np.repeat(x, 3, axis=-1)"),
        (alpha, "x[..., :3]"),
        (picture.transpose(2, 0, 1), "np.moveaxis(x, -3, -1)"),
    ]:
        for vector in (env.vector, None):  # as a vector env's row of one, and as a single env
            with pytest.raises(ValueError, match=re.escape(fix)):
                (vector or env).reset(seed=0, options={"image": bad})
    with pytest.raises(ValueError, match=r"frames must be one array, its pictures of one size"):
        env.reset(seed=0, options={"frames": [picture, picture[:30]]})
    for key, empty in (("frames", (0, 8, 8, 3)), ("image", (0, 8, 3))):
        with pytest.raises(ValueError, match=re.escape(f"{key} is empty: shape {empty}")):
            env.reset(seed=0, options={key: np.zeros(empty, np.uint8)})


def test_pil_pictures_of_any_mode_start_the_world_as_their_rgb():
    image = pytest.importorskip("PIL.Image")
    picture = np.random.default_rng(0).integers(0, 256, (48, 40, 3), dtype=np.uint8)
    rgb = image.fromarray(picture)
    env = WorldModelVectorEnv(2, world="robot", **TINY)
    for mode in ("L", "P", "RGBA", "CMYK"):
        converted = np.asarray(rgb.convert(mode).convert("RGB"))
        want = env.reset(seed=0, options={"image": converted})[0]
        got = env.reset(seed=0, options={"image": rgb.convert(mode)})[0]
        assert np.array_equal(got, want), mode
    deep = image.fromarray(np.full((8, 8), 40000, np.uint16))  # 16 bits: PIL would clip it
    for mode, picture in (("I;16", deep), ("F", image.fromarray(np.full((8, 8), 0.5, "f4")))):
        with pytest.raises(ValueError, match=rf"mode '{re.escape(mode)}' \(more than 8 bits\)"):
            env.reset(seed=0, options={"image": picture})
    both = env.reset(seed=0, options={"image": [rgb.convert("L"), rgb.crop((0, 0, 30, 30))]})[0]
    single = WorldModelEnv(world="robot", **TINY)
    assert np.array_equal(single.reset(seed=0, options={"image": rgb.convert("L")})[0], both[0])


def test_torch_output_stays_on_the_device():
    env = WorldModelVectorEnv(2, world="driving", output="torch", obs_mode="chunk", **TINY)
    obs, _ = env.reset(seed=0)
    obs, reward, terminated, truncated, _ = env.step(np.zeros((2, 2), np.float32))
    assert isinstance(obs, torch.Tensor) and obs.shape == (2, 2, 32, 32, 3)
    assert isinstance(reward, torch.Tensor) and terminated.dtype == torch.bool


def test_latent_observations():
    env = WorldModelVectorEnv(1, world="driving", obs_mode="latent", **TINY)
    obs, _ = env.reset(seed=0)
    assert obs.shape == (1, 2, 4, 16, 16) and obs.dtype == np.float32
    assert env.single_observation_space.contains(obs[0])


POSE_IDS = sorted(i for i in IDS if "Robot" not in i)


@pytest.mark.parametrize("env_id", POSE_IDS)
@pytest.mark.parametrize("obs_mode", ["rgb+pose", "latent+pose"])
def test_pose_observations_pass_check_env_and_carry_the_info_pose(env_id, obs_mode, monkeypatch):
    monkeypatch.setenv("SDL_VIDEODRIVER", "dummy")  # check_env makes it with "human" too: a window
    env = gym.make(env_id, obs_mode=obs_mode, **TINY)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        check_env(env.unwrapped)
    assert [str(w.message) for w in caught] == []
    frames = obs_mode.split("+")[0]
    obs, info = env.reset(seed=0)
    assert set(obs) == {frames, "pose"} and env.observation_space.contains(obs)
    env.action_space.seed(0)
    for _ in range(3):
        obs, *_, info = env.step(env.action_space.sample())
        assert obs["pose"].dtype == np.float32 and env.observation_space.contains(obs)
        assert np.array_equal(obs["pose"], info["pose"].astype(np.float32))
    assert np.abs(obs["pose"][:2]).sum() > 0  # it moved


def test_pose_observations_through_the_vector_env_autoreset_and_torch_output():
    env = WorldModelVectorEnv(
        2,
        world="citywalk",
        obs_mode="rgb+pose",
        max_episode_steps=2,
        **TINY,
        autoreset_mode=AutoresetMode.SAME_STEP,
    )
    obs, _ = env.reset(seed=0)
    assert obs["rgb"].shape == (2, 32, 32, 3) and obs["pose"].shape == (2, 4)
    walk = np.tile(np.array([[1, 0]]), (2, 1))  # W: forward
    env.step(walk)
    obs, _, _, truncated, info = env.step(walk)
    assert truncated.all() and np.array_equal(obs["pose"], np.zeros((2, 4), np.float32))
    final = info["final_obs"][1]
    walked = 2 * env.config.dit.chunk_frames * env.head.move_m  # two steps forward, metres
    assert set(final) == {"rgb", "pose"} and final["pose"][0] == pytest.approx(walked)
    assert env.single_observation_space.contains(final)

    env = WorldModelVectorEnv(2, world="driving", obs_mode="chunk+pose", output="torch", **TINY)
    obs, _ = env.reset(seed=0)
    assert isinstance(obs["pose"], torch.Tensor) and obs["pose"].dtype == torch.float32
    assert obs["pose"][:, 3].tolist() == [25.0, 25.0]  # the start speed, m/s


def test_pose_observations_need_a_world_with_a_pose():
    with pytest.raises(ValueError, match="camera is fixed.*obs_mode='rgb'"):
        WorldModelVectorEnv(1, world="robot", obs_mode="rgb+pose", **TINY)
    with pytest.raises(ValueError, match="obs_mode must be one of"):
        WorldModelVectorEnv(1, world="citywalk", obs_mode="pose", **TINY)


def test_render_returns_the_current_frame_without_a_forward():
    env = WorldModelVectorEnv(2, world="driving", render_mode="rgb_array", **TINY)
    obs, _ = env.reset(seed=0)
    frames = env.render()
    assert isinstance(frames, tuple) and np.array_equal(frames[1], obs[1])
    single = gym.make("WorldModel-Driving-v0", render_mode="rgb_array", **TINY)
    obs, _ = single.reset(seed=0)
    assert np.array_equal(single.render(), obs)
    with pytest.raises(ValueError, match="renders 'rgb_array'.*'human'.*'sync'"):
        gym.make_vec("WorldModel-Driving-v0", num_envs=2, render_mode="rgb_array_list", **TINY)
    with pytest.raises(ValueError, match="render_mode must be one of"):
        WorldModelVectorEnv(1, world="driving", render_mode="rgb", **TINY)


def test_without_pygame_human_mode_names_the_extra_and_rgb_array_needs_none(monkeypatch):
    monkeypatch.setitem(sys.modules, "pygame", None)  # import pygame raises ImportError
    for make in (
        lambda: gym.make("WorldModel-Driving-v0", render_mode="human", **TINY),
        lambda: gym.make_vec("WorldModel-Driving-v0", num_envs=2, render_mode="human", **TINY),
    ):
        with pytest.raises(DependencyNotInstalled, match=r"pip install gym-worldmodel\[play\]"):
            make()
    env = gym.make("WorldModel-Driving-v0", render_mode="rgb_array", **TINY)
    obs, _ = env.reset(seed=0)
    assert np.array_equal(env.render(), obs)
    env.close()


# --- reward and termination hooks ---


# --- bad input: clear errors, state unchanged ---


BAD_ACTIONS = {  # for a 1-row env: the last of each is a batch of 2
    "citywalk": [
        np.array([[1.5, 0]]),
        np.array([[5, 0]]),
        np.array([[1, 0, 0]]),
        "W",
        np.array([[1, 0], [1, 0]]),
    ],
    "driving": [
        np.array([[np.nan, 0]]),
        np.array([[2.0, 0]]),
        np.zeros((1, 3)),
        np.array([[np.inf, 0]]),
        np.zeros((2, 2)),
    ],
    "robot": [
        np.full((1, 10), 1.2),
        np.zeros((1, 13)),
        {"world_vector": np.zeros(3)},
        np.zeros((2, 10)),
    ],
}


@pytest.mark.parametrize("world", sorted(BAD_ACTIONS))
def test_bad_actions_raise_and_leave_state_unchanged(world):
    env = WorldModelVectorEnv(1, world=world, **TINY)
    env.reset(seed=0)
    before = snapshot(env)
    for bad in BAD_ACTIONS[world]:
        with pytest.raises(ActionError, match="expected"):
            env.step(bad)
    after = snapshot(env)
    assert torch.equal(before["frames"], after["frames"]) and before["steps"] == after["steps"]
    assert all(
        torch.equal(before["engine"]["cache"][k], after["engine"]["cache"][k])
        for k in before["engine"]["cache"]
    )


def test_a_bad_action_names_its_rows_and_is_checked_before_the_float32_cast():
    env = WorldModelVectorEnv(3, world="driving", **TINY)
    env.reset(seed=0)
    before = snapshot(env)
    for bad, match in [
        ([[0, 0], [0, 0], [2.0, 0]], r"values in \[-1, 1\], got 2 at entry 0 in rows \[2\]"),
        ([[0, np.nan], [0, 0], [np.inf, 0]], r"finite values, got nan at entry 1 in rows \[0, 2\]"),
        (
            [[1e300, 0], [0, 0], [0, 0]],
            r"values in \[-1, 1\], got 1e\+300 at entry 0 in rows \[0\]",
        ),
    ]:
        with pytest.raises(ActionError, match=match):
            env.step(np.array(bad))
    keys = WorldModelVectorEnv(3, world="citywalk", **TINY)
    keys.reset(seed=0)
    with pytest.raises(ActionError, match=r"n = \[5, 5\], got \[0, 7\] in rows \[1\]"):
        keys.step(np.array([[0, 0], [0, 7], [1, 0]]))
    with pytest.raises(ActionError, match=r"expected integers, got 1.5 in rows \[1\]"):
        keys.step(np.array([[0, 0], [0, 1.5], [1, 0]]))  # whole floats pass: [[1.0, 2.0], ...]
    single = WorldModelEnv(world="citywalk", **TINY)
    single.reset(seed=np.int64(0))  # NumPy ints seed as Python ints do
    with pytest.raises(ActionError, match=r"got \[5, 0\]$"):  # one row: no row named
        single.step([5, 0])
    with pytest.raises(ActionError, match=r"expected integers, got nan$"):
        single.step([np.nan, 0])
    with pytest.raises(ActionError, match=r"in \[0, n\) for n = \[5, 5\], got 1e\+30$"):
        single.step([1e30, 0])  # past int64: the cast wrapped it to a negative number
    with pytest.raises(ActionError, match=r"n = \[5, 5\], got 18446744073709551615$"):
        single.step(np.full(2, 2**64 - 1, np.uint64))  # the cast made it -1
    with pytest.raises(ActionError, match="expected integers, got dtype timedelta64"):
        single.step(np.ones(2, "timedelta64[s]"))  # NumPy counts times as integers
    with pytest.raises(ActionError, match="expected real numbers, got dtype timedelta64"):
        env.step(np.zeros((3, 2), "timedelta64[s]"))
    robot = WorldModelEnv(world="robot", action_mode="dict", **TINY)
    robot.reset(seed=0)
    action = dict(robot.action_space.sample())
    action.pop("gripper_closedness_action")
    with pytest.raises(ActionError, match=r"lacks \['gripper_closedness_action'\]; expected"):
        robot.step(action)
    action["gripper_closedness_action"] = np.zeros(1, np.float32)
    robot.step(types.MappingProxyType(action))  # any mapping, a read-only view of one too
    look = WorldModelEnv(world="citywalk", action_mode="look", **TINY)
    look.reset(seed=0)
    with pytest.raises(ActionError, match=r"lacks \['look'\] and has unknown \['turn'\]"):
        look.step({"move": 1, "turn": 0})
    assert rows_equal(before, snapshot(env), [0, 1, 2])


def test_a_batch_of_the_wrong_size_is_a_clear_error_not_a_broadcast():
    env = WorldModelVectorEnv(2, world="driving", **TINY)
    env.reset(seed=0)
    for bad in (np.zeros((1, 2)), np.zeros((3, 2))):
        with pytest.raises(ActionError, match="leading axis of 2"):
            env.step(bad)
    with pytest.raises(ActionError, match=r"got one env's action, shape \(2,\).* \(2, 2\)"):
        env.step(np.zeros(2))
    three = WorldModelVectorEnv(3, world="driving", **TINY)
    three.reset(seed=0)
    frames = three.config.dit.chunk_frames  # (F, 2): one env's frames, or F rows: not guessed
    with pytest.raises(ActionError, match=f"a leading axis of 3, got shape \\({frames}, 2\\)"):
        three.step(np.zeros((frames, 2)))


def test_torch_actions_are_read_whatever_their_grad():
    env = WorldModelVectorEnv(2, world="driving", **TINY)
    env.reset(seed=0)
    policy_out = torch.full((2, 2), 0.5, requires_grad=True) * 1.0
    a = env.fork(0, 1).step(policy_out[:1])[0]
    b = env.fork(0, 1).step(np.full((1, 2), 0.5, np.float32))[0]
    c = env.fork(0, 1).step(policy_out[:1].to(torch.bfloat16))[0]  # 0.5 is exact in bf16
    assert np.array_equal(a, b) and np.array_equal(a, c)


@pytest.mark.parametrize(
    "world, mode",
    [
        ("citywalk", "keys"),
        ("citywalk", "discrete"),
        ("citywalk", "look"),
        ("robot", "flat"),
        ("robot", "dict"),
        ("driving", None),
    ],
)
def test_idle_action_is_valid_costs_nothing_and_does_not_end(world, mode):
    env = WorldModelVectorEnv(3, world=world, action_mode=mode, **TINY)
    idle, head = env.idle_action(), env.head
    assert env.action_space.contains(idle)
    vec = head.encode(idle, 3, 2)
    assert head.effort(vec).tolist() == [0.0] * 3 and head.ends_episode(vec).tolist() == [False] * 3
    assert head.space.contains(head.idle_action())


def test_driving_starts_at_the_recorded_speed_or_the_one_asked_for():
    env = WorldModelVectorEnv(2, world="driving", **TINY)
    _, info = env.reset(seed=0)
    assert info["pose"][:, 3].tolist() == [25.0, 25.0]
    _, _, _, _, info = env.step(np.array([[0.5, 0.0], [-0.5, 0.0]], np.float32))
    assert (info["pose"][:, 0] > 0).all() and info["pose"][0, 2] > 0 > info["pose"][1, 2]
    _, info = env.reset(seed=0, options={"speed": [0.0, 10.0], "env_idx": [0, 1]})
    assert info["pose"][:, 3].tolist() == [0.0, 10.0]
    numbers_as_text = ("10", ["10", "20"], np.array(["10", "20"]))  # numpy would read them
    for bad in (-1.0, 41.0, np.nan, [1.0, 2.0, 3.0], "fast", True, [10.0, False], *numbers_as_text):
        with pytest.raises(ValueError, match="speed"):
            env.reset(options={"speed": bad})
    assert info["pose"][:, 3].tolist() == env._pose[:, 3].tolist()
    _, info = env.reset(seed=0, options={"heading": [5.0, -10.0], "speed": 20.0})
    assert info["pose"][:, 2:].tolist() == [[5.0, 20.0], [-10.0, 20.0]]
    for bad in (181.0, np.inf, [1.0], "left"):
        with pytest.raises(ValueError, match="heading"):
            env.reset(options={"heading": bad})
    assert info["pose"].tolist() == env._pose.tolist()
    with pytest.raises(ValueError, match=r"unknown reset options .* takes \['image', 'frames'\]"):
        WorldModelVectorEnv(1, world="citywalk", **TINY).reset(options={"speed": 1.0})
    with pytest.raises(ValueError, match="unknown reset options"):
        WorldModelVectorEnv(1, world="citywalk", **TINY).reset(options={"heading": 1.0})


def test_per_row_reset_options_follow_the_order_of_env_idx():
    env = WorldModelVectorEnv(4, world="driving", **TINY)
    env.reset(seed=0)
    env.reset(options={"env_idx": [3, 1], "speed": [10.0, 30.0]})
    assert env._pose[:, 3].tolist() == [25.0, 30.0, 25.0, 10.0]
    with pytest.raises(ValueError, match=r"env_idx names rows \[1\] more than once"):
        env.reset(options={"env_idx": [1, 2, 1], "speed": [1.0, 2.0, 3.0]})
    assert env._pose[:, 3].tolist() == [25.0, 30.0, 25.0, 10.0]  # the refused reset changed none
    pictures = [np.full((8, 8, 3), v, np.uint8) for v in (40, 200)]
    walk = WorldModelVectorEnv(3, world="citywalk", **TINY)
    walk.reset(seed=0)
    obs, _ = walk.reset(seed=[5, 6, 7], options={"env_idx": [2, 0], "image": pictures})
    one_by_one = WorldModelVectorEnv(3, world="citywalk", **TINY)
    one_by_one.reset(seed=0)
    one_by_one.reset(seed=[5, 6, 7], options={"env_idx": [0], "image": pictures[1]})
    alone, _ = one_by_one.reset(seed=[5, 6, 7], options={"env_idx": [2], "image": pictures[0]})
    np.testing.assert_array_equal(obs, alone)


def test_a_world_whose_anchors_move_with_the_car_reads_the_envs_own_poses():
    """With ``anchor_ego`` the model's action vectors carry, after the driving columns, the
    scene shift the env's own poses imply: over a step they add up to how far ``info["pose"]``
    moved, in pixels (32 px frames of the 32 m view: 1 px per metre; image y down)."""
    model = WorldModel(WorldModelConfig.tiny()).with_anchor_ego(("driving",), (0, 1, 0, 1))
    env = WorldModelVectorEnv(2, world="driving", model=model)
    _, info = env.reset(seed=0, options={"speed": [10.0, 20.0]})
    seen, engine_step = [], env._engine.step
    env._engine.step = lambda vec, **kw: seen.append(vec) or engine_step(vec, **kw)
    actions = np.array([[0.5, 0.0], [-0.2, 1.0]], np.float32)
    _, _, _, _, after = env.step(actions)
    (vec,) = seen
    assert vec.shape == (2, 2, 4) and np.array_equal(
        vec[..., :2], np.repeat(actions[:, None], 2, 1)
    )
    moved = after["pose"][:, :2] - info["pose"][:, :2]
    np.testing.assert_allclose(vec[..., 2:].sum(1), moved * [1.0, -1.0], rtol=1e-5)
    assert vec[0, 0, 2] < vec[1, 0, 2] and vec[0, 0, 3] < 0 < vec[1, 1, 3]  # left turn: scene down


def test_driving_pose_circles_at_the_bicycle_models_radius():
    """Held steering at a held speed: each frame the car moves speed * dt along its heading plus
    the slip angle and turns speed * sin(slip) / (length / 2) * dt, so its positions are the
    corners of a regular polygon (a circle of radius (length / 2) / sin(slip) as dt -> 0)."""
    from gym_worldmodel.envs.pose import integrate_driving

    steer, speed, dt = 0.5, 20.0, 1 / 15
    beta = np.arctan(0.5 * np.tan(np.radians(steer * 30.0)))
    pose, points = np.array([[0.0, 0.0, 0.0, speed]]), [np.zeros(2)]
    for _ in range(400):
        pose = integrate_driving(pose, np.array([[[steer, 0.0]]]), dt, 30.0, 3.0, 40.0)
        points.append(pose[0, :2])
    side, turn = speed * dt, speed * np.sin(beta) / 2.5 * dt  # half of highway-env's 5 m car
    radius = side / (2 * np.sin(turn / 2))
    first = np.array([np.cos(beta), np.sin(beta)])  # the first side, slipping left of +x
    centre = first * side / 2 + np.array([-first[1], first[0]]) * radius * np.cos(turn / 2)
    np.testing.assert_allclose(np.linalg.norm(np.array(points) - centre, axis=1), radius)
    assert abs(radius - 2.5 / np.sin(beta)) < 0.01 * radius
    assert pose[0, 3] == speed


def _rotation_matrix(axis_angle):
    """Rodrigues' formula: the rotation an axis-angle vector ``(3,)`` names."""
    angle = np.linalg.norm(axis_angle)
    k = axis_angle / max(angle, 1e-12)
    cross = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    return np.eye(3) + np.sin(angle) * cross + (1 - np.cos(angle)) * cross @ cross


def test_roll_pitch_yaw_convert_to_the_robots_axis_angle_rotations():
    """The same rotation, Rz(yaw) @ Ry(pitch) @ Rx(roll), over RT-1's whole range."""
    rpy = np.random.default_rng(0).uniform(-np.pi / 2, np.pi / 2, (200, 3))
    for (roll, pitch, yaw), vector in zip(rpy, rpy_to_rotation_delta(rpy), strict=True):
        rx = _rotation_matrix(np.array([roll, 0.0, 0.0]))
        ry, rz = _rotation_matrix(np.array([0.0, pitch, 0.0])), _rotation_matrix([0.0, 0.0, yaw])
        assert np.allclose(_rotation_matrix(vector.astype(np.float64)), rz @ ry @ rx, atol=1e-6)
    assert np.allclose(rpy_to_rotation_delta([0.0, 0.0, -0.3]), [0.0, 0.0, -0.3])  # one axis
    assert np.array_equal(rpy_to_rotation_delta(np.zeros((2, 3, 3))), np.zeros((2, 3, 3)))
    with pytest.raises(ValueError, match=r"rpy must be finite \(\.\.\., 3\)"):
        rpy_to_rotation_delta([0.1, np.nan, 0.0])


def test_rt1_dict_actions():
    env = WorldModelVectorEnv(2, world="robot", action_mode="dict", **TINY)
    env.reset(seed=0)
    action = env.action_space.sample()
    assert set(action) >= {"world_vector", "rotation_delta", "terminate_episode"}
    action["terminate_episode"] = np.array([1, 1])  # both rows go on (a row that ended would
    env.step(action)  # start over at the next step, its action ignored and so unchecked)
    vec = env.head.encode(action, 2, 2)
    assert vec.shape == (2, 2, 13) and np.allclose(vec[..., 10:].sum(-1), 1.0)
    bad = dict(action, rotation_delta=np.full((2, 3), 2.0))  # beyond pi/2 radians
    with pytest.raises(ActionError, match="rotation_delta"):
        env.step(bad)
    with pytest.raises(ActionError, match="the dict lacks"):
        env.step({"world_vector": np.zeros((2, 3))})
    env.reset(seed=0)
    stop = dict(action, terminate_episode=np.array([0, 1]))  # RT-1: 0 ends the episode
    for flag in (np.array([0.0, 1.0], np.float32), np.array([False, True])):  # OXE: 1 ends it
        with pytest.raises(ActionError, match=r"expected ints.*1\.0 or True = terminate"):
            env.step(dict(stop, terminate_episode=flag))
    assert env.step(stop)[2].tolist() == [True, False]
    env.reset(seed=0)
    one_hot = dict(action, terminate_episode=np.array([[0, 1, 0], [0, 1, 0]]))  # "arm" in RT-1
    with pytest.raises(ActionError, match=r"terminate_episode: expected one int per env.*argmax"):
        env.step(one_hot)  # it used to read as per-frame values: frame 0 terminated
    single = gym.make("WorldModel-Robot-v0", action_mode="dict", model="random-tiny")
    single.reset(seed=0)
    with pytest.raises(ActionError, match=r"shape \(\) or \(1,\).*got \(3,\); for RT-1"):
        single.step(dict(single.action_space.sample(), terminate_episode=np.array([0, 1, 0])))
    with pytest.raises(ActionError, match=r"a leading axis of 2, got shape \(3,\)"):
        env.step(dict(action, terminate_episode=np.array([1, 1, 1])))
    # a column of one int, as the other keys are arrays: [0] is terminate, not per-frame values
    assert single.step(dict(single.action_space.sample(), terminate_episode=np.array([0])))[2]
    # The 1-wide keys take one number per env too, as terminate_episode does.
    column = dict(action, gripper_closedness_action=np.array([[1.0], [-0.5]], np.float32))
    one_each = dict(column, gripper_closedness_action=np.array([1.0, -0.5]))
    assert np.array_equal(env.head.encode(one_each, 2, 2), env.head.encode(column, 2, 2))
    with pytest.raises(ActionError, match=r"gripper_closedness_action: expected one action per"):
        env.step(dict(action, gripper_closedness_action=np.array([1.0, 0.0, 0.0])))
    idle, _ = single.unwrapped.idle_action(), single.reset(seed=0)
    assert not single.step(dict(idle, gripper_closedness_action=1.0))[2]


def test_complete_rt1_fills_in_what_robot_logs_leave_out():
    from gym_worldmodel.envs.actions import complete_rt1

    arm = {  # a 7-D log of 4 steps (Bridge's layout), the gripper stored flat
        "world_vector": np.tile([0.5, 0.0, -0.5], (4, 1)),
        "rotation_delta": torch.zeros(4, 3),  # tensors too
        "gripper_closedness_action": np.array([1.0, -1.0, 0.0, 1.0]),
    }
    full = complete_rt1(arm)
    assert (
        full["base_displacement_vector"].shape == (4, 2)
        and not full["base_displacement_vector"].any()
    )
    assert full["gripper_closedness_action"].shape == (4, 1)
    assert full["terminate_episode"].tolist() == [1, 1, 1, 1]  # arm mode
    env = WorldModelVectorEnv(4, world="robot", action_mode="dict", **TINY)  # 4 rows: one a step
    env.reset(seed=0)
    assert env.head.encode(full, 4, 1).shape == (4, 1, 13)
    single = WorldModelEnv(world="robot", action_mode="dict", **TINY)
    single.reset(seed=0)
    single.step({k: v[2] for k, v in full.items()})  # one step of the log, as the docstring says
    one_hot = dict(arm, terminate_episode=np.eye(3, dtype=np.int64)[[1, 0, 1, 2]])
    assert complete_rt1(one_hot)["terminate_episode"].tolist() == [1, 0, 1, 2]
    for bad, match in (
        (dict(arm, terminate_episode=np.ones((4, 3))), "must be one-hot"),
        (dict(arm, timestamps=np.arange(4)), r"got \[.*'timestamps'"),
        ({k: v for k, v in arm.items() if k != "world_vector"}, "expected the keys"),
        (dict(arm, world_vector=np.zeros((3, 3))), r"same number of rows.*\(4,\)\}$"),
        ({k: v[0] for k, v in arm.items()}, r"these are one step's actions; give each a step axis"),
        ([1, 2], "expected a dict of arrays, got list"),
        (dict(arm, world_vector=[[1, 2, 3], [1]]), "'world_vector' is not an array of numbers"),
        (dict(arm, world_vector=np.array(["a"] * 5)), "'world_vector' is not an array of numbers"),
    ):
        with pytest.raises(ActionError, match=match):
            complete_rt1(bad)


def test_the_single_env_reads_a_policy_s_tensors_as_the_vector_env_does():
    env = gym.make("WorldModel-Driving-v0", max_episode_steps=-1, **TINY)
    ref = gym.make("WorldModel-Driving-v0", max_episode_steps=-1, **TINY)
    env.reset(seed=0)
    ref.reset(seed=0)
    act = np.array([0.25, 0.5], np.float32)
    for tensor in (torch.tensor(act, requires_grad=True), torch.tensor(act).bfloat16()):
        obs = env.step(tensor)[0]
        assert np.array_equal(obs, ref.step(torch.tensor(act).bfloat16().float().numpy())[0])
    with pytest.raises(ActionError, match="cannot read list"):
        env.step([[0.1], [0.2, 0.3]])


def test_single_env_reset_and_step_checks():
    env = gym.make("WorldModel-Driving-v0", **TINY).unwrapped
    for seed in (True, -1, 1.5):
        with pytest.raises(ValueError, match="seed must be a non-negative int"):
            env.reset(seed=seed)
    with pytest.raises(ValueError, match=r"options \['env_idx'\] are for vector envs"):
        env.reset(seed=0, options={"env_idx": [0]})
    env = gym.make("WorldModel-Driving-v0", termination_fn=lambda *a: np.array([True]), **TINY)
    env.reset(seed=0)
    assert env.step(np.zeros(2, np.float32))[2]
    with pytest.raises(RuntimeError, match=r"episode is over .*call reset\(\)"):
        env.step(np.zeros(2, np.float32))
    with pytest.raises(ValueError, match="memory_capacity must be an int >= 1"):
        WorldModelVectorEnv(1, world="citywalk", memory_capacity=0, **TINY)
    huge = WorldModelVectorEnv(1, world="citywalk", memory_capacity=10**15, **TINY)
    with pytest.raises(MemoryError, match=r"memory bank of 10+ chunks .* lower the capacity"):
        huge.reset(seed=0)  # named, not the allocator's bytes alone


def test_bad_reset_images_raise_and_leave_state_unchanged():
    env = WorldModelVectorEnv(2, world="citywalk", **TINY)
    env.reset(seed=0)
    env.step(np.array([[1, 0], [1, 0]]))
    before = snapshot(env)
    for options, match in [
        ({"image": np.zeros((32, 32, 3), np.float32)}, r"uint8.*floats in \[0, 1\]"),
        ({"image": np.full((32, 32, 3), 200.0)}, r"floats in 0-255: x.round\(\).clip"),
        ({"image": np.zeros((32, 32), np.uint8)}, "shape"),
        ({"image": np.zeros((3, 32, 32, 3), np.uint8)}, "one per reset row"),
        ({"image": np.zeros((32, 32, 4), np.uint8)}, r"got shape \(32, 32, 4\) \(RGBA"),  # as given
        ({"frames": np.zeros((32, 32, 3), np.uint8)}, "shape"),
        ({"env_idx": [5]}, "rows in"),
        ({"reset_mask": np.array([1, 0])}, "bool array"),
        ({"colour": 1}, "unknown reset options"),
        ({"frames": np.zeros((0, 32, 32, 3), np.uint8)}, "empty"),
        ({"image": [np.zeros((8, 8, 3), np.uint8), np.zeros((9, 9, 4), np.uint8)]}, r"image\[1\]"),
        ({"image": [np.zeros((8, 8, 3), np.uint8), np.ones((9, 9, 3))]}, r"\[1\].*float64"),
        # the same size: the float entry is named, not the batch NumPy would make of the list
        ({"image": [np.zeros((8, 8, 3), np.uint8), np.ones((8, 8, 3))]}, r"image\[1\].*float64"),
        ({"image": b"\x89PNG..."}, r"7 bytes: .*PIL.Image.open\(io.BytesIO\(data\)\)"),
    ]:
        with pytest.raises(ValueError, match=match):
            env.reset(options=options)
    for seed, match in [([1, -1], "non-negative"), (1.0, "non-negative int"), (-3, "seed")]:
        with pytest.raises(ValueError, match=match):
            env.reset(seed=seed)
    assert rows_equal(before, snapshot(env), [0, 1])


def test_a_made_env_whose_first_reset_was_refused_steps_after_a_good_one():
    """Gymnasium's PassiveEnvChecker broke every later step of such an env (a TypeError from
    its first-step check); the ids register without it."""
    env = gym.make("WorldModel-Robot-v0", **TINY)
    with pytest.raises(ValueError, match="uint8"):
        env.reset(options={"image": np.zeros((64, 64, 3), np.float32)})
    env.reset(seed=0)
    for _ in range(2):
        assert env.step(np.zeros(10, np.float32))[0].shape == env.observation_space.shape
    with pytest.raises(ValueError, match="reset options must be a dict"):
        env.reset(options="x")
    for picture in (None, "start.png"):  # a file name: the message says to open it
        with pytest.raises(ValueError, match=r"reset image must be a picture .*Image.open"):
            env.reset(options={"image": picture})
    with pytest.raises(
        ValueError, match=r"\(5, 32, 32, 3\) \(a stack of frames: pass it as 'frames'"
    ):
        env.reset(options={"image": np.zeros((5, 32, 32, 3), np.uint8)})


def test_a_refused_reset_of_a_single_env_leaves_its_np_random_as_it_was():
    """Gymnasium's reset reseeds np_random first: a refusal after it changed later draws."""
    bad = {"image": np.zeros((8, 8, 3), np.float32)}
    fresh = WorldModelEnv(world="robot", **TINY)
    with pytest.raises(ValueError, match="uint8"):
        fresh.reset(seed=5, options=bad)
    assert fresh._np_random is None  # its first unseeded reset is still an unseeded one
    env, clean = (WorldModelEnv(world="robot", **TINY) for _ in range(2))
    for e in (env, clean):
        e.reset(seed=0)
    with pytest.raises(ValueError, match="uint8"):
        env.reset(seed=5, options=bad)
    assert env.np_random_seed == clean.np_random_seed == 0
    assert env.np_random.integers(1 << 62) == clean.np_random.integers(1 << 62)


class FailingEngine(CountingEngine):
    """A CountingEngine whose step and start can be made to fail (a device error, say)."""

    fail = False

    def step(self, actions, decode=slice(None), poses=None, store=None):
        if self.fail:
            raise RuntimeError("device lost")
        return super().step(actions, decode, poses, store)

    def start(self, env_idx, frames, poses=None, seeds=None):
        if self.fail:
            raise RuntimeError("device lost")
        return super().start(env_idx, frames, poses, seeds)


def test_a_failed_forward_leaves_the_rows_as_they_were():
    env = WorldModelVectorEnv(2, world="driving", engine=FailingEngine(2))
    env.reset(seed=0)
    env.step(np.array([[0.5, 1.0], [-0.5, 1.0]], np.float32))
    before = env.get_state()
    env._engine.fail = True
    with pytest.raises(RuntimeError, match="device lost"):
        env.step(np.array([[0.5, 1.0], [-0.5, 1.0]], np.float32))
    with pytest.raises(RuntimeError, match="device lost"):
        env.reset(seed=5)
    after = env.get_state()
    assert np.array_equal(before["pose"], after["pose"])
    assert before["steps"].tolist() == after["steps"].tolist() == [1, 1]
    assert before["rngs"] == after["rngs"]


@pytest.mark.parametrize("limit", [0, -2, 2.5, "10"])
def test_max_episode_steps_must_be_a_positive_int(limit):
    with pytest.raises(ValueError, match="max_episode_steps must be an int >= 1"):
        WorldModelVectorEnv(1, world="driving", engine=CountingEngine(1), max_episode_steps=limit)


@pytest.mark.parametrize("limit", [0, -2, 2.5, "abc", True])
def test_max_episode_steps_set_later_is_checked_too(limit):
    env = counting_env(AutoresetMode.NEXT_STEP, max_steps=4)
    with pytest.raises(ValueError, match="max_episode_steps must be an int >= 1"):
        env.max_episode_steps = limit
    assert env.max_episode_steps == 4
    env.max_episode_steps = -1
    assert env.max_episode_steps is None


@pytest.mark.parametrize("rows", [[0.7], [False, True], ["0"], [[0, 1], [1]], []])
def test_reset_env_idx_must_be_ints(rows):
    env = WorldModelVectorEnv(2, world="driving", engine=CountingEngine(2))
    env.reset(seed=0)
    env.step(np.zeros((2, 2), np.float32))
    with pytest.raises(ValueError, match=r"env_idx must be an int or a list of ints .*in \[0, 2\)"):
        env.reset(seed=1, options={"env_idx": rows})
    assert env.get_state()["steps"].tolist() == [1, 1]


@pytest.mark.parametrize("n", [0, 1.5, "2", True])
def test_num_envs_must_be_a_positive_int(n):
    with pytest.raises(ValueError, match="num_envs must be an int >= 1"):
        WorldModelVectorEnv(n, world="driving", engine=CountingEngine(1))


def test_an_unknown_world_is_a_value_error_that_lists_the_worlds():
    with pytest.raises(ValueError, match=r"unknown world 'Robot'; available: citywalk \("):
        WorldModelVectorEnv(1, world="Robot", engine=CountingEngine(1))


def test_max_episode_steps_minus_one_means_no_limit_as_in_gym_make():
    env = counting_env(AutoresetMode.NEXT_STEP, max_steps=-1)
    env.reset(seed=0)
    for _ in range(5):
        truncated = env.step(np.zeros((1, 2), np.float32))[3]
    assert env.max_episode_steps is None and not truncated.any()


def test_step_before_reset_and_after_close():
    env = WorldModelVectorEnv(1, world="driving", **TINY)
    with pytest.raises(RuntimeError, match="reset"):
        env.step(np.zeros((1, 2), np.float32))
    first = env.reset(seed=0)[0]
    env.close()
    env.close()  # idempotent
    assert env._engine is None and env.render() is None  # released
    with pytest.raises(RuntimeError, match=r"closed: reset\(\) reopens it"):
        env.step(np.zeros((1, 2), np.float32))
    # A reset reopens it as a new env (SB3's check_env renders, closes, then steps the same env);
    # one that fails leaves it closed.
    with pytest.raises(ValueError, match="reset image must be"):
        env.reset(options={"image": np.zeros((4, 4), np.uint8)})
    assert env.closed
    assert np.array_equal(env.reset(seed=0)[0], first)
    env.step(np.zeros((1, 2), np.float32))
    fork = env.fork(0, 2)
    fork.close()
    with pytest.raises(RuntimeError, match="closed; make a new one"):
        fork.reset(seed=0)  # its engine was its parent's model's: gone with the close


@pytest.mark.parametrize("env_id", IDS)
def test_every_id_runs_its_embedded_trained_world_offline(env_id, monkeypatch):
    from gym_worldmodel import files
    from gym_worldmodel.envs.worlds import WORLDS

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # nothing may be downloaded
    env = gym.make(env_id)
    world = env.unwrapped.vector.world
    assert (world.checkpoint_dir / "model.safetensors").is_file()
    assert world.checkpoint_dir.parent == files.WORLDS_DIR
    assert (world.assets / "start_frames.npz").is_file() and world in WORLDS.values()
    obs, _ = env.reset(seed=0)
    bundled = np.load(world.assets / "start_frames.npz")["frames"]
    assert any(np.array_equal(obs, f) for f in bundled)  # starts from a real simulator frame
    obs, *_ = env.step(env.action_space.sample())
    assert obs.shape == (64, 64, 3) and obs.dtype == np.uint8 and obs.std() > 1
    env.close()


def test_an_env_starts_from_its_checkpoints_own_start_frames(tmp_path, monkeypatch):
    from gym_worldmodel import hub
    from gym_worldmodel.envs import starts
    from gym_worldmodel.envs.worlds import WORLDS, start_frames
    from gym_worldmodel.files import checkpoint_start_frames
    from gym_worldmodel.models import WorldModel, WorldModelConfig

    directory = hub.save_pretrained(WorldModel(WorldModelConfig.tiny()), tmp_path / "ck")
    world = WORLDS["citywalk"]
    bundled = start_frames(world, 32, directory)  # none of its own yet: the world's
    own = np.full((2, 32, 32, 3), 7, np.uint8)
    path = checkpoint_start_frames(directory, "citywalk")
    path.parent.mkdir()
    np.savez(path, frames=own)
    assert not np.array_equal(bundled[:2], own)
    assert np.array_equal(start_frames(world, 32, directory), own)  # read anew, not the cache
    used = []
    real = starts.start_frames
    monkeypatch.setattr(starts, "start_frames", lambda *a: used.append(a[2]) or real(*a))
    for model in (directory, hub.from_pretrained(directory)):  # a path, or a loaded model
        env = WorldModelVectorEnv(2, world="citywalk", model=model)
        env.reset(seed=0)
        env.fork(0, 2).reset(seed=1)  # the forks' resets too
    assert used == [directory] * 4


@pytest.mark.parametrize(
    "write",
    [
        lambda p: np.savez(p, frames=np.zeros((0, 32, 32, 3), np.uint8)),  # no frames
        lambda p: np.savez(p, images=np.zeros((2, 32, 32, 3), np.uint8)),  # another key
        lambda p: p.write_bytes(b"not an npz at all"),
        lambda p: p.write_bytes(b"PK\x03\x04garbage"),  # a damaged zip: BadZipFile
        lambda p: np.savez(p, frames=np.zeros((2, 32, 32, 3), np.float32)),
        lambda p: np.savez(p, frames=np.zeros((2, 32, 32), np.uint8)),  # grey
    ],
)
def test_a_checkpoints_bad_start_frames_file_is_named(write, tmp_path):
    from gym_worldmodel import hub
    from gym_worldmodel.files import checkpoint_start_frames

    directory = hub.save_pretrained(WorldModel(WorldModelConfig.tiny()), tmp_path / "ck")
    path = checkpoint_start_frames(directory, "citywalk")
    path.parent.mkdir()
    write(path)
    env = WorldModelVectorEnv(1, world="citywalk", model=directory)
    with pytest.raises(ValueError, match=rf"start frames {re.escape(str(path))}: expected an") as e:
        env.reset(seed=0)
    assert "allow_pickle" not in str(e.value)  # NumPy's advice to load junk unsafely is dropped


def test_a_folder_where_a_checkpoints_start_frames_file_belongs_is_named(tmp_path):
    from gym_worldmodel import hub
    from gym_worldmodel.files import checkpoint_start_frames

    directory = hub.save_pretrained(WorldModel(WorldModelConfig.tiny()), tmp_path / "ck")
    path = checkpoint_start_frames(directory, "citywalk")
    path.mkdir(parents=True)  # it used to be skipped for the world's bundled frames
    with pytest.raises(ValueError, match="expected an .npz file, found a folder"):
        WorldModelVectorEnv(1, world="citywalk", model=directory).reset(seed=0)
    path.rmdir()
    path.symlink_to(tmp_path / "gone.npz")  # a Hub cache whose blob is missing
    with pytest.raises(ValueError, match="expected an .npz file, found a link to nothing"):
        WorldModelVectorEnv(1, world="citywalk", model=directory).reset(seed=0)


def test_the_shipped_worlds_record_that_their_denoisers_learned_every_modality():
    from gym_worldmodel.envs.worlds import WORLDS, model_config

    for world in WORLDS.values():  # one backbone trained on all three, then per-world tuning
        assert model_config(world, None).trained_modalities == ("camera", "robot", "driving")


def test_a_model_without_the_worlds_action_expert_is_refused_when_the_env_is_made():
    import dataclasses

    from gym_worldmodel.models import WorldModel, WorldModelConfig

    config = WorldModelConfig.tiny()
    config = dataclasses.replace(
        config,
        dit=dataclasses.replace(config.dit, modalities={"camera": 12, "robot": 13}),
        trained_modalities=None,
    )
    model = WorldModel(config)
    assert WorldModelVectorEnv(1, world="robot", model=model).reset(seed=0)  # it has this one
    with pytest.raises(ValueError, match=r"no action expert for driving .* \['camera', 'robot'\]"):
        WorldModelVectorEnv(1, world="driving", model=model)  # not a KeyError at the first reset
    with pytest.raises(ValueError, match="unknown modality 'driving'"):
        config.dit.modality_id("driving")


def test_missing_shipped_world_is_a_clear_error(monkeypatch, tmp_path):
    from gym_worldmodel import files

    monkeypatch.setattr(files, "WORLDS_DIR", tmp_path)  # an install without the weights
    with pytest.raises(FileNotFoundError, match="not shipped"):
        WorldModelVectorEnv(1, world="citywalk")


def test_model_argument_that_names_no_checkpoint_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="a checkpoint directory holds config.json"):
        WorldModelVectorEnv(1, world="citywalk", model=tmp_path)
    with pytest.raises(ValueError, match="names no checkpoint"):
        WorldModelVectorEnv(1, world="citywalk", model="")


def test_envs_compute_in_bf16_by_default_only_where_the_device_does_it_natively(monkeypatch):
    from gym_worldmodel.envs import settings

    for native, expected in ((True, torch.bfloat16), (False, torch.float32)):
        monkeypatch.setattr(settings, "native_bf16", lambda device, native=native: native)
        assert WorldModelVectorEnv(1, model="random-tiny").dtype == expected
        single = gym.make("WorldModel-CityWalk-v0", model="random-tiny")
        assert single.unwrapped.dtype == expected
        assert WorldModelVectorEnv(1, model="random-tiny", dtype="float32").dtype == torch.float32
    with pytest.raises(ValueError, match="dtype"):
        WorldModelVectorEnv(1, model="random-tiny", dtype="float16")


def test_weights_load_lazily(monkeypatch):
    from gym_worldmodel.envs import vector_env

    calls = []
    real = vector_env.load_model
    monkeypatch.setattr(vector_env, "load_model", lambda *a: calls.append(a) or real(*a))
    env = gym.make("WorldModel-CityWalk-v0", **TINY)
    assert calls == []
    env.reset(seed=0)
    assert len(calls) == 1


def test_returned_observations_do_not_alias_env_buffers():
    env = WorldModelVectorEnv(1, world="driving", render_mode="rgb_array", **TINY)
    obs, _ = env.reset(seed=0)
    frame = env.render()[0]
    kept, kept_frame = obs.copy(), frame.copy()
    env.reset(seed=1)
    env.step(np.zeros((1, 2), np.float32))
    assert np.array_equal(obs, kept) and np.array_equal(frame, kept_frame)


def test_per_frame_action_sequences():
    env = WorldModelVectorEnv(1, world="citywalk", **TINY)  # tiny world: 2 frames per step
    env.reset(seed=0)
    # Frame 0 walks forward (W), frame 1 turns left: the pose integrates frame by frame.
    _, _, _, _, info = env.step(np.array([[[1, 0], [0, 1]]]))
    x, y, yaw, pitch = info["pose"][0]
    assert np.isclose(x, 0.2) and np.isclose(y, 0.0) and np.isclose(yaw, 6.0) and pitch == 0.0
    vec = env.head.encode(np.array([[[1, 0], [0, 1]]]), 1, 2)
    assert vec[0, 0, 1] == 1 and vec[0, 1, 0] == 1 and vec[0, 1, 6] == 1
    with pytest.raises(ActionError, match=r"\(2, 2\) per frame"):
        env.step(np.zeros((1, 3, 2), np.int64))  # 3 frames for a 2-frame chunk


def test_a_device_this_machine_lacks_is_named_at_construction():
    with pytest.raises(ValueError, match="device takes a torch device .* got 'gpu'"):
        WorldModelVectorEnv(1, world="driving", device="gpu", **TINY)
    with pytest.raises(ValueError, match="device meta holds shapes, no values"):
        WorldModelVectorEnv(1, world="driving", device="meta", **TINY)
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="device cuda: no CUDA device is available"):
            gym.make("WorldModel-Driving-v0", device="cuda", **TINY)


def test_no_cuda_is_touched_on_the_cpu_path():
    env = gym.make("WorldModel-Driving-v0", **TINY)
    env.reset(seed=0)
    env.step(env.action_space.sample())
    assert not torch.cuda.is_initialized()


def test_nfe_sets_the_denoiser_passes_of_every_step_and_forks_keep_it():
    own = WorldModelVectorEnv(1, world="driving", **TINY)  # the checkpoint's own: 2
    one = gym.make("WorldModel-Driving-v0", nfe=1, **TINY).unwrapped.vector
    assert (own.config.sampler.nfe, one.config.sampler.nfe) == (2, 1)
    action = np.full((1, 2), 0.3, np.float32)
    frames = []
    for env in (own, one):
        env.reset(seed=0)
        frames.append(env.step(action)[0])
    assert one._engine.config.sampler.nfe == 1 and one._engine.rollout.sampler.config.nfe == 1
    assert not np.array_equal(frames[0], frames[1])  # one pass, not two: other frames
    fork = one.fork(0, 2)
    assert fork.config.sampler.nfe == 1 and fork._engine.rollout.sampler.config.nfe == 1


def test_memory_guidance_reaches_every_step_and_forks_and_changes_only_rows_with_memory():
    envs = {
        g: gym.make_vec("WorldModel-CityWalk-v0", 2, memory_guidance=g, **TINY).unwrapped
        for g in (None, 3.0)
    }
    guided = envs[3.0]
    assert envs[None].config.sampler.memory_guidance == 1.0  # the checkpoint's own
    assert guided.config.sampler.memory_guidance == 3.0
    frames = []
    for env in envs.values():
        env.reset(seed=0)
        env.set_memory(False, env_idx=[1])
        frames.append(np.stack([env.step(np.array([[1, 2], [1, 2]]))[0] for _ in range(12)]))
    assert guided._engine.rollout.config.memory_guidance == 3.0
    assert np.array_equal(frames[0][:, 1], frames[1][:, 1])  # the row without memory
    assert not np.array_equal(frames[0][:, 0], frames[1][:, 0])
    assert guided.fork(0, 2)._engine.rollout.config.memory_guidance == 3.0
    for bad, match in ((-1.0, r"memory_guidance must be in \[0, 100.0\]"), ("2", "a number")):
        with pytest.raises(ValueError, match=match):
            WorldModelVectorEnv(1, world="citywalk", memory_guidance=bad, **TINY)


def test_a_model_given_is_shared_not_copied_whatever_the_nfe(tiny_model):
    env = WorldModelVectorEnv(1, world="driving", model=tiny_model, nfe=1)
    env.reset(seed=0)
    assert env._engine.model is tiny_model and env.fork(0, 2)._engine.model is tiny_model
    assert tiny_model.config.sampler.nfe == 2  # its own sampler is left as it was


def test_dtype_takes_a_name_or_a_torch_dtype_and_forks_keep_it():
    env = WorldModelVectorEnv(1, world="driving", dtype=torch.bfloat16, **TINY)
    env.reset(seed=0)
    assert env.dtype == torch.bfloat16 and env.fork(0, 2).dtype == torch.bfloat16
    assert WorldModelVectorEnv(1, world="driving", dtype="float32", **TINY).dtype == torch.float32
    with pytest.raises(ValueError, match="dtype must be one of"):
        WorldModelVectorEnv(1, world="driving", dtype=torch.float16, **TINY)


@pytest.mark.parametrize("nfe", [0, -1, 1.5, True, "2"])
def test_nfe_must_be_a_positive_int(nfe):
    with pytest.raises(ValueError, match=r"nfe must be an int >= 1 \(denoiser passes"):
        WorldModelVectorEnv(1, world="driving", nfe=nfe, **TINY)


@pytest.mark.parametrize("fixture", ["tiny_model", "moving_model", "flowing_model"])
def test_a_loaded_model_holds_bf16_weights_and_gives_the_given_models_frames(
    fixture, request, tmp_path
):
    """An env's own model keeps its linear and conv weights in bf16 (no cast a call); a model
    it is given is left in float32; both give the same frames bit for bit, chunk and pose."""
    from gym_worldmodel import hub

    model = request.getfixturevalue(fixture)
    hub.save_pretrained(model, tmp_path / "m")
    kwargs = dict(world="driving", dtype="bfloat16", obs_mode="chunk+pose")
    own = WorldModelVectorEnv(3, model=str(tmp_path / "m"), **kwargs)
    given = WorldModelVectorEnv(3, model=model, **kwargs)
    own.action_space.seed(0)
    acts = [own.action_space.sample() for _ in range(4)]
    for env in (own, given):
        env.reset(seed=1)
    for a in acts:
        o_own, o_given = own.step(a)[0], given.step(a)[0]
        for key in o_own:
            np.testing.assert_array_equal(o_own[key], o_given[key])
    assert own._engine.model.dit.out.weight.dtype == torch.bfloat16
    assert own._engine.model.vae.decoder.net[0].weight.dtype == torch.bfloat16
    assert all(p.dtype == torch.float32 for p in model.parameters())
    fork = own.fork(0, 2)
    fork.step(acts[0][:2])


def test_a_given_bf16_model_runs_in_a_bf16_env_and_a_float32_env_says_so(tiny_model):
    """``from_pretrained(..., dtype=torch.bfloat16)`` given to an env that runs in float32 (a
    GPU without bf16) crashed in the first GEMM on mixed dtypes."""
    model = WorldModel(tiny_model.config).to(torch.bfloat16)
    model.load_state_dict(tiny_model.state_dict())
    env = WorldModelVectorEnv(1, world="driving", model=model, dtype=torch.float32)
    with pytest.raises(ValueError, match=r"torch\.bfloat16.*dtype=torch\.bfloat16"):
        env.reset(seed=0)
    env = WorldModelVectorEnv(1, world="driving", model=model, dtype=torch.bfloat16)
    env.reset(seed=0)
    env.step(np.zeros((1, 2), np.float32))


@pytest.mark.parametrize("value", ["off", "no", 1, 0.0])
def test_memory_switches_take_bools_not_truthy_values(value):
    with pytest.raises(ValueError, match="memory must be True, False or None"):
        WorldModelVectorEnv(1, world="citywalk", memory=value, **TINY)
    with pytest.raises(ValueError, match="memory_shared must be True or False"):
        WorldModelVectorEnv(1, world="citywalk", memory_shared=value, **TINY)
    env = WorldModelVectorEnv(2, world="citywalk", **TINY)
    env.reset(seed=0)
    for kwargs in ({"enabled": value}, {"enabled": None, "store": value}):
        with pytest.raises(ValueError, match="must be True, False or None"):
            env.set_memory(**kwargs)
    assert env._engine.memory.enabled.all() and env._engine.memory.storing.all()


def test_a_relative_checkpoint_path_is_read_from_where_the_env_was_made(tmp_path, monkeypatch):
    """The weights load at the first reset, from the directory the config was read from."""
    from gym_worldmodel import hub

    hub.save_pretrained(WorldModel(WorldModelConfig.tiny()), tmp_path / "ck")
    monkeypatch.chdir(tmp_path)
    env = WorldModelVectorEnv(1, world="driving", model="ck")
    assert env.checkpoint_dir == tmp_path / "ck"
    monkeypatch.chdir(tmp_path.parent)  # no "ck" here
    env.reset(seed=0)


def test_action_and_hook_mistakes_are_named():
    env = WorldModelVectorEnv(3, world="driving", **TINY)
    env.reset(seed=0)
    action = np.zeros((3, 2), np.float32)
    action[2] = [0.5, -1.3]
    with pytest.raises(ActionError, match=r"got -1.3 at entry 1 in rows \[2\]"):
        env.step(action)  # the value out of range, not the batch's min and max
    robot = WorldModelVectorEnv(1, world="robot", **TINY)
    robot.reset(seed=0)
    with pytest.raises(ActionError, match="got a dict with keys .*action_mode='dict'$"):
        robot.step({"world_vector": np.zeros((1, 3))})
    with pytest.raises(ActionError, match=r"got a dict with keys \['steer'\]$"):  # no dict mode
        env.step({"steer": np.zeros(3)})
    with pytest.raises(ActionError, match="got None"):
        robot.step(None)

    def distance(prev_obs, action, obs, info):  # a distance, not whether it is reached
        return info["pose"][:, 0].abs()

    env.termination_fn = distance
    with pytest.raises(ValueError, match="termination hook .* returned float64 values .*bools"):
        env.step(np.zeros((3, 2), np.float32))
    for flags in (torch.tensor([0, 1, 0]), torch.tensor([0.0, 1.0, 0.0], dtype=torch.bfloat16)):
        env.termination_fn = lambda *args, flags=flags: flags  # numbers all 0 or 1 are flags
        assert env.step(np.zeros((3, 2), np.float32))[2].tolist() == [False, True, False]
        env.reset(seed=0)
    env.reward_fn = lambda *args: 1.0
    with pytest.raises(ValueError, match=r"shape \(\), expected \(3,\): hooks are batched"):
        env.step(np.zeros((3, 2), np.float32))
    for values, dtype in ((np.array(["a", "b", "c"]), "<U1"), (np.ones(3) * 1j, "complex128")):
        env.reward_fn = lambda *args, values=values: values
        with pytest.raises(ValueError, match=f"returned {dtype} values, expected real numbers"):
            env.step(np.zeros((3, 2), np.float32))
    with pytest.raises(ValueError, match="make it with memory=True"):
        WorldModelVectorEnv(1, world="driving", memory=False, **TINY).set_memory(True)


def test_metadata_render_fps_is_the_step_rate_on_the_class_too():
    env = WorldModelVectorEnv(1, world="citywalk")  # the shipped world's config; no weights yet
    assert type(env).metadata["render_fps"] == env.metadata["render_fps"] == 5


@pytest.mark.parametrize("model", [123, torch.nn.Linear(2, 2)])
def test_a_model_argument_of_another_kind_is_named(model):
    with pytest.raises(ValueError, match="model must be None .the shipped world., a checkpoint"):
        WorldModelVectorEnv(1, world="driving", model=model)


def test_reset_options_that_are_not_a_dict_are_named():
    env = WorldModelVectorEnv(1, world="driving", **TINY)
    with pytest.raises(ValueError, match=r"reset options must be a dict \(mapping\) or None, got"):
        env.reset(options=[1])
    from types import MappingProxyType

    env.reset(seed=0, options=MappingProxyType({"speed": 10.0}))  # any mapping
    assert env.get_state()["pose"][0, 3] == 10.0
