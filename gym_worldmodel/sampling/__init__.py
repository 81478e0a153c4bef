"""Noise schedule, per-row generators and the chunk rollout loop."""

from gym_worldmodel.sampling.noise import RowGenerators
from gym_worldmodel.sampling.rollout import ChunkRollout
from gym_worldmodel.sampling.schedule import FlowMatchSchedule

__all__ = ["ChunkRollout", "FlowMatchSchedule", "RowGenerators"]
