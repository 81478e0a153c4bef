"""Open-loop rollouts of recorded actions from held-out start frames, through the env's engine."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from gym_worldmodel.envs.engine import WorldEngine
from gym_worldmodel.envs.pose import EgoShift
from gym_worldmodel.evaluation.metrics import frame_stats
from gym_worldmodel.evaluation.resume import RolloutProgress
from gym_worldmodel.models import WorldModel
from gym_worldmodel.sources.episodes import DatasetError, Episode


def window_starts(episodes: Sequence[Episode], frames_needed: int, per_episode: int) -> list[tuple]:
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


@dataclass(frozen=True)
class OpenLoopWindows:
    """Held-out open-loop windows, a row per start: see :func:`open_loop_windows`."""

    starts: list[tuple[int, int]]  # (episode index, start frame) of each row: window_starts'
    first: np.ndarray  # (R, H, W, 3) uint8: the start frames
    truth: np.ndarray  # (R, frames, H, W, 3): the recorded frames after each start
    actions: np.ndarray  # (R, frames, w): the actions between them
    poses: np.ndarray | None  # (R, 4): the recorded poses at the starts (None: no poses)

    @property
    def episode(self) -> np.ndarray:
        """The held-out episode of each row ``(R,)`` (rows of one episode are not independent)."""
        return np.array([e for e, _ in self.starts])


def open_loop_windows(
    episodes: Sequence[Episode], frames: int, per_episode: int, data: Path | str = "the data"
) -> OpenLoopWindows:
    """Open-loop windows of held-out episodes at :func:`window_starts`' starts.

    The start frames, the ``frames`` recorded frames after each, the actions between them and
    the recorded poses at the starts, all of the same starts.
    """
    if not episodes:
        raise DatasetError(
            f"{data}: no held-out episodes (collect holds out episode i when i % heldout_every "
            "== heldout_every - 1: collect more episodes, or into a new directory with a smaller "
            "--heldout-every)"
        )
    starts = window_starts(episodes, frames, per_episode)
    if not starts:
        longest = max(len(ep.frames) for ep in episodes)
        raise DatasetError(
            f"{data}: no held-out episode has the {frames + 1} frames needed (longest: "
            f"{longest}); collect longer episodes (collect --steps) or shorter eval --horizons"
        )
    posed = all(ep.poses is not None for ep in episodes)
    return OpenLoopWindows(
        starts,
        first=np.stack([episodes[e].frames[s] for e, s in starts]),
        truth=np.stack([episodes[e].frames[s + 1 : s + 1 + frames] for e, s in starts]),
        actions=np.stack([episodes[e].actions[s : s + frames] for e, s in starts]),
        poses=np.stack([episodes[e].poses[s] for e, s in starts]) if posed else None,
    )


@dataclass(frozen=True)
class LongInputs:
    """What the long (stability) rollouts start from and run: see :func:`long_inputs`."""

    starts: np.ndarray  # (R, H, W, 3) uint8
    actions: np.ndarray  # (R, frames, w)
    poses: np.ndarray | None  # (R, 4) at the starts, or None
    recorded: np.ndarray | None  # (R, frames + 1, H, W, 3): the episodes' own frames, or None


#: Actions between the joined copies of the held-out actions of successive long rollouts.
JOIN_OFFSET = 97


def long_inputs(episodes: Sequence[Episode], rows: int, frames: int) -> LongInputs:
    """Start frames, ``frames`` actions and start poses of ``rows`` long rollouts.

    Held-out episodes with at least ``frames`` actions give their own from their first frame
    (row ``r`` takes the ``r % n``-th of them), with their recorded frames: the actions then
    keep the state where the behaviour policy kept it (a car on the road), and what the
    simulator showed under them is known. Otherwise every held-out episode's actions are
    joined end to end, each row starting ``JOIN_OFFSET`` actions further on, from the
    ``r % n``-th episode's first frame; joined actions need not stay where the data went (a
    driving policy's steering corrections, cut from their own road positions, drive off it).
    """
    long = [ep for ep in episodes if len(ep.actions) >= frames]
    poses = lambda eps: (  # noqa: E731
        None
        if any(ep.poses is None for ep in eps)
        else np.stack([eps[r % len(eps)].poses[0] for r in range(rows)])
    )
    if long:
        pick = [long[r % len(long)] for r in range(rows)]
        return LongInputs(
            np.stack([ep.frames[0] for ep in pick]),
            np.stack([ep.actions[:frames] for ep in pick]),
            poses(long),
            np.stack([ep.frames[: frames + 1] for ep in pick]),
        )
    joined = np.concatenate([ep.actions for ep in episodes])
    actions = np.stack(
        [
            np.resize(np.roll(joined, -r * JOIN_OFFSET, 0), (frames, joined.shape[1]))
            for r in range(rows)
        ]
    )
    starts = np.stack([episodes[r % len(episodes)].frames[0] for r in range(rows)])
    return LongInputs(starts, actions, poses(episodes), None)


def rollout(
    model: WorldModel,
    modality: str,
    start_frames: np.ndarray,
    actions: np.ndarray,
    seed: int,
    progress: str = "",
    record: str = "frames",
    dtype: torch.dtype = torch.float32,
    start_poses: np.ndarray | None = None,
    resume: Path | None = None,
) -> np.ndarray:
    """Run recorded actions through the env's engine from start frames, on the model's device.

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
        start_poses: ``(R, 4)`` poses at the start frames: a model whose anchors move with
            the car (``DiTConfig.anchor_ego``) integrates them with the actions, as the env
            does; other models ignore them.
        resume: A folder where the rollout keeps its progress, so that a rerun with the same
            inputs goes on where a stopped one saved (:mod:`gym_worldmodel.evaluation.resume`);
            None keeps nothing.
    """
    rows, f = len(start_frames), model.config.dit.chunk_frames
    chunks = step_actions(model, modality, actions, start_poses)  # checks them first
    engine = WorldEngine(model, rows, modality, model.device, dtype)
    engine.seed([seed + r for r in range(rows)], env_idx=range(rows))
    start = torch.from_numpy(np.repeat(start_frames[:, None], f, 1))
    engine.start(range(rows), start)
    inputs = {"start_frames": start_frames, "actions": actions, "poses": start_poses, "seed": seed}
    decode = slice(None) if record == "frames" else slice(-1, None)
    engines = {"engine": engine}
    with RolloutProgress(resume, record, model, engines, inputs, len(chunks)) as saved:
        for chunk in tqdm(
            chunks[saved.step :],
            desc=progress,
            disable=not progress,
            leave=False,
            initial=saved.step,
            total=len(chunks),
        ):
            frames = engine.step(chunk, decode)[1].cpu().numpy()
            saved.record(out=frames if record == "frames" else frame_stats(frames))
    return saved.outputs("out")


def step_actions(
    model: WorldModel, modality: str, actions: np.ndarray, start_poses: np.ndarray | None
) -> list[np.ndarray]:
    """Recorded actions ``(R, steps * F, w)`` as the engine's steps read them, ``(R, F, w')``.

    A model whose anchors move with the car (``DiTConfig.anchor_ego``) also reads the scene
    shift that the pose its actions integrate to gives, from ``start_poses`` ``(R, 4)``, as the
    env computes it; other models read the actions alone and ignore the poses.
    """
    rows, f = len(actions), model.config.dit.chunk_frames
    steps = actions.shape[1] // f
    chunks = [np.ascontiguousarray(actions[:, k * f : (k + 1) * f]) for k in range(steps)]
    ego = EgoShift.for_model(model.config, modality)
    if ego is None:
        return chunks
    if start_poses is None or np.shape(start_poses) != (rows, 4):
        raise ValueError(
            f"this model moves its {modality} anchors with the car: it needs start_poses "
            f"({rows}, 4), got {None if start_poses is None else np.shape(start_poses)}"
        )
    pose, out = start_poses, []
    for chunk in chunks:
        pose, moved = ego.step(pose, chunk)
        out.append(moved)
    return out


def autoencode(model: WorldModel, frames: np.ndarray, batch: int = 256) -> np.ndarray:
    """uint8 frames ``(n, H, W, 3)`` through the VAE's encoder and decoder (on its device)."""
    device = model.device
    with torch.no_grad():
        return np.concatenate(
            [
                model.vae.decode(
                    model.vae.encode(torch.from_numpy(frames[i : i + batch]).to(device))
                )
                .cpu()
                .numpy()
                for i in range(0, len(frames), batch)
            ]
        )


def with_sampler(model: WorldModel, nfe: int) -> WorldModel:
    """The same weights sampling deterministically with ``nfe`` Euler steps."""
    return model.with_sampler(nfe=nfe, stochastic=False).eval()
