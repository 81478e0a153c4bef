"""Shared fixtures: tiny models whose zero-initialised layers are randomised.

A freshly built DiT is the identity at its adaLN-Zero gates and outputs zero, which would make
equivalence tests pass trivially; :func:`randomize` gives every parameter a nonzero value.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from gym_worldmodel.models import WorldModel, WorldModelConfig


def randomize(module: torch.nn.Module, seed: int = 0, std: float = 0.2) -> torch.nn.Module:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * std)
    return module


@pytest.fixture(autouse=True, scope="session")
def own_folders(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """SB3's logger folder and the project's user cache, in pytest's temp dir, for every test.

    SB3's ``learn()`` makes its logger's folder, empty when it logs nothing, in the system temp
    dir (``SB3-<date>``) unless ``SB3_LOGDIR`` names one: the suite left one per ``learn()``.
    ``eval`` keeps its probes in the user's cache (``files.user_cache_dir``): the suite's runs
    neither fill nor read the user's own. Subprocesses the tests start inherit both.
    """
    folder = tmp_path_factory.mktemp("own")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SB3_LOGDIR", str(folder / "sb3-logs"))
        patch.setenv("GYM_WORLDMODEL_CACHE", str(folder / "cache"))
        yield folder


@pytest.fixture
def tiny_config() -> WorldModelConfig:
    return WorldModelConfig.tiny()


@pytest.fixture
def tiny_model(tiny_config: WorldModelConfig) -> WorldModel:
    return randomize(WorldModel(tiny_config).eval())


@pytest.fixture
def moving_model(tiny_model: WorldModel) -> WorldModel:
    """The tiny model with moving anchors (``anchor_motion``) for every modality."""
    gen = torch.Generator().manual_seed(5)
    rates = {
        name: torch.randn(width, 3, generator=gen) * torch.tensor([1.0, 1.0, 0.05])
        for name, width in tiny_model.config.dit.modalities.items()
    }
    return tiny_model.with_anchor_motion(rates).eval()


@pytest.fixture
def flowing_model(tiny_model: WorldModel) -> WorldModel:
    """The tiny model with flow-warped anchors (``anchor_flow``) for every modality.

    Its flow net is random and small (flows of about a pixel), so anchors really move.
    """
    model = tiny_model.with_anchor_flow(tuple(tiny_model.config.dit.modalities)).eval()
    randomize(model.flow, seed=6, std=0.05)
    return model


def kept_anchors(chunks: list[torch.Tensor], keep: list[int]) -> torch.Tensor:
    """Anchors ``(B, len(keep) + 1, C, h, w)`` of a sequence of the kept chunks of an episode
    ``chunks`` (each ``(B, F, C, h, w)``) followed by the chunk after the last one: each kept
    chunk's anchor is the last frame of the episode chunk before it (zeros for chunk 0)."""
    zero = torch.zeros_like(chunks[0][:, -1])
    return torch.stack([zero] + [chunks[i - 1][:, -1] for i in keep[1:]] + [chunks[-1][:, -1]], 1)


def self_forcing_case(modality: list[int], n_chunks: int = 4, seed: int = 0):
    """A random tiny world and windows for ``self_forcing_loss``: ``(model, sampler, latents,
    actions, modality)``, one row per entry of ``modality``, sampling at one step."""
    import dataclasses

    config = WorldModelConfig.tiny()
    dit = config.dit
    gen = torch.Generator().manual_seed(seed)
    b, t = len(modality), n_chunks * dit.chunk_frames
    shape = (dit.latent_channels, dit.latent_size, dit.latent_size)
    return (
        randomize(WorldModel(config)),
        dataclasses.replace(config.sampler, nfe=1),
        torch.randn(b, t, *shape, generator=gen),
        torch.randn(b, t, dit.action_dim, generator=gen),
        torch.tensor(modality),
    )
