"""The chunk rollout: noise -> few-step denoising against the context -> clean chunk -> commit.

:class:`ChunkRollout` is one ``step()`` of a world: ``nfe`` denoiser calls against the KV cache
(twice that with action guidance, and again twice with memory guidance in a step where some row
holds memory), then one cache-write pass on the clean chunk and a commit that
evicts the oldest ring chunk. Its cost is the same at step 10 and step 10,000. ``sample`` and
``commit`` are the two halves, for a caller that writes the chunk only once it is needed.

:class:`RecomputeRollout` is the no-cache baseline: every denoiser call re-runs the sink and the
chunks the output depends on. It gives the same chunks, at the cost the cache saves.
"""

from __future__ import annotations

import torch
from torch import Tensor

from gym_worldmodel.memory.kv_cache import KVCache
from gym_worldmodel.models.config import SamplerConfig
from gym_worldmodel.models.dit import CausalChunkDiT
from gym_worldmodel.sampling.noise import RowGenerators
from gym_worldmodel.sampling.sampler import Denoiser, FewStepSampler


def memory_guided(denoise: Denoiser, cache: KVCache, scale: float) -> Denoiser:
    """``denoise`` (a denoiser reading ``cache``) under memory guidance ``scale``.

    In a call where some row holds retrieved memory, the denoiser runs again with the memory
    slots masked (:meth:`KVCache.hidden_memory`) and the velocity is ``v_off + scale (v -
    v_off)``, in float32; a row holding none gets ``v_off == v``, so its bits do not change.
    At 1 (``SamplerConfig.memory_guidance``'s default) it is ``denoise`` itself, at no cost.
    The rollout samples through it, and distillation's teacher targets
    (``DistillConfig.teacher_memory_guidance``).
    """
    if scale == 1.0:
        return denoise

    def guided(x: Tensor, t: Tensor, drop: Tensor | None) -> Tensor:
        v = denoise(x, t, drop)
        if not cache.holds_memory:
            return v
        with cache.hidden_memory():
            v_off = denoise(x, t, drop).float()
        return v_off + scale * (v.float() - v_off)

    return guided


class _Rollout:
    """What both rollouts share: the denoiser, the sampler and the chunk shapes."""

    def __init__(self, dit: CausalChunkDiT, config: SamplerConfig) -> None:
        self.dit, self.config = dit, config
        self.sampler = FewStepSampler(config)

    @property
    def latent_shape(self) -> tuple[int, int, int, int]:
        """``(F, C, h, w)`` of one chunk."""
        c = self.dit.config
        return (c.chunk_frames, c.latent_channels, c.latent_size, c.latent_size)

    @property
    def action_shape(self) -> tuple[int, int]:
        """``(F, A)`` of one chunk's actions."""
        return (self.dit.config.chunk_frames, self.dit.config.action_dim)


class ChunkRollout(_Rollout):
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
        x0, anchors = self.sample(cache, actions, modality, generators)
        self.commit(cache, x0, actions, modality, generators, anchors)
        return x0

    def sample(
        self, cache: KVCache, actions: Tensor, modality: Tensor, generators: RowGenerators
    ) -> tuple[Tensor, Tensor | None]:
        """One clean chunk per row, not yet written to the cache; arguments as :meth:`generate`.

        Returns:
            The latents and the step's anchors, for the :meth:`commit` that must follow before
            the cache is read or the generators draw again (a caller may put it off until then).
        """
        check_inputs(cache.batch_size, self.action_shape, actions, modality, generators)
        anchors = self.dit.step_anchors(cache, actions, modality)  # once for every call
        scale = self.config.memory_guidance

        def plain(x: Tensor, t: Tensor, drop: Tensor | None) -> Tensor:
            return self.dit(x, t, actions, modality, cache, drop_action=drop, frame_anchors=anchors)

        denoise = memory_guided(plain, cache, scale)
        return self.sampler.sample(denoise, self.latent_shape, generators), anchors

    def commit(
        self,
        cache: KVCache,
        x0: Tensor,
        actions: Tensor,
        modality: Tensor,
        generators: RowGenerators | None = None,
        frame_anchors: Tensor | None = None,
    ) -> None:
        """Cache-write pass on clean latents (at ``context_t``), then close the step.

        Also how a reset writes the user's start frames into an empty cache. ``frame_anchors``:
        the step's anchors if already computed (``CausalChunkDiT.step_anchors``).
        """
        x, level = self.sampler.context(x0, generators)
        self.dit.write(x, level, actions, modality, cache, frame_anchors=frame_anchors)
        cache.commit()


class RecomputeRollout(_Rollout):
    """No-cache baseline: each denoiser call recomputes the context from stored latents.

    Chunk ``n`` depends on the sink and, through ``depth`` layers of a ``window``-chunk ring, on
    the last ``depth * window`` chunks, so recomputing exactly those gives the cached rollout's
    chunks (up to float rounding) without a cache. Cost grows with ``depth * window``.

    Args:
        dit: The denoiser.
        config: Steps, shift, guidance and context noise.
    """

    def __init__(self, dit: CausalChunkDiT, config: SamplerConfig) -> None:
        super().__init__(dit, config)
        # (context latents, actions, anchor frame) per chunk: the sink and the receptive field.
        self.history: list[tuple[Tensor, Tensor, Tensor]] = []

    def reset(self) -> None:
        """Forget every chunk (a new episode for all rows)."""
        self.history.clear()

    def set_history(self, chunks: list[Tensor], actions: list[Tensor]) -> None:
        """Continue an episode whose context latents so far were ``chunks`` (sink first).

        Only the sink and the receptive field are kept, each chunk with its anchor frame (the
        last frame of the chunk before it; zeros for the sink).
        """
        anchors = [torch.zeros_like(chunks[0][:, -1])] + [x[:, -1] for x in chunks[:-1]]
        self._keep(list(zip(chunks, actions, anchors, strict=True)))

    def _keep(self, history: list[tuple[Tensor, Tensor, Tensor]]) -> None:
        """Store the sink and the last ``depth * window`` chunks: all the next chunk depends on."""
        cfg = self.dit.config
        self.history = history[:1] + history[1:][-cfg.depth * cfg.window_chunks :]

    def generate(self, actions: Tensor, modality: Tensor, generators: RowGenerators) -> Tensor:
        """Generate one clean chunk per row from the stored history; arguments as above."""
        check_inputs(len(generators), self.action_shape, actions, modality, generators)
        cfg = self.dit.config
        context = self.history
        ctx_x = [x for x, _, _ in context]
        ctx_a = torch.cat([a for _, a, _ in context] + [actions], 1)
        n = len(context)
        if context:  # the new chunk's anchor: the last frame before it (none for the first)
            anchor = context[-1][0][:, -1]
        else:
            anchor = torch.zeros(len(generators), *self.latent_shape[1:], device=actions.device)
        anchors = torch.stack([p for _, _, p in context] + [anchor], 1)

        def denoise(x: Tensor, t: Tensor, drop: Tensor | None) -> Tensor:
            past = torch.full((x.shape[0], n), self.config.context_t, device=x.device)
            levels = torch.cat([past, t[:, None]], 1)
            seq = torch.cat([*ctx_x, x], 1)
            v = self.dit.forward_sequence(
                seq, levels, ctx_a, modality, drop_action=drop, anchors=anchors
            )
            return v[:, -cfg.chunk_frames :]

        x0 = self.sampler.sample(denoise, self.latent_shape, generators)
        x_ctx, _ = self.sampler.context(x0, generators)
        self._keep([*context, (x_ctx, actions, anchor)])
        return x0


def check_inputs(
    batch: int,
    action_shape: tuple[int, int],
    actions: Tensor,
    modality: Tensor,
    gens: RowGenerators,
) -> None:
    """Raise a clear ``ValueError`` when rollout inputs do not fit ``batch`` rows."""
    if actions.shape != (batch, *action_shape):
        raise ValueError(f"actions must be {(batch, *action_shape)}, got {tuple(actions.shape)}")
    if modality.shape != (batch,) or modality.dtype != torch.long:
        raise ValueError(f"modality must be a long tensor of shape ({batch},)")
    if len(gens) != batch:
        raise ValueError(f"need one generator per row: {batch}, got {len(gens)}")
