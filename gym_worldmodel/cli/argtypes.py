"""The commands' shared options: number types, ``--dtype``, the ``--device`` and ``--video`` checks.

Also used by the scripts that take the same options (``bench``, ``agents/``); and
:class:`Interrupted`, a command's Ctrl-C that says what comes next.
"""

from __future__ import annotations

import argparse
import importlib.util
import math
from collections.abc import Callable
from pathlib import Path


class Interrupted(KeyboardInterrupt):
    """A command stopped by Ctrl-C (or SIGTERM), its message saying what to do next."""


def add_world_dtype(parser: argparse.ArgumentParser) -> None:
    """The worlds' ``--dtype`` (the envs' ``dtype``), as every command that plays one takes it."""
    parser.add_argument(
        "--dtype",
        choices=["auto", "float32", "bfloat16"],
        default="auto",
        help="auto: bf16 autocast where the device computes it natively, else float32",
    )


def add_memory_guidance(parser: argparse.ArgumentParser, whose: str = "the world's") -> None:
    """``--memory-guidance`` (``SamplerConfig.memory_guidance``), as commands that play take it."""
    parser.add_argument(
        "--memory-guidance",
        type=non_negative_float,
        metavar="SCALE",
        help=f"guidance towards retrieved spatial memory of {whose} (default: the checkpoint's "
        "own, 1 = none): a step where memory is held runs the denoiser again without it and "
        "extrapolates; 2 brings the city walk's revisits closer to what it showed on average "
        "(+0.33 dB, within the spread of its episodes), at about 1.7x the step",
    )


def _int_at_least(least: int, text: str) -> int:
    if not text.strip().isdigit() or int(text) < least:
        raise argparse.ArgumentTypeError(f"must be an int >= {least}, got {text!r}")
    return int(text)


def _finite_number(text: str, fits: Callable[[float], bool], what: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and fits(value)):
        raise argparse.ArgumentTypeError(f"must be {what}, got {text!r}")
    return value


def positive_int(text: str) -> int:
    """Argparse type of counts and sizes (steps, episodes, batch size, ``--nfe``): an int >= 1."""
    return _int_at_least(1, text)


#: ``--nfe``'s type: denoiser passes per step.
denoiser_passes = positive_int


def video_scale(text: str) -> int:
    """Argparse type of ``--scale``: video pixels a frame pixel, an int in [1, 16]."""
    if not text.strip().isdigit() or not 1 <= int(text) <= 16:
        raise argparse.ArgumentTypeError(f"must be an int in [1, 16], got {text!r}")
    return int(text)


def add_video_scale(parser: argparse.ArgumentParser) -> None:
    """``--scale``: how much ``--video`` enlarges the frames (rollout and play alike)."""
    parser.add_argument(
        "--scale",
        type=video_scale,
        default=4,
        help="video pixels per frame pixel, 1 to 16, nearest neighbour (default 4: 256 x 256 for "
        "the 64 x 64 worlds; 1 writes the frames as they are)",
    )


def non_negative_int(text: str) -> int:
    """Argparse type of seeds and counts that may be 0: an int >= 0.

    NumPy's and torch's generators take no other seeds.
    """
    return _int_at_least(0, text)


def folder_name(text: str) -> str:
    """Argparse type of a folder made under another (``ship --name``): one plain name.

    Letters, digits, ``_``, ``-`` and ``.`` (not ``.`` or ``..``): no separator, so it cannot
    write outside its parent.
    """
    ok = text not in ("", ".", "..") and all(c.isalnum() or c in "_-." for c in text)
    if not ok:
        raise argparse.ArgumentTypeError(f"must be one folder name (no '/' or '..'), got {text!r}")
    return text


def folder_path(text: str) -> Path:
    """Argparse type of a folder a command writes into (``--out``): absent, or a folder.

    A file of that name would fail only when the first write tries to make the folder.
    """
    path = Path(text)
    if path.exists() and not path.is_dir():
        raise argparse.ArgumentTypeError(
            f"must name a folder (new or existing), {text!r} is a file"
        )
    return path


def picture_path(text: str) -> Path:
    """Argparse type of a picture to write (``--out`` of the examples).

    A name whose extension PIL saves, so a bad one fails before the frames are made.
    """
    from PIL import Image

    path = Path(text)
    kind = Image.registered_extensions().get(path.suffix.lower())
    if kind not in Image.SAVE:
        raise argparse.ArgumentTypeError(
            f"must end in a picture extension PIL writes (.png, .jpg, ...), got {text!r}"
        )
    return path


def non_negative_float(text: str) -> float:
    """Argparse type of loss weights: a finite number >= 0."""
    return _finite_number(text, lambda v: v >= 0, "a finite number >= 0")


def fraction(text: str) -> float:
    """Argparse type of a fraction of windows: a number in [0, 1]."""
    value = non_negative_float(text)
    if value > 1:
        raise argparse.ArgumentTypeError(f"must be a fraction in [0, 1], got {text!r}")
    return value


def positive_float(text: str) -> float:
    """Argparse type of rates (``--lr``): a finite number > 0."""
    return _finite_number(text, lambda v: v > 0, "a finite number > 0")


def finite_float(text: str) -> float:
    """Argparse type of coordinates (a lane's y, a target): any finite number."""
    return _finite_number(text, lambda v: True, "a finite number")


def require(module: str, what: str, extra: str) -> None:
    """Exit naming the extra to install unless ``module`` is importable.

    Checked before a command's work, not when it writes its results at the end.
    """
    if importlib.util.find_spec(module) is None:
        raise SystemExit(f"{what} needs {module}: pip install gym-worldmodel[{extra}]")


def check_video(path: Path, make_folder: bool = True) -> None:
    """Exit with a clear message unless ``--video`` can write ``path`` (moviepy installed).

    Its folder is made, unless ``make_folder`` is False (then the writing makes it). Checked
    before a rollout, so that a bad name fails before the frames are made.
    """
    from gym_worldmodel.video import video_path

    for module in ("moviepy", "imageio"):  # MP4 through one, GIF through the other
        require(module, "--video", "video")

    from gym_worldmodel.files import unwritable

    why = unwritable(path)  # first: before its folder is made
    if why:  # a read-only folder found now, not after the frames are made
        raise SystemExit(f"--video {path}: {why} (nothing was played)")
    try:
        video_path(path, make_folder)
    except (OSError, ValueError) as err:
        raise SystemExit(f"--video: {err}") from err


def check_device(device: str) -> None:
    """Exit with a clear message unless ``device`` names a torch device present here."""
    from gym_worldmodel.models import available_device

    try:
        available_device(device, "--device")
    except ValueError as err:
        raise SystemExit(str(err)) from None
