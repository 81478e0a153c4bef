import numpy as np
import pytest

pytest.importorskip("highway_env")

from helpers import assert_same_episode  # noqa: E402

from gym_worldmodel.envs.actions import DrivingHead  # noqa: E402
from gym_worldmodel.envs.pose import integrate_driving  # noqa: E402
from gym_worldmodel.sources.collect import collect  # noqa: E402
from gym_worldmodel.sources.episodes import load_episodes  # noqa: E402
from gym_worldmodel.sources.highway import HighwaySource  # noqa: E402


@pytest.fixture(scope="module")
def source():
    src = HighwaySource()
    yield src
    src.close()


def test_info_shapes_and_dtypes(source):
    info = source.info
    assert info["source"] == "highway" and info["world"] == "driving"
    assert info["env_name"] == "highway-fast-v0" and info["modality"] == "driving"
    assert (info["frame_size"], info["fps"], info["action_width"]) == (64, 15, 2)
    assert info["pose_fields"] == ["x_m", "y_m", "heading_deg", "speed_mps"]
    assert info["policy"] == "mixed"
    ep = source.rollout(0, 30)
    assert ep.frames.shape == (31, 64, 64, 3) and ep.frames.dtype == np.uint8
    assert ep.actions.shape == (30, 2) and ep.actions.dtype == np.float32
    assert ep.poses.shape == (31, 4) and ep.poses.dtype == np.float64
    assert ep.seed == 0
    assert DrivingHead().space.contains(ep.actions[0])
    assert np.abs(ep.actions).max() <= 1.0
    assert ep.frames.std() > 5 and ep.frames.max() > 100  # a rendered road, not a blank buffer
    assert not (ep.frames == ep.frames[:, :1, :1]).all()


def test_same_seed_identical_other_seed_different(source):
    a, b, c = source.rollout(5, 30), source.rollout(5, 30), source.rollout(6, 30)
    assert_same_episode(a, b)
    assert not np.array_equal(a.poses, c.poses)
    assert not np.array_equal(a.frames, c.frames)


@pytest.mark.parametrize("policy", ["random", "lanekeep"])
def test_policies_replay_and_move(policy):
    src = HighwaySource(policy=policy)
    ep = src.rollout(3, 60)
    assert ep.actions.shape == (60, 2)
    assert ep.actions[:, 1].min() < -0.3  # brakes
    assert (np.diff(ep.poses[:, 0]) > 0).all()  # drives forward along +x
    again = src.replay(ep.seed, ep.actions, src.last_attempt)
    assert_same_episode(ep, again)
    src.close()


def test_steering_sign_and_acceleration(source):
    straight = source.replay(1, np.zeros((8, 2), np.float32))
    left = source.replay(1, np.tile(np.float32([0.3, 0.0]), (8, 1)))
    right = source.replay(1, np.tile(np.float32([-0.3, 0.0]), (8, 1)))
    faster = source.replay(1, np.tile(np.float32([0.0, 1.0]), (8, 1)))
    slower = source.replay(1, np.tile(np.float32([0.0, -1.0]), (8, 1)))
    assert straight.poses[0, 3] > 0
    np.testing.assert_allclose(straight.poses[:, 2], straight.poses[0, 2])
    assert (np.diff(left.poses[:, 2]) > 0).all()  # positive steering: heading increases (left)
    assert left.poses[-1, 1] > straight.poses[-1, 1]  # and y (up) increases
    assert (np.diff(right.poses[:, 2]) < 0).all()
    assert right.poses[-1, 1] < straight.poses[-1, 1]
    np.testing.assert_allclose(np.diff(faster.poses[:, 3]), 3.0 / 15, rtol=1e-6)
    np.testing.assert_allclose(np.diff(slower.poses[:, 3]), -3.0 / 15, rtol=1e-6)
    np.testing.assert_allclose(np.diff(straight.poses[:, 0]), straight.poses[0, 3] / 15)


def test_the_envs_pose_integration_follows_the_simulator(source):
    """The driving env integrates its pose with the simulator's own kinematics."""
    ep = source.rollout(3, 60)
    head = DrivingHead()
    pose = integrate_driving(
        ep.poses[:1], ep.actions[None], 1 / 15, head.max_steer_deg, head.max_accel, head.max_speed
    )
    np.testing.assert_allclose(pose[0], ep.poses[-1], atol=1e-6)


def test_bad_arguments():
    with pytest.raises(ValueError, match="policy"):
        HighwaySource(policy="nope")
    with pytest.raises(ValueError, match="actions"):
        HighwaySource().replay(0, np.zeros((3, 4), np.float32))


def test_collect_round_trip(tmp_path):
    src = HighwaySource()
    card = collect(
        src, tmp_path, episodes=3, steps=8, episodes_per_shard=2, heldout_every=3, progress=False
    )
    assert card["source"] == "highway" and card["modality"] == "driving"
    src.close()
    train = load_episodes(tmp_path, "train")
    heldout = load_episodes(tmp_path, "heldout")
    assert [e.seed for e in train] == [0, 1] and [e.seed for e in heldout] == [2]
    fresh = HighwaySource()
    for ep in train + heldout:
        assert ep.frames.shape == (9, 64, 64, 3) and ep.actions.shape == (8, 2)
        assert_same_episode(ep, fresh.rollout(ep.seed, 8))
    fresh.close()


def test_drive_closes_the_loop_on_the_view_and_the_pose(source):
    seen = []

    def keep_left(frame, pose):  # steer until 2 m left of the start, then hold the heading
        seen.append((frame.copy(), pose.copy()))
        return np.array([0.1 if pose[1] - seen[0][1][1] < 2.0 else 0.0, 0.0], np.float32)

    ep, crashed = source.drive(7, 40, keep_left)
    assert ep.frames.shape == (41, 64, 64, 3) and len(seen) == 40 and not crashed
    # the policy saw the frame and pose the episode recorded before each of its actions
    assert np.array_equal(seen[5][0], ep.frames[5]) and np.allclose(seen[5][1], ep.poses[5])
    assert ep.poses[-1, 1] - ep.poses[0, 1] > 2.0  # it moved left (our y is to the left)
    assert np.allclose(ep.actions[0], [0.1, 0.0]) and ep.actions[-1, 0] == 0.0


@pytest.mark.parametrize("train_in", ["world", "simulator"])
def test_ppo_agent_trains_in_either_and_is_scored_in_both(tmp_path, train_in):
    import re
    import subprocess
    import sys
    from pathlib import Path

    args = ["--model", "random-tiny", "--steps", "32", "--envs", "2", "--rollout", "16"]
    args += ["--eval-episodes", "2", "--episode-steps", "3", "--threads", "1", "--simulator"]
    args += ["--train-in", train_in, "--start-heading", "5"]
    done = subprocess.run(
        [sys.executable, "agents/ppo_driving.py", *args, "--out", str(tmp_path), "--no-progress"],
        cwd=Path(__file__).resolve().parents[1],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "trained 32 env steps" in done.stdout
    sim = done.stdout.split("the same in highway-env itself")[1]
    lines = re.findall(
        r"^  (.+?) +in lane .* heading +(\d+\.\d) deg +return +(-?\d+\.\d\d) .* crashed (\d)/2$",
        sim,
        re.M,
    )
    assert [name for name, *_ in lines] == [
        "PPO, mean controls",
        "PPO, sampled",
        "zero controls",
        "random controls",
    ]
    # zero controls from a start up to 5 degrees off the road (the start_fn acts in highway-env
    # too): the car does not steer back, so it keeps its start heading, off the road's direction
    heading = {name: float(h) for name, h, *_ in lines}["zero controls"]
    assert 0.0 < heading <= 5.0


def test_rollout_plays_the_same_actions_in_highway_env_beside_the_world(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    pytest.importorskip("moviepy")
    args = ["rollout", "--world", "driving", "--steps", "4", "--simulator"]
    args += ["--video", str(tmp_path / "both.mp4"), "--frames", str(tmp_path / "world.npy")]
    done = subprocess.run(
        [sys.executable, "-m", "gym_worldmodel.cli", *args],
        cwd=Path(__file__).resolve().parents[1],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    line = next(x for x in done.stdout.splitlines() if x.startswith("PSNR of the world"))
    assert "step 1 " in line and "step 4 " in line and "(copy " in line
    assert np.load(tmp_path / "world.npy").shape == (13, 64, 64, 3)  # the world's own frames
    from moviepy import VideoFileClip

    # world | simulator, each pixel 4 x 4 (rollout --scale 4, the default)
    assert VideoFileClip(str(tmp_path / "both.mp4")).size == [4 * 128, 4 * 64]
    from gym_worldmodel import cli

    with pytest.raises(SystemExit, match="compare a world of the simulator's frame size"):
        cli.rollout_main(["--world", "driving", "--model", "random-tiny", "--simulator"])
