"""What the recipes share: fitting part of a model, writing it, settings fitted from the data.

:func:`fit` trains a part of a model (its DiT, decoder, flow warp) resumably and writes the
loadable model with every checkpoint (:func:`save_model`); :func:`checked` and :func:`trained_on`
tie a model to the data it trains on. The VAE's latent scale, the DiT's action scale and its
anchor motion are fitted from the data (:func:`with_latent_scale`, :func:`fit_action_scale`,
:func:`anchor_motion_rates`). The recipes themselves are in ``recipes.py``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from gym_worldmodel import hub
from gym_worldmodel.models import WorldModel
from gym_worldmodel.sources.episodes import check_datasets, load_episodes, read_card
from gym_worldmodel.training.config import TrainConfig
from gym_worldmodel.training.data import Frames
from gym_worldmodel.training.motion import fit_anchor_motion
from gym_worldmodel.training.start_frames import RunStartFrames
from gym_worldmodel.training.trainer import LossFn, Trainer


def with_latent_scale(model: WorldModel, frames: Frames, sample: int = 512) -> WorldModel:
    """A copy of ``model`` whose VAE scales latents to unit standard deviation on ``frames``."""
    idx = torch.linspace(0, len(frames) - 1, min(sample, len(frames))).long()
    batch = torch.stack([frames[int(i)] for i in idx]).to(model.device)
    training = model.training
    model.eval()
    with torch.no_grad():
        std = model.vae.encode(batch).std().item() / model.config.vae.scaling_factor
    model.train(training)  # a checkpoint mid-run leaves the run's model as it was
    vae = dataclasses.replace(model.config.vae, scaling_factor=1.0 / max(std, 1e-6))
    scaled = WorldModel(dataclasses.replace(model.config, vae=vae)).to(model.device)
    scaled.load_state_dict(model.state_dict())
    return scaled


def trained_on(model: WorldModel, data: Sequence[Path]) -> WorldModel:
    """``model``, its config recording that its denoiser is trained on ``data``'s modalities too.

    A line of checkpoints from before the record (``trained_modalities`` None) stays unknown.
    """
    done = model.config.trained_modalities
    if done is not None:
        seen = {read_card(Path(d))["modality"] for d in data} | set(done)
        names = tuple(m for m in model.config.dit.modality_names if m in seen)
        model.config = dataclasses.replace(model.config, trained_modalities=names)
    return model


def checked(model: WorldModel, data: Sequence[Path]) -> WorldModel:
    """``model``, once ``data`` is known to suit it (``sources.episodes.check_datasets``)."""
    check_datasets(model.config, data)
    return model


def device_of(module: nn.Module) -> torch.device:
    """The device of ``module``'s parameters (a probe's; a ``WorldModel`` has ``.device``)."""
    return next(module.parameters()).device


def anchor_motion_rates(
    model: WorldModel, data: Sequence[Path], min_explained: float = 0.5
) -> dict[str, np.ndarray]:
    """Anchor motion fitted to each modality's training episodes in ``data``.

    A modality whose fit explains less than ``min_explained`` of its frames' shifts (a fixed
    camera, a road that scrolls with speed rather than with an action) is left out: its anchors
    stay still. Prints each fit.
    """
    scale = model.config.dit.latent_size / model.config.vae.image_size
    rates = {}
    for modality, eps in _train_episodes_by_modality(data).items():
        rate, explained = fit_anchor_motion(eps, scale)
        kept = explained >= min_explained
        print(f"anchor motion {modality}: explains {explained:.2f} of the frame shifts", end="")
        print(f"; largest rate {np.abs(rate).max():.2f} latent px" if kept else "; left still")
        if kept:
            rates[modality] = rate[: model.config.dit.modalities[modality]]
    return rates


def fit_action_scale(model: WorldModel, data: Sequence[Path]) -> dict[str, tuple[float, ...]]:
    """``DiTConfig.action_scale`` of each modality in ``data``, printing each fit.

    The factors are 1 / std of each action dimension over the modality's training episodes, and
    1 where a dimension is (nearly) constant.
    """
    scales = {}
    for modality, eps in _train_episodes_by_modality(data).items():
        width = model.config.dit.modalities[modality]
        std = np.concatenate([e.actions[:, :width] for e in eps]).std(0)
        scales[modality] = tuple(float(1 / s) if s > 1e-3 else 1.0 for s in std)
        print(f"action scale {modality}: " + " ".join(f"{v:.2f}" for v in scales[modality]))
    return scales


def _train_episodes_by_modality(data: Sequence[Path]) -> dict[str, list]:
    episodes: dict[str, list] = {}
    for d in data:
        episodes.setdefault(read_card(Path(d))["modality"], []).extend(
            load_episodes(Path(d), "train")
        )
    return episodes


def save_model(model: WorldModel, out: Path, starts: RunStartFrames | None) -> None:
    """Write ``model`` to ``out`` (a run's ``model``) with the run's ``starts`` (None: none).

    The start frames first: ``hub.save_pretrained`` then adds those of the checkpoint the
    model was loaded from only for worlds that ``out`` has none of.
    """
    if starts is not None:
        starts.write(out)
    hub.save_pretrained(model, out)


def fit(
    model: WorldModel,
    windows: torch.utils.data.Dataset,
    loss: LossFn,
    run_dir: Path,
    train: TrainConfig,
    progress: bool,
    starts: RunStartFrames | None = None,
    alongside: nn.Module | None = None,
    part: nn.Module | None = None,
) -> WorldModel:
    """Train ``part`` of ``model`` (its DiT if None) with ``loss`` (resumable); write the model.

    The whole model goes to ``<run_dir>/model`` at every checkpoint (so ``eval`` and ``ship``
    take a run that is still training, or was stopped) and at the end, each time with the
    run's start frames ``starts`` (:func:`save_model`). ``alongside``: a module trained by the
    same loss (a critic), checkpointed with ``part`` and not part of the written model.
    """
    model.to(train.device)
    part = model.dit if part is None else part
    module = part if alongside is None else nn.ModuleDict({"dit": part, "alongside": alongside})
    out = Path(run_dir) / "model"
    write = lambda: save_model(model, out, starts)  # noqa: E731
    Trainer(module, windows, loss, run_dir, train, on_save=write).train(progress)
    model.eval()
    write()
    return model
