"""Trained inverse-dynamics probes kept on disk, so that eval reruns on the same data reuse them.

``eval`` trains its probe on the recorded training frames alone, none of the scored model's:
comparing checkpoints (or a teacher) on one dataset trained the same probe every time, most of
a rerun's time. :func:`cached_probe` keeps each probe it trains in a folder, one file per key
(:func:`probe_key`), and reads it back where every input of its weights is the same:

* the data: the SHA-256 of each training shard, in the card's order. The training episodes are
  read (and each shard checked against that hash) before the probe is looked up, so a hit is
  for exactly the episodes a fresh run trains on, and a damaged shard is refused with or
  without one. A copy of the data elsewhere hits; the held-out split, which the probe never
  reads, is not in the key.
* the probe's settings: its modality, steps and seed.
* the code: ``control.PROBE_VERSION`` and a SHA-256 of ``control.py``, where the probe, its
  windows and its training live.
* what else sets the bits of its training: torch's and NumPy's versions, the CPU instruction set
  torch's kernels use, and torch's thread count (1 and 2 threads train other weights).

The probe reads frames, never latents, so no model (nor its VAE) enters the key. A file holds
the net's weights and :class:`.Probe`'s arrays (safetensors), with the key and a SHA-256 of the
tensors in its metadata; one that cannot be read, or whose key or checksum differs, is reported
in one line on stderr and the probe trained again and written over it.

A probe read back is marked used (its modification time), and before a new one is written the
least recently used probes of the folder are removed until the probes fit its limit
(:func:`.user_cache.probe_cache_limit`, 256 MB unless ``$GYM_WORLDMODEL_PROBE_CACHE_MB`` says
otherwise); :mod:`.user_cache` knows the files by name, and ``gym-worldmodel cache`` lists and
clears them.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save

from gym_worldmodel.evaluation import control
from gym_worldmodel.evaluation.control import InverseDynamicsProbe, Probe, train_probe
from gym_worldmodel.evaluation.resume import SaveAt, bits_environment, discard_progress
from gym_worldmodel.files import atomic_write, remove_stale_temps
from gym_worldmodel.hub import weights_sha256
from gym_worldmodel.sources.episodes import load_episodes, read_card
from gym_worldmodel.user_cache import (  # noqa: F401 (default_probe_cache: re-export)
    PROBE_FORMAT,
    CacheEntry,
    default_probe_cache,
    make_room,
    probe_cache_limit,
    touch,
)

#: The :class:`.Probe` arrays a file holds beside the net's weights (``net.*``).
_ARRAYS = ("mean", "std", "validation", "visible")


def probe_key(modality: str, data: Path, steps: int, seed: int) -> dict[str, Any]:
    """What the weights of :func:`.train_probe` on ``data``'s training episodes depend on."""
    card = read_card(Path(data))
    return {
        "probe_version": control.PROBE_VERSION,
        "probe_code": hashlib.sha256(Path(control.__file__).read_bytes()).hexdigest(),
        "modality": modality,
        "steps": steps,
        "seed": seed,
        "train_shards": [s["sha256"] for s in card["shards"] if s["split"] == "train"],
        **bits_environment(),
    }


def probe_path(folder: Path, key: dict[str, Any]) -> Path:
    """``key``'s file in ``folder``: its modality and 32 hex digits of the key's SHA-256."""
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()
    return Path(folder) / f"{key['modality']}-{digest[:32]}.safetensors"


def cached_probe(
    modality: str,
    data: Path,
    steps: int,
    seed: int,
    folder: Path | None,
    progress: bool = False,
    max_bytes: int | None = None,
    resume: Path | None = None,
) -> Probe:
    """:func:`.train_probe` on ``data``'s training episodes, or the one it trained before.

    ``folder`` holds the probes (:func:`default_probe_cache` is ``eval``'s); None trains the
    probe and keeps nothing. A probe read back is the one trained before, bit for bit, so every
    figure scored with it is too, and it is marked used now. A file that cannot be used is noted
    on stderr in one line and the probe trained again and written over it; a folder that cannot
    be written is noted too, and the trained probe used unkept. Keeping a new probe removes the
    least recently used ones until the folder's probes take at most ``max_bytes`` (None:
    :func:`.user_cache.probe_cache_limit`), each noted; a probe larger than that is not kept.
    ``resume``: a folder where the training keeps its progress, so that a rerun goes on where a
    stopped one saved (:func:`.train_probe`'s, keyed as the probe is); None keeps nothing. A
    probe read from ``folder`` removes what a stopped training of it saved there.
    """
    episodes = load_episodes(Path(data), "train")  # each shard checked against its hash
    key = probe_key(modality, data, steps, seed)
    at = None if resume is None else SaveAt(Path(resume), key)
    if folder is None:
        return train_probe(modality, episodes, steps, seed, progress, at)
    limit = probe_cache_limit() if max_bytes is None else max_bytes  # refused before the work
    path = probe_path(folder, key)
    if path.exists():
        try:
            probe = load_probe(path, key)
        except ValueError as err:
            _note(f"{err}; training the probe again")
        else:
            touch(path)
            _note(f"the {modality} probe trained before on the same data and settings: {path}")
            if at is not None:  # a training stopped before this probe was kept: not needed now
                discard_progress(at, "probe")
            return probe
    probe = train_probe(modality, episodes, steps, seed, progress, at)
    try:
        removed = save_probe(path, probe, key, limit)
    except OSError as err:
        _note(f"the trained probe was not kept in {folder}: {err}")
    else:
        if removed:
            _note(_evicted(removed, limit))
    return probe


def save_probe(
    path: Path, probe: Probe, key: dict[str, Any], max_bytes: int | None = None
) -> list[CacheEntry]:
    """Write ``probe`` to ``path`` (atomically, its folder made), with ``key`` and a checksum.

    With ``max_bytes``, the least recently used probes of the folder are removed first until the
    folder's probes, this one with them, take at most that (:func:`.user_cache.make_room`);
    returns what was removed.

    Raises:
        OSError: The file cannot be written, or the probe alone is larger than ``max_bytes``
            (nothing removed, nothing written).
    """
    tensors = {f"net.{k}": v.detach().contiguous() for k, v in probe.net.state_dict().items()}
    for name in _ARRAYS:
        tensors[name] = torch.from_numpy(np.ascontiguousarray(getattr(probe, name)))
    metadata = {
        "format": PROBE_FORMAT,
        "key": json.dumps(key, sort_keys=True),
        "sha256": weights_sha256(tensors),
    }
    raw = save(tensors, metadata)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(path.parent, names=[path.name])  # a writer killed before its rename
    removed = [] if max_bytes is None else make_room(path.parent, path.name, len(raw), max_bytes)
    atomic_write(path, lambda f: f.write(raw))
    return removed


def load_probe(path: Path, key: dict[str, Any]) -> Probe:
    """The probe :func:`save_probe` wrote to ``path`` for ``key``.

    Raises:
        ValueError: The file cannot be read, is damaged or is not a probe file, or was written
            for another key; one line, naming the file.
    """
    try:
        with safe_open(path, "pt") as f:
            metadata = f.metadata() or {}
            tensors = {name: f.get_tensor(name) for name in f.keys()}
        if metadata.get("format") != PROBE_FORMAT:
            raise ValueError(f"not a {PROBE_FORMAT} file")
        if json.loads(metadata["key"]) != key:
            raise ValueError("written for other data or settings")
        if metadata.get("sha256") != weights_sha256(tensors):
            raise ValueError("its tensors do not match their checksum")
        arrays = {name: tensors.pop(name).numpy() for name in _ARRAYS}
        net = InverseDynamicsProbe(len(arrays["mean"]))
        net.load_state_dict({k.removeprefix("net."): v for k, v in tensors.items()})
    except (SafetensorError, OSError, KeyError, RuntimeError, TypeError, ValueError) as err:
        why = " ".join(str(err).split())[:200] or type(err).__name__
        raise ValueError(f"the probe file {path} cannot be used ({why})") from err
    return Probe(net.eval(), key["modality"], **arrays)


def _evicted(removed: list[CacheEntry], limit: int) -> str:
    """The note of the probes removed to keep a new one under ``limit`` bytes."""
    mb = sum(e.size for e in removed) / 1e6
    names = ", ".join(e.path.name for e in removed)
    return (
        f"removed the {len(removed)} least recently used cached probe(s) ({mb:.1f} MB) to keep "
        f"the probes under {limit / 1e6:g} MB: {names}"
    )


def _note(text: str) -> None:
    print(f"note: {text}", file=sys.stderr, flush=True)
