"""Gymnasium environments over the world model: single, native vector, hooks, worlds.

Names load on first use, so ``import gym_worldmodel`` (which registers the ids) stays cheap.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "ActionCost": "hooks",
    "GoalImageSimilarity": "hooks",
    "LaneCentre": "hooks",
    "PoseDistance": "hooks",
    "PoseReached": "hooks",
    "TorchEpisodeStatistics": "wrappers",
    "WorldModelEnv": "single_env",
    "WorldModelVectorEnv": "vector_env",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
