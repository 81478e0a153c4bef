"""Every env path on a CUDA device, in one short run: what fails, host syncs a step, timings.

CI has no GPU, so nothing else runs these paths; run this first on a machine that has one::

    python tests/device_check.py                 # the tiny random model: the paths, in a minute
    MODEL= python tests/device_check.py          # the shipped worlds: their timings too
    DEV=cpu python tests/device_check.py         # a dry run of the script itself

It prints one line per check, ``OK`` or ``FAIL`` with the error (a failure does not stop the
others), the host-device synchronisations one step makes (by file and line, from torch's sync
debug mode), the largest difference between the CPU and the device engine on the same noise,
and milliseconds a step at 1 and 64 rows. Then the CUDA tests of the suite:
``python -m pytest -q tests -k cuda``. (Written and dry-run on the CPU; not yet run on a GPU.)
"""

from __future__ import annotations

import os
import time
import traceback
import warnings
from collections.abc import Callable
from typing import Any

import gymnasium as gym
import numpy as np
import torch

import gym_worldmodel  # noqa: F401  (registers the ids)
from gym_worldmodel.envs import (
    ActionCost,
    GoalImageSimilarity,
    PoseDistance,
    TorchEpisodeStatistics,
    WorldModelVectorEnv,
)

DEV = os.environ.get("DEV", "cuda")
MODEL = os.environ.get("MODEL", "random-tiny") or None  # empty: the shipped worlds
CUDA = DEV.startswith("cuda")


def check(name: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
    """Run one check and print how it went; an exception is printed, not raised."""
    start = time.perf_counter()
    try:
        out = fn(*args, **kwargs)
        print(f"OK   {name} ({time.perf_counter() - start:.1f} s) {out or ''}", flush=True)
    except Exception as err:  # every check runs, whatever the others do
        print(f"FAIL {name}: {type(err).__name__}: {err}", flush=True)
        traceback.print_exc(limit=6)


def syncs(fn: Callable[[], Any]) -> dict[str, int]:
    """Host-device synchronisations ``fn`` makes, counted by file and line (empty off CUDA)."""
    if not CUDA:
        fn()
        return {}
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("warn")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            fn()
    finally:
        torch.cuda.set_sync_debug_mode(0)
    where: dict[str, int] = {}
    for w in caught:
        if "synchroniz" in str(w.message):
            key = f"{os.path.relpath(w.filename)}:{w.lineno}"
            where[key] = where.get(key, 0) + 1
    return where


def make(world: str, rows: int, **kwargs: Any) -> WorldModelVectorEnv:
    return WorldModelVectorEnv(rows, world=world, model=MODEL, device=DEV, **kwargs)


def rows_of(action: Any, n: int) -> Any:
    return {k: v[:n] for k, v in action.items()} if isinstance(action, dict) else action[:n]


def env_round(world: str, output: str, memory: bool | None, dtype: str = "auto") -> str:
    """Steps with hooks through an autoreset, render, state, fork and a partial reset."""
    hooks: list[Any] = [ActionCost()] + ([PoseDistance([1.0, 2.0])] if world != "robot" else [])
    env = make(
        world,
        4,
        output=output,
        memory=memory,
        reward_fn=hooks,
        dtype=dtype,
        max_episode_steps=3,
        render_mode="rgb_array",
    )
    env.reset(seed=0)
    env.action_space.seed(0)
    actions = [env.action_space.sample() for _ in range(5)]
    env.step(actions[0])
    where = syncs(lambda: env.step(actions[1]))
    for action in actions[2:]:  # past max_episode_steps: rows start over
        env.step(action)
    env.render()
    env.set_state(env.get_state())
    env.fork(0, 3, seeds=range(3)).step(rows_of(actions[0], 3))
    env.reset(options={"env_idx": [1]})
    return f"dtype={env.dtype} syncs a step: {sum(where.values())} {where}"


def shared_bank() -> str:
    env = make("driving", 8, memory_shared=True)
    env.reset(seed=0)
    env.step(env.action_space.sample())
    return "stepped"


def torch_statistics() -> str:
    env = TorchEpisodeStatistics(make("driving", 2, output="torch", max_episode_steps=2))
    env.reset(seed=0)
    episodes = sum("episode" in env.step(torch.zeros(2, 2, device=DEV))[-1] for _ in range(4))
    return f"episodes seen {episodes}"


def goal_image() -> str:
    goal = GoalImageSimilarity(np.zeros((64, 64, 3), np.uint8), pool=4)
    env = make("driving", 2, reward_fn=goal)
    env.reset(seed=0)
    return f"rewards {env.step(np.zeros((2, 2), np.float32))[1]}"


def single_env() -> str:
    env = gym.make("WorldModel-CityWalk-v0", model=MODEL, device=DEV)
    env.reset(seed=0)
    obs = env.step(env.action_space.sample())[0]
    env.unwrapped.set_state(env.unwrapped.get_state())
    return f"{type(obs).__name__} {obs.shape}"


def state_across_devices() -> str:
    device_env, cpu_env = make("driving", 1), WorldModelVectorEnv(1, world="driving", model=MODEL)
    device_env.reset(seed=0)
    cpu_env.reset(seed=0)
    try:
        cpu_env.set_state(device_env.get_state())
    except ValueError as err:
        return f"refused, as it should be: {str(err)[:80]}"
    return "loaded" + (" (a CUDA state should be refused)" if CUDA else "")


def same_noise() -> str:
    """CPU against device engine on identical noise, float32: the largest latent difference."""
    from gym_worldmodel.envs.engine import WorldEngine
    from gym_worldmodel.envs.worlds import get_world, load_model

    runs = []
    for device in ("cpu", DEV):
        model = load_model(get_world("driving"), MODEL)
        engine = WorldEngine(model, 2, "driving", device, torch.float32)
        gen = torch.Generator().manual_seed(0)

        def randn(shape: tuple, dtype: Any = torch.float32, gen=gen, device=device) -> Any:
            return torch.randn((2, *shape), generator=gen).to(device)

        engine.gens.randn = randn  # type: ignore[method-assign]
        f, size = model.config.dit.chunk_frames, model.config.vae.image_size
        frames = np.random.default_rng(0).integers(0, 256, (2, f, size, size, 3), dtype=np.uint8)
        engine.start([0, 1], torch.from_numpy(frames))
        latents = []
        for k in range(4):
            action = np.zeros((2, f, engine.action_dim), np.float32)
            action[..., :2] = 0.1 * k
            latents.append(engine.step(action)[0].cpu())
        runs.append(torch.stack(latents))
    return f"largest difference {float((runs[0] - runs[1]).abs().max()):.2e}"


def cupy_by_dlpack() -> str:
    import cupy

    env = make("driving", 2, output="torch")
    obs, _ = env.reset(seed=0)
    assert cupy.from_dlpack(obs).data.ptr == obs.data_ptr(), "CuPy copied the frames"
    return "no copy"


def ms_a_step(world: str, rows: int, output: str, memory: bool | None, steps: int = 20) -> str:
    env = make(world, rows, output=output, memory=memory)
    env.reset(seed=0)
    env.action_space.seed(0)
    actions = [env.action_space.sample() for _ in range(steps + 3)]
    for action in actions[:3]:
        env.step(action)
    if CUDA:
        torch.cuda.synchronize()
    start = time.perf_counter()
    for action in actions[3:]:
        env.step(action)
    if CUDA:
        torch.cuda.synchronize()
    return f"{1e3 * (time.perf_counter() - start) / steps:.1f} ms a step"


def main() -> None:
    print(f"torch {torch.__version__}, CUDA {torch.cuda.is_available()}, {DEV}, model {MODEL}")
    for world in ("citywalk", "driving", "robot"):
        for output in ("numpy", "torch"):
            memory = False if world == "robot" else None
            check(f"env {world} output={output}", env_round, world, output, memory)
    check("env robot memory=True (latent retrieval)", env_round, "robot", "numpy", True)
    check("env citywalk float32", env_round, "citywalk", "numpy", None, dtype="float32")
    check("env driving, 8 rows sharing a bank", shared_bank)
    check("TorchEpisodeStatistics", torch_statistics)
    check("GoalImageSimilarity", goal_image)
    check("gym.make single env", single_env)
    check("a device state into a CPU env", state_across_devices)
    check("CPU and device engine, same noise", same_noise)
    if CUDA:
        check("CuPy takes the frames by DLPack", cupy_by_dlpack)
    for world in ("citywalk", "driving"):
        for rows in (1, 64):
            for output, memory in (("numpy", None), ("torch", None), ("numpy", False)):
                name = f"time {world} rows={rows} output={output} memory={memory}"
                check(name, ms_a_step, world, rows, output, memory)


if __name__ == "__main__":
    main()
