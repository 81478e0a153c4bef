"""Evaluation of a world model against the simulator it learned, on held-out episodes.

Three measurements per world (each dataset's card names its world and modality):

* **Open loop.** From each held-out start frame the model runs the recorded actions through the
  env's engine; chunk ``h`` (frames ``s + (h-1)F + 1 .. s + hF``) is scored against the
  recorded frames with PSNR and SSIM at horizons ``h`` (steps). Baselines: copy the start frame
  (what a model that predicts no change scores), and optionally the teacher at full NFE.
* **Controllability.** An inverse-dynamics probe, trained on real training frames only, reads the
  action from a window of frames (``t-1 .. t+4`` -> action ``t``). It is scored on real held-out
  frames and on generated frames that followed the same actions: accuracy of the translation and
  rotation keys (camera), R^2 of the continuous actions (robot, driving) averaged over the
  dimensions the probe reads on validation episodes (an action that frames do not show, such
  as a small wrist rotation at 64 x 64, cannot measure a model). The ratio generated / real
  says how much of the action's visible effect the model reproduces. The same figures over the
  steps after each horizon up to the next (h = 1, 2-4, 5-16, 17-64) tell a model that shows
  its actions and then drifts from one that never shows them.
* **Stability.** Long rollouts (1000 steps by default) under recorded actions; for each step's
  last frame the mean brightness, contrast (std) and sharpness (mean absolute gradient). A world
  has not collapsed when the medians over the last 100 steps sit inside the 1st-99th percentile
  range of the same statistics on real frames, widened to take in the real frames as the
  autoencoder gives them back (a generated frame can be no sharper than its decoder makes it).
  The verdict against the recorded frames alone is reported next to it.

:func:`write_report` writes the figures, plots and sample strips (generated under recorded)
as a markdown page.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from gym_worldmodel.envs.engine import WorldEngine
from gym_worldmodel.files import atomic_write
from gym_worldmodel.models import WorldModel
from gym_worldmodel.sources.episodes import Episode, load_episodes, read_card

PROBE_WINDOW = (-1, 5)  # frames t-1 .. t+4 -> action t (actions persist over a few frames)
MOTION_GAIN = 8.0  # scale of the frame differences the probe sees
PROBE_VISIBLE_R2 = 0.1  # validation R^2 below which a continuous action dimension is not visible
PROBE_DIMS = {
    "robot": ("x", "y", "z", "roll", "pitch", "yaw", "gripper"),
    "driving": ("steering", "acceleration"),
}
#: The camera keys the probe reads, per group (``envs.actions.CameraActions`` order).
CAMERA_KEYS = {
    "translation": ("none", "forward", "left", "back", "right"),
    "rotation": ("none", "yaw left", "yaw right", "pitch up", "pitch down"),
}
STATS = ("brightness", "contrast", "sharpness")
#: What each camera key should do to the picture (``training.motion.image_motion``'s columns:
#: x and y shift in pixels per frame, right/down +; log zoom per frame): the column measured.
KEY_MOTION = {
    ("translation", "forward"): 2,
    ("translation", "back"): 2,
    ("translation", "left"): 0,
    ("translation", "right"): 0,
    ("rotation", "yaw left"): 0,
    ("rotation", "yaw right"): 0,
    ("rotation", "pitch up"): 1,
    ("rotation", "pitch down"): 1,
}
MOTION_UNITS = ("x shift, px/frame", "y shift, px/frame", "zoom, %/frame")
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
    psnr: dict[str, dict[int, float]] = field(default_factory=dict)
    ssim: dict[str, dict[int, float]] = field(default_factory=dict)
    control: dict[str, Any] = field(default_factory=dict)
    stability: dict[str, Any] = field(default_factory=dict)


# ----------------------------------------------------------------------------- image metrics


def _frame_mse(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per-frame mean squared error of uint8 frames ``(..., H, W, 3)``."""
    return ((a.astype(np.float64) - b.astype(np.float64)) ** 2).mean(axis=(-3, -2, -1))


def _decibels(mse: np.ndarray | float) -> np.ndarray:
    """PSNR (dB) of a mean squared error on the uint8 scale (zero error clamped at 1e-10)."""
    return 10.0 * np.log10(255.0**2 / np.maximum(mse, 1e-10))


def psnr(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per-frame PSNR (dB) of uint8 frames ``(..., H, W, 3)``."""
    return _decibels(_frame_mse(a, b))


def pooled_psnr(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR (dB) of the mean squared error over every frame of uint8 ``a`` against ``b``.

    Open-loop tables use this, not the mean of per-frame PSNRs: a recorded frame that repeats the
    start exactly (the agent stood still) gives copying the last frame an unbounded per-frame
    PSNR, so that mean would hang on how a zero error is clamped (at 1e-10 each such frame
    counts 148 dB) rather than on the frames.
    """
    return float(_decibels(_frame_mse(a, b).mean()))  # frames are equal-sized: the pooled MSE


def ssim(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per-frame SSIM of uint8 frames ``(..., H, W, 3)``.

    Gaussian window 11, sigma 1.5, averaged over channels (Wang et al. 2004).
    """
    shape = a.shape[:-3]
    x = torch.from_numpy(a.reshape(-1, *a.shape[-3:])).permute(0, 3, 1, 2).double() / 255.0
    y = torch.from_numpy(b.reshape(-1, *b.shape[-3:])).permute(0, 3, 1, 2).double() / 255.0
    g = torch.exp(-((torch.arange(11, dtype=torch.float64) - 5) ** 2) / (2 * 1.5**2))
    g = g / g.sum()
    kernel = (g[:, None] * g[None, :]).expand(3, 1, 11, 11)

    def blur(z: torch.Tensor) -> torch.Tensor:
        return F.conv2d(z, kernel, groups=3)

    mx, my = blur(x), blur(y)
    sxx, syy, sxy = blur(x * x) - mx**2, blur(y * y) - my**2, blur(x * y) - mx * my
    c1, c2 = 0.01**2, 0.03**2
    s = ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx**2 + my**2 + c1) * (sxx + syy + c2))
    return s.mean(dim=(1, 2, 3)).numpy().reshape(shape)


def frame_stats(frames: np.ndarray) -> np.ndarray:
    """``(..., H, W, 3)`` uint8 -> ``(..., 3)``: brightness, contrast, sharpness (0-255 units)."""
    x = frames.astype(np.float32).mean(-1)
    grad = np.abs(np.diff(x, axis=-1)).mean((-2, -1)) + np.abs(np.diff(x, axis=-2)).mean((-2, -1))
    return np.stack([x.mean((-2, -1)), x.std((-2, -1)), grad], -1)


# ----------------------------------------------------------------------------- rollouts


def frame_motion(frames: np.ndarray) -> float:
    """Mean absolute change between successive frames ``(R, T, H, W, 3)``, in grey levels.

    A model unsure where the view goes can lower its error by moving too little; next to the
    recorded frames' figure this says how much of the world's motion a rollout shows.
    """
    steps = [np.abs(np.diff(row.astype(np.int16), axis=0)).mean() for row in frames]
    return float(np.mean(steps))


def scene_motion_by_key(
    first: np.ndarray, frames: np.ndarray, actions: np.ndarray
) -> dict[str, dict[str, Any]]:
    """How far each camera key moved the picture: the mean of its column of :data:`KEY_MOTION`.

    ``first`` ``(R, H, W, 3)``, ``frames`` ``(R, T, H, W, 3)`` after it, ``actions`` ``(R, T, A)``
    (action ``j`` leads to frame ``j``). Every frame pair is searched for its global motion
    (``training.motion.image_motion``: zoom and whole-pixel shift); the keys held over a pair
    select it, whatever the other key group does. Zoom is reported as 100 x its log, which is
    the per cent change of scale for zooms this small (4.54 for a 4.64% magnification).
    """
    from gym_worldmodel.training.motion import image_motion

    seq = np.concatenate([first[:, None], frames], 1)
    shape = seq.shape[2:]
    motion = image_motion(seq[:, :-1].reshape(-1, *shape), seq[:, 1:].reshape(-1, *shape))
    motion[:, 2] *= 100.0
    keys = _probe_targets("camera", actions).reshape(-1, 2)
    table = {}
    for (group, name), column in KEY_MOTION.items():
        g = list(CAMERA_KEYS).index(group)
        held = keys[:, g] == CAMERA_KEYS[group].index(name)
        if held.any():
            table[f"{group} {name}"] = {
                "unit": MOTION_UNITS[column],
                "frames": int(held.sum()),
                "mean": float(motion[held, column].mean()),
            }
    return table


def _starts(episodes: Sequence[Episode], frames_needed: int, per_episode: int) -> list[tuple]:
    """(episode index, start frame) pairs whose episode holds ``frames_needed`` frames after.

    Starts are spread evenly inside each episode's valid range, away from frame 0: behaviour
    policies start from rest (their first actions are small or held still), which would make
    the first horizon unrepresentatively easy for the copy-last-frame baseline.
    """
    out = []
    for e, ep in enumerate(episodes):
        last = len(ep.frames) - 1 - frames_needed
        if last < 0:
            continue
        for s in np.linspace(0, last, per_episode + 2)[1:-1].round().astype(int):
            out.append((e, int(s)))
    return sorted(set(out))


def open_loop_windows(
    episodes: Sequence[Episode], frames: int, per_episode: int, data: Path | str = "the data"
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Open-loop windows of held-out episodes at :func:`_starts`' starts.

    Returns start frames ``(R, H, W, 3)``, the ``frames`` recorded frames after each
    ``(R, frames, H, W, 3)`` and the actions between them ``(R, frames, w)``.
    """
    starts = _starts(episodes, frames, per_episode)
    if not starts:
        raise ValueError(f"{data}: no held-out episode has the {frames + 1} frames needed")
    first = np.stack([episodes[e].frames[s] for e, s in starts])
    truth = np.stack([episodes[e].frames[s + 1 : s + 1 + frames] for e, s in starts])
    actions = np.stack([episodes[e].actions[s : s + frames] for e, s in starts])
    return first, truth, actions


def rollout(
    model: WorldModel,
    modality: str,
    start_frames: np.ndarray,
    actions: np.ndarray,
    seed: int,
    progress: str = "",
    record: str = "frames",
    dtype: torch.dtype = torch.float32,
) -> np.ndarray:
    """Run recorded actions through the env's engine from start frames.

    Args:
        model: The world model.
        modality: The rows' action expert.
        start_frames: uint8 ``(R, H, W, 3)``.
        actions: ``(R, steps * F, w)`` model action vectors.
        seed: Row ``r`` samples with seed ``seed + r``.
        progress: Progress bar label (empty: none).
        record: ``"frames"`` to return every frame ``(R, steps * F, H, W, 3)``, or ``"stats"``
            for :func:`frame_stats` of each step's last frame ``(R, steps, 3)`` (long rollouts:
            only that frame is decoded).
        dtype: The forwards' precision (``eval`` measures in float32).
    """
    rows, f = len(start_frames), model.config.dit.chunk_frames
    steps = actions.shape[1] // f
    engine = WorldEngine(model, rows, modality, dtype=dtype)
    engine.seed(range(rows), [seed + r for r in range(rows)])
    start = torch.from_numpy(np.repeat(start_frames[:, None], f, 1))
    engine.start(range(rows), start)
    out = []
    for k in tqdm(range(steps), desc=progress, disable=not progress, leave=False):
        chunk = np.ascontiguousarray(actions[:, k * f : (k + 1) * f])
        decode = slice(None) if record == "frames" else slice(-1, None)
        frames = engine.step(chunk, decode)[1].cpu().numpy()
        out.append(frames if record == "frames" else frame_stats(frames))
    return np.concatenate(out, 1)


def _autoencode(model: WorldModel, frames: np.ndarray, batch: int = 256) -> np.ndarray:
    """uint8 frames ``(n, H, W, 3)`` through the VAE's encoder and decoder."""
    with torch.no_grad():
        return np.concatenate(
            [
                model.vae.decode(model.vae.encode(torch.from_numpy(frames[i : i + batch]))).numpy()
                for i in range(0, len(frames), batch)
            ]
        )


def with_sampler(model: WorldModel, nfe: int) -> WorldModel:
    """The same weights sampling deterministically with ``nfe`` Euler steps."""
    return model.with_sampler(nfe=nfe, stochastic=False).eval()


# ----------------------------------------------------------------------------- probe


def _probe_targets(modality: str, actions: np.ndarray) -> np.ndarray:
    """What the probe predicts: key classes (camera) or the continuous action values."""
    if modality == "camera":
        return np.stack([actions[..., :5].argmax(-1), actions[..., 5:10].argmax(-1)], -1)
    return actions[..., : len(PROBE_DIMS[modality])]


class InverseDynamicsProbe(nn.Module):
    """Small CNN: a window of frames -> the action between its 2nd and 3rd frame.

    It sees the window's first frame and the differences between successive frames, scaled by
    ``MOTION_GAIN``: an action moves an arm or a road by a pixel or two per frame, and raw frames
    bury that under the scene, which a probe then memorises instead of reading the motion.
    """

    def __init__(self, outputs: int, frames: int = PROBE_WINDOW[1] - PROBE_WINDOW[0]) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width = 3 * frames
        for out in (32, 64, 128, 128):
            layers += [nn.Conv2d(width, out, 4, 2, 1), nn.GroupNorm(8, out), nn.SiLU()]
            width = out
        self.net = nn.Sequential(
            *layers,
            nn.AdaptiveAvgPool2d(4),
            nn.Flatten(),
            nn.Linear(128 * 16, 256),
            nn.SiLU(),
            nn.Dropout(0.3),
            nn.Linear(256, outputs),
        )

    def forward(self, windows: torch.Tensor) -> torch.Tensor:
        """uint8 ``(B, K, H, W, 3)`` -> ``(B, outputs)``."""
        x = windows.float().div(127.5).sub(1.0).permute(0, 1, 4, 2, 3)
        x = torch.cat([x[:, :1], MOTION_GAIN * x.diff(dim=1)], 1)
        return self.net(x.flatten(1, 2))


def _windows(frames: np.ndarray, t: np.ndarray) -> np.ndarray:
    """``frames`` ``(T, H, W, 3)``, centres ``t`` -> ``(n, K, H, W, 3)``."""
    offsets = np.arange(*PROBE_WINDOW)
    return frames[t[:, None] + offsets[None]]


def _centres(n_actions: int, every: int = 1) -> np.ndarray:
    """Every ``every``-th action index whose whole window lies inside ``n_actions + 1`` frames."""
    return np.arange(-PROBE_WINDOW[0], n_actions - PROBE_WINDOW[1] + 2, every)


def _episode_windows(episodes: Sequence[Episode], every: int) -> tuple[np.ndarray, np.ndarray]:
    """Windows at every ``every``-th valid centre of each episode, and their actions."""
    t = [_centres(len(ep.actions), every) for ep in episodes]
    windows = np.concatenate([_windows(ep.frames, c) for ep, c in zip(episodes, t, strict=True)])
    return windows, np.concatenate([ep.actions[c] for ep, c in zip(episodes, t, strict=True)])


@dataclass
class Probe:
    """A trained inverse-dynamics probe and what it can read.

    Attributes:
        net: The CNN.
        modality: Its world's action expert.
        mean, std: Standardisation of continuous targets (each dimension weighs the same in the
            loss, whatever its range); 0 and 1 for camera keys.
        validation: Per-dimension R^2 (continuous) or the key accuracy (camera, one value) on the
            validation episodes, at the checkpoint kept.
        visible: Continuous dimensions the probe reads on validation frames (R^2 at least
            ``PROBE_VISIBLE_R2``); only they enter :meth:`score`. All of them for camera.
    """

    net: InverseDynamicsProbe
    modality: str
    mean: np.ndarray
    std: np.ndarray
    validation: np.ndarray
    visible: np.ndarray

    def predict(self, windows: np.ndarray) -> np.ndarray:
        """Key logits ``(n, 10)`` (camera) or action values ``(n, D)``.

        Always float32, also inside a caller's autocast: the probe is the measuring instrument.
        """
        with torch.no_grad(), torch.autocast("cpu", enabled=False):
            batches = [windows[i : i + 256] for i in range(0, len(windows), 256)]
            out = torch.cat([self.net(torch.from_numpy(b)) for b in batches]).numpy()
        return out * self.std + self.mean

    def per_dim(self, windows: np.ndarray, targets: np.ndarray) -> np.ndarray:
        """Accuracy of the translation and rotation keys (camera) or R^2 per action dimension."""
        if self.modality == "camera":
            counts = self.confusion(windows, targets)
            return np.trace(counts, axis1=1, axis2=2) / counts.sum(axis=(1, 2))
        out = self.predict(windows)
        var = targets.var(0)
        r2 = 1.0 - ((out - targets) ** 2).mean(0) / np.maximum(var, 1e-12)
        return np.where(var > 1e-8, r2, np.nan)  # a constant action has no R^2

    def confusion(self, windows: np.ndarray, targets: np.ndarray) -> np.ndarray:
        """Camera: counts ``(2, 5, 5)`` per key group, rows the recorded key, columns the read."""
        out = self.predict(windows)
        keys = np.stack([out[:, :5].argmax(1), out[:, 5:].argmax(1)], 1)
        counts = np.zeros((2, 5, 5), np.int64)
        for g in range(2):
            np.add.at(counts[g], (targets[:, g], keys[:, g]), 1)
        return counts

    def score(self, windows: np.ndarray, targets: np.ndarray) -> float:
        """Mean key accuracy, or mean R^2 over the visible dimensions (NaN if none is)."""
        values = self.per_dim(windows, targets)
        if self.modality == "camera":
            return float(values.mean())
        return float(values[self.visible].mean()) if self.visible.any() else math.nan


def train_probe(
    modality: str, episodes: Sequence[Episode], steps: int, seed: int, progress: bool = False
) -> Probe:
    """Train the inverse-dynamics probe on real frames of ``episodes`` (training episodes).

    Every 6th episode is held back for validation, scored every ``steps // 10`` steps: the probe
    kept is the best one there (with a few dozen episodes it starts to memorise them), and it
    tells which continuous dimensions the frames show at all (``Probe.visible``). Batches are
    shifted by up to 4 pixels, the whole window alike.
    """
    if len(episodes) < 2:
        raise ValueError(
            f"the probe needs 2 or more training episodes (one validates), got {len(episodes)}"
        )
    gen = np.random.default_rng(seed)
    torch.manual_seed(seed)
    held = [ep for i, ep in enumerate(episodes) if i % 6 == 0]
    fit = [ep for i, ep in enumerate(episodes) if i % 6]
    every = max(1, sum(len(ep.actions) for ep in held) // 2000)
    val_windows, val_actions = _episode_windows(held, every)
    val_targets = _probe_targets(modality, val_actions)
    if modality == "camera":
        outputs, mean, std = 10, np.zeros(10), np.ones(10)
    else:
        targets = np.concatenate([_probe_targets(modality, ep.actions) for ep in fit])
        outputs, mean, std = targets.shape[1], targets.mean(0), targets.std(0) + 1e-6
    net = InverseDynamicsProbe(outputs)
    probe = Probe(net, modality, mean, std, np.zeros(0), np.zeros(0, bool))
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3, weight_decay=0.05)
    check = max(1, steps // 10)
    best, kept = -math.inf, None
    for step in tqdm(range(steps), desc=f"probe {modality}", leave=False, disable=not progress):
        x, y = [], []
        for e in gen.integers(len(fit), size=64):
            ep = fit[e]
            valid = _centres(len(ep.actions))
            t = gen.integers(valid[0], valid[-1] + 1, size=1)
            x.append(_windows(ep.frames, t))
            y.append(_probe_targets(modality, ep.actions[t]))
        shift = tuple(int(v) for v in gen.integers(-4, 5, 2))
        batch = np.roll(np.concatenate(x), shift, axis=(-3, -2))
        target = np.concatenate(y)
        if modality != "camera":
            target = (target - mean) / std
        net.train()
        loss = _probe_loss(modality, net(torch.from_numpy(batch)), torch.from_numpy(target))
        opt.zero_grad()
        loss.backward()
        opt.step()
        if (step + 1) % check == 0 or step + 1 == steps:
            net.eval()
            values = probe.per_dim(val_windows, val_targets)
            quality = float(np.nan_to_num(np.clip(values, 0, 1)).mean())
            if kept is None or quality > best:
                best, kept = quality, (copy.deepcopy(net.state_dict()), values)
    net.load_state_dict(kept[0])
    net.eval()
    probe.validation = kept[1]
    probe.visible = np.ones(2, bool) if modality == "camera" else kept[1] >= PROBE_VISIBLE_R2
    return probe


#: Real-frame probe scores under this are too near reading nothing to divide by: the driving
#: probe's R^2 of 0.003 in the first step (few windows turn there) gave a ratio of -90.89.
MIN_REAL_SCORE = 0.05


def _ratio(generated: float, real: float) -> float:
    """Generated / real controllability; NaN under ``MIN_REAL_SCORE`` on real frames.

    A probe that reads (next to) nothing from real frames gives no ratio that means anything.
    """
    return generated / real if real >= MIN_REAL_SCORE else math.nan


def ratio_text(ratio: float) -> str:
    """A ratio as the report prints it: ``n/a`` where :func:`_ratio` gave none."""
    return "n/a" if math.isnan(ratio) else f"{ratio:.2f}"


def _control_by_horizon(
    probe: Probe,
    real: np.ndarray,
    generated: np.ndarray,
    targets: np.ndarray,
    steps: np.ndarray,
    rollouts: int,
    horizons: Sequence[int],
) -> dict[int, dict[str, Any]]:
    """The probe's scores over the windows of steps after the previous horizon up to each one.

    ``steps`` ``(n,)``: the step (chunk) of each window's action in one rollout; the windows of
    all ``rollouts`` follow each other in that order. A model that shows its actions at first
    and loses them as it drifts scores high at h = 1 and low later, which one figure over the
    whole rollout cannot tell from a model that never shows them. Spans are named by the
    horizons that bound them; a window also sees the frames just after its action's step, and
    the last actions of a rollout have no whole window. A span without windows is left out.
    """
    table, after = {}, 0
    for h in sorted(horizons):
        keep = np.tile((steps > after) & (steps <= h), rollouts)
        if keep.any():
            real_score = probe.score(real[keep], targets[keep])
            gen_score = probe.score(generated[keep], targets[keep])
            table[h] = {
                "steps": [after + 1, h],
                "windows": int(keep.sum()),
                "real": real_score,
                "generated": gen_score,
                "ratio": _ratio(gen_score, real_score),
            }
        after = h
    return table


def _probe_loss(modality: str, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    if modality == "camera":
        y = y.long()
        return F.cross_entropy(out[:, :5], y[:, 0]) + F.cross_entropy(out[:, 5:], y[:, 1])
    return F.mse_loss(out, y.float())


# ----------------------------------------------------------------------------- evaluate


def evaluate_world(
    model: WorldModel,
    data: Path,
    config: EvalConfig,
    teacher: WorldModel | None = None,
    progress: bool = True,
) -> tuple[WorldResult, dict[str, np.ndarray]]:
    """Every measurement of one world; also returns sample frames for the strips."""
    card = read_card(Path(data))
    world, modality = card["world"], card["modality"]
    heldout = load_episodes(Path(data), "heldout")
    f, horizon = model.config.dit.chunk_frames, max(config.horizons)
    window = PROBE_WINDOW[1] - PROBE_WINDOW[0]
    if horizon * f + 1 < window:
        raise ValueError(
            f"the longest horizon ({horizon} steps, {horizon * f} frames after the start) is "
            f"shorter than the controllability probe's window of {window} frames"
        )
    first, truth, actions = open_loop_windows(heldout, horizon * f, config.starts_per_episode, data)
    label = f"{world} open loop" if progress else ""
    generated = rollout(model, modality, first, actions, config.seed, label)
    result = WorldResult(world, modality, len(heldout), len(first))
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
        )
    for name, frames in runs.items():
        result.psnr[name], result.ssim[name] = {}, {}
        for h in config.horizons:
            if h * f > frames.shape[1]:
                continue
            chunk = slice((h - 1) * f, h * f)
            result.psnr[name][h] = pooled_psnr(frames[:, chunk], truth[:, chunk])
            result.ssim[name][h] = float(ssim(frames[:, chunk], truth[:, chunk]).mean())
    # The ceiling: the recorded frames through the VAE alone (no dynamics to get wrong).
    name = "autoencoder (ceiling)"
    result.psnr[name], result.ssim[name] = {}, {}
    for h in config.horizons:
        chunk = truth[:, (h - 1) * f : h * f]
        recon = _autoencode(model, chunk.reshape(-1, *chunk.shape[2:])).reshape(chunk.shape)
        result.psnr[name][h] = pooled_psnr(recon, chunk)
        result.ssim[name][h] = float(ssim(recon, chunk).mean())

    # Controllability: the probe on real and on generated frames under the same actions.
    probe = train_probe(
        modality, load_episodes(Path(data), "train"), config.probe_steps, config.seed, progress
    )
    with_start = lambda frames: np.concatenate([first[:, None], frames], 1)  # noqa: E731
    t = _centres(horizon * f)
    targets = _probe_targets(modality, actions[:, t])
    targets = targets.reshape(-1, targets.shape[-1])
    real_w = np.concatenate([_windows(x, t) for x in with_start(truth)])
    gen_w = np.concatenate([_windows(x, t) for x in with_start(generated)])
    real_score = probe.score(real_w, targets)
    gen_score = probe.score(gen_w, targets)
    result.control = {
        "metric": "key accuracy" if modality == "camera" else "R^2",
        "real": real_score,
        "generated": gen_score,
        "ratio": _ratio(gen_score, real_score),
        "motion_real": frame_motion(with_start(truth)),
        "motion_generated": frame_motion(with_start(generated)),
        "by_horizon": _control_by_horizon(
            probe, real_w, gen_w, targets, t // f + 1, len(first), config.horizons
        ),
    }
    if modality == "camera":  # what a probe that ignores the frames would score
        result.control["majority"] = float(
            np.mean([np.bincount(targets[:, k]).max() / len(targets) for k in range(2)])
        )
        for key, w in (("confusion_real", real_w), ("confusion_generated", gen_w)):
            result.control[key] = probe.confusion(w, targets).tolist()
        # How far each key moves the picture, over the first steps (later ones have drifted).
        result.control["scene_motion_steps"] = steps = min(SCENE_MOTION_STEPS, horizon)
        n = steps * f
        for key, frames in (("scene_motion_real", truth), ("scene_motion_generated", generated)):
            result.control[key] = scene_motion_by_key(first, frames[:, :n], actions[:, :n])
    else:
        names = PROBE_DIMS[modality]
        result.control["dims"] = [n for n, v in zip(names, probe.visible, strict=True) if v]
        for key, values in (
            ("validation", probe.validation),
            ("real_per_dim", probe.per_dim(real_w, targets)),
            ("generated_per_dim", probe.per_dim(gen_w, targets)),
        ):
            result.control[key] = dict(zip(names, np.round(values, 4).tolist(), strict=True))

    # Stability: long rollouts under recorded actions, frame statistics against real frames as
    # recorded and as the autoencoder gives them back: every generated frame is decoded by it,
    # so its blur is a floor that no dynamics can get under.
    real = np.concatenate([ep.frames for ep in heldout])
    real_stats, ae_stats = frame_stats(real), frame_stats(_autoencode(model, real[::2]))
    lo, hi = np.percentile(real_stats, 1, 0), np.percentile(real_stats, 99, 0)
    ae_lo, ae_hi = np.percentile(ae_stats, 1, 0), np.percentile(ae_stats, 99, 0)
    ok_lo, ok_hi = np.minimum(lo, ae_lo), np.maximum(hi, ae_hi)
    long_actions = np.concatenate([ep.actions for ep in heldout])
    need = config.stability_steps * f
    rows = config.stability_rows
    acts = np.stack(
        [
            np.resize(np.roll(long_actions, -r * 97, 0), (need, long_actions.shape[1]))
            for r in range(rows)
        ]
    )
    starts_long = np.stack([heldout[r % len(heldout)].frames[0] for r in range(rows)])
    stats = rollout(
        model,
        modality,
        starts_long,
        acts,
        config.seed + 1000,
        f"{world} {config.stability_steps} steps" if progress else "",
        record="stats",
    )
    tail = np.median(stats[:, -min(100, stats.shape[1]) :].reshape(-1, 3), 0)
    result.stability = {
        "steps": config.stability_steps,
        "rows": rows,
        "real_p1": lo.tolist(),
        "real_p99": hi.tolist(),
        "autoencoded_p1": ae_lo.tolist(),
        "autoencoded_p99": ae_hi.tolist(),
        "last100_median": tail.tolist(),
        "fraction_in_range": float(((stats >= ok_lo) & (stats <= ok_hi)).all(-1).mean()),
        "fraction_in_real_range": float(((stats >= lo) & (stats <= hi)).all(-1).mean()),
        "collapsed": bool(((tail < ok_lo) | (tail > ok_hi)).any()),
        "outside_real_range": bool(((tail < lo) | (tail > hi)).any()),
        "curve": stats.mean(0).tolist(),
    }
    samples = {"truth": truth[0], "model": generated[0], "start": first[0]}
    return result, samples


# ----------------------------------------------------------------------------- report


def write_report(
    results: Sequence[WorldResult],
    samples: dict[str, dict[str, np.ndarray]],
    out_dir: Path,
    report: Path,
    command: str,
    f: int,
) -> None:
    """Markdown page, PSNR/SSIM and stability plots, sample strips and raw JSON."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from PIL import Image

    out_dir.mkdir(parents=True, exist_ok=True)
    raw = [dataclasses.asdict(r) for r in results]
    text = json.dumps(_nan_to_none(raw), indent=1, allow_nan=False) + "\n"
    atomic_write(out_dir / "results.json", lambda fh: fh.write(text.encode()))

    fig, axes = plt.subplots(3, len(results), figsize=(4.2 * len(results), 9.5), squeeze=False)
    for col, r in enumerate(results):
        by_h = r.control.get("by_horizon", {})
        control = {
            f"{who} frames": {h: v[who] for h, v in by_h.items()} for who in ("generated", "real")
        }
        for row, (metric, table) in enumerate(
            (("PSNR (dB)", r.psnr), ("SSIM", r.ssim), (f"probe {r.control['metric']}", control))
        ):
            ax = axes[row, col]
            for name, values in table.items():
                hs = sorted(values)
                style = {"color": "0.5", "ls": "--"} if name == "real frames" else {}
                ax.plot(hs, [values[h] for h in hs], marker="o", label=name, **style)
            ax.set_xscale("log", base=2)
            ax.set_xlabel("horizon (steps)" if row < 2 else "steps (the span ending at)")
            ax.set_ylabel(metric)
            ax.set_title(r.world)
            if col == 0 and row != 1:
                ax.legend(fontsize=8)
    fig.tight_layout()
    atomic_write(out_dir / "open_loop.png", lambda fh: fig.savefig(fh, format="png", dpi=90))
    plt.close(fig)

    fig, axes = plt.subplots(
        len(STATS), len(results), figsize=(4.2 * len(results), 6.5), squeeze=False
    )
    for col, r in enumerate(results):
        curve = np.array(r.stability["curve"])
        steps = np.arange(1, len(curve) + 1)
        for row, name in enumerate(STATS):
            ax = axes[row, col]
            for key, color, label in (
                ("real", "0.8", "real frames, 1st-99th pct"),
                ("autoencoded", "tab:orange", "real frames autoencoded"),
            ):
                lo, hi = r.stability[f"{key}_p1"][row], r.stability[f"{key}_p99"][row]
                ax.axhspan(lo, hi, color=color, alpha=0.35, label=label)
            ax.plot(steps, curve[:, row], lw=0.8, label="generated (mean of rows)")
            ax.set_ylabel(name)
            if row == 0:
                ax.set_title(r.world)
            if row == len(STATS) - 1:
                ax.set_xlabel("step")
        if col == 0:
            axes[0, 0].legend(fontsize=7)
    fig.tight_layout()
    atomic_write(out_dir / "stability.png", lambda fh: fig.savefig(fh, format="png", dpi=90))
    plt.close(fig)

    lines = [
        "# World-model evaluation",
        "",
        "Generated by `gym_worldmodel.evaluation` on held-out episodes, open loop with the "
        "recorded actions. Command:",
        "",
        f"    {command}",
        "",
        "Horizon h is the h-th step (chunk) after the start frame; each figure is over the "
        f"{f} frames of that chunk at every held-out start. PSNR is that of the mean squared "
        "error over those frames (a recorded frame that repeats the start exactly would give "
        "copying an unbounded per-frame PSNR); SSIM is the mean over frames. Copy last frame "
        "repeats the start frame.",
        "",
        "![open loop](eval/open_loop.png)",
        "",
    ]
    for r in results:
        lines += [
            f"## {r.world} ({r.modality}; {r.episodes} held-out episodes, {r.rollouts} rollouts)",
            "",
        ]
        hs = sorted({h for table in r.psnr.values() for h in table})
        lines.append("| PSNR / SSIM | " + " | ".join(f"h={h}" for h in hs) + " |")
        lines.append("|---|" + "---|" * len(hs))
        for name in r.psnr:
            cells = [
                f"{r.psnr[name][h]:.2f} / {r.ssim[name][h]:.3f}" if h in r.psnr[name] else ""
                for h in hs
            ]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        c, s = r.control, r.stability
        lines += [
            "",
            f"Controllability ({_control_metric(c)}): real {c['real']:.3f}, generated "
            f"{c['generated']:.3f}, ratio **{ratio_text(c['ratio'])}**."
            + (
                f" Always answering the most common keys scores {c['majority']:.3f}."
                if "majority" in c
                else ""
            )
            + (
                f" Motion (mean absolute change between successive frames, grey levels): real "
                f"{c['motion_real']:.2f}, generated {c['motion_generated']:.2f}."
                if "motion_real" in c
                else ""
            ),
            "",
            *_control_by_horizon_table(c),
            *_keys_read(c),
            *_scene_motion_table(c),
            f"Stability over {s['steps']} steps x {s['rows']} rows: last-100-step medians "
            + ", ".join(
                f"{n} {v:.1f} (real [{a:.1f}, {b:.1f}], autoencoded [{c:.1f}, {d:.1f}])"
                for n, v, a, b, c, d in zip(
                    STATS,
                    s["last100_median"],
                    s["real_p1"],
                    s["real_p99"],
                    s["autoencoded_p1"],
                    s["autoencoded_p99"],
                    strict=True,
                )
            )
            + f": **{'collapsed' if s['collapsed'] else 'no collapse'}**"
            + f" ({'outside' if s['outside_real_range'] else 'inside'} the recorded frames' range"
            + " alone). Generated steps (last frames) with all three statistics in range: "
            f"{100 * s['fraction_in_range']:.1f}% ({100 * s['fraction_in_real_range']:.1f}% "
            "against the recorded frames alone).",
            "",
            f"![{r.world} samples](eval/{r.world}_strip.png)",
            "",
            "Top: recorded frames; bottom: generated. Columns: start frame, then the last frame "
            "of steps " + ", ".join(str(h) for h in _strip_steps(samples[r.world], f)) + ".",
            "",
        ]
        strip = _strip(samples[r.world], f)
        atomic_write(
            out_dir / f"{r.world}_strip.png",
            lambda fh, s=strip: Image.fromarray(s).save(fh, format="png"),
        )
    lines += ["![stability](eval/stability.png)", ""]
    body = "\n".join(lines)
    atomic_write(report, lambda fh: fh.write(body.encode()))


def _nan_to_none(value: Any) -> Any:
    """``value`` with every NaN float replaced by None: JSON has no NaN (it writes null)."""
    if isinstance(value, float):
        return None if math.isnan(value) else value
    if isinstance(value, dict):
        return {k: _nan_to_none(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_nan_to_none(v) for v in value]
    return value


def steps_label(steps: Sequence[int]) -> str:
    """``[2, 4]`` -> ``"2-4"``, ``[1, 1]`` -> ``"1"``: a span of steps as the report names it."""
    first, last = steps
    return f"{first}" if first == last else f"{first}-{last}"


def _control_by_horizon_table(control: dict[str, Any]) -> list[str]:
    """Report lines: the controllability figures in each span of steps between horizons."""
    table = control.get("by_horizon")
    if not table:
        return []
    spans = [steps_label(v["steps"]) for v in table.values()]
    rows = [(who, [f"{v[who]:.3f}" for v in table.values()]) for who in ("real", "generated")]
    rows.append(("ratio", [ratio_text(v["ratio"]) for v in table.values()]))
    return [
        "By step: the same scores over the windows whose action falls in those steps (a model "
        "can show its actions at first and lose them as it drifts):",
        "",
        "| steps | " + " | ".join(spans) + " |",
        "|---|" + "---|" * len(spans),
        *(f"| {who} | " + " | ".join(cells) + " |" for who, cells in rows),
        "",
    ]


def _keys_read(control: dict[str, Any]) -> list[str]:
    """Report lines: per camera key, the share of its windows the probe reads as that key."""
    if "confusion_real" not in control:
        return []
    cells = []
    for g, (group, names) in enumerate(CAMERA_KEYS.items()):
        for k, name in enumerate(names):
            row_real = np.asarray(control["confusion_real"][g][k])
            row_gen = np.asarray(control["confusion_generated"][g][k])
            if n := row_real.sum():  # both rows count the same recorded windows
                cells.append(
                    f"| {group} {name} | {n} | {row_real[k] / n:.2f} | {row_gen[k] / n:.2f} | "
                    f"{names[int(row_gen.argmax())]} |"
                )
    return [
        "Per key: the share of the windows holding a key that the probe reads as that key, and "
        "what it reads most often on generated frames:",
        "",
        "| key | windows | recorded | generated | read most on generated |",
        "|---|---|---|---|---|",
        *cells,
        "",
    ]


def _scene_motion_table(control: dict[str, Any]) -> list[str]:
    """Report lines: how far each camera key moves the picture, recorded next to generated."""
    real, gen = control.get("scene_motion_real"), control.get("scene_motion_generated")
    if not real:
        return []
    return [
        f"Scene motion per key over the first {control['scene_motion_steps']} steps: the "
        "global shift and zoom between successive frames with the least squared difference, "
        "mean over the frames a key was held (the scene moving right or down is +, so a turn "
        "to the left reads +; a zoom above 0 magnifies):",
        "",
        "| key | frames | measure | recorded | generated |",
        "|---|---|---|---|---|",
        *(
            f"| {key} | {v['frames']} | {v['unit']} | {v['mean']:+.2f} | {gen[key]['mean']:+.2f} |"
            for key, v in real.items()
        ),
        "",
    ]


def _control_metric(control: dict[str, Any]) -> str:
    """What the controllability figures are, for the report."""
    if "dims" not in control:
        return f"{control['metric']} of the inverse-dynamics probe"
    per_dim = ", ".join(
        f"{n} {control['real_per_dim'][n]:.2f} / {control['generated_per_dim'][n]:.2f}"
        for n in control["real_per_dim"]
    )
    if not control["dims"]:
        seen = f"no action dimension reaches R^2 {PROBE_VISIBLE_R2} on validation frames"
    else:
        seen = "mean over " + ", ".join(control["dims"])
    return f"R^2 of the inverse-dynamics probe, {seen}; per dimension real / generated: {per_dim}"


def _strip_steps(sample: dict[str, np.ndarray], f: int) -> list[int]:
    horizon = len(sample["model"]) // f
    return [h for h in (1, 2, 4, 8, 16, 32, 64, 128) if h <= horizon]


def _strip(sample: dict[str, np.ndarray], f: int) -> np.ndarray:
    steps = _strip_steps(sample, f)
    rows = []
    for key in ("truth", "model"):
        frames = [sample["start"]] + [sample[key][h * f - 1] for h in steps]
        rows.append(np.concatenate(frames, 1))
    return np.concatenate(rows, 0)
