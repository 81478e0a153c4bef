"""The worlds the commands name, and the checkpoints ``--model`` and ``train --init`` name.

``--model`` names one per world (``eval``, ``rollout``); ``shipped`` is each world's embedded one.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from gym_worldmodel.envs.registration import IDS, SIMULATOR_WORLD_IDS  # noqa: F401 (re-export)

SHIPPED = "shipped"  # --model: each world's embedded checkpoint (envs/worlds.py)
WORLD_IDS = {world: env_id for env_id, (world, _) in IDS.items()}  # world -> its env id


def init_checkpoint(value: str) -> str:
    """``train --init``: a checkpoint as given, or ``shipped`` / ``WORLD=shipped`` resolved.

    ``shipped`` is the embedded shared world (the robot's, which the others continue from);
    ``WORLD=shipped`` that world's own embedded checkpoint (the city walk's, driving's). A
    folder of that name here is the folder.
    """
    from gym_worldmodel.envs.worlds import get_world, shipped_checkpoint
    from gym_worldmodel.files import WORLDS_DIR

    world, sep, rest = value.partition("=")
    if Path(value).exists():  # a folder of that name, as --model reads one
        return value
    if value == SHIPPED:
        return str(WORLDS_DIR / "shared")
    if sep and rest == SHIPPED:
        if world not in WORLD_IDS:
            raise argparse.ArgumentTypeError(
                f"{value}: no world {world!r} (these are {sorted(WORLD_IDS)})"
            )
        return str(shipped_checkpoint(get_world(world)))
    return value


def per_world(
    values: Sequence[str] | None,
    option: str,
    device: str = "cpu",
    worlds: Iterable[str] = (),
) -> Callable[[str], Any]:
    """``--model A robot=B`` -> a function ``world -> WorldModel`` (B for the robot, else A).

    ``shipped`` (for every world or as ``WORLD=shipped``) is each world's embedded checkpoint.
    ``WORLD`` may also be one of ``worlds`` (the worlds of eval's datasets, ``myrobot=DIR``).
    Each checkpoint loads once, when a world first asks for it.
    """
    import functools

    from gym_worldmodel import hub
    from gym_worldmodel.envs.worlds import get_world, shipped_checkpoint

    paths: dict[str | None, str] = {}
    named = set(worlds)
    for value in values or ():
        world, sep, path = value.partition("=")
        if sep and (world in WORLD_IDS or world in named):
            paths[world] = path
        elif sep and "/" not in world and not Path(value).exists():  # a path may hold '='
            raise SystemExit(
                f"{option} {value}: no world {world!r} (these are {sorted(set(WORLD_IDS) | named)})"
            )
        elif None in paths:
            raise SystemExit(f"{option}: more than one checkpoint for every world: {values}")
        else:
            paths[None] = value
    load = functools.cache(functools.partial(hub.from_pretrained, device=device))

    def resolve(world: str) -> Any:
        if world not in paths and None not in paths:
            raise SystemExit(f"{option}: no checkpoint for the {world} world (WORLD=DIR or DIR)")
        path = paths.get(world, paths.get(None))
        if path == SHIPPED:
            path = str(shipped_checkpoint(get_world(world)))
        return load(path)

    return resolve
