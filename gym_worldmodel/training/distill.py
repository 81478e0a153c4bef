"""Few-step student distillation on the student's own rollouts.

Each training window (the sink plus ``N - 1`` chunks of a recorded episode) is used like this:

1. The student generates chunks ``1..N-2`` itself with its few-step sampler, from the recorded
   start frame and actions, against its KV cache (no gradient). This is the history it will see
   at inference, errors included: training on it is what counters exposure bias.
2. The teacher, with that same self-generated history in its own cache, solves the flow ODE from
   noise ``z`` to a clean last chunk in ``teacher_nfe`` Euler steps: the target.
3. The student takes ``i`` of its own (deterministic) steps from the same ``z`` (``i`` drawn
   uniformly below its ``nfe``) and, with gradient, predicts the clean chunk at that level with
   one sequence forward over the window. The loss is the squared error to the teacher's chunk,
   plus ``gt_weight`` times the error to the recorded chunk.

With a retrieved memory chunk, student and teacher see the same memory in every pass (the cache's
memory slot, and the sequence forward's memory chunk), so distillation keeps memory use alive
rather than teaching the student to ignore it. With ``teacher_memory_guidance`` the teacher's
target leans on that memory harder (``sampling.rollout.memory_guided``, as
``SamplerConfig.memory_guidance`` does at run time), so the student learns at one pass what the
teacher gives at two. A teacher that is the student's own starting point, at ``teacher_nfe`` equal
to its passes and no ``gt_weight``, makes this a distillation of the guidance alone: rows without
memory are trained to stay as they were.

Steps 1-2 run with the cache (one chunk per forward); the gradient pass uses
``forward_sequence``, which computes what the cache path computes.
"""

from __future__ import annotations

import torch
from torch import Tensor

from gym_worldmodel.memory import KVCache
from gym_worldmodel.models import CausalChunkDiT
from gym_worldmodel.models.config import SamplerConfig
from gym_worldmodel.sampling import FlowMatchSchedule, RowGenerators
from gym_worldmodel.sampling.rollout import memory_guided
from gym_worldmodel.sampling.sampler import Denoiser, guided_velocity
from gym_worldmodel.training.config import DistillConfig as DistillConfig
from gym_worldmodel.training.own_history import own_history


def _euler(denoise: Denoiser, x: Tensor, timesteps: list[float], guidance: float = 1.0) -> Tensor:
    """Deterministic Euler steps of the flow along ``timesteps`` under ``guidance`` (float32)."""
    for t, t_next in zip(timesteps[:-1], timesteps[1:], strict=True):
        x = x + (t_next - t) * guided_velocity(denoise, x, t, guidance)
    return x


def _scale(guidance: float | None) -> float:
    """``DistillConfig.teacher_guidance``, None (the teacher's own, unknown here) as 1."""
    return 1.0 if guidance is None else guidance


def _cached_denoiser(
    dit: CausalChunkDiT, actions: Tensor, modality: Tensor, cache: KVCache
) -> Denoiser:
    return lambda x, t, drop: dit(x, t, actions, modality, cache, drop_action=drop)


def student_loss(
    student: CausalChunkDiT,
    student_sampler: SamplerConfig,
    teacher: CausalChunkDiT,
    latents: Tensor,
    actions: Tensor,
    modality: Tensor,
    gen: torch.Generator,
    config: DistillConfig,
    memory: Tensor | None = None,
    memory_valid: Tensor | None = None,
) -> tuple[Tensor, dict[str, Tensor]]:
    """Distillation loss of one batch of windows (see the module docstring).

    Args:
        student: The denoiser being trained (its sampler is ``student_sampler``, deterministic).
        student_sampler: The student's steps and shift.
        teacher: The frozen teacher.
        latents: Recorded clean latents ``(B, N * F, C, h, w)``; chunk 0 is the sink.
        actions: ``(B, N * F, A)``.
        modality: ``(B,)``.
        gen: Source of every random draw.
        config: Teacher steps and the ground-truth weight.
        memory: Retrieved chunk of each window ``(B, F, C, h, w)``, or None.
        memory_valid: ``(B,)`` bool, rows whose memory is real.
    """
    f, b = student.config.chunk_frames, latents.shape[0]
    n = latents.shape[1] // f
    chunk = lambda x, k: x[:, k * f : (k + 1) * f]  # noqa: E731
    seeds = torch.randint(2**62, (b,), generator=gen, device=gen.device).tolist()
    gens = RowGenerators(seeds, latents.device)
    schedule = FlowMatchSchedule(student_sampler.shift)
    history, caches = own_history(
        student,
        student_sampler,
        latents,
        actions,
        modality,
        gens,
        n - 2,
        memory,
        memory_valid,
        followers=(teacher,),
    )
    with torch.no_grad():
        last_actions = chunk(actions, n - 1)
        z = gens.randn((f, *latents.shape[2:]))
        teacher_denoise = memory_guided(
            _cached_denoiser(teacher, last_actions, modality, caches[1]),
            caches[1],
            config.teacher_memory_guidance,
        )
        target = _euler(
            teacher_denoise,
            z,
            schedule.timesteps(config.teacher_nfe),
            _scale(config.teacher_guidance),
        )
        steps = schedule.timesteps(student_sampler.nfe)
        i = int(torch.randint(student_sampler.nfe, (1,), generator=gen, device=gen.device))
        x_t = _euler(
            _cached_denoiser(student, last_actions, modality, caches[0]), z, steps[: i + 1]
        )
    t = steps[i]
    levels = torch.zeros(b, n, device=latents.device)
    levels[:, -1] = t
    v = student.forward_sequence(
        torch.cat([*history, x_t], 1),
        levels,
        actions,
        modality,
        memory=memory,
        memory_valid=memory_valid,
    )
    x0_pred = x_t - t * v[:, -f:].float()
    distill = (x0_pred - target).pow(2).mean()
    truth = (x0_pred - chunk(latents, n - 1)).pow(2).mean()
    loss = distill + config.gt_weight * truth
    return loss, {"distill": distill.detach(), "ground_truth": truth.detach()}
