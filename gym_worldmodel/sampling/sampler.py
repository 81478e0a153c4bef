"""Few-step flow-matching sampler with action guidance.

The sampler owns the denoising loop and nothing else: it calls a ``denoise(x, t, drop)``
function (the model with its context already bound) and draws every random number from the
rows' generators. The rollouts in :mod:`gym_worldmodel.sampling.rollout` bind the context: the
KV cache, or a recomputed history.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from gym_worldmodel.models.config import SamplerConfig
from gym_worldmodel.sampling.noise import RowGenerators
from gym_worldmodel.sampling.schedule import FlowMatchSchedule

#: ``denoise(x, t, drop_action) -> velocity``; x ``(B, F, C, h, w)``, t ``(B,)``, drop ``(B,)``.
Denoiser = Callable[[Tensor, Tensor, "Tensor | None"], Tensor]


def guided_velocity(denoise: Denoiser, x: Tensor, t: float, scale: float) -> Tensor:
    """``denoise``'s velocity at level ``t`` under action guidance ``scale``, float32.

    ``v_null + scale (v - v_null)``, the null action's velocity evaluated only when
    ``scale != 1``. The sampler and the distillation target both guide through it.
    """
    level = torch.full((x.shape[0],), t, device=x.device)
    v = denoise(x, level, None).float()
    if scale != 1.0:
        drop = torch.ones(x.shape[0], dtype=torch.bool, device=x.device)
        v_null = denoise(x, level, drop).float()
        v = v_null + scale * (v - v_null)
    return v


class FewStepSampler:
    """Denoise a chunk from pure noise in ``config.nfe`` steps.

    Stochastic mode (distilled students) predicts the clean chunk at every step and re-noises it
    to the next level with fresh noise; deterministic mode takes Euler steps along the flow.
    Guidance, when ``guidance_scale != 1``, evaluates the null action too: ``v_null + s (v -
    v_null)``; at 1 it costs nothing.

    Args:
        config: Steps, shift, guidance scale, context noise and stochasticity.
    """

    def __init__(self, config: SamplerConfig) -> None:
        self.config = config
        self.schedule = FlowMatchSchedule(config.shift)
        self.timesteps = self.schedule.timesteps(config.nfe)

    def sample(self, denoise: Denoiser, shape: tuple[int, ...], gens: RowGenerators) -> Tensor:
        """Clean latents ``(B, *shape)`` from noise drawn from ``gens``, float32."""
        x = gens.randn(shape)
        for t, t_next in zip(self.timesteps[:-1], self.timesteps[1:], strict=True):
            v = self.velocity(denoise, x, t)
            if t_next == 0.0 or not self.config.stochastic:
                x = x + (t_next - t) * v  # Euler; at t_next = 0 this is the x0 prediction
            else:
                x0 = self.schedule.predict_x0(x, v, t)
                x = self.schedule.add_noise(x0, gens.randn(shape), t_next)
        return x

    def velocity(self, denoise: Denoiser, x: Tensor, t: float) -> Tensor:
        """Guided velocity at level ``t``."""
        return guided_velocity(denoise, x, t, self.config.guidance_scale)

    def context(self, x0: Tensor, gens: RowGenerators | None) -> tuple[Tensor, Tensor]:
        """Input of the cache-write pass: ``x0`` noised to ``context_t``, and that level."""
        t = self.config.context_t
        if t > 0:
            if gens is None:
                raise ValueError("context_t > 0 draws noise: pass the rows' generators")
            x0 = self.schedule.add_noise(x0, gens.randn(tuple(x0.shape[1:])), t)
        return x0, torch.full((x0.shape[0],), t, device=x0.device)
