"""Inverse dynamics on latents: what a chunk's motion says about the actions that made it.

A world model trained only by flow matching can lower its loss by moving too little: where the
next view is uncertain, the mean of the possible views is a blur that hardly moves, whatever the
action. :class:`LatentActionProbe` is trained on recorded latents to read each frame's action
from the chunk and the frame before it; frozen, it then scores the chunks the model predicts
(``SelfForcingConfig.action_weight``), so a chunk that does not show its action costs something.

It reads latents, not pixels, and is a different network from the evaluation's probe
(``evaluation.InverseDynamicsProbe``, trained on real frames only), so the evaluation still
measures controllability rather than the score this one was trained against.

A self-forcing run with an action term trains it first (:func:`train_action_probe`, with
:func:`probe_train_config`'s settings), checked on training episodes it did not fit.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path
from typing import cast

import numpy as np
import torch
from torch import Tensor, nn

from gym_worldmodel.files import atomic_write
from gym_worldmodel.models import WorldModel
from gym_worldmodel.models.config import DiTConfig
from gym_worldmodel.training.config import TrainConfig
from gym_worldmodel.training.data import ChunkWindows, batch_latents, encode_episodes
from gym_worldmodel.training.fitting import device_of
from gym_worldmodel.training.trainer import Trainer, to_device

#: Scales the differences between successive latent frames the probe reads (unit-std latents
#: move by ~0.1-0.5 a frame); not ``evaluation.MOTION_GAIN``, the pixel probe's gain.
LATENT_DIFFERENCE_GAIN = 4.0


class LatentActionProbe(nn.Module):
    """Previous latent frame + a chunk -> each frame's action, standardised per modality.

    Args:
        config: Latent shape, chunk length, padded action width and the modalities.
        width: Channels of the first convolution.

    The standardisation (``set_action_stats``) is part of the state: a dimension whose action
    never varies in the data, or lies beyond its modality's width, is left out of the loss.
    """

    mean: Tensor  # (modalities, action_dim) buffers, registered in __init__
    std: Tensor
    used: Tensor

    def __init__(self, config: DiTConfig, width: int = 64) -> None:
        super().__init__()
        c, f, a, m = (
            config.latent_channels,
            config.chunk_frames,
            config.action_dim,
            len(config.modalities),
        )
        side = config.latent_size // 4
        self.frames, self.action_dim, self.modalities = f, a, m
        self.net = nn.Sequential(
            nn.Conv2d(c * (f + 1), width, 3, 1, 1),
            nn.GroupNorm(8, width),
            nn.SiLU(),
            nn.Conv2d(width, 2 * width, 4, 2, 1),
            nn.GroupNorm(8, 2 * width),
            nn.SiLU(),
            nn.Conv2d(2 * width, 2 * width, 4, 2, 1),
            nn.GroupNorm(8, 2 * width),
            nn.SiLU(),
            nn.Flatten(),
            nn.Linear(2 * width * side * side, 256),
            nn.SiLU(),
            nn.Linear(256, m * f * a),
        )
        self.register_buffer("mean", torch.zeros(m, a))
        self.register_buffer("std", torch.ones(m, a))
        self.register_buffer("used", torch.zeros(m, a))

    def set_action_stats(self, modality: int, actions: Tensor) -> None:
        """Standardise ``modality``'s actions by the mean and std of ``actions`` ``(n, width)``."""
        if len(actions) < 2:
            return
        width, std = actions.shape[1], actions.float().std(0)
        self.mean[modality, :width] = actions.float().mean(0)
        self.std[modality, :width] = std.clamp_min(1e-6)
        self.used[modality, :width] = (std > 1e-6).float()

    def forward(self, previous: Tensor, chunk: Tensor, modality: Tensor) -> Tensor:
        """``previous`` ``(B, 1, C, h, w)``, ``chunk`` ``(B, F, C, h, w)`` -> ``(B, F, A)``."""
        x = torch.cat((previous, chunk), 1).float()
        x = torch.cat((x[:, :1], LATENT_DIFFERENCE_GAIN * x.diff(dim=1)), 1)
        out = self.net(x.flatten(1, 2)).view(-1, self.modalities, self.frames, self.action_dim)
        return out[torch.arange(len(out), device=out.device), modality]

    def loss(
        self,
        previous: Tensor,
        chunk: Tensor,
        actions: Tensor,
        modality: Tensor,
        rows: Tensor | None = None,
    ) -> Tensor:
        """Mean squared error of the standardised actions ``(B, F, A)`` over the dimensions used.

        ``rows`` (``(B,)`` bool) limits it to some rows; zero (with a gradient) if none is left.
        """
        target = (actions.float() - self.mean[modality][:, None]) / self.std[modality][:, None]
        weight = self.used[modality][:, None].expand_as(target)
        if rows is not None:
            weight = weight * rows[:, None, None].float()
        error = (self(previous, chunk, modality) - target).pow(2) * weight
        return error.sum() / weight.sum().clamp_min(1.0)


def probe_windows_loss(
    probe: LatentActionProbe,
    latents: Tensor,
    actions: Tensor,
    modality: Tensor,
    chunk_frames: int,
    gen: torch.Generator,
    noise: float = 0.2,
) -> tuple[Tensor, dict[str, Tensor]]:
    """Training loss of the probe on recorded windows ``(B, N * F, ...)``.

    One chunk after the sink is drawn per row; its latents (and the frame before) get Gaussian
    noise of a std drawn up to ``noise``, so the probe also reads the imperfect latents a model
    predicts.
    """
    b, f = latents.shape[0], chunk_frames
    n = latents.shape[1] // f
    dev = latents.device
    j = torch.randint(1, n, (b,), generator=gen, device=dev)
    rows = torch.arange(b, device=dev)[:, None]
    frames = j[:, None] * f + torch.arange(-1, f, device=dev)[None]  # the frame before, the chunk
    x = latents[rows, frames].float()
    std = noise * torch.rand(b, 1, 1, 1, 1, generator=gen, device=dev)
    x = x + std * torch.randn(x.shape, generator=gen, device=dev)
    loss = probe.loss(x[:, :1], x[:, 1:], actions[rows, frames[:, 1:]], modality)
    return loss, {"action": loss.detach()}


PROBE_MAX_ERROR = 0.8  # validation error (about 1 - R^2) from which a modality goes unscored
PROBE_CHECK_EVERY = 6  # every 6th training episode checks the probe (as eval's probe does)
#: The latent action probe's training in a self-forcing run (:func:`probe_train_config`; its
#: steps are ``probe_steps``): windows per batch, AdamW learning rate, warm-up steps (all of a
#: shorter run's) and the fraction of its steps cooling the learning rate down.
PROBE_BATCH_SIZE = 64
PROBE_LR = 1e-3
PROBE_WARMUP = 50
PROBE_COOLDOWN = 0.2


def train_action_probe(
    model: WorldModel,
    data: Sequence[Path],
    windows: torch.utils.data.ConcatDataset,
    run_dir: Path,
    train: TrainConfig,
    progress: bool = True,
) -> LatentActionProbe:
    """Train (or resume) the latent action probe on ``windows`` of recorded latents; frozen.

    ``train`` gives its steps, batch, dtype and seed. Every ``PROBE_CHECK_EVERY``-th training
    episode of each dataset is kept out of the probe's training to check it (held-out episodes
    are ``eval``'s and never steer training); its error on their windows (standardised units: 1
    minus it is about the R^2 of the actions it reads) goes to ``<run_dir>/validation.json``. A
    probe that cannot read a modality's actions from real latents cannot teach the model to
    show them, and what it learned of the training windows would only push the model towards
    them: a modality whose mean validation error is ``PROBE_MAX_ERROR`` or more is left out of
    its loss. A dataset of one episode has nothing to check against and stays scored.
    """
    cfg = model.config.dit
    probe = LatentActionProbe(cfg)
    datasets = cast(list[ChunkWindows], windows.datasets)
    for ds in datasets:
        probe.set_action_stats(
            ds.modality, torch.from_numpy(np.concatenate([ep.actions for ep in ds.episodes]))
        )
    fitted, checks = _probe_windows(model, data, datasets)

    def loss(batch: dict, gen: torch.Generator):
        latents = batch_latents(model, batch)
        return probe_windows_loss(
            probe, latents, batch["actions"], batch["modality"], cfg.chunk_frames, gen
        )

    Trainer(probe, torch.utils.data.ConcatDataset(fitted), loss, run_dir, train).train(progress)
    probe.eval().requires_grad_(False)
    validation = _validation_errors(probe, checks, cfg.chunk_frames, train.seed)
    errors: dict[int, list[float]] = {}
    for name, ds in checks.items():
        errors.setdefault(ds.modality, []).append(validation[name])
    for m, errs in errors.items():
        if np.mean(errs) >= PROBE_MAX_ERROR:
            probe.used[m] = 0.0
    scored = [name for m, name in enumerate(cfg.modalities) if probe.used[m].any()]
    record = {"validation_error": validation, "scored_modalities": scored}
    text = json.dumps(record, indent=1) + "\n"
    atomic_write(Path(run_dir) / "validation.json", lambda f: f.write(text.encode()))
    # printed with or without progress bars: an action term that scores no modality adds nothing
    print(
        f"action probe: validation error {validation}; scores "
        + (str(scored) if scored else "no modality (the action term will add nothing)")
    )
    return probe


def _probe_windows(
    model: WorldModel, data: Sequence[Path], datasets: list[ChunkWindows]
) -> tuple[list[ChunkWindows], dict[str, ChunkWindows]]:
    """The windows the probe fits, per dataset, and those it is checked on, by dataset name.

    Every ``PROBE_CHECK_EVERY``-th episode of a dataset of more than one is checked on, as
    encoded latents; the others are fitted.
    """
    fitted, checks = [], {}
    for d, ds in zip(data, datasets, strict=True):
        eps = ds.episodes
        check = (
            [ep for i, ep in enumerate(eps) if i % PROBE_CHECK_EVERY == 0] if len(eps) > 1 else []
        )
        kept = [ep for i, ep in enumerate(eps) if not check or i % PROBE_CHECK_EVERY]
        # Plain windows of the same shape, on purpose: the probe reads a chunk and the
        # modality's own action columns, so a window's retrieved memory and the scene-shift
        # columns of anchors that move with the car are left out.
        fitted.append(ChunkWindows(kept, ds.f, ds.n, ds.action_dim, ds.modality, key=ds.key))
        if check:
            encoded = check if ds.key == "latents" else encode_episodes(model, check)
            checks[str(d)] = ChunkWindows(
                encoded, ds.f, ds.n, ds.action_dim, ds.modality, key="latents"
            )
    return fitted, checks


def _validation_errors(
    probe: LatentActionProbe, checks: dict[str, ChunkWindows], chunk_frames: int, seed: int
) -> dict[str, float]:
    """The trained probe's error on up to 256 windows of each dataset's check episodes."""
    validation: dict[str, float] = {}
    for name, ds in checks.items():
        batch = torch.utils.data.default_collate([ds[i] for i in range(0, len(ds), 7)[:256]])
        batch = to_device(batch, device_of(probe))
        gen = torch.Generator(device_of(probe)).manual_seed(seed)
        with torch.no_grad():
            validation[name] = probe_windows_loss(
                probe,
                batch["latents"],
                batch["actions"],
                batch["modality"],
                chunk_frames,
                gen,
                noise=0.0,
            )[0].item()
    return validation


def probe_train_config(train: TrainConfig, probe_steps: int) -> TrainConfig:
    """The latent action probe's settings in a self-forcing run of ``train``'s."""
    return dataclasses.replace(
        train,
        steps=probe_steps,
        batch_size=PROBE_BATCH_SIZE,
        lr=PROBE_LR,
        save_every=probe_steps,
        warmup=min(PROBE_WARMUP, probe_steps),
        cooldown=PROBE_COOLDOWN,
    )
