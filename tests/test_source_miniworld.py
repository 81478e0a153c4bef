import sys

import numpy as np
import pytest

pyglet = pytest.importorskip("pyglet")
if "pyglet.gl" not in sys.modules:
    pyglet.options["headless"] = True  # EGL; must precede the first import of miniworld
pytest.importorskip("miniworld")

from helpers import assert_same_episode  # noqa: E402

from gym_worldmodel.envs.actions import CameraHead  # noqa: E402
from gym_worldmodel.envs.pose import integrate_camera  # noqa: E402
from gym_worldmodel.sources.collect import collect  # noqa: E402
from gym_worldmodel.sources.episodes import load_episodes  # noqa: E402
from gym_worldmodel.sources.miniworld import MiniWorldSource  # noqa: E402


@pytest.fixture(scope="module")
def source():
    src = MiniWorldSource()  # the first env of a process loads textures and meshes (seconds)
    yield src
    src.close()


def keys_to_vectors(keys, move_m=0.2, turn_deg=6.0):
    keys = np.asarray(keys, np.int64)
    return CameraHead(move_m=move_m, turn_deg=turn_deg).encode(keys, len(keys), 1)[:, 0]


def test_info_shapes_and_dtypes(source):
    info = source.info
    assert info["source"] == "miniworld" and info["world"] == "citywalk"
    assert info["env_name"] == "MiniWorld-Sidewalk-v0" and info["modality"] == "camera"
    assert (info["frame_size"], info["fps"], info["action_width"]) == (64, 15, 12)
    assert info["pose_fields"] == ["x_m", "y_m", "yaw_deg", "pitch_deg"]
    assert (info["move_m"], info["turn_deg"]) == (0.2, 6.0)
    ep = source.rollout(0, 20)
    assert ep.frames.shape == (21, 64, 64, 3) and ep.frames.dtype == np.uint8
    assert ep.actions.shape == (20, 12) and ep.actions.dtype == np.float32
    assert ep.poses.shape == (21, 4) and ep.poses.dtype == np.float64
    assert ep.seed == 0
    # keys-mode vectors: one-hot translation, one-hot rotation, rates in {-1, 0, 1}
    np.testing.assert_array_equal(ep.actions[:, :5].sum(1), 1)
    np.testing.assert_array_equal(ep.actions[:, 5:10].sum(1), 1)
    assert set(np.unique(ep.actions[:, 10:])) <= {-1.0, 0.0, 1.0}
    assert ep.frames.std() > 5  # a rendered scene, not a blank buffer


def test_same_seed_identical_other_seed_different(source):
    a, b, c = source.rollout(5, 40), source.rollout(5, 40), source.rollout(6, 40)
    assert_same_episode(a, b)
    assert not np.array_equal(a.frames, c.frames)
    assert not np.array_equal(a.poses, c.poses)


def test_replay_reproduces_episode(source):
    ep = source.rollout(7, 40)
    assert_same_episode(source.replay(7, ep.actions), ep)


def test_poses_follow_integrate_camera(source):
    ep = source.rollout(2, 120)
    free = 0
    for t in range(len(ep.actions)):
        want = integrate_camera(ep.poses[t : t + 1], ep.actions[None, t : t + 1], 0.2, 6.0)[0]
        got = ep.poses[t + 1]
        np.testing.assert_array_equal(got[2:], want[2:])  # rotation always applies
        if np.array_equal(got[:2], want[:2]):
            free += ep.actions[t, 0] == 0
        else:  # a collision keeps the old position
            np.testing.assert_array_equal(got[:2], ep.poses[t, :2])
    assert free > 10
    assert np.abs(np.diff(ep.poses[:, 3])).max() > 0  # the behaviour policy pitches too


def test_rotation_and_forward_walk_match_integration(source):
    keys = [(0, 1)] * 5 + [(0, 2)] * 3 + [(0, 3)] * 4 + [(0, 4)] * 2 + [(1, 0)] * 3
    vec = keys_to_vectors(keys)
    ep = source.replay(0, vec)  # seed 0 starts with open space ahead after these turns
    want = integrate_camera(ep.poses[:1], vec[None], 0.2, 6.0)[0]
    np.testing.assert_array_equal(ep.poses[-1], want)
    np.testing.assert_allclose(np.linalg.norm(ep.poses[-1, :2] - ep.poses[0, :2]), 0.6)
    assert ep.poses[-1, 3] == 12.0


def test_conventions_match_miniworld_actions():
    """Our left/right/forward keys render exactly what MiniWorld's own actions render."""
    src = MiniWorldSource(move_m=0.15, turn_deg=15.0)  # MiniWorld's default step sizes
    env = src._unwrapped()
    try:
        for mw_action, key in [(0, (0, 1)), (1, (0, 2)), (2, (1, 0))]:
            ours = src.replay(1, keys_to_vectors([key] * 3, 0.15, 15.0))
            env.reset(seed=1)
            for t in range(3):
                obs = env.step(mw_action)[0]
                assert np.abs(ours.frames[t + 1].astype(int) - obs).max() <= 2
            agent = env.unwrapped.agent
            np.testing.assert_allclose(ours.poses[-1, :2], [agent.pos[0], -agent.pos[2]], atol=1e-9)
    finally:
        src.close()


def test_pitch_changes_the_frame(source):
    ep = source.replay(0, keys_to_vectors([(0, 3)] * 5 + [(0, 4)] * 10))
    np.testing.assert_array_equal(ep.poses[[5, 15], 3], [30.0, -30.0])
    level, up, down = ep.frames[0], ep.frames[5], ep.frames[15]
    assert np.abs(level.astype(int) - up).mean() > 5
    assert np.abs(level.astype(int) - down).mean() > 5
    top = up[:8].reshape(-1, 3).mean(0)
    assert top[2] > top[0] + 50  # looking up shows the blue sky


def test_loop_policy_revisits_start():
    src = MiniWorldSource(policy="loop")
    try:
        for seed in (0, 1):
            ep = src.rollout(seed, 100)
            dist = np.linalg.norm(ep.poses[:, :2] - ep.poses[0, :2], axis=1)
            far = int(dist.argmax())
            assert dist[far] > 1.0
            assert dist[far:].min() < 0.25
    finally:
        src.close()


def test_revisit_policy_walks_back_through_its_own_poses():
    from gym_worldmodel.evaluation.revisit import revisit_frames

    src = MiniWorldSource(policy="revisit")
    try:
        ep = src.rollout(0, 200)
    finally:
        src.close()
    assert np.linalg.norm(ep.poses[:, :2] - ep.poses[0, :2], axis=1).max() > 1.0
    np.testing.assert_allclose(ep.poses[-1], ep.poses[0], atol=1e-6)  # back at the start pose
    assert np.array_equal(ep.frames[-1], ep.frames[0])  # and it sees what it saw
    assert len(revisit_frames(ep.poses, min_gap=100)) > 20


def test_policies_cover_the_keys():
    for policy in ("random", "sweep", "mixed"):
        src = MiniWorldSource(policy=policy)
        try:
            acts = np.concatenate([src.rollout(s, 150).actions for s in (0, 1)])
        finally:
            src.close()
        moves, turns = acts[:, :5].sum(0), acts[:, 5:10].sum(0)
        assert (turns > 0).all(), policy
        if policy == "sweep":  # sweeps in place plus (mostly forward) walks
            assert moves[1] > 0, policy
        else:
            assert (moves > 0).all(), policy


def test_collect_round_trip(source, tmp_path):
    card = collect(
        source, tmp_path, episodes=3, steps=8, episodes_per_shard=2, heldout_every=3, progress=False
    )
    assert card["world"] == "citywalk"
    train, heldout = load_episodes(tmp_path, "train"), load_episodes(tmp_path, "heldout")
    assert [e.seed for e in train] == [0, 1] and [e.seed for e in heldout] == [2]
    for ep in train + heldout:
        assert_same_episode(ep, source.rollout(ep.seed, 8))


def test_bad_arguments_and_missing_simulator(monkeypatch):
    with pytest.raises(ValueError, match="policy"):
        MiniWorldSource(policy="nope")
    monkeypatch.setitem(sys.modules, "miniworld", None)
    with pytest.raises(ImportError, match=r"pip install gym-worldmodel\[simulators\]"):
        MiniWorldSource()


def run_ppo_citywalk(*args):
    import subprocess
    from pathlib import Path

    return subprocess.run(
        [sys.executable, "agents/ppo_citywalk.py", *args],
        cwd=Path(__file__).resolve().parents[1],
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_ppo_citywalk_scores_its_policy_in_miniworld_too(tmp_path):
    pytest.importorskip("stable_baselines3")
    import re

    args = ["--steps", "16", "--envs", "2", "--rollout", "8", "--eval-episodes", "2"]
    args += ["--episode-steps", "2", "--pose", "--simulator", "--no-progress"]
    sim_run = str(tmp_path / "sim")
    control = run_ppo_citywalk(*args, "--out", sim_run, "--train-in", "simulator")
    assert control.returncode == 0, control.stderr[-2000:]
    assert "trained 16 env steps" in control.stdout  # the control, trained in MiniWorld
    refused = run_ppo_citywalk(*args, "--out", sim_run, "--resume", "--steps", "32")
    assert refused.returncode != 0 and "'train_in': 'simulator'" in refused.stderr
    done = run_ppo_citywalk(*args, "--out", str(tmp_path / "world"))
    assert done.returncode == 0, done.stderr[-2000:]
    world, sim = done.stdout.split("the same in MiniWorld itself")
    names = ["PPO, sampled", "PPO, argmax", "random"]
    for text in (world, sim):
        assert re.findall(r"^  (.+?) +success", text, re.M) == names
    tiny = run_ppo_citywalk("--model", "random-tiny", *args, "--out", str(tmp_path / "tiny"))
    assert tiny.returncode != 0 and "the simulator's frame size" in tiny.stderr
    assert "trained" not in tiny.stdout  # refused before any training
