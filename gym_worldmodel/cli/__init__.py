"""The ``gym-worldmodel`` command line.

Subcommands:
    bench: benchmarks that print their figures (see :mod:`gym_worldmodel.bench`).
    collect: record episodes from a simulator, or your own recordings, into the episode format
        (resumable).
    train: train a stage (vae, decoder, teacher, student, flow, self-forcing; resumable).
    eval: score a model against held-out episodes and write a report.
    rollout: play a world and write the video.
    play: play a world from the keyboard in a window.
    ship: install a checkpoint and start frames as an embedded world.
    cache: list or clear the probes eval keeps in the per-user cache.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from gym_worldmodel.cli.argtypes import (
    Interrupted,
    check_device,
    denoiser_passes,
    finite_float,
    fraction,
    non_negative_float,
    non_negative_int,
    picture_path,
    positive_float,
    positive_int,
)
from gym_worldmodel.cli.cache import cache_main
from gym_worldmodel.cli.collect import SOURCES, collect_main, load_source, parse_options
from gym_worldmodel.cli.evaluate import eval_main
from gym_worldmodel.cli.play import play_main
from gym_worldmodel.cli.rollout import read_actions, read_start_image, rollout_main
from gym_worldmodel.cli.ship import ship_main
from gym_worldmodel.cli.train import train_main
from gym_worldmodel.cli.train_options import STAGE_OPTIONS
from gym_worldmodel.cli.worlds import SHIPPED, WORLD_IDS, per_world

__all__ = [
    "SHIPPED",
    "SOURCES",
    "STAGE_OPTIONS",
    "WORLD_IDS",
    "cache_main",
    "check_device",
    "collect_main",
    "denoiser_passes",
    "finite_float",
    "eval_main",
    "fraction",
    "load_source",
    "main",
    "non_negative_float",
    "non_negative_int",
    "parse_options",
    "per_world",
    "picture_path",
    "play_main",
    "positive_float",
    "positive_int",
    "read_actions",
    "read_start_image",
    "rollout_main",
    "ship_main",
    "train_main",
]


def main(argv: Sequence[str] | None = None) -> int:
    """Dispatch ``gym-worldmodel <command> ...``."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help") or args[0] not in COMMANDS:
        helped = bool(args) and args[0] in ("-h", "--help")
        out = sys.stdout if helped else sys.stderr
        if args and not helped:
            print(f"gym-worldmodel: unknown command {args[0]!r}\n", file=out)
        print("usage: gym-worldmodel <command> [options]\n\ncommands:", file=out)
        for name, (help_text, _) in COMMANDS.items():
            print(f"  {name:<8} {help_text}", file=out)
        return 0 if helped else 2
    try:
        with _warnings_as_lines(args[0]):
            _run(args)
    except (ValueError, OSError, FloatingPointError) as err:
        # what the user gave (a path, a dataset, a checkpoint, a setting) does not fit, or a run
        # diverged: the message says what was expected
        if os.environ.get("GYM_WORLDMODEL_TRACEBACK"):
            raise
        # a ValueError's message says what was expected; another error's kind says more
        kind = "" if isinstance(err, (ValueError, FileNotFoundError)) else f"{type(err).__name__}: "
        print(f"gym-worldmodel {args[0]}: error: {kind}{err}", file=sys.stderr)
        print("(GYM_WORLDMODEL_TRACEBACK=1 shows where it was raised)", file=sys.stderr)
        return 2
    except SystemExit as err:
        # argparse's own (it printed its usage and error), or a traceback asked for
        if not isinstance(err.code, str) or os.environ.get("GYM_WORLDMODEL_TRACEBACK"):
            raise
        # a subcommand's own one-line refusal (SystemExit(message)): said as the errors above,
        # with their exit status, not Python's bare message and status 1
        print(f"gym-worldmodel {args[0]}: error: {err.code}", file=sys.stderr)
        print("(GYM_WORLDMODEL_TRACEBACK=1 shows where it was raised)", file=sys.stderr)
        return 2
    except KeyboardInterrupt as err:
        if os.environ.get("GYM_WORLDMODEL_TRACEBACK"):
            raise
        again = {
            "collect": "run the same command again to resume (finished shards are kept)",
            "train": "run the same command again to resume from the last checkpoint",
        }
        # a subcommand may say itself what comes next
        then = str(err) if isinstance(err, Interrupted) else again.get(args[0])
        said = f"interrupted; {then}" if then else "interrupted"
        print(f"\ngym-worldmodel {args[0]}: {said}", file=sys.stderr)
        return 130
    return 0


def _bench(argv: list[str]) -> None:
    """``gym-worldmodel bench``, imported when it runs: the other commands do not need it."""
    from gym_worldmodel import bench

    bench.main(argv)


#: Each subcommand: its line in ``gym-worldmodel --help``, and what runs it with its arguments.
COMMANDS: dict[str, tuple[str, Callable[[list[str]], None]]] = {
    "bench": ("benchmarks that print their figures", _bench),
    "collect": (
        "record simulator episodes, or your own recordings, into a dataset (resumable)",
        collect_main,
    ),
    "train": (
        "train a stage: vae, decoder, teacher, student, flow, self-forcing (resumable)",
        train_main,
    ),
    "eval": ("score a model against held-out episodes; writes a markdown report", eval_main),
    "rollout": (
        "play a world (random or given actions, any start image); write the video",
        rollout_main,
    ),
    "play": ("play a world from the keyboard in a window (the play extra)", play_main),
    "ship": ("install a checkpoint and start frames as the embedded default worlds", ship_main),
    "cache": ("list or clear the inverse-dynamics probes eval keeps (list, clear)", cache_main),
}


def _run(args: list[str]) -> None:
    """Run the subcommand ``args[0]`` with its arguments."""
    COMMANDS[args[0]][1](args[1:])


#: Where the package's own warnings come from: said as one line each by a command.
_PACKAGE = Path(__file__).resolve().parents[1]


@contextlib.contextmanager
def _warnings_as_lines(command: str) -> Iterator[None]:
    """The package's warnings as one line naming ``command``, not the source line they came from.

    Their messages (``UserWarning``) say what happened and what was done about it; the line of
    code that warned means nothing to the user of a command. Other warnings (another package's,
    or NumPy's raised at a line of the package), and every warning under
    ``GYM_WORLDMODEL_TRACEBACK``, keep Python's format.
    """
    python = warnings.formatwarning

    def one_line(
        message: Warning | str,
        category: type[Warning],
        filename: str,
        lineno: int,
        line: str | None = None,
    ) -> str:
        ours = Path(filename).resolve().is_relative_to(_PACKAGE)
        if category is not UserWarning or not ours or os.environ.get("GYM_WORLDMODEL_TRACEBACK"):
            return python(message, category, filename, lineno, line)  # NumPy's, say
        # (Gymnasium's logger.warn, which window.py warns through, colours it and adds "WARN: ")
        text = re.sub(r"\x1b\[[0-9;]*m", "", str(message)).removeprefix("WARN: ")
        return f"gym-worldmodel {command}: warning: {text}\n"

    warnings.formatwarning = one_line
    try:
        yield
    finally:
        warnings.formatwarning = python
