"""Keyboard play: every world's key map fits its action space; ``gym-worldmodel play`` runs
Gymnasium's play loop headless (SDL's dummy video driver) and the keys reach the env."""

import numpy as np
import pytest

from gym_worldmodel.envs.actions import CameraHead, DrivingHead, RobotHead, batch_one

pygame = pytest.importorskip("pygame", reason="needs pygame-ce (the play extra)")


@pytest.mark.parametrize(
    "head",
    [
        CameraHead("keys"),
        CameraHead("discrete"),
        CameraHead("look"),
        DrivingHead(),
        RobotHead("flat"),
        RobotHead("dict"),
    ],
    ids=["camera-keys", "camera-discrete", "camera-look", "driving", "robot-flat", "robot-dict"],
)
def test_every_key_combination_is_a_distinct_action_of_the_space(head):
    controls = head.keys_to_action()
    encoded = [
        head.encode(batch_one(action), 1, 1)[0, 0] for action in controls.values()
    ]  # validates
    assert all(head.space.contains(action) for action in controls.values())
    assert len({vec.tobytes() for vec in encoded}) == len(controls)  # no two combos alike
    idle = head.encode(batch_one(head.idle_action()), 1, 1)[0, 0]
    assert not any(np.array_equal(vec, idle) for vec in encoded)


def test_the_keys_mean_what_the_docstrings_say():
    camera, driving = CameraHead("keys").keys_to_action(), DrivingHead().keys_to_action()
    assert camera["w"].tolist() == [1, 0] and camera["dl"].tolist() == [4, 2]
    assert camera["si"].tolist() == [3, 3] and len(camera) == 24  # 5 x 5 less no key
    np.testing.assert_allclose(driving["wa"], [0.2, 1.0])  # (steering left, accelerate)
    np.testing.assert_allclose(driving["sd"], [-0.2, -1.0])
    robot = RobotHead("dict").keys_to_action()
    assert robot["rc"]["world_vector"].tolist() == [0.0, 0.0, 0.5]
    assert robot["rc"]["gripper_closedness_action"].tolist() == [1.0]
    assert robot["rc"]["terminate_episode"] == 1  # arm mode, never terminate


def test_play_command_walks_the_world_from_the_keyboard(monkeypatch, capsys, tmp_path):
    from gym_worldmodel.cli import play_main

    monkeypatch.setenv("SDL_VIDEODRIVER", "dummy")
    picture = np.zeros((32, 32, 3), np.uint8)
    picture[..., 0] = 200
    np.save(tmp_path / "start.npy", picture)
    seen = []

    def callback(obs, next_obs, action, reward, terminated, truncated, info):
        if not seen:  # the reset's (obs, info): the episode starts from the picture
            np.testing.assert_array_equal(obs[0][-1], picture)
        seen.append((np.asarray(action).tolist(), info["pose"].copy(), len(next_obs)))
        if len(seen) == 2:  # hold W and J from the third step on
            for key in (pygame.K_w, pygame.K_j):
                pygame.event.post(pygame.event.Event(pygame.KEYDOWN, key=key))
        if len(seen) == 5:
            pygame.event.post(pygame.event.Event(pygame.QUIT))

    args = ["--model", "random-tiny", "--fps", "1000", "--image", str(tmp_path / "start.npy")]
    args += ["--dtype", "float32"]  # the world's, as rollout takes it
    video = tmp_path / "played.mp4"
    play_main([*args, "--video", str(video), "--scale", "3"], callback=callback)
    out = capsys.readouterr().out
    frames = 1 + sum(n for *_, n in seen)  # the start frame and every step's frames
    assert f"wrote {video}: {frames} frames" in out and video.stat().st_size > 1000
    import imageio.v3 as iio

    assert next(iio.imiter(video)).shape == (3 * 32, 3 * 32, 3)  # the tiny world's, 3 x 3
    assert out.startswith("WorldModel-CityWalk-v0: hold the keys below")
    assert "W: [1, 0]\n  A: [2, 0]" in out and "J: [0, 1]" in out  # the controls, in order
    assert [a for a, *_ in seen] == [[0, 0], [0, 0], [1, 1], [1, 1], [1, 1]]
    assert seen[1][1][0] == 0.0 and seen[-1][1][0] > 0.0  # W walked the camera forward


def test_play_refuses_the_worlds_options_with_the_simulator(capsys):
    from gym_worldmodel.cli import play_main

    for world_option in (
        ["--model", "random-tiny"],
        ["--dtype", "float32"],
        ["--memory-guidance", "2"],
    ):
        with pytest.raises(SystemExit):
            play_main(["--simulator", *world_option])
        err = capsys.readouterr().err
        assert "--nfe, --memory-guidance, --device and --dtype are the world's" in err


def test_play_without_a_display_says_so_instead_of_running_unseen(monkeypatch):
    from gym_worldmodel.cli import play, play_main

    for name in ("DISPLAY", "WAYLAND_DISPLAY", "SDL_VIDEODRIVER"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(play.sys, "platform", "linux")
    with pytest.raises(SystemExit, match="no display .* rollout --video"):
        play_main(["--model", "random-tiny"])


def test_gymnasiums_own_play_reads_the_envs_keys_as_the_docs_say(monkeypatch):
    import gymnasium as gym
    from gymnasium.utils.play import play

    import gym_worldmodel  # noqa: F401

    monkeypatch.setenv("SDL_VIDEODRIVER", "dummy")
    env = gym.make("WorldModel-Driving-v0", model="random-tiny", render_mode="rgb_array")
    actions = []

    def callback(obs, next_obs, action, reward, terminated, truncated, info):
        actions.append(np.asarray(action).tolist())
        if len(actions) == 1:
            pygame.event.post(pygame.event.Event(pygame.KEYDOWN, key=pygame.K_w))
        if len(actions) == 3:
            pygame.event.post(pygame.event.Event(pygame.QUIT))

    play(env, fps=1000, zoom=2, noop=env.unwrapped.idle_action(), callback=callback)
    assert actions == [[0.0, 0.0], [0.0, 1.0], [0.0, 1.0]]  # idle, then W: accelerate
    env.close()


def test_play_video_keeps_every_episodes_first_frame(monkeypatch, capsys, tmp_path):
    from gym_worldmodel.cli import play_main

    monkeypatch.setenv("SDL_VIDEODRIVER", "dummy")
    steps = []

    def callback(obs, next_obs, action, reward, terminated, truncated, info):
        steps.append(len(next_obs))
        if len(steps) == 5:  # 2-step episodes: two whole episodes and one step of a third
            pygame.event.post(pygame.event.Event(pygame.QUIT))

    import gymnasium

    make = gymnasium.make
    monkeypatch.setattr(  # short episodes, so play resets within the test
        gymnasium, "make", lambda *args, **kwargs: make(*args, **kwargs, max_episode_steps=2)
    )
    video = tmp_path / "played.mp4"
    play_main(["--model", "random-tiny", "--fps", "1000", "--video", str(video)], callback=callback)
    episodes = 3  # each begins with its reset frame
    assert f"wrote {video}: {episodes + sum(steps)} frames" in capsys.readouterr().out


def test_play_video_is_written_when_ctrl_c_stops_the_game(monkeypatch, capsys, tmp_path):
    from gym_worldmodel.cli import play_main

    monkeypatch.setenv("SDL_VIDEODRIVER", "dummy")
    steps = []

    def callback(obs, next_obs, action, reward, terminated, truncated, info):
        steps.append(len(next_obs))
        if len(steps) == 3:
            raise KeyboardInterrupt  # as Ctrl-C lands inside play's loop

    video = tmp_path / "played.mp4"
    with pytest.raises(KeyboardInterrupt):  # still an interrupt for the command line
        play_main(["--model", "random-tiny", "--fps", "1000", "--video", str(video)], callback)
    assert f"wrote {video}: {1 + sum(steps)} frames" in capsys.readouterr().out
