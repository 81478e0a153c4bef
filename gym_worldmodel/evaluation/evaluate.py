"""Every measurement of one world: open loop, controllability and stability."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from gym_worldmodel.evaluation.control import (
    PROBE_DIMS,
    PROBE_WINDOW,
    Probe,
    above_chance,
    control_by_horizon,
    control_ratio,
    majority_score,
    probe_targets,
    probe_windows,
    scene_motion_by_key,
    window_centres,
)
from gym_worldmodel.evaluation.metrics import (
    frame_motion,
    frame_stats,
    gain_interval,
    pooled_psnr,
    ssim,
)
from gym_worldmodel.evaluation.open_loop import (
    autoencode,
    long_inputs,
    open_loop_windows,
    rollout,
    with_sampler,
)
from gym_worldmodel.evaluation.probe_cache import cached_probe
from gym_worldmodel.models import WorldModel
from gym_worldmodel.sources.episodes import Episode, check_datasets, load_episodes

SCENE_MOTION_STEPS = 16  # steps of each rollout whose scene motion is measured


@dataclass(frozen=True)
class EvalConfig:
    """What :func:`evaluate_world` measures and how much.

    Attributes:
        horizons: Steps (chunks) after the start at which open-loop quality is reported.
        starts_per_episode: Start frames per held-out episode (spread inside its length).
        teacher_nfe: Euler steps of the teacher baseline.
        teacher_horizon: Largest horizon the teacher baseline runs to (it costs nfe + 1 passes
            per step).
        probe_steps: Training steps of the inverse-dynamics probe.
        stability_steps: Steps of the long rollouts.
        stability_rows: Long rollouts per world.
        seed: Seeds the rollouts' noise and the probe.
    """

    horizons: tuple[int, ...] = (1, 4, 16, 64)
    starts_per_episode: int = 2
    teacher_nfe: int = 32
    teacher_horizon: int = 16
    probe_steps: int = 1500
    stability_steps: int = 1000
    stability_rows: int = 4
    seed: int = 0

    def __post_init__(self) -> None:
        if not self.horizons or min(self.horizons) < 1:
            raise ValueError(f"horizons must be steps >= 1, got {self.horizons}")
        counts = ("starts_per_episode", "teacher_nfe", "teacher_horizon", "probe_steps")
        for name in (*counts, "stability_steps", "stability_rows"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")

    @classmethod
    def budget(cls) -> EvalConfig:
        """A minute-scale setting for smoke tests."""
        return cls(
            horizons=(1, 3),
            starts_per_episode=1,
            teacher_nfe=4,
            teacher_horizon=3,
            probe_steps=5,
            stability_steps=4,
            stability_rows=2,
        )


@dataclass
class WorldResult:
    """Figures of one world; ``curves`` hold per-horizon arrays for plots."""

    world: str
    modality: str
    episodes: int
    rollouts: int
    frames_per_step: int  # the model's chunk: a step's frames
    psnr: dict[str, dict[int, float]] = field(default_factory=dict)
    ssim: dict[str, dict[int, float]] = field(default_factory=dict)
    #: 90% interval of each run's PSNR gain over copying the last frame, per horizon, from a
    #: bootstrap over the held-out episodes (``metrics.gain_interval``).
    gain_interval: dict[str, dict[int, tuple[float, float]]] = field(default_factory=dict)
    control: dict[str, Any] = field(default_factory=dict)
    stability: dict[str, Any] = field(default_factory=dict)


def evaluate_world(
    model: WorldModel,
    data: Path,
    config: EvalConfig,
    teacher: WorldModel | None = None,
    progress: bool = True,
    probe_cache: Path | None = None,
    resume: Path | None = None,
) -> tuple[WorldResult, dict[str, np.ndarray]]:
    """Every measurement of one world; also returns sample frames for the strips.

    ``probe_cache``: the folder that keeps trained inverse-dynamics probes
    (:func:`.probe_cache.cached_probe`; ``eval``'s is ``probe_cache.default_probe_cache()``);
    None trains the probe and keeps nothing. ``resume``: a folder where the rollouts and the
    probe's training keep their progress, so that a rerun goes on where a stopped one saved
    (:mod:`gym_worldmodel.evaluation.resume`; ``eval``'s is ``OUT/.resume``); None keeps nothing.
    """
    (card,) = check_datasets(model.config, [data])
    world, modality = card["world"], card["modality"]
    model.config.check_trained(modality, world)
    heldout = load_episodes(Path(data), "heldout")
    f, horizon = model.config.dit.chunk_frames, max(config.horizons)
    window = PROBE_WINDOW[1] - PROBE_WINDOW[0]
    if horizon * f + 1 < window:
        raise ValueError(
            f"the longest horizon ({horizon} steps, {horizon * f} frames after the start) is "
            f"shorter than the controllability probe's window of {window} frames"
        )
    windows = open_loop_windows(heldout, horizon * f, config.starts_per_episode, data)
    first, truth, actions, poses = windows.first, windows.truth, windows.actions, windows.poses
    label = f"{world} open loop" if progress else ""
    generated = rollout(
        model, modality, first, actions, config.seed, label, start_poses=poses, resume=resume
    )
    result = WorldResult(world, modality, len(heldout), len(first), f)
    runs = {"model": generated, "copy last frame": np.repeat(first[:, None], horizon * f, 1)}
    if teacher is not None:
        h_t = min(config.teacher_horizon, horizon)
        runs[f"teacher ({config.teacher_nfe} NFE)"] = rollout(
            with_sampler(teacher, config.teacher_nfe),
            modality,
            first,
            actions[:, : h_t * f],
            config.seed,
            f"{world} teacher" if progress else "",
            start_poses=poses,
            resume=resume,
        )
    _score_runs(result, runs, truth, windows.episode, config)
    _score_ceiling(result, model, truth, config.horizons)
    probe = cached_probe(
        modality, data, config.probe_steps, config.seed, probe_cache, progress, resume=resume
    )
    result.control = _controllability(
        probe, modality, first, truth, generated, actions, f, config.horizons
    )
    label = f"{world} {config.stability_steps} steps" if progress else ""
    result.stability = _stability(model, modality, heldout, config, label, resume)
    samples = {"truth": truth[0], "model": generated[0], "start": first[0]}
    return result, samples


def _score_runs(
    result: WorldResult,
    runs: dict[str, np.ndarray],
    truth: np.ndarray,
    episode: np.ndarray,
    config: EvalConfig,
) -> None:
    """PSNR and SSIM of each run at each horizon, and its gain over copying the last frame."""
    f = result.frames_per_step
    for name, frames in runs.items():
        result.psnr[name], result.ssim[name] = {}, {}
        for h in config.horizons:
            if h * f > frames.shape[1]:
                continue
            chunk = slice((h - 1) * f, h * f)
            result.psnr[name][h] = pooled_psnr(frames[:, chunk], truth[:, chunk])
            result.ssim[name][h] = float(ssim(frames[:, chunk], truth[:, chunk]).mean())
            if name != "copy last frame":
                copy = runs["copy last frame"][:, chunk]
                result.gain_interval.setdefault(name, {})[h] = gain_interval(
                    frames[:, chunk], copy, truth[:, chunk], episode, seed=config.seed
                )


def _score_ceiling(
    result: WorldResult, model: WorldModel, truth: np.ndarray, horizons: tuple[int, ...]
) -> None:
    """The ceiling: the recorded frames through the VAE alone (no dynamics to get wrong)."""
    f, name = result.frames_per_step, "autoencoder (ceiling)"
    result.psnr[name], result.ssim[name] = {}, {}
    for h in horizons:
        recorded = truth[:, (h - 1) * f : h * f]
        recon = autoencode(model, recorded.reshape(-1, *recorded.shape[2:])).reshape(recorded.shape)
        result.psnr[name][h] = pooled_psnr(recon, recorded)
        result.ssim[name][h] = float(ssim(recon, recorded).mean())


def _controllability(
    probe: Probe,
    modality: str,
    first: np.ndarray,
    truth: np.ndarray,
    generated: np.ndarray,
    actions: np.ndarray,
    f: int,
    horizons: tuple[int, ...],
) -> dict[str, Any]:
    """The inverse-dynamics probe on real and on generated frames under the same actions.

    ``f``: frames a step; ``horizons``: the steps its by-horizon scores are reported at.
    """
    with_start = lambda frames: np.concatenate([first[:, None], frames], 1)  # noqa: E731
    t = window_centres(truth.shape[1])
    targets = probe_targets(modality, actions[:, t])
    targets = targets.reshape(-1, targets.shape[-1])
    real_w = np.concatenate([probe_windows(x, t) for x in with_start(truth)])
    gen_w = np.concatenate([probe_windows(x, t) for x in with_start(generated)])
    real_score = probe.score(real_w, targets)
    gen_score = probe.score(gen_w, targets)
    # what a probe that ignores the frames scores (key accuracy: the most common keys; R^2: 0)
    chance = majority_score(targets) if modality == "camera" else 0.0
    control: dict[str, Any] = {
        "metric": "key accuracy" if modality == "camera" else "R^2",
        "real": real_score,
        "generated": gen_score,
        "ratio": control_ratio(gen_score, real_score, chance),  # n/a where real is at chance
        "motion_real": frame_motion(with_start(truth)),
        "motion_generated": frame_motion(with_start(generated)),
        "by_horizon": control_by_horizon(
            probe,
            real_w,
            gen_w,
            targets,
            t // f + 1,
            len(first),
            horizons,
            chance=majority_score if modality == "camera" else None,
        ),
    }
    if modality == "camera":  # what a probe that ignores the frames would score
        control["majority"] = chance
        control["above_chance"] = above_chance(gen_score, real_score, chance)
        for key, w in (("confusion_real", real_w), ("confusion_generated", gen_w)):
            control[key] = probe.confusion(w, targets).tolist()
        # How far each key moves the picture, over the first steps (later ones have drifted).
        control["scene_motion_steps"] = steps = min(SCENE_MOTION_STEPS, max(horizons))
        n = steps * f
        for key, frames in (("scene_motion_real", truth), ("scene_motion_generated", generated)):
            control[key] = scene_motion_by_key(first, frames[:, :n], actions[:, :n])
    else:
        names = PROBE_DIMS[modality]
        control["dims"] = [n for n, v in zip(names, probe.visible, strict=True) if v]
        for key, values in (
            ("validation", probe.validation),
            ("real_per_dim", probe.per_dim(real_w, targets)),
            ("generated_per_dim", probe.per_dim(gen_w, targets)),
        ):
            control[key] = dict(zip(names, np.round(values, 4).tolist(), strict=True))
    return control


def _stability(
    model: WorldModel,
    modality: str,
    heldout: list[Episode],
    config: EvalConfig,
    label: str,
    resume: Path | None = None,
) -> dict[str, Any]:
    """Frame statistics of long rollouts under recorded actions (``long_inputs``).

    They are held against real frames as recorded and as the autoencoder gives them back: every
    generated frame is decoded by it, so its blur is a floor that no dynamics can get under.
    """
    f = model.config.dit.chunk_frames
    real = np.concatenate([ep.frames for ep in heldout])
    real_stats, ae_stats = frame_stats(real), frame_stats(autoencode(model, real[::2]))
    lo, hi = np.percentile(real_stats, 1, 0), np.percentile(real_stats, 99, 0)
    ae_lo, ae_hi = np.percentile(ae_stats, 1, 0), np.percentile(ae_stats, 99, 0)
    ok_lo, ok_hi = np.minimum(lo, ae_lo), np.maximum(hi, ae_hi)
    long = long_inputs(heldout, config.stability_rows, config.stability_steps * f)
    stats = rollout(
        model,
        modality,
        long.starts,
        long.actions,
        config.seed + 1000,
        label,
        record="stats",
        start_poses=long.poses,
        resume=resume,
    )
    in_range = lambda x, a, b: float(((x >= a) & (x <= b)).all(-1).mean())  # noqa: E731
    tail = np.median(stats[:, -min(100, stats.shape[1]) :].reshape(-1, 3), 0)
    stability = {
        "steps": config.stability_steps,
        "rows": config.stability_rows,
        "real_p1": lo.tolist(),
        "real_p99": hi.tolist(),
        "autoencoded_p1": ae_lo.tolist(),
        "autoencoded_p99": ae_hi.tolist(),
        "last100_median": tail.tolist(),
        "fraction_in_range": in_range(stats, ok_lo, ok_hi),
        "fraction_in_real_range": in_range(stats, lo, hi),
        "collapsed": bool(((tail < ok_lo) | (tail > ok_hi)).any()),
        "outside_real_range": bool(((tail < lo) | (tail > hi)).any()),
        "curve": stats.mean(0).tolist(),
        "actions": "recorded" if long.recorded is not None else "joined",
    }
    if long.recorded is not None:  # what the simulator showed under the same actions
        real_long = frame_stats(long.recorded[:, f::f])
        stability["recorded_fraction_in_range"] = in_range(real_long, ok_lo, ok_hi)
    return stability
