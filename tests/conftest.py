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
