"""Episode format and resumable collection, with a procedural fake source (no simulator)."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from gym_worldmodel.sources.collect import collect
from gym_worldmodel.sources.episodes import (
    CARD,
    DatasetError,
    Episode,
    load_episodes,
    read_card,
    read_shard,
    sha256,
    write_shard,
)


class FakeSource:
    """Frames are a colour that the actions move around: deterministic per seed."""

    info = {
        "source": "fake",
        "world": "citywalk",
        "modality": "camera",
        "frame_size": 8,
        "fps": 15,
        "action_width": 12,
        "pose_fields": ["x_m", "y_m", "yaw_deg", "pitch_deg"],
    }

    def __init__(self, fail_at: int | None = None):
        self.fail_at, self.calls = fail_at, 0

    def rollout(self, seed: int, steps: int) -> Episode:
        self.calls += 1
        if self.fail_at is not None and self.calls > self.fail_at:
            raise KeyboardInterrupt("simulated crash")
        rng = np.random.default_rng(seed)
        actions = rng.uniform(-1, 1, (steps, 12)).astype(np.float32)
        level = np.concatenate([[seed % 200], (seed % 200) + np.cumsum(actions[:, 0] * 10)])
        frames = np.broadcast_to(level.clip(0, 255)[:, None, None, None], (steps + 1, 8, 8, 3))
        poses = np.cumsum(np.concatenate([np.zeros((1, 4)), actions[:, :4]]), 0)
        return Episode(frames.astype(np.uint8), actions, poses, seed)


def by_seed(episodes):
    return {e.seed: e for e in episodes}


def test_collection_round_trip_and_splits(tmp_path):
    card = collect(
        FakeSource(),
        tmp_path,
        episodes=7,
        steps=5,
        seed=100,
        episodes_per_shard=2,
        heldout_every=3,
        progress=False,
    )
    train, heldout = load_episodes(tmp_path, "train"), load_episodes(tmp_path, "heldout")
    assert sorted(e.seed - 100 for e in heldout) == [2, 5]  # i % 3 == 2: kept apart
    assert sorted(e.seed - 100 for e in train) == [0, 1, 3, 4, 6]
    fresh = FakeSource()
    for ep in train + heldout:
        ref = fresh.rollout(ep.seed, 5)
        assert np.array_equal(ep.frames, ref.frames) and np.array_equal(ep.actions, ref.actions)
        assert np.array_equal(ep.poses, ref.poses)
    assert read_card(tmp_path)["shards"] == card["shards"]


def test_a_new_dataset_goes_into_an_empty_folder_only(tmp_path):
    """Shards and a card among a run's files would make the run a 'dataset' no train resumes."""
    run = tmp_path / "run"
    (run / "model").mkdir(parents=True)
    (run / "checkpoint.pt").write_bytes(b"weights")
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "todo.txt").write_text("x")
    for folder, what in ((run, "a training run"), (notes, "other files")):
        with pytest.raises(DatasetError, match=f"holds {what} .*collect into a new or empty"):
            collect(FakeSource(), folder, episodes=2, steps=5, progress=False)
    assert sorted(p.name for p in run.iterdir()) == ["checkpoint.pt", "model"]  # as it was
    assert collect(FakeSource(), tmp_path / "new" / "data", episodes=2, steps=5, progress=False)
    (tmp_path / "mounted" / "lost+found").mkdir(parents=True)  # what a system leaves is no data
    (tmp_path / "mounted" / ".DS_Store").write_bytes(b"")
    assert collect(FakeSource(), tmp_path / "mounted", episodes=2, steps=5, progress=False)


def test_interrupted_collection_resumes_to_the_same_episodes(tmp_path):
    opts = dict(episodes=9, steps=4, episodes_per_shard=2, heldout_every=4, progress=False)
    with pytest.raises(KeyboardInterrupt):
        collect(FakeSource(fail_at=5), tmp_path / "a", **opts)
    partial = read_card(tmp_path / "a")
    assert 0 < sum(s["episodes"] for s in partial["shards"]) < 9
    resumed = FakeSource()
    collect(resumed, tmp_path / "a", **opts)
    assert resumed.calls == 9 - sum(s["episodes"] for s in partial["shards"])  # no re-collection
    collect(FakeSource(), tmp_path / "b", **opts)
    for split in ("train", "heldout"):
        a, b = (
            by_seed(load_episodes(tmp_path / "a", split)),
            by_seed(load_episodes(tmp_path / "b", split)),
        )
        assert a.keys() == b.keys()
        assert all(np.array_equal(a[k].frames, b[k].frames) for k in a)
    assert not list((tmp_path / "a").glob("*.tmp"))


def test_a_resumed_collection_collects_a_damaged_shard_again_and_names_a_missing_one(tmp_path):
    opts = dict(episodes=6, steps=4, episodes_per_shard=2, heldout_every=3, progress=False)
    collect(FakeSource(), tmp_path / "ref", **opts)
    collect(FakeSource(), tmp_path / "a", **opts)
    shards = read_card(tmp_path / "a")["shards"]
    flipped, gone = tmp_path / "a" / shards[0]["file"], tmp_path / "a" / shards[1]["file"]
    kept = gone.read_bytes()
    gone.unlink()  # a folder half copied: not hours of collection again, an error
    card = (tmp_path / "a" / "dataset.json").read_text()
    with pytest.raises(DatasetError, match=rf"not there: \['{shards[1]['file']}'\]"):
        collect(FakeSource(), tmp_path / "a", **opts)
    assert (tmp_path / "a" / "dataset.json").read_text() == card
    gone.write_bytes(kept)
    before = read_card(tmp_path / "a")
    data = bytearray(flipped.read_bytes())
    data[len(data) // 2] ^= 0xFF
    flipped.write_bytes(bytes(data))
    stale = tmp_path / "a" / ".train-00009.npz.k1ll3dxx.tmp"  # a killed run's shard
    stale.write_bytes(b"half")
    os.utime(stale, (0, 0))
    again = FakeSource()
    with pytest.warns(UserWarning, match="collected again"):
        collect(again, tmp_path / "a", **opts)
    assert again.calls == shards[0]["episodes"]
    (aside,) = (tmp_path / "a").glob(f"{flipped.name}.*.corrupt")
    assert aside.read_bytes() == bytes(data) and not stale.exists()  # kept aside; temp gone
    # the shard collected again under its own name and in its place: the card, and so the
    # dataset a training run records, as before the damage (the shard's bytes the same)
    assert read_card(tmp_path / "a") == before
    for split in ("train", "heldout"):
        a, b = (by_seed(load_episodes(tmp_path / d, split)) for d in ("a", "ref"))
        assert a.keys() == b.keys()
        assert all(np.array_equal(a[k].frames, b[k].frames) for k in a)


def test_a_shard_the_card_never_listed_is_collected_again_under_its_name(tmp_path, monkeypatch):
    """Killed (or out of disk) between a shard's rename and the card that lists it."""
    from gym_worldmodel.sources import collect as collect_lib

    opts = dict(episodes=6, steps=4, episodes_per_shard=2, heldout_every=3, progress=False)
    collect(FakeSource(), tmp_path / "ref", **opts)
    writes = []

    def card_then_die(out_dir, card):
        writes.append(1)
        if len(writes) == 3:  # the second shard is in place, its card not written
            raise KeyboardInterrupt
        return write_card(out_dir, card)

    write_card = collect_lib._write_card
    monkeypatch.setattr(collect_lib, "_write_card", card_then_die)
    with pytest.raises(KeyboardInterrupt):
        collect(FakeSource(), tmp_path / "a", **opts)
    monkeypatch.setattr(collect_lib, "_write_card", write_card)
    listed = {s["file"] for s in read_card(tmp_path / "a")["shards"]}
    (orphan,) = [p for p in (tmp_path / "a").glob("*.npz") if p.name not in listed]
    with pytest.warns(UserWarning, match=f"{orphan.name} is not in dataset.json .* removed"):
        collect(FakeSource(), tmp_path / "a", **opts)
    assert read_card(tmp_path / "a")["shards"] == read_card(tmp_path / "ref")["shards"]
    # an older card (a backup) that lacks an earlier shard: that shard is moved aside, kept
    card_path = tmp_path / "a" / "dataset.json"
    card = json.loads(card_path.read_text())
    first = card["shards"].pop(0)
    card_path.write_text(json.dumps(card))
    with pytest.warns(UserWarning, match=rf"{first['file']} is not in dataset.json .* moved to"):
        collect(FakeSource(), tmp_path / "a", **opts)
    (aside,) = (tmp_path / "a").glob(f"{first['file']}.*.unlisted")
    assert sha256(aside) == first["sha256"]


def test_several_damaged_shards_of_a_split_are_each_collected_again_as_they_were(tmp_path):
    """Their episodes used to be regrouped (shards of 1 and 2 as 2 and 1): another card."""
    opts = dict(steps=4, episodes_per_shard=2, heldout_every=100, progress=False)
    collect(FakeSource(), tmp_path, episodes=5, **opts)
    collect(FakeSource(), tmp_path, episodes=8, **opts)  # [0, 1] [2, 3] [4] [5, 6] [7]
    before = read_card(tmp_path)
    assert [s["indices"] for s in before["shards"]][2:4] == [[4], [5, 6]]
    for shard in before["shards"][2:4]:
        path = tmp_path / shard["file"]
        path.write_bytes(path.read_bytes()[:-10])
    with pytest.warns(UserWarning, match="collected again"):
        collect(FakeSource(), tmp_path, episodes=8, **opts)
    assert read_card(tmp_path) == before


def test_a_damaged_shard_past_a_shorter_episodes_is_collected_again(tmp_path):
    """A dataset only grows: a resume asking for fewer episodes still makes it whole again."""
    opts = dict(steps=4, episodes_per_shard=2, heldout_every=3, progress=False)
    collect(FakeSource(), tmp_path, episodes=6, **opts)
    before = read_card(tmp_path)
    last = tmp_path / before["shards"][-1]["file"]
    last.write_bytes(last.read_bytes()[:-10])
    with pytest.warns(UserWarning, match="collected again"):
        collect(FakeSource(), tmp_path, episodes=2, **opts)
    assert read_card(tmp_path) == before
    assert len(load_episodes(tmp_path, "train")) + len(load_episodes(tmp_path, "heldout")) == 6


@pytest.mark.parametrize("fail_at", [0, 3])  # before it gathers the shard again; after
def test_a_repair_interrupted_still_gives_back_the_card_as_it_was(tmp_path, fail_at):
    """The damaged shard's entry keeps its place, marked, until its episodes are written again:
    a run interrupted before or after that, and resumed (here with more episodes), ends with
    the card it had, then the new shards after it."""
    opts = dict(steps=4, episodes_per_shard=2, heldout_every=3, progress=False)
    collect(FakeSource(), tmp_path, episodes=6, **opts)
    before = read_card(tmp_path)
    shard = tmp_path / before["shards"][0]["file"]
    shard.write_bytes(shard.read_bytes()[:-10])  # truncated
    with pytest.warns(UserWarning, match="collected again"), pytest.raises(KeyboardInterrupt):
        collect(FakeSource(fail_at=fail_at), tmp_path, episodes=12, **opts)
    if fail_at == 0:  # half repaired: says so, rather than that a file is missing
        with pytest.raises(DatasetError, match=r"damaged and set aside.*run the collect command"):
            load_episodes(tmp_path)
    collect(FakeSource(), tmp_path, episodes=12, **opts)
    after = read_card(tmp_path)
    assert after["shards"][: len(before["shards"])] == before["shards"]
    assert sorted(i for s in after["shards"] for i in s["indices"]) == list(range(12))


def test_resuming_with_other_settings_is_refused(tmp_path):
    collect(FakeSource(), tmp_path, episodes=2, steps=3, progress=False)
    with pytest.raises(DatasetError, match="other settings"):
        collect(FakeSource(), tmp_path, episodes=4, steps=5, progress=False)


def test_a_first_run_stopped_before_its_first_shard_takes_other_settings(tmp_path):
    """A wrong option or a bad first recording leaves a card without shards: not a dataset."""
    with pytest.raises(KeyboardInterrupt):
        collect(FakeSource(fail_at=0), tmp_path, episodes=2, steps=3, progress=False)
    assert read_card(tmp_path)["shards"] == []
    collect(FakeSource(), tmp_path, episodes=2, steps=5, progress=False)
    assert read_card(tmp_path)["steps"] == 5 and len(load_episodes(tmp_path, "train")) == 2
    # a shard on disk that an empty card does not list (a crash, a card from a backup): refused
    card = json.loads((tmp_path / "dataset.json").read_text())
    card["shards"] = []
    (tmp_path / "dataset.json").write_text(json.dumps(card))
    with pytest.raises(DatasetError, match="other settings"):
        collect(FakeSource(), tmp_path, episodes=2, steps=3, progress=False)
    assert len(list(tmp_path.glob("train-*.npz"))) == 1  # nothing deleted


def test_whole_float_settings_are_stored_as_ints(tmp_path):
    collect(FakeSource(), tmp_path, episodes=3.0, steps=3, heldout_every=3.0, progress=False)
    assert read_card(tmp_path)["heldout_every"] == 3 and len(load_episodes(tmp_path)) == 2


@pytest.mark.parametrize(
    ("setting", "value"),
    [("heldout_every", 0), ("heldout_every", 1), ("episodes_per_shard", 0), ("steps", 0)],
)
def test_settings_that_cannot_work_are_refused_before_anything_is_written(tmp_path, setting, value):
    opts = dict(episodes=3, steps=3, progress=False)
    with pytest.raises(ValueError, match=f"{setting} must be an int >= "):
        collect(FakeSource(), tmp_path / "d", **{**opts, setting: value})
    assert not (tmp_path / "d").exists()  # no card: a retry with good settings starts clean
    collect(FakeSource(), tmp_path / "d", **opts)


class WideSource(FakeSource):
    info = {**FakeSource.info, "action_width": 7}


def test_a_source_whose_info_lacks_what_readers_need_is_refused_before_writing(tmp_path):
    class NoSize(FakeSource):
        info = {k: v for k, v in FakeSource.info.items() if k != "frame_size"}

    with pytest.raises(ValueError, match=r"info dict lacks \['frame_size'\]"):
        collect(NoSize(), tmp_path / "d", episodes=2, steps=3, progress=False)
    assert not (tmp_path / "d").exists()


def test_episodes_wider_than_the_card_says_are_refused(tmp_path):
    with pytest.raises(DatasetError, match="actions 12 wide where the card says 7"):
        collect(WideSource(), tmp_path, episodes=2, steps=3, progress=False)
    assert read_card(tmp_path)["shards"] == []


def test_frames_of_another_size_than_the_source_says_are_refused(tmp_path):
    class Big(FakeSource):
        info = {**FakeSource.info, "frame_size": 16}

    with pytest.raises(DatasetError, match=r"frames of \(8, 8\) pixels where frame_size is 16"):
        collect(Big(), tmp_path, episodes=2, steps=3, progress=False)
    assert read_card(tmp_path)["shards"] == []


class Unlike(FakeSource):
    """Episodes that differ from the first from episode 2 on, in one way."""

    info = {k: v for k, v in FakeSource.info.items() if k != "action_width"}  # the modality's

    def __init__(self, how: str):
        super().__init__()
        self.how = how

    def rollout(self, seed: int, steps: int):
        episode = super().rollout(seed, steps)
        if seed < 2:
            return episode
        frames, actions, poses = episode.frames, episode.actions, episode.poses
        if self.how == "short":
            return Episode(frames[:-1], actions[:-1], poses[:-1], seed)
        if self.how == "no poses":
            return Episode(frames, actions, None, seed)
        if self.how == "wide":
            return Episode(frames, np.pad(actions, ((0, 0), (0, 1))), poses, seed)
        if self.how == "scaled":  # raw values, not the vectors an env's head encodes
            return Episode(frames, actions * 50, poses, seed)
        return {"frames": frames}


@pytest.mark.parametrize(
    ("how", "match"),
    [
        ("short", "2 actions where --steps is 3"),
        ("no poses", "no poses where the episodes before had poses"),
        ("wide", "actions 13 wide where the card says 12"),
        ("scaled", r"camera action vectors up to 4\d\.\d+ in size; an env's vectors lie in"),
        ("not an episode", "returned dict for episode 2; expected a gym_worldmodel"),
    ],
)
def test_a_sources_episode_unlike_the_others_is_refused_before_it_is_written(tmp_path, how, match):
    collect(Unlike(how), tmp_path, episodes=2, steps=3, episodes_per_shard=1, progress=False)
    shards = read_card(tmp_path)["shards"]
    with pytest.raises(DatasetError, match=match):
        collect(Unlike(how), tmp_path, episodes=4, steps=3, episodes_per_shard=1, progress=False)
    assert read_card(tmp_path)["shards"] == shards  # the episodes before it are kept, intact


@pytest.mark.parametrize(
    ("key", "value"), [("modality", None), ("frame_size", "8"), ("world", ""), ("fps", 15.0)]
)
def test_a_source_info_of_the_wrong_types_is_refused_before_writing(tmp_path, key, value):
    class Odd(FakeSource):
        info = {**FakeSource.info, key: value}

    with pytest.raises(ValueError, match=f"source info: '{key}' must be .*, got {value!r}"):
        collect(Odd(), tmp_path / "d", episodes=2, steps=3, progress=False)
    assert not (tmp_path / "d").exists()


def test_shard_indices_are_the_collection_order_whatever_seed_a_source_records(tmp_path):
    class Reseeding(FakeSource):
        def rollout(self, seed, steps):
            ep = super().rollout(seed, steps)
            return Episode(ep.frames, ep.actions, ep.poses, seed=7)  # its own idea of a seed

    card = collect(Reseeding(), tmp_path, episodes=4, steps=3, heldout_every=2, progress=False)
    indices = {s["split"]: s["indices"] for s in card["shards"]}
    assert indices == {"train": [0, 2], "heldout": [1, 3]}


def test_corrupt_shards_are_clear_errors(tmp_path):
    collect(FakeSource(), tmp_path, episodes=3, steps=3, episodes_per_shard=3, progress=False)
    shard = tmp_path / "train-00000.npz"
    data = shard.read_bytes()
    shard.write_bytes(data[: len(data) // 2])
    with pytest.raises(DatasetError, match="SHA-256"):
        load_episodes(tmp_path)
    with pytest.raises(DatasetError, match="not a readable episode shard"):
        read_shard(shard)  # without the hash the truncated zip itself is reported
    shard.write_bytes(b"neither npz nor npy")
    with pytest.raises(DatasetError, match="shard: not an .npy or .npz file") as e:
        read_shard(shard)
    assert "allow_pickle" not in str(e.value)  # NumPy's advice to load junk unsafely is dropped
    shard.unlink()
    with pytest.raises(DatasetError, match="missing, though dataset.json lists it: put it back"):
        load_episodes(tmp_path)
    (tmp_path / CARD).write_text(json.dumps({"format": "other"}))
    with pytest.raises(DatasetError, match="format"):
        load_episodes(tmp_path)


def test_recollecting_a_shard_deleted_by_hand_overwrites_no_other(tmp_path):
    opts = dict(episodes=8, steps=3, episodes_per_shard=2, heldout_every=100, progress=False)
    collect(FakeSource(), tmp_path, **opts)
    before = {p.name: p.read_bytes() for p in tmp_path.glob("train-*.npz")}
    # a shard found corrupt is deleted with its card entry, as the error message says
    card = read_card(tmp_path)
    card["shards"] = [s for s in card["shards"] if s["file"] != "train-00001.npz"]
    (tmp_path / CARD).write_text(json.dumps(card))
    (tmp_path / "train-00001.npz").unlink()
    collect(FakeSource(), tmp_path, **opts)
    card = read_card(tmp_path)
    files = [s["file"] for s in card["shards"]]
    assert len(files) == len(set(files)) == 4 and "train-00004.npz" in files
    for name, data in before.items():  # the later shards are untouched
        if name != "train-00001.npz":
            assert (tmp_path / name).read_bytes() == data
    assert sorted(ep.seed for ep in load_episodes(tmp_path)) == list(range(8))


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        (lambda c: c["shards"].append(dict(c["shards"][0])), "listed twice"),
        (lambda c: c["shards"][0].update(split="heldout"), "listed as heldout but holds"),
        (lambda c: c["shards"][1].update(indices=c["shards"][0]["indices"]), "listed twice"),
        (lambda c: c["shards"][0].update(file="../elsewhere.npz"), "not a file name"),
        (lambda c: c["shards"][0].pop("sha256"), r"a shard entry lacks \['sha256'\]"),
        (lambda c: c.pop("modality"), r"the card lacks \['modality'\]"),
        (lambda c: c["shards"][0].update(frames=1), "its card entry says"),
        (lambda c: c.update(heldout_every=0), "'heldout_every' must be an int >= 2, got 0"),
        (lambda c: c.update(heldout_every="4"), "'heldout_every' must be an int >= 2, got '4'"),
        (lambda c: c.update(modality=None), "'modality' must be a modality name"),
        (lambda c: c["shards"][0].update(indices=["0"]), "'indices' must be a list of episode"),
        (lambda c: c["shards"][0].update(episodes=2.0), "'episodes' must be an int >= 1"),
        (lambda c: c.update(fps="16"), "'fps' must be frames per second"),
        (lambda c: c.update(steps="3"), "'steps' must be the actions of each episode"),
    ],
)
def test_a_card_edited_out_of_shape_is_refused(tmp_path, edit, match):
    opts = dict(episodes=8, steps=3, episodes_per_shard=2, heldout_every=4, progress=False)
    collect(FakeSource(), tmp_path, **opts)
    card = read_card(tmp_path)
    edit(card)
    (tmp_path / CARD).write_text(json.dumps(card))
    with pytest.raises(DatasetError, match=match):
        load_episodes(tmp_path)
        load_episodes(tmp_path, "heldout")


@pytest.mark.parametrize(
    ("how", "match"),
    [
        ("size", r"frames of \[\(4, 4\)\] pixels; the card says frame_size 8"),
        ("scaled", r"camera action vectors up to 50 in size; an env's vectors lie in \[-1, 1\]"),
        ("poseless", "some episodes of the split record poses, some none"),
        ("cut", r"episodes of \[2, 4\] actions; the card says steps 3"),
        ("wide", r"actions \[13\] wide; the card says action_width 12"),
    ],
)
def test_a_shard_written_by_hand_unlike_its_card_is_refused(tmp_path, how, match):
    collect(FakeSource(), tmp_path, episodes=4, steps=3, episodes_per_shard=2, progress=False)
    card = read_card(tmp_path)
    entry = card["shards"][1]
    shard = tmp_path / entry["file"]
    episodes = []
    for ep in read_shard(shard):  # a whole shard: one shard holds one frame size, poses or none
        frames, actions, poses = ep.frames, ep.actions, ep.poses
        if how == "size":
            frames = np.ascontiguousarray(frames[:, :4, :4])
        elif how == "scaled":
            actions = actions * 0 + 50.0
        elif how == "wide":  # a column too many: caught on reading, not when training starts
            actions = np.concatenate([actions, actions[:, :1]], 1)
        elif how == "cut":  # frame_offsets moved: the first episode a step shorter, one longer
            if not episodes:
                frames, actions = frames[:-1], actions[:-1]
                poses = None if poses is None else poses[:-1]
            else:
                frames, actions = (np.concatenate([a, a[-1:]]) for a in (frames, actions))
                poses = None if poses is None else np.concatenate([poses, poses[-1:]])
        else:
            poses = None
        episodes.append(Episode(frames, actions, poses, ep.seed))
    entry["sha256"] = write_shard(shard, episodes)
    (tmp_path / CARD).write_text(json.dumps(card))
    with pytest.raises(DatasetError, match=match):
        load_episodes(tmp_path)


def test_inconsistent_shard_arrays_are_rejected(tmp_path):
    path = tmp_path / "bad.npz"
    np.savez(
        path,
        frames=np.zeros((5, 8, 8, 3), np.uint8),
        actions=np.zeros((2, 12), np.float32),
        poses=np.zeros((0, 4)),
        frame_offsets=np.array([0, 5]),
        seeds=np.array([1]),
    )
    with pytest.raises(DatasetError, match="expected 4 actions"):
        read_shard(path)
    for offsets in ([0, 6, 2, 8], [0, 4, 4, 8], [0, 3, 8]):  # falling, an empty episode, 2 of 3
        np.savez(
            path,
            frames=np.zeros((8, 8, 8, 3), np.uint8),
            actions=np.zeros((5, 12), np.float32),
            poses=np.zeros((0, 4)),
            frame_offsets=np.array(offsets),
            seeds=np.array([1, 2, 3]),
        )
        with pytest.raises(DatasetError, match=rf"expected 4 offsets rising .*got \{offsets}"):
            read_shard(path)
    good = dict(
        frames=np.zeros((5, 8, 8, 3), np.uint8),
        actions=np.zeros((4, 12), np.float32),
        poses=np.zeros((0, 4)),
        frame_offsets=np.array([0, 5]),
        seeds=np.array([1]),
    )
    for name, value, match in (  # a converter's arrays of the wrong kind, named, not a TypeError
        ("seeds", np.array([[1]]), r"seeds must be integer seeds \(1-D\), got int64 of shape"),
        ("seeds", np.array([np.nan]), "seeds must be integer seeds"),
        ("seeds", np.array(["a"]), "seeds must be integer seeds"),
        ("frames", np.zeros((), np.uint8), "frames must be uint8 frames"),
        ("actions", np.float32(0), "actions must be float actions"),
        ("poses", np.array([["a"] * 4] * 5), "poses must be float poses"),
    ):
        np.savez(path, **{**good, name: value})
        with pytest.raises(DatasetError, match=rf"shard {path}: {match}"):
            read_shard(path)


def test_bad_episodes_are_rejected():
    frames = np.zeros((4, 8, 8, 3), np.uint8)
    with pytest.raises(DatasetError, match="actions must be float32"):
        Episode(frames, np.zeros((4, 12), np.float32), None, 0)
    with pytest.raises(DatasetError, match="NaN"):
        Episode(frames, np.full((3, 12), np.nan, np.float32), None, 0)
    with pytest.raises(DatasetError, match="frames must be uint8"):
        Episode(frames.astype(np.float32), np.zeros((3, 12), np.float32), None, 0)
