"""Noise schedule, per-row generators, the few-step sampler and the chunk rollouts."""

from gym_worldmodel.sampling.noise import RowGenerators
from gym_worldmodel.sampling.rollout import ChunkRollout, RecomputeRollout
from gym_worldmodel.sampling.sampler import FewStepSampler
from gym_worldmodel.sampling.schedule import FlowMatchSchedule

__all__ = [
    "ChunkRollout",
    "FewStepSampler",
    "FlowMatchSchedule",
    "RecomputeRollout",
    "RowGenerators",
]
