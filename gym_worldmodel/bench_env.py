"""Env-layer benchmark: ``python -m gym_worldmodel.bench env``.

Steps per second and frames per second of the single env and the native vector env, and the env
layer's overhead over the raw engine: the time of each env step against the time its engine call
took within that same step (medians). By default it runs what ``gym.make`` gives a user: the
world's shipped weights at the env's default precision (``dtype="auto"``).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import torch

from gym_worldmodel.envs import WorldModelEnv, WorldModelVectorEnv
from gym_worldmodel.envs.worlds import get_world, load_model
from gym_worldmodel.models import WorldModel

if TYPE_CHECKING:
    from gym_worldmodel.sources.simulator_env import SimulatorEnv


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def env_benchmark(
    model: WorldModel | str | None,
    world: str,
    sizes: Sequence[int],
    repeats: int,
    dtype: str = "auto",
    nfe: int | None = None,
    device: str = "cpu",
) -> dict[str, Any]:
    """Measure and print; returns the figures.

    ``model``: anything the envs' ``model=`` takes (None: the world's shipped weights);
    ``nfe``: the envs' denoiser passes per step (None: the checkpoint's own); ``device``: the
    envs' (a step's NumPy observation waits for the device, so each time is a whole step).
    """
    loaded = load_model(get_world(world), model).to(device)  # once: every env below shares it
    frames = loaded.config.dit.chunk_frames
    single = WorldModelEnv(world=world, model=loaded, dtype=dtype, nfe=nfe, device=device)
    if loaded is not model:  # loaded here, as gym.make's env loads its own: weights in its dtype
        loaded.for_autocast(single.dtype)
    model = loaded
    results: dict[str, Any] = {"world": world, "dtype": str(single.dtype).removeprefix("torch.")}
    results["device"] = str(single.vector.device)
    single.reset(seed=0)
    single.action_space.seed(0)
    action = single.action_space.sample()
    row = _measure(lambda: single.step(action), single.vector._engine, repeats, 1, frames)
    results["single"] = row
    results["nfe"] = single.vector.config.sampler.nfe
    print(
        f"world {world}, {frames} frames per step, nfe {results['nfe']}, {results['dtype']}, "
        f"{results['device']}"
    )
    _print("single env", row)
    for n in sizes:
        env = WorldModelVectorEnv(n, world=world, model=model, dtype=dtype, nfe=nfe, device=device)
        env.reset(seed=0)
        env.action_space.seed(0)
        actions = env.action_space.sample()
        row = _measure(lambda env=env, a=actions: env.step(a), env._engine, repeats, n, frames)
        results[f"vector_{n}"] = row
        _print(f"vector env x{n}", row)
        env.close()
    single.close()
    return results


def simulator_benchmark(world: str, repeats: int) -> dict[str, Any]:
    """Env-steps/s of the world's simulator behind its interface (``Simulator-*`` ids).

    One env, and one per CPU core stepping in processes (``AsyncVectorEnv``). Medians after 2
    warm-up steps; nothing is measured where the simulator is not installed (a line says why).
    """
    import os

    import gymnasium as gym

    from gym_worldmodel.envs.registration import SIMULATOR_WORLD_IDS

    env_id, procs = SIMULATOR_WORLD_IDS[world], os.cpu_count() or 1
    out: dict[str, dict[str, float]] = {}
    try:
        single = gym.make(env_id, max_episode_steps=-1)
    except ImportError as err:
        print(f"  simulator: not measured ({err})")
        return out
    envs: dict[str, tuple[gym.Env | gym.vector.VectorEnv, int]] = {
        "single": (single, 1),
        f"async_{procs}": (
            gym.make_vec(env_id, procs, vectorization_mode="async", max_episode_steps=-1),
            procs,
        ),
    }
    frames = cast("SimulatorEnv", single.unwrapped).frames_per_step
    for name, (env, rows) in envs.items():
        env.reset(seed=0)
        env.action_space.seed(0)
        action = env.action_space.sample()
        for _ in range(2):
            env.step(action)
        seconds = float(
            np.median([_timed(lambda e=env, a=action: e.step(a)) for _ in range(repeats)])
        )
        out[name] = {"steps_per_s": rows / seconds, "frames_per_s": rows * frames / seconds}
        rate = out[name]
        print(
            f"  {env_id} {'x' + str(rows) if rows > 1 else 'single':<7} "
            f"{rate['steps_per_s']:7.2f} env-steps/s  {rate['frames_per_s']:7.1f} frames/s"
        )
        env.close()
    return out


def _measure(env_step, engine, repeats: int, rows: int, frames: int) -> dict[str, float]:
    """Median env step time and the engine's share of each same call (two warm-up steps).

    Timing the engine inside the env step (not in separate calls) makes the overhead immune to
    the machine's drift between calls.
    """
    inner: list[float] = []
    raw_step = engine.step

    cuda = engine.device.type == "cuda"

    def timed_engine_step(vec, **kwargs):
        start = time.perf_counter()
        out = raw_step(vec, **kwargs)
        if cuda:  # the engine's work, not its launch: the env waits for it when it converts
            torch.cuda.synchronize(engine.device)
        inner.append(time.perf_counter() - start)
        return out

    engine.step = timed_engine_step
    try:
        for _ in range(2):
            env_step()
        inner.clear()
        outer = [_timed(env_step) for _ in range(repeats)]
    finally:
        del engine.step  # back to the class method
    ratios = np.asarray(outer) / np.asarray(inner)
    env_s = float(np.median(outer))
    return {
        "steps_per_s": rows / env_s,
        "frames_per_s": rows * frames / env_s,
        "overhead": float(np.median(ratios)) - 1.0,
    }


def _print(name: str, row: dict[str, float]) -> None:
    print(
        f"  {name:<15} {row['steps_per_s']:7.2f} env-steps/s  {row['frames_per_s']:7.1f} "
        f"frames/s  env overhead over the raw engine {100 * row['overhead']:+.1f}% "
        "(target <= 10%)"
    )


def state_benchmark(
    model: WorldModel | str | None,
    world: str,
    rows: int,
    forks: Sequence[int],
    repeats: int,
    dtype: str = "auto",
) -> dict[str, Any]:
    """What a planner pays to branch: state copies, their size, forks and a step of the forks.

    On an env of ``rows`` rows a few steps in (memory as the world's default): ``get_state`` of
    every row, ``set_state`` of it back (every check included), its pickled size a row; then
    ``fork(0, n)`` for each ``n`` of ``forks`` and one step of those ``n`` futures, next to a
    step of the env itself. Medians of ``repeats`` after a warm-up call.
    """
    import pickle

    from gym_worldmodel.bench import median_seconds

    loaded = load_model(get_world(world), model)
    env = WorldModelVectorEnv(rows, world=world, model=loaded, dtype=dtype)
    if loaded is not model:  # as gym.make's env loads its own: weights in its dtype
        loaded.for_autocast(env.dtype)
    env.reset(seed=0)
    env.action_space.seed(0)
    for _ in range(3):
        env.step(env.action_space.sample())
    state = env.get_state()
    size = len(pickle.dumps(state)) / rows / 2**20
    results: dict[str, Any] = {
        "world": world,
        "rows": rows,
        "memory": env.memory,
        "state_mb_per_row": size,
        "get_state_ms": 1e3 * median_seconds(env.get_state, repeats),
        "set_state_ms": 1e3 * median_seconds(lambda: env.set_state(state), repeats),
        "step_ms": 1e3 * median_seconds(lambda: env.step(env.idle_action()), repeats),
    }
    print(
        f"world {world}, {rows} rows, memory {'on' if env.memory else 'off'}, "
        f"{str(env.dtype).removeprefix('torch.')}: a state is {size:.2f} MB a row (pickled); "
        f"get_state {results['get_state_ms']:.1f} ms, set_state {results['set_state_ms']:.1f} "
        f"ms, a step {results['step_ms']:.1f} ms"
    )
    for n in forks:
        times, futures = [], env.fork(0, n)  # a warm-up fork
        for _ in range(repeats):  # each timed fork closed before the next (its cache is big)
            futures.close()
            start = time.perf_counter()
            futures = env.fork(0, n)
            times.append(time.perf_counter() - start)
        fork_ms = 1e3 * statistics.median(times)

        def step(futures: WorldModelVectorEnv = futures) -> None:
            futures.step(futures.idle_action())

        step_ms = 1e3 * median_seconds(step, repeats)
        results[f"fork_{n}"] = {"fork_ms": fork_ms, "step_ms": step_ms}
        print(f"  fork(0, {n}): {fork_ms:.1f} ms; a step of its {n} futures {step_ms:.1f} ms")
        futures.close()
    env.close()
    return results


def sync_benchmark(model: str | None, rows: int, steps: int) -> dict[str, Any]:
    """Host-device synchronisations a step makes on a CUDA device, per world and output.

    Counted with ``torch.cuda.set_sync_debug_mode("warn")`` over ``steps`` steps after three
    warm-up steps, with a reward hook of each kind the world takes (one that reads the pose
    where it has one). Each sync stalls the host until the GPU's queued work is done; the
    figure is the baseline for removing those a step does not need (docs/benchmarks.md).
    """
    import warnings

    import torch

    from gym_worldmodel.envs import ActionCost, PoseDistance

    if not torch.cuda.is_available():
        raise SystemExit("bench sync counts CUDA synchronisations: it needs a CUDA device")
    results: dict[str, Any] = {}
    for world in ("citywalk", "driving", "robot"):
        for output in ("numpy", "torch"):
            hooks: list = [ActionCost()] + ([PoseDistance([1.0, 2.0])] if world != "robot" else [])
            env = WorldModelVectorEnv(
                rows, world=world, model=model, device="cuda", output=output, reward_fn=hooks
            )
            env.reset(seed=0)
            env.action_space.seed(0)
            actions = [env.action_space.sample() for _ in range(steps + 3)]
            for action in actions[:3]:
                env.step(action)
            torch.cuda.synchronize()
            torch.cuda.set_sync_debug_mode("warn")
            try:
                with warnings.catch_warnings(record=True) as caught:
                    warnings.simplefilter("always")
                    for action in actions[3:]:
                        env.step(action)
            finally:
                torch.cuda.set_sync_debug_mode(0)
            syncs = [w for w in caught if "synchroniz" in str(w.message)]  # not other warnings
            per_step = len(syncs) / steps
            results[f"{world}_{output}"] = per_step
            print(f"{world}, output={output}, {rows} rows: {per_step:.1f} syncs a step")
            env.close()
    return results
