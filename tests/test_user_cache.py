"""``gym-worldmodel cache``: list and clear eval's probes, and nothing else in their folder."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from gym_worldmodel.cli import main
from gym_worldmodel.evaluation.control import InverseDynamicsProbe, Probe
from gym_worldmodel.evaluation.probe_cache import probe_path, save_probe
from gym_worldmodel.user_cache import (
    LIMIT_ENV,
    cache_entries,
    default_probe_cache,
    make_room,
    probe_cache_limit,
)

DAY = 86400.0


def write_probe(folder: Path, seed: int, days_ago: float = 0.0) -> Path:
    """An untrained camera probe's file under a key of ``seed``, last used ``days_ago``."""
    net, visible = InverseDynamicsProbe(10), np.ones(2, bool)
    probe = Probe(net, "camera", np.zeros(10), np.ones(10), np.zeros(2), visible)
    key = {"modality": "camera", "steps": 3, "seed": seed, "train_shards": ["ab" * 32]}
    key |= {"threads": 1, "torch": "x"}
    path = probe_path(folder, key)
    save_probe(path, probe, key)
    used = time.time() - days_ago * DAY
    os.utime(path, (used, used))
    return path


def foreign_files(folder: Path) -> dict[Path, bytes]:
    """What a user keeps beside the probes: none of it is eval's."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "mine").mkdir()
    files = {
        folder / "notes.txt": b"my notes",
        folder / "model.safetensors": b"my weights",
        folder / "camera-0123.safetensors": b"not 32 hex digits",
        folder / "mine" / f"camera-{'0' * 32}.safetensors": b"in a subfolder",
    }
    for path, raw in files.items():
        path.write_bytes(raw)
    old = time.time() - 30 * DAY
    for path in files:
        os.utime(path, (old, old))
    return files


def run(capsys, *argv: str) -> list[str]:
    assert main(["cache", *argv]) == 0
    return capsys.readouterr().out.splitlines()


def test_list_shows_each_probe_and_clear_removes_only_probes(tmp_path, capsys):
    folder = tmp_path / "probes"
    foreign = foreign_files(folder)
    new, old = write_probe(folder, 0), write_probe(folder, 1, days_ago=3)
    stale = folder / f".{old.name}.abcd1234.tmp"  # a writer stopped before its rename
    stale.write_bytes(b"half a probe")
    os.utime(stale, (time.time() - 4 * DAY, time.time() - 4 * DAY))
    size = new.stat().st_size
    assert size > 1e6  # about 4 MB

    out = run(capsys, "list", "--probe-cache", str(folder))
    assert [line.split()[0] for line in out[0:6:2]] == [new.name, old.name, stale.name]
    assert f"{size / 1e6:.1f} MB  last used " in out[0]
    assert out[1].strip().startswith("camera probe, 3 steps, seed 0, trained on 1 training shard")
    assert out[3].strip().startswith("camera probe, 3 steps, seed 1,")
    assert out[5].strip() == f"an unfinished write of {old.name}"
    assert out[6].startswith("3 probe files, ") and f"in {folder}" in out[6]
    assert "(4 other entries there, not eval's probes: left alone)" in out[6]

    out = run(capsys, "clear", "--older-than", "2", "--probe-cache", str(folder))
    assert [line.split()[1] for line in out[:-1]] == [stale.name, old.name]  # oldest first
    assert out[-1].endswith(
        "; kept 1 used in the last 2 days (4 other entries there, not eval's probes: left alone)"
    )
    assert new.exists() and not old.exists() and not stale.exists()

    out = run(capsys, "clear", "--probe-cache", str(folder))
    assert out[0] == f"removed {new.name} ({size / 1e6:.1f} MB, last used " + out[0][-17:]
    assert out[1].startswith(f"removed 1 probe file, {size / 1e6:.1f} MB, from {folder} (4 other")
    assert not new.exists()
    for path, raw in foreign.items():
        assert path.read_bytes() == raw, path
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        ["mine", "notes.txt", "model.safetensors", "camera-0123.safetensors"]
    )


def test_the_default_folder_is_evals_and_a_live_write_is_not_touched(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("GYM_WORLDMODEL_CACHE", str(tmp_path / "cache"))
    folder = default_probe_cache()
    assert folder == tmp_path / "cache" / "probes"
    out = run(capsys, "list")
    assert out == [
        f"0 probe files, 0.0 MB of at most 256 MB (${LIMIT_ENV}), in {folder} (no such folder yet)"
    ]
    path = write_probe(folder, 0)
    live = folder / f".{path.name}.abcd1234.tmp"  # another eval writing now
    live.write_bytes(b"being written")
    assert cache_entries(folder) == cache_entries(folder)[:1]
    assert run(capsys, "clear")[0].startswith(f"removed {path.name} ")
    assert live.exists()
    assert run(capsys, "clear") == [
        f"removed 0 probe files, 0.0 MB, from {folder} "
        "(1 other entry there, not eval's probes: left alone)"
    ]


@pytest.mark.parametrize(
    "raw",
    [b"", b"\x10\x00\x00\x00\x00\x00\x00\x00[1, 2]          ", b"\xff" * 64],
    ids=["empty", "not a header", "a huge header length"],
)
def test_a_damaged_probe_file_is_listed_as_such_and_cleared(raw, tmp_path, capsys):
    folder = tmp_path / "probes"
    folder.mkdir()
    damaged = folder / f"robot-{'1' * 32}.safetensors"
    damaged.write_bytes(raw)
    out = run(capsys, "list", "--probe-cache", str(folder))
    assert out[1].strip().startswith("a probe file that cannot be read (")
    assert out[1].endswith("); eval trains it again when it needs it")
    assert run(capsys, "clear", "--probe-cache", str(folder))[0].startswith(
        f"removed {damaged.name} "
    )
    assert not damaged.exists()


def test_a_file_for_a_folder_and_bad_options_are_refused(tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    assert main(["cache", "list", "--probe-cache", str(tmp_path / "file")]) == 2
    assert "is a file, not the folder of the cached probes" in capsys.readouterr().err
    assert (tmp_path / "file").read_text() == "x"
    for argv in (["cache"], ["cache", "purge"], ["cache", "clear", "--older-than", "-1"]):
        with pytest.raises(SystemExit) as err:
            main(argv)
        assert err.value.code == 2


def test_make_room_removes_the_least_recently_used_until_the_new_probe_fits(tmp_path):
    folder = tmp_path / "probes"
    foreign = foreign_files(folder)  # older than every probe, and never removed
    paths = [write_probe(folder, seed, days_ago=3 - seed) for seed in range(3)]
    size, oldest = paths[0].stat().st_size, cache_entries(folder)[0]
    assert oldest.path == paths[0]
    assert make_room(folder, "camera-" + "f" * 32 + ".safetensors", size, 3 * size) == [oldest]
    assert [p.exists() for p in paths] == [False, True, True]
    removed = make_room(folder, "camera-" + "f" * 32 + ".safetensors", 2 * size, 3 * size)
    assert [e.path for e in removed] == paths[1:2]
    # a file written over is not counted: the newest probe again fits beside the other
    assert make_room(folder, paths[2].name, size, 2 * size) == []
    with pytest.raises(OSError, match=f"larger than the cache's limit of .* MB \\(\\${LIMIT_ENV}"):
        make_room(folder, "camera-" + "f" * 32 + ".safetensors", size + 1, size)
    assert paths[2].exists()
    for path, raw in foreign.items():
        assert path.read_bytes() == raw


@pytest.mark.parametrize("value", ["abc", "0", "-5", "nan", "inf"])
def test_a_bad_size_limit_is_refused_naming_its_variable(value, monkeypatch):
    monkeypatch.setenv(LIMIT_ENV, value)
    with pytest.raises(ValueError, match=f"{LIMIT_ENV}=.*: expected the most megabytes"):
        probe_cache_limit()


def test_the_size_limit_follows_its_variable(monkeypatch, capsys):
    monkeypatch.delenv(LIMIT_ENV, raising=False)
    assert probe_cache_limit() == 256_000_000
    monkeypatch.setenv(LIMIT_ENV, "12.5")
    assert probe_cache_limit() == 12_500_000
    monkeypatch.setenv(LIMIT_ENV, "none")  # eval refuses it before any work
    with pytest.raises(SystemExit):
        main(["eval", "--data", "absent"])
    assert f"{LIMIT_ENV}='none': expected" in capsys.readouterr().err


def test_the_cache_command_imports_no_torch(tmp_path):
    """``cache --help``, ``list`` and ``clear`` read no tensor: torch took them to 2 s or more."""
    folder = tmp_path / "probes"
    write_probe(folder, 0)
    code = (
        "import sys\n"
        "from gym_worldmodel.cli import main\n"
        "for argv in (['cache', '--help'], ['cache', 'list', '--help'], "
        "['cache', 'clear', '--help']):\n"
        "    try:\n"
        "        main(argv)\n"
        "    except SystemExit:\n"
        "        pass\n"
        f"main(['cache', 'list', '--probe-cache', {str(folder)!r}])\n"
        f"main(['cache', 'clear', '--probe-cache', {str(folder)!r}])\n"
        "print('torch' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "--older-than DAYS" in out.stdout and "camera probe, 3 steps" in out.stdout
    assert "removed 1 probe file" in out.stdout and not list(folder.iterdir())
    assert out.stdout.splitlines()[-1] == "False"
