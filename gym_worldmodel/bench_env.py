"""Env-layer benchmark: ``python -m gym_worldmodel.bench env``.

Steps per second and frames per second of the single env and the native vector env, and the env
layer's overhead over the raw engine on the same batch (interleaved, medians).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from gym_worldmodel.envs import WorldModelEnv, WorldModelVectorEnv
from gym_worldmodel.models import WorldModel


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def env_benchmark(
    model: WorldModel, world: str, sizes: Sequence[int], repeats: int
) -> dict[str, Any]:
    """Measure and print; returns the figures."""
    frames = model.config.dit.chunk_frames
    results: dict[str, Any] = {"world": world}
    single = WorldModelEnv(world=world, model=model)
    single.reset(seed=0)
    single.action_space.seed(0)
    action = single.action_space.sample()
    for _ in range(2):
        single.step(action)
    seconds = float(np.median([_timed(lambda: single.step(action)) for _ in range(2 * repeats)]))
    results["single"] = {"steps_per_s": 1 / seconds, "frames_per_s": frames / seconds}
    print(f"world {world}, {frames} frames per step")
    print(f"  single env:      {1 / seconds:7.2f} env-steps/s  {frames / seconds:7.1f} frames/s")
    for n in sizes:
        env = WorldModelVectorEnv(n, world=world, model=model)
        env.reset(seed=0)
        env.action_space.seed(0)
        actions = env.action_space.sample()
        vec = env.head.encode(actions, n, frames)
        for _ in range(2):
            env.step(actions)
        env_t, raw_t = [], []
        for _ in range(repeats):
            env_t.append(_timed(lambda env=env, a=actions: env.step(a)))
            raw_t.append(_timed(lambda env=env, v=vec: env._engine.step(v)))
        env_s, raw_s = float(np.median(env_t)), float(np.median(raw_t))
        row = {
            "steps_per_s": n / env_s,
            "frames_per_s": n * frames / env_s,
            "overhead": env_s / raw_s - 1.0,
        }
        results[f"vector_{n}"] = row
        print(
            f"  vector env x{n:<3}  {row['steps_per_s']:7.2f} env-steps/s  "
            f"{row['frames_per_s']:7.1f} frames/s  env overhead over the raw engine "
            f"{100 * row['overhead']:+.1f}% (target <= 10%)"
        )
        env.close()
    single.close()
    return results
