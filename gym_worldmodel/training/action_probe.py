"""Inverse dynamics on latents: what a chunk's motion says about the actions that made it.

A world model trained only by flow matching can lower its loss by moving too little: where the
next view is uncertain, the mean of the possible views is a blur that hardly moves, whatever the
action. :class:`LatentActionProbe` is trained on recorded latents to read each frame's action
from the chunk and the frame before it; frozen, it then scores the chunks the model predicts
(``SelfForcingConfig.action_weight``), so a chunk that does not show its action costs something.

It reads latents, not pixels, and is a different network from the evaluation's probe
(``evaluation.InverseDynamicsProbe``, trained on real frames only), so the evaluation still
measures controllability rather than the score this one was trained against.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from gym_worldmodel.models.config import DiTConfig

#: Scales the differences between successive latent frames the probe reads (unit-std latents
#: move by ~0.1-0.5 a frame); not ``evaluation.MOTION_GAIN``, the pixel probe's gain.
LATENT_DIFFERENCE_GAIN = 4.0


class LatentActionProbe(nn.Module):
    """Previous latent frame + a chunk -> each frame's action, standardised per modality.

    Args:
        config: Latent shape, chunk length, padded action width and the modalities.
        width: Channels of the first convolution.

    The standardisation (``set_action_stats``) is part of the state: a dimension whose action
    never varies in the data, or lies beyond its modality's width, is left out of the loss.
    """

    mean: Tensor  # (modalities, action_dim) buffers, registered in __init__
    std: Tensor
    used: Tensor

    def __init__(self, config: DiTConfig, width: int = 64) -> None:
        super().__init__()
        c, f, a, m = (
            config.latent_channels,
            config.chunk_frames,
            config.action_dim,
            len(config.modalities),
        )
        side = config.latent_size // 4
        self.frames, self.action_dim, self.modalities = f, a, m
        self.net = nn.Sequential(
            nn.Conv2d(c * (f + 1), width, 3, 1, 1),
            nn.GroupNorm(8, width),
            nn.SiLU(),
            nn.Conv2d(width, 2 * width, 4, 2, 1),
            nn.GroupNorm(8, 2 * width),
            nn.SiLU(),
            nn.Conv2d(2 * width, 2 * width, 4, 2, 1),
            nn.GroupNorm(8, 2 * width),
            nn.SiLU(),
            nn.Flatten(),
            nn.Linear(2 * width * side * side, 256),
            nn.SiLU(),
            nn.Linear(256, m * f * a),
        )
        self.register_buffer("mean", torch.zeros(m, a))
        self.register_buffer("std", torch.ones(m, a))
        self.register_buffer("used", torch.zeros(m, a))

    def set_action_stats(self, modality: int, actions: Tensor) -> None:
        """Standardise ``modality``'s actions by the mean and std of ``actions`` ``(n, width)``."""
        if len(actions) < 2:
            return
        width, std = actions.shape[1], actions.float().std(0)
        self.mean[modality, :width] = actions.float().mean(0)
        self.std[modality, :width] = std.clamp_min(1e-6)
        self.used[modality, :width] = (std > 1e-6).float()

    def forward(self, previous: Tensor, chunk: Tensor, modality: Tensor) -> Tensor:
        """``previous`` ``(B, 1, C, h, w)``, ``chunk`` ``(B, F, C, h, w)`` -> ``(B, F, A)``."""
        x = torch.cat((previous, chunk), 1).float()
        x = torch.cat((x[:, :1], LATENT_DIFFERENCE_GAIN * x.diff(dim=1)), 1)
        out = self.net(x.flatten(1, 2)).view(-1, self.modalities, self.frames, self.action_dim)
        return out[torch.arange(len(out), device=out.device), modality]

    def loss(
        self,
        previous: Tensor,
        chunk: Tensor,
        actions: Tensor,
        modality: Tensor,
        rows: Tensor | None = None,
    ) -> Tensor:
        """Mean squared error of the standardised actions ``(B, F, A)`` over the dimensions used.

        ``rows`` (``(B,)`` bool) limits it to some rows; zero (with a gradient) if none is left.
        """
        target = (actions.float() - self.mean[modality][:, None]) / self.std[modality][:, None]
        weight = self.used[modality][:, None].expand_as(target)
        if rows is not None:
            weight = weight * rows[:, None, None].float()
        error = (self(previous, chunk, modality) - target).pow(2) * weight
        return error.sum() / weight.sum().clamp_min(1.0)


def probe_windows_loss(
    probe: LatentActionProbe,
    latents: Tensor,
    actions: Tensor,
    modality: Tensor,
    chunk_frames: int,
    gen: torch.Generator,
    noise: float = 0.2,
) -> tuple[Tensor, dict[str, Tensor]]:
    """Training loss of the probe on recorded windows ``(B, N * F, ...)``.

    One chunk after the sink is drawn per row; its latents (and the frame before) get Gaussian
    noise of a std drawn up to ``noise``, so the probe also reads the imperfect latents a model
    predicts.
    """
    b, f = latents.shape[0], chunk_frames
    n = latents.shape[1] // f
    dev = latents.device
    j = torch.randint(1, n, (b,), generator=gen, device=dev)
    rows = torch.arange(b, device=dev)[:, None]
    frames = j[:, None] * f + torch.arange(-1, f, device=dev)[None]  # the frame before, the chunk
    x = latents[rows, frames].float()
    std = noise * torch.rand(b, 1, 1, 1, 1, generator=gen, device=dev)
    x = x + std * torch.randn(x.shape, generator=gen, device=dev)
    loss = probe.loss(x[:, :1], x[:, 1:], actions[rows, frames[:, 1:]], modality)
    return loss, {"action": loss.detach()}
