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

#: The vector entry point of every world-model id (an id registered with it is a world's): a
#: string, so that a made env's spec serialises (``EnvSpec.to_json``), naming
#: :func:`make_vector_env`.
VECTOR_ENTRY_POINT = "gym_worldmodel.envs.registration:make_vector_env"
#: Entry points that make a world's vector env (the first: the ids' before 2026-12-07).
WORLD_VECTOR_ENTRY_POINTS = (
    "gym_worldmodel.envs.vector_env:WorldModelVectorEnv",
    VECTOR_ENTRY_POINT,
)


def make_vector_env(
    num_envs: int = 1,
    *,
    world: str = "citywalk",
    max_episode_steps: int | None = None,
    **kwargs: Any,
) -> Any:
    """A world id's vector env: ``WorldModelVectorEnv``, ``max_episode_steps=None`` the id's.

    ``gym.make`` and ``make_vec``'s sync and async modes read ``max_episode_steps=None`` as the
    id's registered limit (``-1``: none); ``make_vec`` hands a vector entry point the None as
    given, which the vector env reads as no limit. This reads it as the others do for the
    project's ids, so a ``max_episode_steps=None`` (a script's default) truncates at the same
    step in every mode. An entry point named by a string cannot see the spec it was made from:
    it takes the limit of the project's id of ``world``, so an id of your own registered with
    it and another limit passes ``max_episode_steps`` itself rather than None.
    """
    from gym_worldmodel.envs.vector_env import WorldModelVectorEnv  # loaded when made

    limits = {w: steps for w, steps in IDS.values()}
    limit = limits.get(world) if max_episode_steps is None else max_episode_steps
    return WorldModelVectorEnv(num_envs, world=world, max_episode_steps=limit, **kwargs)


def check_world_id(env_id: str) -> None:
    """Refuse an id whose vector env is not a world's, naming the world ids.

    For adapters that pass the vector env's keywords to ``make_vec``, which another env's
    constructor would refuse in its own words.
    """
    from gym_worldmodel.envs.vector_env import WorldModelVectorEnv  # loaded when checked

    vector = gym.spec(env_id).vector_entry_point
    if vector not in WORLD_VECTOR_ENTRY_POINTS and not (
        isinstance(vector, type) and issubclass(vector, WorldModelVectorEnv)
    ):
        raise ValueError(f"{env_id!r} is not a world-model env (e.g. {list(IDS)})")


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
                vector_entry_point=VECTOR_ENTRY_POINT,
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
