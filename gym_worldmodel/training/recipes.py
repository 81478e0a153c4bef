"""Training recipes, one per stage of the recipe in docs/training.md.

The VAE (and its decoder alone) on frames; then, with the VAE frozen, the teacher on chunk
windows, the student distilled from it, self-forcing on the model's own rollouts (after the
latent action probe, ``action_probe.py``, when it has an action term) and the learned flow.

Each writes its run directory (checkpoint, losses, plot) and, with each checkpoint, a loadable
checkpoint in ``<run>/model`` (``config.json`` + ``model.safetensors``, and the start frames of
its data's worlds in ``start_frames/``): ``fitting.py``'s plumbing, which they share.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path

import torch

from gym_worldmodel import hub
from gym_worldmodel.envs.pose import EgoShift, car_box
from gym_worldmodel.models import WorldModel, WorldModelConfig
from gym_worldmodel.sources.episodes import (
    DatasetError,
    check_datasets,
    load_episodes,
    read_card,
)
from gym_worldmodel.training.action_probe import probe_train_config, train_action_probe
from gym_worldmodel.training.config import (
    MEMORY_GAP,
    PROBE_STEPS,
    SELF_FORCING_NFE,
    STUDENT_NFE,
    SelfForcingConfig,
    TeacherLossConfig,
    TrainConfig,
)
from gym_worldmodel.training.critic import ChunkCritic
from gym_worldmodel.training.data import (
    Balanced,
    Frames,
    batch_latents,
    batch_memory,
    chunk_windows,
    reads_more_than_data,
    ring_windows,
)
from gym_worldmodel.training.distill import DistillConfig, student_loss
from gym_worldmodel.training.fitting import (
    anchor_motion_rates,
    checked,
    fit,
    fit_action_scale,
    save_model,
    trained_on,
    with_latent_scale,
)
from gym_worldmodel.training.flow import PairNet, action_flow_loss, pair_loss
from gym_worldmodel.training.losses import VAELossConfig, teacher_loss, vae_loss
from gym_worldmodel.training.runs import seeded
from gym_worldmodel.training.self_forcing import self_forcing_loss
from gym_worldmodel.training.start_frames import RunStartFrames
from gym_worldmodel.training.trainer import Trainer


@seeded
def train_vae(
    data: Sequence[Path],
    run_dir: Path,
    config: WorldModelConfig,
    train: TrainConfig,
    progress: bool = True,
) -> WorldModel:
    """Train the VAE on every training frame of ``data``; sets the latent scaling factor.

    The model runs at the frame rate the data was recorded at (the cards' ``fps``).
    """
    rates = {card["fps"] for d in data if "fps" in (card := read_card(Path(d)))}
    if len(rates) > 1:
        raise DatasetError(f"the datasets were recorded at {sorted(rates)} frames/s: one per model")
    try:
        config = dataclasses.replace(
            config, fps=rates.pop() if rates else config.fps, trained_modalities=()
        )  # the denoiser is untrained yet
    except ValueError as err:
        where = ", ".join(str(d) for d in data)
        raise DatasetError(
            f"{where}: {err}: a step is one chunk; record the data at such a rate"
        ) from err
    check_datasets(config, data)
    starts = RunStartFrames.pick(data)
    episodes = [ep for d in data for ep in load_episodes(Path(d), "train")]
    model = WorldModel(config).to(train.device)
    loss_config = VAELossConfig()
    frames, out = Frames(episodes), Path(run_dir) / "model"
    trainer = Trainer(
        model.vae,
        frames,
        lambda batch, gen: vae_loss(model.vae, batch, gen, loss_config),
        run_dir,
        train,
        # the loadable model at every checkpoint too, with the latent scale of that moment
        on_save=lambda: save_model(with_latent_scale(model, frames), out, starts),
    )
    trainer.train(progress)
    model = with_latent_scale(model, frames)
    save_model(model, out, starts)
    return model


@seeded
def train_decoder(
    data: Sequence[Path], init: str | Path, run_dir: Path, train: TrainConfig, progress: bool = True
) -> WorldModel:
    """Fine-tune the VAE decoder of the world ``init`` on every training frame of ``data``.

    The encoder, and so the latent space the DiT was trained in, stays as it is: the DiT needs
    no retraining, and what improves is how its latents are drawn (a short VAE run leaves a
    decoder that loses small things, such as the driving world's cars). Each dataset is drawn
    equally often, whatever its size. The loss is the VAE's (L1 + MSE of posterior samples).
    """
    model = checked(hub.from_pretrained(init), data)
    starts = RunStartFrames.pick(data, model.checkpoint_dir)
    model.vae.encoder.requires_grad_(False)
    frames = Balanced([Frames(load_episodes(Path(d), "train")) for d in data])
    loss_config = VAELossConfig()

    def loss(batch: torch.Tensor, gen: torch.Generator):
        return vae_loss(model.vae, batch, gen, loss_config)

    return fit(model, frames, loss, run_dir, train, progress, starts, part=model.vae.decoder)


@seeded
def train_teacher(
    data: Sequence[Path],
    init: str | Path,
    run_dir: Path,
    train: TrainConfig,
    n_chunks: int | None = None,
    loss_config: TeacherLossConfig | None = None,
    progress: bool = True,
    memory: bool = False,
    frame_anchor: bool = False,
    memory_only: float = TeacherLossConfig.memory_only,
    anchor_sigma: float | None = None,
    clean_anchors: bool = TeacherLossConfig.clean_anchors,
    motion_focus: float = TeacherLossConfig.motion_focus,
    action_scale: bool = False,
) -> WorldModel:
    """Train the DiT as a flow-matching teacher on windows from ``data`` (all modalities).

    Args:
        data: Dataset directories; each card names its modality, so one backbone learns them all.
        init: Checkpoint with the trained VAE (``train_vae``'s ``<run>/model``), or a teacher
            to fine-tune (its DiT weights are kept).
        run_dir: This run's directory.
        train: Optimisation settings.
        n_chunks: Chunks per window (default: sink + window + 2, so the ring wraps).
        loss_config: Noise-level sampling and action dropout, as given (its own ``shift``
            too). Default: the model's sampler shift and the keywords ``memory_only``,
            ``clean_anchors`` and ``motion_focus`` below, which are its fields (give them here
            or in it, not both).
        progress: Show a progress bar.
        memory: Give windows of posed worlds their retrieved memory chunk (spatial memory).
        frame_anchor: Add the frame anchor (``DiTConfig.frame_anchor``) to an ``init`` that has
            none, starting at zero.
        memory_only: Fraction of windows with a memory hit trained from the memory alone
            (``TeacherLossConfig.memory_only``); needs ``memory``.
        anchor_sigma: Switch ``init`` to predicting frames as changes from their anchor
            (``WorldModel.with_anchor_sigma``: the output layer restarts at zero, so training
            starts from repeating the last frame); None keeps the model's parameterization.
        clean_anchors: Anchor chunks to clean recorded frames
            (``TeacherLossConfig.clean_anchors``).
        motion_focus: Weight the loss towards where the picture was moving
            (``TeacherLossConfig.motion_focus``).
        action_scale: Refit the action input factors (``DiTConfig.action_scale``) to 1 / std of
            each dimension in ``data`` (:func:`fit_action_scale`), the model's function kept.

    Frames are encoded once up front when the run reads more frames than the data holds, else
    batch by batch.
    """
    if loss_config is not None and (memory_only or clean_anchors or motion_focus):
        raise ValueError(
            "memory_only, clean_anchors and motion_focus are TeacherLossConfig fields: with "
            "loss_config given, set them there"
        )
    if (loss_config.memory_only if loss_config else memory_only) and not memory:
        raise ValueError("memory_only trains from retrieved memory: it needs memory=True")
    model = checked(hub.from_pretrained(init), data)
    starts = RunStartFrames.pick(data, model.checkpoint_dir)
    loss_config = loss_config or TeacherLossConfig(
        shift=model.config.sampler.shift,
        memory_only=memory_only,
        clean_anchors=clean_anchors,
        motion_focus=motion_focus,
    )
    if frame_anchor:
        model = model.with_frame_anchor()
    if anchor_sigma is not None and anchor_sigma != model.config.dit.anchor_sigma:
        model = model.with_anchor_sigma(anchor_sigma)
    if action_scale:
        model = model.with_action_scale(fit_action_scale(model, data))
    model.vae.requires_grad_(False)
    windows = ring_windows(model, data, train, n_chunks, memory, progress)

    def loss(batch: dict, gen: torch.Generator):
        latents = batch_latents(model, batch)
        return teacher_loss(
            model.dit,
            latents,
            batch["actions"],
            batch["modality"],
            gen,
            loss_config,
            **batch_memory(model, batch),
        )

    return fit(trained_on(model, data), windows, loss, run_dir, train, progress, starts)


@seeded
def train_student(
    data: Sequence[Path],
    teacher_dir: str | Path,
    run_dir: Path,
    train: TrainConfig,
    nfe: int = STUDENT_NFE,
    n_chunks: int | None = None,
    distill: DistillConfig | None = None,
    progress: bool = True,
    memory: bool = False,
    init: str | Path | None = None,
) -> WorldModel:
    """Distill a ``nfe``-step student from the teacher on its own rollouts (``distill.py``).

    The student starts as a copy of the teacher; its checkpoint samples deterministically with
    ``nfe`` steps. Windows have ``n_chunks`` chunks (default: sink + window + 2), so the student
    generates ``n_chunks - 2`` chunks of its own history before the one it is trained on.
    With ``memory``, windows of posed worlds carry their retrieved memory chunk, seen alike by
    student and teacher. ``init``: start from this student checkpoint instead (fine-tuning).
    """
    teacher = checked(hub.from_pretrained(teacher_dir, device=train.device), data)
    starts = RunStartFrames.pick(data, teacher.checkpoint_dir)
    taught = teacher.config.trained_modalities  # None: a checkpoint from before the record
    untaught = (
        []
        if taught is None
        else sorted({read_card(Path(d))["modality"] for d in data} - set(taught))
    )
    if untaught:
        raise DatasetError(
            f"the teacher {teacher_dir} never learned {untaught} actions (its trained_modalities: "
            f"{list(taught or [])}): a student distilled from it would learn noise; train a "
            "teacher on this data first (train teacher --init it)"
        )
    teacher.requires_grad_(False)
    # The student learns the teacher's guided flow (``DistillConfig.teacher_guidance``), so it
    # samples without guidance of its own; and without memory guidance where it learns the
    # teacher's memory-guided flow (``teacher_memory_guidance``), else with the teacher's.
    own = teacher.config.sampler
    distill = distill or DistillConfig()
    if distill.teacher_guidance is None:
        distill = dataclasses.replace(distill, teacher_guidance=own.guidance_scale)
    memory_guidance = 1.0 if distill.teacher_memory_guidance != 1.0 else own.memory_guidance
    sampler = dataclasses.replace(
        own,
        nfe=nfe,
        stochastic=False,
        context_t=0.0,
        guidance_scale=1.0,
        memory_guidance=memory_guidance,
    )
    student = WorldModel(dataclasses.replace(teacher.config, sampler=sampler))
    source = hub.from_pretrained(init) if init is not None else teacher
    if student.config.dit.frame_anchor:  # a student from before the anchor: add it at zero
        source = source.with_frame_anchor()
    student.load_state_dict(source.state_dict())
    # the weights are the init's: so is what their denoiser learned, before this run adds to it
    student.config = dataclasses.replace(
        student.config, trained_modalities=source.config.trained_modalities
    )
    student.vae.requires_grad_(False)
    windows = ring_windows(student, data, train, n_chunks, memory, progress)

    def loss(batch: dict, gen: torch.Generator):
        return student_loss(
            student.dit,
            sampler,
            teacher.dit,
            batch_latents(student, batch),
            batch["actions"],
            batch["modality"],
            gen,
            distill,
            **batch_memory(student, batch),
        )

    return fit(trained_on(student, data), windows, loss, run_dir, train, progress, starts)


@seeded
def train_flow(
    data: Sequence[Path],
    init: str | Path,
    run_dir: Path,
    train: TrainConfig,
    pair_steps: int | None = None,
    progress: bool = True,
) -> WorldModel:
    """Give ``init`` a flow warp of its anchors for the worlds of ``data`` and train it.

    Two stages (``training.flow``): a pair net learns the recorded flows (``<run_dir>/pair``,
    ``pair_steps`` steps, default ``train.steps``), then the world's warp regresses them from
    the frame and the action (``run_dir``). Only the warp changes; the DiT then learns to use
    the moved anchors in self-forcing. Both stages resume.
    """
    modalities = tuple(dict.fromkeys(read_card(Path(d))["modality"] for d in data))
    model = checked(hub.from_pretrained(init), data).with_anchor_flow(modalities)
    starts = RunStartFrames.pick(data, model.checkpoint_dir)
    model = model.to(train.device)
    model.requires_grad_(False)
    flow = model.flow
    assert flow is not None  # with_anchor_flow gave it one
    flow.requires_grad_(True)
    f = model.config.dit.chunk_frames
    windows = chunk_windows(model, data, 2, encode=False)
    pair = PairNet(model.config.dit.anchor_flow_width)
    pair_train = dataclasses.replace(train, steps=train.steps if pair_steps is None else pair_steps)
    Trainer(
        pair,
        windows,
        lambda batch, gen: pair_loss(pair, batch, f),
        Path(run_dir) / "pair",
        pair_train,
    ).train(progress)
    pair.eval().requires_grad_(False)

    def loss(batch: dict, gen: torch.Generator):
        return action_flow_loss(flow, pair, batch, f)

    return fit(model, windows, loss, run_dir, train, progress, starts, part=flow)


@seeded
def train_self_forcing(
    data: Sequence[Path],
    init: str | Path,
    run_dir: Path,
    train: TrainConfig,
    nfe: int = SELF_FORCING_NFE,
    config: SelfForcingConfig | None = None,
    progress: bool = True,
    memory: bool = False,
    probe_steps: int = PROBE_STEPS,
    balanced: bool = False,
    anchor_motion: bool = False,
    anchor_ego: bool = False,
    memory_gap: int = MEMORY_GAP,
) -> WorldModel:
    """Fine-tune ``init`` on its own rollouts against the recorded future (``self_forcing.py``).

    The checkpoint samples deterministically with ``nfe`` steps, the sampler its history is
    generated with in training. Windows hold ``config.max_chunks + 2`` chunks; with ``memory``,
    windows of posed worlds carry their retrieved memory chunk, which ends ``memory_gap`` frames
    or more before the window's last frame. With ``config.action_weight``,
    the latent action probe is first trained for ``probe_steps`` on the same windows (in
    ``<run_dir>/action-probe``). With ``config.adversarial_weight``, a fresh chunk critic is
    trained alongside the model (in its checkpoint; not shipped). With ``balanced``, each
    modality's windows are drawn equally often (``Balanced.by_modality``); else in proportion
    to the frames each dataset holds. With ``anchor_motion``, an ``init`` without moving anchors
    gains them (:func:`anchor_motion_rates`); one whose rates were written before the zoom
    column keeps its shifts and gains the fitted zoom; one that has them keeps its own. With
    ``anchor_ego``, the driving world's anchors move with the car (``WorldModel.with_anchor_ego``).
    """
    if memory_gap and not memory:
        raise ValueError("memory_gap places the retrieved memory chunk: it needs memory=True")
    tuned = _self_forcing_start(init, data, nfe, anchor_ego, anchor_motion)
    starts = RunStartFrames.pick(data, tuned.checkpoint_dir)
    sampler = tuned.config.sampler
    tuned.vae.requires_grad_(False)
    tuned.to(train.device)  # encodes the frames there too
    config = config or SelfForcingConfig()
    n = config.max_chunks + 2
    # only a run with an action term trains the probe
    probe_train = probe_train_config(train, probe_steps) if config.action_weight else None
    # encoded once up front when the run, or the probe it trains first, reads more frames than
    # the data holds (the probe's PROBE_STEPS batches of PROBE_BATCH_SIZE windows read many times
    # a short run's)
    reads = [train] if probe_train is None else [train, probe_train]
    encode = any(reads_more_than_data(data, r, n * tuned.config.dit.chunk_frames) for r in reads)
    windows = chunk_windows(
        tuned, data, n, encode=encode, memory=memory, progress=progress, memory_gap=memory_gap
    )
    probe = None
    if probe_train is not None:
        probe = train_action_probe(
            tuned, data, windows, Path(run_dir) / "action-probe", probe_train, progress
        )
    critic = ChunkCritic(tuned.config.dit) if config.adversarial_weight else None

    def loss(batch: dict, gen: torch.Generator):
        return self_forcing_loss(
            tuned.dit,
            sampler,
            batch_latents(tuned, batch),
            batch["actions"],
            batch["modality"],
            gen,
            config,
            **batch_memory(tuned, batch, chunk=None),  # each chunk's: the loss picks its own
            probe=probe,
            critic=critic,
        )

    drawn = Balanced.by_modality(windows) if balanced else windows
    tuned = trained_on(tuned, data)
    return fit(tuned, drawn, loss, run_dir, train, progress, starts, alongside=critic)


def _self_forcing_start(
    init: str | Path, data: Sequence[Path], nfe: int, anchor_ego: bool, anchor_motion: bool
) -> WorldModel:
    """``init`` as :func:`train_self_forcing` starts from it: its sampler, anchors and motion.

    The model samples deterministically with ``nfe`` steps; with ``anchor_ego``, the driving
    world's anchors move with the car; with ``anchor_motion``, a model without moving anchors,
    or with rates written before the zoom column, gains the fitted ones (shifts kept).
    """
    if anchor_ego and "driving" not in {read_card(Path(d))["modality"] for d in data}:
        raise DatasetError(  # (before the model loads)
            "anchor_ego (--anchor-ego) moves the driving world's anchors with the car, and "
            "none of the data is the driving world's: give a driving dataset, or leave it out"
        )
    tuned = checked(hub.from_pretrained(init), data)
    tuned = tuned.with_sampler(nfe=nfe, stochastic=False, context_t=0.0)
    if anchor_ego and "driving" not in tuned.config.dit.anchor_ego:
        px_per_m = EgoShift.px_per_m_of(tuned.config, "driving")
        tuned = tuned.with_anchor_ego(("driving",), car_box(tuned.config.vae.image_size, px_per_m))
    own = tuned.dit.anchor_motion
    if anchor_motion and (own is None or not own[..., 2].any()):  # none, or written unzoomed
        rates = anchor_motion_rates(tuned, data)
        if own is not None:  # rates written before the zoom keep their shifts
            for name, rate in rates.items():
                rate[:, :2] = own[tuned.config.dit.modality_id(name), : len(rate), :2].detach()
        tuned = tuned.with_anchor_motion(rates)
    return tuned
