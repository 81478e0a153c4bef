"""Registered ids. Importing ``gym_worldmodel`` registers them; entry points load lazily."""

from __future__ import annotations

from typing import Any

import gymnasium as gym

#: id -> (world, default max_episode_steps)
IDS = {
    "WorldModel-CityWalk-v0": ("citywalk", 200),
    "WorldModel-Robot-v0": ("robot", 100),
    "WorldModel-Driving-v0": ("driving", 200),
}
#: The simulators the worlds were trained on, behind the same interface (the ``simulators``
#: extra): id -> (world, default max_episode_steps), as the world's id.
SIMULATOR_IDS = {
    "Simulator-CityWalk-v0": ("citywalk", 200),
    "Simulator-Robot-v0": ("robot", 100),
    "Simulator-Driving-v0": ("driving", 200),
}


class VectorEntryPoint:
    """A world id's ``vector_entry_point``: its :class:`WorldModelVectorEnv`, with the id's limit.

    ``gym.make`` and ``make_vec``'s sync and async modes read ``max_episode_steps=None`` as the
    id's registered limit (``-1``: none); ``make_vec`` hands a vector entry point the None as
    given, which the vector env reads as no limit. This reads it as the others do, so a
    ``max_episode_steps=None`` (a script's default) truncates at the same step in every mode.
    An id registered with one is a world's.
    """

    def __init__(self, max_episode_steps: int) -> None:
        self.max_episode_steps = max_episode_steps

    def __call__(
        self, num_envs: int = 1, max_episode_steps: int | None = None, **kwargs: Any
    ) -> Any:
        """``WorldModelVectorEnv(num_envs, ...)``; ``max_episode_steps`` None: the id's."""
        from gym_worldmodel.envs.vector_env import WorldModelVectorEnv  # loaded when made

        limit = self.max_episode_steps if max_episode_steps is None else max_episode_steps
        return WorldModelVectorEnv(num_envs, max_episode_steps=limit, **kwargs)

    def __repr__(self) -> str:
        return f"VectorEntryPoint(WorldModelVectorEnv, max_episode_steps={self.max_episode_steps})"


#: world -> the id of the simulator it was trained on
SIMULATOR_WORLD_IDS = {world: env_id for env_id, (world, _) in SIMULATOR_IDS.items()}


def register_envs() -> None:
    """Register every id (idempotent).

    Every id registers with ``disable_env_checker=True``: the envs check their own inputs (and
    pass ``gymnasium.utils.env_checker.check_env`` in the tests), and Gymnasium's
    ``PassiveEnvChecker`` breaks every later step of an env whose first ``reset`` raised (a
    refused start picture), as its step compares with a reset it never recorded.
    ``gym.make(id, disable_env_checker=False)`` still adds it.
    """
    for env_id, (world, max_steps) in IDS.items():
        if env_id not in gym.registry:
            gym.register(
                id=env_id,
                entry_point="gym_worldmodel.envs.single_env:WorldModelEnv",
                vector_entry_point=VectorEntryPoint(max_steps),
                max_episode_steps=max_steps,
                disable_env_checker=True,
                kwargs={"world": world},
            )
    for env_id, (world, max_steps) in SIMULATOR_IDS.items():
        if env_id not in gym.registry:
            gym.register(
                id=env_id,
                entry_point="gym_worldmodel.sources.simulator_env:SimulatorEnv",
                max_episode_steps=max_steps,
                disable_env_checker=True,
                kwargs={"world": world},
            )
