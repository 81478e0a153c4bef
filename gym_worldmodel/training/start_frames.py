"""Bundle start frames for the shipped worlds: first frames of recorded training episodes.

``gym-worldmodel ship`` writes ``gym_worldmodel/worlds/<world>/start_frames.npz`` (key
``frames``, uint8 ``(N, H, W, 3)``) for the world each dataset's card names. Envs reset from one
of these, drawn with the reset seed, when no image is given.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from gym_worldmodel.files import WORLDS_DIR, atomic_write
from gym_worldmodel.sources.episodes import load_episodes, read_card


def bundle_start_frames(data: Path, count: int = 16, out_root: Path = WORLDS_DIR) -> Path:
    """Write ``count`` start frames (evenly spaced training episodes) for ``data``'s world."""
    world = read_card(Path(data))["world"]
    episodes = load_episodes(Path(data), "train")
    pick = np.linspace(0, len(episodes) - 1, min(count, len(episodes))).round().astype(int)
    frames = np.stack([episodes[i].frames[0] for i in pick])
    path = Path(out_root) / world / "start_frames.npz"
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda f: np.savez_compressed(f, frames=frames))
    return path
