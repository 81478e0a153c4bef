"""Training windows cut from recorded episodes, shaped like what the env does.

An env episode starts from one image (its first chunk is that frame repeated, with null actions)
and then generates chunk after chunk from actions. A training window mirrors that: frame ``s`` of a
recorded episode repeated ``F`` times is chunk 0 (the sink), and chunks ``1..N-1`` are the frames
that followed, each paired with the action that led to it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from gym_worldmodel.sources.episodes import DatasetError, Episode


@dataclass
class LatentEpisode:
    """An episode whose frames are scaled VAE latents ``(T + 1, C, h, w)`` float32."""

    frames: np.ndarray
    actions: np.ndarray


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

    Items are dicts: ``frames`` uint8 ``(N * F, H, W, 3)`` (or ``latents``), ``actions`` float32
    ``(N * F, action_dim)`` (zero for the sink) and ``modality`` (long scalar).
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
                f"chunks of {chunk_frames} needs"
            )
        widths = {ep.actions.shape[1] for ep in self.episodes}
        if max(widths) > action_dim:
            raise DatasetError(
                f"episode actions are {max(widths)} wide; the model takes {action_dim}"
            )

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
        return {
            self.key: torch.from_numpy(frames),
            "actions": torch.from_numpy(actions),
            "modality": torch.tensor(self.modality, dtype=torch.long),
        }


class Frames(torch.utils.data.Dataset):
    """Every frame of the episodes, for the VAE: items are uint8 ``(H, W, 3)`` tensors."""

    def __init__(self, episodes: Sequence[Episode]) -> None:
        self.frames = np.concatenate([ep.frames for ep in episodes])

    def __len__(self) -> int:
        return len(self.frames)

    def __getitem__(self, i: int) -> Tensor:
        return torch.from_numpy(self.frames[i])
