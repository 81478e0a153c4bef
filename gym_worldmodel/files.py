"""Package file locations and atomic writes (every checkpoint, shard, card and plot uses them)."""

from __future__ import annotations

import contextlib
import errno
import glob
import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import IO, Any

#: Where the embedded default worlds live: ``shared/`` (the checkpoint) and ``<world>/`` (start
#: frames).
WORLDS_DIR = Path(__file__).resolve().parent / "worlds"


#: The folder of a checkpoint directory's own start frames, one ``<world>.npz`` each.
START_FRAMES = "start_frames"


#: The environment variable that names the per-user cache folder (:func:`user_cache_dir`).
CACHE_ENV = "GYM_WORLDMODEL_CACHE"


def user_cache_dir() -> Path:
    """The per-user folder of what the package caches (eval's trained probes, ``probes/``).

    ``$GYM_WORLDMODEL_CACHE`` where set, else ``gym-worldmodel`` in ``$XDG_CACHE_HOME``, else in
    ``~/.cache``: the folder huggingface_hub keeps its ``huggingface/`` in. An ``XDG_CACHE_HOME``
    that is empty or relative is ignored, as the XDG base directory specification says.
    """
    own = os.environ.get(CACHE_ENV)
    if own:
        return Path(own).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    base = Path(xdg) if os.path.isabs(xdg) else Path("~/.cache").expanduser()
    return base / "gym-worldmodel"


def checkpoint_start_frames(directory: Path, world: str) -> Path:
    """Where a checkpoint directory keeps the start frames of ``world``'s data.

    ``gym-worldmodel train`` and ``ship --out`` write them there, so that an env running the
    checkpoint starts from frames of the data it was trained on (``envs.worlds.start_frames``).
    """
    return Path(directory) / START_FRAMES / f"{world}.npz"


def atomic_write(path: Path, write: Callable[[IO[bytes]], Any]) -> None:
    """Write ``path`` through a temporary file in its directory, then rename it into place.

    ``write`` receives the open binary file. A crash or an exception leaves the previous file (if
    any) intact and no temporary file behind.
    """
    atomic_write_all({Path(path): write})


#: A temporary file of :func:`atomic_write_all`: ``.<name>.<mkstemp's 8 characters>.tmp``
#: (group ``target``: the file it becomes).
TEMP_FILE = re.compile(r"\.(?P<target>.+)\.[a-z0-9_]{8}\.tmp")
#: Seconds after which such a file is a killed writer's: a live writer's is newer.
STALE_TEMP_S = 600.0


def remove_stale_temps(
    directory: Path, older_than_s: float = STALE_TEMP_S, names: Iterable[str] | None = None
) -> list[Path]:
    """Delete the temporary files :func:`atomic_write` left in ``directory`` when killed.

    A process killed mid-write (SIGKILL, power loss) cannot unlink its ``.<name>.*.tmp``; a
    job that resumes into the folder calls this first. Only files of that pattern, in the folder
    and its subfolders (a run's ``model/``), untouched for ``older_than_s`` seconds, are
    deleted: a live writer's (another job in the same folder) is being written, so newer.
    ``names`` limits it to the temporary files of those file names, in the folder alone (a
    folder the user names, which may hold other programs' files). Returns what it deleted.
    """
    now = time.time()
    folder = Path(directory)
    names = [names] if isinstance(names, str) else names
    found = (
        folder.rglob(".*.tmp")
        if names is None
        else (p for name in names for p in folder.glob(f".{glob.escape(name)}.*.tmp"))
    )
    stale = []
    for path in found:
        try:
            if TEMP_FILE.fullmatch(path.name) and now - path.lstat().st_mtime > older_than_s:
                stale.append(path)
        except OSError:  # gone meanwhile
            continue
    stale.sort()
    for path in stale:
        path.unlink(missing_ok=True)
    return stale


def atomic_write_all(writes: dict[Path, Callable[[IO[bytes]], Any]]) -> None:
    """:func:`atomic_write` for several files: all are written before any is renamed into place.

    A target that is a folder, or a write that fails (a full disk, an exception in ``write``),
    leaves every file as it was. The renames then follow one another: a crash between two leaves
    the earlier files new and the later ones old.
    """
    for path in writes:
        if Path(path).is_dir():
            raise IsADirectoryError(f"{path} is a folder, not a file that can be replaced")
    temps: list[tuple[str, Path]] = []
    try:
        for path, write in writes.items():
            path = Path(path)
            try:
                fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
            except PermissionError as err:  # named by the folder, not the temporary file
                raise PermissionError(
                    f"cannot write {path}: the folder {str(path.parent)!r} is not writable "
                    f"({err.strerror}); nothing in it was changed"
                ) from None
            except FileNotFoundError:
                raise FileNotFoundError(
                    f"cannot write {path}: its folder {str(path.parent)!r} does not exist"
                ) from None
            temps.append((tmp, path))
            try:
                with os.fdopen(fd, "wb") as f:
                    write(f)
                    f.flush()
                    os.fsync(f.fileno())
            except (OSError, RuntimeError) as err:
                named = _write_error(path, err)
                if named is err:
                    raise
                raise named from err
            os.chmod(tmp, 0o644)
        for tmp, path in temps:
            os.replace(tmp, path)
    except BaseException:
        for tmp, _ in temps:
            Path(tmp).unlink(missing_ok=True)
        raise


#: The errors of writing a file (not of reading one a writer takes its bytes from).
_WRITE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EIO, errno.EROFS}


def _write_error(path: Path, err: OSError | RuntimeError) -> BaseException:
    """A failed write named by the file it was for (a full disk said so), or ``err`` itself.

    An ``OSError`` from writing names no file, and torch's writer raises a ``RuntimeError``
    ("unexpected pos") when the disk fills.
    """
    if isinstance(err, OSError) and (err.filename is not None or err.errno not in _WRITE_ERRNOS):
        return err  # another file's (a source the writer reads), or not the write's: as raised
    full = isinstance(err, OSError) and err.errno == errno.ENOSPC
    if isinstance(err, RuntimeError):
        try:
            full = shutil.disk_usage(path.parent).free < 2**26  # under 64 MiB left
        except OSError:
            full = False
        if not full:
            return err  # not the disk's: the writer's own error, as it was raised
    why = "the disk is full" if full else (getattr(err, "strerror", None) or str(err))
    code = errno.ENOSPC if full else getattr(err, "errno", None) or errno.EIO
    return OSError(code, f"cannot write {path}: {why}; the file was left as it was")


@contextlib.contextmanager
def exclusive(directory: Path, what: str) -> Iterator[None]:
    """Hold ``directory`` (which exists) for this process alone while the body runs.

    Two jobs writing one run or dataset at once would interleave their checkpoints or shards:
    the second is refused with a ``ValueError``. An advisory lock on the folder itself
    (``flock``, released when the process ends however it ends; no lock file is left behind);
    where the system has none (Windows), nothing is checked.
    """
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        yield
        return
    fd = os.open(directory, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ValueError(
                f"{directory}: another process is writing this {what} now (two jobs in one folder "
                "would interleave their files): wait for it to end, or give another folder"
            ) from None
        yield
    finally:
        os.close(fd)


def unwritable(path: str | os.PathLike, folder: bool = False) -> str | None:
    """Why ``path`` could not be written (None: it can), checked before a long job writes it.

    ``path`` is a file to write, or with ``folder`` a folder to write into; the nearest folder of
    it that exists must be one this process may write in (a read-only folder or disk is found
    before the work, not after it).
    """
    target = Path(path).absolute()
    here = target if folder else target.parent
    while not here.exists() and here != here.parent:
        if here.is_symlink():  # a link to nothing: no folder can be made there
            return f"{here} is a link to nothing"
        here = here.parent
    if not here.is_dir():
        return f"{here} is a file, not a folder"
    if not os.access(here, os.W_OK | os.X_OK):
        return f"the folder {here} is not writable"
    return None


def load_numbers(
    path: str | os.PathLike, keys: Iterable[str] | None = None, skip: Iterable[str] = ()
) -> Any:
    """An ``.npy``'s array or an ``.npz``'s arrays (a dict, read now), nothing unpickled.

    Of an ``.npz``, the arrays ``keys`` names (None: all) but those ``skip`` names; a key it
    lacks is a ``KeyError``. The file is closed however the read ends: NumPy's own
    ``np.load(path)`` leaves it open when a damaged ``.npz`` fails to open. A file that cannot
    be read is an ``OSError``; a damaged or foreign one a ``ValueError``, whatever NumPy, zip
    or zlib raised (:func:`numpy_load_error` words it).
    """
    import struct
    import tokenize
    import zipfile
    import zlib

    import numpy as np

    skipped = set(skip)
    try:
        with open(path, "rb") as fh:
            data = np.load(fh, allow_pickle=False)
            if isinstance(data, np.lib.npyio.NpzFile):
                with data:  # its arrays are read lazily: read them here, while it is open
                    wanted = data.files if keys is None else list(keys)
                    return {k: data[k] for k in wanted if k not in skipped}
            return data
    except (EOFError, zipfile.BadZipFile, zlib.error) as err:  # truncated, or not the bytes
        raise ValueError(str(err) or type(err).__name__) from err
    except (NotImplementedError, tokenize.TokenError, struct.error) as err:  # a damaged header
        raise ValueError(f"damaged ({type(err).__name__}: {err})") from err


def numpy_load_error(err: BaseException) -> str:
    """Why ``np.load(..., allow_pickle=False)`` failed, in words for a file of numbers.

    NumPy reads a file that is neither ``.npy`` nor ``.npz`` as a pickle and then advises loading
    it unsafely: for a damaged or foreign file that is the wrong advice, so it is not repeated.
    """
    if "pickle" in str(err):
        return "not an .npy or .npz file, or one holding Python objects"
    return str(err) or type(err).__name__
