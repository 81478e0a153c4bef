"""Flow-matching noise schedule with timestep shift.

Convention: ``x_t = (1 - t) * x0 + t * noise`` with ``t`` in [0, 1] (1 is pure noise); the model
predicts the velocity ``v = noise - x0``, so ``x0 = x_t - t * v``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import overload

from torch import Tensor


@dataclass(frozen=True)
class FlowMatchSchedule:
    """Shifted flow-matching schedule.

    Args:
        shift: ``t -> shift * t / (1 + (shift - 1) * t)``; values above 1 spend more of a few-step
            budget at high noise, where a chunk's layout is decided.

    Example:
        >>> FlowMatchSchedule(shift=1.0).timesteps(4)
        [1.0, 0.75, 0.5, 0.25, 0.0]
    """

    shift: float = 3.0

    @overload
    def shifted(self, t: float) -> float: ...
    @overload
    def shifted(self, t: Tensor) -> Tensor: ...
    def shifted(self, t: float | Tensor) -> float | Tensor:
        """Apply the shift to a uniform time (a number, or a tensor of them elementwise)."""
        return self.shift * t / (1.0 + (self.shift - 1.0) * t)

    def timesteps(self, nfe: int) -> list[float]:
        """``nfe + 1`` decreasing noise levels from 1 to 0 (the last is the clean target)."""
        return [self.shifted(1.0 - i / nfe) for i in range(nfe + 1)]

    @staticmethod
    def add_noise(x0: Tensor, noise: Tensor, t: Tensor | float) -> Tensor:
        """Noise clean latents to level ``t`` (a float or a tensor broadcastable to ``x0``)."""
        return (1.0 - t) * x0 + t * noise

    @staticmethod
    def predict_x0(x_t: Tensor, velocity: Tensor, t: Tensor | float) -> Tensor:
        """Clean latents implied by a velocity prediction at level ``t``."""
        return x_t - t * velocity

    @staticmethod
    def velocity_target(x0: Tensor, noise: Tensor) -> Tensor:
        """What the denoiser is trained to predict."""
        return noise - x0
