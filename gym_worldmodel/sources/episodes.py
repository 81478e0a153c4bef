"""On-disk episode format: shards of episodes plus a dataset card, validated on every read.

A dataset is a directory::

    dataset.json              the card: source, world, modality, geometry, splits, shard list
    train-00000.npz ...       shards of training episodes
    heldout-00000.npz ...     shards of held-out episodes (never mixed into training)

A shard (``numpy.savez``, no pickles) holds its episodes concatenated:

    frames          uint8   (sum(T_e + 1), H, W, 3)  each episode's start frame and one per action
    actions         float32 (sum(T_e), A)            the model action vector (``envs.actions``
                                                     units) of the world's modality; action t
                                                     leads from frame t to frame t + 1
    poses           float64 (sum(T_e + 1), 4)        pose at each frame (``envs.pose`` units), or
                                                     an empty (0, 4) array for a fixed camera
    frame_offsets   int64   (E + 1,)                 episode e's frames are
                                                     frames[frame_offsets[e]:frame_offsets[e + 1]]
    seeds           int64   (E,)                     the seed each episode was collected with

The card lists each shard with its SHA-256, so a truncated or altered shard is caught on read.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from gym_worldmodel.files import atomic_write, load_numbers, numpy_load_error

if TYPE_CHECKING:
    from gym_worldmodel.models import WorldModelConfig

FORMAT = "gym-worldmodel-episodes/1"
CARD = "dataset.json"


class DatasetError(ValueError):
    """A dataset file is missing, corrupt or inconsistent; the message names it."""


@dataclass
class Episode:
    """One recorded episode.

    Attributes:
        frames: uint8 ``(T + 1, H, W, 3)``.
        actions: float32 ``(T, A)`` model action vectors.
        poses: float64 ``(T + 1, 4)`` or None (fixed camera).
        seed: Seed the episode was collected with.
    """

    frames: np.ndarray
    actions: np.ndarray
    poses: np.ndarray | None
    seed: int

    def __post_init__(self) -> None:
        f, a = self.frames, self.actions
        if f.dtype != np.uint8 or f.ndim != 4 or f.shape[-1] != 3:
            raise DatasetError(
                f"episode frames must be uint8 (T+1, H, W, 3), got {f.dtype} {f.shape}"
            )
        if a.dtype != np.float32 or a.ndim != 2 or len(a) != len(f) - 1:
            raise DatasetError(
                f"episode actions must be float32 ({len(f) - 1}, A), got {a.dtype} {a.shape}"
            )
        if self.poses is not None and self.poses.shape != (len(f), 4):
            raise DatasetError(f"episode poses must be ({len(f)}, 4), got {self.poses.shape}")
        for name, values in (("actions", a), ("poses", self.poses)):
            if values is not None and not np.isfinite(values).all():
                first = int(np.flatnonzero(~np.isfinite(values).all(axis=1))[0])
                raise DatasetError(
                    f"episode (seed {self.seed}) {name} contain NaN or inf, first at row {first}"
                )


def write_shard(path: Path, episodes: list[Episode]) -> str:
    """Write ``episodes`` to ``path`` atomically; returns the file's SHA-256."""
    offsets = np.cumsum([0] + [len(e.frames) for e in episodes]).astype(np.int64)
    fixed = episodes[0].poses is None
    arrays = {
        "frames": np.concatenate([e.frames for e in episodes]),
        "actions": np.concatenate([e.actions for e in episodes]),
        "poses": np.zeros((0, 4)) if fixed else np.concatenate([e.poses for e in episodes]),
        "frame_offsets": offsets,
        "seeds": np.asarray([e.seed for e in episodes], np.int64),
    }
    # (mypy matches ``**arrays`` against savez's ``allow_pickle: bool``: no key here is that)
    atomic_write(path, lambda f: np.savez(f, **arrays))  # type: ignore[arg-type]
    return sha256(path)


#: A shard's arrays: (dtype kinds, dimensions, what they hold); each episode checks the rest.
_SHARD_ARRAYS = {
    "frames": ("u", 4, "uint8 frames"),
    "actions": ("f", 2, "float actions"),
    "poses": ("f", 2, "float poses"),
    "frame_offsets": ("iu", 1, "integer offsets"),
    "seeds": ("iu", 1, "integer seeds"),
}


def read_shard(path: Path, expected_sha256: str | None = None) -> list[Episode]:
    """Episodes of one shard, after checking its hash and the consistency of its arrays."""
    if not path.is_file():
        raise DatasetError(
            f"shard {path} is missing, though {CARD} lists it: put it back (a copy of the "
            f"dataset half done?), or delete its entry from {CARD} and run the collect command "
            "that made the dataset again, which collects its episodes again, with their seeds"
        )
    if expected_sha256 is not None and sha256(path) != expected_sha256:
        raise DatasetError(
            f"shard {path} does not match the SHA-256 in {CARD} (truncated or "
            "altered): run the collect command that made the dataset again, which sets the "
            "shard aside and collects its episodes again, with their seeds"
        )
    try:
        arrays = load_numbers(path, keys=("frames", "actions", "poses", "frame_offsets", "seeds"))
        if not isinstance(arrays, dict):
            raise ValueError("one array (an .npy), not a shard's named arrays")
    except (OSError, ValueError, KeyError) as err:
        why = numpy_load_error(err)
        raise DatasetError(f"shard {path} is not a readable episode shard: {why}") from err
    for name, (kinds, ndim, what) in _SHARD_ARRAYS.items():
        array = arrays[name]
        if array.dtype.kind not in kinds or array.ndim != ndim:
            raise DatasetError(
                f"shard {path}: {name} must be {what} ({ndim}-D), got {array.dtype} of shape "
                f"{array.shape}"
            )
    off = arrays["frame_offsets"]
    n_frames, n_eps = len(arrays["frames"]), len(arrays["seeds"])
    if (
        off.ndim != 1
        or len(off) != n_eps + 1
        or off[0] != 0
        or off[-1] != n_frames
        or (np.diff(off) < 1).any()  # an episode has a start frame at least
    ):
        raise DatasetError(
            f"shard {path}: frame_offsets do not match {n_frames} frames of {n_eps} episodes "
            f"(expected {n_eps + 1} offsets rising from 0 to {n_frames}), got "
            f"{off.tolist()[:8]}{'...' if off.size > 8 else ''}"
        )
    if len(arrays["actions"]) != n_frames - n_eps:
        raise DatasetError(
            f"shard {path}: expected {n_frames - n_eps} actions, got {len(arrays['actions'])}"
        )
    poses = arrays["poses"]
    episodes = []
    for e in range(n_eps):
        lo, hi = int(off[e]), int(off[e + 1])
        try:
            episode = Episode(
                frames=arrays["frames"][lo:hi],
                actions=arrays["actions"][lo - e : hi - e - 1],
                poses=None if len(poses) == 0 else poses[lo:hi],
                seed=int(arrays["seeds"][e]),
            )
        except DatasetError as err:  # named by its shard and place in it
            raise DatasetError(f"shard {path}, its episode {e}: {err}") from None
        episodes.append(episode)
    return episodes


def read_card(directory: Path) -> dict[str, Any]:
    """The dataset card, validated."""
    path = Path(directory) / CARD
    if not path.is_file():
        raise DatasetError(f"{path} is missing: not a gym-worldmodel episode dataset")
    try:
        card = json.loads(path.read_text())
    except ValueError as err:
        raise DatasetError(f"{path} is not valid JSON: {err}") from err
    if not isinstance(card, dict) or card.get("format") != FORMAT:
        got = card.get("format") if isinstance(card, dict) else type(card).__name__
        raise DatasetError(f"{path}: format {got!r}, expected {FORMAT!r}")
    _check_card(card, path)
    return card


#: Card keys every reader relies on, and the keys of each shard entry.
CARD_KEYS = ("world", "modality", "heldout_every", "shards")
SHARD_KEYS = ("file", "split", "episodes", "indices", "frames", "sha256")


def _check_card(card: dict[str, Any], path: Path) -> None:
    """Refuse a card edited out of shape.

    Missing keys, a shard listed twice, episodes in the wrong split or collected twice (the
    collection's rule is episode ``i`` held out when ``i % heldout_every == heldout_every - 1``).
    """
    missing = [k for k in CARD_KEYS if k not in card]
    if missing or not isinstance(card["shards"], list):
        raise DatasetError(f"{path}: the card lacks {missing or ['a shards list']}")
    check_fields(card, CARD_KEYS + tuple(k for k in OPTIONAL_KEYS if k in card), path)
    files: set[str] = set()
    seen: set[int] = set()
    every = card["heldout_every"]
    for shard in card["shards"]:
        lacks = [k for k in SHARD_KEYS if not isinstance(shard, dict) or k not in shard]
        if lacks:
            raise DatasetError(f"{path}: a shard entry lacks {lacks}: {shard!r}"[:300])
        check_fields(shard, SHARD_KEYS, f"{path}: shard entry {shard['file']!r}")
        name, indices = shard["file"], shard["indices"]
        if name in files or Path(name).name != name:
            raise DatasetError(f"{path}: shard {name!r} is listed twice or is not a file name")
        files.add(name)
        if shard["split"] not in ("train", "heldout") or len(indices) != shard["episodes"]:
            raise DatasetError(
                f"{path}: shard {name} must be 'train' or 'heldout' with one index per episode"
            )
        held = [i % every == every - 1 for i in indices]
        if any(held) != all(held) or all(held) != (shard["split"] == "heldout"):
            raise DatasetError(
                f"{path}: shard {name} is listed as {shard['split']} but holds episodes "
                f"{indices} (episode i held out when i % {every} == {every - 1}): the card was "
                "edited"
            )
        if seen & set(indices):
            raise DatasetError(f"{path}: episodes {sorted(seen & set(indices))} listed twice")
        seen |= set(indices)


#: What each card field must hold: a type and a description for the error.
_FIELD_TYPES: dict[str, tuple[Callable[[Any], bool], str]] = {
    "world": (lambda v: isinstance(v, str) and bool(v), "a world name"),
    "modality": (lambda v: isinstance(v, str) and bool(v), "a modality name (camera, robot, ...)"),
    "heldout_every": (lambda v: _is_int(v) and v >= 2, "an int >= 2"),
    "shards": (lambda v: isinstance(v, list), "a list"),
    "file": (lambda v: isinstance(v, str), "a file name"),
    "split": (lambda v: v in ("train", "heldout"), "'train' or 'heldout'"),
    "episodes": (lambda v: _is_int(v) and v >= 1, "an int >= 1"),
    "indices": (
        lambda v: isinstance(v, list) and all(_is_int(i) and i >= 0 for i in v),
        "a list of episode numbers (ints >= 0)",
    ),
    "frames": (lambda v: _is_int(v) and v >= 0, "an int >= 0"),
    "sha256": (lambda v: isinstance(v, str), "a hex SHA-256 (sources.episodes.sha256)"),
    # optional: what the source said of its frames and actions
    "frame_size": (lambda v: _is_int(v) and v >= 1, "the side of the square frames (int)"),
    "fps": (lambda v: _is_int(v) and v >= 1, "frames per second (an int >= 1)"),
    "action_width": (lambda v: _is_int(v) and v >= 1, "the action vector's width (int)"),
    "steps": (lambda v: _is_int(v) and v >= 1, "the actions of each episode (an int >= 1)"),
}
#: Card fields a source may leave out, checked where present.
OPTIONAL_KEYS = ("frame_size", "fps", "action_width", "steps")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_fields(entry: dict[str, Any], keys: Sequence[str], where: Any) -> None:
    """Refuse a field of ``entry`` that does not hold what a card's must.

    ``entry`` is a card, a shard entry or a source's info; ``where`` names it in the error.
    """
    for key in keys:
        check, expected = _FIELD_TYPES[key]
        if not check(entry[key]):
            raise DatasetError(f"{where}: {key!r} must be {expected}, got {entry[key]!r}"[:300])


def load_episodes(directory: Path, split: str = "train") -> list[Episode]:
    """Every episode of ``split`` (``"train"`` or ``"heldout"``), hash-checked.

    Each shard's episode and frame counts must be those its card entry records.
    """
    card = read_card(directory)
    out: list[Episode] = []
    for shard in card["shards"]:
        if shard["split"] != split:
            continue
        path = Path(directory) / shard["file"]
        if shard.get("collect_again"):  # sources.collect.AGAIN: set aside as damaged
            raise DatasetError(
                f"shard {path} was damaged and set aside, and its episodes are not collected "
                "again yet: run the collect command that made the dataset again to finish"
            )
        episodes = read_shard(path, shard["sha256"])
        frames = sum(len(ep.frames) for ep in episodes)
        if (len(episodes), frames) != (shard["episodes"], shard["frames"]):
            raise DatasetError(
                f"shard {path} holds {len(episodes)} episodes and {frames} frames, its card entry "
                f"says {shard['episodes']} and {shard['frames']}: the card was edited"
            )
        _check_like_card(path, episodes, card, posed=out[0].poses is not None if out else None)
        out.extend(episodes)
    return out


def action_range_problem(modality: str, actions: np.ndarray) -> str | None:
    """What is wrong with model action vectors of ``modality`` no env's action head encodes.

    An env modality's vectors lie in [-1, 1]; None when they do (or the modality is no env's).
    """
    from gym_worldmodel.envs.worlds import WORLD_MODALITIES

    top = float(np.abs(actions).max(initial=0.0))
    if modality not in WORLD_MODALITIES.values() or top <= 1.0 + 1e-5:
        return None
    return (
        f"{modality} action vectors up to {top:.4g} in size; an env's vectors lie in [-1, 1]: "
        "encode env actions with gym_worldmodel.envs.worlds.get_world(world).action_head(mode)"
        ".encode (datasets.md)"
    )


def _check_like_card(path: Path, episodes: list[Episode], card: dict, posed: bool | None) -> None:
    """Refuse a shard's episodes that do not hold what its card says, as ``collect`` would.

    Episodes of the card's ``steps`` actions of its ``action_width``; frames of its
    ``frame_size``; for an env's modality, model action vectors in [-1, 1] (what its action
    head encodes); poses in all
    episodes of a split or in none (``posed``: whether the episodes before had them, None for
    the first shard).
    """
    side = card.get("frame_size")
    sizes = {ep.frames.shape[1:3] for ep in episodes}
    if side is not None and sizes != {(side, side)}:
        raise DatasetError(
            f"shard {path} holds frames of {sorted(sizes)} pixels; the card says frame_size {side}"
        )
    steps = card.get("steps")
    lengths = sorted({len(ep.actions) for ep in episodes} - {steps})
    if steps is not None and lengths:  # collect writes episodes of exactly --steps actions
        raise DatasetError(
            f"shard {path} holds episodes of {lengths} actions; the card says steps {steps} "
            "(an episode cut short by the source that wrote it, or frame_offsets altered)"
        )
    width = card.get("action_width")
    widths = sorted({ep.actions.shape[1] for ep in episodes} - {width})
    if width is not None and widths:
        raise DatasetError(
            f"shard {path} holds actions {widths} wide; the card says action_width {width}"
        )
    for ep in episodes:
        problem = action_range_problem(card["modality"], ep.actions)
        if problem:
            raise DatasetError(f"shard {path} holds {problem}")
    has = {ep.poses is not None for ep in episodes} | ({posed} if posed is not None else set())
    if len(has) > 1:
        raise DatasetError(
            f"shard {path}: some episodes of the split record poses, some none; all or none do"
        )


def check_datasets(config: WorldModelConfig, data: Sequence[Path]) -> list[dict[str, Any]]:
    """The cards of ``data``, once each is known to suit a model of ``config``.

    A dataset's frame size must be the VAE's, its modality one of the DiT's with the same action
    width, and its frame rate the model's, so that a run is refused before it starts rather than
    failing (or training on misread actions) later.

    Raises:
        DatasetError: naming the dataset and what the model expects.
    """
    cards = []
    size, modalities = config.vae.image_size, config.dit.modalities
    for d in data:
        card = read_card(Path(d))
        check_world(card["world"], card["modality"], d)
        modality, side = card["modality"], card.get("frame_size", size)
        if side != size:
            raise DatasetError(
                f"{d}: frames of {side}x{side} pixels (its card's frame_size); this model's VAE "
                f"takes {size}x{size}: record the data at that size"
            )
        if modality not in modalities:
            raise DatasetError(
                f"{d}: modality {modality!r} is not one of this model's action modalities "
                f"{list(modalities)} (DiTConfig.modalities)"
            )
        width = card.get("action_width", modalities[modality])
        if width != modalities[modality]:
            raise DatasetError(
                f"{d}: {modality} actions are {modalities[modality]} wide (DiTConfig.modalities; "
                f"the layout is gym_worldmodel.envs.actions'), its card says {width}"
            )
        if card.get("fps", config.fps) != config.fps:
            raise DatasetError(
                f"{d}: recorded at {card['fps']} frames/s, this model runs at {config.fps}: one "
                "frame rate per model (a model whose VAE was trained before its data's rate was "
                "recorded says 15: set fps in its config.json, which the weights do not depend on)"
            )
        cards.append(card)
    return cards


def check_world(world: str, modality: str, where: Any) -> None:
    """Refuse a dataset of an env's modality whose ``world`` is not an env world of it.

    The world names the env that runs what the data trains (its start frames, its evaluation):
    a name of one's own would train a model whose env starts from another world's frames. A
    modality no env has (a model of one's own ``DiTConfig.modalities``) may name any world.
    """
    from gym_worldmodel.envs.worlds import WORLD_MODALITIES as worlds

    if modality in worlds.values() and worlds.get(world) != modality:
        listed = ", ".join(f"{name} ({m})" for name, m in worlds.items())
        suits = next(name for name, m in worlds.items() if m == modality)
        raise DatasetError(
            f"{where}: world {world!r} of modality {modality!r} is not an env world; the world "
            f"names the env that runs the data, one of {listed}: for {modality} data, world "
            f"{suits!r}"
        )


def sha256(path: Path) -> str:
    """Hex SHA-256 of a file."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
