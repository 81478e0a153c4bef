"""Rotary position embedding over (time, height, width).

The head channels are split across three axes (``DiTConfig.rope_axes``). Positions are in
latent frames (time) and token rows/columns (height, width). Time positions are relative to the
cache (see :mod:`gym_worldmodel.memory.kv_cache`), so they stay inside a fixed range however long
an episode runs.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn


def apply_rotary(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate ``x`` (..., D) by tables from :meth:`Rotary3D.cos_sin` that broadcast against it.

    Channel ``i`` pairs with ``i + D/2``. ``sin`` carries the rotation's sign
    (``[-sin, +sin]`` over the two halves), so the rotation is three passes over ``x``:
    ``x * cos + roll(x, D/2) * sin``.
    """
    return torch.addcmul(x * cos, x.roll(x.shape[-1] // 2, dims=-1), sin)


class Rotary3D(nn.Module):
    """Frequencies of a 3-axis RoPE and the cos/sin tables derived from positions.

    Args:
        axes: Head channels per (time, height, width) axis; each even.
        theta: Base of the geometric frequency ladder.
    """

    def __init__(self, axes: tuple[int, int, int], theta: float) -> None:
        super().__init__()
        freqs = [theta ** (-torch.arange(0, a, 2, dtype=torch.float64) / a) for a in axes]
        self.axes = axes
        # (3, D/2) with zeros where a frequency belongs to another axis; positions @ this = angles.
        table = torch.zeros(3, sum(axes) // 2, dtype=torch.float64)
        start = 0
        for axis, f in enumerate(freqs):
            table[axis, start : start + len(f)] = f
            start += len(f)
        # A plain attribute, not a buffer: module.to(dtype) must not round it to low precision.
        self.freq_table = table
        # Tables made once per layout and device (:meth:`cached`): a training step asks for
        # the same ones every time, and on a GPU each one made afresh waited for the GPU.
        self._cached: dict[tuple, tuple[Tensor, ...]] = {}

    def cached(self, key: tuple, device: torch.device, make: Callable[[], tuple[Tensor, ...]]):
        """``make()``'s tables for ``key`` on ``device``, made the first time only (read-only).

        Made as ordinary tensors even under ``torch.inference_mode``, so that training can use
        tables an inference call made first.
        """
        tables = self._cached.get((key, device))
        if tables is None:
            with torch.inference_mode(False):
                tables = self._cached[(key, device)] = make()
        return tables

    def cos_sin(self, positions: Tensor) -> tuple[Tensor, Tensor]:
        """Tables for positions ``(..., 3)`` (time, row, col); each ``(..., D)``, sin signed."""
        positions = positions.to(torch.float64)
        angles = positions @ self.freq_table.to(positions.device)  # (..., D/2)
        cos, sin = angles.cos(), angles.sin()
        return torch.cat((cos, cos), -1).float(), torch.cat((-sin, sin), -1).float()

    def time_shift(self, frames: float) -> tuple[Tensor, Tensor]:
        """Cos/sin ``(D,)`` that move a key ``frames`` latent frames along the time axis."""
        return self.cos_sin(torch.tensor([frames, 0.0, 0.0]))


def grid_positions(frames: int, side: int, time_offset: float = 0.0) -> Tensor:
    """(time, row, col) of every token of ``frames`` frames of ``side x side`` tokens.

    Returns:
        Float tensor ``(frames * side * side, 3)`` in frame-major, row-major order.
    """
    t = torch.arange(frames, dtype=torch.float64) + time_offset
    r = torch.arange(side, dtype=torch.float64)
    tt, rr, cc = torch.meshgrid(t, r, r, indexing="ij")
    return torch.stack((tt, rr, cc), dim=-1).reshape(-1, 3)
