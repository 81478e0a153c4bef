"""An env's settings as its constructor resolves them: precision, render mode, model, memory.

Each function checks one group of :class:`~gym_worldmodel.envs.WorldModelVectorEnv`'s
arguments and returns what the env keeps, so that a bad argument is refused before anything
is built (the weights load only at the first reset).
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

import torch

from gym_worldmodel.envs.options import check_choice, check_count, check_switch
from gym_worldmodel.envs.worlds import World, model_source
from gym_worldmodel.models import DTYPES, WorldModel, WorldModelConfig, native_bf16


def resolve_dtype(dtype: str | torch.dtype, device: torch.device) -> torch.dtype:
    """``"auto"``: bfloat16 autocast where ``device`` computes it natively, else float32."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype == "auto":
        return torch.bfloat16 if native_bf16(device) else torch.float32
    return DTYPES[dtype]


def check_render_mode(render_mode: Any) -> None:
    """An env renders ``"human"`` (a window), ``"rgb_array"`` or nothing; other modes refused."""
    if render_mode == "rgb_array_list":  # Gymnasium's RenderCollection wrapper gives it
        raise ValueError(
            "render_mode 'rgb_array_list': this env renders 'rgb_array' (one frame a call) or "
            "'human'; keep render()'s frames, or make_vec with vectorization_mode='sync', whose "
            "single envs gym.make wraps for 'rgb_array_list'"
        )
    check_choice("render_mode", render_mode, (None, "human", "rgb_array"))


def resolve_model(
    world: World,
    model: WorldModel | str | os.PathLike | None,
    engine: Any,
    nfe: int | None,
    memory_guidance: float | None = None,
) -> tuple[WorldModelConfig, Path | None, Any]:
    """The config an env runs (sampler settings set in it), its folder, and the model to load.

    ``nfe`` and ``memory_guidance`` (None: the checkpoint's own) replace the sampler's.

    Only the config is read now. A checkpoint named by a path loads later from where its
    config was read now (the absolute folder: a relative path is not looked up again from
    another working directory). A prebuilt ``engine`` (a fork's) brings its model's config.
    """
    config, checkpoint_dir = (
        (engine.config, None) if engine is not None else model_source(world, model)
    )
    if isinstance(model, (str, os.PathLike)) and checkpoint_dir is not None:
        model = checkpoint_dir = checkpoint_dir.absolute()
    changes: dict[str, Any] = {}
    if nfe is not None:
        check_count("nfe", nfe, "denoiser passes a step; None: the checkpoint's")
        changes["nfe"] = int(nfe)
    if memory_guidance is not None:  # (SamplerConfig checks it)
        changes["memory_guidance"] = memory_guidance
    if changes:
        sampler = dataclasses.replace(config.sampler, **changes)  # (which checks them, always)
        if engine is None:  # a prebuilt engine has its model's own
            config = dataclasses.replace(config, sampler=sampler)
    return config, checkpoint_dir, model


def memory_switch(
    world: World, config: WorldModelConfig, memory: bool | None, shared: bool, capacity: int
) -> bool:
    """Whether an env runs spatial memory, checked.

    None: where the world has a pose and the model has memory slots.
    """
    check_switch("memory", memory, optional=True)
    check_switch("memory_shared", shared)
    has_slots = config.dit.memory_chunks > 0
    on = world.pose is not None and has_slots if memory is None else bool(memory)
    if on and not has_slots:
        raise ValueError("memory=True needs a model with memory slots (memory_chunks >= 1)")
    check_count("memory_capacity", capacity, "chunks")
    return on
