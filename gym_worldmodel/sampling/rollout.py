"""The chunk rollout: noise -> few-step denoising against the cache -> clean chunk -> cache write.

One :meth:`ChunkRollout.generate` call is one ``step()`` of a world: ``nfe`` denoiser calls (twice
that with action guidance), then one cache-write pass on the clean chunk and a commit that evicts
the oldest ring chunk. Its cost is the same at step 10 and step 10,000.
"""

from __future__ import annotations

import torch
from torch import Tensor

from gym_worldmodel.memory.kv_cache import KVCache
from gym_worldmodel.models.config import SamplerConfig
from gym_worldmodel.models.dit import CausalChunkDiT
from gym_worldmodel.sampling.noise import RowGenerators
from gym_worldmodel.sampling.schedule import FlowMatchSchedule


class ChunkRollout:
    """Generate chunks with a denoiser, a sampler config and a KV cache.

    Args:
        dit: The denoiser.
        config: Steps, shift, guidance and context noise.

    Example:
        >>> import torch
        >>> from gym_worldmodel.models import WorldModel, WorldModelConfig
        >>> from gym_worldmodel.memory import KVCache
        >>> from gym_worldmodel.sampling import ChunkRollout, RowGenerators
        >>> model = WorldModel(WorldModelConfig.tiny())
        >>> cache = KVCache.for_model(model.dit.config, model.dit.rope, batch_size=2)
        >>> rollout = ChunkRollout(model.dit, model.config.sampler)
        >>> actions = torch.zeros(2, *rollout.action_shape)
        >>> modality = torch.zeros(2, dtype=torch.long)
        >>> rollout.generate(cache, actions, modality, RowGenerators([0, 1])).shape
        torch.Size([2, 2, 4, 16, 16])
    """

    def __init__(self, dit: CausalChunkDiT, config: SamplerConfig) -> None:
        self.dit, self.config = dit, config
        self.schedule = FlowMatchSchedule(config.shift)
        self.timesteps = self.schedule.timesteps(config.nfe)

    @property
    def latent_shape(self) -> tuple[int, int, int, int]:
        """``(F, C, h, w)`` of one chunk."""
        c = self.dit.config
        return (c.chunk_frames, c.latent_channels, c.latent_size, c.latent_size)

    @property
    def action_shape(self) -> tuple[int, int]:
        """``(F, A)`` of one chunk's actions."""
        return (self.dit.config.chunk_frames, self.dit.config.action_dim)

    def generate(
        self, cache: KVCache, actions: Tensor, modality: Tensor, generators: RowGenerators
    ) -> Tensor:
        """Generate one clean chunk per row and commit it to the cache.

        Args:
            cache: The rows' cache (read, then written and committed).
            actions: ``(B, F, A)`` padded per-frame actions.
            modality: ``(B,)`` expert ids.
            generators: One generator per row; every random draw comes from them.

        Returns:
            Clean latents ``(B, F, C, h, w)``, float32.
        """
        self._check(cache, actions, modality, generators)
        x = generators.randn(self.latent_shape)
        for t, t_next in zip(self.timesteps[:-1], self.timesteps[1:], strict=True):
            velocity = self.velocity(x, t, actions, modality, cache)
            x = self._step(x, velocity, t, t_next, generators)
        self.commit(cache, x, actions, modality, generators)
        return x

    def velocity(
        self, x: Tensor, t: float, actions: Tensor, modality: Tensor, cache: KVCache
    ) -> Tensor:
        """Denoiser velocity at level ``t``, with action guidance when its scale is not 1."""
        level = torch.full((x.shape[0],), t, device=x.device)
        v = self.dit(x, level, actions, modality, cache).float()
        scale = self.config.guidance_scale
        if scale != 1.0:
            drop = torch.ones(x.shape[0], dtype=torch.bool, device=x.device)
            v_null = self.dit(x, level, actions, modality, cache, drop_action=drop).float()
            v = v_null + scale * (v - v_null)
        return v

    def commit(
        self,
        cache: KVCache,
        x0: Tensor,
        actions: Tensor,
        modality: Tensor,
        generators: RowGenerators | None = None,
    ) -> None:
        """Cache-write pass on clean latents (at ``context_t``), then close the step.

        Also how a reset writes the user's start frames into an empty cache.
        """
        t = self.config.context_t
        if t > 0:
            if generators is None:
                raise ValueError("context_t > 0 draws noise: pass the rows' generators")
            x0 = self.schedule.add_noise(x0, generators.randn(self.latent_shape), t)
        level = torch.full((x0.shape[0],), t, device=x0.device)
        self.dit(x0, level, actions, modality, cache, write=True)
        cache.commit()

    def _step(self, x: Tensor, v: Tensor, t: float, t_next: float, gens: RowGenerators) -> Tensor:
        if t_next == 0.0 or not self.config.stochastic:
            return x + (t_next - t) * v  # Euler; at t_next = 0 this is the x0 prediction
        x0 = self.schedule.predict_x0(x, v, t)
        return self.schedule.add_noise(x0, gens.randn(self.latent_shape), t_next)

    def _check(self, cache: KVCache, actions: Tensor, modality: Tensor, gens: RowGenerators):
        b = cache.batch_size
        if actions.shape != (b, *self.action_shape):
            raise ValueError(
                f"actions must be {(b, *self.action_shape)}, got {tuple(actions.shape)}"
            )
        if modality.shape != (b,) or modality.dtype != torch.long:
            raise ValueError(f"modality must be a long tensor of shape ({b},)")
        if len(gens) != b:
            raise ValueError(f"need one generator per row: {b}, got {len(gens)}")
