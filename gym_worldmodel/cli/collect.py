"""``gym-worldmodel collect``: record simulator episodes, or your own recordings, into a dataset."""

from __future__ import annotations

import argparse
import importlib
import inspect
import json
import site
import sysconfig
import traceback
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from gym_worldmodel.cli.argtypes import folder_path, non_negative_int, positive_int

if TYPE_CHECKING:
    from gym_worldmodel.sources.collect import Source

#: Named data sources; any other ``module:Class`` with the Source protocol works too.
SOURCES = {
    "miniworld": "gym_worldmodel.sources.miniworld:MiniWorldSource",
    "highway": "gym_worldmodel.sources.highway:HighwaySource",
    "robosuite": "gym_worldmodel.sources.robosuite_source:RobosuiteSource",
    "recordings": "gym_worldmodel.sources.recordings:Recordings",  # your own .npz episodes
}


def collect_main(argv: Sequence[str]) -> None:
    """``gym-worldmodel collect``: parse options, build the source, collect."""
    parser = argparse.ArgumentParser(prog="gym-worldmodel collect")
    parser.add_argument(
        "--source",
        required=True,
        help=f"one of {sorted(SOURCES)} or module:Class of a custom source",
    )
    parser.add_argument(
        "--out",
        type=folder_path,
        required=True,
        help="dataset directory: a new or empty one, or one this command wrote (it resumes)",
    )
    parser.add_argument(
        "--episodes", type=positive_int, required=True, help="episodes in the dataset (all splits)"
    )
    parser.add_argument(
        "--steps", type=positive_int, default=128, help="actions per episode (default 128)"
    )
    parser.add_argument(
        "--seed", type=non_negative_int, default=0, help="episode i uses seed + i (default 0)"
    )
    parser.add_argument(
        "--episodes-per-shard",
        type=positive_int,
        default=16,
        help="episodes per .npz shard (default 16; each shard is written atomically; a rerun "
        "resumes)",
    )
    parser.add_argument(
        "--heldout-every",
        type=int,
        default=10,
        help="every k-th episode goes to the held-out split (default 10)",
    )
    parser.add_argument(
        "--source-option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="keyword argument of the source, e.g. env_name=MiniWorld-FourRooms-v0 (repeatable)",
    )
    parser.add_argument(
        "--no-progress", action="store_true", help="log lines instead of progress bars"
    )
    args = parser.parse_args(argv)
    from gym_worldmodel.sources.collect import collect

    card = collect(
        make_source(args.source, parse_options(args.source_option)),
        args.out,
        args.episodes,
        args.steps,
        args.seed,
        args.episodes_per_shard,
        args.heldout_every,
        progress=not args.no_progress,
    )
    counts = {
        split: sum(s["episodes"] for s in card["shards"] if s["split"] == split)
        for split in ("train", "heldout")
    }
    print(f"{args.out}: {counts['train']} train and {counts['heldout']} held-out episodes")
    if not counts["heldout"]:
        print(
            f"(none held out: one episode in every {args.heldout_every} is, and `eval` reads "
            "only those: collect more episodes, or collect into a new --out with a smaller "
            "--heldout-every)"
        )
    if sum(counts.values()) > args.episodes:
        print(
            f"(it held more than --episodes {args.episodes} already: a dataset only grows, "
            "nothing was removed)"
        )


def parse_options(pairs: Sequence[str]) -> dict[str, str]:
    """``["size=64", "env_name=X"]`` -> ``{"size": "64", "env_name": "X"}`` (text, as given)."""
    options: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise SystemExit(f"source option {pair!r}: expected KEY=VALUE")
        options[key] = value
    return options


def _value(text: str, annotation: Any) -> object:
    """An option's value: JSON where it parses (``64``, ``true``, ``[1, 2]``), else its text.

    A parameter typed ``str`` takes the text as given (a folder named ``123`` or ``1e3``).
    """
    if annotation is str or (
        isinstance(annotation, str) and annotation.split("|")[0].strip() == "str"
    ):
        return text
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def make_source(name: str, given: dict[str, str]) -> Source:
    """The source ``name`` built with the ``--source-option`` texts ``given``.

    An option the source does not take is named, with those it does.
    """
    cls = load_source(name)
    try:
        signature = inspect.signature(cls)
    except ValueError:  # some built-in classes have none: the call itself says
        options = {k: _value(v, None) for k, v in given.items()}
    else:
        params = signature.parameters
        options = {
            k: _value(v, params[k].annotation if k in params else None) for k, v in given.items()
        }
        try:
            signature.bind(**options)
        except TypeError as err:
            named = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
            takes = [p.name for p in signature.parameters.values() if p.kind in named]
            raise SystemExit(
                f"source {name!r}: {err}; its options (--source-option KEY=VALUE): "
                f"{', '.join(takes) or 'none'}"
            ) from err
    try:
        return cls(**options)
    except ImportError as err:  # its simulator is not installed: the message names the extra
        raise SystemExit(f"source {name!r}: {err}") from err


def _where(err: BaseException) -> str:
    """``err`` with the place it came from, in the user's code.

    A syntax error's own line, else the innermost frame of the traceback that is not an
    installed package's, the standard library's or importlib's.
    """
    if isinstance(err, SyntaxError) and err.filename:
        return f" at {err.filename}:{err.lineno}: {type(err).__name__}: {err}"
    paths = {sysconfig.get_paths()[k] for k in ("stdlib", "purelib", "platlib")}
    installed = tuple(paths | {*site.getsitepackages(), site.getusersitepackages()})
    frames = [  # after load_source's own frame, the first
        f for f in traceback.extract_tb(err.__traceback__)[1:] if not f.filename.startswith("<")
    ]
    own = [f for f in frames if not f.filename.startswith(installed)]  # else: an installed source
    at = f" at {(own or frames)[-1].filename}:{(own or frames)[-1].lineno}" if frames else ""
    return f"{at}: {type(err).__name__}: {err}"


def load_source(name: str) -> type:
    """The source class called ``name`` (a key of SOURCES or ``module:Class``)."""
    target = SOURCES.get(name, name)
    if ":" not in target:
        raise SystemExit(f"unknown source {name!r}: use one of {sorted(SOURCES)} or module:Class")
    module, cls = target.split(":", 1)
    try:
        imported = importlib.import_module(module)
    except Exception as err:  # noqa: BLE001 - an error inside the user's module: say where
        missing = getattr(err, "name", None) if isinstance(err, ModuleNotFoundError) else None
        if missing is not None and (module == missing or module.startswith(f"{missing}.")):
            raise SystemExit(f"source {name!r}: no module {module!r} (on PYTHONPATH?)") from err
        raise SystemExit(f"source {name!r}: importing {module} failed{_where(err)}") from err
    found = getattr(imported, cls, None)
    if found is None:
        raise SystemExit(f"source {name!r}: module {module} has no {cls}")
    if not isinstance(found, type):
        raise SystemExit(
            f"source {name!r}: {module}.{cls} is a {type(found).__name__}, not a class with an "
            "info dict and rollout(seed, steps)"
        )
    return found
