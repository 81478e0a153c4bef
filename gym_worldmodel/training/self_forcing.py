"""Flow matching on the model's own history (self-forcing with the recorded future as target).

The teacher loss (``losses.py``) always conditions on recorded frames, noised at most. At run
time the history is what the model generated itself, errors included, and with anchored
prediction (``DiTConfig.anchor_sigma``) every error is copied forward by default: a model that
never saw its own errors in training never learns to undo them. Here each training window is used
like this:

1. The model writes the recorded start frame as its sink, then generates ``k`` chunks itself from
   the recorded actions with its few-step sampler, through its KV cache (no gradient). ``k`` is
   drawn per batch from ``0..max_chunks``.
2. The recorded chunk that follows is noised to a level ``t`` and the model, with gradient,
   predicts its velocity after that self-generated history (its anchor is the model's own last
   frame): the flow-matching loss against the recorded frames. The target is where the
   simulator went, so what the model learns is to steer back from its own drift, not to
   continue it.

With ``action_weight``, the chunk the model would output (its clean estimate at ``t``) is also
scored by a frozen :class:`~gym_worldmodel.training.action_probe.LatentActionProbe` against the
recorded actions, after the model's own last frame: flow matching alone lets a model that is
unsure of the next view move too little, and this term makes a chunk that does not show its
action cost something. With ``motion_weight``, each row's predicted chunk is asked to change as
much per frame as the recorded chunk does (:func:`chunk_motion`, in latent units, the squared
difference relative to the batch's mean recorded motion): a model that hedges between the views
it might show next moves less than the camera did, and the probe of evaluation reads that as a
slower, often different key. With ``shift_weight``, each predicted frame is asked to shift the
scene as far as the recorded frame does (:func:`chunk_shift`, a soft whole-pixel search in latent
pixels), which a random change of texture does not meet (a periodic stripe can:
docs/experiments.md, "A coherent-shift term"). With ``adversarial_weight``, a critic trained
alongside (:class:`~gym_worldmodel.training.critic.ChunkCritic`) judges the chunks the model
outputs at run time (the rows at the sampler's levels) against the recorded ones, and the model
is also trained to fool it: the mean of the possible chunks, a blur, is easy to tell from a
recorded chunk.

Half the rows take ``t`` from the sampler's own levels (pure noise for one step), where the model
is used at run time; the rest the teacher's shifted uniform levels, so the model stays a flow
model at every level. The gradient pass is one sequence forward over the window
(``forward_sequence``, which computes what the cache path computes), as in ``distill.py``; the
self-generated history in it (``own_history.py``) is a constant.
"""

from __future__ import annotations

import torch
from torch import Tensor

from gym_worldmodel.models import CausalChunkDiT
from gym_worldmodel.models.config import SamplerConfig
from gym_worldmodel.sampling import FlowMatchSchedule, RowGenerators
from gym_worldmodel.training.action_probe import LatentActionProbe
from gym_worldmodel.training.config import SelfForcingConfig as SelfForcingConfig
from gym_worldmodel.training.critic import ChunkCritic, adversarial_losses
from gym_worldmodel.training.motion import overlap
from gym_worldmodel.training.own_history import own_history


def chunk_motion(before: Tensor, chunk: Tensor) -> Tensor:
    """Mean absolute change per frame of each row's ``chunk`` after its ``before`` frame: ``(B,)``.

    Args:
        before: The frame each chunk follows ``(B, 1, C, h, w)``.
        chunk: ``(B, F, C, h, w)``.
    """
    frames = torch.cat([before, chunk], 1).float()
    return (frames[:, 1:] - frames[:, :-1]).abs().mean((1, 2, 3, 4))


def chunk_shift(before: Tensor, chunk: Tensor, reach: int = 3, temperature: float = 0.2) -> Tensor:
    """Soft estimate of how far each frame of ``chunk`` moved the one before it: ``(B, F, 2)``.

    For every whole-pixel shift (x, y) up to ``reach`` latent pixels, the mean squared difference
    between the frame and its predecessor moved by that shift, over their overlap; the estimate
    is the shifts' mean under a softmin of those errors (``temperature`` times each pair's mean
    error), so it is differentiable and moves only when the scene moves coherently.

    Args:
        before: The frame each chunk follows ``(B, 1, C, h, w)``.
        chunk: ``(B, F, C, h, w)``.
        reach: Largest shift tried along each axis, in latent pixels.
        temperature: Softmin temperature, as a fraction of each frame pair's mean error.
    """
    frames = torch.cat([before, chunk], 1).float()
    prev, cur = frames[:, :-1], frames[:, 1:]
    shifts = [(dx, dy) for dy in range(-reach, reach + 1) for dx in range(-reach, reach + 1)]
    errors = []
    for dx, dy in shifts:
        moved, still = overlap(cur, prev, dx, dy)
        errors.append((moved - still).pow(2).mean((-3, -2, -1)))
    err = torch.stack(errors, -1)  # (B, F, S)
    weight = torch.softmax(-err / (temperature * err.mean(-1, keepdim=True).detach() + 1e-6), -1)
    return weight @ torch.tensor(shifts, dtype=err.dtype, device=err.device)


def self_forcing_loss(
    dit: CausalChunkDiT,
    sampler: SamplerConfig,
    latents: Tensor,
    actions: Tensor,
    modality: Tensor,
    gen: torch.Generator,
    config: SelfForcingConfig,
    memory: Tensor | None = None,
    memory_valid: Tensor | None = None,
    probe: LatentActionProbe | None = None,
    critic: ChunkCritic | None = None,
) -> tuple[Tensor, dict[str, Tensor | float]]:
    """Flow-matching loss of the chunk after ``k`` self-generated ones (module docstring).

    Args:
        dit: The denoiser being trained; it also generates the history.
        sampler: Its run-time sampler (steps and shift); used deterministically.
        latents: Recorded clean latents ``(B, N * F, C, h, w)``; chunk 0 is the sink and
            ``N >= config.max_chunks + 2``.
        actions: ``(B, N * F, A)``.
        modality: ``(B,)``.
        gen: Source of every random draw.
        config: History length and level sampling.
        memory: Retrieved chunk of each window ``(B, F, C, h, w)``, read for every chunk; or
            one per generated chunk ``(B, N - 1, F, C, h, w)`` (``ChunkWindows``), of which
            the trained chunk ``k + 1``'s is read, in its history too, as the env retrieves for
            the chunk it generates; or None.
        memory_valid: ``(B,)`` bool, rows whose memory is real (``(B, N - 1)`` with one memory
            per chunk).
        probe: The frozen latent action probe (needed when ``config.action_weight > 0``).
        critic: The critic, trained by the same loss (needed when
            ``config.adversarial_weight > 0``).
    """
    if config.action_weight > 0 and probe is None:
        raise ValueError("an action_weight above 0 needs the latent action probe")
    if config.adversarial_weight > 0 and critic is None:
        raise ValueError("an adversarial_weight above 0 needs the chunk critic")
    cfg = dit.config
    f, b, dev = cfg.chunk_frames, latents.shape[0], latents.device
    n = latents.shape[1] // f
    if n < config.max_chunks + 2:
        raise ValueError(
            f"windows of {n} chunks are too short for {config.max_chunks} generated chunks "
            "plus the sink and the target"
        )
    chunk = lambda x, j: x[:, j * f : (j + 1) * f]  # noqa: E731
    k = int(torch.randint(config.max_chunks + 1, (1,), generator=gen, device=dev))
    if memory is not None and memory.dim() == 6:  # one per generated chunk: the trained one's
        memory = memory[:, k]
        memory_valid = None if memory_valid is None else memory_valid[:, k]
    gens = RowGenerators(torch.randint(2**62, (b,), generator=gen, device=dev).tolist(), dev)
    history, _ = own_history(
        dit, sampler, latents, actions, modality, gens, k, memory, memory_valid
    )
    schedule = FlowMatchSchedule(sampler.shift)
    uniform = schedule.shifted(torch.rand(b, generator=gen, device=dev))
    steps = torch.tensor(schedule.timesteps(sampler.nfe)[:-1], device=dev)
    step_levels = steps[torch.randint(len(steps), (b,), generator=gen, device=dev)]
    at_steps = torch.rand(b, generator=gen, device=dev) < config.sampler_levels
    level = torch.where(at_steps, step_levels, uniform)
    target = chunk(latents, k + 1)
    noise = torch.randn(target.shape, generator=gen, device=dev)
    x_t = schedule.add_noise(target, noise, level[:, None, None, None, None])
    drop = torch.rand(b, generator=gen, device=dev) < config.action_dropout
    levels = torch.zeros(b, k + 2, device=dev)
    levels[:, -1] = level
    velocity = dit.forward_sequence(
        torch.cat([*history, x_t], 1),
        levels,
        actions[:, : (k + 2) * f],
        modality,
        drop_action=drop,
        memory=memory,
        memory_valid=memory_valid,
    )[:, -f:].float()
    flow = (velocity - schedule.velocity_target(target, noise)).pow(2).mean()
    parts: dict[str, Tensor | float] = {"flow": flow.detach(), "own_chunks": float(k)}
    if not any(
        (config.action_weight, config.motion_weight, config.shift_weight, config.adversarial_weight)
    ):
        return flow, parts
    total = flow
    clean = schedule.predict_x0(x_t, velocity, level[:, None, None, None, None])
    acts = chunk(actions, k + 1)
    own, before = history[-1][:, -1:], chunk(latents, k)[:, -1:]  # what each side follows
    keep = (~drop).float()  # rows with their action: only they can show it
    over_rows = lambda error: (error * keep).sum() / keep.sum().clamp_min(1.0)  # noqa: E731
    if config.action_weight:
        assert probe is not None  # checked above: action_weight > 0 needs it
        shown = probe.loss(own, clean, acts, modality, ~drop)
        parts["action"] = shown.detach()
        total = total + config.action_weight * shown
    if config.motion_weight:
        made, recorded = chunk_motion(own, clean), chunk_motion(before, target)
        moved = over_rows(((made - recorded) / recorded.mean().clamp_min(1e-6)).pow(2))
        parts["motion"] = moved.detach()
        total = total + config.motion_weight * moved
    if config.shift_weight:
        made, recorded = chunk_shift(own, clean), chunk_shift(before, target)
        shifted = over_rows((made - recorded).pow(2).sum(-1).mean(-1))
        parts["shift"] = shifted.detach()
        total = total + config.shift_weight * shifted
    if config.adversarial_weight:
        assert critic is not None  # checked above: adversarial_weight > 0 needs it
        fool, judge = adversarial_losses(critic, target, clean, acts, modality, ~drop, at_steps)
        parts["adversarial"], parts["critic"] = fool.detach(), judge.detach()
        total = total + config.adversarial_weight * fool + judge
    return total, parts
