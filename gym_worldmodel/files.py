"""Package file locations and atomic writes (every checkpoint, shard, card and plot uses them)."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

#: Where the embedded default worlds live: ``shared/`` (the checkpoint) and ``<world>/`` (start
#: frames).
WORLDS_DIR = Path(__file__).resolve().parent / "worlds"


def atomic_write(path: Path, write: Callable[[IO[bytes]], Any]) -> None:
    """Write ``path`` through a temporary file in its directory, then rename it into place.

    ``write`` receives the open binary file. A crash or an exception leaves the previous file (if
    any) intact and no temporary file behind.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
