"""The chunk critic and the adversarial term of self-forcing."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F
from conftest import randomize, self_forcing_case

from gym_worldmodel.models import WorldModelConfig
from gym_worldmodel.training.critic import ChunkCritic, adversarial_losses
from gym_worldmodel.training.self_forcing import SelfForcingConfig, self_forcing_loss
from gym_worldmodel.training.trainer import host_floats

CONFIG = WorldModelConfig.tiny()
DIT = CONFIG.dit
SHAPE = (DIT.chunk_frames, DIT.latent_channels, DIT.latent_size, DIT.latent_size)


def chunks(b: int, gen: torch.Generator, blurred: bool = False) -> torch.Tensor:
    """Unit-std noise chunks, or the same kind of chunk averaged over 3x3 pixels (a blur)."""
    x = torch.randn(b, *SHAPE, generator=gen)
    if blurred:
        x = F.avg_pool2d(x.flatten(0, 1), 3, 1, 1).view_as(x)
    return x


def test_critic_learns_to_tell_recorded_chunks_from_blurred_ones():
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    critic = ChunkCritic(DIT, width=16)
    opt = torch.optim.Adam(critic.parameters(), lr=2e-3)
    b = 16
    actions = torch.randn(b, DIT.chunk_frames, DIT.action_dim, generator=gen)
    modality, rows = torch.zeros(b, dtype=torch.long), torch.ones(b, dtype=torch.bool)
    first = None
    for _ in range(40):
        real, fake = chunks(b, gen), chunks(b, gen, blurred=True)
        _, judge = adversarial_losses(critic, real, fake, actions, modality, rows, rows)
        first = judge.item() if first is None else first
        opt.zero_grad()
        judge.backward()
        opt.step()
    real, fake = chunks(64, gen), chunks(64, gen, blurred=True)
    acts = torch.randn(64, DIT.chunk_frames, DIT.action_dim, generator=gen)
    on = torch.ones(64, dtype=torch.bool)
    with torch.no_grad():
        said_real = critic(real, acts, torch.zeros(64, dtype=torch.long), on) > 0
        said_fake = critic(fake, acts, torch.zeros(64, dtype=torch.long), on) <= 0
    assert first > 1.2  # 2 log 2 = 1.39 for a critic that cannot tell
    assert (said_real.float().mean() + said_fake.float().mean()) / 2 > 0.9


def test_each_term_moves_only_its_side():
    gen = torch.Generator().manual_seed(1)
    critic = randomize(ChunkCritic(DIT, width=16))
    real = chunks(3, gen)
    fake = chunks(3, gen).requires_grad_(True)
    actions = torch.randn(3, DIT.chunk_frames, DIT.action_dim, generator=gen)
    modality = torch.tensor([0, 1, 2])
    acted = torch.tensor([True, False, True])
    rows = torch.tensor([True, True, False])
    fool, judge = adversarial_losses(critic, real, fake, actions, modality, acted, rows)
    fool.backward(retain_graph=True)
    assert all(p.grad is None for p in critic.parameters())
    assert fake.grad[:2].abs().sum() > 0 and fake.grad[2].abs().sum() == 0  # row 2 is left out
    fake.grad = None
    judge.backward()
    assert fake.grad is None
    assert all(p.grad is not None for p in critic.parameters())
    # a row left out does not change either term, and with no row left both are zero
    other = fake.detach().clone()
    other[2] += 5.0
    again = adversarial_losses(critic, real, other, actions, modality, acted, rows)
    assert again[0] == fool and again[1] == judge
    none = torch.zeros(3, dtype=torch.bool)
    assert all(
        t == 0 for t in adversarial_losses(critic, real, fake, actions, modality, acted, none)
    )
    # the actions count only on rows that are given them (the others ran with the null action)
    moved = actions.clone()
    moved[1] += 3.0
    assert adversarial_losses(critic, real, fake, moved, modality, acted, rows)[1] == judge


def test_adversarial_weight_adds_the_verdict_and_trains_the_critic_too():
    model, sampler, latents, actions, modality = self_forcing_case([0, 2, 1, 0])
    critic = randomize(ChunkCritic(DIT, width=16))
    plain = SelfForcingConfig(max_chunks=2, action_dropout=0.0, sampler_levels=1.0)
    weighted = dataclasses.replace(plain, adversarial_weight=0.25)

    def run(cfg, critic=critic):
        g = torch.Generator().manual_seed(3)
        return self_forcing_loss(
            model.dit, sampler, latents, actions, modality, g, cfg, critic=critic
        )

    parts = host_floats(run(plain)[1])
    total, adv = run(weighted)
    adv = host_floats(adv)
    assert "adversarial" not in parts and adv["flow"] == parts["flow"]
    expected = parts["flow"] + 0.25 * adv["adversarial"] + adv["critic"]
    assert total.item() == pytest.approx(expected, rel=1e-5)
    total.backward()
    assert all(p.grad is not None for p in model.dit.parameters())
    assert all(p.grad is not None for p in critic.parameters())
    with pytest.raises(ValueError, match="critic"):
        run(weighted, critic=None)
    with pytest.raises(ValueError, match="adversarial_weight"):
        SelfForcingConfig(adversarial_weight=-0.1)
