"""The latent action probe and the self-forcing term it scores predicted chunks with."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from conftest import randomize, self_forcing_case

from gym_worldmodel.models import WorldModelConfig
from gym_worldmodel.training.action_probe import LatentActionProbe, probe_windows_loss
from gym_worldmodel.training.self_forcing import SelfForcingConfig, self_forcing_loss
from gym_worldmodel.training.trainer import host_floats

CONFIG = WorldModelConfig.tiny()
DIT = CONFIG.dit


def pushed_latents(actions: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Latent frames that each action's first component pushes along one fixed pattern."""
    b, t, _ = actions.shape
    c, s = DIT.latent_channels, DIT.latent_size
    pattern = torch.randn(c, s, s, generator=torch.Generator().manual_seed(99))
    steps = actions[:, :, 0, None, None, None] * pattern
    return torch.randn(b, 1, c, s, s, generator=gen) + steps.cumsum(1)


def test_probe_learns_to_read_the_action_from_the_motion():
    gen = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    probe = LatentActionProbe(DIT)
    n, f = 4, DIT.chunk_frames
    stats = torch.zeros(500, 12)
    stats[:, 0] = torch.randn(500, generator=gen)
    probe.set_action_stats(0, stats)  # dimension 0 alone varies, and is scored
    opt = torch.optim.Adam(probe.parameters(), lr=1e-3)
    losses = []
    for _ in range(50):
        actions = torch.zeros(16, n * f, DIT.action_dim)
        actions[..., 0] = torch.randn(16, n * f, generator=gen)
        loss, parts = probe_windows_loss(
            probe, pushed_latents(actions, gen), actions, torch.zeros(16, dtype=torch.long), f, gen
        )
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(parts["action"])
    assert losses[0] > 0.5  # standardised: guessing the mean scores about 1
    assert sum(losses[-10:]) / 10 < 0.25 * losses[0]


def test_probe_loss_leaves_out_constant_dimensions_and_rows_it_is_told_to():
    probe = randomize(LatentActionProbe(DIT))
    acts = torch.randn(100, 12)
    acts[:, 3] = 0.5  # never varies: no signal to learn or to train a model with
    probe.set_action_stats(0, acts)
    assert probe.used[0, 3] == 0 and probe.used[0, :12].sum() == 11
    assert probe.used[0, 12:].sum() == 0  # beyond the camera's width
    gen = torch.Generator().manual_seed(1)
    f = DIT.chunk_frames
    prev = torch.randn(2, 1, DIT.latent_channels, DIT.latent_size, DIT.latent_size, generator=gen)
    chunk = torch.randn(2, f, *prev.shape[2:], generator=gen)
    actions = torch.randn(2, f, DIT.action_dim, generator=gen)
    modality = torch.zeros(2, dtype=torch.long)
    base = probe.loss(prev, chunk, actions, modality)
    other = actions.clone()
    other[..., 3] += 10.0
    other[..., 12] += 10.0
    assert probe.loss(prev, chunk, other, modality) == base
    rows = torch.tensor([True, False])
    other = actions.clone()
    other[1] += 10.0
    assert probe.loss(prev, chunk, other, modality, rows) == probe.loss(
        prev, chunk, actions, modality, rows
    )
    assert probe.loss(prev, chunk, actions, modality, torch.zeros(2, dtype=torch.bool)) == 0


def test_action_weight_scores_the_chunk_the_model_would_output():
    model, sampler, latents, actions, modality = self_forcing_case([0, 2])
    probe = randomize(LatentActionProbe(DIT)).requires_grad_(False)
    plain = SelfForcingConfig(max_chunks=2, action_dropout=0.0)
    weighted = dataclasses.replace(plain, action_weight=0.5)

    def run(cfg, probe=probe):
        g = torch.Generator().manual_seed(3)
        return self_forcing_loss(
            model.dit, sampler, latents, actions, modality, g, cfg, probe=probe
        )

    flow, parts = run(plain)
    total, weighted_parts = run(weighted)
    parts, weighted_parts = host_floats(parts), host_floats(weighted_parts)
    assert "action" not in parts and weighted_parts["flow"] == parts["flow"]
    assert total.item() == pytest.approx(parts["flow"] + 0.5 * weighted_parts["action"], rel=1e-5)
    total.backward()
    assert all(p.grad is not None for p in model.dit.parameters())
    assert all(p.grad is None for p in probe.parameters())
    with pytest.raises(ValueError, match="action probe"):
        run(weighted, probe=None)
    with pytest.raises(ValueError, match="action_weight"):
        SelfForcingConfig(action_weight=-1.0)
