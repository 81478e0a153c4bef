"""Per-row random number generators.

Every random draw of sampling comes from the row's own :class:`torch.Generator`, so a row's
frames depend only on its seed, never on the batch it sits in or on the global RNG.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor


class RowGenerators:
    """One ``torch.Generator`` per batch row.

    Args:
        seeds: One integer seed per row.
        device: Device the generators (and the noise they draw) live on.

    Example:
        >>> gens = RowGenerators([0, 1])
        >>> a = gens.randn((3,))
        >>> b = RowGenerators([5, 1]).randn((3,))
        >>> bool((a[1] == b[1]).all())
        True
    """

    def __init__(self, seeds: Sequence[int], device: torch.device | str = "cpu") -> None:
        self.device = torch.device(device)
        self.generators = [torch.Generator(device=self.device) for _ in seeds]
        self.seed(seeds)

    def __len__(self) -> int:
        return len(self.generators)

    def seed(self, seeds: Sequence[int], env_idx: Sequence[int] | None = None) -> None:
        """Reseed rows ``env_idx`` (all rows if ``None``) with ``seeds``."""
        rows = range(len(self)) if env_idx is None else env_idx
        if len(seeds) != len(rows):
            raise ValueError(f"got {len(seeds)} seeds for {len(rows)} rows")
        for row, seed in zip(rows, seeds, strict=True):
            self.generators[int(row)].manual_seed(int(seed))

    def randn(self, shape: Sequence[int], dtype: torch.dtype = torch.float32) -> Tensor:
        """Standard normal noise ``(B, *shape)``; row ``i`` drawn from generator ``i``."""
        out = torch.empty((len(self), *shape), device=self.device, dtype=dtype)
        for row, gen in enumerate(self.generators):
            torch.randn(tuple(shape), generator=gen, out=out[row], device=self.device, dtype=dtype)
        return out

    def get_state(self) -> list[Tensor]:
        """Generator states, one byte tensor per row (copies)."""
        return [g.get_state() for g in self.generators]

    def set_state(self, states: Sequence[Tensor], env_idx: Sequence[int] | None = None) -> None:
        """Restore rows ``env_idx`` (all if ``None``) from states returned by :meth:`get_state`."""
        rows = range(len(self)) if env_idx is None else env_idx
        if len(states) != len(rows):
            raise ValueError(f"got {len(states)} generator states for {len(rows)} rows")
        for row, state in zip(rows, states, strict=True):
            self.generators[int(row)].set_state(state)

    def select(self, idx: Sequence[int]) -> RowGenerators:
        """New generators for rows ``idx`` in their current states (repeats allowed: fork)."""
        out = RowGenerators([0] * len(idx), self.device)
        out.set_state([self.generators[int(i)].get_state() for i in idx])
        return out
