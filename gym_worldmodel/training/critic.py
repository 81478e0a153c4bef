"""An adversarial critic of chunks: does this chunk look recorded, given its actions?

At one denoising step, a model trained only by flow matching outputs the conditional mean of the
next chunk. Where the future is uncertain (where the arm goes, when a car appears) that mean is a
blur, and fed back as history the blur compounds: the robot's arm turns into a grey ghost and the
road's cars and markings fade within a few steps. :class:`ChunkCritic` is a small convolutional
discriminator on latent chunks with a projection of the chunk's actions (Miyato & Koyama's
projection discriminator); in self-forcing (``SelfForcingConfig.adversarial_weight``) it learns
to tell recorded chunks from the ones the model outputs at run time, and the model learns to
make chunks it cannot tell apart, sharp and moving as its actions say.

Both are trained by one backward pass (:func:`adversarial_losses`): the model's term reads the
critic through detached parameters, so it moves only the model; the critic's term reads the
model's chunk detached, so it moves only the critic.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

from gym_worldmodel.models.config import DiTConfig


class ChunkCritic(nn.Module):
    """Latent chunk ``(B, F, C, h, w)`` + its actions ``(B, F, A)`` -> a realness logit ``(B,)``.

    Args:
        config: Latent shape, chunk length, padded action width and the modalities.
        width: Channels of the first convolution.

    The logit is a patch average of a convolutional head plus, on rows whose actions are given,
    the inner product of the pooled features with an embedding of the actions and modality.
    """

    def __init__(self, config: DiTConfig, width: int = 64) -> None:
        super().__init__()
        c, f, a = config.latent_channels, config.chunk_frames, config.action_dim
        self.modalities = len(config.modalities)
        self.body = nn.Sequential(
            nn.Conv2d(c * f, width, 3, 1, 1),
            nn.LeakyReLU(0.2),
            nn.Conv2d(width, 2 * width, 4, 2, 1),
            nn.LeakyReLU(0.2),
            nn.Conv2d(2 * width, 2 * width, 4, 2, 1),
            nn.LeakyReLU(0.2),
        )
        self.head = nn.Conv2d(2 * width, 1, 1)
        self.embed = nn.Sequential(
            nn.Linear(f * a + self.modalities, 2 * width),
            nn.SiLU(),
            nn.Linear(2 * width, 2 * width),
        )

    def forward(
        self, chunk: Tensor, actions: Tensor, modality: Tensor, with_actions: Tensor
    ) -> Tensor:
        """Realness logits; ``with_actions`` ``(B,)`` bool: rows whose actions are projected."""
        h = self.body(chunk.float().flatten(1, 2))
        logit = self.head(h).mean((1, 2, 3))
        kind = F.one_hot(modality, self.modalities).float()
        e = self.embed(torch.cat((actions.float().flatten(1), kind), 1))
        return logit + (h.mean((2, 3)) * e).sum(1) * with_actions.float()


def adversarial_losses(
    critic: ChunkCritic,
    real: Tensor,
    fake: Tensor,
    actions: Tensor,
    modality: Tensor,
    with_actions: Tensor,
    rows: Tensor,
) -> tuple[Tensor, Tensor]:
    """``(model_term, critic_term)`` of the non-saturating logistic GAN loss on ``rows``.

    ``real`` and ``fake`` are ``(B, F, C, h, w)`` chunks of the same windows (recorded, and the
    model's output); ``rows`` ``(B,)`` bool picks the rows that count (both terms are zero, with
    a gradient, when none does). The model term reaches only ``fake``'s graph; the critic term
    only the critic's parameters.
    """
    weight = rows.float()
    count = weight.sum().clamp_min(1.0)
    frozen = {name: p.detach() for name, p in critic.named_parameters()}
    fooled = functional_call(critic, frozen, (fake, actions, modality, with_actions))
    model_term = (F.softplus(-fooled) * weight).sum() / count
    judged_real = critic(real.detach(), actions, modality, with_actions)
    judged_fake = critic(fake.detach(), actions, modality, with_actions)
    critic_term = ((F.softplus(-judged_real) + F.softplus(judged_fake)) * weight).sum() / count
    return model_term, critic_term
