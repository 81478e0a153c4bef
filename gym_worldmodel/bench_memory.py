"""Spatial-memory cost benchmark: ``python -m gym_worldmodel.bench memory``.

The same world stepped with spatial memory on and off (two vector envs sharing one model, the
same seeds and actions: random held camera keys, so the retrieved chunk keeps changing and the
memory pass runs nearly every step). Each figure is the median env step time over repeats of
the same step, restored from a state snapshot, on and off interleaved so a slow minute slows
both alike; at step 10 and at a far step where the bank is long full (its capacity bounds it).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from functools import partial
from typing import Any

import numpy as np

from gym_worldmodel.bench import interleaved
from gym_worldmodel.envs import WorldModelVectorEnv
from gym_worldmodel.models import WorldModel


def memory_benchmark(
    model: WorldModel, batches: Sequence[int], long_steps: int, repeats: int, capacity: int = 256
) -> dict[str, Any]:
    """Measure and print; returns the figures."""
    results: dict[str, Any] = {"capacity": capacity, "long_step": long_steps}
    print(f"citywalk world, bank capacity {capacity} chunks, step 10 and step {long_steps}")
    for batch in batches:
        envs = {
            name: WorldModelVectorEnv(
                batch,
                world="citywalk",
                model=model,
                memory=on,
                memory_capacity=capacity,
                dtype="float32",
            )
            for name, on in (("on", True), ("off", False))
        }
        rng = np.random.default_rng(0)
        plan = [rng.integers(0, 5, size=(batch, 2)) for _ in range(long_steps + 1)]
        snaps: dict[str, dict[int, dict]] = {"on": {}, "off": {}}
        for name, env in envs.items():
            env.reset(seed=0)
            for step in range(long_steps):
                if step in (10, long_steps - 1):
                    snaps[name][step] = env.get_state()
                env.step(plan[step])
        row: dict[str, float] = {}
        for step in (10, long_steps - 1):
            timers = {
                k: partial(_timed_step, envs[k], snaps[k][step], plan[step]) for k in ("on", "off")
            }
            med = interleaved(timers, repeats)
            tag = "10" if step == 10 else "long"
            row[f"on_ms_at_{tag}"], row[f"off_ms_at_{tag}"] = 1e3 * med["on"], 1e3 * med["off"]
            row[f"on_over_off_at_{tag}"] = med["on"] / med["off"]
        row["on_long_over_10"] = row["on_ms_at_long"] / row["on_ms_at_10"]
        bank = envs["on"]._engine.memory
        row["bank_entries"] = int((bank.uid >= 0).sum(1).max())
        results[f"batch_{batch}"] = row
        print(
            f"  batch {batch:>3}: step 10 {row['on_ms_at_10']:.1f} ms with memory vs "
            f"{row['off_ms_at_10']:.1f} ms without -> {row['on_over_off_at_10']:.2f}x; step "
            f"{long_steps} {row['on_ms_at_long']:.1f} vs {row['off_ms_at_long']:.1f} ms -> "
            f"{row['on_over_off_at_long']:.2f}x (target <= 1.3); with memory, step {long_steps} "
            f"/ step 10 = {row['on_long_over_10']:.2f} (flat is about 1; the bank holds "
            f"{row['bank_entries']} chunks)"
        )
        for env in envs.values():
            env.close()
    return results


def _timed_step(env: WorldModelVectorEnv, state: dict, action: np.ndarray) -> float:
    """Seconds of one step from ``state`` (restored first, untimed)."""
    env.set_state(state)
    start = time.perf_counter()
    env.step(action)
    return time.perf_counter() - start
