"""Env states and forks: save, restore, branch; what a state that does not fit gets."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.vector import AutoresetMode
from helpers import TINY, CountingEngine, on_device, rows_equal, snapshot

import gym_worldmodel  # noqa: F401  (registers the ids)
from gym_worldmodel.envs import (
    PoseDistance,
    WorldModelEnv,
    WorldModelVectorEnv,
)
from gym_worldmodel.models import WorldModel


def test_fork_takes_any_iterable_of_seeds_and_refuses_a_non_int_count():
    env = WorldModelVectorEnv(1, world="driving", **TINY)
    env.reset(seed=0)
    a = env.fork(0, 2, seeds=(s for s in [3, 4])).step(np.zeros((2, 2), np.float32))[0]
    b = env.fork(0, 2, seeds=[3, 4]).step(np.zeros((2, 2), np.float32))[0]
    c = env.fork(0, 2, seeds=3).step(np.zeros((2, 2), np.float32))[0]  # as reset: 3 + i
    assert np.array_equal(a, b) and np.array_equal(a, c)
    for n in (2.0, True, 0):
        with pytest.raises(ValueError, match="must be an int >= 1"):
            env.fork(0, n)
    for seeds in (2.5, "12", "123"):
        with pytest.raises(ValueError, match="seeds must be an int, 2 ints or None"):
            env.fork(0, 2, seeds=seeds)


def test_set_state_may_reseed_the_loaded_rows_for_fresh_noise():
    """A planner loads one state into its futures every step: seeds give them fresh noise."""
    env = WorldModelVectorEnv(1, world="driving", **TINY)
    env.reset(seed=0)
    futures = env.fork(0, 3)
    state = env.get_state([0, 0, 0])
    act = np.zeros((3, 2), np.float32)

    def rows_alike(**seeds):
        futures.set_state(state, **seeds)
        obs = futures.step(act)[0]
        return [np.array_equal(obs[0], o) for o in obs[1:]], obs

    assert rows_alike()[0] == [True, True]  # the state's generators: common random numbers
    fresh, obs = rows_alike(seeds=[5, 6, 7])
    assert fresh == [False, False] and np.array_equal(rows_alike(seeds=5)[1], obs)  # 5 + i
    assert np.array_equal(env.fork(0, 3, seeds=[5, 6, 7]).step(act)[0], obs)  # as a fork's
    before = futures.get_state()
    with pytest.raises(ValueError, match="need 3 set_state seeds for 3 rows"):
        futures.set_state(state, seeds=[1, 2])
    assert np.array_equal(futures.get_state()["steps"], before["steps"])  # nothing loaded
    single = gym.make("WorldModel-Driving-v0", max_episode_steps=-1, **TINY)
    single.reset(seed=0)
    one = single.unwrapped.get_state()
    single.unwrapped.set_state(one, seeds=5)
    assert np.array_equal(single.step(act[0])[0], obs[0])


def test_forks_restart_ended_rows_as_asked_and_a_made_env_s_forks_at_the_next_step():
    """A planner's return count steps every future through the horizon, an ended one too."""
    env = gym.make("WorldModel-Robot-v0", action_mode="dict", **TINY)
    env.reset(seed=0)
    futures = env.unwrapped.fork(2)
    assert futures.metadata["autoreset_mode"] == AutoresetMode.NEXT_STEP
    action = {k: np.stack([v, v]) for k, v in env.unwrapped.vector.head.idle_action().items()}
    ends = dict(action, terminate_episode=np.array([0, 1]))
    assert futures.step(ends)[2].tolist() == [True, False]
    assert futures.step(action)[-1]["step"].tolist() == [0, 2]  # row 0 began a new episode
    disabled = env.unwrapped.fork(2, autoreset_mode="Disabled")
    disabled.step(ends)
    with pytest.raises(RuntimeError, match="autoreset is disabled"):
        disabled.step(action)
    with pytest.raises(TypeError):
        env.unwrapped.fork(1, 16)  # the vector env's (row, n): seeds are keyword-only here
    with pytest.raises(ValueError, match="AutoresetMode"):
        env.unwrapped.fork(2, autoreset_mode="sometimes")


def test_fork_then_diverge_leaves_the_original_unchanged():
    env = WorldModelVectorEnv(2, world="citywalk", **TINY)
    env.reset(seed=0)
    env.step(np.array([[1, 0], [2, 1]]))
    before = snapshot(env)
    same_noise = env.fork(0, 2).step(np.array([[1, 0], [1, 0]]))[0]
    assert np.array_equal(same_noise[0], same_noise[1])  # common random numbers by default
    futures = env.fork(0, 3, seeds=[1, 2, 3])
    obs, *_ = futures.step(np.array([[1, 0], [3, 0], [0, 2]]))
    assert not np.array_equal(obs[0], obs[1])
    assert rows_equal(before, snapshot(env), [0, 1])
    # Restoring a state replays the same future exactly.
    env2 = WorldModelVectorEnv(2, world="citywalk", **TINY)
    env2.set_state(before)
    a = env.step(np.array([[1, 1], [1, 1]]))[0]
    b = env2.step(np.array([[1, 1], [1, 1]]))[0]
    assert np.array_equal(a, b)


def test_a_state_of_another_row_count_says_how_many_rows_it_holds():
    env = WorldModelVectorEnv(3, world="driving", **TINY)
    env.reset(seed=0)
    single = WorldModelEnv(world="driving", **TINY)
    single.reset(seed=0)
    with pytest.raises(ValueError, match="state holds 3 rows, this env has 1"):
        single.set_state(env.get_state())
    with pytest.raises(ValueError, match="state holds 3 rows, env_idx names 2"):
        env.set_state(env.get_state(), env_idx=[0, 1])


def test_single_env_time_limit_is_part_of_its_state_and_it_forks():
    env = WorldModelEnv(world="driving", max_episode_steps=3, **TINY)
    env.reset(seed=0)
    action = np.zeros(2, np.float32)
    state = env.get_state()
    env.step(action), env.step(action)
    env.set_state(state)  # back to step 0: three more steps before the limit
    assert [env.step(action)[3] for _ in range(3)] == [False, False, True]
    env.set_state(state)
    env.step(action), env.step(action)  # step 2 of 3: a fork ends at its next step
    zeros = np.zeros((2, 2), np.float32)
    assert env.fork(2).step(zeros)[3].tolist() == [True, True]
    assert env.fork(2, max_episode_steps=-1).step(zeros)[3].tolist() == [False, False]
    assert env.fork(2, max_episode_steps=4).step(zeros)[3].tolist() == [False, False]
    env.set_state(state)
    futures = env.fork(2, seeds=[1, 2])
    assert futures.num_envs == 2 and futures.step(np.zeros((2, 2), np.float32))[0].shape[0] == 2
    on_device = env.fork(2, seeds=[1, 2], output="torch")  # a planner's, from a NumPy env
    env.step(action)  # the forks' own episodes: the parent's steps do not reach them
    frames = on_device.step(torch.zeros(2, 2))[0]
    assert isinstance(frames, torch.Tensor) and np.array_equal(frames.numpy(), futures._obs())


def test_free_memory_is_a_containers_where_its_cgroup_limits_it(monkeypatch, tmp_path):
    from gym_worldmodel.envs import resources

    (tmp_path / "meminfo").write_text("MemTotal: 8000000 kB\nMemAvailable: 4000000 kB\n")
    (tmp_path / "max").write_text("1048576000\n")  # a container limited to 1000 MiB, 600 used
    (tmp_path / "current").write_text("629145600\n")
    (tmp_path / "unlimited").write_text("max\n")
    cpu = torch.device("cpu")
    monkeypatch.setattr(resources, "MEMINFO", str(tmp_path / "meminfo"))
    monkeypatch.setattr(resources, "CGROUP_LIMITS", [(tmp_path / "max", tmp_path / "current")])
    assert resources.free_bytes(cpu) == 400 * 2**20
    for limits in ([(tmp_path / "unlimited", tmp_path / "current")], [("/no/such", "/no/such")]):
        monkeypatch.setattr(resources, "CGROUP_LIMITS", limits)
        assert resources.free_bytes(cpu) == 4000000 * 1024  # the host's
    monkeypatch.setattr(resources, "MEMINFO", "/no/such/meminfo")
    assert resources.free_bytes(cpu) is None  # unknown: forks are not checked


def test_fork_checks_its_arguments(monkeypatch):
    from gym_worldmodel.envs import resources

    monkeypatch.setattr(resources, "free_bytes", lambda device: 2**30)  # 1 GiB free, anywhere
    env = WorldModelVectorEnv(2, world="driving", **TINY)
    with pytest.raises(RuntimeError, match="before fork"):
        env.fork(0, 2)
    env.reset(seed=0)
    for row, n, match in (
        (2, 1, r"row must be an int or a list of ints naming rows in \[0, 2\)"),
        (0.5, 1, "row must be an int"),
        (True, 1, "row"),
        (-1, 1, "row"),
        ([], 1, "or a list of ints naming rows in \\[0, 2\\), got \\[\\]"),
        ([0, 2], 1, "row"),
        (0, 0, "n"),
    ):
        with pytest.raises(ValueError, match=match):
            env.fork(row, n)
    for seeds in ([1, None], [1, 2**64]):
        with pytest.raises(ValueError, match=r"fork seeds must be ints in \[0, 2\*\*64\)"):
            env.fork(0, 2, seeds=seeds)
    with pytest.raises(ValueError, match=r"autoreset_mode must be .* one of \['NextStep'"):
        env.fork(0, 2, autoreset_mode="foo")
    with pytest.raises(ValueError, match=r"output must be one of \['numpy', 'torch'\]"):
        env.fork(0, 2, output="cupy")
    for limit in (0, 2.5, "10"):
        with pytest.raises(
            ValueError, match="max_episode_steps must be an int >= 1, or None or -1"
        ):
            env.fork(0, 2, max_episode_steps=limit)
    assert env.fork(np.array([1, 0]), 2).num_envs == 4  # an array of rows, as a list
    before = snapshot(env)
    with pytest.raises(MemoryError, match=r"fork of 2000000 rows .* MiB a row.* 1.0 GiB is free"):
        env.fork([0, 1], 10**6)  # refused before allocating, not by the OS's OOM killer
    with pytest.raises(MemoryError, match=r"fork of 1000000 rows .* memory bank\), and"):
        env.fork(0, 10**6)  # one row's state is not copied: held once
    assert rows_equal(before, snapshot(env), [0, 1])
    before = env.get_state()
    env.set_state(env.get_state([]), env_idx=[])  # no rows: nothing to load
    assert np.array_equal(env.get_state()["steps"], before["steps"])


def test_a_fork_is_made_as_its_parent_was():
    """Every setting reaches the forks (fork once copied them one by one and could miss one)."""
    env = WorldModelVectorEnv(
        2,
        world="citywalk",
        action_mode="look",
        obs_mode="chunk+pose",
        output="torch",
        render_mode="rgb_array",
        memory_capacity=7,
        max_episode_steps=9,
        **TINY,
    )
    env.reset(seed=0)
    env.max_episode_steps = 5  # what the env holds now, not what it was made with
    env.render_mode = None
    fork = env.fork(1, 3)
    assert fork.render_mode is None and fork._model_arg is None  # the engine holds the model
    env.output = "numpy"
    assert isinstance(env.fork(1, 1).reset(seed=0)[0]["chunk"], np.ndarray)
    env.render_mode, env.output = "rgb_array", "torch"
    fork = env.fork(1, 3)
    assert fork.single_observation_space == env.single_observation_space
    assert fork.single_action_space == env.single_action_space
    assert (fork.head, fork.output, fork.render_mode) == (env.head, "torch", "rgb_array")
    assert (fork.memory, fork.memory_capacity, fork.max_episode_steps) == (env.memory, 7, 5)
    assert fork.metadata == env.metadata and fork.checkpoint_dir == env.checkpoint_dir
    assert env.fork(1, 1, max_episode_steps=-1).max_episode_steps is None  # no limit
    assert env.fork(1, 1, max_episode_steps=2).max_episode_steps == 2


def test_fork_of_several_rows_gives_each_its_futures_in_one_env():
    env = WorldModelVectorEnv(
        3, world="driving", **TINY, reward_fn=PoseDistance([[1.0, 0.0], [5.0, 0.0], [9.0, 2.0]])
    )
    env.reset(seed=0)
    env.step(np.array([[0.2, 0.1], [-0.3, 0.0], [0.0, 0.5]], np.float32))
    act = np.array([[0.1, 0.3]], np.float32)
    both = env.fork([2, 0], 2, seeds=[1, 2, 3, 4])  # rows 2, 2, 0, 0
    alone = [env.fork(r, 2, seeds=s) for r, s in ((2, [1, 2]), (0, [3, 4]))]
    obs, reward, *_ = both.step(np.repeat(act, 4, 0))
    want = [f.step(np.repeat(act, 2, 0)) for f in alone]  # the same futures, one env each
    assert np.array_equal(obs, np.concatenate([w[0] for w in want]))
    assert np.array_equal(reward, np.concatenate([w[1] for w in want]))  # each row's own target
    # rows picked on the device (a torch planner's argmax) fork as the same ints do
    picked = env.fork(torch.tensor([2, 0]), 2, seeds=[1, 2, 3, 4]).step(np.repeat(act, 4, 0))
    assert np.array_equal(picked[0], obs)
    assert env.fork(torch.tensor(2), 1).num_envs == 1


def test_forks_keep_the_memory_setting_and_seeds_reach_their_numpy_generators():
    env = WorldModelVectorEnv(2, world="citywalk", memory=False, **TINY)
    env.reset(seed=0)
    assert not env.fork(0, 2).memory
    futures = env.fork(0, 2, seeds=[1, 2])
    first = futures.get_state()["rngs"]
    assert first[0] != first[1]  # autoresets draw different start frames and seeds
    same = env.fork(0, 2)
    assert same.get_state()["rngs"][0] == same.get_state()["rngs"][1]


def test_state_calls_check_their_rows():
    env = WorldModelVectorEnv(2, world="driving", engine=CountingEngine(2))
    env.reset(seed=0)
    for rows in ([5], [-1], [[0, 1]], [0.5], 2, True):
        with pytest.raises(
            ValueError, match=r"env_idx must be an int or a list .*rows in \[0, 2\)"
        ):
            env.get_state(rows)
    one = env.get_state(1)  # an int names one row, as set_memory and a reset's env_idx take it
    assert one["steps"].shape == (1,)
    env.set_state(one, 0)
    state = env.get_state([0, 0])  # repeats are fine when reading: a fork
    with pytest.raises(ValueError, match=r"env_idx names rows \[1\] more than once"):
        env.set_state(state, [1, 1])
    with pytest.raises(ValueError, match="rows in"):
        env.set_state(env.get_state([0]), [2])


def _bad_states(own, robot):
    """Broken copies of ``own`` (a camera world's 2-row state): (what breaks, state)."""
    import copy

    def edit(fn):
        state = copy.deepcopy(own)
        fn(state)
        return state

    def nan_latents(s):
        s["latents"].view(-1)[0] = float("nan")

    return [
        ("lacks 'rngs'", edit(lambda s: s.pop("rngs"))),
        ("another world", robot),
        ("latents of one frame", edit(lambda s: s.update(latents=s["latents"][:, :1]))),
        ("float frames", edit(lambda s: s.update(frames=s["frames"].float()))),
        ("pose (2, 3)", edit(lambda s: s.update(pose=s["pose"][:, :3]))),
        ("NaN pose", edit(lambda s: s["pose"].__setitem__((0, 0), np.nan))),
        ("NaN latents", edit(nan_latents)),
        ("no memory", edit(lambda s: s["engine"].update(memory=None))),
        ("other weights", edit(lambda s: s["engine"].update(weights="0" * 16))),
        ("float steps", edit(lambda s: s.update(steps=s["steps"].astype(float)))),
        ("steps as a list", edit(lambda s: s.update(steps=s["steps"].tolist()))),
        ("negative steps", edit(lambda s: s.update(steps=-s["steps"] - 1))),
        ("steps past int64", edit(lambda s: s.update(steps=s["steps"].astype(np.uint64) + 2**63))),
        ("bad rng state", edit(lambda s: s["rngs"].__setitem__(0, {"state": 3}))),
        ("rng state out of range", edit(lambda s: s["rngs"][1]["state"].__setitem__("state", -5))),
        (  # the right shape and dtype, bytes no generator holds: found only by restoring it
            "garbage generator bytes",
            edit(lambda s: s["engine"]["generators"][1].zero_()),
        ),
        ("negative cache chunks", edit(lambda s: s["engine"]["cache"]["chunks"].fill_(-3))),
        ("cache chunks but no keys", edit(lambda s: s["engine"]["cache"]["valid"].fill_(False))),
        ("cache keys but no chunks", edit(lambda s: s["engine"]["cache"]["chunks"].fill_(0))),
        ("a memory uid twice", edit(lambda s: s["engine"]["memory"][0]["uid"].fill(7))),
        (  # uids stay far below int64's end, where the next entry's number would wrap
            "a memory uid of 2**62",
            edit(lambda s: s["engine"]["memory"][0]["uid"].__setitem__(0, 2**62)),
        ),
        ("negative memory chunks", edit(lambda s: s["engine"]["memory"][1].update(chunks=-1))),
        ("memory chunks past int64", edit(lambda s: s["engine"]["memory"][1].update(chunks=2**70))),
        ("not a dict", [1, 2]),
        ("the engine's state as a list", edit(lambda s: s.update(engine=[s["engine"]]))),
        ("one generator state fewer", edit(lambda s: s.update(rngs=s["rngs"][:1]))),
        ("memory switched by an int", edit(lambda s: s["engine"]["memory"][0].update(enabled=1))),
        ("a float chunk count", edit(lambda s: s["engine"]["memory"][0].update(chunks=1.0))),
        ("a bool chunk count", edit(lambda s: s["engine"]["memory"][1].update(chunks=True))),
    ]


def test_a_state_that_does_not_fit_is_refused_and_changes_nothing():
    kw = dict(model="random-tiny", memory=True)
    env = WorldModelVectorEnv(2, world="citywalk", **kw)
    clone = WorldModelVectorEnv(2, world="citywalk", **kw)
    robot = WorldModelVectorEnv(2, world="robot", model="random-tiny")
    for e in (env, clone, robot):
        e.reset(seed=3)
    act = np.array([[1, 2], [3, 0]])  # camera keys (move, look)
    for e in (env, clone):
        e.step(act)
    other = WorldModelVectorEnv(2, world="citywalk", **kw)  # the states come from elsewhere,
    other.reset(seed=4)  # so that one loaded in part shows in the env's next step
    other.step(act[::-1])
    for what, bad in _bad_states(other.get_state(), robot.get_state()):
        with pytest.raises(ValueError, match=r"state|world"):
            env.set_state(bad)
            pytest.fail(f"a state with {what} was loaded")
    fresh = WorldModelVectorEnv(2, world="citywalk", **kw)  # never reset: refused, not started
    robots = robot.get_state()
    robots["engine"]["weights"] = "0" * 16  # the world is named first, not its weights
    with pytest.raises(ValueError, match="of the 'robot' world, this env runs 'citywalk'"):
        fresh.set_state(robots)
    with pytest.raises(RuntimeError, match="reset"):
        fresh.step(act)
    assert fresh._rngs == [None, None]  # its unseeded starts stay its own, not row seed 0's
    # a Simulator-CityWalk-v0 state (its simulator's part, its episode's entries) says so
    simulator = {"world": "citywalk", "source": {"seed": 3}, "np_random": {}, "steps": 4}
    with pytest.raises(ValueError, match=r"a simulator env's state \(Simulator-\*-v0's"):
        env.set_state(simulator)
    plain = WorldModelVectorEnv(2, world="citywalk", model="random-tiny", memory=False)
    plain.reset(seed=3)
    with pytest.raises(ValueError, match="memory off, this env has it on: make the env with"):
        env.set_state(plain.get_state())
    small = WorldModelVectorEnv(2, world="citywalk", memory_capacity=8, **kw)
    small.reset(seed=3)
    with pytest.raises(ValueError, match="banks hold 8 chunks each, .* memory_capacity=8"):
        env.set_state(small.get_state())
    mine, theirs = env.step(act), clone.step(act)
    assert np.array_equal(mine[0], theirs[0]), "a refused state changed the env"
    assert np.array_equal(env.get_state()["pose"], clone.get_state()["pose"])
    fresh.set_state(clone.get_state())  # a state that fits loads into a new env
    assert np.array_equal(fresh.step(act)[0], clone.step(act)[0])
    # what converts on loading is accepted: another float precision, another int width, and
    # a state from before get_state recorded the world
    state = clone.get_state()
    state.pop("world")
    state["steps"] = state["steps"].astype(np.int32)
    cache = state["engine"]["cache"]
    state["engine"]["cache"] = {
        k: v.bfloat16() if v.is_floating_point() else v for k, v in cache.items()
    }
    env.set_state(state)


def test_a_state_made_by_other_weights_is_refused_at_any_precision(tiny_model):
    """Same world and shapes, other weights: the cache would run without a word, wrongly."""
    tuned = WorldModel(tiny_model.config)
    tuned.load_state_dict(tiny_model.state_dict())
    with torch.no_grad():
        tuned.dit.out.bias.add_(0.05)
    kw = dict(world="driving", dtype="float32")
    own, other = (WorldModelVectorEnv(2, model=m, **kw) for m in (tiny_model, tuned))
    for env in (own, other):
        env.reset(seed=0)
    before = other.get_state()
    with pytest.raises(ValueError, match="made by other weights .*the model that made it"):
        other.set_state(own.get_state())
    assert rows_equal(before, other.get_state(), [0, 1])
    # the same weights held in bf16 (the autocast copy an env keeps) have the same digest
    bf16 = WorldModel(tiny_model.config)
    bf16.load_state_dict(tiny_model.state_dict())
    assert bf16.for_autocast(torch.bfloat16).weights_digest() == tiny_model.weights_digest()
    assert bf16.for_autocast("bfloat16") is bf16  # by name, as the envs take it
    with pytest.raises(ValueError, match=r"dtype must be one of \['float32', 'bfloat16'\]"):
        bf16.for_autocast(torch.float16)
    assert tuned.weights_digest() != tiny_model.weights_digest()
    into_bf16 = WorldModelVectorEnv(2, world="driving", model=tiny_model, dtype="bfloat16")
    into_bf16.reset(seed=1)
    into_bf16.set_state(own.get_state())  # a float32 env's state, the same weights
    older = own.get_state()
    del older["engine"]["weights"]  # a state saved before states named their weights
    other.set_state(older)


def test_a_state_of_another_device_type_says_so():
    """A CUDA generator's state is 16 bytes, a CPU one's 5056: named, not as a shape."""
    env = WorldModelVectorEnv(2, world="driving", **TINY)
    env.reset(seed=0)
    state = env.get_state()
    state["engine"]["generators"] = [torch.zeros(16, dtype=torch.uint8)] * 2  # as a CUDA env's
    with pytest.raises(ValueError, match="not cpu ones .*the device type it was saved from"):
        env.set_state(state)
    state["engine"]["generators"] = [g[:10] for g in env.get_state()["engine"]["generators"]]
    with pytest.raises(ValueError, match=r"\[0\] holds 10 bytes, .* no generator state"):
        env.set_state(state)  # damaged: not said to be another device's


def test_nan_weights_of_a_given_model_and_nan_in_a_loaded_cache_are_named(tiny_model):
    broken = WorldModel(tiny_model.config)
    broken.load_state_dict(tiny_model.state_dict())
    with torch.no_grad():
        broken.dit.out.bias[0] = float("nan")
    with pytest.raises(ValueError, match=r"NaN or inf in dit\.out\.bias"):
        WorldModelVectorEnv(1, world="driving", model=broken).reset(seed=0)
    env = WorldModelVectorEnv(2, world="driving", model=tiny_model)
    env.reset(seed=0)
    env.step(np.zeros((2, 2), np.float32))
    state, before = env.get_state(), env.get_state()
    state["engine"]["cache"]["k"][:, 1] = float("nan")  # row 1's keys
    with pytest.raises(ValueError, match=r"state\['engine'\]\['cache'\]\['k'\] holds NaN"):
        env.set_state(state)  # refused: a step on it would have broken every row
    assert rows_equal(env.get_state(), before, [0, 1])
    env._engine.cache.k[:, 1] = float("nan")  # reached by other means, the step names it
    steps = env.get_state()["steps"].copy()
    with pytest.raises(FloatingPointError, match=r"NaN or inf for rows \[1\].*reset all rows"):
        env.step(np.zeros((2, 2), np.float32))
    # the env's frames, poses and counts did not advance (the engine's cache did: see the error)
    assert env.get_state()["steps"].tolist() == steps.tolist()
    env.reset(seed=0)  # and a reset of every row makes it whole again: the step does not raise
    env.step(np.zeros((2, 2), np.float32))


@pytest.mark.parametrize(
    ("world", "column", "value", "match"),
    [
        ("driving", 3, 500.0, r"speed_mps 500 is outside \[0, 40\]"),
        ("driving", 2, -999.0, "heading_deg -999"),
        ("citywalk", 3, 90.0, r"pitch_deg 90 is outside \[-60, 60\]"),
        ("citywalk", 0, 1e300, "x_m 1e\\+300"),
    ],
)
def test_a_state_with_a_pose_out_of_range_is_refused(world, column, value, match):
    env = WorldModelVectorEnv(2, world=world, **TINY)
    env.reset(seed=0)
    state, before = env.get_state(), env.get_state()
    state["pose"][1, column] = value
    with pytest.raises(ValueError, match=match):
        env.set_state(state)
    assert rows_equal(env.get_state(), before, [0, 1])


def test_nan_in_a_stored_memory_entry_is_refused_on_loading_and_empty_slots_are_not_read():
    env = WorldModelVectorEnv(2, world="citywalk", **TINY)
    env.reset(seed=0)
    env.step(np.zeros((2, 2), np.int64))
    state = env.get_state()
    memory = state["engine"]["memory"][1]
    empty = int(np.argmin(memory["uid"]))  # -1: an empty slot, never read
    memory["latents"][empty] = float("nan")
    env.set_state(state)
    env.step(np.zeros((2, 2), np.int64))  # (it steps: an empty slot is never retrieved)
    state, before = env.get_state(), env.get_state()
    memory = state["engine"]["memory"][1]
    memory["latents"][int(np.argmax(memory["uid"]))] = float("nan")
    with pytest.raises(ValueError, match=r"\['memory'\]\[1\]\['latents'\] holds NaN or inf"):
        env.set_state(state)
    assert rows_equal(env.get_state(), before, [0, 1])


def test_rows_given_as_a_device_tensor_are_read_as_a_list_of_them():
    """``env_idx`` from a device's flags (``terminated.nonzero()``) was refused on a GPU."""
    env = WorldModelVectorEnv(2, world="citywalk", **TINY)
    env.reset(seed=0)
    state = env.get_state(on_device([1]))
    assert state["steps"].shape == (1,)
    env.set_state(state, env_idx=on_device([0]))
    env.set_memory(False, env_idx=on_device([1]))
    assert env._engine.memory.enabled.tolist() == [True, False]


def test_a_state_of_one_row_loads_into_many_as_its_copies_would():
    """set_state(get_state(row)) into n rows: the bits of get_state([row] * n), rows apart."""
    env = WorldModelVectorEnv(2, world="citywalk", **TINY)  # with memory: its banks too
    env.reset(seed=[3, 4])
    for keys in ([1, 2], [3, 1], [1, 0]):
        env.step(np.array([keys, keys[::-1]]))
    one, copies = env.get_state(1), env.get_state([1, 1, 1])
    a, b = env.fork(0, 3), env.fork(0, 3)
    a.set_state(one, seeds=[7, 8, 9])
    b.set_state(copies, seeds=[7, 8, 9])
    acts = np.array([[1, 1], [2, 2], [0, 4]])
    for _ in range(3):  # rows step apart: no row shares what another changes
        oa, ob = a.step(acts)[0], b.step(acts)[0]
        np.testing.assert_array_equal(oa, ob)
    assert not np.array_equal(oa[0], oa[1])
    sa, sb = a.get_state(), b.get_state()
    assert rows_equal(sa, sb, [0, 1, 2])
    for ra, rb in zip(sa["engine"]["memory"], sb["engine"]["memory"], strict=True):
        assert ra.keys() == rb.keys() and ra["chunks"] > 0
        for k in ra:
            x, y = ra[k], rb[k]
            assert torch.equal(x, y) if isinstance(x, torch.Tensor) else np.array_equal(x, y), k
    single = gym.make("WorldModel-CityWalk-v0", **TINY)
    single.reset(seed=5)
    futures = single.unwrapped.fork(2)
    futures.set_state(single.unwrapped.get_state())  # a single env's state: one row
    assert futures.get_state()["steps"].tolist() == [0, 0]
    with pytest.raises(ValueError, match=r"state holds 2 rows, this env has 3 \(a state of one"):
        a.set_state(env.get_state([0, 1]))
    with pytest.raises(ValueError, match=r"state holds 1 rows, env_idx names 0"):
        a.set_state({"steps": np.array([0]), "junk": 1}, env_idx=[])


def test_a_prebuilt_engine_s_memory_is_the_env_s():
    """engine= overrides the memory settings: the env's switch is the engine's bank or none."""
    env = WorldModelVectorEnv(2, world="citywalk", **TINY)  # memory on by default here
    env.reset(seed=0)
    source = env._engine
    bare = type(source)(source.model, 2, "camera", memory=False)
    other = WorldModelVectorEnv(2, world="citywalk", engine=bare, memory=True)
    assert env.memory and not other.memory
    with pytest.raises(ValueError, match="make the env with memory=True and memory_shared"):
        other.hand_over_memory([0])
    small = type(source)(
        source.model, 2, "camera", source.device, source.dtype, True, [0, 0], memory_capacity=8
    )
    mine = WorldModelVectorEnv(2, world="citywalk", engine=small)  # arguments at their defaults
    assert (mine.memory_capacity, mine.memory_shared) == (8, True)
    mine.reset(seed=0)
    mine.hand_over_memory([0])  # rows sharing a bank
    assert mine.fork(0, 3).get_state()["steps"].tolist() == [0, 0, 0]  # its forks' banks fit
