"""Writing generated frames as an MP4 or a GIF (moviepy, the ``video`` extra)."""

from __future__ import annotations

import glob
import operator
import os
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

#: The most memory a GIF's encoding may take (a GIF is encoded whole; see :func:`write_video`).
GIF_BYTES = 2**30

#: What :func:`write_video` writes, by the path's suffix (none: an MP4 by that name).
VIDEO_SUFFIXES = (".mp4", ".mov", ".mkv", ".gif")


def video_path(path: str | os.PathLike, make_folder: bool = True) -> Path:
    """``path`` checked for :func:`write_video`: a suffix it writes, not a folder.

    Its folder is made unless ``make_folder`` is False. Call it before a long rollout, so that a
    bad name fails before the frames are made.
    """
    path = Path(path)
    if path.suffix.lower() not in (*VIDEO_SUFFIXES, ""):
        raise ValueError(
            f"video {path}: write an MP4, MOV, MKV (H.264) or GIF ({', '.join(VIDEO_SUFFIXES)}), "
            f"not {path.suffix}"
        )
    if path.is_dir():
        raise ValueError(f"video {path} is a folder: name the file to write, e.g. {path}/run.mp4")
    if make_folder:
        path.parent.mkdir(parents=True, exist_ok=True)
    return path


def write_video(path: str | os.PathLike, frames: np.ndarray, fps: float, scale: int = 1) -> Path:
    """Write uint8 frames ``(T, H, W, 3)`` to ``path``, replacing it atomically.

    H.264 in an MP4 (MOV, MKV by the suffix), or an animated GIF for ``.gif``, whose frames last
    whole hundredths of a second: the nearest to ``1 / fps`` (15 fps plays at 14.3). ``scale``
    enlarges each pixel to ``scale`` x ``scale`` (nearest neighbour: the world's pixels as they
    are; a player would blur a 64 x 64 video it enlarges); a GIF too large to encode in
    :data:`GIF_BYTES` at it is written at the largest scale that fits, with a warning.
    """
    frames = np.asarray(frames)
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3 or not len(frames):
        raise ValueError(
            f"frames must be uint8 (T, H, W, 3) with T >= 1, got {frames.dtype} {frames.shape}"
        )
    try:
        scale = operator.index(scale) if not isinstance(scale, bool) else -1  # NumPy ints too
    except TypeError:
        scale = -1
    if not 1 <= scale <= 16:
        raise ValueError(
            f"scale must be an int in [1, 16] (video pixels a frame pixel), got {scale!r}"
        )

    if path_is_gif := Path(path).suffix.lower() == ".gif":
        # a GIF is encoded whole (its frames enlarged, then Pillow's copies: about 3x them)
        fit = scale
        while fit > 1 and 3 * frames.nbytes * fit**2 > GIF_BYTES:
            fit -= 1
        if fit < scale:  # written smaller rather than not at all (a played session is kept)
            warnings.warn(
                f"a GIF of {len(frames)} frames at scale {scale} would take about "
                f"{3 * frames.nbytes * scale**2 / 2**30:.1f} GiB to encode: written at scale "
                f"{fit} (an .mp4 is encoded a frame at a time)",
                stacklevel=2,
            )
            scale = fit

    def enlarged(frame: np.ndarray) -> np.ndarray:  # an MP4's one frame at a time; a GIF whole
        return frame.repeat(scale, axis=-3).repeat(scale, axis=-2) if scale > 1 else frame

    try:
        import imageio.v3 as iio
        from moviepy.video.io.ffmpeg_writer import FFMPEG_VideoWriter
    except ImportError as err:
        raise ImportError("writing video needs moviepy: pip install gym-worldmodel[video]") from err
    path = video_path(path)
    try:  # a name of its own: two writers of one video must not share a temporary file
        fd, name = tempfile.mkstemp(
            dir=path.parent, prefix=f".{path.stem}.", suffix=f".tmp{path.suffix or '.mp4'}"
        )
    except OSError as err:
        raise OSError(err.errno, f"cannot write {path}: {err.strerror or err}") from err
    os.close(fd)
    tmp = Path(name)
    for old in path.parent.glob(f".{glob.escape(path.stem)}.*.tmp{path.suffix or '.mp4'}"):
        if time.time() - old.lstat().st_mtime > 600:  # a killed writer's, not a live one's
            old.unlink(missing_ok=True)
    # Frame by frame, each exactly once: moviepy's ImageSequenceClip finds the frame of each
    # output time by float arithmetic, and dropped or repeated frames (at 5 fps, 6 of 31).
    try:
        if path_is_gif:
            # GIF counts centiseconds; Pillow would floor 66.7 ms to 60 (16.7 fps for 15)
            centis = max(1, round(100 / fps))
            iio.imwrite(tmp, enlarged(frames), extension=".gif", duration=10 * centis, loop=0)
        else:
            size = (frames.shape[2] * scale, frames.shape[1] * scale)  # width, height
            with FFMPEG_VideoWriter(str(tmp), size, fps, codec="libx264") as writer:
                for frame in frames:
                    writer.write_frame(enlarged(frame))
        if not tmp.is_file() or not tmp.stat().st_size:  # the encoder failed and said nothing
            raise OSError(f"cannot write {path}: the video encoder wrote nothing")
        os.chmod(tmp, 0o644)  # as a file written by name (mkstemp makes it the owner's alone)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path
