"""Training windows cut from recorded episodes, shaped like what the env does.

An env episode starts from one image (its first chunk is that frame repeated, with null actions)
and then generates chunk after chunk from actions. A training window mirrors that: frame ``s`` of a
recorded episode repeated ``F`` times is chunk 0 (the sink), and chunks ``1..N-1`` are the frames
that followed, each paired with the action that led to it.

With a memory geometry, each window also gets the chunk of the episode's past (before the window)
whose view overlaps most with the window's last frame, as the env's spatial memory would retrieve
it (``memory.SpatialMemory``), so the model learns to use what is retrieved.

:func:`chunk_windows` cuts them from dataset folders for the recipes (every modality, checked
against the model's action widths), with the frames encoded once up front
(:func:`encode_episodes`) or batch by batch (:func:`batch_latents`); :func:`ring_windows` is the
teacher's and the student's choice between the two.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, cast

import numpy as np
import torch
from torch import Tensor
from tqdm import tqdm

from gym_worldmodel.envs.pose import EgoShift, scene_shift
from gym_worldmodel.memory.spatial import GEOMETRIES, MIN_SCORE, ViewGeometry
from gym_worldmodel.models import WorldModel
from gym_worldmodel.sources.episodes import DatasetError, Episode, load_episodes, read_card
from gym_worldmodel.training.trainer import TrainConfig


@dataclass
class LatentEpisode:
    """An episode whose frames are scaled VAE latents ``(T + 1, C, h, w)`` float32."""

    frames: np.ndarray
    actions: np.ndarray
    poses: np.ndarray | None = None


class ChunkWindows(torch.utils.data.Dataset):
    """Every window of ``n_chunks`` chunks that fits in the episodes.

    Args:
        episodes: Recorded episodes of one modality.
        chunk_frames: Frames per chunk (``F``).
        n_chunks: Chunks per window, the sink included (``N``).
        action_dim: Padded action width of the model (``DiTConfig.action_dim``).
        modality: Expert id of the episodes' modality.
        stride: Frames between consecutive window starts.
        key: Item key of the frames: ``"frames"`` for uint8 frames, or ``"latents"`` for
            episodes whose ``frames`` are already encoded (``encode_episodes``).
        memory: View geometry for memory retrieval (frustum or top-down; needs poses), or None
            for no memory.
        min_score: Least view overlap that counts as a memory hit.
        ego_px_per_m: For a model whose anchors move with the car (``DiTConfig.anchor_ego``):
            pixels per metre of the frames; each action then carries the scene shift the
            recorded poses show (``envs.pose.scene_shift``) in the two columns after the
            episode's actions. None: actions as recorded.
        memory_gap: Frames a memory chunk must end before the frame it is retrieved for (0:
            any chunk before the window). A gap as long as the revisit benchmark's trains on
            memories of places left long ago, whose view the history no longer holds.

    Items are dicts: ``frames`` uint8 ``(N * F, H, W, 3)`` (or ``latents``), ``actions`` float32
    ``(N * F, action_dim)`` (zero for the sink) and ``modality`` (long scalar); with ``memory``
    also ``memory_frames`` (or ``memory_latents``) ``(N - 1, F, ...)``, the chunk retrieved for
    each generated chunk ``1..N-1`` by the pose of its last frame, as the env retrieves for the
    chunk it generates (the ``F`` frames ending at the retrieved frame), and ``memory_valid``
    ``(N - 1,)`` bool (False where nothing before the window overlaps enough, the chunk then
    being zeros). A loss that reads one memory for the whole window takes the last chunk's
    (:func:`batch_memory`).
    """

    def __init__(
        self,
        episodes: Sequence[Episode | LatentEpisode],
        chunk_frames: int,
        n_chunks: int,
        action_dim: int,
        modality: int,
        stride: int = 1,
        key: str = "frames",
        memory: ViewGeometry | None = None,
        min_score: float = MIN_SCORE,
        ego_px_per_m: float | None = None,
        memory_gap: int = 0,
    ) -> None:
        if n_chunks < 2:
            raise ValueError("a window needs the sink and at least one generated chunk")
        self.episodes, self.f, self.n = list(episodes), chunk_frames, n_chunks
        self.action_dim, self.modality, self.key = action_dim, modality, key
        follow = (n_chunks - 1) * chunk_frames  # frames after the start frame
        self.index = [
            (e, s)
            for e, ep in enumerate(self.episodes)
            for s in range(0, len(ep.frames) - follow, stride)
        ]
        if not self.index:
            raise DatasetError(
                f"no episode has the {follow + 1} frames a window of {n_chunks} "
                f"chunks of {chunk_frames} needs (longest: "
                f"{max((len(ep.frames) for ep in self.episodes), default=0)}); collect longer "
                "episodes (collect --steps; docs/datasets.md, 'How long episodes must be', says "
                "what each stage reads; self-forcing reads fewer with --max-chunks)"
            )
        if memory is not None and memory.kind == "latent":
            raise ValueError("training windows retrieve memory by pose: frustum or topdown")
        if memory_gap < 0:
            raise ValueError(f"memory_gap must be >= 0 frames, got {memory_gap}")
        self.memory, self.min_score, self.memory_gap = memory, min_score, memory_gap
        # window -> the memory frame of each generated chunk, filled as windows are read
        self._retrieved: dict[int, np.ndarray] = {}
        widths = {ep.actions.shape[1] for ep in self.episodes}
        extra = 0 if ego_px_per_m is None else 2  # the scene shift's columns
        if max(widths) + extra > action_dim:
            raise DatasetError(
                f"episode actions are {max(widths)} wide (+{extra} shift columns); the model "
                f"takes {action_dim}"
            )
        if extra and any(ep.poses is None for ep in self.episodes):
            raise DatasetError(
                "the scene shift of a model whose anchors move with the car "
                "comes from recorded poses: these episodes have none"
            )
        self.ego_px_per_m = ego_px_per_m

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int) -> dict[str, Tensor]:
        e, s = self.index[i]
        ep, follow = self.episodes[e], (self.n - 1) * self.f
        frames = np.concatenate(
            [np.repeat(ep.frames[s : s + 1], self.f, 0), ep.frames[s + 1 : s + 1 + follow]]
        )
        actions = np.zeros((self.n * self.f, self.action_dim), np.float32)
        acts = ep.actions[s : s + follow]  # action t leads to frame t + 1
        actions[self.f :, : acts.shape[1]] = acts
        if self.ego_px_per_m is not None:
            assert ep.poses is not None  # __init__ checked: the scene shift needs poses
            w = acts.shape[1]
            actions[self.f :, w : w + 2] = scene_shift(
                ep.poses[s : s + follow + 1], self.ego_px_per_m
            )
        item = {
            self.key: torch.from_numpy(frames),
            "actions": torch.from_numpy(actions),
            "modality": torch.tensor(self.modality, dtype=torch.long),
        }
        if self.memory is not None:
            if i not in self._retrieved:
                self._retrieved[i] = self._retrieve(e, s)
            ends = self._retrieved[i]
            empty = np.zeros((self.f, *ep.frames.shape[1:]), ep.frames.dtype)
            chunks = [ep.frames[j - self.f + 1 : j + 1] if j >= 0 else empty for j in ends]
            item[f"memory_{self.key}"] = torch.from_numpy(np.stack(chunks))
            item["memory_valid"] = torch.from_numpy(ends >= 0)
        return item

    def _retrieve(self, e: int, s: int) -> np.ndarray:
        """The frame ending the best memory chunk for each generated chunk of window ``(e, s)``.

        ``(N - 1,)``: for chunk ``j``, matched to the view of its last frame, from the chunks
        that end before the window starts and ``memory_gap`` frames or more before that frame;
        -1 where none overlaps ``min_score`` or more.
        """
        ep = self.episodes[e]
        ends = np.full(self.n - 1, -1, np.int64)
        if ep.poses is None:
            return ends
        assert self.memory is not None  # only windows with a memory geometry retrieve
        for j in range(1, self.n):
            last = s + j * self.f  # the chunk's last frame, whose view is matched
            candidates = np.arange(self.f - 1, min(s, last - self.memory_gap + 1))
            if not len(candidates):
                continue
            score = self.memory.overlap(ep.poses[last][None], ep.poses[candidates][None])[0]
            best = int(np.argmax(score))
            if score[best] >= self.min_score:
                ends[j - 1] = candidates[best]
        return ends


class Frames(torch.utils.data.Dataset):
    """Every frame of the episodes, for the VAE: items are uint8 ``(H, W, 3)`` tensors."""

    def __init__(self, episodes: Sequence[Episode]) -> None:
        if not episodes:
            raise DatasetError("no episodes to take frames from (is the training split empty?)")
        sizes = sorted({ep.frames.shape[1:] for ep in episodes})
        if len(sizes) > 1:
            raise DatasetError(f"the datasets' frames differ in size {sizes}: one size per run")
        self.frames = np.concatenate([ep.frames for ep in episodes])

    def __len__(self) -> int:
        return len(self.frames)

    def __getitem__(self, i: int) -> Tensor:
        return torch.from_numpy(self.frames[i])


class SizedDataset(Protocol):
    """A map-style dataset with a length (``torch.utils.data.Dataset`` declares no ``__len__``)."""

    def __len__(self) -> int: ...

    def __getitem__(self, i: int) -> Any: ...


class Balanced(torch.utils.data.Dataset):
    """Several datasets interleaved so that a uniform draw of an index picks each equally often.

    Item ``i`` is item ``(i // k) % len(d)`` of dataset ``d = datasets[i % k]``; the length is
    ``k`` times the longest, so the smaller datasets repeat.
    """

    def __init__(self, datasets: Sequence[SizedDataset]) -> None:
        if not datasets or not all(len(d) for d in datasets):
            raise DatasetError("Balanced needs at least one dataset, and none of them empty")
        self.datasets = list(datasets)

    def __len__(self) -> int:
        return len(self.datasets) * max(len(d) for d in self.datasets)

    def __getitem__(self, i: int):
        d = self.datasets[i % len(self.datasets)]
        return d[(i // len(self.datasets)) % len(d)]

    @classmethod
    def by_modality(cls, windows: torch.utils.data.ConcatDataset) -> Balanced:
        """The :class:`ChunkWindows` of a run, each modality (world) drawn equally often.

        A world with few frames comes up as often as one with many; the datasets of one
        modality stay in proportion to their size.
        """
        groups: dict[int, list[ChunkWindows]] = {}
        for ds in cast(list[ChunkWindows], windows.datasets):
            groups.setdefault(ds.modality, []).append(ds)
        return cls([torch.utils.data.ConcatDataset(g) for g in groups.values()])


def encode_episodes(
    model: WorldModel, episodes: Sequence, batch: int = 256, progress: str | None = None
) -> list[LatentEpisode]:
    """The episodes with frames replaced by scaled VAE latents (encoded once, not every step).

    ``progress`` labels a progress bar over the frames (None: no bar); a large dataset takes
    minutes on a CPU.
    """
    model.eval()
    device, out = model.device, []
    bar = tqdm(
        total=sum(len(ep.frames) for ep in episodes),
        desc=progress,
        unit="frame",
        disable=progress is None,
    )
    with torch.no_grad(), bar:
        for ep in episodes:
            frames = torch.from_numpy(ep.frames)
            latents = torch.cat(
                [
                    model.vae.encode(frames[i : i + batch].to(device)).float().cpu()
                    for i in range(0, len(frames), batch)
                ]
            )
            out.append(LatentEpisode(latents.numpy(), ep.actions, ep.poses))
            bar.update(len(frames))
    return out


def chunk_windows(
    model: WorldModel,
    data: Sequence[Path],
    n_chunks: int,
    encode: bool,
    split: str = "train",
    memory: bool = False,
    progress: bool = False,
    memory_gap: int = 0,
) -> torch.utils.data.ConcatDataset:
    """Windows of ``n_chunks`` chunks over every dataset's ``split`` episodes (all modalities).

    The recipes train on ``"train"``; measurements (docs/experiments.md) read ``"heldout"``.

    With ``encode`` the episodes are encoded once up front (items hold ``latents``): worth it
    when a run sees every frame several times. Otherwise items hold uint8 ``frames`` and the
    loss encodes each batch (:func:`batch_latents`). With ``memory``, windows of worlds with a
    pose carry a retrieved memory chunk (``ChunkWindows``, ``memory_gap`` frames or more before
    the window's last frame); the others carry an invalid one, so every item has the same keys.
    ``progress`` shows a bar while each dataset is encoded.
    """
    cfg = model.config.dit
    sets = []
    for d in data:
        episodes = load_episodes(Path(d), split)
        if not episodes:
            raise DatasetError(f"{d}: no {split} episodes")
        modality = read_card(Path(d))["modality"]
        geometry = GEOMETRIES[modality] if memory else None
        if geometry is not None and geometry.kind == "latent":  # no pose: never a memory chunk
            geometry = ViewGeometry("topdown")
            episodes = [dataclasses.replace(ep, poses=None) for ep in episodes]
        elif geometry is not None and any(ep.poses is None for ep in episodes):
            raise DatasetError(
                f"{d}: memory retrieves {modality} chunks by pose, and its episodes record none: "
                "collect them with poses, or train without memory"
            )
        widths = sorted({ep.actions.shape[1] for ep in episodes})
        if widths != [cfg.modalities[modality]]:  # before any encoding
            raise DatasetError(
                f"{d}: episode actions are {widths} wide; {modality} actions are "
                f"{cfg.modalities[modality]} (DiTConfig.modalities)"
            )
        ego = EgoShift.for_model(model.config, modality)
        sets.append(
            ChunkWindows(
                encode_episodes(model, episodes, progress=f"encoding {d}" if progress else None)
                if encode
                else episodes,
                cfg.chunk_frames,
                n_chunks,
                cfg.action_dim,
                cfg.modality_id(modality),
                key="latents" if encode else "frames",
                memory=geometry,
                ego_px_per_m=None if ego is None else ego.px_per_m,
                memory_gap=memory_gap,
            )
        )
    return torch.utils.data.ConcatDataset(sets)


def batch_latents(model: WorldModel, batch: dict, key: str = "") -> torch.Tensor:
    """The batch's clean latents (``key="memory_"``: its memory chunks), encoded if need be.

    Frames ``(..., T, H, W, 3)`` of any leading axes are encoded a ``T``-frame clip at a time.
    """
    if f"{key}latents" in batch:
        return batch[f"{key}latents"]
    frames = batch[f"{key}frames"]
    with torch.no_grad():
        encoded = model.vae.encode(frames.flatten(0, -5)).float()
    return encoded.reshape(*frames.shape[:-4], *encoded.shape[1:])


def batch_memory(model: WorldModel, batch: dict, chunk: int | None = -1) -> dict[str, torch.Tensor]:
    """Keyword arguments ``memory`` / ``memory_valid`` of the losses (empty without memory).

    ``chunk``: whose retrieved memory, by its place among the window's generated chunks (-1,
    the last: the losses that read one memory for the window, whose last chunk they train or
    whose view spans it), ``(B, F, C, h, w)`` and ``(B,)``; None: every chunk's,
    ``(B, N - 1, F, C, h, w)`` and ``(B, N - 1)``, for a loss that picks the chunk it trains.
    """
    if "memory_valid" not in batch:
        return {}
    picked = {
        k: v if chunk is None else v[:, chunk] for k, v in batch.items() if k.startswith("memory_")
    }
    memory = batch_latents(model, picked, "memory_")  # (B, [N - 1,] F, C, h, w)
    return {"memory": memory, "memory_valid": picked["memory_valid"]}


def ring_windows(
    model: WorldModel,
    data: Sequence[Path],
    train: TrainConfig,
    n_chunks: int | None,
    memory: bool,
    progress: bool,
) -> torch.utils.data.ConcatDataset:
    """The teacher's and the student's windows, with ``model`` moved to the training device.

    ``n_chunks`` chunks each (default: the sink, the ring window and 2 more, so the ring
    wraps); encoded once up front, on that device, when the run reads more frames than the
    data holds, else batch by batch.
    """
    model.to(train.device)
    cfg = model.config.dit
    n = cfg.sink_chunks + cfg.window_chunks + 2 if n_chunks is None else n_chunks
    encode = reads_more_than_data(data, train, n * cfg.chunk_frames)
    return chunk_windows(model, data, n, encode=encode, memory=memory, progress=progress)


def reads_more_than_data(data: Sequence[Path], train: TrainConfig, window_frames: int) -> bool:
    """Whether a run reads more frames than the training data holds.

    Encoding every frame once up front then costs less than encoding each batch. The frame
    counts come from the cards (each shard records its own), not from reading the shards.
    """
    frames = sum(
        shard["frames"]
        for d in data
        for shard in read_card(Path(d))["shards"]
        if shard["split"] == "train"
    )
    return train.steps * train.batch_size * window_frames > frames
