"""Gymnasium environments over the world model: single, native vector, hooks, plans, worlds.

Names load on first use, so ``import gym_worldmodel`` (which registers the ids) stays cheap.
"""

from __future__ import annotations

import importlib
import os
import sys
from typing import Any

_EXPORTS = {
    "ActionCost": "hooks",
    "GoalImageSimilarity": "hooks",
    "Imagined": "planning",
    "LaneCentre": "hooks",
    "PoseDistance": "hooks",
    "PoseReached": "hooks",
    "TorchEpisodeStatistics": "wrappers",
    "WorldModelEnv": "single_env",
    "WorldModelVectorEnv": "vector_env",
    "imagine": "planning",
}
__all__ = sorted(_EXPORTS)


def _one_torch_thread() -> None:
    """In a forked child: compute with one torch thread (torch itself is not imported here)."""
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(1)


# Torch's OpenMP thread pool does not survive a fork: a child forked after the parent computed
# with it (a world stepped, a policy ran) hangs at its first parallel operation, as Gymnasium's
# AsyncVectorEnv workers did. With one thread a child never enters the pool, and one thread per
# process is what such children should run with. Registered once, at import.
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_one_torch_thread)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
