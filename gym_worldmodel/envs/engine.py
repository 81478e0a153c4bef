"""The batched engine an environment drives: model, KV cache, generators and rollout for B rows.

The env owns the rollout contract (validation, resets, rewards, bookkeeping); this object owns the
tensors and does the model work. Anything with the same methods can stand in for it (the tests
use a counting world to pin autoreset semantics exactly).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from gym_worldmodel.memory import KVCache
from gym_worldmodel.models import WorldModel, precision
from gym_worldmodel.sampling import ChunkRollout, RowGenerators


class WorldEngine:
    """B rows of one world model stepping together, one batched forward per step.

    Args:
        model: The world model (moved to ``device``).
        num_envs: Rows.
        modality: Action expert the rows use (``"camera"``, ``"robot"``, ``"driving"``).
        device: Where tensors live.
        dtype: ``torch.float32`` or ``torch.bfloat16`` (autocast) for the forwards.
    """

    def __init__(
        self,
        model: WorldModel,
        num_envs: int,
        modality: str,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
    ) -> None:
        self.device, self.dtype = torch.device(device), dtype
        self.model = model.to(self.device).eval()
        self.config = cfg = model.config
        self.cache = KVCache.for_model(cfg.dit, model.dit.rope, num_envs, self.device, dtype)
        self.rollout = ChunkRollout(model.dit, cfg.sampler)
        self.gens = RowGenerators([0] * num_envs, self.device)
        ids = torch.full((num_envs,), cfg.dit.modality_id(modality), dtype=torch.long)
        self.modality = ids.to(self.device)
        self.action_dim = cfg.dit.action_dim

    @property
    def num_envs(self) -> int:
        """Rows."""
        return self.cache.batch_size

    def seed(self, env_idx: Sequence[int], seeds: Sequence[int]) -> None:
        """Reseed the generators of rows ``env_idx``."""
        self.gens.seed(seeds, env_idx)

    def start(self, env_idx: Sequence[int], frames: Tensor) -> tuple[Tensor, Tensor]:
        """Start rows ``env_idx`` over from uint8 frames ``(n, F, H, W, 3)``; other rows keep going.

        The frames are encoded and written to the rows' emptied caches as their first chunk.

        Returns:
            The start latents ``(n, F, C, h, w)`` and the frames the episode starts from.
        """
        idx = list(env_idx)
        sub = self.cache.select(idx)
        sub.reset()
        with torch.no_grad(), precision(self.device, self.dtype):
            latents = self.model.vae.encode(frames.to(self.device)).float()
            actions = torch.zeros(len(idx), *self.rollout.action_shape, device=self.device)
            self.rollout.commit(sub, latents, actions, self.modality[idx], self.gens.subset(idx))
        self.cache.load_state_dict(sub.state_dict(), env_idx=idx)
        return latents, frames

    def step(self, actions: np.ndarray, decode: slice = slice(None)) -> tuple[Tensor, Tensor]:
        """Generate one chunk for every row.

        Args:
            actions: ``(B, F, w)`` float32 action vectors of the rows' modality (``w <= A``).
            decode: Which of the chunk's frames to decode (default all; ``slice(-1, None)``
                decodes only the last, for callers that read nothing else).

        Returns:
            Latents ``(B, F, C, h, w)`` and uint8 frames ``(B, F', H, W, 3)`` on the device.
        """
        padded = torch.zeros(self.num_envs, actions.shape[1], self.action_dim, device=self.device)
        padded[..., : actions.shape[2]] = torch.from_numpy(actions).to(self.device)
        with torch.no_grad(), precision(self.device, self.dtype):
            latents = self.rollout.generate(self.cache, padded, self.modality, self.gens)
            frames = self.model.vae.decode(latents[:, decode])
        return latents, frames

    def get_state(self, env_idx: Sequence[int]) -> dict[str, Any]:
        """Copies of the rows' cache and generator states (repeats allowed: fork)."""
        return {
            "cache": {
                k: v.clone() for k, v in self.cache.select(list(env_idx)).state_dict().items()
            },
            "generators": [self.gens.generators[int(i)].get_state() for i in env_idx],
        }

    def set_state(self, state: dict[str, Any], env_idx: Sequence[int]) -> None:
        """Restore rows ``env_idx`` from :meth:`get_state` output of as many rows."""
        self.cache.load_state_dict(state["cache"], env_idx=list(env_idx))
        self.gens.set_state(state["generators"], env_idx)
