"""Shared fixtures: tiny models whose zero-initialised layers are randomised.

A freshly built DiT is the identity at its adaLN-Zero gates and outputs zero, which would make
equivalence tests pass trivially; :func:`randomize` gives every parameter a nonzero value.
"""

from __future__ import annotations

import pytest
import torch

from gym_worldmodel.models import WorldModel, WorldModelConfig


def randomize(module: torch.nn.Module, seed: int = 0, std: float = 0.2) -> torch.nn.Module:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * std)
    return module


@pytest.fixture
def tiny_config() -> WorldModelConfig:
    return WorldModelConfig.tiny()


@pytest.fixture
def tiny_model(tiny_config: WorldModelConfig) -> WorldModel:
    return randomize(WorldModel(tiny_config).eval())


def kept_anchors(chunks: list[torch.Tensor], keep: list[int]) -> torch.Tensor:
    """Anchors ``(B, len(keep) + 1, C, h, w)`` of a sequence of the kept chunks of an episode
    ``chunks`` (each ``(B, F, C, h, w)``) followed by the chunk after the last one: each kept
    chunk's anchor is the last frame of the episode chunk before it (zeros for chunk 0)."""
    zero = torch.zeros_like(chunks[0][:, -1])
    return torch.stack([zero] + [chunks[i - 1][:, -1] for i in keep[1:]] + [chunks[-1][:, -1]], 1)
