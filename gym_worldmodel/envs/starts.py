"""How rows of the vector env start an episode, at a reset or an autoreset alike.

A start is planned, then begun. :meth:`RowStartsMixin._plan_start` asks ``start_fn`` and
picks start frames, seeds and poses without changing anything, so that a next-step autoreset
plans its rows before the model steps and a ``start_fn`` that raises leaves the env as it was;
:meth:`RowStartsMixin._begin_rows` starts the rows in the engine and takes the plan's
generators.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from gymnasium.vector import VectorEnv

from gym_worldmodel.envs.actions import ActionHead
from gym_worldmodel.envs.engine import Engine
from gym_worldmodel.envs.options import (
    first_chunk,
    host_options,
    initial_conditions,
    rng_from_state,
    start_options,
)
from gym_worldmodel.envs.worlds import World, start_frames
from gym_worldmodel.models import WorldModelConfig


@dataclasses.dataclass
class _StartPlan:
    """How rows start: their NumPy generators after the draws, start chunks, poses, seeds."""

    rngs: list[np.random.Generator]
    frames: np.ndarray
    poses: np.ndarray | None
    torch_seeds: list[int]


class RowStartsMixin(VectorEnv):
    """The start of rows' episodes in ``WorldModelVectorEnv``, whose ``__init__`` sets these."""

    head: ActionHead
    world: World
    config: WorldModelConfig
    checkpoint_dir: Path | None
    start_fn: Any  # the env's start_fn (a checked hook)
    device: torch.device
    _decode: slice  # the frames of a chunk the rows keep
    _build_engine: Callable[[], None]
    _engine: Engine | None
    _rngs: list[np.random.Generator | None]
    _frames: torch.Tensor | None
    _latents: torch.Tensor | None
    _steps: np.ndarray
    _done: np.ndarray
    _pose: np.ndarray | None

    def check_reset_options(self, options: Mapping[str, Any], n: int) -> None:
        """Raise as ``reset(options=options)`` of ``n`` rows would, without resetting any.

        For adapters that reset groups of rows with their own options (SB3's per-row options):
        every group is checked before any row is reset.
        """
        self._start_options(host_options(options), n)

    def _start_options(self, options: dict, n: int, also: tuple[str, ...] = ()):
        """Options that start ``n`` rows: ``(user start chunks or None, pose column -> values)``."""
        max_speed = self.head.max_speed  # the driving head's
        return start_options(options, n, self.config, self.world.pose, max_speed, also)

    def _start_rows(
        self,
        rows: np.ndarray,
        seeds: list[int | None],
        frames: np.ndarray | None,
        start: dict[int, np.ndarray] | None = None,
    ) -> None:
        """Reseed, pick start frames and start ``rows`` in the engine.

        ``start``: pose column -> the rows' values there (driving: speed and heading); the
        other columns start at the world's start pose.
        """
        self._begin_rows(rows, self._plan_start(rows, seeds, frames, start))

    def _plan_start(
        self,
        rows: np.ndarray,
        seeds: list[int | None],
        frames: np.ndarray | None,
        start: dict[int, np.ndarray] | None = None,
    ) -> _StartPlan:
        """What starting ``rows`` takes (start_fn asked, frames picked), nothing changed yet.

        Made before a step whose rows reset next, so that a ``start_fn`` that raises or returns
        options that do not fit raises before the model steps.
        """
        self._build_engine()
        # The rows' generators change only once the engine has started them: a failed start
        # leaves them (and the rows) as they were.
        rngs = []
        for k, row in enumerate(rows):
            rng = self._rngs[row]
            if seeds[k] is not None or rng is None:
                rngs.append(np.random.default_rng(seeds[k]))
            else:
                rngs.append(rng_from_state(rng.bit_generator.state))
        if self.start_fn is not None:
            frames, start = initial_conditions(
                self.start_fn, rngs, self._start_options, frames, start or {}
            )
        size = self.config.vae.image_size
        bundled = start_frames(self.world, size, self.checkpoint_dir) if frames is None else None
        torch_seeds, chunks = [], []
        for rng in rngs:
            if bundled is not None:
                chunks.append(first_chunk(bundled[rng.integers(len(bundled))][None], self.config))
            torch_seeds.append(int(rng.integers(2**63 - 1)))
        frames = np.stack(chunks) if frames is None else frames
        poses = None
        if self._pose is not None:
            poses = np.tile(np.asarray(self.world.start_pose, np.float64), (len(rows), 1))
            for column, values in (start or {}).items():
                poses[:, column] = values
        return _StartPlan(rngs, frames, poses, torch_seeds)

    def _begin_rows(self, rows: np.ndarray, plan: _StartPlan) -> None:
        """Start ``rows`` in the engine as ``plan`` says, then take its generators."""
        assert self._engine is not None  # built by _plan_start
        frames_t = torch.from_numpy(np.ascontiguousarray(plan.frames)).to(self.device)
        latents, frames_t = self._engine.start(
            rows.tolist(), frames_t, poses=plan.poses, seeds=plan.torch_seeds
        )
        frames_t = frames_t[:, self._decode]
        for row, rng in zip(rows, plan.rngs, strict=True):
            self._rngs[row] = rng
        if self._frames is None:
            self._frames, self._latents = frames_t.clone(), latents.clone()
        else:
            assert self._latents is not None  # set with the frames
            self._frames[rows], self._latents[rows] = frames_t, latents
        self._steps[rows], self._done[rows] = 0, False
        if self._pose is not None:
            self._pose[rows] = plan.poses
