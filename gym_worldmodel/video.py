"""Writing generated frames as an MP4 (moviepy, the ``video`` extra)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np


def write_video(path: str | os.PathLike, frames: np.ndarray, fps: float) -> Path:
    """Write uint8 frames ``(T, H, W, 3)`` to ``path`` (H.264 MP4), replacing it atomically."""
    frames = np.asarray(frames)
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3 or not len(frames):
        raise ValueError(
            f"frames must be uint8 (T, H, W, 3) with T >= 1, got {frames.dtype} {frames.shape}"
        )
    try:
        from moviepy import ImageSequenceClip
    except ImportError as err:
        raise ImportError("writing video needs moviepy: pip install gym-worldmodel[video]") from err
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp{path.suffix or '.mp4'}")
    clip = ImageSequenceClip(list(frames), fps=fps)
    try:
        clip.write_videofile(str(tmp), codec="libx264", audio=False, logger=None)
        os.replace(tmp, path)
    finally:
        clip.close()
        tmp.unlink(missing_ok=True)
    return path
