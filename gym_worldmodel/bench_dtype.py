"""Precision benchmark: ``python -m gym_worldmodel.bench dtype --data data/citywalk ...``.

Whether bf16 autocast, the envs' default where the device computes it natively, keeps the
shipped worlds' quality: each world rolls its held-out starts open loop under the recorded actions
(as ``gym-worldmodel eval`` does, same starts and seeds) in float32 and in bf16, and the benchmark
prints the PSNR of both against the recorded frames, the PSNR of the bf16 frames against the
float32 ones (how far apart the two rollouts drift), and the time each took (the mean of two runs
in the order float32, bf16, bf16, float32, so neither gains from running second).
"""

from __future__ import annotations

import copy
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gym_worldmodel.envs.worlds import get_world, load_model
from gym_worldmodel.evaluation import open_loop_windows, pooled_psnr, rollout
from gym_worldmodel.models import DTYPES, native_bf16
from gym_worldmodel.sources.episodes import load_episodes, read_card


def _psnr_at(h: int, f: int, a: np.ndarray, b: np.ndarray) -> float:
    """Pooled PSNR of step ``h``'s ``f`` frames of two rollouts ``(R, steps * f, H, W, 3)``."""
    return pooled_psnr(a[:, (h - 1) * f : h * f], b[:, (h - 1) * f : h * f])


def dtype_benchmark(
    data_dirs: Sequence[Path], horizons: Sequence[int], model: str | None = None
) -> dict[str, Any]:
    """Measure and print; returns the figures per world."""
    print(f"native bf16 on this CPU: {native_bf16('cpu')} (the envs' dtype='auto' uses it if so)")
    results: dict[str, Any] = {}
    cards = [read_card(Path(data)) for data in data_dirs]  # every one read before any is run
    for data, card in zip(data_dirs, cards, strict=True):
        world = card["world"]
        wm = load_model(get_world(world), model)
        # bf16 runs as an env runs its own model: the layer weights held in bf16, not cast
        models = {"float32": wm, "bfloat16": copy.deepcopy(wm).for_autocast(torch.bfloat16)}
        f, steps = wm.config.dit.chunk_frames, max(horizons)
        held = load_episodes(Path(data), "heldout")
        windows = open_loop_windows(held, steps * f, 1, data)
        first, truth = windows.first, windows.truth
        frames: dict[str, np.ndarray] = {}
        times: dict[str, list[float]] = {name: [] for name in DTYPES}
        for name in ("float32", "bfloat16", "bfloat16", "float32"):  # ABBA: no order bias
            start = time.perf_counter()
            frames[name] = rollout(
                models[name],
                card["modality"],
                first,
                windows.actions,
                0,
                dtype=DTYPES[name],
                start_poses=windows.poses,
            )
            times[name].append(time.perf_counter() - start)
        seconds = {name: float(np.mean(t)) for name, t in times.items()}
        pairs = {name: (frames[name], truth) for name in DTYPES}
        pairs["bf16_vs_float32"] = (frames["bfloat16"], frames["float32"])
        row: dict[str, Any] = {
            name: {h: _psnr_at(h, f, *pair) for h in horizons} for name, pair in pairs.items()
        }
        row["seconds"] = seconds
        results[world] = row
        hs = " / ".join(map(str, horizons))
        print(f"{world}: {len(first)} held-out starts x {steps} steps, PSNR at h = {hs}")
        for name in (*DTYPES, "bf16_vs_float32"):
            cells = " / ".join(f"{row[name][h]:.2f}" for h in horizons)
            what = "bf16 frames against float32 frames" if name not in DTYPES else name
            extra = f"  ({seconds[name]:.1f} s)" if name in DTYPES else ""
            print(f"  {what:36s} {cells}{extra}")
        print(f"  bf16 speed-up {seconds['float32'] / seconds['bfloat16']:.2f}x")
    return results
