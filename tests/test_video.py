"""Video: Gymnasium's RecordVideo (single and vector) writes MP4s through moviepy."""

import os

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.wrappers import RecordVideo
from gymnasium.wrappers.vector import RecordVideo as VectorRecordVideo

import gym_worldmodel  # noqa: F401

moviepy = pytest.importorskip("moviepy")


def frame_count(path) -> int:
    from moviepy import VideoFileClip

    with VideoFileClip(str(path)) as clip:
        return sum(1 for _ in clip.iter_frames())


def test_record_video_writes_a_readable_mp4(tmp_path):
    env = gym.make(
        "WorldModel-CityWalk-v0", render_mode="rgb_array", model="random-tiny", max_episode_steps=6
    )
    env = RecordVideo(env, str(tmp_path / "videos"), episode_trigger=lambda ep: True)
    env.reset(seed=0)
    done, steps = False, 0
    while not done:
        _, _, terminated, truncated, _ = env.step(env.action_space.sample())
        done, steps = terminated or truncated, steps + 1
    env.close()
    videos = sorted((tmp_path / "videos").glob("*.mp4"))
    assert len(videos) == 1 and steps == 6
    assert frame_count(videos[0]) == steps + 1  # the reset frame and one per step
    meta = env.unwrapped.metadata
    assert meta["render_fps"] == meta["world_fps"] / 2 == 8  # tiny world: 2 frames per step


def test_vector_record_video_tiles_rows(tmp_path):
    envs = gym.make_vec(
        "WorldModel-Driving-v0", num_envs=4, render_mode="rgb_array", model="random-tiny"
    )
    envs = VectorRecordVideo(
        envs, str(tmp_path / "videos"), step_trigger=lambda step: step == 0, video_length=5
    )
    envs.reset(seed=0)
    for _ in range(6):
        envs.step(np.zeros((4, 2), np.float32))
    envs.close()
    videos = sorted((tmp_path / "videos").glob("*.mp4"))
    # Gymnasium stops once it holds more than video_length frames: the start frame + 5 steps.
    assert len(videos) == 1 and frame_count(videos[0]) == 5 + 1


@pytest.mark.parametrize("suffix", [".mp4", ".gif"])
def test_write_video_writes_every_frame_once_in_order_at_the_step_rate(tmp_path, suffix):
    """At 5 fps (the worlds' step rate) a clip of moviepy's dropped the last frame and repeated
    others in place of 6 of 31; each frame here is a different grey, read back by its level."""
    import imageio.v3 as iio

    from gym_worldmodel.video import write_video

    levels = np.arange(31) * 8
    frames = np.broadcast_to(levels[:, None, None, None], (31, 32, 32, 3)).astype(np.uint8)
    decoded = np.stack(list(iio.imiter(write_video(tmp_path / f"clip{suffix}", frames, 5))))
    read = np.abs(decoded[..., :3].mean((1, 2, 3))[:, None] - levels[None]).argmin(1)
    assert read.tolist() == list(range(31))


def test_write_video_writes_mp4_or_gif_by_the_suffix_and_refuses_others_early(
    tmp_path, monkeypatch
):
    from PIL import Image

    from gym_worldmodel import cli
    from gym_worldmodel.video import write_video

    frames = np.random.default_rng(0).integers(0, 256, (5, 32, 32, 3), dtype=np.uint8)
    assert frame_count(write_video(tmp_path / "a" / "clip.mp4", frames, 8)) == 5
    with Image.open(write_video(tmp_path / "clip.gif", frames, 8)) as gif:
        assert gif.n_frames == 5 and gif.size == (32, 32)
    assert (tmp_path / "a" / "clip.mp4").stat().st_mode & 0o777 == 0o644
    assert not [p.name for p in tmp_path.rglob(".*")]  # no temporary file left
    with Image.open(write_video(tmp_path / "big.gif", frames, 8, scale=3)) as gif:
        assert gif.size == (96, 96)  # each pixel a 3 x 3 block of one colour
        big = np.asarray(gif.convert("RGB"))
        assert np.array_equal(big, big[::3, ::3].repeat(3, 0).repeat(3, 1))
    import imageio.v3 as iio

    stale = tmp_path / ".wide.k1ll3dxx.tmp.mp4"  # a killed writer's temporary file
    stale.write_bytes(b"half")
    os.utime(stale, (0, 0))
    wide = write_video(tmp_path / "wide.mp4", frames, 8, scale=np.int64(2))  # NumPy ints too
    assert next(iio.imiter(wide)).shape[:2] == (64, 64) and not stale.exists()
    import gym_worldmodel.video as video_lib

    monkeypatch.setattr(video_lib, "GIF_BYTES", 3 * frames.nbytes * 4)  # room for scale 2
    with pytest.warns(UserWarning, match=r"a GIF of 5 frames at scale 4 .* written at scale 2"):
        with Image.open(write_video(tmp_path / "huge.gif", frames, 8, scale=4)) as gif:
            assert gif.size == (64, 64)  # 32 x 32 frames, each pixel 2 x 2
    for scale in (0, 17, 2.0):
        with pytest.raises(ValueError, match=r"scale must be an int in \[1, 16\]"):
            write_video(tmp_path / "x.mp4", frames, 8, scale=scale)
    for fps, ms in ((15, 70), (8, 120), (5, 200)):  # the nearest whole centiseconds a frame
        with Image.open(write_video(tmp_path / "rate.gif", frames, fps)) as gif:
            assert gif.info["duration"] == ms
    with pytest.raises(ValueError, match=r"write an MP4, MOV, MKV \(H.264\) or GIF .*not .avi"):
        write_video(tmp_path / "clip.avi", frames, 8)
    # the command refuses before it plays; --frames' folder is made as --video's is
    with pytest.raises(SystemExit, match=r"--video: .*not .webm"):
        cli.rollout_main(["--model", "random-tiny", "--video", str(tmp_path / "x.webm")])
    with pytest.raises(SystemExit, match=r"--video: .*is a folder"):
        cli.rollout_main(["--model", "random-tiny", "--video", str(tmp_path / "a")])
    for bad in (tmp_path / "f.png", tmp_path / "a"):  # frames are .npy, a file
        with pytest.raises(SystemExit, match=r"--frames .*name a \.npy file"):
            cli.rollout_main(["--model", "random-tiny", "--frames", str(bad)])
    with pytest.raises(SystemExit, match="--actions"):  # a bad input makes no output folder
        missing = str(tmp_path / "plan.npy")
        cli.rollout_main(["--actions", missing, "--video", str(tmp_path / "none" / "v.mp4")])
    plan = tmp_path / "plan.npz"  # a refused action (a float flag) also leaves no folder
    keys = {"world_vector": 3, "rotation_delta": 3, "gripper_closedness_action": 1}
    keys |= {"base_displacement_vector": 2, "base_displacement_vertical_rotation": 1}
    np.savez(plan, **{k: np.zeros((2, n)) for k, n in keys.items()}, terminate_episode=np.ones(2))
    outputs = ["--video", str(tmp_path / "none" / "v.mp4"), "--frames", f"{tmp_path}/none2/f.npy"]
    with pytest.raises(SystemExit, match="terminate_episode"):
        cli.rollout_main(
            ["--world", "robot", "--model", "random-tiny", "--actions", str(plan)] + outputs
        )
    assert not (tmp_path / "none").exists() and not (tmp_path / "none2").exists()
    out = tmp_path / "new" / "dir" / "f.npy"
    video = str(tmp_path / "v.mp4")
    cli.rollout_main(
        ["--model", "random-tiny", "--steps", "2", "--frames", str(out), "--video", video]
    )
    assert np.load(out).shape[0] == 1 + 2 * 2
