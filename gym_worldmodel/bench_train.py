"""Training-step benchmark: ``python -m gym_worldmodel.bench train``.

Times the gradient step every DiT recipe shares (teacher, student and self-forcing all end in one
``forward_sequence`` over a window of chunks, each at its own noise level, and a backward pass):
the teacher's flow-matching loss, its backward and an AdamW update, on random latents and actions
of every modality, for each window length asked, with a retrieved memory chunk per window when
asked (as the recipes' ``--memory`` gives one; half the rows' marked real). Medians over repeats
after a warm-up step; the shipped worlds' size (``WorldModelConfig.compact``) with random
weights, on the CPU. The model given is trained in place (its weights move a little).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from functools import partial
from typing import Any

import torch
from torch import Tensor

from gym_worldmodel.bench import median_seconds
from gym_worldmodel.models import DTYPES, WorldModel, precision
from gym_worldmodel.models.dit import CausalChunkDiT
from gym_worldmodel.training.losses import TeacherLossConfig, teacher_loss


def train_benchmark(
    model: WorldModel,
    batch: int,
    chunks: Sequence[int],
    dtypes: Sequence[str],
    repeats: int,
    memory: bool = False,
) -> dict[str, Any]:
    """Measure and print; returns the figures (seconds per step, windows and tokens per second)."""
    cfg = model.config.dit
    dit = model.dit.train()
    opt = torch.optim.AdamW(dit.parameters(), lr=1e-5)
    gen = torch.Generator().manual_seed(0)
    loss_config = TeacherLossConfig(shift=model.config.sampler.shift)
    results: dict[str, Any] = {
        "batch": batch,
        "parameters": model.num_parameters()["dit"],
        "memory": memory,
    }
    print(
        f"DiT {results['parameters'] / 1e6:.2f}M parameters, batch {batch} windows, "
        f"{cfg.tokens_per_chunk} tokens a chunk, {'a' if memory else 'no'} memory chunk; "
        "teacher loss + backward + AdamW"
    )
    latent = (cfg.latent_channels, cfg.latent_size, cfg.latent_size)
    extra = {}
    if memory:
        extra["memory"] = torch.randn(batch, cfg.chunk_frames, *latent, generator=gen)
        extra["memory_valid"] = torch.arange(batch) % 2 == 0
    for n in chunks:
        frames = n * cfg.chunk_frames
        latents = torch.randn(batch, frames, *latent, generator=gen)
        actions = torch.randn(batch, frames, cfg.action_dim, generator=gen)
        window = (latents, actions, torch.arange(batch) % len(cfg.modalities))
        for name in dtypes:
            step = partial(_step, dit, opt, window, extra, gen, loss_config, DTYPES[name])
            seconds = median_seconds(step, repeats, warmup=1)
            row = {
                "seconds_per_step": seconds,
                "windows_per_s": batch / seconds,
                "tokens_per_s": batch * n * cfg.tokens_per_chunk / seconds,
            }
            results[f"{name}_chunks_{n}"] = row
            print(
                f"  {n:>2} chunks, {name:>8}: {seconds:.3f} s a step, "
                f"{row['windows_per_s']:.1f} windows/s, {row['tokens_per_s']:.0f} tokens/s"
            )
    results["time"] = time.strftime("%Y-%m-%d %H:%M")
    return results


def _step(
    dit: CausalChunkDiT,
    opt: torch.optim.Optimizer,
    window: tuple[Tensor, Tensor, Tensor],
    extra: dict[str, Tensor],
    gen: torch.Generator,
    loss_config: TeacherLossConfig,
    dtype: torch.dtype,
) -> None:
    """One optimizer step of the teacher loss on ``window`` (latents, actions, modality).

    ``extra`` holds the memory chunk and its validity, or nothing.
    """
    with precision("cpu", dtype):
        loss, _ = teacher_loss(dit, *window, gen, loss_config, **extra)
    loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)
