"""Mixture of action experts: per-modality projectors, null actions and per-block experts.

Every modality (camera, robot, driving, ...) writes its action into a padded vector of width
``DiTConfig.action_dim``. A projector per modality maps it into one shared action embedding; each
transformer block holds one expert per modality that maps the embedding to a residual added to
the tokens before self-attention. Experts start at zero, so a new modality begins as a no-op.
Routing is hard, by modality id, and batched: rows of different modalities share one forward.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from gym_worldmodel.models.config import DiTConfig


def _routed_linear(x: Tensor, weight: Tensor, bias: Tensor, modality: Tensor) -> Tensor:
    """Per-row linear map chosen by ``modality``: x (B, N, i) @ weight[m] (i, o) + bias[m]."""
    return torch.baddbmm(bias[modality][:, None, :], x, weight[modality])


class ActionProjectors(nn.Module):
    """Per-modality MLP projectors into the shared action embedding, plus null actions.

    Args:
        config: Supplies the modality widths, padded width, embedding width and input scales.
    """

    def __init__(self, config: DiTConfig) -> None:
        super().__init__()
        m, a, u = len(config.modalities), config.action_dim, config.action_embed_dim
        self.w1 = nn.Parameter(torch.randn(m, a, u) * a**-0.5)
        self.b1 = nn.Parameter(torch.zeros(m, u))
        self.w2 = nn.Parameter(torch.randn(m, u, u) * u**-0.5)
        self.b2 = nn.Parameter(torch.zeros(m, u))
        self.null = nn.Parameter(torch.randn(m, u) * 0.02)
        # Each modality's factors (DiTConfig.action_scale), zero on the padding beyond its width.
        scale = torch.zeros(m, a)
        for i, (name, width) in enumerate(config.modalities.items()):
            scale[i, :width] = torch.tensor(config.action_scale.get(name, (1.0,) * width))
        self.register_buffer("input_scale", scale, persistent=False)

    def forward(self, actions: Tensor, modality: Tensor, drop: Tensor | None = None) -> Tensor:
        """Embed actions.

        Args:
            actions: ``(B, N, action_dim)`` padded action vectors, one per latent frame.
            modality: ``(B,)`` long modality ids.
            drop: Optional ``(B,)`` bool; rows set use their modality's learned null action
                (guidance's unconditional branch, action dropout in training).

        Returns:
            ``(B, N, action_embed_dim)``.
        """
        x = actions * self.input_scale[modality][:, None, :]
        x = _routed_linear(x, self.w1, self.b1, modality)
        emb = _routed_linear(nn.functional.silu(x), self.w2, self.b2, modality)
        if drop is not None:
            emb = torch.where(drop[:, None, None], self.null[modality][:, None, :], emb)
        return emb


class ActionExpert(nn.Module):
    """One block's experts: a zero-initialised linear map per modality to the block width."""

    def __init__(self, config: DiTConfig) -> None:
        super().__init__()
        m = len(config.modalities)
        self.weight = nn.Parameter(torch.zeros(m, config.action_embed_dim, config.dim))
        self.bias = nn.Parameter(torch.zeros(m, config.dim))

    def forward(self, emb: Tensor, modality: Tensor) -> Tensor:
        """``emb`` (B, N, u) -> (B, N, dim) residual for the block's tokens."""
        return _routed_linear(emb, self.weight, self.bias, modality)
