"""Smoke tests: every script and the CLI run end to end on a micro budget."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from gym_worldmodel.hub import read_config

ROOT = Path(__file__).resolve().parents[1]


def run(*args: str, env: dict | None = None) -> str:
    done = subprocess.run(
        [sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=300, env=env
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def fails(*args: str) -> str:
    """Run a script that should exit with an error; its stderr."""
    done = subprocess.run(
        [sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert done.returncode != 0, done.stdout[-2000:]
    return done.stderr


def test_rollout_command_writes_a_video_of_the_embedded_world(tmp_path):
    import numpy as np

    video, frames = tmp_path / "driving.mp4", tmp_path / "frames.npy"
    args = ("-m", "gym_worldmodel.cli", "rollout", "--world", "driving", "--steps", "3")
    text = run(*args, "--video", str(video), "--frames", str(frames))
    assert "3 steps, 9 frames after the start frame" in text and video.stat().st_size > 1000
    assert "nfe 2" in text  # the shipped driving world's own passes
    # --nfe 1: the same world at one pass, other frames from the same start
    text = run(*args, "--nfe", "1", "--video", str(video), "--frames", str(tmp_path / "one.npy"))
    assert "nfe 1" in text
    first, other = np.load(frames), np.load(tmp_path / "one.npy")
    assert np.array_equal(first[0], other[0]) and not np.array_equal(first[1:], other[1:])


def test_rollout_memory_guidance_changes_the_city_walk_once_it_retrieves(tmp_path):
    import numpy as np

    args = ("-m", "gym_worldmodel.cli", "rollout", "--world", "citywalk", "--steps", "12")
    for name, more in (("own", ()), ("guided", ("--memory-guidance", "2"))):
        run(*args, *more, "--frames", str(tmp_path / f"{name}.npy"))
    own, guided = np.load(tmp_path / "own.npy"), np.load(tmp_path / "guided.npy")
    same = [np.array_equal(a, b) for a, b in zip(own, guided, strict=True)]
    # the same frames until the first step that holds memory, other frames after it
    assert same[0] and not all(same) and same == sorted(same, reverse=True)


def test_commands_name_the_extra_they_miss_before_their_work(monkeypatch, tmp_path):
    import importlib.util

    from gym_worldmodel import cli

    find_spec = importlib.util.find_spec
    missing = {"moviepy", "matplotlib"}
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name in missing else find_spec(name)
    )
    with pytest.raises(SystemExit, match=r"--video needs moviepy: pip install .*\[video\]"):
        cli.rollout_main(["--steps", "1", "--video", str(tmp_path / "x.mp4")])
    with pytest.raises(SystemExit, match=r"eval --out/--report needs matplotlib: .*\[train\]"):
        cli.eval_main(["--data", str(tmp_path), "--out", str(tmp_path / "ev")])
    assert list(tmp_path.iterdir()) == []  # refused before anything was written


def test_engine_rollout_example(tmp_path):
    out = tmp_path / "video.npz"
    text = run(
        "examples/engine_rollout.py", "--tiny", "--steps", "3", "--batch", "2", "--out", str(out)
    )
    assert "round trip bitwise equal: True" in text
    assert out.exists()


def test_memory_walk_example(tmp_path):
    out = tmp_path / "walk.png"
    text = run("examples/memory_walk.py", "--tiny", "--walk", "2", "--out", str(out))
    assert "memory on" in text and "memory off" in text and "x=0.00 m, y=0.00 m" in text
    assert out.stat().st_size > 0


def test_robot_plans_example(tmp_path):
    out = tmp_path / "plans.png"
    picture = tmp_path / "camera.png"
    Image.fromarray(np.full((48, 40, 3), 90, np.uint8)).save(picture)
    text = run(
        "examples/robot_plans.py", "--tiny", "--steps", "2", "--image", str(picture),
        "--out", str(out),
    )  # fmt: skip
    assert "6 futures of 2 steps" in text and "still            0.00" in text
    strip = np.asarray(Image.open(out))
    assert strip.shape == (6 * 32, 3 * 32, 3)  # a row per plan, the start and 2 steps
    assert abs(strip[:32, :32].mean() - 90) < 5  # it starts from the picture
    for script in ("examples/robot_plans.py", "examples/memory_walk.py"):  # before any rollout
        assert "must end in a picture extension" in fails(script, "--tiny", "--out", "plans")


def test_memory_benchmark_smoke(tmp_path):
    report = tmp_path / "memory.json"
    text = run(
        "-m",
        "gym_worldmodel.bench",
        "memory",
        "--tiny",
        "--batch",
        "2",
        "--long-steps",
        "14",
        "--capacity",
        "8",
        "--repeats",
        "1",
        "--json",
        str(report),
    )
    assert "with memory" in text and json.loads(report.read_text())["batch_2"]["bank_entries"] == 8


def test_engine_benchmark_smoke(tmp_path):
    report = tmp_path / "bench.json"
    text = run(
        "-m",
        "gym_worldmodel.cli",
        "bench",
        "engine",
        "--tiny",
        "--dtype",
        "float32",
        "--batch",
        "2",
        "--long-steps",
        "70",
        "--repeats",
        "1",
        "--json",
        str(report),
    )
    assert "no-cache recompute" in text and "frames/s batch 1" in text
    assert report.exists()


def test_env_benchmark_smoke():
    args = ("env", "--tiny", "--sizes", "1", "2", "--repeats", "1", "--nfe", "1")
    text = run("-m", "gym_worldmodel.bench", *args)
    assert "vector env x2" in text and "env overhead" in text
    assert "nfe 1," in text and ", cpu\n" in text  # the tiny model's own is 2; the device
    if not torch.cuda.is_available():  # a device this machine lacks: named before any timing
        err = fails("-m", "gym_worldmodel.bench", *args, "--device", "cuda")
        assert "--device cuda: no CUDA device" in err


def test_simulator_benchmark_times_the_simulator_or_says_why_not(monkeypatch, capsys):
    import importlib.util

    from gym_worldmodel.bench_env import simulator_benchmark

    if importlib.util.find_spec("highway_env") is not None:
        out = simulator_benchmark("driving", repeats=2)
        assert set(out) == {"single", f"async_{os.cpu_count()}"}
        for row in out.values():
            assert row["steps_per_s"] > 0
            assert row["frames_per_s"] == pytest.approx(3 * row["steps_per_s"])
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *args: None)
    assert simulator_benchmark("driving", repeats=2) == {}
    assert "simulator: not measured" in capsys.readouterr().out


def test_vae_benchmark_smoke():
    text = run(
        "-m", "gym_worldmodel.bench", "vae", "--tiny", "--frames", "3", "17", "--repeats", "1"
    )
    assert "17 frames, decode: one pass" in text and "17 frames, encode" in text


def test_train_benchmark_times_a_training_step_per_window_and_dtype(tmp_path):
    report = tmp_path / "train.json"
    args = ("train", "--tiny", "--batch", "3", "--chunks", "2", "5", "--repeats", "1", "--memory")
    text = run("-m", "gym_worldmodel.bench", *args, "--json", str(report))
    assert "5 chunks, bfloat16:" in text and "2 chunks,  float32:" in text
    figures = json.loads(report.read_text())
    assert figures["memory"] is True and "a memory chunk" in text
    for key in ("bfloat16_chunks_2", "float32_chunks_2", "bfloat16_chunks_5", "float32_chunks_5"):
        assert figures[key]["seconds_per_step"] > 0
        assert figures[key]["windows_per_s"] == pytest.approx(3 / figures[key]["seconds_per_step"])


def test_flow_benchmark_times_both_layouts_and_they_agree(tmp_path):
    report = tmp_path / "flow.json"
    args = ("flow", "--batch", "2", "--repeats", "1", "--width", "8", "--dtype", "float32")
    text = run("-m", "gym_worldmodel.bench", *args, "--json", str(report))
    assert "2 images: contiguous" in text and "channels-last" in text
    row = json.loads(report.read_text())["batch_2"]
    assert row["contiguous"] > 0 and row["channels_last"] > 0
    assert row["max_flow_difference"] < 1e-4  # the same flow, whichever layout


def test_cem_planner_agent_moves_toward_the_target():
    text = run(
        "agents/cem_planner.py",
        "--model",
        "random-tiny",
        "--steps",
        "4",
        "--horizon",
        "2",
        "--population",
        "8",
        "--iterations",
        "2",
        "--target",
        "2",
        "0",
    )
    distances = [
        float(line.split("distance to target ")[1].split(" m")[0])
        for line in text.splitlines()
        if line.startswith("step ")
    ]
    assert len(distances) == 4 and distances[-1] < 2.0  # started 2 m away


def test_cem_planner_stops_where_its_radius_ends_the_episode():
    common = ("agents/cem_planner.py", "--model", "random-tiny", "--horizon", "2")
    text = run(*common, "--population", "8", "--iterations", "2", "--target", "1.2", "0",
               "--radius", "0.3", "--steps", "10")  # fmt: skip
    steps = [line for line in text.splitlines() if line.startswith("step ")]
    assert f"reached the target (within 0.3 m) in {len(steps)} steps" in text  # and stopped
    assert float(steps[-1].split("distance to target ")[1].split(" m")[0]) <= 0.3
    assert "--radius must be a distance >= 0" in fails(*common, "--radius", "-1")


def test_mppi_agent_changes_lanes_and_straightens_out(tmp_path):
    png = tmp_path / "mppi.png"
    text = run(
        "agents/mppi_driving.py", "--model", "random-tiny", "--steps", "12", "--lane", "4",
        "--plot", str(png),
    )  # fmt: skip
    assert f"wrote {png}" in text and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    last = [line for line in text.splitlines() if line.startswith("step ")][-1]
    heading = float(last.split(" heading ")[1].split(" deg")[0])
    off = float(last.split("off the lane ")[1].split(" m")[0])
    assert off < 0.5 and abs(heading) < 5  # started 4 m off, in the lane to the right
    # the reward reads the pose, not the frames: one denoiser pass plans the same moves
    one = run("agents/mppi_driving.py", "--model", "random-tiny", "--steps", "12", "--nfe", "1")
    steps = [[line for line in t.splitlines() if line.startswith("step ")] for t in (text, one)]
    assert steps[0] == steps[1]
    assert "(denoiser passes a step: 2)" in text and "(denoiser passes a step: 1)" in one
    err = fails("agents/mppi_driving.py", "--model", "random-tiny", "--plot", "out.jpg")
    assert "--plot writes a PNG" in err


def test_ppo_agent_trains_saves_and_resumes(tmp_path):
    out = tmp_path / "ppo"
    common = ["--model", "random-tiny", "--envs", "4", "--rollout", "16", "--eval-episodes", "4"]
    first = run(
        "agents/ppo_citywalk.py", *common, "--steps", "64", "--out", str(out), "--no-progress"
    )
    assert "trained 64 env steps" in first
    assert re.search(r"PPO, sampled +success [01]\.\d\d +return +-\d+\.\d\d", first)
    assert re.search(r"random +success [01]\.\d\d", first)
    curve = json.loads((out / "curve.json").read_text())
    assert [c["env_steps"] for c in curve] == [64]  # one rollout of 4 rows x 16 steps
    assert (out / "ppo.zip").stat().st_size > 0 and (out / "curve.png").stat().st_size > 0
    assert (out / "reward_scale.pkl").stat().st_size > 0  # the reward scaler resumes too
    from stable_baselines3 import PPO

    saved = PPO.load(out / "ppo.zip", device="cpu")  # saved after its update, not before it
    assert saved.num_timesteps == 64 and saved._n_updates == saved.n_epochs
    more = run("agents/ppo_citywalk.py", *common, "--steps", "128", "--out", str(out), "--resume")
    assert "resumed from" in more and "at 64 env steps" in more and "trained 64 env steps" in more
    assert [c["env_steps"] for c in json.loads((out / "curve.json").read_text())] == [64, 128]
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    # a new run into it, or a resume for another world, is refused and leaves the run as it was
    error = fails("agents/ppo_citywalk.py", *common, "--steps", "64", "--out", str(out))
    assert "holds a trained policy (ppo.zip): --resume continues it" in error
    other = ["--model", "elsewhere", *common[2:], "--steps", "192", "--out", str(out), "--resume"]
    assert "--model elsewhere: there is no directory 'elsewhere'" in fails(
        "agents/ppo_citywalk.py", *other
    )
    (out / "ppo.zip").write_bytes(b"garbage")
    error = fails(
        "agents/ppo_citywalk.py", *common, "--steps", "192", "--out", str(out), "--resume"
    )
    assert "cannot read" in error and "not a zip file" in error
    assert {p.name for p in out.iterdir()} == set(before)


def test_ppo_agent_observes_the_pose(tmp_path):
    common = ["--model", "random-tiny", "--envs", "2", "--rollout", "16", "--eval-episodes", "2"]
    text = run("agents/ppo_citywalk.py", *common, "--pose", "--steps", "32", "--out", str(tmp_path))
    assert "trained 32 env steps" in text and re.search(r"PPO, argmax +success [01]\.\d\d", text)
    from stable_baselines3 import PPO

    saved = PPO.load(tmp_path / "ppo.zip", device="cpu")
    assert set(saved.observation_space.spaces) == {"pose", "rgb"}
    # resuming it without --pose is refused with a message, and the run is left as it was
    before = (tmp_path / "ppo.zip").read_bytes()
    err = fails(
        "agents/ppo_citywalk.py", *common, "--steps", "64", "--out", str(tmp_path), "--resume"
    )
    assert "does not fit this env" in err and "trained with --pose?" in err
    assert (tmp_path / "ppo.zip").read_bytes() == before
    other = [*common, "--pose", "--steps", "64", "--out", str(tmp_path), "--resume"]
    error = fails("agents/ppo_citywalk.py", *other, "--target", "1", "1")
    assert "walks to [3.0, 1.0], not --target [1.0, 1.0]" in error
    (tmp_path / "reward_scale.pkl").unlink()
    assert "no reward scaler" in fails("agents/ppo_citywalk.py", *other)


def driving_returns(text: str) -> dict[str, float]:
    """The evaluation lines of agents/ppo_driving.py: policy -> mean return."""
    found = re.findall(r"^  (.+?) +in lane [01]\.\d\d .* return +(-?\d+\.\d\d)  \(", text, re.M)
    return {name: float(ret) for name, ret in found}


def test_cleanrl_style_ppo_learns_to_change_lanes_and_resumes(tmp_path):
    out = tmp_path / "ppo"
    common = ["--model", "random-tiny", "--threads", "1", "--out", str(out), "--no-progress"]
    text = run("agents/ppo_driving.py", *common, "--steps", "1024")
    assert "trained 1024 env steps" in text
    returns = driving_returns(text)
    assert set(returns) == {
        "PPO, mean controls",
        "PPO, sampled",
        "zero controls",
        "random controls",
    }
    # 4 rollouts of 8 rows x 32 steps: its mean controls already steer towards the lane
    assert returns["PPO, mean controls"] > returns["zero controls"] + 10
    curve = json.loads((out / "curve.json").read_text())
    assert [c["env_steps"] for c in curve] == [256, 512, 768, 1024]
    assert curve[-1]["mean_return"] > curve[0]["mean_return"]
    assert (out / "curve.png").stat().st_size > 0
    again = run("agents/ppo_driving.py", *common, "--steps", "1024", "--resume")
    mean = "PPO, mean controls"  # deterministic given the weights: the saved policy
    assert "trained" not in again and driving_returns(again)[mean] == returns[mean]
    more = run("agents/ppo_driving.py", *common, "--steps", "1280", "--resume")
    assert "at 1024 env steps" in more and "trained 256 env steps" in more
    before = (out / "agent.pt").read_bytes()
    err = fails("agents/ppo_driving.py", *common, "--steps", "2048", "--resume", "--lane", "-4")
    assert "was trained for" in err and (out / "agent.pt").read_bytes() == before
    (out / "agent.pt").write_bytes(before[:100])  # a truncated checkpoint: one clear line
    err = fails("agents/ppo_driving.py", *common, "--steps", "2048", "--resume")
    assert "--resume: cannot read" in err and "Traceback" not in err
    import torch

    torch.save({"weights": torch.zeros(2)}, out / "agent.pt")  # a foreign checkpoint
    err = fails("agents/ppo_driving.py", *common, "--steps", "2048", "--resume")
    assert "--resume: cannot read" in err and "Traceback" not in err
    (out / "agent.pt").write_bytes(before)
    (out / "curve.json").unlink()  # a stop between the agent's write and the curve's
    again = run("agents/ppo_driving.py", *common, "--steps", "1536", "--resume")
    assert "at 1280 env steps" in again and "trained 256 env steps" in again
    assert [c["env_steps"] for c in json.loads((out / "curve.json").read_text())] == [1536]
    for bad in (["--minibatches", "200"], ["--lr", "nan"], ["--heading-weight", "-1"]):
        assert "Traceback" not in fails("agents/ppo_driving.py", *common, *bad)
    err = fails("agents/ppo_driving.py", *common, "--steps", "2048", "--resume", "--nfe", "2")
    assert "was trained for" in err and "'nfe': None" in err  # the world it trained in too
    missing = ["--model", str(tmp_path / "none"), *common[2:-3], "--out", str(tmp_path / "new")]
    err = fails("agents/ppo_driving.py", *missing)
    assert f"--model {tmp_path / 'none'}" in err and "Traceback" not in err
    assert not (tmp_path / "new").exists()  # nothing made for a run that could not start
    assert "at most 180" in fails("agents/ppo_driving.py", *common, "--start-heading", "720")


def test_cleanrl_style_ppo_from_frames_alone(tmp_path):
    args = ["--model", "random-tiny", "--frames-only", "--envs", "2", "--rollout", "8"]
    args += ["--threads", "1", "--lane", "0", "--start-heading", "10"]
    text = run(
        "agents/ppo_driving.py",
        *args,
        "--steps",
        "16",
        "--eval-episodes",
        "2",
        "--episode-steps",
        "4",
        "--out",
        str(tmp_path),
        "--no-progress",
    )
    assert "trained 16 env steps" in text and len(driving_returns(text)) == 4
    # episodes start off the road's direction: zero controls drift off the lane they are in
    assert driving_returns(text)["zero controls"] < 0


def test_collect_command_with_a_custom_source_resumes(tmp_path):
    out = tmp_path / "data"
    args = [
        "-m",
        "gym_worldmodel.cli",
        "collect",
        "--source",
        "test_sources:FakeSource",
        "--out",
        str(out),
        "--steps",
        "3",
        "--episodes-per-shard",
        "2",
        "--heldout-every",
        "4",
        "--no-progress",
    ]
    env = {**os.environ, "PYTHONPATH": str(ROOT / "tests")}
    few = run(*args[:6], str(tmp_path / "few"), *args[7:], "--episodes", "3", env=env)
    assert (
        "3 train and 0 held-out episodes" in few
        and "none held out: one episode in every 4 is" in few
    )
    first = run(*args, "--episodes", "4", env=env)
    assert "3 train and 1 held-out episodes" in first and "none held out" not in first
    again = run(*args, "--episodes", "6", env=env)  # resumes: only the two new episodes
    assert "5 train and 1 held-out episodes" in again


def test_an_interrupted_collection_says_how_to_resume(tmp_path, capsys):
    from gym_worldmodel import cli
    from gym_worldmodel.sources.episodes import read_card

    args = ["collect", "--source", "test_sources:FakeSource", "--out", str(tmp_path / "d")]
    args += ["--episodes", "4", "--steps", "3", "--episodes-per-shard", "1", "--no-progress"]
    assert cli.main([*args, "--source-option", "fail_at=2"]) == 130  # Ctrl-C at the third
    assert "collect: interrupted; run the same command again" in capsys.readouterr().err
    assert len(read_card(tmp_path / "d")["shards"]) == 2
    assert cli.main(args) == 0
    args[args.index("--episodes") + 1] = "2"
    assert cli.main(args) == 0
    assert "held more than --episodes 2 already" in capsys.readouterr().out


def test_own_recordings_become_a_dataset_the_recipes_take(tmp_path):
    """The recordings source, as docs/datasets.md runs it: robot actions in the env's RT-1
    dict, frames of another size and shape, one recording too short."""
    import numpy as np

    from gym_worldmodel.models import WorldModelConfig
    from gym_worldmodel.sources.episodes import check_datasets, load_episodes

    rng = np.random.default_rng(0)
    folder = tmp_path / "recordings"
    folder.mkdir()
    wide = np.zeros((7, 48, 96, 3), np.uint8)
    wide[:, :, 24:72] = 255  # white in the centre square, black at the sides
    for i in range(3):
        t = 6
        np.savez(
            folder / f"ep{i}.npz",
            frames=wide if i == 0 else rng.integers(0, 255, (t + 1, 48, 48, 3), dtype=np.uint8),
            world_vector=rng.uniform(-1, 1, (t, 3)).astype(np.float32),
            rotation_delta=rng.uniform(-1, 1, (t, 3)).astype(np.float32),
            gripper_closedness_action=rng.uniform(-1, 1, (t, 1)).astype(np.float32),
            base_displacement_vector=np.zeros((t, 2), np.float32),
            base_displacement_vertical_rotation=np.zeros((t, 1), np.float32),
            terminate_episode=np.ones(t, np.int64),
        )
    env = dict(os.environ)
    args = ["-m", "gym_worldmodel.cli", "collect", "--source", "recordings"]
    args += ["--source-option", f"folder={folder}", "--source-option", "world=robot"]
    args += ["--out", str(tmp_path / "data"), "--episodes", "3", "--heldout-every", "3"]
    assert "2 train and 1 held-out episodes" in run(*args, "--steps", "6", env=env)
    episodes = load_episodes(tmp_path / "data")
    assert episodes[0].frames.shape == (7, 64, 64, 3) and episodes[0].actions.shape == (6, 13)
    assert episodes[0].seed == 0 and episodes[0].frames.min() == 255  # cropped as the env does
    assert (episodes[0].actions[:, 11] == 1).all()  # the arm's mode, as the env encodes it
    check_datasets(WorldModelConfig.compact(), [tmp_path / "data"])
    args[args.index("--out") + 1] = str(tmp_path / "longer")
    done = subprocess.run(
        [sys.executable, *args, "--steps", "9"], cwd=ROOT, capture_output=True, text=True, env=env
    )
    assert "ep0.npz: 7 frames, fewer than --steps 9 + 1" in done.stderr
    # More episodes than recordings: a recording would be both training and held-out data.
    args[args.index("--out") + 1] = str(tmp_path / "more")
    args[args.index("--episodes") + 1] = "4"
    done = subprocess.run(
        [sys.executable, *args, "--steps", "6"], cwd=ROOT, capture_output=True, text=True, env=env
    )
    assert "ask for episode seeds 0-3" in done.stderr and "serves seeds 0-2" in done.stderr
    assert not (tmp_path / "more").exists()  # refused before the first recording, not after
    # Actions out of the world's range: the recording is named.
    with np.load(folder / "ep1.npz") as data:
        arrays = dict(data)
    arrays["world_vector"] = arrays["world_vector"] * 3
    np.savez(folder / "ep1.npz", **arrays)
    args[args.index("--out") + 1] = str(tmp_path / "loud")
    args[args.index("--episodes") + 1] = "3"
    done = subprocess.run(
        [sys.executable, *args, "--steps", "6"], cwd=ROOT, capture_output=True, text=True, env=env
    )
    assert "ep1.npz: its actions:" in done.stderr
    # A recording added before a resume would shift the episodes between the splits: refused.
    np.savez(folder / "a-first.npz", **arrays)
    args[args.index("--out") + 1] = str(tmp_path / "data")
    done = subprocess.run(
        [sys.executable, *args, "--steps", "6"], cwd=ROOT, capture_output=True, text=True, env=env
    )
    assert "other settings" in done.stderr and "'recordings'" in done.stderr


def test_recordings_take_robot_logs_as_they_are_kept(tmp_path):
    """A 7-D arm log (RT-1's one-hot terminate), other arrays left out by name, the rate."""
    import numpy as np

    from gym_worldmodel.sources.episodes import DatasetError
    from gym_worldmodel.sources.recordings import Recordings

    rng = np.random.default_rng(0)
    t = 5
    log = {
        "frames": rng.integers(0, 255, (t + 1, 40, 40, 3), dtype=np.uint8),
        "world_vector": rng.uniform(-1, 1, (t, 3)).astype(np.float32),
        "rotation_delta": rng.uniform(-1, 1, (t, 3)).astype(np.float32),
        "gripper_closedness_action": rng.uniform(-1, 1, t).astype(np.float32),  # flat
        "terminate_episode": np.eye(3, dtype=np.int64)[[1] * t],
        "timestamps": np.arange(t + 1) / 15.0,
    }
    (tmp_path / "logs").mkdir()
    np.savez(tmp_path / "logs" / "ep0.npz", **log)
    with pytest.raises(DatasetError, match=r"got \[.*'timestamps'.*ignore=NAME"):
        Recordings(str(tmp_path / "logs"), "robot").rollout(0, t)
    episode = Recordings(str(tmp_path / "logs"), "robot", ignore="timestamps").rollout(0, t)
    assert episode.actions.shape == (t, 13) and (episode.actions[:, 11] == 1).all()  # arm mode
    assert np.allclose(episode.actions[:, :3], log["world_vector"])
    assert not episode.actions[:, 7:10].any()  # the base keys, filled in as zeros
    np.savez(tmp_path / "logs" / "ep0.npz", **log, poses=np.zeros((t + 1, 4)))
    with pytest.raises(DatasetError, match="robot world has no pose .* ignore=poses"):
        Recordings(str(tmp_path / "logs"), "robot", ignore=["timestamps"]).rollout(0, t)
    np.savez(tmp_path / "logs" / "ep0.npz", **dict(log, frames=log["frames"] / 255.0))
    with pytest.raises(DatasetError, match=r"got float64 .*\(frames \* 255\).round\(\)"):
        Recordings(str(tmp_path / "logs"), "robot", ignore="timestamps").rollout(0, t)
    spaced = Recordings(str(tmp_path / "logs"), "robot", ignore="timestamps, poses")
    assert spaced.ignore == {"timestamps", "poses"}  # as a shell user writes a list
    for bad in (1, None, [1]):
        with pytest.raises(ValueError, match="ignore must name arrays"):
            Recordings(str(tmp_path / "logs"), "robot", ignore=bad)
    for fps in (10, 0, 7.5, True):
        with pytest.raises(ValueError, match="positive multiple of the worlds' 3 frames a step"):
            Recordings(str(tmp_path / "logs"), "robot", fps=fps)
    assert Recordings(str(tmp_path / "logs"), "robot", fps=30).info["fps"] == 30


def test_recordings_that_cannot_serve_are_named_and_hidden_files_are_not_recordings(
    tmp_path, monkeypatch
):
    import numpy as np

    from gym_worldmodel.sources.episodes import DatasetError
    from gym_worldmodel.sources.recordings import Recordings

    monkeypatch.chdir(tmp_path)
    folder = tmp_path / "123"  # a folder named by digits: --source-option reads it as a number
    folder.mkdir()
    (folder / "._a.npz").write_bytes(b"\x00\x05\x16\x07 AppleDouble")  # macOS's, beside a.npz
    frames = np.zeros((5, 8, 8, 3), np.uint8)
    cases = {
        "cut": b"PK\x03\x04garbage",
        "none": dict(frames=frames),  # driving without its actions
        "flat": dict(frames=frames, actions=np.float32(0.5)),  # one number, not a row a step
        "poses": dict(frames=frames, actions=np.zeros((4, 2), np.float32), poses=np.float64(1)),
        "empty": dict(frames=np.zeros((5, 0, 8, 3), np.uint8), actions=np.zeros((4, 2))),
    }
    for name, content in cases.items():
        for old in folder.glob("[!.]*.npz"):
            old.unlink()
        if isinstance(content, bytes):
            (folder / "a.npz").write_bytes(content)
        else:
            np.savez(folder / "a.npz", **content)
        source = Recordings(123, "driving")
        assert [p.name for p in source.files] == ["a.npz"]  # not the hidden one
        with pytest.raises(DatasetError, match=r"a\.npz: ") as err:
            source.rollout(0, 4)
        assert "Traceback" not in str(err.value), name


def test_train_commands_budget_recipe(tmp_path, capsys):
    env = {**os.environ, "PYTHONPATH": str(ROOT / "tests")}
    data = tmp_path / "data"
    run(
        "-m",
        "gym_worldmodel.cli",
        "collect",
        "--source",
        "test_training:SquareSource",
        "--out",
        str(data),
        "--episodes",
        "4",
        "--steps",
        "8",
        "--heldout-every",
        "2",
        "--no-progress",
        env=env,
    )
    run(
        "-m",
        "gym_worldmodel.cli",
        "train",
        "vae",
        "--data",
        str(data),
        "--out",
        str(tmp_path / "vae"),
        "--preset",
        "tiny",
        "--budget",
        env=env,
    )
    text = run(
        "-m",
        "gym_worldmodel.cli",
        "train",
        "teacher",
        "--data",
        str(data),
        "--init",
        str(tmp_path / "vae" / "model"),
        "--out",
        str(tmp_path / "teacher"),
        "--budget",
        "--no-progress",
        env=env,
    )
    # without bars, each checkpoint logs a line: step, mean losses, pace
    assert re.search(r"teacher step 20/20, means of steps 1-20: loss \d\.\d{4}.* s/step\)", text), (
        text
    )
    assert "wrote" in text and (tmp_path / "teacher" / "model" / "model.safetensors").exists()
    assert (tmp_path / "teacher" / "losses.png").exists()
    text = run(
        "-m",
        "gym_worldmodel.cli",
        "train",
        "student",
        "--data",
        str(data),
        "--init",
        str(tmp_path / "teacher" / "model"),
        "--out",
        str(tmp_path / "student"),
        "--nfe",
        "2",
        "--budget",
        env=env,
    )
    student = read_config(tmp_path / "student" / "model" / "config.json")
    assert (student.sampler.nfe, student.sampler.stochastic) == (2, False)
    assert (tmp_path / "student" / "losses.png").exists()
    # eval with the student for this world and the teacher for any other; ship under a name
    text = run(
        "-m",
        "gym_worldmodel.cli",
        "eval",
        "--model",
        str(tmp_path / "teacher" / "model"),
        f"citywalk={tmp_path / 'student' / 'model'}",
        "--data",
        str(data),
        "--budget",
        "--out",
        str(tmp_path / "eval"),
        "--report",
        str(tmp_path / "eval.md"),
        "--nfe",
        "1",
        "--no-progress",
        env=env,
    )
    assert "citywalk: PSNR at h = 1 / " in text and "(by step: 1: " in text
    assert "model " in text and " dB, copy last frame " in text  # figures, not a raw dict
    assert "| model |" in (tmp_path / "eval.md").read_text()
    assert "--nfe 1" in (tmp_path / "eval.md").read_text()  # the command, in the report
    run(
        "-m",
        "gym_worldmodel.cli",
        "ship",
        "--model",
        str(tmp_path / "student" / "model"),
        "--data",
        str(data),
        "--name",
        "citywalk",
        "--out",
        str(tmp_path / "worlds"),
    )
    assert read_config(tmp_path / "worlds" / "citywalk" / "config.json").sampler.nfe == 2
    assert (tmp_path / "worlds" / "citywalk" / "start_frames.npz").exists()
    # --nfe sets the passes the shipped world runs by default; the run's checkpoint keeps its own
    args = ("--model", str(tmp_path / "student" / "model"), "--data", str(data), "--name", "x")
    text = run(
        "-m", "gym_worldmodel.cli", "ship", *args, "--nfe", "3", "--out", str(tmp_path / "w")
    )
    assert "3 denoiser passes a step" in text
    assert read_config(tmp_path / "w" / "x" / "config.json").sampler.nfe == 3
    assert read_config(tmp_path / "student" / "model" / "config.json").sampler.nfe == 2
    assert (tmp_path / "w" / "x" / "start_frames" / "citywalk.npz").exists()
    # an env running the trained checkpoint starts from the first frames of its data
    import numpy as np

    from gym_worldmodel.envs import WorldModelVectorEnv
    from gym_worldmodel.sources.episodes import load_episodes

    with np.load(tmp_path / "student" / "model" / "start_frames" / "citywalk.npz") as saved:
        own = saved["frames"]
    firsts = np.stack([ep.frames[0] for ep in load_episodes(data)])
    assert own.shape[1:] == (32, 32, 3) and len({f.tobytes() for f in own}) == len(own)
    assert {f.tobytes() for f in own} == {f.tobytes() for f in firsts}  # each different one
    world = WorldModelVectorEnv(1, world="citywalk", model=tmp_path / "student" / "model")
    assert world.checkpoint_dir == tmp_path / "student" / "model"
    from gym_worldmodel.envs.worlds import start_frames

    assert np.array_equal(start_frames(world.world, 32, world.checkpoint_dir), own)
    # Into the package only when asked, and never a checkpoint a world it serves cannot run:
    # the camera-only student as "shared" would leave the robot world refusing its model.
    from gym_worldmodel import cli, files

    package = tmp_path / "package-worlds"
    package.mkdir()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(files, "WORLDS_DIR", package)
        capsys.readouterr()
        assert cli.main(["ship", *args[:4], "--name", "shared", "--into-package"]) == 2
        assert "ship: error: the robot world could not run this model" in capsys.readouterr().err
        assert list(package.iterdir()) == []  # nothing written
        cli.main(["ship", *args[:4], "--name", "citywalk", "--into-package"])
    assert (package / "citywalk" / "model.safetensors").is_file()


@pytest.mark.parametrize("nfe", ["0", "-1", "1.5", "two"])
def test_nfe_of_eval_ship_rollout_and_bench_must_be_a_positive_int(nfe, capsys):
    from gym_worldmodel import bench, cli

    data = ["--data", "nowhere"]
    for main, more in ((cli.eval_main, data), (cli.ship_main, data), (cli.rollout_main, [])):
        with pytest.raises(SystemExit):
            main(["--model", "nowhere", *more, "--nfe", nfe])
        assert f"argument --nfe: must be an int >= 1, got '{nfe}'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        bench.main(["env", "--tiny", "--nfe", nfe])
    assert f"argument --nfe: must be an int >= 1, got '{nfe}'" in capsys.readouterr().err


def test_nfe_of_the_mppi_agent_must_be_a_positive_int():
    err = fails("agents/mppi_driving.py", "--model", "random-tiny", "--nfe", "0")
    assert "argument --nfe: must be an int >= 1, got '0'" in err


def test_eval_takes_a_checkpoint_per_world(monkeypatch):
    from gym_worldmodel import cli, hub

    monkeypatch.setattr(hub, "from_pretrained", lambda path, device: f"loaded {path}")
    models = cli.per_world(["shared", "robot=own"], "--model")
    assert models("robot") == "loaded own" and models("driving") == "loaded shared"
    with pytest.raises(SystemExit, match="no checkpoint for the driving world"):
        cli.per_world(["robot=own"], "--model")("driving")
    with pytest.raises(SystemExit, match="more than one checkpoint"):
        cli.per_world(["a", "b"], "--model")
    own = cli.per_world(["myrobot=runs/own"], "--model", worlds=["myrobot"])  # a data card's
    assert own("myrobot") == "loaded runs/own"
    for values in (["runs/teacher", "robto=runs/own"], ["moon=runs/own"]):  # mistyped worlds
        with pytest.raises(SystemExit, match=r"--model .*=runs/own: no world '(robto|moon)'"):
            cli.per_world(values, "--model", worlds=["robot"])


def test_outputs_that_cannot_be_written_are_refused_before_the_work(tmp_path, monkeypatch, capsys):
    """A read-only folder or disk (faked: the tests run as root, who may write anywhere)."""
    import os

    from gym_worldmodel import cli, files

    ro = tmp_path / "ro"
    ro.mkdir()
    real = os.access
    monkeypatch.setattr(os, "access", lambda p, m: Path(p) != ro and real(p, m))
    assert files.unwritable(ro / "a" / "b.mp4") == f"the folder {ro} is not writable"
    assert files.unwritable(ro, folder=True) is not None
    assert files.unwritable(tmp_path / "ok" / "b.mp4") is None
    (tmp_path / "file").write_text("")
    assert (
        files.unwritable(tmp_path / "file" / "x.npy")
        == f"{tmp_path / 'file'} is a file, not a folder"
    )
    with pytest.raises(
        SystemExit, match=r"--video .*ro/v.mp4: the folder .* not writable \(nothing"
    ):
        cli.rollout_main(["--steps", "1", "--video", str(ro / "v.mp4")])
    with pytest.raises(SystemExit):  # argparse's error: exit status 2, the message on stderr
        cli.eval_main(["--data", "x", "--out", str(ro / "ev")])
    assert f"--out {ro / 'ev'}: the folder {ro} is not writable" in capsys.readouterr().err


def test_train_init_names_the_shipped_worlds(capsys, tmp_path, monkeypatch):
    from gym_worldmodel.cli.train import _parse
    from gym_worldmodel.files import WORLDS_DIR

    parse = lambda init: _parse(["self-forcing", "--data", "d", "--out", "o", "--init", init])[0]  # noqa: E731
    assert parse("shipped").init == str(WORLDS_DIR / "shared")  # the backbone, the robot's
    assert parse("citywalk=shipped").init == str(WORLDS_DIR / "citywalk")
    assert parse("robot=shipped").init == str(WORLDS_DIR / "shared")
    assert parse("runs/sf/model").init == "runs/sf/model"
    monkeypatch.chdir(tmp_path)
    (tmp_path / "shipped").mkdir()  # a folder of that name here is the folder
    assert parse("shipped").init == "shipped"
    with pytest.raises(SystemExit):
        parse("moon=shipped")
    assert "no world 'moon'" in capsys.readouterr().err


def test_eval_model_defaults_to_each_worlds_shipped_checkpoint(monkeypatch):
    from gym_worldmodel import cli, hub
    from gym_worldmodel.envs.worlds import WORLDS

    monkeypatch.setattr(hub, "from_pretrained", lambda path, device: path)
    default = cli.per_world(["shipped"], "--model")
    for name, world in WORLDS.items():
        assert default(name) == str(world.checkpoint_dir)
    mixed = cli.per_world(["runs/x", "robot=shipped"], "--model")
    assert mixed("robot") == str(WORLDS["robot"].checkpoint_dir) and mixed("citywalk") == "runs/x"


def test_rollout_plays_the_world_a_models_denoiser_was_trained_for(tmp_path, capsys, monkeypatch):
    import dataclasses

    from gym_worldmodel import cli, hub
    from gym_worldmodel.models import WorldModel, WorldModelConfig

    for modalities, world in (
        (("driving",), "driving"),
        (("camera", "driving"), "citywalk"),
        (("robot", "driving"), "robot"),  # no camera: the first world it learned
    ):
        config = dataclasses.replace(WorldModelConfig.tiny(), trained_modalities=modalities)
        folder = hub.save_pretrained(WorldModel(config), tmp_path / "_".join(modalities))
        monkeypatch.chdir(folder)  # its rollout.mp4, the default video
        cli.rollout_main(["--model", str(folder), "--steps", "1"])
        assert capsys.readouterr().out.startswith(f"{world}: 1 steps")
        assert (folder / "rollout.mp4").is_file()


def test_rollout_plays_an_actions_file_from_the_users_own_picture(tmp_path, capsys, monkeypatch):
    import numpy as np
    from PIL import Image

    from gym_worldmodel import cli
    from gym_worldmodel.envs.options import first_chunk
    from gym_worldmodel.envs.worlds import WORLDS, model_config

    def rollout(world, actions, *more):
        cli.rollout_main(["--world", world, "--actions", str(tmp_path / actions), *map(str, more)])

    picture = np.random.default_rng(0).integers(0, 256, (90, 120, 3), dtype=np.uint8)
    Image.fromarray(picture).save(tmp_path / "camera.png")
    np.savetxt(tmp_path / "drive.csv", [[0.2, 0.5], [0.0, -1.0], [-0.3, 0.0]], delimiter=",")
    out, video = tmp_path / "frames.npy", tmp_path / "out.mp4"
    own = ("--image", tmp_path / "camera.png", "--video", video, "--frames", out)
    rollout("driving", "drive.csv", *own)
    frames = np.load(out)
    assert frames.shape == (1 + 3 * 3, 64, 64, 3) and frames.dtype == np.uint8
    config = model_config(WORLDS["driving"], None)
    assert np.array_equal(frames[0], first_chunk(picture[None], config)[-1])

    # RT-1 columns for the robot (terminate_episode one-hot, as RT-1 stores it; a 1-wide key
    # flat); terminate = 0 in the second row ends the episode there, and the command says so
    rt1 = {
        "world_vector": np.tile([0.5, 0.0, -0.5], (4, 1)),
        "rotation_delta": np.zeros((4, 3)),
        "gripper_closedness_action": np.ones(4),
        "base_displacement_vector": np.zeros((4, 2)),
        "base_displacement_vertical_rotation": np.zeros((4, 1)),
        "terminate_episode": np.eye(3, dtype=np.int64)[[1, 0, 1, 1]],
    }
    np.savez(tmp_path / "plan.npz", **rt1)
    capsys.readouterr()
    rollout("robot", "plan.npz", *own)
    assert np.load(out).shape[0] == 1 + 2 * 3
    assert "row 1 of --actions ended the episode after 2 of 4 steps" in capsys.readouterr().out

    # an action out of range names its row and writes nothing
    np.save(tmp_path / "bad.npy", np.array([[0.2, 0.5], [3.0, 0.0]], np.float32))
    bad = tmp_path / "bad.mp4"
    with pytest.raises(SystemExit, match=r"row 1: driving action: expected values in \[-1, 1\]"):
        rollout("driving", "bad.npy", "--video", bad)
    assert not bad.exists()
    with pytest.raises(SystemExit, match=r"without --world this plays the citywalk world: --world"):
        cli.rollout_main(["--actions", str(tmp_path / "bad.npy")])  # driving's, given no world
    with pytest.raises(SystemExit, match="is for --world robot"):
        rollout("citywalk", "plan.npz")
    # a 7-D plan (no base keys, no terminate_episode) plays the robot without --world
    arm = {k: rt1[k] for k in ("world_vector", "rotation_delta", "gripper_closedness_action")}
    np.savez(tmp_path / "arm.npz", **arm)
    monkeypatch.chdir(tmp_path)
    cli.rollout_main(["--actions", str(tmp_path / "arm.npz"), "--frames", str(out)])
    assert np.load(out).shape[0] == 1 + 4 * 3
    assert not (tmp_path / "rollout.mp4").exists()  # --frames alone: no video (nor its extra)
    assert capsys.readouterr().out.endswith(f"; wrote {out}\n")
    np.savez(
        tmp_path / "typo.npz",
        **{k: v for k, v in rt1.items() if k != "terminate_episode"},
        foo=rt1["world_vector"],
    )
    with pytest.raises(
        SystemExit, match=r"RT-1 actions: expected the keys .*got \['base_displacement_vec.*'foo'"
    ):
        rollout("robot", "typo.npz")  # the keys in the file, not the default filled in
    (tmp_path / "corrupt.npy").write_bytes(b"not numpy")
    with pytest.raises(SystemExit, match=r"not a .npy file of numbers \(not an .npy or") as e:
        rollout("driving", "corrupt.npy")
    assert "allow_pickle" not in str(e.value)  # NumPy's advice to load junk unsafely is dropped
    # broken .npz files: truncated, a flipped byte in an array, empty; an .npz named .npy
    whole = (tmp_path / "plan.npz").read_bytes()
    flipped = bytearray(whole)
    flipped[whole.index(b"NUMPY") + 200] ^= 0xFF  # inside world_vector's data: a bad CRC
    (tmp_path / "plan_as.npy").write_bytes(whole)
    np.savez_compressed(tmp_path / "zipped.npz", **rt1)
    zipped = bytearray((tmp_path / "zipped.npz").read_bytes())
    zipped[72] ^= 0xFF  # inside the first array's deflate stream: zlib.error
    broken = [("cut", whole[: len(whole) // 2]), ("flip", bytes(flipped)), ("empty", b"")]
    for name, data in [*broken, ("zflip", bytes(zipped))]:
        (tmp_path / f"{name}.npz").write_bytes(data)
        with pytest.raises(
            SystemExit, match=rf"--actions .*{name}.npz: not a .npz file of numbers"
        ):
            rollout("robot", f"{name}.npz")
    with pytest.raises(SystemExit, match=r"expected a .npy file, this one holds named arrays"):
        rollout("robot", "plan_as.npy")
    with pytest.raises(SystemExit, match="not an image"):
        cli.rollout_main(["--image", str(tmp_path / "drive.csv")])
    np.save(tmp_path / "chw.npy", np.zeros((3, 40, 50), np.uint8))  # how to fix it, as reset says
    with pytest.raises(SystemExit, match=r"got uint8 \(3, 40, 50\) \(channels first: np.moveaxis"):
        cli.read_start_image(tmp_path / "chw.npy")
    deep = tmp_path / "deep.png"  # 16 bits: Pillow's RGB would clip it to near white
    Image.fromarray(np.arange(64 * 64, dtype=np.uint16).reshape(64, 64) * 16).save(deep)
    with pytest.raises(SystemExit, match=r"deep.png: .*mode 'I;16' .* clipped, not scaled"):
        cli.read_start_image(deep)
    for path, what in [(tmp_path, "a folder"), (tmp_path / "none.png", "no such file")]:
        with pytest.raises(SystemExit, match=f"--image .*: {what}$"):
            cli.read_start_image(path)
    with pytest.raises(SystemExit, match="--device takes a torch device"):
        cli.rollout_main(["--device", "gpu"])
    with pytest.raises(SystemExit, match="simulator's first frame: drop --image"):
        cli.rollout_main(["--simulator", "--image", str(tmp_path / "drive.csv")])
    # a broken checkpoint is named as the model, not blamed on a start image
    from gym_worldmodel.hub import save_pretrained
    from gym_worldmodel.models import WorldModel, WorldModelConfig

    broken = save_pretrained(WorldModel(WorldModelConfig.tiny()), tmp_path / "broken")
    (broken / "model.safetensors").write_bytes(b"truncated")
    with pytest.raises(SystemExit, match=r"--model .*broken: .*not a readable safetensors file"):
        cli.rollout_main(["--model", str(broken), "--steps", "1"])


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["eval", "--data", "no-such-dir", "--model", "x"],
            "eval: error: no-such-dir/dataset.json",
        ),
        (
            ["ship", "--model", "./no-such-dir", "--data", "x", "--out", "w"],
            "ship: error: checkpoint directory",
        ),
        (
            ["ship", "--model", "m", "--data", "x"],
            "one of the arguments --out --into-package is required",
        ),
        (
            ["train", "teacher", "--data", "x", "--init", "y", "--out", "z", "--steps", "-3"],
            "argument --steps: must be an int >= 1, got '-3'",
        ),
        (
            ["train", "teacher", "--data", "x", "--init", "y", "--out", "z", "--lr", "0"],
            "argument --lr: must be a finite number > 0, got '0'",
        ),
        (
            ["collect", "--source", "highway", "--out", "x", "--episodes", "0"],
            "argument --episodes: must be an int >= 1",
        ),
        (
            ["collect", "--source", "os:path", "--out", "x", "--episodes", "1"],
            "os.path is a module, not a class",
        ),
        (
            ["collect", "--source", "fractions:Fraction", "--out", "x", "--episodes", "1"]
            + ["--source-option", "foo=1"],
            "got an unexpected keyword argument 'foo'; its options (--source-option KEY=VALUE): "
            "numerator, denominator",
        ),
        (["rollout", "--seed", "-1"], "argument --seed: must be an int >= 0, got '-1'"),
        (
            ["rollout", "--image", "nowhere.png"],
            "rollout: error: --image nowhere.png: no such file",
        ),
        (
            ["eval", "--data", "x", "--out", "ev", "--report", "x/dataset.json"],
            "--report x/dataset.json: name a markdown page (.md) to write",
        ),
        (
            ["ship", "--model", "broken", "--data", "x", "--out", ".", "--name", "broken"],
            "is the checkpoint --model reads: ship writes a float16 copy",
        ),
        (["play", "--fps", "0.5"], "argument --fps: must be an int >= 1, got '0.5'"),
        (
            ["train", "student", "--data", "x", "--init", "y", "--out", "z", "--max-chunks", "9"],
            "--max-chunks is an option of train self-forcing, not of student",
        ),
        (
            ["train", "decoder", "--data", "x", "--init", "y", "--out", "z", "--memory"],
            "--memory is an option of train teacher / student / self-forcing, not of decoder",
        ),
        (["eval", "--data", "x", "--out", "file.txt"], "--out file.txt: must be a directory"),
        (
            ["ship", "--model", "broken", "--data", "x", "--out", "w"],
            "ship: error: broken/model.safetensors is not a readable safetensors",
        ),
        (
            ["ship", "--model", "m", "--data", "x", "--name", "../escaped", "--out", "w"],
            "argument --name: must be one folder name (no '/' or '..'), got '../escaped'",
        ),
        (["bench", "engine", "--repeats", "0"], "argument --repeats: must be an int >= 1"),
        (["train", "student", "--data", "x", "--out", "z"], "required: --init"),
        (
            [
                "train",
                "teacher",
                "--data",
                "x",
                "--init",
                "y",
                "--out",
                "broken",
            ],
            "--out broken is a checkpoint (it holds model.safetensors): give a run directory",
        ),
    ],
)
def test_cli_input_errors_are_one_line_messages_not_tracebacks(args, message, tmp_path):
    from gym_worldmodel.hub import save_pretrained
    from gym_worldmodel.models import WorldModel, WorldModelConfig

    (tmp_path / "file.txt").write_text("not a directory")
    broken = save_pretrained(WorldModel(WorldModelConfig.tiny()), tmp_path / "broken")
    (broken / "model.safetensors").write_bytes(b"truncated")
    done = subprocess.run(
        [sys.executable, "-m", "gym_worldmodel.cli", *args],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2  # one status for every refusal: argparse's, ours, a ValueError's
    assert message in done.stderr and "Traceback" not in done.stderr


def test_bench_json_that_cannot_be_written_fails_before_the_run(tmp_path, capsys):
    from gym_worldmodel import bench

    with pytest.raises(SystemExit):
        bench.main(["env", "--tiny", "--json", str(tmp_path)])  # a folder
    assert "--json" in capsys.readouterr().err
    bench.main(
        ["env", "--tiny", "--sizes", "1", "--repeats", "1", "--json", f"{tmp_path}/a/b.json"]
    )
    assert (tmp_path / "a" / "b.json").is_file()  # its folder made


def test_bench_state_times_what_a_planner_pays_to_branch(capsys):
    from gym_worldmodel import bench

    results = bench.main(["state", "--tiny", "--rows", "2", "--forks", "1", "3", "--repeats", "1"])
    assert results["rows"] == 2 and results["state_mb_per_row"] > 0
    assert results["get_state_ms"] > 0 and results["set_state_ms"] > 0
    assert set(results) >= {"fork_1", "fork_3"} and results["fork_3"]["step_ms"] > 0
    out = capsys.readouterr().out
    assert "MB a row (pickled)" in out and "a step of its 3 futures" in out


def test_bench_sync_counts_a_steps_cuda_syncs_and_says_when_there_is_no_gpu():
    import torch

    from gym_worldmodel import bench

    args = ["sync", "--tiny", "--rows", "2", "--steps", "1"]
    if not torch.cuda.is_available():
        with pytest.raises(SystemExit, match="needs a CUDA device"):
            bench.main(args)
        return
    results = bench.main(args)
    assert len(results) == 6 and all(v >= 0 for v in results.values())


def test_bench_memory_and_train_smoke_runs_print_their_figures(capsys):
    from gym_worldmodel import bench

    memory = ["memory", "--tiny", "--batch", "1", "--capacity", "4", "--repeats", "1"]
    assert bench.main([*memory, "--long-steps", "12"])
    train = ["train", "--tiny", "--batch", "2", "--chunks", "3", "--repeats", "1"]
    assert bench.main([*train, "--dtype", "float32"])
    out = capsys.readouterr().out
    assert "with memory vs" in out and "(target <= 1.3)" in out
    assert "windows/s" in out and "tokens/s" in out
    with pytest.raises(SystemExit):  # its figures are at step 10 and at a step after it
        bench.main([*memory, "--long-steps", "6"])
    assert "--long-steps must be >= 12" in capsys.readouterr().err


def test_a_source_module_that_fails_to_import_is_named_with_its_line(tmp_path, monkeypatch):
    from gym_worldmodel.cli.collect import load_source

    (tmp_path / "broken_source.py").write_text("import numpy as np\nnp.not_a_function\n")
    (tmp_path / "needs_more.py").write_text("import not_installed_package_x\n")
    (tmp_path / "fine_source.py").write_text("class Src:\n    pass\n")
    (tmp_path / "bad_syntax.py").write_text("def f(:\n")
    (tmp_path / "uses_helper.py").write_text("import raising_helper\n")
    (tmp_path / "raising_helper.py").write_text("a = 1\nraise RuntimeError('boom')\n")
    (tmp_path / "broken_pkg").mkdir()
    (tmp_path / "broken_pkg" / "__init__.py").write_text("import numpy\nnumpy.nope\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    for target, message in (
        ("broken_source:Src", r"broken_source.py:2: AttributeError: module 'numpy' has no"),
        ("needs_more:Src", r"needs_more.py:1: ModuleNotFoundError: .*not_installed_package_x"),
        ("no_such_source_module:Src", r"no module 'no_such_source_module' \(on PYTHONPATH\?\)"),
        ("fine_source:Other", "module fine_source has no Other"),
        ("bad_syntax:Src", r"bad_syntax.py:1: SyntaxError"),
        ("uses_helper:Src", r"raising_helper.py:2: RuntimeError: boom"),  # where it was raised
        ("broken_pkg.src:Src", r"broken_pkg/__init__.py:2: AttributeError"),
    ):
        with pytest.raises(SystemExit, match=message):
            load_source(target)
    assert load_source("fine_source:Src").__name__ == "Src"
    # a source installed in site-packages: placed at its own innermost line, not at load_source
    installed = tmp_path / "site"
    installed.mkdir()
    (installed / "installed_src.py").write_text("import numpy\nnumpy.zeros(4).reshape(3)\n")
    monkeypatch.syspath_prepend(str(installed))
    import sysconfig

    paths = {**sysconfig.get_paths(), "purelib": str(installed)}
    monkeypatch.setattr("sysconfig.get_paths", lambda: paths)
    with pytest.raises(SystemExit, match=r"installed_src.py:2: ValueError: cannot reshape"):
        load_source("installed_src:Src")


@pytest.mark.parametrize(
    "command",
    [
        ["train", "vae", "--data", "d", "--out"],
        ["collect", "--source", "miniworld", "--episodes", "1", "--out"],
        ["ship", "--model", "m", "--out"],
    ],
)
def test_an_output_folder_that_is_a_file_is_named_before_anything_runs(command, tmp_path, capsys):
    from gym_worldmodel import cli

    taken = tmp_path / "notes.txt"
    taken.write_text("mine")
    with pytest.raises(SystemExit):
        cli.main([*command, str(taken)])
    assert f"--out: must name a folder (new or existing), '{taken}' is a file" in (
        capsys.readouterr().err
    )
    assert taken.read_text() == "mine"


class _OptionsSource:
    def __init__(self, folder: str, size: int = 64, flag: bool = False) -> None:
        self.folder, self.size, self.flag = folder, size, flag


def test_source_options_typed_str_keep_their_text(monkeypatch):
    from gym_worldmodel.cli import collect as collect_cli

    monkeypatch.setattr(collect_cli, "load_source", lambda name: _OptionsSource)
    given = collect_cli.parse_options(["folder=1e3", "size=32", "flag=true"])
    source = collect_cli.make_source("x", given)
    assert (source.folder, source.size, source.flag) == ("1e3", 32, True)  # not 1000.0


class _SimulatorMissing:
    def __init__(self) -> None:
        raise ImportError(
            "ThisSource needs the X simulator: pip install gym-worldmodel[simulators]"
        )


def test_a_source_whose_simulator_is_missing_is_a_one_line_error(monkeypatch, capsys):
    """As every other missing extra: the CLI's error line naming it, exit status 2."""
    from gym_worldmodel import cli
    from gym_worldmodel.cli import collect as collect_cli

    monkeypatch.setattr(collect_cli, "load_source", lambda name: _SimulatorMissing)
    assert cli.main(["collect", "--source", "miniworld", "--out", "x", "--episodes", "1"]) == 2
    err = capsys.readouterr().err
    assert "collect: error: source 'miniworld': ThisSource needs the X simulator" in err
    assert "Traceback" not in err


def test_a_commands_warnings_are_one_line_each(tmp_path, capsys):
    """The package's warnings name the command, not the source line that warned."""
    import warnings

    from gym_worldmodel import cli

    args = ["collect", "--source", "test_sources:FakeSource", "--out", str(tmp_path / "d")]
    args += ["--episodes", "2", "--steps", "3", "--no-progress"]
    assert cli.main(args) == 0
    shard = tmp_path / "d" / "train-00000.npz"
    shard.write_bytes(shard.read_bytes()[:-1] + b"x")  # a disk error
    capsys.readouterr()

    def shown(message, category, filename, lineno, file=None, line=None):  # as Python shows them
        sys.stderr.write(warnings.formatwarning(message, category, filename, lineno, line))

    with warnings.catch_warnings():  # (pytest records warnings: shown as a command shows them)
        warnings.simplefilter("always")
        warnings.showwarning = shown
        assert cli.main(args) == 0
    err = capsys.readouterr().err
    assert err.startswith("gym-worldmodel collect: warning: ") and "is not the bytes" in err
    assert len(err.splitlines()) == 1 and "UserWarning" not in err


def test_only_the_packages_own_warnings_lose_their_source_line():
    """NumPy's warnings raised at a package line, and other packages', keep Python's format;
    Gymnasium's logger.warn (colours and "WARN: ") around the package's own message is read."""
    import warnings

    from gym_worldmodel import cli
    from gym_worldmodel.envs import window

    ours, theirs = window.__file__, warnings.__file__
    with cli._warnings_as_lines("play"):
        said = warnings.formatwarning("\x1b[33mWARN: no display\x1b[0m", UserWarning, ours, 1)
        assert said == "gym-worldmodel play: warning: no display\n"
        numpy_s = warnings.formatwarning("divide by zero", RuntimeWarning, ours, 7)
        assert numpy_s.startswith(f"{ours}:7: RuntimeWarning: divide by zero")
        assert warnings.formatwarning("x", UserWarning, theirs, 3).startswith(f"{theirs}:3:")
