"""Training core on tiny models: windows, losses going down, exact resume, recipes end to end."""

from __future__ import annotations

import dataclasses
import functools
import json
import shutil
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import randomize, self_forcing_case

from gym_worldmodel import hub
from gym_worldmodel.cli import train_main
from gym_worldmodel.memory import GEOMETRIES
from gym_worldmodel.models import WorldModel, WorldModelConfig
from gym_worldmodel.models.dit import move_frames, sequence_anchors
from gym_worldmodel.sources.collect import collect
from gym_worldmodel.sources.episodes import DatasetError, Episode, read_card
from gym_worldmodel.training.data import Balanced, ChunkWindows, Frames
from gym_worldmodel.training.distill import DistillConfig
from gym_worldmodel.training.fitting import fit
from gym_worldmodel.training.losses import (
    TeacherLossConfig,
    VAELossConfig,
    motion_focus_weights,
    teacher_loss,
    vae_loss,
)
from gym_worldmodel.training.recipes import (
    train_decoder,
    train_flow,
    train_self_forcing,
    train_student,
    train_teacher,
    train_vae,
)
from gym_worldmodel.training.self_forcing import (
    SelfForcingConfig,
    chunk_motion,
    chunk_shift,
    self_forcing_loss,
)
from gym_worldmodel.training.trainer import (
    TrainConfig,
    Trainer,
    fingerprint,
    host_floats,
    interrupt_after_step,
    plotted_keys,
    to_device,
)


def moving_square_episode(seed: int, steps: int = 12, size: int = 32) -> Episode:
    """A square that the first action component moves right or left: learnable dynamics."""
    rng = np.random.default_rng(seed)
    actions = np.zeros((steps, 12), np.float32)
    actions[:, 0] = rng.choice([-1.0, 1.0], steps)
    x = np.concatenate([[8], 8 + np.cumsum(actions[:, 0] * 2)]).clip(0, size - 8).astype(int)
    frames = np.full((steps + 1, size, size, 3), 40, np.uint8)
    for t, xt in enumerate(x):
        frames[t, 12:20, xt : xt + 8] = (230, 180, 60)
    return Episode(frames, actions, None, seed)


class SquareSource:
    info = {
        "source": "squares",
        "world": "citywalk",
        "modality": "camera",
        "frame_size": 32,
        "fps": 16,
        "action_width": 12,
        "pose_fields": [],
    }

    def rollout(self, seed: int, steps: int) -> Episode:
        return moving_square_episode(seed, steps)


@pytest.fixture
def episodes():
    return [moving_square_episode(s) for s in range(4)]


def test_windows_mirror_a_reset_then_steps(episodes):
    windows = ChunkWindows(episodes, chunk_frames=2, n_chunks=3, action_dim=13, modality=0)
    item = windows[5]
    e, s = windows.index[5]
    frames, actions = item["frames"].numpy(), item["actions"].numpy()
    assert frames.shape == (6, 32, 32, 3) and actions.shape == (6, 13)
    assert np.array_equal(frames[0], episodes[e].frames[s])  # the sink: start frame repeated
    assert np.array_equal(frames[1], episodes[e].frames[s])
    assert not actions[:2].any()  # null actions on the sink
    assert np.array_equal(frames[2:], episodes[e].frames[s + 1 : s + 5])
    assert np.array_equal(actions[2:, :12], episodes[e].actions[s : s + 4])  # action t -> t + 1
    assert len(windows) == 4 * (13 - 4)


def test_memory_windows_carry_the_earlier_chunk_that_sees_each_chunks_view(episodes):
    """Frames 0-2 and 9-12 look east, 3-8 west. The window of frames 5..9 (the sink frame 5)
    retrieves for its chunk ending at frame 7 (west) the chunk ending at frame 3, the first
    west view before the window, and for its chunk ending at frame 9 (east) the one ending at
    frame 1; the window of frames 3..7 (all west, nothing west before it) has no memory."""
    yaw = np.where((np.arange(13) >= 3) & (np.arange(13) <= 8), 180.0, 0.0)
    poses = np.stack([np.zeros(13), np.zeros(13), yaw, np.zeros(13)], 1)
    ep = dataclasses.replace(episodes[0], poses=poses)
    windows = ChunkWindows([ep], 2, 3, 13, 0, memory=GEOMETRIES["camera"])
    hit = windows[windows.index.index((0, 5))]
    assert hit["memory_frames"].shape == (2, 2, 32, 32, 3)  # one per generated chunk
    assert hit["memory_valid"].tolist() == [True, True]
    assert np.array_equal(hit["memory_frames"][0], ep.frames[2:4])
    assert np.array_equal(hit["memory_frames"][1], ep.frames[0:2])
    miss = windows[windows.index.index((0, 3))]
    assert miss["memory_valid"].tolist() == [False, False] and not miss["memory_frames"].any()
    with pytest.raises(ValueError, match="by pose"):
        ChunkWindows([ep], 2, 3, 13, 0, memory=GEOMETRIES["robot"])
    # with a gap, a chunk's memory ends that many frames before its last frame, or is none
    for gap, valid in ((8, True), (9, False)):  # the chunk ending at frame 1 is 8 before 9
        far = ChunkWindows([ep], 2, 3, 13, 0, memory=GEOMETRIES["camera"], memory_gap=gap)
        assert far[far.index.index((0, 5))]["memory_valid"].tolist() == [False, valid]
    with pytest.raises(ValueError, match="memory_gap must be >= 0"):
        ChunkWindows([ep], 2, 3, 13, 0, memory=GEOMETRIES["camera"], memory_gap=-1)


def test_windows_of_a_world_moving_with_the_car_carry_the_recorded_shift(episodes):
    """The scene shift columns follow the recorded poses: 2 px per metre forward is dx."""
    poses = np.zeros((13, 4))
    poses[:, 0] = 1.5 * np.arange(13)  # 1.5 m a frame along +x
    poses[:, 1] = np.where(np.arange(13) > 6, 0.5, 0.0)  # and half a metre up at frame 7
    ep = dataclasses.replace(episodes[0], actions=episodes[0].actions[:, :2], poses=poses)
    windows = ChunkWindows([ep], 2, 3, 13, 2, ego_px_per_m=2.0)
    item = windows[windows.index.index((0, 4))]  # frames 4..8 after the sink
    actions = item["actions"].numpy()
    assert not actions[:2].any() and np.array_equal(actions[2:, :2], ep.actions[4:8])
    np.testing.assert_allclose(actions[2:, 2], 3.0)
    np.testing.assert_allclose(actions[2:, 3], [0.0, 0.0, -1.0, 0.0])  # frame 7: scene down
    assert not actions[:, 4:].any()
    with pytest.raises(DatasetError, match="recorded poses"):
        ChunkWindows([dataclasses.replace(ep, poses=None)], 2, 3, 13, 2, ego_px_per_m=2.0)
    with pytest.raises(DatasetError, match="shift columns"):
        ChunkWindows(
            [dataclasses.replace(ep, actions=episodes[0].actions)], 2, 3, 13, 2, ego_px_per_m=2.0
        )


def test_teacher_loss_with_memory_reads_the_memory(episodes):
    model = WorldModel(WorldModelConfig.tiny())
    randomize(model.dit)
    gen = torch.Generator().manual_seed(0)
    side = model.config.dit.latent_size
    latents = torch.randn(2, 6, 4, side, side, generator=gen)
    actions, modality = torch.zeros(2, 6, 13), torch.zeros(2, dtype=torch.long)
    memory = torch.randn(2, 2, 4, side, side, generator=gen)
    lc = TeacherLossConfig()

    def loss(**kw):
        return teacher_loss(
            model.dit, latents, actions, modality, torch.Generator().manual_seed(1), lc, **kw
        )[0]

    plain, off = loss(), loss(memory=memory, memory_valid=torch.tensor([False, False]))
    on = loss(memory=memory, memory_valid=torch.tensor([True, True]))
    assert torch.allclose(plain, off, atol=1e-6) and not torch.allclose(plain, on)
    on.backward()
    assert all(p.grad is not None for p in model.dit.parameters() if p.requires_grad)


def test_memory_only_rows_see_nothing_but_the_memory(episodes, monkeypatch, capsys):
    """With ``memory_only=1`` every row with a real memory has its history at level 1 (pure
    noise): its history latents no longer reach the model; a row without memory keeps its levels."""
    model = WorldModel(WorldModelConfig.tiny())
    randomize(model.dit)
    side, f = model.config.dit.latent_size, model.config.dit.chunk_frames
    gen = torch.Generator().manual_seed(0)
    latents = torch.randn(2, 3 * f, 4, side, side, generator=gen)
    actions, modality = torch.zeros(2, 3 * f, 13), torch.zeros(2, dtype=torch.long)
    memory = torch.randn(2, f, 4, side, side, generator=gen)
    seen = {}

    def spy(x, t, *args, **kw):
        seen["x"], seen["t"] = x, t
        return torch.zeros_like(x)

    monkeypatch.setattr(model.dit, "forward_sequence", spy)

    def inputs(config, history):
        lat = latents.clone()
        lat[:, : 2 * f] = history
        teacher_loss(
            model.dit,
            lat,
            actions,
            modality,
            torch.Generator().manual_seed(1),
            config,
            memory=memory,
            memory_valid=torch.tensor([True, False]),
        )
        return seen["x"].clone(), seen["t"].clone()

    only = TeacherLossConfig(memory_only=1.0)
    x_a, t_a = inputs(only, torch.zeros(2, 2 * f, 4, side, side))
    x_b, _ = inputs(only, torch.ones(2, 2 * f, 4, side, side))
    assert (t_a[0, :-1] == 1.0).all() and (t_a[1, :-1] < 1.0).all()
    assert torch.equal(x_a[0], x_b[0])  # the masked row: history does not reach the model
    assert not torch.equal(x_a[1], x_b[1])  # the row without memory still sees its history
    _, t_plain = inputs(TeacherLossConfig(), torch.zeros(2, 2 * f, 4, side, side))
    assert (t_plain[:, :-1] < 1.0).all()
    with pytest.raises(ValueError, match="needs memory"):
        train_teacher([], None, None, TrainConfig(steps=1), memory_only=0.5)
    with pytest.raises(ValueError, match="needs memory"):
        train_teacher([], None, None, TrainConfig(steps=1), loss_config=only)
    with pytest.raises(ValueError, match="set them there"):  # was dropped without a word
        train_teacher([], None, None, TrainConfig(steps=1), loss_config=only, memory_only=0.5)
    argv = ["teacher", "--data", "d", "--out", "o", "--init", "i", "--memory-only", "0.5"]
    with pytest.raises(SystemExit):
        train_main(argv)
    assert "--memory-only needs --memory" in capsys.readouterr().err
    with pytest.raises(ValueError, match="memory_gap .* needs memory=True"):
        train_self_forcing([], None, None, TrainConfig(steps=1), memory_gap=250)
    for argv, message in (
        (["--memory-gap", "250"], "--memory-gap needs --memory"),
        (["--memory", "--memory-gap", "-5"], "--memory-gap: must be an int >= 0"),
        # (a probe's steps without the probe: recorded in run.json, they refused a resume)
        (["--probe-steps", "100"], "--probe-steps sets the action probe's steps: it needs --act"),
    ):
        with pytest.raises(SystemExit):
            train_main(["self-forcing", "--data", "d", "--out", "o", "--init", "i", *argv])
        assert message in capsys.readouterr().err
    argv = ["student", "--data", "d", "--out", "o", "--init", "i", "--anchor-sigma", "0.5"]
    with pytest.raises(SystemExit):
        train_main(argv)
    assert "is an option of train teacher, not of" in capsys.readouterr().err


def recorded_calls(monkeypatch, recipe: str) -> list[tuple[tuple, dict]]:
    """``recipes.<recipe>`` replaced by a recorder of its calls (its arguments), nothing run.

    The recorder keeps the recipe's signature: ``train`` reads some defaults from its keywords.
    """
    from gym_worldmodel.training import recipes

    calls: list[tuple[tuple, dict]] = []
    record = functools.wraps(getattr(recipes, recipe))(lambda *a, **k: calls.append((a, k)))
    monkeypatch.setattr(recipes, recipe, record)
    return calls


def test_train_student_hands_its_distillation_options_to_the_recipe(monkeypatch, capsys):
    """``--teacher-nfe``, ``--gt-weight`` and ``--teacher-memory-guidance`` reach
    ``train_student`` as its ``DistillConfig``; a scale out of range is refused by name."""
    calls = recorded_calls(monkeypatch, "train_student")
    argv = ["student", "--data", "d", "--out", "o", "--init", "i"]
    guided = ["--memory", "--teacher-memory-guidance", "2"]
    train_main([*argv, "--teacher-nfe", "1", "--gt-weight", "0", *guided])
    (_, kwargs) = calls[0]
    assert kwargs["distill"] == DistillConfig(
        teacher_nfe=1, gt_weight=0.0, teacher_memory_guidance=2.0
    )
    with pytest.raises((SystemExit, ValueError), match="teacher_memory_guidance must be in"):
        train_main([*argv, "--memory", "--teacher-memory-guidance", "1000"])
    with pytest.raises(SystemExit):  # without memory the guidance has nothing to lean on
        train_main([*argv, "--teacher-memory-guidance", "2"])
    assert "--teacher-memory-guidance needs --memory" in capsys.readouterr().err
    assert len(calls) == 1


def test_a_budget_self_forcing_run_trains_its_probe_20_steps_only_when_it_has_one(monkeypatch):
    """Without --action-weight there is no probe: its steps stay the default, so the run
    extends with --steps N --batch-size 4 as the other stages do."""
    from gym_worldmodel.cli.train import _run_stage, _train_parser

    seen = recorded_calls(monkeypatch, "train_self_forcing")
    argv = ["self-forcing", "--data", "d", "--out", "o", "--init", "i", "--budget"]
    for extra in ([], ["--action-weight", "0.2"]):
        _run_stage(_train_parser()[0].parse_args([*argv, *extra]), TrainConfig(), progress=False)
    assert [kw["probe_steps"] for _, kw in seen] == [600, 20]


def test_the_latent_action_probe_trains_on_its_own_batch_rate_and_schedule():
    """A self-forcing run's probe: batches of 64 at lr 1e-3 (the values before they were named),
    50 warm-up steps or all of a shorter run's, a 20% cool-down, one checkpoint at its end; the
    run's own seed, dtype and device."""
    from gym_worldmodel.training.action_probe import probe_train_config

    train = TrainConfig(steps=800, batch_size=8, lr=3e-4, save_every=10, seed=5, dtype="bfloat16")
    probe = probe_train_config(train, 600)
    settings = (probe.steps, probe.batch_size, probe.lr, probe.warmup, probe.cooldown)
    assert settings == (600, 64, 1e-3, 50, 0.2) and probe.save_every == 600
    assert (probe.seed, probe.dtype, probe.device) == (5, "bfloat16", "cpu")
    assert probe_train_config(train, 20).warmup == 20


def test_an_unknown_or_absent_training_device_is_a_usage_error(monkeypatch):
    argv = ["teacher", "--data", "d", "--out", "o", "--init", "i", "--device"]
    with pytest.raises(SystemExit, match="--device takes a torch device"):
        train_main([*argv, "gpu"])
    if not torch.cuda.is_available():
        with pytest.raises(SystemExit, match="no CUDA device is available"):
            train_main([*argv, "cuda"])
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(SystemExit, match="cuda:3: this machine has 1 CUDA device"):
        train_main([*argv, "cuda:3"])


def run_steps(module, dataset, loss_fn, tmp_path, steps, name="run", **cfg):
    defaults = {"batch_size": 4, "lr": 2e-3, "warmup": 1, "save_every": 3}
    config = TrainConfig(steps=steps, **{**defaults, **cfg})
    return Trainer(module, dataset, loss_fn, tmp_path / name, config).train(progress=False)


def test_vae_loss_goes_down(episodes, tmp_path):
    torch.manual_seed(0)  # the weights: not whatever the tests before left the generator at
    vae = WorldModel(WorldModelConfig.tiny()).vae
    history = run_steps(
        vae, Frames(episodes), lambda b, g: vae_loss(vae, b, g, VAELossConfig()), tmp_path, 40
    )
    first, last = (
        np.mean([h["loss"] for h in history[:5]]),
        np.mean([h["loss"] for h in history[-5:]]),
    )
    assert last < 0.7 * first


def test_teacher_loss_goes_down(episodes, tmp_path):
    torch.manual_seed(0)  # the weights: not whatever the tests before left the generator at
    model = WorldModel(WorldModelConfig.tiny())
    model.vae.requires_grad_(False)
    windows = ChunkWindows(episodes, 2, 4, 13, 0)
    lc = TeacherLossConfig()

    def loss(batch, gen):
        with torch.no_grad():
            latents = model.vae.encode(batch["frames"])
        return teacher_loss(model.dit, latents, batch["actions"], batch["modality"], gen, lc)

    history = run_steps(model.dit, windows, loss, tmp_path, 40)
    first, last = (
        np.mean([h["flow"] for h in history[:5]]),
        np.mean([h["flow"] for h in history[-5:]]),
    )
    assert last < 0.85 * first  # 0.73-0.76 for seeds 0-5 here; about 1 if nothing is learned
    assert all(np.isfinite(h["grad_norm"]) for h in history)


def test_balanced_draws_each_dataset_equally_often():
    small, large = list(range(3)), list(range(100, 110))
    both = Balanced([small, large])
    assert len(both) == 20
    items = [both[i] for i in range(len(both))]
    assert sorted(x for x in items if x >= 100) == large
    assert sorted(x for x in items if x < 100) == sorted(small * 3 + small[:1])  # 10 of 3 items
    with pytest.raises(DatasetError, match="empty"):
        Balanced([small, []])


def test_balanced_by_modality_draws_each_world_equally_often(episodes):
    city = ChunkWindows(episodes, 2, 3, 13, modality=0)
    rooms = ChunkWindows(episodes[:1], 2, 3, 13, modality=0)
    robot = ChunkWindows(episodes[:1], 2, 3, 13, modality=1)
    both = Balanced.by_modality(torch.utils.data.ConcatDataset([city, rooms, robot]))
    drawn = [int(both[i]["modality"]) for i in range(len(both))]
    assert drawn.count(0) == drawn.count(1) == len(city) + len(rooms)
    # within a modality its datasets stay in proportion: each camera window comes up once
    camera = torch.utils.data.ConcatDataset([city, rooms])
    shown = [both[i]["frames"] for i in range(len(both)) if drawn[i] == 0]
    assert all(torch.equal(a, camera[j]["frames"]) for j, a in enumerate(shown))


def test_the_loss_plot_draws_losses_only():
    """Self-forcing's own-chunk count on a log axis, a term weighted 0, the gradient norm and a
    part that is the whole loss are no curves of their own."""
    history = [
        {"loss": 1.0 / s, "flow": 0.9 / s, "action": 0.0, "own_chunks": s % 3, "grad_norm": 2.0}
        for s in range(1, 5)
    ]
    assert plotted_keys(history) == ["loss", "flow"]
    assert plotted_keys([{"loss": 0.5, "vae": 0.5}] * 3) == ["loss"]
    assert plotted_keys([]) == []


def test_resume_is_exact(episodes, tmp_path, capsys):
    def make():
        torch.manual_seed(0)
        vae = WorldModel(WorldModelConfig.tiny()).vae
        return vae, (lambda b, g: vae_loss(vae, b, g, VAELossConfig()))

    straight, fn = make()
    full = run_steps(straight, Frames(episodes), fn, tmp_path, 6, name="straight")
    first, fn = make()
    run_steps(first, Frames(episodes), fn, tmp_path, 3, name="resumed")  # checkpoint at step 3
    capsys.readouterr()
    resumed, fn = make()  # a fresh process: new module, same directory
    history = run_steps(resumed, Frames(episodes), fn, tmp_path, 6, name="resumed")
    assert history == full
    assert capsys.readouterr().out.startswith("resumed: resuming at step 3/6\n")  # (a log's)
    for a, b in zip(straight.state_dict().values(), resumed.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    assert (tmp_path / "resumed" / "losses.png").stat().st_size > 1000


@pytest.mark.parametrize("sent", ["SIGINT", "SIGTERM"])
def test_ctrl_c_writes_a_checkpoint_after_its_step_and_the_run_resumes_exactly(
    episodes, tmp_path, request, sent
):
    """SIGINT (Ctrl-C) or SIGTERM (``timeout``, ``kill``, a job scheduler) mid-step, between
    two checkpoints: the step ends, is saved, the run stops."""
    import os
    import signal

    # Python's own handler, as an interactive run has it: pytest started as a background job
    # inherits SIGINT ignored, which a run leaves alone (the test below); SIGTERM's default
    usual = {"SIGINT": signal.default_int_handler, "SIGTERM": signal.SIG_DFL}[sent]
    sig = getattr(signal, sent)
    previous = signal.signal(sig, usual)
    request.addfinalizer(lambda: signal.signal(sig, previous))

    def make(interrupt_at=None):
        torch.manual_seed(0)
        vae = WorldModel(WorldModelConfig.tiny()).vae
        calls = []

        def fn(batch, gen):
            calls.append(1)
            if len(calls) == interrupt_at:  # as Ctrl-C lands: inside the step's loss
                os.kill(os.getpid(), sig)
            return vae_loss(vae, batch, gen, VAELossConfig())

        return vae, fn

    straight, fn = make()
    full = run_steps(straight, Frames(episodes), fn, tmp_path, 8, name="straight", save_every=5)
    cut, fn = make(interrupt_at=2)
    with pytest.raises(KeyboardInterrupt):
        run_steps(cut, Frames(episodes), fn, tmp_path, 8, name="cut", save_every=5)
    saved = torch.load(tmp_path / "cut" / "checkpoint.pt", weights_only=True)
    assert saved["step"] == 2  # the step it came in, whole; no checkpoint was due until 5
    assert signal.getsignal(sig) is usual  # handler given back
    resumed, fn = make()
    assert run_steps(resumed, Frames(episodes), fn, tmp_path, 8, name="cut", save_every=5) == full
    for a, b in zip(straight.state_dict().values(), resumed.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_an_interrupted_train_says_whether_it_resumes(tmp_path, monkeypatch, capsys):
    """Stopped before its first checkpoint, the run leaves nothing to resume: the command says
    it starts again; stopped after one, that it resumes."""
    from gym_worldmodel import cli
    from gym_worldmodel.training import recipes

    collect(SquareSource(), tmp_path / "data", episodes=3, steps=10, progress=False)
    loss, calls = recipes.vae_loss, []

    def stopped_at_step_2(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt("stopped")
        return loss(*args, **kwargs)

    monkeypatch.setattr(recipes, "vae_loss", stopped_at_step_2)
    argv = ["train", "vae", "--data", str(tmp_path / "data"), "--preset", "tiny", "--steps", "4"]
    argv += ["--batch-size", "2", "--no-progress", "--out", str(tmp_path / "vae")]
    for save_every, said in (
        ("4", "nothing was checkpointed yet"),
        ("1", "run the same command again to resume"),
    ):
        calls.clear()
        assert cli.main([*argv, "--save-every", save_every]) == 130
        assert f"train: interrupted; {said}" in capsys.readouterr().err


def test_a_signal_during_the_last_checkpoint_still_stops_the_recipe(episodes, tmp_path, request):
    """SIGTERM while the last step's checkpoint is written (the model, the plot: often the
    slowest part) stops the run once that checkpoint is whole, rather than being swallowed,
    which let a two-stage recipe go on to its next stage; Ctrl-C then SIGTERM stops at once."""
    import os
    import signal

    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    request.addfinalizer(lambda: signal.signal(signal.SIGINT, previous))
    vae = WorldModel(WorldModelConfig.tiny()).vae
    fn = lambda b, g: vae_loss(vae, b, g, VAELossConfig())  # noqa: E731
    config = TrainConfig(steps=2, batch_size=4, warmup=1, save_every=1)
    saves = []

    def on_save():
        saves.append(1)
        if len(saves) == 2:  # the last step's
            os.kill(os.getpid(), signal.SIGTERM)

    trainer = Trainer(vae, Frames(episodes), fn, tmp_path / "run", config, on_save=on_save)
    with pytest.raises(KeyboardInterrupt):
        trainer.train(progress=False)
    assert torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)["step"] == 2
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
    with interrupt_after_step():  # the first signal is deferred; a second, of either kind, not
        os.kill(os.getpid(), signal.SIGINT)
        assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_a_run_leaves_sigint_alone_where_it_is_not_pythons_own(episodes, tmp_path):
    """Ignored (a background job) or the caller's handler: not replaced, not restored wrongly."""
    import signal
    import threading

    vae = WorldModel(WorldModelConfig.tiny()).vae
    fn = lambda b, g: vae_loss(vae, b, g, VAELossConfig())  # noqa: E731
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        run_steps(vae, Frames(episodes), fn, tmp_path, 2, name="ignored")
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    errors = []  # in another thread (no handler can be set there) it trains as it did

    def train():
        try:
            run_steps(vae, Frames(episodes), fn, tmp_path, 2, name="thread")
        except Exception as err:  # noqa: BLE001 - reported below
            errors.append(err)

    thread = threading.Thread(target=train)
    thread.start()
    thread.join()
    assert errors == [] and (tmp_path / "thread" / "checkpoint.pt").is_file()


def test_a_run_without_matplotlib_trains_and_saves_with_a_warning(episodes, tmp_path, monkeypatch):
    import importlib.util

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda n, *a: None if n == "matplotlib" else find_spec(n, *a)
    )
    vae = WorldModel(WorldModelConfig.tiny()).vae
    with pytest.warns(UserWarning, match=r"no loss plot \(losses.png\): matplotlib is not"):
        history = run_steps(
            vae,
            Frames(episodes),
            lambda b, g: vae_loss(vae, b, g, VAELossConfig()),
            tmp_path,
            2,
            name="r",
        )
    assert len(history) == 2 and (tmp_path / "r" / "checkpoint.pt").is_file()
    assert not (tmp_path / "r" / "losses.png").exists()
    assert json.loads((tmp_path / "r" / "losses.json").read_text()) == history


def test_a_stopped_run_leaves_its_last_checkpoint_as_a_loadable_model(episodes, tmp_path):
    model = WorldModel(WorldModelConfig.tiny())
    model.vae.requires_grad_(False)
    windows = ChunkWindows(episodes, 2, 4, 13, 0)
    lc = TeacherLossConfig()
    calls = []

    def loss(batch, gen):
        calls.append(1)
        if len(calls) == 5:  # the job is killed during step 5; steps 1-3 were checkpointed
            raise KeyboardInterrupt
        with torch.no_grad():
            latents = model.vae.encode(batch["frames"])
        return teacher_loss(model.dit, latents, batch["actions"], batch["modality"], gen, lc)

    train = TrainConfig(steps=6, batch_size=4, lr=2e-3, warmup=1, save_every=3)
    with pytest.raises(KeyboardInterrupt):
        fit(model, windows, loss, tmp_path / "run", train, progress=False)
    state = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)
    assert state["step"] == 3
    written = hub.from_pretrained(tmp_path / "run" / "model")
    for key, value in state["module"].items():
        assert torch.equal(written.dit.state_dict()[key], value), key
    assert not torch.equal(written.dit.state_dict()["out.weight"], model.dit.out.weight)


def vae_run(episodes, tmp_path):
    """A tiny VAE trained 3 steps in ``tmp_path / "run"``: its module, loss and checkpoint."""
    vae = WorldModel(WorldModelConfig.tiny()).vae
    fn = lambda b, g: vae_loss(vae, b, g, VAELossConfig())  # noqa: E731
    run_steps(vae, Frames(episodes), fn, tmp_path, 3)
    return vae, fn, tmp_path / "run" / "checkpoint.pt"


def test_corrupt_checkpoint_is_a_clear_error(episodes, tmp_path):
    vae, fn, ckpt = vae_run(episodes, tmp_path)
    ckpt.write_bytes(ckpt.read_bytes()[:100])
    with pytest.raises(ValueError, match="cannot be read as a checkpoint: damaged, truncated"):
        run_steps(vae, Frames(episodes), fn, tmp_path, 6)


def test_an_altered_checkpoint_is_refused_and_left_as_it_was(episodes, tmp_path):
    vae, fn, ckpt = vae_run(episodes, tmp_path)
    state = torch.load(ckpt, weights_only=True)
    exp_avg_sq = next(v for v in state["optimizer"]["state"].values())["exp_avg_sq"]
    exp_avg_sq.view(-1)[0] += 1.0  # one value changed, as a flipped byte would
    torch.save(state, ckpt)
    before = ckpt.read_bytes()
    with pytest.raises(ValueError, match="does not match its SHA-256"):
        run_steps(vae, Frames(episodes), fn, tmp_path, 6)
    assert ckpt.read_bytes() == before


def test_a_run_resumes_on_the_device_type_it_started_on(episodes, tmp_path):
    vae, fn, ckpt = vae_run(episodes, tmp_path)
    state = torch.load(ckpt, weights_only=True)
    assert state["device"] == "cpu"
    moved = {k: v for k, v in state.items() if k != "sha256"} | {"device": "cuda"}
    torch.save({**moved, "sha256": fingerprint(moved)}, ckpt)  # as a run started on a GPU would
    before = {k: v.clone() for k, v in vae.state_dict().items()}
    with torch.no_grad():
        for v in vae.parameters():
            v.add_(1.0)  # the module differs from the checkpoint: a refused resume leaves it so
    moved = {k: v.clone() for k, v in vae.state_dict().items()}
    with pytest.raises(ValueError, match="trained on cuda: resume it there"):
        run_steps(vae, Frames(episodes), fn, tmp_path, 6)
    assert all(torch.equal(v, moved[k]) for k, v in vae.state_dict().items())
    assert not all(torch.equal(v, before[k]) for k, v in moved.items())
    assert torch.load(ckpt, weights_only=True)["step"] == 3  # the checkpoint is left as it was


def test_a_nan_gradient_stops_the_run_before_it_reaches_the_weights(tmp_path):
    """A finite loss can still give a NaN gradient; clipping by its norm would NaN every weight
    and the next checkpoint would overwrite the good one."""
    net = torch.nn.Linear(1, 1)
    calls = []

    def loss(batch, gen):
        calls.append(1)
        if len(calls) == 2:  # sqrt'(0) is inf, times 0: a NaN gradient under a loss of 0
            return torch.sqrt(net.weight.sum() * 0.0), {}
        return (net(batch.float()[:, None]) ** 2).mean(), {}

    config = TrainConfig(steps=4, batch_size=2, warmup=1, save_every=1)
    with pytest.raises(FloatingPointError, match="gradient norm is nan at step 1.*is intact"):
        Trainer(net, list(range(8)), loss, tmp_path / "run", config).train(progress=False)
    state = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)
    assert state["step"] == 1 and all(v.isfinite().all() for v in state["module"].values())
    assert all(p.isfinite().all() for p in net.parameters())
    calls[:] = [1]  # NaN at the first step, before any checkpoint: the message says so
    with pytest.raises(FloatingPointError, match="no checkpoint was written yet"):
        Trainer(net, list(range(8)), loss, tmp_path / "fresh", config).train(progress=False)


def test_a_run_deletes_the_temporary_files_a_killed_run_left(tmp_path):
    import os

    run = tmp_path / "run"
    (run / "model").mkdir(parents=True)
    stale = [run / ".checkpoint.pt.x1y2_a9z.tmp", run / "model" / ".model.safetensors.k2l3m4n5.tmp"]
    live = run / ".losses.png.p0q1r2s3.tmp"  # another job writing into the folder right now
    kept = [run / "notes.tmp", run / ".hidden.tmp", live]  # not atomic_write's, or not stale
    for path in stale + kept:
        path.write_bytes(b"half written")
    for path in stale + kept[:2]:
        os.utime(path, (0, 0))  # untouched for long
    Trainer(
        torch.nn.Linear(1, 1),
        list(range(4)),
        lambda b, g: (b.sum() * 0, {}),
        run,
        TrainConfig(steps=1, batch_size=2),
    )
    assert not any(p.exists() for p in stale) and all(p.exists() for p in kept)


def test_a_run_resumed_with_other_settings_or_data_is_refused(episodes, tmp_path):
    vae = WorldModel(WorldModelConfig.tiny()).vae
    fn = lambda b, g: vae_loss(vae, b, g, VAELossConfig())  # noqa: E731
    run_steps(vae, Frames(episodes), fn, tmp_path, 3)
    with pytest.raises(ValueError, match=r"other settings \(batch_size 4 -> 8"):
        config = TrainConfig(steps=6, batch_size=8, lr=2e-3, warmup=1, save_every=3)
        Trainer(vae, Frames(episodes), fn, tmp_path / "run", config)
    with pytest.raises(ValueError, match="training items"):
        run_steps(vae, Frames(episodes[:1]), fn, tmp_path, 6)
    history = run_steps(vae, Frames(episodes), fn, tmp_path, 9)  # the same run, longer: fine
    assert len(history) == 9
    # the CLI's warm-up grows with --steps: a run past both warm-ups may grow, one inside not
    history = run_steps(vae, Frames(episodes), fn, tmp_path, 12, warmup=2)
    assert len(history) == 12
    run_steps(vae, Frames(episodes), fn, tmp_path, 3, name="young", warmup=5)
    with pytest.raises(ValueError, match=r"warmup 5 -> 6"):
        run_steps(vae, Frames(episodes), fn, tmp_path, 6, name="young", warmup=6)


def test_more_steps_resume_a_run_only_before_its_cool_down(episodes, tmp_path, capsys):
    """The learning rate's cool-down is tied to the step count: a run whose steps so far ran at
    the new count's rates may grow; one whose rate had begun to fall is refused, unchanged."""
    vae = WorldModel(WorldModelConfig.tiny()).vae
    fn = lambda b, g: vae_loss(vae, b, g, VAELossConfig())  # noqa: E731
    # 4 steps, a cool-down of 1 step that no step reached (the last ran at the full rate)
    run_steps(vae, Frames(episodes), fn, tmp_path, 4, name="stable", cooldown=0.25)
    assert len(run_steps(vae, Frames(episodes), fn, tmp_path, 8, name="stable", cooldown=0.25)) == 8
    run_steps(vae, Frames(episodes), fn, tmp_path, 4, name="cooled", cooldown=0.5)
    before = (tmp_path / "cooled" / "checkpoint.pt").read_bytes()
    with pytest.raises(ValueError, match=r"steps 4 -> 8\) \(its learning rate's cool-down had"):
        run_steps(vae, Frames(episodes), fn, tmp_path, 8, name="cooled", cooldown=0.5)
    assert (tmp_path / "cooled" / "checkpoint.pt").read_bytes() == before
    capsys.readouterr()
    run_steps(vae, Frames(episodes), fn, tmp_path, 4, name="cooled", cooldown=0.5)  # as it was
    assert "nothing to train (its learning rate has cooled down to 0: go on from its model" in (
        capsys.readouterr().out
    )


def test_a_recipe_resumes_only_under_the_same_call(tmp_path, capsys):
    """The trainer compares its settings and item count; the recipe compares the rest: another
    dataset of as many items, another model config or an added flag is refused, unchanged."""
    for name, seed in (("data", 0), ("other", 100)):
        collect(SquareSource(), tmp_path / name, episodes=3, steps=10, seed=seed, progress=False)
    train = TrainConfig(steps=2, batch_size=2, warmup=1, save_every=2)
    config = dataclasses.replace(WorldModelConfig.tiny(), fps=16)
    run = tmp_path / "vae"
    train_vae([tmp_path / "data"], run, config, train, progress=False)
    record = (run / "run.json").read_text()
    before = (run / "checkpoint.pt").read_bytes()
    assert json.loads(record)["settings"]["batch_size"] == 2 and "command" in json.loads(record)
    other_vae = dataclasses.replace(config.vae, channels=(8, 8))
    for data, cfg, match in (
        ([tmp_path / "other"], config, "data"),
        ([tmp_path / "data"], dataclasses.replace(config, vae=other_vae), "config"),
    ):
        with pytest.raises(ValueError, match=rf"holds a checkpoint of another call \({match}"):
            train_vae(data, run, cfg, dataclasses.replace(train, steps=4), progress=False)
    assert (run / "run.json").read_text() == record
    assert (run / "checkpoint.pt").read_bytes() == before
    train_vae([tmp_path / "data"], run, config, train, progress=False)  # the same call: fine
    assert "checkpoint is at step 2, the run asks for 2: nothing to train" in (
        capsys.readouterr().out
    )
    train_vae([tmp_path / "data"], run, config, train, progress=True)  # progress: the same run
    train_vae([tmp_path / "data"], run, config, dataclasses.replace(train, steps=4), progress=False)
    # The same data and checkpoints copied elsewhere (a scratch disk): the same run.
    shutil.copytree(tmp_path / "data", tmp_path / "moved")
    capsys.readouterr()
    train_vae(
        [tmp_path / "moved"], run, config, dataclasses.replace(train, steps=6), progress=False
    )
    assert "data, data cards of" in capsys.readouterr().out  # a note, and the new paths recorded
    assert str((tmp_path / "moved").resolve()) in (run / "run.json").read_text()
    teach = tmp_path / "teacher"
    train_teacher([tmp_path / "moved"], run / "model", teach, train, progress=False)
    shutil.copytree(run / "model", tmp_path / "init-copy")
    train_teacher([tmp_path / "moved"], tmp_path / "init-copy", teach, train, progress=False)
    assert "init of" in capsys.readouterr().out
    shutil.copytree(run / "model", tmp_path / "init-copy2")  # the next job's scratch disk
    train_teacher([tmp_path / "moved"], tmp_path / "init-copy2", teach, train, progress=False)
    train_teacher([tmp_path / "moved"], run / "model", teach, train, progress=False)  # and back
    # A dataset named twice has one card: not the same data, and a refusal restores the record.
    record = (run / "run.json").read_text()
    with pytest.raises(ValueError, match="another call"):
        train_vae([tmp_path / "data"] * 2, run, config, train, progress=False)
    assert (run / "run.json").read_text() == record
    shutil.copytree(tmp_path / "data", tmp_path / "moved2")  # moved, but the trainer refuses:
    with pytest.raises(ValueError, match="other settings"):  # the records are put back
        train_vae([tmp_path / "moved2"], run, config, dataclasses.replace(train, batch_size=3))
    assert (run / "run.json").read_text() == record
    hub.save_pretrained(WorldModel(config), tmp_path / "init-other")  # other weights: another run
    with pytest.raises(ValueError, match="another call"):
        train_teacher([tmp_path / "moved"], tmp_path / "init-other", teach, train, progress=False)


def test_a_moved_run_stopped_after_a_new_checkpoint_keeps_the_new_paths(tmp_path, monkeypatch):
    """A resume on moved data records the new paths; stopped after it checkpointed again, the
    record stays the new one (a stop before that puts the old one back). Data extended in
    place is refused in words, not as two cards' hashes."""
    from gym_worldmodel.training import recipes

    collect(SquareSource(), tmp_path / "data", episodes=3, steps=10, progress=False)
    train = TrainConfig(steps=2, batch_size=2, warmup=1, save_every=1)
    config = dataclasses.replace(WorldModelConfig.tiny(), fps=16)
    run = tmp_path / "vae"
    train_vae([tmp_path / "data"], run, config, train, progress=False)
    shutil.copytree(tmp_path / "data", tmp_path / "moved")
    loss, calls = recipes.vae_loss, []

    def stopped_at_step_2(*args, **kwargs):  # of the resumed run: step 4 of 5
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt("stopped")
        return loss(*args, **kwargs)

    monkeypatch.setattr(recipes, "vae_loss", stopped_at_step_2)
    with pytest.raises(KeyboardInterrupt):
        train_vae([tmp_path / "moved"], run, config, dataclasses.replace(train, steps=5))
    assert torch.load(run / "checkpoint.pt", weights_only=True)["step"] == 3
    assert str((tmp_path / "moved").resolve()) in (run / "run.json").read_text()
    monkeypatch.setattr(recipes, "vae_loss", loss)
    collect(SquareSource(), tmp_path / "moved", episodes=4, steps=10, progress=False)  # extended
    with pytest.raises(ValueError, match=r"the data in .*moved changed since the run started"):
        train_vae([tmp_path / "moved"], run, config, dataclasses.replace(train, steps=5))


def test_a_recipe_call_is_one_run_whatever_the_stage_that_checkpointed(tmp_path, monkeypatch):
    """A stage's checkpoint (train flow's pair net) makes a started run; a default named is
    the same call as one left out; a relative path recorded by an earlier run resolves as the
    call's; other strings are never taken for paths."""
    from gym_worldmodel.training.runs import run_identity, seeded

    stop = [True]

    @seeded
    def recipe(data: Sequence[Path], run_dir: Path, train, memory: bool = False):
        (run_dir / "pair").mkdir(parents=True, exist_ok=True)
        (run_dir / "pair" / "checkpoint.pt").write_bytes(b"")
        if stop.pop():
            raise KeyboardInterrupt("stopped before the run's own checkpoint")

    monkeypatch.chdir(tmp_path)
    (tmp_path / "data").mkdir()
    (tmp_path / "camera").mkdir()  # a folder named like a string that is not a path
    train = TrainConfig(steps=1)
    with pytest.raises(KeyboardInterrupt):
        recipe(["data"], tmp_path / "run", train)
    record = json.loads((tmp_path / "run" / "run.json").read_text())  # kept: a stage started
    assert record["data"] == [str(tmp_path / "data")] and record["memory"] is False
    stop[:] = [False] * 3
    recipe(["data"], tmp_path / "run", train, memory=False)  # the default, named: the same
    with pytest.raises(ValueError, match=r"another call \(memory: False -> True\)"):
        recipe(["data"], tmp_path / "run", train, memory=True)
    record["data"] = ["data"]  # as a record written before paths were resolved
    (tmp_path / "run" / "run.json").write_text(json.dumps(record))
    recipe([tmp_path / "data"], tmp_path / "run", train)
    identity = run_identity("r", {"note": "camera", "names": ["camera"]}, paths={"data"})
    assert identity == {"recipe": "r", "note": "camera", "names": ["camera"]}


def test_a_resumed_run_says_when_the_checkpoint_it_started_from_has_other_weights(
    tmp_path, capsys, monkeypatch
):
    """Checkpoints are named by path (a teacher still training rewrites its model in place):
    a resume goes on, and says which checkpoint now holds other weights."""
    from gym_worldmodel.training.runs import seeded

    @seeded
    def recipe(data: Sequence[Path], init: str | Path, run_dir: Path, train):
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "checkpoint.pt").write_bytes(b"")

    teacher = tmp_path / "teacher" / "model"
    teacher.mkdir(parents=True)
    (teacher / "model.safetensors").write_bytes(b"weights at step 20")
    (tmp_path / "data").mkdir()
    args = ([tmp_path / "data"], teacher, tmp_path / "student", TrainConfig(steps=1))
    recipe(*args)
    recipe(*args)  # resumed, the teacher unchanged: nothing to say
    assert "note:" not in capsys.readouterr().out
    (teacher / "model.safetensors").write_bytes(b"weights at step 25")
    recipe(*args)
    out = capsys.readouterr().out
    assert f"note: init {teacher} holds other weights than when" in out
    assert "reads that checkpoint as it is now" in out
    monkeypatch.chdir(teacher.parent)  # the same checkpoint, named another way
    recipe(args[0], Path("model/"), *args[2:])
    assert "note: init model holds other weights" in capsys.readouterr().out


def test_a_second_job_into_a_run_or_a_dataset_being_written_is_refused(tmp_path):
    """Two jobs in one folder at once would interleave their checkpoints or shards."""
    from gym_worldmodel.files import exclusive
    from gym_worldmodel.sources.collect import collect
    from gym_worldmodel.training.runs import seeded

    @seeded
    def recipe(data: Sequence[Path], run_dir: Path, train):
        (run_dir / "checkpoint.pt").write_bytes(b"")
        with exclusive(run_dir, "training run"):  # what a second job would meet
            pass

    with pytest.raises(ValueError, match="another process is writing this training run now"):
        recipe([], tmp_path / "run", TrainConfig(steps=1))
    recipe.__wrapped__([], tmp_path / "run", TrainConfig(steps=1))  # the lock is gone with it
    data = tmp_path / "data"
    data.mkdir()
    with exclusive(data, "dataset"), pytest.raises(ValueError, match="writing this dataset"):
        collect(SquareSource(), data, episodes=2, steps=4, progress=False)
    assert not any(data.iterdir())  # nothing written


def test_a_run_record_without_a_newer_keyword_is_the_same_call_at_its_default(tmp_path):
    from gym_worldmodel.training.runs import check_same_run

    (tmp_path / "pair").mkdir()  # a checkpoint of any stage (train flow's pair net) counts
    (tmp_path / "pair" / "checkpoint.pt").write_bytes(b"")
    (tmp_path / "run.json").write_text(json.dumps({"recipe": "r", "data": "a"}))
    defaults = {"recipe": "r", "memory": False}
    check_same_run(tmp_path, {"recipe": "r", "data": "a", "memory": False}, defaults)
    assert json.loads((tmp_path / "run.json").read_text())["memory"] is False  # now recorded
    with pytest.raises(ValueError, match=r"another call \(memory: False -> True\)"):
        check_same_run(tmp_path, {"recipe": "r", "data": "a", "memory": True}, defaults)
    with pytest.raises(ValueError, match=r"another call \(data: 'a' -> 'b'\)"):
        check_same_run(tmp_path, {"recipe": "r", "data": "b", "memory": False}, defaults)


def test_a_run_record_of_a_config_without_a_newer_field_is_the_same_call_at_its_default(
    tmp_path,
):
    """A config argument recorded before a field was added to it (``DistillConfig``'s
    ``teacher_memory_guidance``) resumes where the field is at its default, not elsewhere."""
    from gym_worldmodel.training.runs import _field_defaults, check_same_run, run_identity

    (tmp_path / "checkpoint.pt").write_bytes(b"")
    old = {"teacher_nfe": 8, "gt_weight": 0.25, "teacher_guidance": 1.0}
    (tmp_path / "run.json").write_text(json.dumps({"recipe": "r", "distill": old}))
    fields = _field_defaults({"distill": DistillConfig(teacher_guidance=1.0)})
    assert fields["distill"]["teacher_memory_guidance"] == 1.0
    same = run_identity("r", {"distill": DistillConfig(teacher_guidance=1.0)})
    check_same_run(tmp_path, same, fields=fields)
    recorded = json.loads((tmp_path / "run.json").read_text())["distill"]
    assert recorded["teacher_memory_guidance"] == 1.0  # now recorded
    (tmp_path / "run.json").write_text(json.dumps({"recipe": "r", "distill": old}))
    guided = run_identity("r", {"distill": DistillConfig(8, 0.25, 1.0, 2.0)})
    with pytest.raises(ValueError, match="another call"):
        check_same_run(tmp_path, guided, fields=fields)
    with pytest.raises(ValueError, match="another call"):  # without the defaults: refused
        check_same_run(tmp_path, same)


def test_a_run_folder_missing_its_record_or_its_checkpoint_is_not_overwritten(tmp_path, capsys):
    """A checkpoint without run.json, or a trained model whose checkpoint was deleted to save
    space, is refused to another call (either used to be trained over or resumed unchecked)."""
    from gym_worldmodel.training.runs import check_same_run

    call, other = {"recipe": "r", "data": "a"}, {"recipe": "r", "data": "b"}
    run = tmp_path / "run"
    check_same_run(run, call)
    (run / "model").mkdir()
    (run / "model" / "model.safetensors").write_bytes(b"trained")
    with pytest.raises(ValueError, match=r"the model of another call \(data: 'a' -> 'b'\)"):
        check_same_run(run, other)  # its checkpoint deleted: the model is still the run's
    check_same_run(run, call)  # the same call trains again, and says so
    assert "holds this call's model but no checkpoint.pt" in capsys.readouterr().out
    (run / "run.json").unlink()
    with pytest.raises(ValueError, match=r"a trained model \(model/\) but no run.json"):
        check_same_run(run, call)
    (run / "checkpoint.pt").write_bytes(b"")
    with pytest.raises(ValueError, match="holds a checkpoint but no run.json"):
        check_same_run(run, call)
    assert sorted(p.name for p in run.iterdir()) == ["checkpoint.pt", "model"]
    assert (run / "model" / "model.safetensors").read_bytes() == b"trained"


@pytest.mark.parametrize(
    ("field", "value", "match"),
    [
        ("save_every", 0, "save_every must be >= 1"),
        ("steps", 0, "steps must be >= 1"),
        ("dtype", "bf16", "dtype must be"),
        ("cooldown", 1.5, "cooldown in"),
        ("lr", 0.0, "lr > 0"),
        ("warmup", -1, "warmup >= 0"),
    ],
)
def test_train_config_refuses_settings_that_cannot_run(field, value, match):
    with pytest.raises(ValueError, match=match):
        TrainConfig(**{field: value})


def test_train_configs_defaults_are_the_documented_recipes():
    """A warm-up of a tenth of the steps plus one (at most 200), a 20% cool-down: what
    ``gym-worldmodel train`` has always run (docs/training.md). The warm-up is set once, when
    the config is made, so that checkpoints record the number."""
    short = TrainConfig(steps=100)
    assert (short.warmup, short.cooldown) == (11, 0.2)
    assert TrainConfig().warmup == 200 and TrainConfig(steps=1990).warmup == 200
    assert TrainConfig(steps=1989).warmup == 199 and TrainConfig(steps=5, warmup=0).warmup == 0
    assert dataclasses.replace(short, steps=5000).warmup == 11
    assert short.run_settings()["warmup"] == 11


def test_the_same_seed_builds_the_same_fresh_modules(episodes, tmp_path):
    """--seed fixes the starting weights too, not only batches and noise."""
    from gym_worldmodel.training.runs import seeded

    @seeded
    def build(train):
        return WorldModel(WorldModelConfig.tiny()).state_dict()

    a, b = build(TrainConfig(seed=3)), build(TrainConfig(seed=3))
    assert all(torch.equal(a[k], b[k]) for k in a)
    c = build(train=TrainConfig(seed=4))
    assert not all(torch.equal(a[k], c[k]) for k in a)
    before = torch.random.get_rng_state()
    build(TrainConfig(seed=3))
    assert torch.equal(torch.random.get_rng_state(), before)  # the caller's generator is kept


def test_batches_go_to_the_training_device():
    batch = {"frames": torch.zeros(2, 3), "pair": (torch.ones(1), [torch.ones(2)]), "n": 3}
    moved = to_device(batch, torch.device("meta"))
    assert moved["frames"].device.type == "meta" and moved["n"] == 3
    assert isinstance(moved["pair"], tuple) and moved["pair"][1][0].device.type == "meta"


CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=CUDA)])
def test_recipes_end_to_end(tmp_path, device, capsys):
    collect(
        SquareSource(), tmp_path / "data", episodes=6, steps=10, heldout_every=3, progress=False
    )
    train = TrainConfig(steps=6, batch_size=4, warmup=1, save_every=3, device=device)
    config = WorldModelConfig.tiny()
    config = dataclasses.replace(config, fps=16)
    vae_model = train_vae([tmp_path / "data"], tmp_path / "vae", config, train, progress=False)
    assert vae_model.config.vae.scaling_factor != 1.0
    model = train_teacher(
        [tmp_path / "data"], tmp_path / "vae" / "model", tmp_path / "teacher", train, progress=False
    )
    assert model.dit.out.weight.device.type == device  # trained there; compared here on the CPU
    model = model.cpu()
    loaded = hub.from_pretrained(tmp_path / "teacher" / "model")
    for a, b in zip(model.state_dict().values(), loaded.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    # a teacher switched to another anchored prior keeps its trunk and restarts its output
    switched = train_teacher(
        [tmp_path / "data"],
        tmp_path / "teacher" / "model",
        tmp_path / "switched",
        dataclasses.replace(train, steps=1, lr=1e-12),
        progress=False,
        anchor_sigma=0.3,
    )
    switched = switched.cpu()
    assert switched.config.dit.anchor_sigma == 0.3
    assert switched.dit.out.weight.abs().max() < 1e-6
    assert torch.allclose(switched.dit.blocks[0].ada.weight, model.dit.blocks[0].ada.weight)
    # a few-step student distilled on its own rollouts
    student = train_student(
        [tmp_path / "data"],
        tmp_path / "teacher" / "model",
        tmp_path / "student",
        dataclasses.replace(train, steps=2),
        nfe=2,
        progress=False,
    ).cpu()
    assert student.config.sampler.nfe == 2 and student.config.sampler.guidance_scale == 1.0
    assert not torch.equal(student.dit.out.weight, model.dit.out.weight)
    # self-forcing fine-tunes a model on its own rollouts and ships its one-step sampler
    tuned = train_self_forcing(
        [tmp_path / "data"],
        tmp_path / "teacher" / "model",
        tmp_path / "self-forcing",
        dataclasses.replace(train, steps=2),
        nfe=1,
        config=SelfForcingConfig(max_chunks=2, action_weight=0.5, adversarial_weight=0.1),
        progress=False,
        probe_steps=2,
        balanced=True,
        anchor_motion=True,
    ).cpu()
    loaded = hub.from_pretrained(tmp_path / "self-forcing" / "model")
    assert loaded.config.sampler.nfe == 1 and not loaded.config.sampler.stochastic
    assert loaded.config.dit.anchor_motion  # fitted (or left still) and shipped with the model
    torch.testing.assert_close(loaded.dit.anchor_motion, tuned.dit.anchor_motion)
    assert not torch.equal(tuned.dit.out.weight, model.dit.out.weight)
    # the latent action probe was trained first, in its own resumable run, and checked on
    # training episodes it did not see (held-out episodes are eval's: they steer nothing)
    probe_run = tmp_path / "self-forcing" / "action-probe"
    assert (probe_run / "checkpoint.pt").is_file()
    record = json.loads((probe_run / "validation.json").read_text())
    assert list(record["validation_error"]) == [str(tmp_path / "data")]
    assert not (probe_run / "heldout.json").exists()
    # the camera rows are scored only if the probe reads their actions on those windows
    readable = record["validation_error"][str(tmp_path / "data")] < 0.8
    assert record["scored_modalities"] == (["camera"] if readable else [])
    # the decoder fine-tune changes the decoder only: same latents, same DiT, same scale
    redrawn = train_decoder(
        [tmp_path / "data"], tmp_path / "teacher" / "model", tmp_path / "decoder", train, False
    ).cpu()
    saved = hub.from_pretrained(tmp_path / "decoder" / "model")
    assert saved.config == model.config
    for name, value in saved.state_dict().items():
        if not name.startswith("vae.decoder."):
            assert torch.equal(value, model.state_dict()[name]), name
    assert any(
        not torch.equal(v, model.state_dict()[k])
        for k, v in redrawn.state_dict().items()
        if k.startswith("vae.decoder.")
    )
    history = json.loads((tmp_path / "self-forcing" / "losses.json").read_text())
    assert all("action" in h and "critic" in h for h in history)
    # the critic trained alongside is in the run's checkpoint, not in the model it writes
    state = torch.load(tmp_path / "self-forcing" / "checkpoint.pt", weights_only=True)["module"]
    assert any(k.startswith("alongside.") for k in state)
    assert not any("alongside" in k for k in loaded.state_dict())
    flags = (
        ("--max-chunks", "-1"),
        ("--action-weight", "-0.1"),
        ("--adversarial-weight", "-1"),
        ("--probe-steps", "0"),
    )
    for flag, value in flags:
        argv = ["self-forcing", "--data", "d", "--out", "o", "--init", "i", flag, value]
        with pytest.raises(SystemExit):
            train_main(argv)
        assert f"argument {flag}: must be" in capsys.readouterr().err
    for flag in ("--balanced", "--anchor-motion"):
        with pytest.raises(SystemExit):
            train_main(["teacher", "--data", "d", "--out", "o", "--init", "i", flag])
        assert f"{flag} is an option of train self-forcing" in capsys.readouterr().err


def test_train_takes_a_repo_id_for_its_checkpoints_and_budget_alone(monkeypatch, capsys):
    calls = recorded_calls(monkeypatch, "train_student")
    argv = ["student", "--data", "d", "--out", "o", "--init", "me/teacher"]
    train_main([*argv, "--student-init", "me/student", "--budget"])
    ((args, kwargs),) = calls
    assert args[1] == "me/teacher" and kwargs["init"] == "me/student"  # not Path("me/teacher")
    assert (args[3].steps, args[3].batch_size) == (20, 4)
    assert kwargs["nfe"] == 3  # the student's default
    calls = recorded_calls(monkeypatch, "train_self_forcing")
    for more, nfe in (([], 1), (["--nfe", "2"], 2)):  # self-forcing's default: the shipped 1
        calls.clear()
        train_main(["self-forcing", "--data", "d", "--out", "o", "--init", "w", "--budget", *more])
        assert calls[0][1]["nfe"] == nfe
    with pytest.raises(SystemExit):
        train_main(["vae", "--data", "d", "--out", "o", "--init", "w"])
    assert "--init is an option of train decoder / teacher" in capsys.readouterr().err
    for more, named in (
        (["--steps", "10000"], "--steps"),  # the default, given: still overridden
        (["--steps", "100", "--batch-size", "16"], "--steps and --batch-size"),
        (["--batch-size", "16"], "--batch-size"),
    ):
        with pytest.raises(SystemExit):
            train_main([*argv, "--budget", *more])
        assert f"pair steps): drop {named}\n" in capsys.readouterr().err


def test_each_train_stage_lists_only_its_own_options_and_refuses_a_bad_cooldown(capsys):
    from gym_worldmodel.cli.train_options import STAGE_OPTIONS, STAGES

    for stage in STAGES:
        with pytest.raises(SystemExit):
            train_main([stage, "--help"])
        listed = capsys.readouterr().out
        for flag, stages in STAGE_OPTIONS.items():
            assert (f"  {flag} " in listed) == (stage in stages), (stage, flag)
        assert "  --steps " in listed and "  --no-progress " in listed  # every stage's
        assert "(default 0.2)" in listed  # --cooldown's, as each option with a default says
    with pytest.raises(SystemExit):
        train_main(["--help"])
    listed = capsys.readouterr().out
    assert all(f"\n    {stage}" in listed for stage in STAGES)
    with pytest.raises(SystemExit):
        train_main(["teacher", "--data", "d", "--out", "o", "--init", "i", "--cooldown", "1.5"])
    assert "argument --cooldown: must be" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # an option before the stage: said so, not "invalid choice"
        train_main(["--memory", "teacher", "--data", "d", "--out", "o", "--init", "i"])
    assert "options go after the stage: gym-worldmodel train STAGE" in capsys.readouterr().err


def test_a_train_stage_lists_its_defaults_without_importing_torch():
    """``train STAGE --help`` reads every default from ``training/config.py``, which imports no
    torch: importing torch took the help from 0.2 s to 2 s or more."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from gym_worldmodel.cli import main\n"
        "from gym_worldmodel.cli.train_options import STAGES\n"
        "for stage in STAGES:\n"
        "    try:\n"
        "        main(['train', stage, '--help'])\n"
        "    except SystemExit:\n"
        "        pass\n"
        "print('torch' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "(default 600)" in out.stdout  # self-forcing's --probe-steps: the defaults were read
    assert out.stdout.splitlines()[-1] == "False"


def test_every_train_default_is_the_librarys_own(monkeypatch, capsys):
    """A bare ``train STAGE`` calls its recipe with ``TrainConfig()``, ``SelfForcingConfig()``
    and every keyword at the recipe's default (``distill`` None: ``DistillConfig()``, as a
    student run started before its options recorded it), and ``--steps N`` with
    ``TrainConfig(steps=N)`` (its warm-up and cool-down): an option that holds a copy of a
    default, drifted from the library's, fails here. Each option's help says the default it
    takes."""
    import inspect

    from gym_worldmodel.cli.train import _train_parser
    from gym_worldmodel.cli.train_options import STAGES
    from gym_worldmodel.training import recipes

    for stage in STAGES:
        name = "train_" + stage.replace("-", "_")
        signature = inspect.signature(getattr(recipes, name))
        calls = recorded_calls(monkeypatch, name)
        argv = [stage, "--data", "d", "--out", "o", *([] if stage == "vae" else ["--init", "i"])]
        train_main(argv)
        train_main([*argv, "--steps", "800"])
        (args, kwargs), (longer, _) = calls
        called = signature.bind(*args, **kwargs).arguments
        assert called["train"] == TrainConfig(), stage
        assert signature.bind(*longer).arguments["train"] == TrainConfig(steps=800), stage
        for key, value in called.items():
            default = signature.parameters[key].default
            if key == "config" and stage == "self-forcing":  # built from its options
                assert value == SelfForcingConfig()
            elif default is not inspect.Parameter.empty:  # data, run_dir: the command's own
                assert value == default, (stage, key)
    capsys.readouterr()
    parser = _train_parser()[1]["self-forcing"]
    helps = {a.dest: a.help for a in parser._actions}
    assert "(default 0.0003)" in helps["lr"] and "(default 10000," in helps["steps"]
    assert "(default 6)" in helps["max_chunks"] and "(default 600)" in helps["probe_steps"]


def test_anchor_motion_is_fitted_to_how_the_actions_move_the_picture():
    """Frames that slide 2 px right per unit of action 0, 1 px up per unit of action 1 and
    grow 4% per unit of action 2; action 3 moves nothing."""
    from gym_worldmodel.models.dit import move_frames
    from gym_worldmodel.training.motion import fit_anchor_motion, image_motion

    rng = np.random.default_rng(0)
    episodes = []
    for seed in range(60):  # one step each: motion from a still start, so nothing compounds
        action = rng.integers(-1, 2, (1, 4)).astype(np.float32)
        action[:, 2] = np.abs(action[:, 2])
        scene = torch.from_numpy(rng.integers(0, 256, (1, 1, 3, 96, 96)).astype(np.float32))
        scene = torch.nn.functional.avg_pool3d(scene, (1, 3, 3), 1, (0, 1, 1))  # smoother
        frames = []
        for a in (np.zeros(4, np.float32), action[0]):
            motion = torch.tensor([[[2 * a[0], -a[1], 0.04 * a[2]]]])
            view = move_frames(scene, motion)[0, 0, :, 32:64, 32:64]  # the middle of the scene
            frames.append(view.permute(1, 2, 0).round().clamp(0, 255).to(torch.uint8).numpy())
        episodes.append(Episode(np.stack(frames), action, None, seed))
    before = np.stack([e.frames[0] for e in episodes])
    after = np.stack([e.frames[1] for e in episodes])
    actions = np.concatenate([e.actions for e in episodes])
    found = image_motion(before, after)
    np.testing.assert_allclose(found[:, :2], actions[:, :2] * [2, -1], atol=0.1)  # whole px
    np.testing.assert_allclose(found[:, 2], actions[:, 2] * 0.04, atol=0.011)
    rate, explained = fit_anchor_motion(episodes, latent_scale=0.5, pairs=200)
    expected = [[1.0, 0.0, 0.0], [0.0, -0.5, 0.0], [0.0, 0.0, 0.04], [0.0, 0.0, 0.0]]
    np.testing.assert_allclose(rate, expected, atol=0.03)  # whole pixels under a zoom
    assert explained > 0.95
    still = [dataclasses.replace(e, frames=np.repeat(e.frames[:1], 2, 0)) for e in episodes]
    assert fit_anchor_motion(still, 0.5, pairs=50)[1] == 0.0  # nothing moves: nothing explained
    with pytest.raises(ValueError, match="reach"):
        image_motion(before, after, reach=16)


def _self_forcing_batch(config):
    """A 1-pass sampler, 2 own chunks at most, and a seeded batch of 2 windows of 4 chunks
    (the generator goes on drawing): ``sampler, sf, f, n, gen, latents, actions, modality``."""
    sampler = dataclasses.replace(config.sampler, nfe=1)
    f, n = config.dit.chunk_frames, 4
    gen = torch.Generator().manual_seed(0)
    latents = torch.randn(2, n * f, 4, 16, 16, generator=gen)
    actions = torch.randn(2, n * f, config.dit.action_dim, generator=gen)
    modality = torch.tensor([0, 2])
    return sampler, SelfForcingConfig(max_chunks=2), f, n, gen, latents, actions, modality


@pytest.mark.parametrize("flow", [False, True])
def test_self_forcing_trains_the_recorded_future_after_the_models_own_history(flow):
    """The history is the model's own rollout: recorded frames the model generated itself do not
    enter the loss, the recorded chunk after them is its target. A flow warp of the anchors is
    used, not trained."""
    config = WorldModelConfig.tiny()
    model = randomize(WorldModel(config))
    if flow:
        model = model.with_anchor_flow(tuple(config.dit.modalities))
        randomize(model.flow, seed=3, std=0.05)
    sampler, sf, f, n, gen, latents, actions, modality = _self_forcing_batch(config)

    def loss_of(x, seed):
        g = torch.Generator().manual_seed(seed)
        return self_forcing_loss(model.dit, sampler, x, actions, modality, g, sf)

    seed = next(s for s in range(50) if loss_of(latents, s)[1]["own_chunks"] == 2)
    loss, parts = loss_of(latents, seed)
    own = latents.clone()
    own[:, f : 3 * f] = 100.0  # chunks 1-2: the model generates them itself
    assert loss_of(own, seed)[0].item() == loss.item()
    target = latents.clone()
    target[:, 3 * f :] += 1.0  # chunk 3: the recorded future it is trained on
    assert loss_of(target, seed)[0].item() != loss.item()
    loss.backward()
    assert all(p.grad is not None for p in model.dit.parameters() if p.requires_grad)
    if flow:
        assert all(p.grad is None for p in model.flow.parameters())
    with pytest.raises(ValueError, match="too short"):
        self_forcing_loss(model.dit, sampler, latents[:, : 3 * f], actions, modality, gen, sf)
    with pytest.raises(ValueError, match="max_chunks"):
        SelfForcingConfig(max_chunks=-1)


def test_self_forcing_reads_the_memory_retrieved_for_the_chunk_it_trains():
    """With one memory per generated chunk (``ChunkWindows``), the loss of chunk ``k + 1``
    reads chunk ``k + 1``'s, in its own history and in the trained forward alike; one memory
    for the window is read whichever chunk is trained."""
    from gym_worldmodel.training import self_forcing

    config = WorldModelConfig.tiny()
    model = randomize(WorldModel(config))
    sampler, sf, f, n, gen, latents, actions, modality = _self_forcing_batch(config)
    memory = torch.randn(2, n - 1, f, 4, 16, 16, generator=gen)  # chunk j's at j - 1
    valid = torch.tensor([[True, False, True], [False, True, True]])
    seen = {}
    history = self_forcing.own_history

    def spy(*args):
        seen["history"] = args[7:9]  # (memory, memory_valid)
        return history(*args)

    forward = model.dit.forward_sequence

    def forward_spy(*args, **kwargs):
        seen["forward"] = (kwargs["memory"], kwargs["memory_valid"])
        return forward(*args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(self_forcing, "own_history", spy)
        patch.setattr(model.dit, "forward_sequence", forward_spy)
        for seed in range(12):
            g = torch.Generator().manual_seed(seed)
            _, parts = self_forcing_loss(
                model.dit, sampler, latents, actions, modality, g, sf, memory, valid
            )
            k = int(parts["own_chunks"])
            for where in ("history", "forward"):
                mem, ok = seen[where]
                assert torch.equal(mem, memory[:, k]) and torch.equal(ok, valid[:, k]), where
            g = torch.Generator().manual_seed(seed)
            self_forcing_loss(  # one memory for the window: read as it is
                model.dit, sampler, latents, actions, modality, g, sf, memory[:, 0], valid[:, 0]
            )
            assert torch.equal(seen["forward"][0], memory[:, 0])


def test_flow_stage_learns_which_way_the_action_moves_the_picture(tmp_path):
    """``train flow``: the pair net finds the square's recorded motion, and the world's warp
    learns it from the frame and the action: warping the frame by the recorded action predicts
    the next frame better than copying it, and better than the opposite action does."""
    from gym_worldmodel.models.vae import to_unit

    collect(SquareSource(), tmp_path / "data", episodes=6, steps=12, progress=False)
    init = hub.save_pretrained(
        WorldModel(dataclasses.replace(WorldModelConfig.tiny(anchor_flow_width=8), fps=16)),
        tmp_path / "init",
    )
    train = TrainConfig(steps=80, batch_size=8, lr=3e-3, warmup=5, save_every=80)
    model = train_flow([tmp_path / "data"], init, tmp_path / "flow", train, progress=False)
    assert model.config.dit.anchor_flow == ("camera",)
    assert (tmp_path / "flow" / "pair" / "checkpoint.pt").is_file()
    loaded = hub.from_pretrained(tmp_path / "flow" / "model")
    assert torch.equal(loaded.flow.net.out.weight, model.flow.net.out.weight)
    history = json.loads((tmp_path / "flow" / "losses.json").read_text())
    assert np.mean([h["loss"] for h in history[-10:]]) < 0.5 * np.mean(
        [h["loss"] for h in history[:10]]
    )

    ep = moving_square_episode(99, steps=12)
    first, second = (
        to_unit(torch.from_numpy(ep.frames[:-1])),
        to_unit(torch.from_numpy(ep.frames[1:])),
    )
    actions = torch.zeros(len(first), model.config.dit.action_dim)
    actions[:, :12] = torch.from_numpy(ep.actions)
    camera = torch.zeros(len(first), dtype=torch.long)
    with torch.no_grad():
        right = (model.flow(first, actions, camera) - second).abs().mean()
        wrong = (model.flow(first, -actions, camera) - second).abs().mean()
    copy = (first - second).abs().mean()
    assert right < 0.9 * copy and right < 0.6 * wrong


def test_chunk_motion_is_the_mean_absolute_change_per_frame():
    before = torch.zeros(2, 1, 4, 8, 8)
    chunk = torch.zeros(2, 3, 4, 8, 8)
    chunk[0, :2] = 3.0  # row 0: steps to 3, stays, back to 0: |3| + 0 + |-3| over 3 frames
    assert torch.allclose(chunk_motion(before, chunk), torch.tensor([2.0, 0.0]))
    assert chunk_motion(before + 1.0, chunk)[1] == pytest.approx(1.0 / 3.0)  # the first step counts


def test_chunk_shift_follows_a_scene_moved_coherently_and_not_noise():
    gen = torch.Generator().manual_seed(0)
    scene = torch.randn(2, 4, 16, 16, generator=gen)
    scene = torch.nn.functional.avg_pool2d(scene, 3, 1, 1)[:, None]  # smooth, like latents
    step = torch.tensor([1.0, -2.0, 0.0])  # right 1, up 2 latent pixels a frame
    motion = (step * torch.arange(1.0, 4.0)[:, None]).expand(2, 3, 3)
    chunk = move_frames(scene.repeat(1, 3, 1, 1, 1), motion)
    est = chunk_shift(scene, chunk)
    assert est.shape == (2, 3, 2)
    assert torch.allclose(est, step[:2].expand_as(est), atol=0.3)
    assert chunk_shift(scene, scene.repeat(1, 3, 1, 1, 1)).abs().max() < 1e-3  # standing still
    noise = torch.randn(2, 3, 4, 16, 16, generator=gen)  # change without motion
    assert chunk_shift(scene, scene + noise).abs().mean() < 0.3


@pytest.mark.parametrize(
    ("term", "weight"), [("motion", 2.0), ("shift", 0.5)], ids=["motion", "shift"]
)
def test_weighted_terms_score_the_chunk_the_model_would_output(term, weight, capsys):
    """``motion_weight`` (how far the predicted chunk moves) and ``shift_weight`` (how far its
    scene shifts), each against the recorded chunk's, over the rows that have their action."""
    model, sampler, latents, actions, modality = self_forcing_case([0, 2])
    plain = SelfForcingConfig(max_chunks=2, action_dropout=0.0)

    def run(cfg):
        return self_forcing_loss(
            model.dit, sampler, latents, actions, modality, torch.Generator().manual_seed(3), cfg
        )

    parts = host_floats(run(plain)[1])
    total, weighted = run(dataclasses.replace(plain, **{f"{term}_weight": weight}))
    weighted = host_floats(weighted)
    assert term not in parts and weighted["flow"] == parts["flow"] and weighted[term] > 0
    assert total.item() == pytest.approx(parts["flow"] + weight * weighted[term], rel=1e-5)
    total.backward()
    assert all(p.grad is not None for p in model.dit.parameters() if p.requires_grad)
    dropped = SelfForcingConfig(max_chunks=2, action_dropout=1.0, **{f"{term}_weight": weight})
    assert run(dropped)[1][term] == 0.0  # without the action, how far it moves is not knowable
    with pytest.raises(ValueError, match=f"{term}_weight"):
        SelfForcingConfig(**{f"{term}_weight": -0.5})
    argv = ["self-forcing", "--data", "d", "--out", "o", "--init", "i", f"--{term}-weight", "-1"]
    with pytest.raises(SystemExit):
        train_main(argv)
    assert f"argument --{term}-weight: must be a finite number >= 0" in capsys.readouterr().err


def test_clean_anchors_anchor_chunks_to_the_recorded_frames(monkeypatch, capsys):
    config = WorldModelConfig.tiny()
    assert config.dit.frame_anchor
    model = WorldModel(config)
    f = config.dit.chunk_frames
    latents = torch.randn(2, 3 * f, 4, 16, 16)
    actions = torch.zeros(2, 3 * f, config.dit.action_dim)
    seen = []
    real = model.dit.forward_sequence

    def spy(*args, **kwargs):
        seen.append(kwargs.get("anchors"))
        return real(*args, **kwargs)

    monkeypatch.setattr(model.dit, "forward_sequence", spy)
    for clean in (False, True):
        lc = TeacherLossConfig(clean_anchors=clean)
        teacher_loss(model.dit, latents, actions, torch.zeros(2).long(), torch.Generator(), lc)
    assert seen[0] is None  # each chunk's previous frame as noised with it
    assert torch.equal(seen[1], sequence_anchors(latents, f))
    argv = ["student", "--data", "d", "--out", "o", "--init", "i", "--clean-anchors"]
    with pytest.raises(SystemExit):
        train_main(argv)
    assert "is an option of train teacher, not of" in capsys.readouterr().err


def test_motion_focus_weighs_where_the_history_moved_and_reads_only_the_history():
    f, side = 3, 8
    latents = torch.zeros(2, 4 * f, 4, side, side)
    latents[:, 2 * f - 1, :, 2, 5] = 1.0  # a spot appears in chunk 1's last frame
    latents[:, 3 * f :] = torch.randn(2, f, 4, side, side)  # the last chunk: anything
    w = motion_focus_weights(latents, f, 2.0)
    assert w.shape == (2, 4 * f, 1, side, side)
    assert torch.allclose(w.mean(), torch.tensor(1.0))
    chunk = lambda x, c: x[:, c * f : (c + 1) * f]  # noqa: E731
    # chunk 2 is weighted where chunk 1 moved, its 3x3 neighbourhood, and nowhere else
    hot = chunk(w, 2)[0, 0, 0]
    assert hot[2, 5] > 5 * hot[0, 0] and hot[1, 4] == hot[2, 5] and hot[3, 6] == hot[2, 5]
    assert hot[5, 1] == hot[0, 0]
    assert torch.equal(chunk(w, 0), chunk(w, 1))  # nothing moved before them: uniform
    # the last chunk's own content (the target) does not change any weight
    other = latents.clone()
    other[:, 3 * f :] = torch.randn(2, f, 4, side, side)
    assert torch.equal(w[:, : 3 * f], motion_focus_weights(other, f, 2.0)[:, : 3 * f])
    assert torch.equal(chunk(w, 3), chunk(motion_focus_weights(other, f, 2.0), 3))
    assert torch.allclose(motion_focus_weights(latents, f, 0.0), torch.ones(1))
    with pytest.raises(ValueError, match="weight >= 0"):
        TeacherLossConfig(motion_focus=-1.0)


def test_teacher_loss_with_motion_focus_reports_the_plain_flow_beside_it(capsys):
    config = WorldModelConfig.tiny()
    model = WorldModel(config)
    f = config.dit.chunk_frames
    latents = torch.randn(2, 3 * f, 4, 16, 16)
    actions = torch.zeros(2, 3 * f, config.dit.action_dim)
    mod = torch.zeros(2).long()
    plain, p0 = teacher_loss(
        model.dit, latents, actions, mod, torch.Generator(), TeacherLossConfig()
    )
    lc = TeacherLossConfig(motion_focus=2.0)
    focused, p1 = teacher_loss(model.dit, latents, actions, mod, torch.Generator(), lc)
    assert "flow_focused" not in p0 and p1["flow"] == pytest.approx(p0["flow"])
    assert focused.item() == pytest.approx(p1["flow_focused"]) and focused.item() != plain.item()
    argv = ["self-forcing", "--data", "d", "--out", "o", "--init", "i", "--motion-focus", "1"]
    with pytest.raises(SystemExit):
        train_main(argv)
    assert "is an option of train teacher, not of" in capsys.readouterr().err


class SlowSquareSource(SquareSource):
    """The squares, with the moving action given in quarter units (a small-spread dimension)."""

    def rollout(self, seed: int, steps: int) -> Episode:
        episode = moving_square_episode(seed, steps)
        return dataclasses.replace(episode, actions=episode.actions * 0.25)


def test_action_scale_is_fitted_to_each_dimensions_spread(tmp_path, capsys):
    collect(SlowSquareSource(), tmp_path / "data", episodes=4, steps=10, progress=False)
    init = WorldModel(WorldModelConfig.tiny())
    hub.save_pretrained(init, tmp_path / "init")
    train = TrainConfig(steps=1, batch_size=2, warmup=1, lr=1e-12)
    model = train_teacher(
        [tmp_path / "data"],
        tmp_path / "init",
        tmp_path / "run",
        train,
        action_scale=True,
        progress=False,
    )
    moved = np.concatenate([moving_square_episode(s, 10).actions[:, 0] for s in range(4)])
    scale = model.config.dit.action_scale["camera"]
    assert scale[0] == pytest.approx(1 / (0.25 * moved.std()), rel=1e-5)  # about 4
    assert scale[1:] == (1.0,) * 11  # constant dimensions keep their input
    assert set(model.config.dit.action_scale) == {"camera"}
    assert hub.from_pretrained(tmp_path / "run" / "model").config == model.config
    argv = ["self-forcing", "--data", "d", "--out", "o", "--init", "i", "--action-scale"]
    with pytest.raises(SystemExit):
        train_main(argv)
    assert "is an option of train teacher, not of" in capsys.readouterr().err


def test_frames_of_another_size_than_the_model_s_are_a_clear_error(tmp_path):
    from gym_worldmodel.training.data import Frames
    from gym_worldmodel.training.recipes import train_vae

    small = [moving_square_episode(s, size=16) for s in range(2)]
    with pytest.raises(DatasetError, match=r"frames differ in size"):
        Frames([moving_square_episode(0), *small])
    data = tmp_path / "data16"

    class Small(SquareSource):
        info = {**SquareSource.info, "frame_size": 16}

        def rollout(self, seed, steps):
            return moving_square_episode(seed, steps, size=16)

    collect(Small(), data, episodes=3, steps=4, heldout_every=3, progress=False)
    train = TrainConfig(steps=2, batch_size=2, lr=1e-3, save_every=1, seed=0)
    with pytest.raises(DatasetError, match=r"data16: frames of 16x16 pixels .* VAE takes 32x32"):
        train_vae([data], tmp_path / "run", WorldModelConfig.tiny(), train, progress=False)
    assert not (tmp_path / "run").exists()  # refused before the run started
    data32 = tmp_path / "data32"
    collect(SquareSource(), data32, episodes=3, steps=4, heldout_every=3, progress=False)
    from gym_worldmodel.training.start_frames import pick_world_start_frames

    with pytest.raises(DatasetError, match=r"datasets hold frames of different sizes \(.*16x16"):
        pick_world_start_frames([data32, data])  # as train and ship call it, before any check
    vae = WorldModel(WorldModelConfig.tiny()).vae  # one frame, without a batch axis, still encodes
    assert vae.encode(torch.zeros(32, 32, 3, dtype=torch.uint8)).shape == (4, 16, 16)


@pytest.mark.parametrize(
    ("info", "match"),
    [
        ({"modality": "arm"}, r"modality 'arm' is not one of this model's action modalities"),
        ({"world": "driving", "modality": "driving", "action_width": 5}, "driving actions are 2"),
        ({"fps": 15}, r"data: fps \(15\) must be a positive multiple of chunk_frames \(2\)"),
    ],
)
def test_data_a_model_cannot_take_is_refused_before_the_run_starts(tmp_path, info, match):
    from gym_worldmodel.training.recipes import train_vae

    class Odd(SquareSource):
        def __init__(self):
            self.info = {**SquareSource.info, **info}

        def rollout(self, seed, steps):
            episode = moving_square_episode(seed, steps)
            width = self.info["action_width"]
            return dataclasses.replace(episode, actions=np.zeros((steps, width), np.float32))

    collect(Odd(), tmp_path / "data", episodes=3, steps=4, heldout_every=3, progress=False)
    train = TrainConfig(steps=2, batch_size=2, lr=1e-3, save_every=1, seed=0)
    with pytest.raises(DatasetError, match=match):
        train_vae([tmp_path / "data"], tmp_path / "run", WorldModelConfig.tiny(), train)
    assert not (tmp_path / "run").exists()


def test_a_dataset_of_an_envs_modality_names_an_env_world_of_it(tmp_path):
    """The card's world picks the start frames the model's env resets from: a name of one's own
    would leave the env starting from another world's frames."""
    from gym_worldmodel.training.recipes import train_vae

    class Own(SquareSource):
        info = {**SquareSource.info, "world": "squares"}

    with pytest.raises(DatasetError, match=r"world 'squares' of modality 'camera' is not an env"):
        collect(Own(), tmp_path / "own", episodes=3, steps=4, heldout_every=3, progress=False)
    assert not (tmp_path / "own").exists()
    data = tmp_path / "data"
    collect(SquareSource(), data, episodes=3, steps=4, heldout_every=3, progress=False)
    card = read_card(data)
    (data / "dataset.json").write_text(json.dumps({**card, "world": "driving"}))  # hand-edited
    train = TrainConfig(steps=2, batch_size=2, lr=1e-3, save_every=1, seed=0)
    with pytest.raises(DatasetError, match=r"camera data, world 'citywalk'"):
        train_vae([data], tmp_path / "run", WorldModelConfig.tiny(), train, progress=False)


def test_actions_of_another_width_than_the_modalitys_are_named_with_their_dataset(
    tmp_path, monkeypatch
):
    import sys

    from gym_worldmodel.training.recipes import train_teacher

    class Unsaid(SquareSource):  # its card does not say how wide its actions are
        info = {k: v for k, v in SquareSource.info.items() if k != "action_width"}

        def rollout(self, seed, steps):
            episode = moving_square_episode(seed, steps)
            return dataclasses.replace(episode, actions=episode.actions[:, :5].copy())

    # collected as before collect checked episodes against their modality's width
    monkeypatch.setattr(sys.modules["gym_worldmodel.sources.collect"], "DEFAULT_MODALITIES", {})
    collect(Unsaid(), tmp_path / "narrow", episodes=3, steps=6, heldout_every=3, progress=False)
    vae = hub.save_pretrained(WorldModel(WorldModelConfig.tiny()), tmp_path / "vae")
    train = TrainConfig(steps=1, batch_size=2, lr=1e-3, save_every=1, seed=0)
    with pytest.raises(DatasetError, match=r"narrow: episode actions are \[5\] wide; camera"):
        train_teacher([tmp_path / "narrow"], vae, tmp_path / "t", train, progress=False)


def test_a_checkpoint_records_the_modalities_its_denoiser_learned(tmp_path):
    from gym_worldmodel.envs import WorldModelVectorEnv
    from gym_worldmodel.training.recipes import train_teacher, train_vae

    opts = dict(episodes=3, steps=12, heldout_every=3, progress=False)
    collect(SquareSource(), tmp_path / "data", **opts)
    train = TrainConfig(steps=1, batch_size=2, lr=1e-3, save_every=1, seed=0)
    vae = train_vae([tmp_path / "data"], tmp_path / "vae", WorldModelConfig.tiny(), train, False)
    assert vae.config.trained_modalities == ()  # a VAE: its denoiser learned nothing yet
    teacher = train_teacher([tmp_path / "data"], tmp_path / "vae" / "model", tmp_path / "t", train)
    assert teacher.config.trained_modalities == ("camera",)
    saved = tmp_path / "t" / "model"
    assert hub.from_pretrained(saved).config.trained_modalities == ("camera",)
    WorldModelVectorEnv(1, world="citywalk", model=saved)  # the world it learned
    with pytest.raises(ValueError, match=r"trained on \['camera'\] actions, not on robot"):
        WorldModelVectorEnv(1, world="robot", model=saved)
    with pytest.raises(ValueError, match=r"denoiser is untrained .* train teacher --data"):
        WorldModelVectorEnv(1, world="citywalk", model=tmp_path / "vae" / "model")
    with pytest.raises(ValueError, match=r"trained_modalities \['arm'\] are not among"):
        dataclasses.replace(teacher.config, trained_modalities=("arm",))


def test_a_student_learns_its_teachers_guidance_and_samples_without_it(tmp_path, monkeypatch):
    """``train_student`` hands the loss the teacher's own action guidance where the config
    leaves it None, and its memory guidance as given; the student then samples without the
    guidance it learned (a memory-guided target: memory guidance 1), and keeps the teacher's
    memory guidance where its target had none."""
    from gym_worldmodel.training import recipes

    collect(
        SquareSource(), tmp_path / "data", episodes=3, steps=12, heldout_every=3, progress=False
    )
    config = WorldModelConfig.tiny()
    teacher = WorldModel(
        dataclasses.replace(
            config,
            sampler=dataclasses.replace(config.sampler, guidance_scale=1.5, memory_guidance=3.0),
        )
    )
    hub.save_pretrained(teacher, tmp_path / "teacher")
    seen = []
    real = recipes.student_loss
    monkeypatch.setattr(recipes, "student_loss", lambda *a, **k: seen.append(a[7]) or real(*a, **k))
    train = TrainConfig(steps=1, batch_size=2, lr=1e-3, save_every=1, seed=0)
    data = [tmp_path / "data"]
    plain = recipes.train_student(data, tmp_path / "teacher", tmp_path / "a", train)
    assert seen[-1] == DistillConfig(teacher_guidance=1.5, teacher_memory_guidance=1.0)
    assert (plain.config.sampler.guidance_scale, plain.config.sampler.memory_guidance) == (1, 3)
    leaned = recipes.train_student(
        data,
        tmp_path / "teacher",
        tmp_path / "b",
        train,
        distill=DistillConfig(teacher_memory_guidance=2.0),
    )
    assert seen[-1] == DistillConfig(teacher_guidance=1.5, teacher_memory_guidance=2.0)
    assert (leaned.config.sampler.guidance_scale, leaned.config.sampler.memory_guidance) == (1, 1)


def test_a_students_record_is_that_of_the_weights_it_starts_from(tmp_path):
    from gym_worldmodel.training.recipes import train_student

    opts = dict(episodes=3, steps=12, heldout_every=3, progress=False)
    collect(SquareSource(), tmp_path / "data", **opts)
    config = WorldModelConfig.tiny()
    for name, trained in (("teacher", ("camera", "robot")), ("init", ()), ("old", None)):
        model = WorldModel(dataclasses.replace(config, trained_modalities=trained))
        hub.save_pretrained(model, tmp_path / name)
    train = TrainConfig(steps=1, batch_size=2, lr=1e-3, save_every=1, seed=0)
    data, teacher = [tmp_path / "data"], tmp_path / "teacher"
    # a copy of the teacher adds camera to what the teacher learned; another init, to its own
    assert train_student(data, teacher, tmp_path / "a", train).config.trained_modalities == (
        "camera",
        "robot",
    )
    student = train_student(data, teacher, tmp_path / "b", train, init=tmp_path / "init")
    assert student.config.trained_modalities == ("camera",)
    student = train_student(data, teacher, tmp_path / "c", train, init=tmp_path / "old")
    assert student.config.trained_modalities is None  # a line from before the record: unknown
    for name, trained in (("robot-teacher", ("robot",)), ("vae-run", ())):  # nothing to distil
        hub.save_pretrained(
            WorldModel(dataclasses.replace(config, trained_modalities=trained)), tmp_path / name
        )
        with pytest.raises(DatasetError, match=r"never learned \['camera'\] actions"):
            train_student(data, tmp_path / name, tmp_path / name / "run", train)
        assert not (tmp_path / name / "run").exists()
    with pytest.raises(ValueError, match="trained_modalities must be modality names"):
        dataclasses.replace(config, trained_modalities="camera")
    listed = dataclasses.replace(config, trained_modalities=["camera", "camera"])
    assert listed.trained_modalities == ("camera",)


def test_a_checkpoint_keeps_the_start_frames_of_the_worlds_it_was_trained_from(tmp_path):
    from gym_worldmodel.files import checkpoint_start_frames
    from gym_worldmodel.training.start_frames import write_checkpoint_start_frames

    frames = {w: np.full((2, 8, 8, 3), i, np.uint8) for i, w in enumerate(["robot", "citywalk"])}
    write_checkpoint_start_frames(tmp_path / "init", frames)
    mine = {"citywalk": np.full((3, 8, 8, 3), 9, np.uint8)}
    write_checkpoint_start_frames(tmp_path / "run", mine, carry_from=tmp_path / "init")
    for world, expected in (("robot", frames["robot"]), ("citywalk", mine["citywalk"])):
        with np.load(checkpoint_start_frames(tmp_path / "run", world)) as saved:
            assert np.array_equal(saved["frames"], expected)


def test_a_world_runs_at_the_frame_rate_of_its_data(tmp_path):
    from gym_worldmodel.training.recipes import train_teacher, train_vae

    class Fast(SquareSource):
        info = {**SquareSource.info, "fps": 24}

    for name, source in (("fast", Fast()), ("slow", SquareSource())):
        collect(source, tmp_path / name, episodes=3, steps=4, heldout_every=3, progress=False)
    train = TrainConfig(steps=1, batch_size=2, lr=1e-3, save_every=1, seed=0)
    model = train_vae([tmp_path / "fast"], tmp_path / "vae", WorldModelConfig.tiny(), train, False)
    assert model.config.fps == 24
    with pytest.raises(DatasetError, match=r"recorded at \[16, 24\] frames/s: one per model"):
        train_vae([tmp_path / "fast", tmp_path / "slow"], tmp_path / "x", model.config, train)
    with pytest.raises(DatasetError, match="slow: recorded at 16 frames/s, this model runs at 24"):
        train_teacher([tmp_path / "slow"], tmp_path / "vae" / "model", tmp_path / "t", train)


def test_a_stopped_vae_run_leaves_a_loadable_model(tmp_path, monkeypatch):
    from gym_worldmodel.training import recipes

    data = tmp_path / "data"
    collect(SquareSource(), data, episodes=3, steps=4, heldout_every=3, progress=False)
    calls, loss = [], recipes.vae_loss

    def stopping(*args):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt("stopped")
        return loss(*args)

    monkeypatch.setattr(recipes, "vae_loss", stopping)
    train = TrainConfig(steps=5, batch_size=2, lr=1e-3, save_every=1, seed=0)
    with pytest.raises(KeyboardInterrupt):
        recipes.train_vae([data], tmp_path / "run", WorldModelConfig.tiny(), train, progress=False)
    model = hub.from_pretrained(tmp_path / "run" / "model")  # written at step 2's checkpoint
    assert model.config.vae.scaling_factor != 1.0  # with the latent scale of that moment


def test_a_run_killed_after_its_first_checkpoint_leaves_its_start_frames(tmp_path, monkeypatch):
    """Written with each checkpoint, not when the run ends: the data's own (not the init's of
    that world), and the other worlds' of the checkpoint the run started from."""
    from gym_worldmodel.files import checkpoint_start_frames
    from gym_worldmodel.training import recipes
    from gym_worldmodel.training.start_frames import (
        pick_world_start_frames,
        write_checkpoint_start_frames,
    )

    data = tmp_path / "data"
    collect(SquareSource(), data, episodes=4, steps=10, heldout_every=4, progress=False)
    own = pick_world_start_frames([data])["citywalk"]

    def killed_at_step_2(name):
        loss, calls = getattr(recipes, name), []

        def killed(*args, **kwargs):
            calls.append(1)
            if len(calls) == 2:  # step 1 was checkpointed (--save-every 1)
                raise KeyboardInterrupt("killed")
            return loss(*args, **kwargs)

        monkeypatch.setattr(recipes, name, killed)

    def saved(run, world):
        with np.load(checkpoint_start_frames(tmp_path / run / "model", world)) as file:
            return file["frames"]

    killed_at_step_2("vae_loss")
    argv = ["--data", str(data), "--steps", "4", "--batch-size", "2", "--save-every", "1"]
    argv += ["--no-progress"]
    with pytest.raises(KeyboardInterrupt):
        train_main(["vae", *argv, "--out", str(tmp_path / "vae"), "--preset", "tiny"])
    assert torch.load(tmp_path / "vae" / "checkpoint.pt", weights_only=True)["step"] == 1
    assert np.array_equal(saved("vae", "citywalk"), own)
    other = {w: np.full((2, 32, 32, 3), i, np.uint8) for i, w in enumerate(["citywalk", "robot"])}
    write_checkpoint_start_frames(tmp_path / "vae" / "model", other)
    killed_at_step_2("teacher_loss")
    init = ["--init", str(tmp_path / "vae" / "model")]
    with pytest.raises(KeyboardInterrupt):
        train_main(["teacher", *argv, *init, "--out", str(tmp_path / "teacher")])
    assert np.array_equal(saved("teacher", "citywalk"), own)
    assert np.array_equal(saved("teacher", "robot"), other["robot"])


def test_memory_training_on_posed_world_data_without_poses_is_refused(tmp_path):
    from gym_worldmodel.training.recipes import train_teacher

    collect(SquareSource(), tmp_path / "data", episodes=3, steps=6, heldout_every=3, progress=False)
    vae = hub.save_pretrained(WorldModel(WorldModelConfig.tiny()), tmp_path / "vae")
    train = TrainConfig(steps=1, batch_size=2, lr=1e-3, save_every=1, seed=0)
    with pytest.raises(DatasetError, match="memory retrieves camera chunks by pose, and its"):
        train_teacher([tmp_path / "data"], vae, tmp_path / "t", train, memory=True, progress=False)
    assert not (tmp_path / "t").exists()


def test_anchor_ego_without_driving_data_is_refused(tmp_path):
    """It would give the checkpoint the driving world's car-following anchors without a
    driving frame to learn them from."""
    collect(SquareSource(), tmp_path / "data", episodes=3, steps=6, heldout_every=3, progress=False)
    init = hub.save_pretrained(WorldModel(WorldModelConfig.tiny()), tmp_path / "init")
    train = TrainConfig(steps=1, batch_size=2, save_every=1)
    with pytest.raises(DatasetError, match="none of the data is the driving world's"):
        train_self_forcing([tmp_path / "data"], init, tmp_path / "sf", train, anchor_ego=True)
    assert not (tmp_path / "sf").exists()
