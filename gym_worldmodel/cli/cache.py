"""``gym-worldmodel cache``: list or clear the probes ``eval`` keeps in the per-user cache.

Only the files ``user_cache`` knows by name are listed or removed; nothing here imports torch.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from pathlib import Path

from gym_worldmodel.cli.argtypes import non_negative_float
from gym_worldmodel.files import CACHE_ENV
from gym_worldmodel.user_cache import (
    LIMIT_ENV,
    CacheEntry,
    cache_entries,
    default_probe_cache,
    describe,
    others,
    probe_cache_limit,
    remove_entry,
)


def cache_main(argv: Sequence[str]) -> None:
    """``gym-worldmodel cache list|clear``: what the probe cache holds, or remove it."""
    args = _parser().parse_args(argv)
    folder = args.probe_cache or default_probe_cache()
    if args.action == "list":
        _list(folder)
    else:
        _clear(folder, args.older_than)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gym-worldmodel cache",
        description="The inverse-dynamics probes eval trains and keeps (about 4 MB each; the "
        f"least recently used go first past ${LIMIT_ENV} MB, 256 unless set). Only the probe "
        "files (<modality>-<32 hex digits>.safetensors) are listed or removed; anything else "
        "in the folder is left alone.",
    )
    actions = parser.add_subparsers(dest="action", required=True, metavar="{list,clear}")
    shown = actions.add_parser("list", help="each probe: what it is for, its size, last use")
    gone = actions.add_parser("clear", help="remove the probes (all, or those unused for DAYS)")
    gone.add_argument(
        "--older-than",
        type=non_negative_float,
        metavar="DAYS",
        help="remove only the probes last used more than DAYS days ago (default: all)",
    )
    for sub in (shown, gone):
        sub.add_argument(
            "--probe-cache",
            type=Path,
            metavar="DIR",
            help="the folder, as eval's --probe-cache names it (default: probes/ in "
            f"${CACHE_ENV}, else in $XDG_CACHE_HOME/gym-worldmodel, else in "
            "~/.cache/gym-worldmodel)",
        )
    return parser


def _list(folder: Path) -> None:
    limit = probe_cache_limit()
    entries = cache_entries(folder)[::-1]  # the most recently used first
    for entry in entries:
        print(f"{entry.path.name}  {_mb(entry.size)}  last used {_when(entry.used)}")
        print(f"    {describe(entry)}")
    where = folder if folder.is_dir() else f"{folder} (no such folder yet)"
    total = sum(e.size for e in entries)
    print(
        f"{_count(entries)}, {_mb(total)} of at most {limit / 1e6:g} MB (${LIMIT_ENV}), "
        f"in {where}{_left_alone(folder)}"
    )


def _clear(folder: Path, days: float | None) -> None:
    entries = cache_entries(folder)
    if days is not None:
        before = time.time() - days * 86400.0
        entries = [e for e in entries if e.used < before]
    for entry in entries:
        remove_entry(entry)
        print(f"removed {entry.path.name} ({_mb(entry.size)}, last used {_when(entry.used)})")
    kept = len(cache_entries(folder))
    also = f"; kept {kept} used in the last {days:g} days" if kept and days is not None else ""
    print(
        f"removed {_count(entries)}, {_mb(sum(e.size for e in entries))}, from {folder}"
        f"{also}{_left_alone(folder)}"
    )


def _count(entries: list[CacheEntry]) -> str:
    return f"{len(entries)} probe file{'s' * (len(entries) != 1)}"


def _left_alone(folder: Path) -> str:
    n = others(folder)
    if not n:
        return ""
    return f" ({n} other entr{'ies' if n != 1 else 'y'} there, not eval's probes: left alone)"


def _mb(size: float) -> str:
    return f"{size / 1e6:.1f} MB"


def _when(seconds: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(seconds))
