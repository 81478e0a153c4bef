"""A stopped eval goes on where it stopped: rollouts keep their progress and give the same bits."""

from __future__ import annotations

import dataclasses
import os
import signal

import numpy as np
import pytest
from conftest import randomize
from test_evaluation import RevisitSquareSource

from gym_worldmodel import hub
from gym_worldmodel.cli import main
from gym_worldmodel.envs.engine import WorldEngine
from gym_worldmodel.evaluation import resume as resume_mod
from gym_worldmodel.evaluation.open_loop import rollout
from gym_worldmodel.evaluation.revisit import evaluate_revisit
from gym_worldmodel.models import WorldModel, WorldModelConfig
from gym_worldmodel.sources.collect import collect


@pytest.fixture
def model() -> WorldModel:
    return randomize(WorldModel(dataclasses.replace(WorldModelConfig.tiny(), fps=16))).eval()


@pytest.fixture
def every_step(monkeypatch):
    """Progress saved after every step (the default waits minutes between saves)."""
    monkeypatch.setattr(resume_mod, "SAVE_EVERY_S", 0.0)


def stop_at(monkeypatch, call: int, how: str = "raise") -> None:
    """The engines' ``call``-th step (from 1) stops the run: a KeyboardInterrupt, or SIGINT."""
    step, calls = WorldEngine.step, []

    def stopping(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == call:
            if how == "raise":
                raise KeyboardInterrupt
            os.kill(os.getpid(), signal.SIGINT)  # deferred to the step's end
        return step(self, *args, **kwargs)

    monkeypatch.setattr(WorldEngine, "step", stopping)


def inputs(model: WorldModel, rows: int = 2, steps: int = 6):
    """Start frames and 6 steps of camera actions for ``rows`` rows."""
    rng = np.random.default_rng(0)
    size, f = model.config.vae.image_size, model.config.dit.chunk_frames
    start = rng.integers(0, 256, (rows, size, size, 3), dtype=np.uint8)
    actions = rng.uniform(-1, 1, (rows, steps * f, model.config.dit.action_dim)).astype(np.float32)
    return start, actions


@pytest.mark.parametrize("record", ["frames", "stats"])
def test_a_stopped_rollout_goes_on_to_the_same_bits(
    model, tmp_path, monkeypatch, every_step, capsys, record
):
    start, actions = inputs(model)
    whole = rollout(model, "camera", start, actions, 3, record=record)
    with monkeypatch.context() as m:
        stop_at(m, 4)
        with pytest.raises(KeyboardInterrupt):
            rollout(model, "camera", start, actions, 3, record=record, resume=tmp_path)
    (folder,) = tmp_path.iterdir()
    assert folder.name.startswith(f"{record}-") and (folder / "state.pt").is_file()
    calls = []
    step = WorldEngine.step
    monkeypatch.setattr(WorldEngine, "step", lambda *a, **k: calls.append(1) or step(*a, **k))
    again = rollout(model, "camera", start, actions, 3, record=record, resume=tmp_path)
    assert len(calls) == 3  # steps 4-6 only
    assert "going on from step 3 of 6" in capsys.readouterr().err
    assert np.array_equal(again, whole)
    # a finished rollout is read back whole: none of its steps runs again
    capsys.readouterr()
    assert np.array_equal(
        rollout(model, "camera", start, actions, 3, record=record, resume=tmp_path), whole
    )
    assert len(calls) == 3
    assert "all 6 steps read back: a stopped run had finished" in capsys.readouterr().err
    # other inputs (a seed, the weights) are another rollout: their own folder
    rollout(model, "camera", start, actions, 4, record=record, resume=tmp_path)
    other = randomize(WorldModel(model.config), seed=1).eval()
    rollout(other, "camera", start, actions, 3, record=record, resume=tmp_path)
    assert len(list(tmp_path.iterdir())) == 3


def test_a_signal_saves_the_progress_at_the_end_of_its_step(model, tmp_path, monkeypatch, capsys):
    """Ctrl-C (or SIGTERM) ends the step it came in, saves, and stops; the rerun goes on."""
    start, actions = inputs(model)
    whole = rollout(model, "camera", start, actions, 0)
    with monkeypatch.context() as m:
        stop_at(m, 2, how="signal")  # long before the first timed save
        with pytest.raises(KeyboardInterrupt):
            rollout(model, "camera", start, actions, 0, resume=tmp_path)
    err = capsys.readouterr().err
    assert "progress saved at step 2 of 6" in err
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # put back
    assert np.array_equal(rollout(model, "camera", start, actions, 0, resume=tmp_path), whole)
    assert "going on from step 2 of 6" in capsys.readouterr().err


def test_damaged_progress_is_said_removed_and_run_again(
    model, tmp_path, monkeypatch, every_step, capsys
):
    start, actions = inputs(model)
    whole = rollout(model, "camera", start, actions, 0)
    with monkeypatch.context() as m:
        stop_at(m, 4)
        with pytest.raises(KeyboardInterrupt):
            rollout(model, "camera", start, actions, 0, resume=tmp_path)
    (folder,) = tmp_path.iterdir()
    part = sorted(folder.glob("part-*.pt"))[-1]
    data = bytearray(part.read_bytes())
    frames = resume_mod._load(part)["outputs"]["out"].numpy().tobytes()
    at = data.find(frames[:64])  # a flipped byte in the frames it holds: torch reads it
    assert at > 0 and data.find(frames[:64], at + 1) < 0
    data[at + 10] ^= 0xFF
    part.write_bytes(bytes(data))
    calls, step = [], WorldEngine.step
    monkeypatch.setattr(WorldEngine, "step", lambda *a, **k: calls.append(1) or step(*a, **k))
    assert np.array_equal(rollout(model, "camera", start, actions, 0, resume=tmp_path), whole)
    err = capsys.readouterr().err
    assert "does not match its SHA-256" in err and "run again from its start" in err
    assert len(calls) == 6  # from its start: nothing of the damaged progress was used


def test_a_stopped_revisit_benchmark_goes_on_to_the_same_figures(
    model, tmp_path, monkeypatch, every_step, capsys
):
    """Three engines' states (memory on and off, and remembering the recorded frames)."""
    data = tmp_path / "revisit"
    collect(RevisitSquareSource(), data, episodes=4, steps=12, heldout_every=2, progress=False)
    kept = tmp_path / "resume"
    whole = evaluate_revisit(model, data, min_gap=6, progress=False, oracle=True)
    with monkeypatch.context() as m:
        stop_at(m, 5)  # the recorded-frames engine steps after the other: mid step 3
        with pytest.raises(KeyboardInterrupt):
            evaluate_revisit(model, data, min_gap=6, progress=False, oracle=True, resume=kept)
    again = evaluate_revisit(model, data, min_gap=6, progress=False, oracle=True, resume=kept)
    assert dataclasses.asdict(again) == dataclasses.asdict(whole)
    assert "going on from step 2 of" in capsys.readouterr().err  # (not a run from the start)


def test_eval_keeps_its_progress_until_the_report_is_written(
    model, tmp_path, monkeypatch, every_step, capsys
):
    data = tmp_path / "revisit"
    collect(RevisitSquareSource(), data, episodes=4, steps=12, heldout_every=2, progress=False)
    hub.save_pretrained(model, tmp_path / "model")
    out = tmp_path / "out"
    argv = ["eval", "--revisit", "--model", str(tmp_path / "model"), "--data", str(data)]
    argv += ["--min-gap", "6", "--no-progress", "--out", str(out)]
    with monkeypatch.context() as m:
        stop_at(m, 3)
        assert main(argv) == 130
    err = capsys.readouterr().err
    assert f"the progress is kept in {out / '.resume'}/: the same command goes on" in err
    assert main(argv) == 0
    assert "going on from step 2" in capsys.readouterr().err
    assert (out / "revisit.json").is_file() and not (out / ".resume").exists()
    with monkeypatch.context() as m:  # stopped before any rollout saved
        stop_at(m, 1)
        assert main(argv) == 130
    assert "nothing had saved its progress yet" in capsys.readouterr().err


def test_a_save_that_fails_is_said_and_the_rollout_goes_on(
    model, tmp_path, monkeypatch, every_step, capsys
):
    """A full disk costs the progress, not the rollout: the same frames, one note."""
    start, actions = inputs(model)
    whole = rollout(model, "camera", start, actions, 0)

    for failure in (OSError(28, "No space left on device"), RuntimeError("unexpected pos")):

        def failing(path, write, failure=failure):
            raise failure

        monkeypatch.setattr(resume_mod, "atomic_write", failing)
        assert np.array_equal(rollout(model, "camera", start, actions, 0, resume=tmp_path), whole)
        assert capsys.readouterr().err.count("cannot be saved") == 1


def test_parts_other_than_those_the_state_names_are_refused(
    model, tmp_path, monkeypatch, every_step, capsys
):
    """A part of another run of the same rollout (two evals in one folder) is not read as ours."""
    start, actions = inputs(model)
    whole = rollout(model, "camera", start, actions, 0)
    for stop, root in ((4, tmp_path / "a"), (3, tmp_path / "b")):
        with monkeypatch.context() as m:
            stop_at(m, stop)
            with pytest.raises(KeyboardInterrupt):
                rollout(model, "camera", start, actions, 0, resume=root)
    (a,), (b,) = (tmp_path / "a").iterdir(), (tmp_path / "b").iterdir()
    assert a.name == b.name  # the same rollout
    (b / "part-000001.pt").write_bytes((a / "part-000000.pt").read_bytes())  # a valid file
    assert np.array_equal(rollout(model, "camera", start, actions, 0, resume=b.parent), whole)
    assert "part-000001.pt is not the part its state names" in capsys.readouterr().err


def test_one_rollout_is_run_by_one_process_and_clear_removes_only_its_own(model, tmp_path):
    from gym_worldmodel.evaluation.resume import RolloutProgress, clear

    start, actions = inputs(model)
    engine = WorldEngine(model, 2, "camera")
    args = (tmp_path, "frames", model, {"engine": engine}, {"seed": 0}, 6)
    with RolloutProgress(*args):
        with pytest.raises(ValueError, match="another process is writing this rollout's progress"):
            RolloutProgress(*args).__enter__()
    others = tmp_path / "frames-0123456789abcdef"  # another eval's, into the same folder
    others.mkdir()
    rollout(model, "camera", start, actions, 0, resume=tmp_path)
    assert len(list(tmp_path.iterdir())) == 3
    clear(tmp_path)
    assert list(tmp_path.iterdir()) == [others]
    others.rmdir()
    clear(tmp_path)  # an empty resume folder goes too
    assert not tmp_path.exists()
