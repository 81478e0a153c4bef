"""Training losses: the VAE, and the chunk-causal flow-matching teacher.

Every random draw comes from the generator passed in, so a resumed run draws what an
uninterrupted one would have.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from gym_worldmodel.models import VAE, CausalChunkDiT
from gym_worldmodel.models.dit import sequence_anchors
from gym_worldmodel.models.vae import to_unit
from gym_worldmodel.sampling import FlowMatchSchedule
from gym_worldmodel.training.config import TeacherLossConfig as TeacherLossConfig


@dataclass(frozen=True)
class VAELossConfig:
    """Weights of the VAE loss: L1 + MSE reconstruction plus ``kl_weight`` x KL."""

    kl_weight: float = 1e-6


def vae_loss(
    vae: VAE, frames: Tensor, gen: torch.Generator, config: VAELossConfig
) -> tuple[Tensor, dict[str, Tensor]]:
    """Loss of uint8 frames ``(B, H, W, 3)``; returns the loss and its parts (0-d tensors)."""
    x = to_unit(frames)
    mean, logvar = vae.encode_posterior(x)
    eps = torch.randn(mean.shape, generator=gen, device=mean.device)
    recon = vae.decode_float(mean + (0.5 * logvar).exp() * eps).float()
    l1, mse = F.l1_loss(recon, x), F.mse_loss(recon, x)
    kl = 0.5 * (mean.float().pow(2) + logvar.float().exp() - 1.0 - logvar.float()).mean()
    loss = l1 + mse + config.kl_weight * kl
    return loss, {"l1": l1.detach(), "mse": mse.detach(), "kl": kl.detach()}


def motion_focus_weights(latents: Tensor, chunk_frames: int, strength: float) -> Tensor:
    """Loss weights ``(B, N * F, 1, h, w)`` that favour where the picture was just moving.

    Chunk ``c`` is weighted by the motion into the last frame of chunk ``c - 1`` (the mean
    absolute latent change over channels, widened by a 3x3 max so it covers where a moving
    part goes next): ``1 + strength * motion / mean(motion)``, then divided by its mean so the
    loss keeps its scale. The weights depend on the history alone, which the model sees, so
    the loss's minimiser at each position stays the conditional mean: the focus moves effort,
    not the target. Chunk 0 (the sink) and a still history weigh 1.
    """
    if chunk_frames < 2:
        raise ValueError(f"motion focus needs chunks of 2 or more frames, got {chunk_frames}")
    last = latents[:, chunk_frames - 1 :: chunk_frames]
    before = latents[:, chunk_frames - 2 :: chunk_frames]
    motion = (last - before).abs().mean(2)  # (B, N, h, w)
    b, n, h, w = motion.shape
    motion = F.max_pool2d(motion.reshape(b * n, 1, h, w), 3, 1, 1).reshape(b, n, h, w)
    motion = torch.cat((torch.zeros_like(motion[:, :1]), motion[:, :-1]), 1)  # what c saw
    weights = 1 + strength * motion / motion.mean().clamp_min(1e-8)
    weights = weights / weights.mean()
    return weights.repeat_interleave(chunk_frames, 1)[:, :, None]


def teacher_loss(
    dit: CausalChunkDiT,
    latents: Tensor,
    actions: Tensor,
    modality: Tensor,
    gen: torch.Generator,
    config: TeacherLossConfig,
    memory: Tensor | None = None,
    memory_valid: Tensor | None = None,
) -> tuple[Tensor, dict[str, Tensor]]:
    """Flow-matching loss over windows of chunks.

    Args:
        dit: The denoiser.
        latents: Clean scaled latents ``(B, N * F, C, h, w)``.
        actions: ``(B, N * F, A)``.
        modality: ``(B,)``.
        gen: Source of every random draw.
        config: Level sampling and dropout.
        memory: Retrieved chunk of each window, clean latents ``(B, F, C, h, w)``, or None.
        memory_valid: ``(B,)`` bool, rows whose memory is real.

    Returns:
        The loss and its parts (0-d tensors): the loss on the last chunk is reported apart,
        since it is what a ``step()`` generates.
    """
    b, nf = latents.shape[:2]
    n = nf // dit.config.chunk_frames
    dev = latents.device
    u = torch.rand(b, n, generator=gen, device=dev)
    schedule = FlowMatchSchedule(config.shift)
    levels = schedule.shifted(u)
    forcing = torch.rand(b, generator=gen, device=dev) < config.teacher_forcing
    history = torch.rand(b, n, generator=gen, device=dev) * config.context_noise
    history[:, -1] = levels[:, -1]
    levels = torch.where(forcing[:, None], history, levels)
    if config.memory_only > 0 and memory is not None:
        real = torch.ones(b, dtype=torch.bool) if memory_valid is None else memory_valid
        real = real.to(dev)
        masked = real & (torch.rand(b, generator=gen, device=dev) < config.memory_only)
        levels[:, :-1] = torch.where(masked[:, None], 1.0, levels[:, :-1])
    noise = torch.randn(latents.shape, generator=gen, device=dev)
    t = levels.repeat_interleave(dit.config.chunk_frames, 1)[..., None, None, None]
    x_t = schedule.add_noise(latents, noise, t)
    drop = torch.rand(b, generator=gen, device=dev) < config.action_dropout
    anchors = None
    if config.clean_anchors and dit.config.frame_anchor:
        anchors = sequence_anchors(latents, dit.config.chunk_frames)
    velocity = dit.forward_sequence(
        x_t,
        levels,
        actions,
        modality,
        drop_action=drop,
        memory=memory,
        memory_valid=memory_valid,
        anchors=anchors,
    ).float()
    err = (velocity - schedule.velocity_target(latents, noise)).pow(2)
    flow, last = err.mean(), err[:, -dit.config.chunk_frames :].mean()
    parts = {"flow": flow.detach(), "flow_last_chunk": last.detach()}
    if config.motion_focus == 0:
        return flow, parts
    weights = motion_focus_weights(latents, dit.config.chunk_frames, config.motion_focus)
    loss = (err * weights).mean()
    return loss, {**parts, "flow_focused": loss.detach()}
