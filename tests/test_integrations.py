"""Stable-Baselines3 and PettingZoo adapters, on tiny random-weight models."""

from __future__ import annotations

import warnings

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.vector import AutoresetMode

import gym_worldmodel  # noqa: F401  (registers the ids)
from gym_worldmodel.envs import WorldModelVectorEnv
from gym_worldmodel.envs.actions import ActionError

sb3 = pytest.importorskip("stable_baselines3")
pettingzoo_test = pytest.importorskip("pettingzoo.test")

from stable_baselines3 import PPO  # noqa: E402
from stable_baselines3.common.env_checker import check_env  # noqa: E402
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor  # noqa: E402

from gym_worldmodel.integrations.pettingzoo import WorldModelParallelEnv  # noqa: E402
from gym_worldmodel.integrations.sb3 import WorldModelSB3VecEnv  # noqa: E402

TINY = {"model": "random-tiny"}
DRIVING = "WorldModel-Driving-v0"
CITYWALK = "WorldModel-CityWalk-v0"


def test_integrations_package_imports_neither_library():
    import subprocess
    import sys

    code = (
        "import sys, gym_worldmodel.integrations, gym_worldmodel.envs.vector_env; "
        "print(any(m.split('.')[0] in ('stable_baselines3', 'pettingzoo') for m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_the_package_top_exports_the_public_names_and_imports_no_torch():
    import subprocess
    import sys

    code = (
        "import sys, gym_worldmodel as g; print('torch' in sys.modules); "
        "from gym_worldmodel import WorldModelVectorEnv, from_pretrained, WorldModel, LaneCentre; "
        "from gym_worldmodel.envs.vector_env import WorldModelVectorEnv as V; "
        "print(WorldModelVectorEnv is V, set(g.__all__) <= set(dir(g)), callable(from_pretrained))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "True", "True", "True"]
    with pytest.raises(AttributeError, match="no attribute 'WorldModelVecEnv'"):
        gym_worldmodel.WorldModelVecEnv  # noqa: B018


# --- Stable-Baselines3 ---


@pytest.mark.parametrize("env_id", [DRIVING, CITYWALK])
@pytest.mark.parametrize("obs_mode", ["rgb", "rgb+pose"])
def test_sb3_check_env_passes(env_id, obs_mode):
    env = gym.make(env_id, obs_mode=obs_mode, render_mode="rgb_array", **TINY)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        check_env(env, warn=True, skip_render_check=False)  # it closes, then steps the env
    # The tiny model's 32x32 frames are below NatureCNN's 36x36: the only expected remark.
    assert [str(w.message) for w in caught if "36x36" not in str(w.message)] == []
    env.close()


def test_sb3_terminal_observation_is_the_true_last_frame():
    kwargs = dict(**TINY, max_episode_steps=2)
    adapter = WorldModelSB3VecEnv.make(DRIVING, num_envs=2, **kwargs)
    # References: a DISABLED env returns the terminal obs itself; a SAME_STEP one the reset obs.
    plain = WorldModelVectorEnv(2, world="driving", autoreset_mode="Disabled", **kwargs)
    same = WorldModelVectorEnv(2, world="driving", autoreset_mode="SameStep", **kwargs)
    assert adapter.seed(5) == [5, 6]
    obs = adapter.reset()
    assert np.array_equal(obs, plain.reset(seed=5)[0])
    same.reset(seed=5)
    actions = np.array([[0.5, -0.2], [-1.0, 1.0]], np.float32)

    obs, rewards, dones, infos = adapter.step(actions)
    plain.step(actions), same.step(actions)
    assert isinstance(rewards, np.ndarray) and rewards.dtype == np.float32
    assert rewards.shape == (2,)
    assert isinstance(dones, np.ndarray) and dones.dtype == np.bool_ and not dones.any()
    assert isinstance(infos, list) and all(isinstance(i, dict) for i in infos)
    assert [i["TimeLimit.truncated"] for i in infos] == [False, False]
    assert all("terminal_observation" not in i for i in infos)
    assert infos[0]["step"] == 1 and type(infos[0]["step"]) is int

    obs, rewards, dones, infos = adapter.step(actions)
    terminal, *_ = plain.step(actions)
    reset_obs, *_ = same.step(actions)
    assert dones.tolist() == [True, True]
    assert np.array_equal(obs, reset_obs)
    for i in range(2):
        assert infos[i]["TimeLimit.truncated"] is True
        assert np.array_equal(infos[i]["terminal_observation"], terminal[i])
        assert not np.array_equal(infos[i]["terminal_observation"], obs[i])
        assert infos[i]["step"] == 2  # the finished episode's last info ...
        assert adapter.reset_infos[i]["step"] == 0  # ... and the new episode's reset info
        assert infos[i]["pose"].shape == (4,)
    adapter.close()
    adapter.close()  # idempotent


def test_sb3_terminated_rows_are_not_time_limit_truncations():
    # Row 0 terminates after every step, row 1 at the time limit (both flags), row 2 never.
    adapter = WorldModelSB3VecEnv.make(
        DRIVING,
        num_envs=3,
        **TINY,
        max_episode_steps=3,
        termination_fn=lambda p, a, o, i: i["step"].numpy() >= np.array([1, 3, 99]),
    )
    adapter.seed(0)
    adapter.reset()
    act = np.zeros((3, 2), np.float32)
    for _ in range(2):
        before = list(adapter.reset_infos)
        _, _, dones, infos = adapter.step(act)
        assert dones.tolist() == [True, False, False]
        # Only the row that was reset gets a new reset info (the one of its next episode).
        same = [a is b for a, b in zip(before, adapter.reset_infos, strict=True)]
        assert same == [False, True, True]
        assert adapter.reset_infos[0]["step"] == 0 and infos[0]["step"] == 1
        assert [i["TimeLimit.truncated"] for i in infos] == [False, False, False]
        assert ["terminal_observation" in i for i in infos] == [True, False, False]
    _, _, dones, infos = adapter.step(act)
    assert dones.tolist() == [True, True, True]
    assert [i["TimeLimit.truncated"] for i in infos] == [False, False, True]
    assert [i["step"] for i in infos] == [1, 3, 3]


def test_sb3_seed_then_reset_is_deterministic_and_used_once():
    def first_obs(seed):
        adapter = WorldModelSB3VecEnv.make(CITYWALK, num_envs=2, **TINY)
        adapter.seed(seed)
        obs = adapter.reset()
        assert adapter._seeds == [None, None]  # consumed by that reset
        again = adapter.reset()
        adapter.close()
        return obs, again

    (a, a_next), (b, _), (c, _) = first_obs(3), first_obs(3), first_obs(4)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)
    assert not np.array_equal(a, a_next)  # the second reset continued the streams


def test_sb3_reset_options_per_row():
    adapter = WorldModelSB3VecEnv.make(DRIVING, num_envs=2, **TINY)
    picture = np.full((48, 40, 3), 200, np.uint8)
    adapter.set_options({"image": picture})
    obs = adapter.reset()
    assert abs(obs.mean() - 200) < 5
    adapter.seed(1)
    adapter.set_options([{"image": picture}, {"speed": 10.0}])
    obs = adapter.reset()
    assert abs(obs[0].mean() - 200) < 5 and abs(obs[1].mean() - 200) > 10
    # every row's reset info, each from the reset of its own group
    assert [info["pose"][3] for info in adapter.reset_infos] == [25.0, 10.0]
    # Seeded rows come out as if reset once: row 1 matches a plain seeded reset.
    ref = WorldModelVectorEnv(2, world="driving", **TINY)
    assert np.array_equal(obs[1], ref.reset(seed=1)[0][1])
    adapter.set_options({"env_idx": [0]})
    with pytest.raises(ValueError, match="resets every row"):
        adapter.reset()
    # One row's bad options are refused before any row is reset: the rows keep their episodes.
    adapter.step(np.zeros((2, 2), np.float32))
    adapter.set_options([{"image": picture}, {"image": picture.astype(np.float32)}])
    with pytest.raises(ValueError, match=r"set_options for rows \[1\]: .*uint8"):
        adapter.reset()
    assert adapter.venv.get_state()["steps"].tolist() == [1, 1]


def test_sb3_reset_with_per_row_options_starts_each_row_once():
    """After the first reset (which must start every row), rows with options of their own are
    reset once each: a start_fn with a side effect (a curriculum's counter) is asked once per
    row, and unseeded rows draw their start once."""
    started: list[int] = []

    def count(rngs):
        started.append(len(rngs))
        return {}

    adapter = WorldModelSB3VecEnv.make(DRIVING, num_envs=3, start_fn=count, **TINY)
    adapter.reset()
    assert started == [3]
    started.clear()
    adapter.set_options([{"speed": 10.0}, {}, {}])
    adapter.reset()
    assert sorted(started) == [1, 2]
    assert [info["pose"][3] for info in adapter.reset_infos] == [10.0, 25.0, 25.0]
    # Rows sharing a bank still reset at once: what no row owns (views handed over) goes.
    shared = WorldModelSB3VecEnv.make(DRIVING, num_envs=2, memory_shared=True, **TINY)
    stored = lambda: int((shared.venv._engine.memory.uid >= 0).sum())  # noqa: E731
    for options in ({}, [{"speed": 10.0}, {}]):
        shared.reset()
        for _ in range(3):
            shared.step(np.zeros((2, 2), np.float32))
        shared.venv.hand_over_memory([0, 1])
        shared.set_options(options)
        shared.reset()
        assert stored() == 2  # the two start chunks alone


def test_sb3_attr_method_and_wrapper_queries():
    adapter = WorldModelSB3VecEnv.make(DRIVING, num_envs=3, **TINY, max_episode_steps=7)
    for seed in (-1, 1.5):
        with pytest.raises(ValueError, match="seed must be a non-negative int"):
            adapter.seed(seed)  # refused when given, not at the next reset
    adapter.reset()
    assert adapter.get_attr("max_episode_steps") == [7, 7, 7]
    assert adapter.get_attr("render_mode", indices=[2]) == [None]
    assert adapter.has_attr("fork") and not adapter.has_attr("no_such_attribute")
    adapter.set_attr("max_episode_steps", 5)
    assert adapter.venv.max_episode_steps == 5
    with pytest.raises(ValueError, match="every row"):
        adapter.set_attr("max_episode_steps", 4, indices=[0])
    space = adapter.venv.observation_space
    with pytest.raises(AttributeError, match="world's"):
        adapter.set_attr("observation_space", adapter.observation_space)
    assert adapter.venv.observation_space is space
    states = adapter.env_method("get_state", indices=[0, 2])  # one row each
    assert len(states) == 2 and [s["steps"].tolist() for s in states] == [[0], [0]]
    assert adapter.env_method("get_state", [1], indices=[0, 2])[0]["steps"].tolist() == [0]
    every = adapter.env_method("get_state")  # every row: one row's state each, as SB3's envs
    assert [s["steps"].tolist() for s in every] == [[0], [0], [0]]
    assert adapter.env_method("set_state", every[2], indices=[0]) == [None]
    assert adapter.env_method("set_state", adapter.venv.get_state(), env_idx=None) == [None] * 3
    idle = adapter.env_method("idle_action")
    assert len(idle) == 3 and np.array_equal(idle[0], adapter.venv.head.idle_action())
    adapter.env_method("set_memory", False, indices=[1])  # that row only
    assert adapter.venv._engine.memory.enabled.tolist() == [True, False, True]
    with pytest.raises(ValueError, match="takes no env_idx"):
        adapter.env_method("fork", 0, 2, indices=[0])
    with pytest.raises(TypeError, match="num_envs is an attribute, not a method; read it with"):
        adapter.env_method("num_envs")
    assert adapter.env_is_wrapped(gym.Wrapper) == [False, False, False]
    assert adapter.env_is_wrapped(gym.Wrapper, indices=1) == [False]
    with pytest.raises(IndexError, match="out of range"):
        adapter.get_attr("num_envs", indices=[3])
    # As SB3's own VecEnvs: a row's spaces, and Gymnasium 1.x's read through wrappers.
    assert adapter.get_attr("action_space", indices=[0]) == [adapter.venv.single_action_space]
    assert adapter.get_attr("observation_space")[2] is adapter.observation_space
    assert adapter.env_method("get_wrapper_attr", "max_episode_steps", indices=[1]) == [5]


def test_sb3_get_images_and_render():
    adapter = WorldModelSB3VecEnv.make(DRIVING, num_envs=2, **TINY, render_mode="rgb_array")
    assert adapter.render_mode == "rgb_array"
    obs = adapter.reset()
    images = adapter.get_images()
    assert len(images) == 2 and images[0].shape == (32, 32, 3) and images[0].dtype == np.uint8
    assert np.array_equal(np.stack(images), obs)
    tiled = adapter.render()  # SB3 tiles the 2 frames into a 2x1 grid
    assert np.array_equal(tiled, np.concatenate(images, axis=0))
    rows = adapter.env_method("render", indices=[1, 0])  # each row its own frame
    assert np.array_equal(rows[0], images[1]) and np.array_equal(rows[1], images[0])
    plain = WorldModelSB3VecEnv.make(DRIVING, num_envs=2, **TINY)
    plain.reset()
    with pytest.warns(UserWarning, match="rgb_array"):
        assert plain.get_images() == [None, None]
    fresh = WorldModelSB3VecEnv.make(DRIVING, num_envs=2, **TINY, render_mode="rgb_array")
    with pytest.raises(RuntimeError, match=r"call reset\(\) before render"):
        fresh.render()
    with pytest.raises(RuntimeError, match=r"call reset\(\) before render"):
        fresh.render("human")  # (a window: tests/test_render_human.py)


def test_sb3_actions_given_before_a_reset_are_not_stepped():
    adapter = WorldModelSB3VecEnv.make(DRIVING, num_envs=2, **TINY)
    adapter.reset()
    adapter.step_async(np.zeros((2, 2), np.float32))
    adapter.reset()
    with pytest.raises(RuntimeError, match=r"call step_async\(actions\) before step_wait"):
        adapter.step_wait()


def test_sb3_rejects_other_autoreset_modes_and_torch_output():
    with pytest.raises(ValueError, match="SAME_STEP"):
        WorldModelSB3VecEnv(WorldModelVectorEnv(2, world="driving", **TINY))
    with pytest.raises(ValueError, match="SAME_STEP"):
        WorldModelSB3VecEnv.make(DRIVING, 2, autoreset_mode=AutoresetMode.NEXT_STEP, **TINY)
    with pytest.raises(ValueError, match="numpy"):
        WorldModelSB3VecEnv.make(DRIVING, 2, output="torch", **TINY)
    with pytest.raises(ValueError, match="'CartPole-v1' is not a world-model env"):
        WorldModelSB3VecEnv.make("CartPole-v1", 2)
    with pytest.raises(TypeError, match="WorldModelVectorEnv"):
        WorldModelSB3VecEnv(gym.make(DRIVING, **TINY))


class SmallCNN(BaseFeaturesExtractor):
    """Two stride-2 convolutions: fits the tiny 32x32 frames (NatureCNN needs >= 36x36)."""

    def __init__(self, observation_space, features_dim=64):
        super().__init__(observation_space, features_dim)
        channels = observation_space.shape[0]
        self.cnn = torch.nn.Sequential(
            torch.nn.Conv2d(channels, 16, 4, stride=2),
            torch.nn.ReLU(),
            torch.nn.Conv2d(16, 16, 4, stride=2),
            torch.nn.ReLU(),
            torch.nn.Flatten(),
        )
        with torch.no_grad():
            n = self.cnn(torch.zeros(1, *observation_space.shape)).shape[1]
        self.linear = torch.nn.Sequential(torch.nn.Linear(n, features_dim), torch.nn.ReLU())

    def forward(self, observations):
        return self.linear(self.cnn(observations))


def test_ppo_learns_on_the_adapter(own_folders):
    venv = WorldModelSB3VecEnv.make(DRIVING, num_envs=2, **TINY, max_episode_steps=16)
    model = PPO(
        "CnnPolicy",
        venv,
        n_steps=64,
        batch_size=32,
        n_epochs=1,
        seed=0,
        device="cpu",
        policy_kwargs=dict(
            normalize_images=True,
            features_extractor_class=SmallCNN,
            features_extractor_kwargs=dict(features_dim=64),
        ),
    )
    before = [p.detach().clone() for p in model.policy.parameters()]
    model.learn(256)
    assert model.num_timesteps == 256
    changed = [
        not torch.equal(a, b) for a, b in zip(before, model.policy.parameters(), strict=True)
    ]
    assert all(changed)  # every layer took a gradient step
    assert model.logger.get_dir() == str(own_folders / "sb3-logs")  # not a folder in /tmp
    venv.close()


def test_dqn_trains_on_the_city_walk_s_discrete_mode():
    """``action_mode="discrete"``: one Discrete(25) index, which DQN needs, the keys' pair."""
    from stable_baselines3 import DQN

    keys = WorldModelVectorEnv(1, world="citywalk", **TINY)
    index = WorldModelVectorEnv(1, world="citywalk", action_mode="discrete", **TINY)
    assert index.single_action_space == gym.spaces.Discrete(25)
    for env in (keys, index):
        env.reset(seed=0)
    for move, turn in ((1, 2), (0, 3), (4, 0)):  # W + right, look up, D
        a = keys.step(np.array([[move, turn]]))
        b = index.step(np.array([5 * move + turn]))
        assert np.array_equal(a[0], b[0]) and np.array_equal(a[4]["pose"], b[4]["pose"])
    venv = WorldModelSB3VecEnv.make(
        CITYWALK, num_envs=2, action_mode="discrete", **TINY, max_episode_steps=16
    )
    model = DQN(
        "CnnPolicy",
        venv,
        learning_starts=32,
        train_freq=4,
        batch_size=16,
        buffer_size=256,
        seed=0,
        device="cpu",
        policy_kwargs=dict(features_extractor_class=SmallCNN, features_extractor_kwargs={}),
    )
    before = [p.detach().clone() for p in model.q_net.parameters()]
    model.learn(96)
    assert model.num_timesteps == 96
    assert all(not torch.equal(a, b) for a, b in zip(before, model.q_net.parameters(), strict=True))
    venv.close()


# --- PettingZoo ---


def parallel_env(**kwargs):
    return WorldModelParallelEnv(CITYWALK, **{"num_agents": 2, "max_cycles": 5, **TINY, **kwargs})


@pytest.mark.parametrize("obs_mode", ["rgb", "rgb+pose"])
def test_parallel_api_test_passes(obs_mode):
    env = parallel_env(obs_mode=obs_mode)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pettingzoo_test.parallel_api_test(env, num_cycles=20)
    # The API test resets with options={"options": 1}, which the env ignores with a warning.
    assert [str(w.message) for w in caught if "ignores unknown options" not in str(w.message)] == []
    assert env.max_cycles == 20  # the API test sets it; it reaches the vector env
    assert env.venv.max_episode_steps == 20
    assert parallel_env(max_cycles=None).venv.max_episode_steps is None  # never, not the id's


def test_parallel_seed_test_passes():
    pettingzoo_test.parallel_seed_test(parallel_env)


def test_the_module_has_pettingzoos_factories_and_names_unknown_agents():
    import functools
    import types

    from gym_worldmodel.integrations import pettingzoo as module

    tiny = types.SimpleNamespace(
        parallel_env=functools.partial(module.parallel_env, **TINY),
        env=functools.partial(module.env, **TINY),
    )
    pettingzoo_test.max_cycles_test(tiny)  # parallel_env(max_cycles=...) and env(...) as modules
    aec = module.env(DRIVING, **TINY)
    with pytest.warns(UserWarning, match="ignores unknown options"):  # the test's options={...}
        pettingzoo_test.api_test(aec, num_cycles=5)
    env = parallel_env()
    env.reset(seed=0)
    for ask in (env.observation_space, env.action_space):
        with pytest.raises(ValueError, match=r"unknown agent 'agent_9'; this env's are \["):
            ask("agent_9")
    with pytest.raises(ValueError, match=r"step takes a dict \{agent: action\}.*got list"):
        env.step([np.array([0, 0])] * 2)
    with pytest.raises(ValueError, match=r"unknown agents \['bob'\]"):
        env.step({"agent_0": np.array([0, 0]), "agent_1": np.array([0, 0]), "bob": 0})
    with pytest.raises(ValueError, match=r"render_mode 'rgb': this env renders 'rgb_array'"):
        parallel_env(render_mode="rgb")


def test_parallel_same_seed_same_rollout():
    def rollout(seed):
        env = parallel_env()
        obs, _ = env.reset(seed=seed)
        frames = [obs["agent_1"]]
        for t in range(3):
            obs, *_ = env.step({a: np.array([t % 5, 1]) for a in env.agents})
            frames.append(obs["agent_1"])
        return np.stack(frames)

    a, b, c = rollout(0), rollout(0), rollout(1)
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    with pytest.raises(ValueError, match="seed must be a non-negative int or None, got -1"):
        parallel_env().reset(seed=-1)


def test_parallel_spaces_state_render_and_close():
    env = parallel_env(render_mode="rgb_array")
    assert env.possible_agents == ["agent_0", "agent_1"] and env.agents == []
    assert env.observation_space("agent_0") is env.observation_space("agent_0")
    assert env.action_space("agent_1") is env.action_space("agent_1")
    assert env.action_space("agent_0") is not env.action_space("agent_1")  # own RNG streams
    draws = {
        a: [env.action_space(a).sample().tolist() for _ in range(8)] for a in env.possible_agents
    }
    assert draws["agent_0"] != draws["agent_1"]  # copies of one space drew the same actions
    assert env.metadata["is_parallelizable"]
    assert env.metadata["render_modes"] == ["human", "rgb_array"]
    obs, infos = env.reset(seed=0)
    assert env.num_agents == 2 and env.max_num_agents == 2
    assert set(infos["agent_0"]) == {"step", "pose", "memory_hits", "memory_score"}
    assert infos["agent_0"]["step"] == 0
    state = env.state()
    assert state.shape == (2, 32, 32, 3) and state.dtype == np.uint8
    assert env.state_space.contains(state)
    assert np.array_equal(state[1], obs["agent_1"])
    assert np.array_equal(env.render(), obs["agent_0"])
    obs, rewards, terms, truncs, infos = env.step({"agent_0": [1, 0], "agent_1": [0, 2]})
    assert type(rewards["agent_0"]) is float and type(terms["agent_1"]) is bool
    assert type(truncs["agent_1"]) is bool and infos["agent_1"]["step"] == 1
    assert env.observation_space("agent_0").contains(obs["agent_0"])
    with pytest.raises(ValueError, match="missing"):
        env.step({"agent_0": [1, 0]})
    env.close()
    env.close()  # idempotent
    assert env.venv.memory  # a reset reopens it, as the other envs do, memory and all
    assert set(env.reset(seed=0)[0]) == {"agent_0", "agent_1"}
    assert env.metadata["world_fps"] == env.venv.metadata["world_fps"]
    for options in ([1], "x"):
        with pytest.raises(ValueError, match="reset options must be a dict"):
            env.reset(options=options)
    with pytest.raises(TypeError, match="autoreset_mode"):
        parallel_env(autoreset_mode="SameStep")


def test_done_agents_leave_until_reset_and_do_not_perturb_the_others():
    # agent_0 terminates after every step it takes; agent_1 runs to max_cycles=3.
    def stop_row_0(p, a, o, i):
        return np.array([True, False])

    # each agent its own bank: a shared one gives agent_1 what agent_0 saw, which differs
    kw = dict(max_cycles=3, render_mode="rgb_array", shared_memory=False)
    env = parallel_env(termination_fn=stop_row_0, **kw)
    ref = parallel_env(**kw)  # nobody dies early
    obs, _ = env.reset(seed=7)
    ref.reset(seed=7)
    act = {"agent_0": np.array([1, 1]), "agent_1": np.array([3, 2])}

    obs, _, terms, truncs, _ = env.step(act)
    ref_obs, *_ = ref.step(act)
    assert terms == {"agent_0": True, "agent_1": False} and not any(truncs.values())
    assert env.agents == ["agent_1"]
    terminal_0 = obs["agent_0"]
    with pytest.raises(ValueError, match="not live"):
        env.step(act)  # an action for the dead agent_0
    before = env.get_state()
    with pytest.raises(ActionError, match="agent_1's action"):  # before the dead row restarts
        env.step({"agent_1": np.array([9, 9])})
    after = env.get_state()
    assert after["needs_reset"].tolist() == before["needs_reset"].tolist() == [True, False]
    assert after["venv"]["steps"].tolist() == before["venv"]["steps"].tolist()

    for step in (2, 3):  # row 0 is restarted and stepped hidden (and terminates again)
        obs, _, terms, truncs, infos = env.step({"agent_1": act["agent_1"]})
        ref_obs, *_ = ref.step(act)
        assert set(obs) == set(terms) == set(infos) == {"agent_1"}
        assert np.array_equal(obs["agent_1"], ref_obs["agent_1"])  # rows are independent
        assert np.array_equal(env.state()[0], terminal_0)  # the dead agent's state is frozen
        assert np.array_equal(env.state()[1], obs["agent_1"])
        assert infos["agent_1"]["step"] == step and truncs == {"agent_1": step == 3}
        if step == 2:
            assert np.array_equal(env.render(), obs["agent_1"])  # the first live agent's frame
    assert env.agents == []
    assert np.array_equal(env.render(), terminal_0)  # nobody left: agent_0's last frame
    state = env.state()
    # no actions for no agents: empty dicts and nothing changes (PettingZoo's own envs, and
    # SuperSuit's black_death, which steps so after the last agent is done)
    assert env.step({}) == ({}, {}, {}, {}, {}) and np.array_equal(env.state(), state)
    with pytest.raises(RuntimeError, match=r"every agent is done: call reset\(\).*agent_1"):
        env.step({"agent_1": act["agent_1"]})

    obs, infos = env.reset()
    assert env.agents == ["agent_0", "agent_1"] and set(obs) == set(env.agents)
    assert all(info["step"] == 0 for info in infos.values())
    _, _, terms, _, _ = env.step(act)
    assert terms["agent_0"] is True and "agent_1" in env.agents


def test_a_failed_reset_changes_nothing_and_the_episode_goes_on():
    def stop_row_0(p, a, o, i):
        return np.array([True, False])

    kw = dict(max_cycles=5, shared_memory=True)
    # the reference ends agent_0 too: in a shared bank agent_1 sees what agent_0 stored
    env, ref = (parallel_env(termination_fn=stop_row_0, **kw) for _ in range(2))
    assert env.shared_memory
    act = {"agent_0": np.array([1, 1]), "agent_1": np.array([3, 2])}
    for e in (env, ref):
        e.reset(seed=7)
        e.step(act)
    storing = env.venv._engine.memory.storing.copy()
    with pytest.raises(ValueError, match="uint8"):
        env.reset(options={"image": np.zeros((10, 10, 3), np.float32)})
    assert np.array_equal(env.venv._engine.memory.storing, storing)
    assert env.agents == ["agent_1"]
    obs, *_ = env.step({"agent_1": act["agent_1"]})  # agent_0 restarts hidden, as before
    ref_obs, *_ = ref.step({"agent_1": act["agent_1"]})
    assert np.array_equal(obs["agent_1"], ref_obs["agent_1"])


def test_pose_observations_of_a_dead_agent_stay_frozen_in_the_state():
    def stop_row_0(p, a, o, i):
        return np.array([True, False])

    env = parallel_env(max_cycles=3, termination_fn=stop_row_0, obs_mode="rgb+pose")
    env.reset(seed=7)
    walk = np.array([1, 0])  # W: forward
    obs, *_ = env.step({"agent_0": walk, "agent_1": walk})
    terminal_0 = obs["agent_0"]
    assert terminal_0["pose"][0] > 0 and env.agents == ["agent_1"]
    obs, *_ = env.step({"agent_1": walk})
    state = env.state()
    assert env.state_space.contains(state)
    assert np.array_equal(state["pose"][0], terminal_0["pose"])  # frozen
    assert np.array_equal(state["rgb"][0], terminal_0["rgb"])
    assert np.array_equal(state["pose"][1], obs["agent_1"]["pose"])
    assert obs["agent_1"]["pose"][0] == pytest.approx(2 * terminal_0["pose"][0])


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"env_id": "Simulator-Driving-v0"}, "'Simulator-Driving-v0' is not a world-model env"),
        ({"env_id": "CartPole-v1"}, r"not a world-model env \(e.g. \[.WorldModel-CityWalk-v0"),
        ({"max_cycles": 0}, "max_cycles must be an int >= 1, or None or -1 for no limit, got 0"),
        ({"num_agents": 0}, "num_agents must be an int >= 1"),
        ({"num_agents": "2"}, "num_agents must be an int >= 1, got '2'"),
        ({"max_cycles": 2.5}, "max_cycles must be an int >= 1"),
    ],
)
def test_parallel_env_arguments_that_cannot_work_are_named(kwargs, match):
    with pytest.raises(ValueError, match=match):
        WorldModelParallelEnv(**{"env_id": CITYWALK, **kwargs}, **TINY)


def test_an_id_registered_with_the_world_models_vector_env_is_a_world(monkeypatch):
    monkeypatch.setitem(gym.registry, "MyCity-v0", gym.spec(CITYWALK))  # as gym.register does
    env = WorldModelParallelEnv("MyCity-v0", num_agents=2, max_cycles=-1, **TINY)
    assert env.max_cycles is None  # -1: no limit, as the vector env takes it


def test_a_bad_agent_action_is_named_and_changes_nothing():
    env = WorldModelParallelEnv(
        "WorldModel-Robot-v0", num_agents=2, max_cycles=5, action_mode="dict", **TINY
    )
    env.reset(seed=0)
    for space in env.action_spaces.values():
        space.seed(0)
    good = {a: env.action_space(a).sample() for a in env.agents}
    bad = [
        ({k: v for k, v in good["agent_1"].items() if k != "world_vector"}, "keys"),
        (dict(good["agent_1"], world_vector=np.full(3, 9.0, np.float32)), "world_vector"),
        ([0.0] * 10, "expected a dict"),
    ]
    for action, what in bad:
        with pytest.raises(ActionError, match=f"agent_1's action: .*{what}"):
            env.step({"agent_0": good["agent_0"], "agent_1": action})
    extra = dict(good["agent_0"], foo=np.zeros(1))
    with pytest.raises(ActionError, match="agent_0's action: .*keys"):
        env.step({"agent_0": extra, "agent_1": good["agent_1"]})
    assert env.venv.get_state()["steps"].tolist() == [0, 0]
    env.step(good)


def test_the_aec_form_checks_each_agent_s_action_when_that_agent_gives_it():
    from gym_worldmodel.integrations import pettingzoo as module

    aec = module.env(DRIVING, num_agents=3, max_cycles=5, **TINY)
    ref = module.parallel_env(DRIVING, num_agents=3, max_cycles=5, **TINY)
    aec.reset(seed=0)
    ref.reset(seed=0)
    good = {a: np.array([0.3 * i - 0.3, 0.5], np.float32) for i, a in enumerate(ref.agents)}
    bad = [([np.nan, 0.0], "finite values"), ([0.0] * 3, "shape"), ([2.0, 0.0], r"\[-1, 1\]")]
    for agent in ref.possible_agents:
        for action, what in bad:  # each refused at its own agent's turn, not the cycle's end
            with pytest.raises(ActionError, match=f"^{agent}'s action: driving action: .*{what}"):
                aec.step(np.array(action, np.float32))
            assert aec.agent_selection == agent  # still its turn: it can give a good action
        aec.step(good[agent])
    assert aec.unwrapped.venv.get_state()["steps"].tolist() == [1, 1, 1]  # one batched step
    obs, *_ = ref.step(good)
    for agent in ref.possible_agents:  # the refused actions left nothing behind
        assert np.array_equal(aec.observe(agent), obs[agent])


def test_reset_options_of_another_world_are_named_as_ignored():
    env = WorldModelParallelEnv(CITYWALK, num_agents=2, **TINY)
    with pytest.warns(UserWarning, match=r"ignores unknown options \['speed'\]; .*\['image', 'f"):
        env.reset(seed=0, options={"speed": 3.0})
    assert len(env.agents) == 2  # reset, the option ignored


def test_agents_may_act_with_torch_tensors():
    env = parallel_env()
    env.reset(seed=0)
    act = {"agent_0": torch.tensor([1, 0]), "agent_1": torch.tensor([3, 2])}
    obs, *_ = env.step(act)
    ref = parallel_env()
    ref.reset(seed=0)
    ref_obs, *_ = ref.step({a: v.numpy() for a, v in act.items()})
    assert np.array_equal(obs["agent_1"], ref_obs["agent_1"])


def test_dead_robot_agents_idle_in_arm_mode_and_driving_agents_take_a_speed():
    env = WorldModelParallelEnv(
        "WorldModel-Robot-v0", num_agents=2, max_cycles=5, action_mode="dict", **TINY
    )
    env.reset(seed=0)
    act = {a: env.action_space(a).sample() for a in env.agents}
    act["agent_0"]["terminate_episode"], act["agent_1"]["terminate_episode"] = 0, 1
    assert env.step(act)[2] == {"agent_0": True, "agent_1": False}  # RT-1: 0 ends it
    resets = []
    reset = env.venv.reset
    env.venv.reset = lambda **kw: resets.append(kw) or reset(**kw)
    for _ in range(3):  # agent_0's hidden row restarts once, then idles without ending
        env.step({"agent_1": act["agent_1"]})
    assert len(resets) == 1
    cars = WorldModelParallelEnv(DRIVING, num_agents=2, max_cycles=5, **TINY)
    _, infos = cars.reset(seed=0, options={"speed": [5.0, 20.0]})
    assert [infos[a]["pose"][3] for a in cars.agents] == [5.0, 20.0]


def test_agents_share_one_memory_bank_and_find_what_another_saw():
    env = parallel_env()
    obs, _ = env.reset(seed=0)
    assert np.array_equal(obs["agent_0"], obs["agent_1"])  # one start image, one origin
    memory = env.venv._engine.memory
    assert memory.banks.tolist() == [0, 0]
    _, _, _, _, infos = env.step({"agent_0": np.array([0, 0]), "agent_1": np.array([0, 0])})
    # Each agent's own start chunk is its sink (never retrieved); the other's is not.
    recall = env.venv._engine.recall
    owners = [int(memory.owner[0][memory.uid[0] == uid][0]) for uid in recall.uid[:, 0]]
    assert owners == [1, 0] and infos["agent_1"]["memory_hits"] == 1
    separate = parallel_env(shared_memory=False)
    separate.reset(seed=0)
    assert separate.venv._engine.memory.banks.tolist() == [0, 1]
    # agents sharing a bank share their start's origin: one picture for all, not one each
    pictures = [np.full((8, 8, 3), v, np.uint8) for v in (40, 200)]
    state = env.state()
    with pytest.raises(ValueError, match="start from one picture .* shared_memory=False"):
        env.reset(seed=1, options={"image": pictures})
    assert np.array_equal(env.state(), state) and env.agents == ["agent_0", "agent_1"]
    env.reset(seed=1, options={"image": [pictures[0], pictures[0]]})  # the same one: fine
    obs, _ = separate.reset(seed=1, options={"image": pictures})
    assert obs["agent_0"].mean() < obs["agent_1"].mean()


def test_parallel_state_restores_the_episode_with_who_is_live():
    env = parallel_env(  # agent_0 ends at its 2nd step
        max_cycles=10,
        render_mode="rgb_array",
        termination_fn=lambda p, a, o, i: np.asarray(i["step"]) * [1, 0] == 2,
    )
    env.reset(seed=3)
    act = {"agent_0": np.array([1, 1]), "agent_1": np.array([2, 0])}
    env.step(act)
    saved = env.get_state()  # both live; agent_0 ends in the next step

    def play():
        out = [env.step(act)[0]["agent_1"]]  # agent_0 ends here
        assert env.agents == ["agent_1"]
        for _ in range(2):  # its row restarts hidden
            out.append(env.step({"agent_1": act["agent_1"]})[0]["agent_1"])
        return np.stack(out), env.state(), env.render()

    first = play()
    env.set_state(saved)
    assert env.agents == ["agent_0", "agent_1"]
    again = play()
    for a, b in zip(first, again, strict=True):
        assert np.array_equal(a, b)
    image = np.zeros((8, 8, 3), np.uint8)
    for bad, match in (
        ({**saved, "agents": ["agent_7"]}, "state of other agents"),
        ({"venv": saved["venv"]}, "state must be what get_state"),
        ({**saved, "needs_reset": np.zeros(3, bool)}, r"needs_reset'\] must be a \(2,\) bool"),
        ({**saved, "start": {"image": "not a picture"}}, r"start'\] does not start .* image"),
        ({**saved, "start": {"speed": 3.0}}, r"start'\] must be a dict of reset options"),
        ({**saved, "start": {"image": image}, "frames": "x"}, r"frames'\] must be None or"),
        ({**saved, "start_rng": {}}, "a generator state must be a NumPy PCG64"),
    ):
        with pytest.raises(ValueError, match=match):
            env.set_state(bad)
    assert env.agents == ["agent_1"] and np.array_equal(env.state(), again[1])
    # between envs that render and envs that do not; not between observation modes
    quiet = parallel_env(max_cycles=10)
    quiet.reset(seed=0)
    quiet.set_state(saved)
    with pytest.warns(UserWarning, match="render_mode"):
        assert quiet.render() is None
    assert quiet.step(act)[0].keys() == {"agent_0", "agent_1"}
    env.set_state(quiet.get_state())
    assert np.array_equal(env.render(), env.venv.render()[0])
    posed = parallel_env(obs_mode="rgb+pose")
    posed.reset(seed=0)
    with pytest.raises(ValueError, match="state of another observation"):
        env.set_state(posed.get_state())


def test_a_dead_agent_leaves_its_views_to_the_live_ones_and_stores_nothing_until_reset():
    env = parallel_env(max_cycles=6, termination_fn=lambda p, a, o, i: np.array([True, False]))
    env.reset(seed=0)
    memory = env.venv._engine.memory
    act = np.array([1, 0])
    env.step({"agent_0": act, "agent_1": act})  # agent_0 dies
    views = memory.uid[0][memory.owner[0] == 0].tolist()  # its start chunk and its one step
    assert len(views) == 2
    for _ in range(3):  # its row restarts hidden and idles; only agent_1 adds to the bank
        env.step({"agent_1": act})
    assert memory.storing.tolist() == [False, True] and memory.chunks[1] == 5
    assert (memory.owner[0] == 0).sum() == 0  # nothing of row 0's hidden episode
    assert np.isin(views, memory.uid[0]).all()  # what agent_0 saw is still there for agent_1
    assert (memory.owner[0][np.isin(memory.uid[0], views)] == 2).all()  # no row's own
    env.reset(seed=0)  # a new episode for all: the bank holds the two new starts only
    assert memory.storing.tolist() == [True, True] and memory.chunks.tolist() == [1, 1]
    assert sorted(memory.owner[0][memory.uid[0] >= 0].tolist()) == [0, 1]


def test_hand_over_memory_needs_rows_sharing_a_bank():
    env = WorldModelVectorEnv(2, world="citywalk", **TINY)
    env.reset(seed=0)
    with pytest.raises(ValueError, match="memory_shared=True"):
        env.hand_over_memory([0])
    with pytest.raises(ValueError, match="env_idx"):
        WorldModelVectorEnv(2, world="citywalk", memory_shared=True, **TINY).hand_over_memory(5)


def test_read_only_memory_rows_retrieve_but_do_not_store():
    env = WorldModelVectorEnv(2, world="citywalk", **TINY)
    env.reset(seed=0)
    env.set_memory(None, env_idx=1, store=False)
    env.step(np.array([[1, 0], [1, 0]]))
    memory = env._engine.memory
    assert memory.chunks.tolist() == [2, 2] and memory.enabled.tolist() == [True, True]
    assert (memory.owner[1] == 1).sum() == 1  # row 1 stored its start only
    state = env.get_state()
    env.set_memory(None, store=True)
    env.set_state(state)  # the switch is part of the state
    assert memory.storing.tolist() == [True, False]


# --- Other array libraries (CuPy on a GPU: the `gpu` extra) ---

CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@CUDA
def test_cupy_takes_the_device_tensors_of_a_cuda_env_without_a_copy():
    """The CuPy snippet of docs/envs.md: observations in, actions back, by DLPack."""
    cupy = pytest.importorskip("cupy")
    env = WorldModelVectorEnv(2, world="driving", device="cuda", output="torch", **TINY)
    obs, _ = env.reset(seed=0)
    frames = cupy.from_dlpack(obs)
    assert frames.data.ptr == obs.data_ptr() and frames.shape == tuple(obs.shape)
    actions = cupy.zeros((2, 2), cupy.float32)
    assert env.step(torch.from_dlpack(actions))[0].shape == obs.shape


@pytest.mark.parametrize("world", ["citywalk", "robot", "driving"])
@pytest.mark.parametrize("mode", [AutoresetMode.NEXT_STEP, AutoresetMode.DISABLED])
@pytest.mark.parametrize(("library", "device"), [("numpy", "cpu")])
def test_gymnasiums_array_conversion_hands_the_steps_to_another_array_library(
    world, mode, library, device
):
    """output="torch" under Gymnasium's ArrayConversion steps as output="numpy" does.

    Not CuPy: the wrapper converts the infos too, which stay host arrays, and CuPy refuses those.
    """
    xp = pytest.importorskip(library)
    array_conversion = pytest.importorskip("gymnasium.wrappers.vector.array_conversion")
    kwargs = dict(world=world, device=device, max_episode_steps=2, autoreset_mode=mode, **TINY)
    plain = WorldModelVectorEnv(2, **kwargs)
    env = WorldModelVectorEnv(2, output="torch", **kwargs)
    converted = array_conversion.ArrayConversion(env, env_xp=torch, target_xp=xp)
    to_numpy = getattr(xp, "asnumpy", np.asarray)
    expected, got = plain.reset(seed=0), converted.reset(seed=0)
    plain.action_space.seed(0)
    ends = 0
    for _ in range(6):
        assert type(got[0]) is type(xp.asarray(0)) and np.array_equal(to_numpy(got[0]), expected[0])
        assert np.array_equal(to_numpy(got[-1]["step"]), expected[-1]["step"])
        if "pose" in expected[-1]:
            assert np.array_equal(to_numpy(got[-1]["pose"]), expected[-1]["pose"])
        assert type(got[-1]["step"]) is type(xp.asarray(0))  # the infos are converted too
        if len(expected) == 5:  # a step: rewards and flags, then the reset DISABLED needs
            for mine, theirs in zip(got[1:4], expected[1:4], strict=True):
                assert type(mine) is type(xp.asarray(0)) and np.array_equal(to_numpy(mine), theirs)
            ends += int(expected[3].all())  # both rows at the 2-step limit
            if mode == AutoresetMode.DISABLED and expected[3].all():
                done = expected[3]
                expected = plain.reset(options={"reset_mask": done})
                got = converted.reset(options={"reset_mask": xp.asarray(done)})
                continue
        action = plain.action_space.sample()
        expected, got = plain.step(action), converted.step(xp.asarray(action))
    assert ends == 2


def test_agents_may_give_a_steps_action_beside_one_per_frame():
    """As the env takes either: the step's action is repeated over its frames, here and for a
    dead agent's idle action beside live agents' per-frame ones."""
    env = WorldModelParallelEnv(DRIVING, num_agents=2, max_cycles=None, **TINY)
    twin = WorldModelParallelEnv(DRIVING, num_agents=2, max_cycles=None, **TINY)
    frames = env.venv.config.dit.chunk_frames
    step = np.array([0.5, -0.25], np.float32)
    for e in (env, twin):
        e.reset(seed=0)
    mixed = env.step({"agent_0": step, "agent_1": np.tile(step, (frames, 1))})[0]
    same = twin.step({"agent_0": step, "agent_1": step})[0]
    assert all(np.array_equal(mixed[a], same[a]) for a in env.agents)
    with pytest.raises(ActionError, match=r"agent_1's action"):
        env.step({"agent_0": step, "agent_1": np.zeros((frames + 2, 2), np.float32)})


def test_a_start_fn_with_a_shared_memory_bank_is_refused_not_ignored():
    image = np.zeros((64, 64, 3), np.uint8)
    with pytest.raises(ValueError, match=r"start_fn draws each agent's start.*shared_memory=False"):
        WorldModelParallelEnv(CITYWALK, memory=True, start_fn=lambda rngs: {"image": image}, **TINY)
    WorldModelParallelEnv(  # one bank per agent: each its own start
        CITYWALK, memory=True, shared_memory=False, start_fn=lambda r: {"image": image}, **TINY
    ).reset(seed=0)
