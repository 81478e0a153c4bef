"""Smoke tests: every script and the CLI run end to end on a micro budget."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run(*args: str) -> str:
    done = subprocess.run(
        [sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def test_engine_rollout_example(tmp_path):
    out = tmp_path / "video.npz"
    text = run(
        "examples/engine_rollout.py", "--tiny", "--steps", "3", "--batch", "2", "--out", str(out)
    )
    assert "round trip bitwise equal: True" in text
    assert out.exists()


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
    text = run("-m", "gym_worldmodel.bench", "env", "--tiny", "--sizes", "1", "2", "--repeats", "1")
    assert "vector env x2" in text and "env overhead" in text


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
