"""The history a model writes itself: what the self-forcing and distillation losses train after.

At run time a world conditions each chunk on chunks it generated, errors included. Both losses
that counter this exposure bias (``self_forcing.py``, ``distill.py``) first let the model being
trained generate part of each training window from the recorded start frame and actions, as the
env does, and only then compute a loss after that history. :func:`own_history` is that rollout.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import Tensor

from gym_worldmodel.memory import KVCache
from gym_worldmodel.models import CausalChunkDiT
from gym_worldmodel.models.config import SamplerConfig
from gym_worldmodel.sampling import ChunkRollout, RowGenerators


def own_history(
    dit: CausalChunkDiT,
    sampler: SamplerConfig,
    latents: Tensor,
    actions: Tensor,
    modality: Tensor,
    generators: RowGenerators,
    chunks: int,
    memory: Tensor | None = None,
    memory_valid: Tensor | None = None,
    followers: tuple[CausalChunkDiT, ...] = (),
) -> tuple[list[Tensor], list[KVCache]]:
    """Generate ``chunks`` chunks of each window after its recorded sink, with ``dit`` (no grad).

    The sink (chunk 0 of ``latents``) and the retrieved memory chunk go into a fresh KV cache as
    the env writes them at reset and from step 1 on; then ``dit`` generates chunks ``1..chunks``
    from the recorded actions with its few-step ``sampler``, deterministic and on a clean context
    (``context_t`` 0). Each model in ``followers`` (the teacher, in distillation) writes the same
    sink, memory and generated chunks into a cache of its own, so it sees the history ``dit``
    wrote.

    Args:
        dit: The model that writes the history.
        sampler: Its run-time steps and shift.
        latents: Recorded clean latents ``(B, N * F, C, h, w)``; chunk 0 is the sink and
            ``N > chunks``.
        actions: ``(B, N * F, A)``.
        modality: ``(B,)``.
        generators: One generator per row: every noise draw of the rollout.
        chunks: Chunks to generate after the sink (0: the sink alone).
        memory: Retrieved chunk of each window ``(B, F, C, h, w)``, or None.
        memory_valid: ``(B,)`` bool, rows whose memory is real (default all).
        followers: Models that take the same history into caches of their own.

    Returns:
        The history, the sink first (``chunks + 1`` tensors ``(B, F, C, h, w)``), and the caches
        of ``dit`` and each follower, in that order, holding it.
    """
    f, b, dev = dit.config.chunk_frames, latents.shape[0], latents.device
    if latents.shape[1] < (chunks + 1) * f:
        raise ValueError(f"windows of {latents.shape[1]} frames cannot hold {chunks} chunks")
    chunk = lambda x, j: x[:, j * f : (j + 1) * f]  # noqa: E731
    run = dataclasses.replace(sampler, context_t=0.0, stochastic=False)
    models = (dit, *followers)
    rollouts = [ChunkRollout(m, run) for m in models]
    caches = [KVCache.for_model(m.config, m.rope, b, dev) for m in models]
    history = [chunk(latents, 0)]
    with torch.no_grad():
        for rollout, cache in zip(rollouts, caches, strict=True):
            _write_start(
                rollout, cache, history[0], chunk(actions, 0), modality, memory, memory_valid
            )
        for j in range(1, chunks + 1):
            x0 = rollouts[0].generate(caches[0], chunk(actions, j), modality, generators)
            for rollout, cache in zip(rollouts[1:], caches[1:], strict=True):
                rollout.commit(cache, x0, chunk(actions, j), modality)
            history.append(x0)
    return history, caches


def _write_start(
    rollout: ChunkRollout,
    cache: KVCache,
    sink: Tensor,
    actions: Tensor,
    modality: Tensor,
    memory: Tensor | None,
    memory_valid: Tensor | None,
) -> None:
    """Write a window's sink chunk, then its retrieved memory chunk, as the env does.

    The memory goes in after the sink, as the env retrieves from step 1 on.
    """
    rollout.commit(cache, sink, actions, modality)
    if memory is not None:
        rows = torch.arange(sink.shape[0], device=sink.device)
        rollout.dit.encode_memory(memory, 0.0, modality, cache, 0, rows)
        valid = torch.ones(len(rows), dtype=torch.bool) if memory_valid is None else memory_valid
        cache.set_memory(valid.cpu()[:, None])
