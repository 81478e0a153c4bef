"""The probes ``eval`` keeps in the per-user cache: listed, cleared and held to a size (no torch).

``eval`` keeps each inverse-dynamics probe it trains (``evaluation.probe_cache``) in ``probes/``
of :func:`.files.user_cache_dir`, one file each, about 4 MB. The files are known by their names
alone: ``<modality>-<32 hex digits>.safetensors`` (:data:`PROBE_FILE`), and the temporary file a
writer stopped mid-write left of one (``.<that name>.<8 characters>.tmp``, untouched for
:data:`.files.STALE_TEMP_S` seconds: a live writer's is newer). Nothing else in the folder is
listed, counted or removed: a file of another name that a user keeps there, or a folder, is left
as it is.

A probe's modification time is when it was last used: it is set when the probe is written and
when it is read back (:func:`touch`). Before a new probe is written, the least recently used are
removed until the probes fit :func:`probe_cache_limit` (:func:`make_room`).
``gym-worldmodel cache list`` and ``cache clear`` read and clear the folder through
:func:`cache_entries` and :func:`remove_entry`, without importing torch.
"""

from __future__ import annotations

import json
import math
import os
import re
import stat
import struct
import time
from dataclasses import dataclass
from pathlib import Path

from gym_worldmodel.files import STALE_TEMP_S, TEMP_FILE, user_cache_dir

#: The format every probe file names in its metadata.
PROBE_FORMAT = "gym-worldmodel-probe/1"
#: A probe file's name: its modality and 32 hex digits of its key's SHA-256.
PROBE_FILE = re.compile(r"(?P<modality>[^./][^/]*)-[0-9a-f]{32}\.safetensors")
#: The environment variable that bounds the probes of a folder, in MB (10^6 bytes).
LIMIT_ENV = "GYM_WORLDMODEL_PROBE_CACHE_MB"
#: The bound without it: 64 probes of about 4 MB.
DEFAULT_LIMIT_MB = 256.0
#: The longest safetensors header read to describe a probe (a probe's is about 2 kB).
_MAX_HEADER = 1 << 20


@dataclass(frozen=True)
class CacheEntry:
    """One file of the cache's that ``cache list`` shows and ``cache clear`` may remove.

    Attributes:
        path: The file.
        size: Its size in bytes.
        used: When it was last used (written or read back): its modification time, in seconds
            since the epoch.
        finished: False for a temporary file a stopped writer left.
    """

    path: Path
    size: int
    used: float
    finished: bool = True


def default_probe_cache() -> Path:
    """Where ``eval`` keeps its probes: ``probes/`` in ``files.user_cache_dir()``."""
    return user_cache_dir() / "probes"


def probe_cache_limit() -> int:
    """The most bytes a folder's probes may take: ``$GYM_WORLDMODEL_PROBE_CACHE_MB``, else 256 MB.

    Raises:
        ValueError: The variable is set to anything but a number of MB above 0.
    """
    text = os.environ.get(LIMIT_ENV, "").strip()
    if not text:
        return int(DEFAULT_LIMIT_MB * 1e6)
    try:
        mb = float(text)
    except ValueError:
        mb = math.nan
    if not (math.isfinite(mb) and mb > 0):
        raise ValueError(
            f"{LIMIT_ENV}={text!r}: expected the most megabytes the cached probes may take, a "
            f"number above 0 (unset: {DEFAULT_LIMIT_MB:g})"
        )
    return int(mb * 1e6)


def cache_entries(folder: Path) -> list[CacheEntry]:
    """The probe files in ``folder`` (not its subfolders), least recently used first.

    Only regular files of :data:`PROBE_FILE`'s names and the stale temporary files of such names
    count; a folder that does not exist holds none.

    Raises:
        NotADirectoryError: ``folder`` is a file.
    """
    folder = Path(folder)
    if not folder.exists():
        return []
    if not folder.is_dir():
        raise NotADirectoryError(f"{folder} is a file, not the folder of the cached probes")
    now = time.time()
    found = []
    for path in folder.iterdir():
        temp = TEMP_FILE.fullmatch(path.name)
        if not (PROBE_FILE.fullmatch(path.name) or temp and PROBE_FILE.fullmatch(temp["target"])):
            continue
        try:
            info = path.lstat()
        except FileNotFoundError:  # removed meanwhile
            continue
        if not stat.S_ISREG(info.st_mode) or temp and now - info.st_mtime <= STALE_TEMP_S:
            continue  # a link or a folder of that name, or a live writer's temporary file
        found.append(CacheEntry(path, info.st_size, info.st_mtime, finished=temp is None))
    return sorted(found, key=lambda e: (e.used, e.path.name))


def others(folder: Path) -> int:
    """How many entries of ``folder`` are not :func:`cache_entries`' (left alone by clearing)."""
    folder = Path(folder)
    if not folder.is_dir():
        return 0
    return sum(1 for _ in folder.iterdir()) - len(cache_entries(folder))


def remove_entry(entry: CacheEntry) -> None:
    """Delete ``entry``'s file (one removed meanwhile is not an error)."""
    entry.path.unlink(missing_ok=True)


def touch(path: Path) -> None:
    """Mark the probe file ``path`` used now (its modification time: what eviction reads)."""
    try:
        os.utime(path)
    except OSError:  # a cache folder this user may read but not write: the probe is still used
        pass


def make_room(folder: Path, name: str, size: int, limit: int) -> list[CacheEntry]:
    """Remove the least recently used probes of ``folder`` until one of ``size`` bytes fits.

    ``name`` is the file about to be written (written over, if it is there: not counted); the
    probes with it may take ``limit`` bytes. Returns what it removed.

    Raises:
        OSError: The new probe alone is larger than ``limit`` (nothing is removed).
    """
    if size > limit:
        raise OSError(
            f"the probe ({size / 1e6:.1f} MB) is larger than the cache's limit of "
            f"{limit / 1e6:g} MB (${LIMIT_ENV})"
        )
    kept = [e for e in cache_entries(folder) if e.path.name != name]
    total = size + sum(e.size for e in kept)
    removed = []
    for entry in kept:  # least recently used first
        if total <= limit:
            break
        remove_entry(entry)
        removed.append(entry)
        total -= entry.size
    return removed


def describe(entry: CacheEntry) -> str:
    """What ``entry`` is for, read from its probe file's metadata (no tensor is read)."""
    if not entry.finished:
        target = TEMP_FILE.fullmatch(entry.path.name)
        return f"an unfinished write of {target['target'] if target else entry.path.name}"
    try:
        key = _probe_key(entry.path)
    except (OSError, ValueError, KeyError, TypeError, AttributeError, struct.error) as err:
        why = " ".join(str(err).split())[:120] or type(err).__name__
        return f"a probe file that cannot be read ({why}); eval trains it again when it needs it"
    shards = [str(h)[:16] for h in key.get("train_shards") or []]
    data = f"{len(shards)} training shards (the first's SHA-256 {shards[0]})" if shards else ""
    if len(shards) < 2:
        data = f"1 training shard (SHA-256 {shards[0]})" if shards else "no training shard"
    threads = key.get("threads")
    ran = "" if threads is None else f"{threads} thread{'s' * (threads != 1)}, "
    return (
        f"{key.get('modality')} probe, {key.get('steps')} steps, seed {key.get('seed')}, trained "
        f"on {data}; {ran}torch {key.get('torch')}"
    )


def _probe_key(path: Path) -> dict:
    """The key a probe file's safetensors header records (its 8-byte length, then JSON)."""
    with open(path, "rb") as f:
        (length,) = struct.unpack("<Q", f.read(8))
        if length > _MAX_HEADER:
            raise ValueError(f"a header of {length} bytes")
        header = json.loads(f.read(length))
    metadata = header["__metadata__"]
    if metadata.get("format") != PROBE_FORMAT:
        raise ValueError(f"not a {PROBE_FORMAT} file")
    key = json.loads(metadata["key"])
    if not isinstance(key, dict):
        raise ValueError("its key is not a mapping")
    return key
