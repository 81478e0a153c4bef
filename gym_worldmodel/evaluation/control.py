"""Controllability: an inverse-dynamics probe trained on real frames, read on generated ones.

The probe reads the action from a window of frames (``t-1 .. t+4`` -> action ``t``): the keys
(camera) or the continuous values (robot, driving). For the camera, how far each key moves the
picture is measured too (:func:`scene_motion_by_key`).
"""

from __future__ import annotations

import copy
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from gym_worldmodel.envs.actions import CAMERA_MOVE, CAMERA_TURN
from gym_worldmodel.evaluation.resume import LoopProgress, SaveAt
from gym_worldmodel.sources.episodes import DatasetError, Episode

PROBE_WINDOW = (-1, 5)  # frames t-1 .. t+4 -> action t (actions persist over a few frames)
#: Actions an episode needs for one whole probe window (its frames t-1 .. t+4 around action t).
PROBE_MIN_ACTIONS = PROBE_WINDOW[1] - PROBE_WINDOW[0] - 1
MOTION_GAIN = 8.0  # scale of the frame differences the probe sees
PROBE_VISIBLE_R2 = 0.1  # validation R^2 below which a continuous action dimension is not visible
#: Raise it with any change that alters what :func:`train_probe` returns for the same episodes,
#: steps and seed: ``evaluation.probe_cache`` keeps trained probes under it.
PROBE_VERSION = 1
PROBE_DIMS = {
    "robot": ("x", "y", "z", "roll", "pitch", "yaw", "gripper"),
    "driving": ("steering", "acceleration"),
}
#: The camera keys the probe reads, per group (the order of the ``envs.actions.CameraHead`` keys).
CAMERA_KEYS = {
    "translation": ("none", "forward", "left", "back", "right"),
    "rotation": ("none", "yaw left", "yaw right", "pitch up", "pitch down"),
}
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


def probe_targets(modality: str, actions: np.ndarray) -> np.ndarray:
    """What the probe predicts: key classes (camera) or the continuous action values."""
    if modality == "camera":
        keys = (actions[..., CAMERA_MOVE].argmax(-1), actions[..., CAMERA_TURN].argmax(-1))
        return np.stack(keys, -1)
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


def probe_windows(frames: np.ndarray, t: np.ndarray) -> np.ndarray:
    """``frames`` ``(T, H, W, 3)``, centres ``t`` -> ``(n, K, H, W, 3)``."""
    offsets = np.arange(*PROBE_WINDOW)
    return frames[t[:, None] + offsets[None]]


def window_centres(n_actions: int, every: int = 1) -> np.ndarray:
    """Every ``every``-th action index whose whole window lies inside ``n_actions + 1`` frames."""
    return np.arange(-PROBE_WINDOW[0], n_actions - PROBE_WINDOW[1] + 2, every)


def episode_windows(episodes: Sequence[Episode], every: int) -> tuple[np.ndarray, np.ndarray]:
    """Windows at every ``every``-th valid centre of each episode, and their actions."""
    t = [window_centres(len(ep.actions), every) for ep in episodes]
    windows = np.concatenate(
        [probe_windows(ep.frames, c) for ep, c in zip(episodes, t, strict=True)]
    )
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
    modality: str,
    episodes: Sequence[Episode],
    steps: int,
    seed: int,
    progress: bool = False,
    resume: SaveAt | None = None,
) -> Probe:
    """Train the inverse-dynamics probe on real frames of ``episodes`` (training episodes).

    Every 6th episode is held back for validation, scored every ``steps // 10`` steps: the probe
    kept is the best one there (with a few dozen episodes it starts to memorise them), and it
    tells which continuous dimensions the frames show at all (``Probe.visible``). Batches are
    shifted by up to 4 pixels, the whole window alike. Episodes of fewer than
    :data:`PROBE_MIN_ACTIONS` actions hold no window and are left out.

    ``seed`` seeds the batches, the probe's weights and its dropout; torch's global generator is
    left as the caller had it. ``resume``: where the training keeps its progress and its key
    (``probe_cache`` keys it as the probe it keeps): its weights, optimizer, best probe so far and
    random streams, so that a rerun goes on where a stopped one saved, to the same probe
    (:mod:`gym_worldmodel.evaluation.resume`); None keeps nothing.
    """
    if len(episodes) < 2:
        raise ValueError(
            f"the probe needs 2 or more training episodes (one validates), got {len(episodes)}"
        )
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    held, fit = _probe_split(episodes)
    # the probe's weights and dropout draw from torch's CPU generator: seeded here, and the
    # caller's state of it given back after (the probe runs on the CPU; no other is touched)
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(seed)
        gen = np.random.default_rng(seed)
        return _train_probe(modality, held, fit, steps, gen, progress, resume)


def _train_probe(
    modality: str,
    held: list[Episode],
    fit: list[Episode],
    steps: int,
    gen: np.random.Generator,
    progress: bool,
    resume: SaveAt | None = None,
) -> Probe:
    """:func:`train_probe` on its validation and training episodes; ``gen`` draws the batches."""
    every = max(1, sum(len(ep.actions) for ep in held) // 2000)
    val_windows, val_actions = episode_windows(held, every)
    val_targets = probe_targets(modality, val_actions)
    if modality == "camera":
        outputs, mean, std = 10, np.zeros(10), np.ones(10)
    else:
        targets = np.concatenate([probe_targets(modality, ep.actions) for ep in fit])
        outputs, mean, std = targets.shape[1], targets.mean(0), targets.std(0) + 1e-6
    net = InverseDynamicsProbe(outputs)
    probe = Probe(net, modality, mean, std, np.zeros(0), np.zeros(0, bool))
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3, weight_decay=0.05)
    check = max(1, steps // 10)
    best, kept = -math.inf, None

    def snapshot() -> dict[str, Any]:  # what the steps after this one depend on
        return {
            "net": net.state_dict(),
            "optimizer": opt.state_dict(),
            "batches": json.dumps(gen.bit_generator.state),  # (128-bit integers)
            "torch": torch.default_generator.get_state(),  # the dropout's
            "best": best,
            "kept": None if kept is None else {"net": kept[0], "values": kept[1]},
        }

    def load(state: dict[str, Any], into: tuple) -> None:
        to_net, to_opt, to_gen, to_torch = into
        to_net.load_state_dict(state["net"])
        to_opt.load_state_dict(state["optimizer"])
        to_gen.bit_generator.state = json.loads(state["batches"])
        to_torch.set_state(state["torch"])

    def loadable(state: dict[str, Any]) -> None:  # the same loads, into copies
        copied = copy.deepcopy(net)
        if state["kept"] is not None:
            copied.load_state_dict(state["kept"]["net"])
        copies = (
            copied,
            type(opt)(copied.parameters()),
            np.random.default_rng(),
            torch.Generator(),
        )
        load(state, copies)

    def restore(state: dict[str, Any]) -> None:
        nonlocal best, kept
        load(state, (net, opt, gen, torch.default_generator))
        best = state["best"]
        kept = None if state["kept"] is None else (state["kept"]["net"], state["kept"]["values"])

    saved = LoopProgress(resume, "probe", steps, "probe training", snapshot, restore, loadable)
    with saved:
        for step in tqdm(
            range(saved.step, steps),
            desc=f"probe {modality}",
            leave=False,
            disable=not progress,
            initial=saved.step,
            total=steps,
        ):
            batch, target = _probe_batch(modality, fit, gen)
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
            saved.done_step()
    assert kept is not None  # (the last step is always validated)
    net.load_state_dict(kept[0])
    net.eval()
    probe.validation = kept[1]
    probe.visible = np.ones(2, bool) if modality == "camera" else kept[1] >= PROBE_VISIBLE_R2
    return probe


def _probe_batch(
    modality: str, fit: list[Episode], gen: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """64 windows of ``fit``'s episodes, drawn by ``gen``, shifted alike by up to 4 pixels."""
    x, y = [], []
    for e in gen.integers(len(fit), size=64):
        ep = fit[e]
        valid = window_centres(len(ep.actions))
        t = gen.integers(valid[0], valid[-1] + 1, size=1)
        x.append(probe_windows(ep.frames, t))
        y.append(probe_targets(modality, ep.actions[t]))
    shift = tuple(int(v) for v in gen.integers(-4, 5, 2))
    return np.roll(np.concatenate(x), shift, axis=(-3, -2)), np.concatenate(y)


def _probe_split(episodes: Sequence[Episode]) -> tuple[list[Episode], list[Episode]]:
    """Validation (every 6th) and training episodes, those too short for a window left out.

    An episode of fewer than :data:`PROBE_MIN_ACTIONS` actions holds no whole window. Where
    leaving them out empties either side, the long enough ones are split again.

    Raises:
        DatasetError: Fewer than 2 episodes are long enough.
    """
    long = [len(window_centres(len(ep.actions))) > 0 for ep in episodes]
    if sum(long) < 2:
        raise DatasetError(
            f"the inverse-dynamics probe needs 2 or more training episodes of at least "
            f"{PROBE_MIN_ACTIONS} actions (its window spans {PROBE_MIN_ACTIONS + 1} frames), got "
            f"{sum(long)} of {len(episodes)}; collect longer episodes (--steps)"
        )
    held = [ep for i, ep in enumerate(episodes) if i % 6 == 0 and long[i]]
    fit = [ep for i, ep in enumerate(episodes) if i % 6 and long[i]]
    if not held or not fit:
        kept = [ep for ep, ok in zip(episodes, long, strict=True) if ok]
        held, fit = kept[::6], [ep for i, ep in enumerate(kept) if i % 6]
    return held, fit


def _probe_loss(modality: str, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    if modality == "camera":
        y = y.long()
        return F.cross_entropy(out[:, :5], y[:, 0]) + F.cross_entropy(out[:, 5:], y[:, 1])
    return F.mse_loss(out, y.float())


#: Real-frame probe scores under this are too near reading nothing to divide by: the driving
#: probe's R^2 of 0.003 in the first step (few windows turn there) gave a ratio of -90.89.
MIN_REAL_SCORE = 0.05


def control_ratio(generated: float, real: float, chance: float = 0.0) -> float:
    """Generated / real controllability; NaN where real beats ``chance`` by < ``MIN_REAL_SCORE``.

    A probe that reads (next to) nothing from real frames gives no ratio that means anything:
    R^2 near 0, or a key accuracy near what always answering the most common keys scores
    (``chance``; on data of one key both would read 1.00).
    """
    return generated / real if real - chance >= MIN_REAL_SCORE else math.nan


def majority_score(targets: np.ndarray) -> float:
    """Key accuracy of a probe that ignores the frames: each key group's most common key."""
    targets = np.asarray(targets, np.int64)
    return float(np.mean([np.bincount(col).max() / len(col) for col in targets.T]))


def above_chance(generated: float, real: float, chance: float) -> float:
    """``(generated - chance) / (real - chance)``, the controllability measured from chance.

    The share of what the probe reads from real frames beyond chance that it also reads from
    generated ones (1: all of it, 0: nothing, below 0: less than a probe that looks at nothing).
    NaN where real frames beat chance by less than ``MIN_REAL_SCORE``. For R^2 chance is 0 and
    this is :func:`control_ratio`.
    """
    margin = real - chance
    return (generated - chance) / margin if margin >= MIN_REAL_SCORE else math.nan


def ratio_text(ratio: float) -> str:
    """A ratio as the report prints it: ``n/a`` where :func:`control_ratio` gave none."""
    return "n/a" if math.isnan(ratio) else f"{ratio:.2f}"


def control_by_horizon(
    probe: Probe,
    real: np.ndarray,
    generated: np.ndarray,
    targets: np.ndarray,
    steps: np.ndarray,
    rollouts: int,
    horizons: Sequence[int],
    chance: Callable[[np.ndarray], float] | None = None,
) -> dict[int, dict[str, Any]]:
    """The probe's scores over the windows of steps after the previous horizon up to each one.

    ``steps`` ``(n,)``: the step (chunk) of each window's action in one rollout; the windows of
    all ``rollouts`` follow each other in that order. A model that shows its actions at first
    and loses them as it drifts scores high at h = 1 and low later, which one figure over the
    whole rollout cannot tell from a model that never shows them. Spans are named by the
    horizons that bound them; a window also sees the frames just after its action's step, and
    the last actions of a rollout have no whole window. A span without windows is left out.
    ``chance`` (key accuracy): the score of a probe that ignores the frames on the span's
    targets, from which each span's ``above_chance`` is measured too.
    """
    table, after = {}, 0
    for h in sorted(horizons):
        keep = np.tile((steps > after) & (steps <= h), rollouts)
        if keep.any():
            real_score = probe.score(real[keep], targets[keep])
            gen_score = probe.score(generated[keep], targets[keep])
            level = 0.0 if chance is None else chance(targets[keep])
            table[h] = {
                "steps": [after + 1, h],
                "windows": int(keep.sum()),
                "real": real_score,
                "generated": gen_score,
                "ratio": control_ratio(gen_score, real_score, level),
            }
            if chance is not None:  # accuracy: also measured from what nothing scores
                table[h]["chance"] = level
                table[h]["above_chance"] = above_chance(gen_score, real_score, level)
        after = h
    return table


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
    keys = probe_targets("camera", actions).reshape(-1, 2)
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
