"""``render_mode="human"``: the window shows what reset and step return, paced, and closes.

The world envs, the simulator envs, and the PettingZoo and SB3 adapters. Headless: SDL's dummy
video driver (highway-env's, whose frames are black under it: the off-screen one), set before
pygame opens its display.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import sys
import time
import warnings

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.error import DependencyNotInstalled
from gymnasium.utils.env_checker import check_env
from gymnasium.vector import AutoresetMode
from helpers import TINY

import gym_worldmodel  # noqa: F401  (registers the ids)
from gym_worldmodel.envs import window as window_lib
from gym_worldmodel.envs.window import tile

pygame = pytest.importorskip("pygame", reason="needs pygame-ce (the play extra)")
DRIVING = "WorldModel-Driving-v0"


def recorded(monkeypatch, driver):
    """Every picture flipped onto the window, ``(H, W, 3)`` as the env's frames are laid out."""
    if driver is None:
        monkeypatch.delenv("SDL_VIDEODRIVER", raising=False)
    else:
        monkeypatch.setenv("SDL_VIDEODRIVER", driver)
    flipped = []
    flip = pygame.display.flip

    def record():
        flipped.append(pygame.surfarray.array3d(pygame.display.get_surface()).transpose(1, 0, 2))
        flip()

    monkeypatch.setattr(pygame.display, "flip", record)
    return flipped


@pytest.fixture
def screen(monkeypatch):
    """The pictures flipped onto a window of SDL's dummy driver."""
    yield recorded(monkeypatch, "dummy")
    pygame.display.quit()  # a test that failed half way leaves no window to the next


@pytest.fixture
def offscreen(monkeypatch):
    """The pictures flipped onto a window of SDL's off-screen driver (highway-env draws there)."""
    yield recorded(monkeypatch, "offscreen")
    pygame.quit()  # (highway-env's viewer started pygame's font module too)


@pytest.fixture
def any_driver(monkeypatch):
    """The pictures flipped onto a window of the driver pygame picks, none asked for."""
    yield recorded(monkeypatch, None)
    pygame.quit()


def enlarged(frame, scale):
    return frame.repeat(scale, axis=0).repeat(scale, axis=1)


def play(env, steps=3):
    """Observations of a seeded reset and ``steps`` seeded random steps."""
    env.action_space.seed(1)
    out = [env.reset(seed=0)[0]]
    out += [env.step(env.action_space.sample())[0] for _ in range(steps)]
    return out


def test_human_mode_returns_the_same_observations_and_shows_each_one(screen):
    seen = play(gym.make(DRIVING, render_mode="rgb_array", **TINY))
    env = gym.make(DRIVING, render_mode="human", **TINY)
    assert env.render_mode == "human" and "human" in env.metadata["render_modes"]
    shown = play(env)
    assert all(np.array_equal(a, b) for a, b in zip(seen, shown, strict=True))  # same bits
    assert env.render() is None
    frames_per_step = env.unwrapped.vector.config.dit.chunk_frames
    assert len(screen) == 1 + 3 * frames_per_step  # the reset's frame, then every chunk's
    # 32 x 32 frames, enlarged 16 x (nearest neighbour) to a 512-pixel window
    assert pygame.display.get_surface().get_size() == (512, 512)
    assert np.array_equal(screen[-1], enlarged(shown[-1], 16))
    assert np.array_equal(screen[0], enlarged(shown[0], 16))
    env.close()
    assert not pygame.display.get_init()  # the window is closed
    env.close()  # twice: nothing to do


def test_every_frame_of_a_chunk_is_shown_in_turn_at_the_world_rate(screen):
    env = gym.make(DRIVING, render_mode="human", obs_mode="chunk", **TINY)
    meta = env.metadata
    assert meta["world_fps"] == 2 * meta["render_fps"] == 16  # the tiny world: 2 frames a step
    chunks = play(env, steps=2)
    start = time.perf_counter()
    chunks.append(env.step(env.action_space.sample())[0])
    elapsed = time.perf_counter() - start
    flat = [chunks[0][-1]] + [frame for chunk in chunks[1:] for frame in chunk]
    assert len(screen) == len(flat) == 7
    for picture, frame in zip(screen, flat, strict=True):
        assert np.array_equal(picture, enlarged(frame, 16))
    # the step's first frame waits for the one before's 1/16 s, its second for its own
    assert elapsed >= 2 / meta["world_fps"] * 0.9
    env.close()


@pytest.mark.parametrize("mode", [AutoresetMode.NEXT_STEP, AutoresetMode.SAME_STEP])
def test_a_vector_env_shows_its_rows_in_a_grid_ending_on_what_step_returns(screen, mode):
    kwargs = dict(num_envs=3, autoreset_mode=mode, max_episode_steps=2, **TINY)
    seen = play(gym.make_vec(DRIVING, render_mode="rgb_array", **kwargs), steps=4)
    envs = gym.make_vec(DRIVING, render_mode="human", **kwargs)
    envs.action_space.seed(1)
    shown = [envs.reset(seed=0)[0]]
    for _ in range(4):  # rows end at steps 2 and 4 and start over (at 3, or in the step)
        grid = tile(shown[-1][:, None])[0]  # the window ends on what each call returned
        assert np.array_equal(screen[-1], enlarged(grid, 7))
        shown.append(envs.step(envs.action_space.sample())[0])
    assert np.array_equal(screen[-1], enlarged(tile(shown[-1][:, None])[0], 7))
    assert all(np.array_equal(a, b) for a, b in zip(seen, shown, strict=True))
    assert envs.render() is None
    assert pygame.display.get_surface().get_size() == (455, 455)  # a 2 x 2 grid of 65, 7 x
    fork = envs.unwrapped.fork(0, 2)  # imagined futures are not shown
    before = len(screen)
    fork.step(fork.action_space.sample())
    assert fork.render_mode == "rgb_array" and len(screen) == before
    envs.close()
    assert not pygame.display.get_init()


def test_a_vector_env_draws_in_the_window_a_wrapper_gives_it(screen):
    kept = []

    class Keeping(window_lib.Window):
        def show_rows(self, frames, fps):
            kept.append((frames, fps))

    envs = gym.make_vec(DRIVING, num_envs=2, render_mode="human", obs_mode="chunk", **TINY)
    with pytest.raises(TypeError, match="must be a gym_worldmodel Window, got str"):
        envs.unwrapped.set_window("window")
    mine = Keeping("mine")
    envs.unwrapped.set_window(mine)
    obs, _ = envs.reset(seed=0)
    chunk = envs.step(envs.action_space.sample())[0]
    assert screen == [] and len(kept) == 2  # drawn in the wrapper's window alone
    assert np.array_equal(kept[0][0][:, 0], obs[:, -1]) and np.array_equal(kept[1][0], chunk)
    assert kept[1][1] == envs.metadata["world_fps"]  # the chunk's frames at the world's rate
    mine.open_display()
    envs.close()  # closes the window it draws in
    assert not pygame.display.get_init()
    quiet = gym.make_vec(DRIVING, num_envs=2, render_mode="rgb_array", **TINY)
    with pytest.raises(ValueError, match="render_mode='human', got 'rgb_array'"):
        quiet.unwrapped.set_window(mine)


def test_tile_lays_rows_out_row_by_row_with_a_black_line_between():
    frames = np.stack([np.full((2, 3, 4, 3), 10 * (i + 1), np.uint8) for i in range(5)])
    grid = tile(frames)  # 5 rows: 3 columns, 2 lines
    assert grid.shape == (2, 2 * 3 + 1, 3 * 4 + 2, 3)
    assert grid[0, 0, 0, 0] == 10 and grid[0, 0, 5, 0] == 20 and grid[0, 0, 10, 0] == 30
    assert grid[0, 4, 0, 0] == 40 and grid[0, 4, 5, 0] == 50 and grid[0, 4, 10, 0] == 0
    assert (grid[:, 3] == 0).all() and (grid[:, :, 4] == 0).all()  # the lines between
    assert np.array_equal(tile(frames[:1]), frames[0])  # one row: its frames as they are


def test_closing_the_window_lets_the_env_step_on_unseen_and_close_reopens_it(screen):
    seen = play(gym.make(DRIVING, render_mode="rgb_array", **TINY), steps=4)
    env = gym.make(DRIVING, render_mode="human", **TINY)
    shown = play(env, steps=1)
    pygame.event.post(pygame.event.Event(pygame.QUIT))
    before = len(screen)
    with pytest.warns(UserWarning, match="window was closed"):
        shown.append(env.step(env.action_space.sample())[0])
    assert not pygame.display.get_init() and len(screen) == before
    shown += [env.step(env.action_space.sample())[0] for _ in range(2)]
    assert all(np.array_equal(a, b) for a, b in zip(seen, shown, strict=True))
    assert len(screen) == before
    env.close()
    env.reset(seed=0)  # a reset after close reopens the env, and the window
    assert pygame.display.get_init() and len(screen) == before + 1
    env.close()


def test_close_without_a_window_is_fine(screen):
    env = gym.make(DRIVING, render_mode="human", **TINY)
    env.close()
    env.close()
    envs = gym.make_vec(DRIVING, num_envs=2, render_mode="human", **TINY)
    envs.close()
    assert screen == []


def test_check_env_passes_in_human_mode(screen):
    env = gym.make(DRIVING, render_mode="human", **TINY)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        check_env(env.unwrapped)
    assert [str(w.message) for w in caught] == []
    env.close()


def test_a_window_with_no_display_behind_it_warns(screen, monkeypatch):
    monkeypatch.setattr(window_lib, "os", type("os", (), {"environ": {}}))  # no driver asked
    env = gym.make(DRIVING, render_mode="human", **TINY)
    with pytest.warns(UserWarning, match="found no display.*'dummy'"):
        env.reset(seed=0)
    env.close()


# --- the simulator envs ---


def simulator(sim_id, picture):
    """A ``Simulator-*`` id whose simulator is installed, and the fixture its window needs."""
    module = {"Simulator-Driving-v0": "highway_env", "Simulator-CityWalk-v0": "miniworld"}
    missing = importlib.util.find_spec(module[sim_id]) is None
    marks = pytest.mark.skipif(missing, reason=f"needs {module[sim_id]} (simulators extra)")
    return pytest.param(sim_id, picture, marks=marks)


SIMULATORS = [
    simulator("Simulator-Driving-v0", "offscreen"),
    simulator("Simulator-CityWalk-v0", "screen"),
]


@pytest.mark.parametrize(("sim_id", "picture"), SIMULATORS)
def test_a_simulator_env_shows_each_steps_frames_and_returns_the_same_observations(
    sim_id, picture, request
):
    screen = request.getfixturevalue(picture)
    seen = play(gym.make(sim_id, render_mode="rgb_array", obs_mode="chunk"))
    env = gym.make(sim_id, render_mode="human", obs_mode="chunk")
    assert env.render_mode == "human" and "human" in env.metadata["render_modes"]
    start = time.perf_counter()
    shown = play(env)
    elapsed = time.perf_counter() - start
    assert all(np.array_equal(a, b) for a, b in zip(seen, shown, strict=True))  # same bits
    assert shown[0].std() > 5  # a picture, not a blank (highway-env's is under the dummy driver)
    assert env.render() is None
    flat = [shown[0][-1]] + [frame for chunk in shown[1:] for frame in chunk]
    assert len(screen) == len(flat) == 1 + 3 * 3  # the start, then every step's 3 frames
    for picture, frame in zip(screen, flat, strict=True):  # 64 x 64 frames, 8 x: 512 x 512
        assert np.array_equal(picture, enlarged(frame, 8))
    # paced at the world's 15 frames a second: the start's frame and 8 more shown for 1/15 s
    assert elapsed >= 9 / env.metadata["world_fps"] * 0.9
    env.close()
    assert not pygame.display.get_init()
    env.close()


@pytest.mark.skipif(importlib.util.find_spec("highway_env") is None, reason="needs highway-env")
@pytest.mark.filterwarnings("ignore:.*found no display")  # a machine without one
def test_the_driving_simulator_leaves_the_windows_video_driver_alone(any_driver):
    """The window starts pygame's display before the simulator does, and highway-env's source
    leaves it alone: it asks for no video driver."""
    env = gym.make("Simulator-Driving-v0", render_mode="human")
    obs, _ = env.reset(seed=0)
    assert "SDL_VIDEODRIVER" not in os.environ
    assert np.array_equal(any_driver[-1], enlarged(obs, 8))
    env.close()  # the window closes: a reset opens it again, as it was
    env.reset(seed=1)
    assert "SDL_VIDEODRIVER" not in os.environ and len(any_driver) == 2
    env.close()


@pytest.mark.skipif(importlib.util.find_spec("highway_env") is None, reason="needs highway-env")
def test_a_driving_simulator_leaves_another_envs_window_open_and_named(offscreen):
    """highway-env's viewer names pygame's one window at its first render and quits all of
    pygame when it closes: a world env's window kept its frames' place but lost its caption,
    then closed with the simulator (to reopen at its next step)."""
    env = gym.make("WorldModel-CityWalk-v0", render_mode="human", **TINY)
    env.reset(seed=0)
    caption = pygame.display.get_caption()
    sim = gym.make("Simulator-Driving-v0")
    assert play(sim, steps=1)[-1].std() > 5  # it draws
    assert pygame.display.get_caption() == caption
    sim.close()
    assert pygame.display.get_surface() is not None and len(offscreen) == 1
    env.step(env.action_space.sample())
    assert len(offscreen) == 1 + 2  # the chunk's frames (TINY: 2), on the window still open
    env.close()


@pytest.mark.skipif(importlib.util.find_spec("highway_env") is None, reason="needs highway-env")
def test_a_driving_simulator_made_first_leaves_a_later_window_the_machines_driver(any_driver):
    """A window opened after an off-screen driving simulator is shown, or says why not.

    highway-env's source once set ``SDL_VIDEODRIVER=offscreen`` for the rest of the process,
    and a window opened later there was drawn on that driver, unseen and without a warning.
    Under a display (``xvfb-run``) the window now opens on it; without one, on SDL's own
    off-screen fallback, and it warns.
    """
    pygame.quit()
    pygame.display.init()
    own = pygame.display.get_driver()  # the machine's: none asked for (any_driver)
    pygame.display.quit()
    sim = gym.make("Simulator-Driving-v0")
    drawn = play(sim, steps=1)
    assert "SDL_VIDEODRIVER" not in os.environ
    assert drawn[-1].std() > 5  # a picture, not a blank
    env = gym.make(DRIVING, render_mode="human", **TINY)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        env.reset(seed=0)
    assert pygame.display.get_driver() == own and len(any_driver) == 1
    unseen = [str(w.message) for w in caught if "found no display" in str(w.message)]
    assert len(unseen) == (own in ("offscreen", "dummy"))
    env.close()
    assert sim.step(sim.action_space.sample())[0].std() > 5  # the simulator draws on
    sim.close()


@pytest.mark.skipif(importlib.util.find_spec("highway_env") is None, reason="needs highway-env")
def test_the_driving_simulator_draws_where_sdl_finds_no_video_driver(any_driver, monkeypatch):
    """An SDL that finds no driver (no display and no fallback) starts on the off-screen one,
    asked for that start alone: the variable is not left set."""
    init = pygame.display.init

    def no_device():
        if not pygame.display.get_init() and "SDL_VIDEODRIVER" not in os.environ:
            raise pygame.error("No available video device")
        init()

    pygame.quit()
    monkeypatch.setattr(pygame.display, "init", no_device)
    sim = gym.make("Simulator-Driving-v0")
    obs, _ = sim.reset(seed=0)
    assert obs.std() > 5 and pygame.display.get_driver() == "offscreen"
    assert "SDL_VIDEODRIVER" not in os.environ
    sim.close()
    pygame.quit()  # (closing the simulator leaves pygame's display started)
    monkeypatch.setenv("SDL_VIDEODRIVER", "nosuchdriver")  # one the user asked for, missing
    with pytest.raises(OSError, match="SDL_VIDEODRIVER='nosuchdriver'.*unset the variable"):
        sim.reset(seed=0)
    assert os.environ["SDL_VIDEODRIVER"] == "nosuchdriver"  # theirs, left as it was


@pytest.mark.skipif(importlib.util.find_spec("miniworld") is None, reason="needs miniworld")
def test_closing_a_simulators_window_lets_it_step_on_unseen(screen):
    seen = play(gym.make("Simulator-CityWalk-v0", render_mode="rgb_array"))
    env = gym.make("Simulator-CityWalk-v0", render_mode="human")
    shown = play(env, steps=1)
    pygame.event.post(pygame.event.Event(pygame.QUIT))
    with pytest.warns(UserWarning, match="window was closed"):
        shown.append(env.step(env.action_space.sample())[0])
    shown.append(env.step(env.action_space.sample())[0])
    assert all(np.array_equal(a, b) for a, b in zip(seen, shown, strict=True))
    assert not pygame.display.get_init() and len(screen) == 1 + 3
    env.close()


@pytest.mark.skipif(importlib.util.find_spec("miniworld") is None, reason="needs miniworld")
def test_without_pygame_a_simulators_human_mode_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "pygame", None)  # import pygame raises ImportError
    with pytest.raises(DependencyNotInstalled, match=r"pip install gym-worldmodel\[play\]"):
        gym.make("Simulator-CityWalk-v0", render_mode="human")
    env = gym.make("Simulator-CityWalk-v0", render_mode="rgb_array")  # needs no pygame
    obs, _ = env.reset(seed=0)
    assert np.array_equal(env.render(), obs)
    env.close()


# --- the PettingZoo and SB3 adapters ---


def parallel(**kwargs):
    """The PettingZoo parallel env of 3 city-walk agents on the tiny model."""
    pytest.importorskip("pettingzoo")
    from gym_worldmodel.integrations import pettingzoo as module

    kwargs = {"num_agents": 3, "max_cycles": 5, "shared_memory": False, **TINY, **kwargs}
    return module.WorldModelParallelEnv("WorldModel-CityWalk-v0", **kwargs)


def agents_play(env, steps, actions):
    """Each agent's observations: a seeded reset, then ``steps`` steps of ``actions``."""
    obs, _ = env.reset(seed=0)
    out = [obs]
    for _ in range(steps):
        out.append(env.step({agent: actions[agent] for agent in env.agents})[0])
    return out


def test_pettingzoo_agents_are_shown_tiled_and_a_done_agents_view_stays(screen):
    def end_agent_1(prev_obs, action, obs, info):  # agent_1 ends in its 2nd step
        return np.asarray(info["step"]) * [0, 1, 0] == 2

    kwargs = dict(termination_fn=end_agent_1, obs_mode="chunk")
    actions = {"agent_0": np.array([1, 0]), "agent_1": np.array([0, 2]), "agent_2": [3, 1]}
    seen = agents_play(parallel(render_mode="rgb_array", **kwargs), 4, actions)
    env = parallel(render_mode="human", **kwargs)
    assert env.metadata["render_modes"] == ["human", "rgb_array"]
    shown = agents_play(env, 4, actions)
    for a, b in zip(seen, shown, strict=True):  # the same bits, agent by agent
        assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
    assert env.render() is None and env.agents == ["agent_0", "agent_2"]
    assert len(screen) == 1 + 4 * 2  # the start, then each step's 2 frames (the tiny world)
    last = shown[2]["agent_1"][-1]  # agent_1's last frame, of the step it ended in
    for step in (1, 2, 3, 4):  # its hidden row steps on from step 3; its view keeps that frame
        agent_1 = shown[step]["agent_1"] if step <= 2 else np.stack([last, last])
        views = np.stack([shown[step]["agent_0"], agent_1, shown[step]["agent_2"]])
        for k in range(2):  # 3 views: 2 x 2 cells of 33 pixels less one, 7 x
            assert np.array_equal(screen[1 + 2 * (step - 1) + k], enlarged(tile(views)[k], 7))
    saved = env.get_state()
    assert np.array_equal(saved["frames"][1], last)  # the state keeps the views shown
    quiet = parallel(**kwargs)  # a state of an env that shows nothing, into one that does
    quiet.reset(seed=5)
    state = quiet.get_state()
    kept = state["venv"]["frames"].clone()
    for into in (env, parallel(render_mode="rgb_array", **kwargs)):
        into.set_state(state)
        into.step({agent: actions[agent] for agent in into.agents})
        assert torch.equal(state["venv"]["frames"], kept)  # the state stays reusable
    assert len(screen) == 9 + 2
    env.set_state(saved)
    env.close()
    assert not pygame.display.get_init()
    env.close()


def test_pettingzoos_render_test_passes_in_both_modes(screen):
    render_test = pytest.importorskip("pettingzoo.test").render_test
    from gym_worldmodel.integrations import pettingzoo as module

    aec = functools.partial(module.env, "WorldModel-Driving-v0", num_agents=2, **TINY)
    render_test(aec)  # the AEC form: "human" renders None, "rgb_array" a frame
    assert len(screen) > 0


def test_without_pygame_pettingzoos_human_mode_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "pygame", None)  # import pygame raises ImportError
    with pytest.raises(DependencyNotInstalled, match=r"pip install gym-worldmodel\[play\]"):
        parallel(render_mode="human")


def sb3_env(**kwargs):
    pytest.importorskip("stable_baselines3")
    from gym_worldmodel.integrations import sb3

    return sb3.WorldModelSB3VecEnv.make(DRIVING, num_envs=3, max_episode_steps=2, **TINY, **kwargs)


def sb3_play(venv, steps=3):
    venv.seed(0)
    out = [venv.reset()]
    actions = np.random.default_rng(1).uniform(-1, 1, (steps, 3, 2)).astype(np.float32)
    for action in actions:  # rows end at step 2 and start over in the step
        venv.step_async(action)
        out.append(venv.step_wait()[0])
    return out


def test_sb3_human_mode_is_the_vector_envs_window(screen):
    seen = sb3_play(sb3_env(render_mode="rgb_array"))
    venv = sb3_env(render_mode="human")
    assert venv.render_mode == "human" and venv.metadata["render_modes"] == ["human"]
    shown = sb3_play(venv)
    assert all(np.array_equal(a, b) for a, b in zip(seen, shown, strict=True))
    assert len(screen) == 1 + 3 * 2 and np.array_equal(
        screen[-1], enlarged(tile(shown[-1][:, None])[0], 7)
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # SB3's render asks each row, quietly
        assert venv.render() is None and venv.render("human") is None
        assert venv.env_method("render", indices=[2]) == [None]
    assert len(screen) == 7  # the steps drew the window; render() draws nothing more
    venv.close()
    assert not pygame.display.get_init()


def test_sb3_render_human_of_an_rgb_array_env_shows_the_rows_in_the_window(screen):
    venv = sb3_env(render_mode="rgb_array")
    obs = sb3_play(venv, steps=1)[-1]
    start = time.perf_counter()
    for _ in range(2):
        assert venv.render("human") is None
    elapsed = time.perf_counter() - start
    assert len(screen) == 2 and np.array_equal(screen[-1], enlarged(tile(obs[:, None])[0], 7))
    assert elapsed >= 1 / venv.metadata["render_fps"] * 0.9  # a step's time a frame
    assert "cv2" not in sys.modules or sys.modules["cv2"] is None  # no OpenCV window
    assert venv.render().shape == (2 * 32, 2 * 32, 3)  # "rgb_array" is SB3's own tiling
    venv.close()
    assert not pygame.display.get_init()


def test_without_pygame_sb3s_human_modes_name_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "pygame", None)  # import pygame raises ImportError
    with pytest.raises(DependencyNotInstalled, match=r"pip install gym-worldmodel\[play\]"):
        sb3_env(render_mode="human")
    venv = sb3_env(render_mode="rgb_array")  # renders without pygame, but not to a window
    venv.reset()
    assert venv.render().dtype == np.uint8
    with pytest.raises(DependencyNotInstalled, match=r"pip install gym-worldmodel\[play\]"):
        venv.render("human")
    venv.close()
