"""Resumable, atomic collection of episodes from a source into the on-disk episode format.

Episode ``i`` is collected with seed ``seed + i`` and goes to the held-out split when
``i % heldout_every == heldout_every - 1``, so a dataset holds the same episodes however often
collection was interrupted and resumed (only their grouping into shards may differ). Each shard
is written atomically and then recorded in the card (also written atomically); an interruption
loses at most the episodes of the two shards in progress (one per split), which a resumed run
collects again. A resumed run checks the shards the card lists: one whose bytes are not those
recorded (a disk error, an edit) is set aside as ``<file>.<time>.corrupt`` and its episodes are
collected again; one missing is an error (a folder half copied is not re-collected for hours).
A shard on disk that the card does not list is deleted if it has its split's next name (a run
stopped between the shard and the card) and moved aside as ``<file>.<time>.unlisted`` if not.
"""

from __future__ import annotations

import json
import time
import warnings
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from tqdm import tqdm

from gym_worldmodel.files import atomic_write, exclusive, remove_stale_temps
from gym_worldmodel.models.config import DEFAULT_MODALITIES
from gym_worldmodel.sources.episodes import (
    CARD,
    FORMAT,
    OPTIONAL_KEYS,
    DatasetError,
    Episode,
    action_range_problem,
    check_fields,
    check_world,
    read_card,
    sha256,
    write_shard,
)

SPLITS = ("train", "heldout")


class Source(Protocol):
    """A simulator adapter that records one episode per call.

    A source that can serve only some seeds (a folder of recordings holds so many) also has a
    ``seeds`` attribute, the ``range`` of those, so that ``collect`` refuses a run asking for
    more before it starts; a simulator, which resets from any seed, has none.
    """

    #: Card fields: source and world names, modality, frame size, fps, action width, pose fields.
    info: dict[str, Any]

    def rollout(self, seed: int, steps: int) -> Episode:
        """Run its behaviour policy for ``steps`` actions from a reset seeded with ``seed``."""
        ...


def collect(
    source: Source,
    out_dir: Path,
    episodes: int,
    steps: int,
    seed: int = 0,
    episodes_per_shard: int = 16,
    heldout_every: int = 10,
    progress: bool = True,
) -> dict[str, Any]:
    """Collect (or finish collecting) ``episodes`` episodes into ``out_dir``; returns the card.

    Resuming with different settings than the card's is refused, so one dataset never mixes
    recipes. Settings that cannot work are refused before anything is written; a new dataset
    goes into a new or empty folder. ``progress``: a bar (else a printed line a shard).
    """
    for name, value, least in (
        ("episodes", episodes, 0),
        ("steps", steps, 1),
        ("episodes_per_shard", episodes_per_shard, 1),
        ("heldout_every", heldout_every, 2),  # 1 would hold every episode out
    ):
        if isinstance(value, bool) or int(value) != value or value < least:
            raise ValueError(f"{name} must be an int >= {least}, got {value!r}")
    episodes, steps, episodes_per_shard, heldout_every = (
        int(v) for v in (episodes, steps, episodes_per_shard, heldout_every)
    )  # a card holds ints
    info = getattr(source, "info", None)
    needed = [k for k in SOURCE_KEYS if not isinstance(info, dict) or k not in info]
    if needed:  # readers rely on them: a card without them could not be read back
        raise ValueError(
            f"the source's info dict lacks {needed}: world (its folder name), modality (one of "
            "camera, robot, driving) and frame_size (pixels) describe what it records"
        )
    assert isinstance(info, dict)  # (needed lists every key when it is not)
    check_fields(info, SOURCE_KEYS + tuple(k for k in OPTIONAL_KEYS if k in info), "source info")
    check_world(info["world"], info["modality"], "source info")
    seeds = getattr(source, "seeds", None)
    last = seed + episodes - 1
    if episodes and seeds is not None and not (seed in seeds and last in seeds):
        raise ValueError(
            f"seed {seed} and {episodes} episodes ask for episode seeds {seed}-{last}, and the "
            f"source serves seeds {seeds.start}-{seeds.stop - 1} ({len(seeds)} episodes): ask "
            "for fewer"
        )
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with exclusive(out_dir, "dataset"):  # another collect into it now is refused
        settings = {
            "steps": steps,
            "seed": seed,
            "episodes_per_shard": episodes_per_shard,
            "heldout_every": heldout_every,
            **source.info,
        }
        card = _open_card(out_dir, settings)
        remove_stale_temps(out_dir)  # a killed run's half-written shard or card
        _remove_unlisted_shards(out_dir, card)
        _mark_bad_shards(out_dir, card, progress)
        stored = {i for shard in card["shards"] if not shard.get(AGAIN) for i in shard["indices"]}
        # The episodes asked for, and those of a damaged shard set aside whatever their index
        # (a dataset only grows: a shorter --episodes still makes it whole again). A damaged
        # shard's episodes are gathered as that shard again, its name and place (those stored
        # meanwhile elsewhere, by a run that grouped them otherwise, left out).
        again = {
            i: [j for j in s["indices"] if j not in stored]
            for s in card["shards"]
            if s.get(AGAIN)
            for i in s["indices"]
            if i not in stored
        }
        repairs: dict[int, list[tuple[int, Episode]]] = {}  # first index -> gathered so far
        wanted = sorted(set(range(episodes)) | set(again))
        pending: dict[str, list[tuple[int, Episode]]] = {split: [] for split in SPLITS}
        width, side = source.info.get("action_width"), source.info["frame_size"]
        modality = source.info["modality"]
        width = DEFAULT_MODALITIES.get(modality) if width is None else width
        posed = _posed(out_dir, card)  # whether the episodes record poses (None: none stored yet)
        bar = tqdm(
            total=len(stored | set(wanted)),
            initial=len(stored),
            desc=f"collect {source.info.get('world', '')}",
            unit="ep",
            disable=not progress,
        )
        for index in wanted:
            if index in stored:  # collected before an interruption
                continue
            split = "heldout" if index % heldout_every == heldout_every - 1 else "train"
            episode = source.rollout(seed + index, steps)
            posed = _check_episode(index, episode, steps, (modality, width), side, posed)
            bar.update(1)
            if index in again:
                group = repairs.setdefault(again[index][0], [])
                group.append((index, episode))
                if len(group) == len(again[index]):
                    _flush(out_dir, card, split, repairs.pop(again[index][0]), progress)
                continue
            pending[split].append((index, episode))
            if len(pending[split]) == episodes_per_shard:
                _flush(out_dir, card, split, pending[split], progress)
                pending[split] = []
        for split in SPLITS:
            if pending[split]:
                _flush(out_dir, card, split, pending[split], progress)
        bar.close()
        done = {i for shard in card["shards"] if not shard.get(AGAIN) for i in shard["indices"]}
        left = [s for s in card["shards"] if s.get(AGAIN) and set(s["indices"]) <= done]
        if left:  # a damaged shard whose episodes went into other shards (a longer run's grouping)
            card["shards"] = [s for s in card["shards"] if s not in left]
            _write_card(out_dir, card)
        return card


def _check_episode(
    index: int,
    episode: Any,
    steps: int,
    actions: tuple[str, int | None],
    side: int,
    posed: bool | None,
) -> bool:
    """Refuse an episode unlike what the card says or the episodes before it; whether posed.

    Raised before anything of it is written: one dataset holds episodes of one length, action
    width (``actions``: the card's modality and width) and frame size, all with poses or none
    (a shard stores poses for all or none), and an env modality's action vectors in [-1, 1].
    """
    modality, width = actions
    if not isinstance(episode, Episode):
        raise DatasetError(
            f"the source's rollout returned {type(episode).__name__} for episode {index}; "
            "expected a gym_worldmodel.sources.episodes.Episode"
        )
    problems = []
    if len(episode.actions) != steps:
        problems.append(f"{len(episode.actions)} actions where --steps is {steps}")
    if width is not None and episode.actions.shape[1] != width:
        problems.append(
            f"actions {episode.actions.shape[1]} wide where the card says {width} (its "
            "action_width, else the shipped worlds' width for its modality: a source for a "
            "model of other widths says action_width in its info)"
        )
    if episode.frames.shape[1:3] != (side, side):
        problems.append(f"frames of {episode.frames.shape[1:3]} pixels where frame_size is {side}")
    out_of_range = action_range_problem(modality, episode.actions)
    if out_of_range:
        problems.append(out_of_range)
    has_poses = episode.poses is not None
    if posed is not None and has_poses != posed:
        before = "poses" if posed else "no poses"
        problems.append(
            f"{'poses' if has_poses else 'no poses'} where the episodes before had {before}"
        )
    if problems:
        raise DatasetError(f"episode {index} has {'; '.join(problems)} (nothing of it was written)")
    return has_poses


#: A card entry's mark of a damaged shard set aside and not yet collected again: the entry keeps
#: its place (and its file name, which the shard gathered again takes back), so that the card,
#: and a training run's record of the dataset, are what they were once the repair is done, even
#: one interrupted.
AGAIN = "collect_again"


def _remove_unlisted_shards(out_dir: Path, card: dict[str, Any]) -> None:
    """Clear the shards on disk that the card does not list before a resume writes more.

    A run killed (or out of disk) between renaming a shard into place and writing the card
    that lists it leaves one, under the next name of its split; its episodes are still to be
    collected in the card, so it is deleted and the resume writes the same episodes under the
    same name. Any other unlisted shard (a card restored from a backup, a folder copied while a
    collection ran) is moved aside, ``<file>.<time>.unlisted``, never deleted.
    """
    listed = {shard["file"] for shard in card["shards"]}
    for split in SPLITS:
        crashed = _next_shard_name(card, split)
        for path in _shard_files(out_dir, split):
            if path.name in listed:
                continue
            if path.name == crashed:
                path.unlink()
                what = "removed; the episodes it held are collected again"
            else:
                aside = path.with_name(f"{path.name}.{time.strftime('%Y%m%d-%H%M%S')}.unlisted")
                path.replace(aside)  # a name of its own, never overwritten
                what = f"moved to {aside.name}"
            warnings.warn(
                f"{path} is not in {CARD} (a run stopped before it listed it, or a card older "
                f"than its shards): {what}",
                stacklevel=3,
            )


def _shard_files(out_dir: Path, split: str) -> list[Path]:
    """The shard files of ``split`` on disk (``train-00000.npz``, ...), listed or not."""
    return sorted(out_dir.glob(f"{split}-[0-9][0-9][0-9][0-9][0-9].npz"))


def _next_shard_name(card: dict[str, Any], split: str, out_dir: Path | None = None) -> str:
    """The next shard name of ``split``: the first neither the card nor ``out_dir`` holds."""
    taken = {s["file"] for s in card["shards"]}
    number = sum(1 for s in card["shards"] if s["split"] == split)
    while (name := f"{split}-{number:05d}.npz") in taken or (
        out_dir is not None and (out_dir / name).exists()
    ):
        number += 1
    return name


def _mark_bad_shards(out_dir: Path, card: dict[str, Any], progress: bool) -> None:
    """Check the card's shards; set aside (and mark :data:`AGAIN`) those not the bytes it records.

    A shard that is missing is an error, not re-collected: a folder half copied or a disk not
    mounted would otherwise send hours of collection again. Each corrupt one is warned about.
    """
    missing = [
        s["file"]
        for s in card["shards"]
        if not s.get(AGAIN) and not (out_dir / s["file"]).is_file()
    ]
    if missing:
        raise DatasetError(
            f"{out_dir}: the card lists shards that are not there: {missing}. Put them back, or "
            f"delete their entries from {CARD} to collect their episodes again"
        )
    bad = []
    shown = progress and bool(card["shards"])  # a new dataset has none to check
    for shard in tqdm(card["shards"], desc="check shards", unit="shard", disable=not shown):
        if shard.get(AGAIN):  # set aside by a run interrupted before it gathered them again
            continue
        path = out_dir / shard["file"]
        try:
            same = sha256(path) == shard["sha256"]
        except OSError as err:
            raise DatasetError(f"{path} cannot be read: {err}") from err
        if not same:
            aside = path.with_name(f"{path.name}.{time.strftime('%Y%m%d-%H%M%S')}.corrupt")
            path.replace(aside)  # kept, not deleted: a name of its own, never overwritten
            shard[AGAIN] = True
            bad.append(shard)
            warnings.warn(
                f"{path} is not the bytes {CARD} records (a disk error, an edit): moved to "
                f"{aside.name}; its {shard['episodes']} episodes {shard['indices']} are "
                "collected again",
                stacklevel=3,
            )
    if bad:
        _write_card(out_dir, card)


def _posed(out_dir: Path, card: dict[str, Any]) -> bool | None:
    """Whether the episodes stored so far record poses (None before the first shard)."""
    whole = [s for s in card["shards"] if not s.get(AGAIN)]
    if not whole:
        return None
    with np.load(out_dir / whole[0]["file"]) as shard:
        return len(shard["poses"]) > 0


#: What every source's ``info`` must say (the rest of it is recorded as given).
SOURCE_KEYS = ("world", "modality", "frame_size")


def _open_card(out_dir: Path, settings: dict[str, Any]) -> dict[str, Any]:
    if not (out_dir / CARD).is_file():  # a new dataset: into an empty folder only
        # what a system or a tool leaves in a folder is no one's data (.DS_Store, .gitkeep)
        held = sorted(
            p.name for p in out_dir.iterdir() if p.name[0] != "." and p.name != "lost+found"
        )
        if held:
            run = {"run.json", "checkpoint.pt", "model"} & set(held)
            what = "a training run" if run else "other files"
            raise DatasetError(
                f"{out_dir} holds {what} ({', '.join(held[:5])}{', ...' if len(held) > 5 else ''})"
                " and no dataset card: collect into a new or empty directory"
            )
        card = {"format": FORMAT, **settings, "shards": []}
        _write_card(out_dir, card)
        return card
    card = read_card(out_dir)
    changed = {k: (card.get(k), v) for k, v in settings.items() if card.get(k) != v}
    shards_here = any(_shard_files(out_dir, split) for split in SPLITS)
    if changed and not card["shards"] and not shards_here:  # a first run stopped before its
        card = {"format": FORMAT, **settings, "shards": []}  # first shard: no episode was
        _write_card(out_dir, card)  # collected under it
        return card
    if changed:
        raise DatasetError(
            f"{out_dir / CARD} was collected with other settings {changed} "
            "(card, requested); use a new directory"
        )
    return card


def _flush(
    out_dir: Path, card: dict, split: str, items: list[tuple[int, Episode]], progress: bool
) -> None:
    """Write ``items`` (index, episode) of ``split`` as a shard and add it to the card.

    A shard that gathers a damaged one's episodes again (its entry marked :data:`AGAIN`) takes
    that entry's name and place.
    """
    indices, episodes = zip(*items, strict=True)
    again = [s for s in card["shards"] if s.get(AGAIN) and s["indices"] == list(indices)]
    # else the next free name: neither in the card nor on disk (a shard deleted by hand, with
    # its card entry, must not make the next one overwrite a later shard)
    name = again[0]["file"] if again else _next_shard_name(card, split, out_dir)
    digest = write_shard(out_dir / name, list(episodes))
    entry = {
        "file": name,
        "split": split,
        "episodes": len(episodes),
        "indices": list(indices),
        "frames": int(sum(len(e.frames) for e in episodes)),
        "sha256": digest,
    }
    if again:  # in the damaged shard's place, unmarked
        again[0].clear()
        again[0].update(entry)
    else:
        card["shards"].append(entry)
    _write_card(out_dir, card)
    if not progress:  # a log line a shard instead of the bar
        done = sum(s["episodes"] for s in card["shards"] if not s.get(AGAIN))
        print(f"{out_dir / name}: {len(episodes)} {split} episodes ({done} collected)", flush=True)


def _write_card(out_dir: Path, card: dict[str, Any]) -> None:
    text = json.dumps(card, indent=1) + "\n"
    atomic_write(out_dir / CARD, lambda f: f.write(text.encode()))
