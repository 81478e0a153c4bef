"""eval's probe cache: a rerun on the same data reads its probe back, and scores the same."""

from __future__ import annotations

import dataclasses
import os
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import randomize
from test_evaluation import sliding_square_episode
from test_training import SquareSource

from gym_worldmodel import hub
from gym_worldmodel.cli import main
from gym_worldmodel.evaluation import (
    cached_probe,
    control,
    episode_windows,
    probe_cache,
    train_probe,
)
from gym_worldmodel.evaluation.probe_cache import load_probe, probe_key, probe_path, save_probe
from gym_worldmodel.files import user_cache_dir
from gym_worldmodel.models import WorldModel, WorldModelConfig
from gym_worldmodel.sources.collect import collect
from gym_worldmodel.sources.episodes import load_episodes


@pytest.fixture
def data(tmp_path):
    """A camera dataset of 4 training and 2 held-out episodes of moving squares."""
    path = tmp_path / "data"
    collect(SquareSource(), path, episodes=6, steps=12, heldout_every=3, progress=False)
    return path


def counted_training(monkeypatch) -> list[tuple]:
    """The calls ``cached_probe`` makes to ``train_probe`` from now on."""
    calls, train = [], probe_cache.train_probe

    def counted(*args, **kwargs):
        calls.append(args)
        return train(*args, **kwargs)

    monkeypatch.setattr(probe_cache, "train_probe", counted)
    return calls


def assert_same_probe(a, b, windows: np.ndarray) -> None:
    """Bit for bit: the weights, every array of the probe (dtype too), and what it reads."""
    assert a.modality == b.modality
    weights, back = a.net.state_dict(), b.net.state_dict()
    assert list(weights) == list(back)
    for name, x in weights.items():
        assert x.dtype == back[name].dtype and torch.equal(x, back[name]), name
    for name in ("mean", "std", "validation", "visible"):
        x, y = getattr(a, name), getattr(b, name)
        assert (x.dtype, x.shape, x.tobytes()) == (y.dtype, y.shape, y.tobytes()), name
    assert not b.net.training
    assert a.predict(windows).tobytes() == b.predict(windows).tobytes()


def heldout_windows(data: Path) -> np.ndarray:
    return episode_windows(load_episodes(data, "heldout"), every=1)[0]


def test_a_probe_is_kept_and_read_back_bit_for_bit(data, tmp_path, monkeypatch, capsys):
    calls = counted_training(monkeypatch)
    folder = tmp_path / "probes"
    fresh = cached_probe("camera", data, 3, 0, None)  # no folder: trained, nothing kept
    assert not folder.exists()
    cold = cached_probe("camera", data, 3, 0, folder)
    (path,) = folder.iterdir()
    assert path == probe_path(folder, probe_key("camera", data, 3, 0))
    assert path.name.startswith("camera-") and path.suffix == ".safetensors"
    assert capsys.readouterr().err == ""
    warm = cached_probe("camera", data, 3, 0, folder)
    assert len(calls) == 2  # the fresh and the cold run trained, the warm one read
    assert f"trained before on the same data and settings: {path}" in capsys.readouterr().err
    windows = heldout_windows(data)
    assert_same_probe(fresh, cold, windows)
    assert_same_probe(cold, warm, windows)
    # a copy of the data elsewhere is the same data: its probe is read back too
    shutil.copytree(data, tmp_path / "copy")
    cached_probe("camera", tmp_path / "copy", 3, 0, folder)
    assert len(calls) == 2 and len(list(folder.iterdir())) == 1


def test_a_continuous_probe_keeps_its_standardisation_and_visible_dimensions(tmp_path):
    episodes = [sliding_square_episode(s) for s in range(8)]
    probe = train_probe("driving", episodes, 20, seed=0)
    key = {"modality": "driving", "steps": 20}
    save_probe(tmp_path / "p.safetensors", probe, key)
    back = load_probe(tmp_path / "p.safetensors", key)
    assert probe.mean.dtype == np.float32 and probe.visible.dtype == bool  # as trained
    assert_same_probe(probe, back, episode_windows([sliding_square_episode(100)], 1)[0])


def test_eval_reads_its_probe_back_and_prints_the_same_figures(data, tmp_path, monkeypatch, capsys):
    """Off, cold, warm: the same printed figures and results.json; off and warm train nothing."""
    model = randomize(WorldModel(dataclasses.replace(WorldModelConfig.tiny(), fps=16))).eval()
    hub.save_pretrained(model, tmp_path / "model")
    monkeypatch.delenv("GYM_WORLDMODEL_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    probes = tmp_path / "xdg" / "gym-worldmodel" / "probes"
    argv = ["eval", "--model", str(tmp_path / "model"), "--data", str(data), "--budget"]

    def run(name: str, *extra: str) -> tuple[str, str]:
        main([*argv, *extra, "--no-progress", "--out", str(tmp_path / name)])
        figures = capsys.readouterr().out.splitlines()[0]  # the next line names the report
        return figures, (tmp_path / name / "results.json").read_text()

    off = run("off", "--no-probe-cache")
    assert not probes.parent.exists()  # cache off: nothing written
    cold = run("cold")
    assert len(list(probes.iterdir())) == 1
    train = probe_cache.train_probe

    def refused(*args, **kwargs):
        raise AssertionError("a warm run trains no probe")

    monkeypatch.setattr(probe_cache, "train_probe", refused)
    warm = run("warm")
    assert off == cold == warm
    assert "control" in off[0]
    with pytest.raises(AssertionError, match="trains no probe"):  # off trains, whatever is kept
        run("off-again", "--no-probe-cache")
    monkeypatch.setattr(probe_cache, "train_probe", train)
    # --probe-cache names another folder; one that is a file is refused before the work
    run("elsewhere", "--probe-cache", str(tmp_path / "mine"))
    assert len(list((tmp_path / "mine").iterdir())) == 1
    with pytest.raises(SystemExit):
        main([*argv, "--probe-cache", str(tmp_path / "model" / "config.json")])
    assert "--probe-cache" in capsys.readouterr().err


@pytest.mark.parametrize(
    "change",
    ["steps", "seed", "modality", "training data", "probe version", "probe code", "threads"],
)
def test_a_changed_input_of_the_probes_weights_misses(change, data, tmp_path, monkeypatch):
    folder = tmp_path / "probes"
    cached_probe("camera", data, 3, 0, folder)
    key = probe_key("camera", data, 3, 0)
    args = {"modality": "camera", "data": data, "steps": 3, "seed": 0}
    if change in ("steps", "seed"):
        args[change] = 4
    elif change == "modality":
        args["modality"] = "driving"
    elif change == "training data":
        args["data"] = tmp_path / "other"
        collect(SquareSource(), args["data"], 6, 12, seed=1, heldout_every=3, progress=False)
    elif change == "probe version":
        monkeypatch.setattr(control, "PROBE_VERSION", control.PROBE_VERSION + 1)
    elif change == "probe code":
        monkeypatch.setattr(control, "__file__", probe_cache.__file__)
    else:
        monkeypatch.setattr(torch, "get_num_threads", lambda: 99)
    assert probe_path(folder, probe_key(**args)) != probe_path(folder, key)
    if change != "modality":  # (the squares are not a driving dataset)
        calls = counted_training(monkeypatch)
        cached_probe(args["modality"], args["data"], args["steps"], args["seed"], folder)
        assert len(calls) == 1 and len(list(folder.iterdir())) == 2


@pytest.mark.parametrize(
    "damage", ["empty", "truncated", "not a file of tensors", "a flipped byte"]
)
def test_a_damaged_probe_file_is_noted_in_one_line_and_the_probe_trained_again(
    damage, data, tmp_path, monkeypatch, capsys
):
    folder = tmp_path / "probes"
    kept = cached_probe("camera", data, 3, 0, folder)
    (path,) = folder.iterdir()
    raw = path.read_bytes()
    damaged = {
        "empty": b"",
        "truncated": raw[: len(raw) // 2],
        "not a file of tensors": b"not a probe",
        "a flipped byte": raw[:-40] + bytes([raw[-40] ^ 1]) + raw[-39:],  # a weight's bits
    }[damage]
    path.write_bytes(damaged)
    capsys.readouterr()
    calls = counted_training(monkeypatch)
    again = cached_probe("camera", data, 3, 0, folder)
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith(f"note: the probe file {path} cannot be used (")
    assert line.endswith("; training the probe again") and len(calls) == 1
    assert_same_probe(kept, again, heldout_windows(data))
    cached_probe("camera", data, 3, 0, folder)  # written over: read back next time
    assert len(calls) == 1


def test_a_probe_file_of_another_key_is_not_used(data, tmp_path):
    folder = tmp_path / "probes"
    probe = cached_probe("camera", data, 3, 0, folder)
    (path,) = folder.iterdir()
    save_probe(path, probe, {**probe_key("camera", data, 3, 0), "seed": 1})
    with pytest.raises(ValueError, match="written for other data or settings"):
        load_probe(path, probe_key("camera", data, 3, 0))


def test_a_folder_that_cannot_be_written_is_noted_and_the_probe_used(data, tmp_path, capsys):
    (tmp_path / "a file").write_text("")
    probe = cached_probe("camera", data, 3, 0, tmp_path / "a file")
    assert probe.validation.shape == (2,)
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith(f"note: the trained probe was not kept in {tmp_path / 'a file'}: ")


def test_the_user_cache_folder_follows_its_variable_then_xdg_then_home(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("GYM_WORLDMODEL_CACHE", str(tmp_path / "own"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert user_cache_dir() == tmp_path / "own"
    monkeypatch.setenv("GYM_WORLDMODEL_CACHE", "")  # empty: not set
    assert user_cache_dir() == tmp_path / "xdg" / "gym-worldmodel"
    assert probe_cache.default_probe_cache() == tmp_path / "xdg" / "gym-worldmodel" / "probes"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/cache")  # the XDG spec ignores it
    assert user_cache_dir() == tmp_path / "home" / ".cache" / "gym-worldmodel"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert user_cache_dir() == tmp_path / "home" / ".cache" / "gym-worldmodel"


def age(path: Path, days: float) -> None:
    """Mark ``path`` last used ``days`` days ago."""
    used = time.time() - days * 86400
    os.utime(path, (used, used))


def test_a_probe_read_back_is_marked_used_and_evicted_last(data, tmp_path, capsys):
    folder = tmp_path / "probes"
    cached_probe("camera", data, 3, 0, folder)
    (first,) = folder.iterdir()
    cached_probe("camera", data, 3, 1, folder)
    second = probe_path(folder, probe_key("camera", data, 3, 1))
    age(first, 3)
    age(second, 2)
    cached_probe("camera", data, 3, 0, folder)  # read back: used now
    assert time.time() - first.stat().st_mtime < 60
    assert second.stat().st_mtime < time.time() - 86400  # not read: as it was
    capsys.readouterr()
    # a third probe where two fit: the least recently used goes, the one just read stays
    size = first.stat().st_size
    cached_probe("camera", data, 3, 2, folder, max_bytes=2 * size + size // 2)
    third = probe_path(folder, probe_key("camera", data, 3, 2))
    assert sorted(folder.iterdir()) == sorted([first, third])
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith("note: removed the 1 least recently used cached probe(s) (")
    assert line.endswith(
        f"to keep the probes under {(2 * size + size // 2) / 1e6:g} MB: {second.name}"
    )


def test_the_probes_are_held_to_the_limit_of_their_variable(data, tmp_path, monkeypatch, capsys):
    folder = tmp_path / "probes"
    (folder / "mine").mkdir(parents=True)
    # a file that is not a probe: neither counted nor removed
    (folder / "notes.txt").write_bytes(b"x" * 10_000_000)
    cached_probe("camera", data, 3, 0, folder)
    (probe,) = folder.glob("*.safetensors")
    age(probe, 1)
    size = probe.stat().st_size
    monkeypatch.setenv("GYM_WORLDMODEL_PROBE_CACHE_MB", str(1.5 * size / 1e6))
    cached_probe("camera", data, 3, 1, folder)  # one fits: the older goes
    assert not probe.exists() and len(list(folder.glob("*.safetensors"))) == 1
    assert (folder / "notes.txt").stat().st_size == 10_000_000 and (folder / "mine").is_dir()
    # a probe larger than the limit is used, not kept, and removes nothing
    monkeypatch.setenv("GYM_WORLDMODEL_PROBE_CACHE_MB", str(0.5 * size / 1e6))
    kept = set(folder.iterdir())
    capsys.readouterr()
    calls = counted_training(monkeypatch)
    cached_probe("camera", data, 3, 2, folder)
    assert set(folder.iterdir()) == kept and len(calls) == 1
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith(f"note: the trained probe was not kept in {folder}: the probe (")
    assert "larger than the cache's limit" in line
    monkeypatch.setenv("GYM_WORLDMODEL_PROBE_CACHE_MB", "lots")  # refused before training
    with pytest.raises(ValueError, match="GYM_WORLDMODEL_PROBE_CACHE_MB='lots'"):
        cached_probe("camera", data, 3, 3, folder)
    assert len(calls) == 1


def test_a_probe_files_name_is_one_the_cache_command_knows(data, tmp_path):
    from gym_worldmodel.user_cache import PROBE_FILE

    for modality in ("camera", "robot", "driving"):
        path = probe_path(tmp_path, {**probe_key("camera", data, 3, 0), "modality": modality})
        match = PROBE_FILE.fullmatch(path.name)
        assert match and match["modality"] == modality


@pytest.mark.parametrize("modality", ["camera", "driving"])
def test_a_stopped_probe_training_goes_on_to_the_same_probe(
    data, tmp_path, monkeypatch, capsys, modality
):
    """Weights, optimizer, best probe so far and both random streams are saved and read back."""
    from gym_worldmodel.evaluation import control, resume

    monkeypatch.setattr(resume, "SAVE_EVERY_S", 0.0)
    episodes = load_episodes(data, "train")
    if modality == "driving":  # continuous actions: the probe's R^2 path
        rng = np.random.default_rng(0)
        episodes = [
            dataclasses.replace(ep, actions=rng.uniform(-1, 1, (len(ep.actions), 2)).astype("f4"))
            for ep in episodes
        ]
    whole = train_probe(modality, episodes, 12, 3)
    loss, calls = control._probe_loss, []

    def stopping(*args):
        calls.append(1)
        if len(calls) == 8:  # in step 8 (12 steps: each is validated), after a save at 7
            raise KeyboardInterrupt
        return loss(*args)

    at = resume.SaveAt(tmp_path / "resume", {"probe": 1})

    with monkeypatch.context() as m:
        m.setattr(control, "_probe_loss", stopping)
        with pytest.raises(KeyboardInterrupt):
            train_probe(modality, episodes, 12, 3, resume=at)
    torch.manual_seed(123)  # the caller's global generator: not the probe's dropout
    again = train_probe(modality, episodes, 12, 3, resume=at)
    assert "going on from step 7 of 12" in capsys.readouterr().err
    assert_same_probe(whole, again, episode_windows(episodes, every=1)[0])


def test_probe_progress_that_cannot_be_loaded_is_removed_and_a_cache_hit_discards_it(
    data, tmp_path, monkeypatch, capsys
):
    from gym_worldmodel.evaluation import control, resume

    monkeypatch.setattr(resume, "SAVE_EVERY_S", 0.0)
    root, probes = tmp_path / "resume", tmp_path / "probes"
    loss, calls = control._probe_loss, []

    def stopping(*args):
        calls.append(1)
        if len(calls) == 4:
            raise KeyboardInterrupt
        return loss(*args)

    def stopped() -> Path:
        calls.clear()
        with monkeypatch.context() as m:
            m.setattr(control, "_probe_loss", stopping)
            with pytest.raises(KeyboardInterrupt):
                cached_probe("camera", data, 12, 3, None, resume=root)
        (folder,) = root.iterdir()
        return folder

    whole = cached_probe("camera", data, 12, 3, None)
    # a state of the right key and checksum whose weights do not fit (another layout)
    state_file = stopped() / "state.pt"
    state = resume._load(state_file)
    state.pop("sha256")
    state["loop"]["net"].popitem()
    resume._write(state_file, state)
    again = cached_probe("camera", data, 12, 3, None, resume=root)
    assert "cannot be read back" in capsys.readouterr().err
    assert_same_probe(whole, again, heldout_windows(data))
    resume.clear(root)  # (the finished training's progress: a run's end removes it)
    # the probe kept in the cache: a stopped training of it is not needed any more
    folder = stopped()
    cached_probe("camera", data, 12, 3, probes)  # trains it and keeps it
    assert folder.is_dir()
    cached_probe("camera", data, 12, 3, probes, resume=root)  # reads it back
    assert not folder.exists()
