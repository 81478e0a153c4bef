"""Evaluation and distillation on tiny models: metrics, the student loss, eval end to end."""

from __future__ import annotations

import dataclasses
import json
import re

import numpy as np
import pytest
import torch
from conftest import randomize
from test_training import SquareSource, moving_square_episode

from gym_worldmodel import hub
from gym_worldmodel.evaluation import (
    EvalConfig,
    evaluate_world,
    frame_motion,
    gain_interval,
    long_inputs,
    pooled_psnr,
    psnr,
    ratio_text,
    rollout,
    scene_motion_by_key,
    ssim,
    write_report,
)
from gym_worldmodel.evaluation.open_loop import JOIN_OFFSET
from gym_worldmodel.models import WorldModel, WorldModelConfig
from gym_worldmodel.sources.collect import collect
from gym_worldmodel.sources.episodes import DatasetError, Episode
from gym_worldmodel.training.distill import DistillConfig, student_loss


def test_psnr_and_ssim_reference_values():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (2, 32, 32, 3), dtype=np.uint8)
    b = a.copy()
    b[0, 0, 0, 0] ^= 1  # one value off by one: MSE = 1 / (32 * 32 * 3)
    assert np.isclose(psnr(a, b)[0], 10 * np.log10(255**2 * 32 * 32 * 3))
    assert np.allclose(ssim(a, a), 1.0)
    noise = rng.integers(0, 256, a.shape, dtype=np.uint8)
    assert (ssim(a, noise) < 0.1).all() and (psnr(a, noise) < 10).all()


def test_metrics_take_uint8_frames_of_one_size_and_say_so():
    """Float frames in [0, 1] were scored on the 0-255 scale (0 against 0.5: 54 dB)."""
    frames = np.zeros((2, 16, 16, 3), np.uint8)
    for a, b, match in (
        (np.zeros((16, 16, 3)), np.full((16, 16, 3), 0.5), r"a must be uint8 frames .*float64"),
        (frames, frames[:, :8], r"frames of two shapes, .*fit_frames"),
        (frames[0], [[0]], "b must be uint8 frames .*got list"),
    ):
        for metric in (psnr, pooled_psnr, ssim):
            with pytest.raises(ValueError, match=match):
                metric(a, b)
    with pytest.raises(ValueError, match=r"\(8, 8\) pixels; this metric needs 11 a side"):
        ssim(frames[:, :8, :8], frames[:, :8, :8])
    assert psnr(frames, frames[:1]).shape == (2,)  # leading axes broadcast, as before


def test_pooled_psnr_is_bounded_by_the_frames_that_differ():
    """An exact repeat does not swamp the figure: it is the PSNR of the mean error."""
    rng = np.random.default_rng(1)
    a = rng.integers(0, 256, (2, 16, 16, 3), dtype=np.uint8)
    b = a.copy()
    b[1] = np.clip(a[1].astype(int) + 4, 0, 255)  # frame 0 repeats exactly, frame 1 is off
    mse = ((a[1].astype(float) - b[1]) ** 2).mean() / 2
    assert np.isclose(pooled_psnr(a, b), 10 * np.log10(255**2 / mse))
    assert psnr(a, b).mean() > pooled_psnr(a, b) + 40  # the per-frame mean is dominated by frame 0


def test_long_rollouts_run_a_long_episode_as_recorded_else_joined_actions():
    """A long enough held-out episode gives its own actions from its first frame, and its frames."""
    rng = np.random.default_rng(0)

    def episode(n: int, pose: float | None) -> Episode:
        frames = rng.integers(0, 256, (n + 1, 4, 4, 3), dtype=np.uint8)
        actions = rng.normal(size=(n, 2)).astype(np.float32)
        return Episode(frames, actions, None if pose is None else np.full((n + 1, 4), pose), 0)

    short, long = episode(5, 1.0), episode(12, 2.0)
    own = long_inputs([short, long], rows=3, frames=10)
    assert own.recorded is not None and own.recorded.shape == (3, 11, 4, 4, 3)
    for r in range(3):
        np.testing.assert_array_equal(own.actions[r], long.actions[:10])
        np.testing.assert_array_equal(own.starts[r], long.frames[0])
        np.testing.assert_array_equal(own.recorded[r], long.frames[:11])
    assert (own.poses == 2.0).all()
    # none long enough: every episode's actions joined, each row further on, episode r's start
    joined = long_inputs([short, long], rows=2, frames=20)
    assert joined.recorded is None
    every = np.concatenate([short.actions, long.actions])
    for r in range(2):
        expect = np.resize(np.roll(every, -r * JOIN_OFFSET, 0), (20, 2))
        np.testing.assert_array_equal(joined.actions[r], expect)
    np.testing.assert_array_equal(joined.starts, np.stack([short.frames[0], long.frames[0]]))
    np.testing.assert_array_equal(joined.poses[:, 0], [1.0, 2.0])
    assert long_inputs([episode(12, None)], rows=1, frames=10).poses is None


def test_gain_interval_resamples_episodes_and_brackets_the_pooled_gain():
    rng = np.random.default_rng(0)
    truth = rng.integers(0, 256, (6, 2, 8, 8, 3), dtype=np.uint8)
    noisy = lambda s: np.clip(truth + rng.normal(0, s, truth.shape), 0, 255).astype(np.uint8)  # noqa: E731
    good, copy = noisy(5), noisy(20)
    episodes = np.array([0, 0, 1, 1, 2, 2])
    lo, hi = gain_interval(good, copy, truth, episodes)
    gain = pooled_psnr(good, truth) - pooled_psnr(copy, truth)
    assert 10 < lo <= gain <= hi < 14  # noise 4x smaller: about 12 dB
    assert gain_interval(copy, copy, truth, episodes) == (0.0, 0.0)
    one = gain_interval(good, copy, truth, np.zeros(6, int))  # one episode: nothing to resample
    assert one[0] == pytest.approx(gain) and one[1] == pytest.approx(gain)


def test_frame_motion_is_the_mean_change_between_successive_frames():
    still = np.full((2, 4, 8, 8, 3), 100, np.uint8)
    assert frame_motion(still) == 0.0
    moving = still.copy()
    moving[:, 1::2] = 110  # every step changes every pixel by 10, up or down
    assert frame_motion(moving) == 10.0
    moving[1] = 100  # a row that stands still halves the mean
    assert frame_motion(moving) == 5.0


def test_scene_motion_by_key_reads_each_key_off_the_picture():
    """A scene that moves 3 px right under yaw left and 2 px left under yaw right: each key's
    mean shift is read; a key never held has no row."""
    rng = np.random.default_rng(0)
    scene = rng.integers(0, 256, (32, 96, 3)).astype(np.uint8).repeat(2, 0)  # (64, 96, 3)
    rows, x, actions = 2, 16, np.zeros((2, 5, 12), np.float32)
    actions[..., 0] = 1  # no translation
    actions[:, :3, 6], actions[:, 3:, 7] = 1, 1  # yaw left, then yaw right
    views = [scene[:, x : x + 64]]  # the start, then one view per action
    for yaw_left in (True,) * 3 + (False,) * 2:
        x += -3 if yaw_left else 2  # the window moves left: the scene moves right in it
        views.append(scene[:, x : x + 64])
    frames = np.stack([np.stack(views[1:])] * rows)
    first = np.stack([views[0]] * rows)
    table = scene_motion_by_key(first, frames, actions)
    assert set(table) == {"rotation yaw left", "rotation yaw right"}
    assert table["rotation yaw left"]["frames"] == 6 and table["rotation yaw right"]["frames"] == 4
    assert table["rotation yaw left"]["mean"] == pytest.approx(3.0)
    assert table["rotation yaw right"]["mean"] == pytest.approx(-2.0)
    assert table["rotation yaw left"]["unit"] == "x shift, px/frame"


def test_control_by_horizon_scores_each_rollouts_windows_of_each_span():
    """A probe that scores the mean of what it is given, on windows holding 100 * rollout +
    step: each span must see exactly its steps in every rollout."""
    from gym_worldmodel.evaluation import control_by_horizon

    class MeanProbe:
        def score(self, windows, targets):
            return float(windows.mean())

    steps = np.array([1, 1, 2, 3, 4, 5, 6])  # the step of each window in one rollout
    rows = 3
    values = (100 * np.arange(rows)[:, None] + steps[None]).reshape(-1).astype(float)
    table = control_by_horizon(
        MeanProbe(), values, values + 0.5, np.zeros(len(values)), steps, rows, (4, 1, 16)
    )
    assert list(table) == [1, 4, 16]
    for h, span in ((1, [1]), (4, [2, 3, 4]), (16, [5, 6])):
        expected = (100 * np.arange(rows)[:, None] + np.array(span)[None]).mean()
        assert table[h]["real"] == pytest.approx(expected)
        assert table[h]["ratio"] == pytest.approx((expected + 0.5) / expected)
    assert [v["windows"] for v in table.values()] == [2 * rows, 3 * rows, 2 * rows]


def test_no_controllability_ratio_where_the_probe_reads_nothing_from_real_frames():
    from gym_worldmodel.evaluation import MIN_REAL_SCORE, control_ratio

    assert control_ratio(0.45, 0.9) == pytest.approx(0.5)
    assert np.isnan(control_ratio(-0.26, 0.003))  # was -90.89 in a driving report
    assert np.isnan(control_ratio(0.2, MIN_REAL_SCORE / 2)) and not np.isnan(
        control_ratio(0.2, MIN_REAL_SCORE)
    )
    assert ratio_text(control_ratio(-0.26, 0.003)) == "n/a" and ratio_text(0.5) == "0.50"
    # a key accuracy no better than always answering the most common keys: no ratio either
    assert np.isnan(control_ratio(1.0, 1.0, chance=1.0)) and np.isnan(control_ratio(0.5, 0.9, 0.88))
    assert control_ratio(0.45, 0.9, chance=0.5) == pytest.approx(0.5)


def test_the_report_writes_n_a_for_scores_it_has_none_of():
    """A dimension whose action never varies in the held-out frames has no R^2: "nan" in the
    report read as a failure of the eval; it says n/a."""
    from gym_worldmodel.evaluation.report import _control_by_horizon_table, _control_paragraph

    nan = float("nan")
    control = {
        "metric": "R^2",
        "dims": [],
        "real_per_dim": {"steering": nan, "acceleration": 0.25},
        "generated_per_dim": {"steering": nan, "acceleration": 0.125},
        "real": nan,
        "generated": nan,
        "ratio": nan,
        "motion_real": 1.0,
        "motion_generated": 2.0,
        "by_horizon": {"1": {"steps": [1, 1], "real": nan, "generated": 0.5, "ratio": nan}},
    }
    text = _control_paragraph(control) + "\n".join(_control_by_horizon_table(control))
    assert "nan" not in text
    assert "steering n/a / n/a, acceleration 0.25 / 0.12" in text
    assert "real n/a, generated n/a, ratio **n/a**" in text and "| real | n/a |" in text


def test_student_loss_is_zero_when_student_is_teacher_at_one_step():
    """Same weights, one Euler step each: the student's x0 prediction is the teacher's target,
    computed once through the cache and once through ``forward_sequence``."""
    config = WorldModelConfig.tiny()
    teacher = randomize(WorldModel(config)).eval()
    student = WorldModel(config).eval()
    student.load_state_dict(teacher.state_dict())
    sampler = dataclasses.replace(config.sampler, nfe=1, stochastic=False)
    f, n = config.dit.chunk_frames, 5
    gen = torch.Generator().manual_seed(0)
    latents = torch.randn(3, n * f, 4, 16, 16, generator=gen)
    actions = torch.randn(3, n * f, config.dit.action_dim, generator=gen)
    modality = torch.tensor([0, 1, 2])
    loss, parts = student_loss(
        student.dit,
        sampler,
        teacher.dit,
        latents,
        actions,
        modality,
        gen,
        DistillConfig(teacher_nfe=1, gt_weight=0.0),
    )
    assert parts["distill"] < 1e-8 and parts["ground_truth"] > 1e-2
    loss.backward()  # the gradient reaches the student only
    assert any(p.grad is not None for p in student.dit.parameters())
    assert all(p.grad is None for p in teacher.parameters())


def _own_teacher(seed: int) -> tuple:
    """A tiny teacher, a one-step student holding its weights, the student's sampler, and a
    batch of 2 windows of 4 chunks (latents, actions) drawn from ``seed``."""
    config = WorldModelConfig.tiny()
    teacher = randomize(WorldModel(config)).eval()
    student = WorldModel(config).eval()
    student.load_state_dict(teacher.state_dict())
    sampler = dataclasses.replace(config.sampler, nfe=1, stochastic=False, guidance_scale=1.0)
    f, n = config.dit.chunk_frames, 4
    data = torch.Generator().manual_seed(seed)
    latents = torch.randn(2, n * f, 4, 16, 16, generator=data)
    actions = torch.randn(2, n * f, config.dit.action_dim, generator=data)
    return teacher, student, sampler, latents, actions, data


def test_a_guided_teacher_target_is_the_guided_flow():
    """With guidance, the student (the teacher's weights, one step, no guidance of its own)
    misses the teacher's guided target by exactly the guidance term; at scale 1 it hits it."""
    teacher, student, sampler, latents, actions, _ = _own_teacher(1)
    modality = torch.tensor([0, 2])
    distill = {}
    for scale in (1.0, 3.0):
        gen = torch.Generator().manual_seed(0)
        cfg = DistillConfig(teacher_nfe=1, gt_weight=0.0, teacher_guidance=scale)
        _, parts = student_loss(
            student.dit, sampler, teacher.dit, latents, actions, modality, gen, cfg
        )
        distill[scale] = parts["distill"]
    assert distill[1.0] < 1e-8 < 1e-3 < distill[3.0]


def test_a_memory_guided_teacher_target_leans_on_memory_where_rows_hold_it():
    """With memory guidance, a student holding the teacher's weights misses the target only in
    the rows that hold retrieved memory, and exactly by the guidance term there: the loss of a
    one-step student against its own guided self is zero at scale 1, and zero at any scale
    where no row holds memory."""
    teacher, student, sampler, latents, actions, data = _own_teacher(2)
    f = student.config.dit.chunk_frames
    memory = torch.randn(2, f, 4, 16, 16, generator=data)
    modality = torch.tensor([0, 0])

    def distill(scale: float, valid: list[bool]) -> float:
        cfg = DistillConfig(teacher_nfe=1, gt_weight=0.0, teacher_memory_guidance=scale)
        _, parts = student_loss(
            student.dit,
            sampler,
            teacher.dit,
            latents,
            actions,
            modality,
            torch.Generator().manual_seed(0),
            cfg,
            memory=memory,
            memory_valid=torch.tensor(valid),
        )
        return float(parts["distill"])

    both = distill(2.5, [True, True])
    assert distill(1.0, [True, True]) < 1e-8 < 1e-4 < both
    assert distill(2.5, [False, False]) < 1e-8  # no row holds memory: nothing to guide
    # a row without memory adds nothing: the loss (a mean over both rows) splits by row
    first, second = distill(2.5, [True, False]), distill(2.5, [False, True])
    assert first > 1e-6 and second > 1e-6
    assert first + second == pytest.approx(both, rel=1e-4)


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("teacher_nfe", 0, "teacher_nfe must be in"),
        ("teacher_nfe", 10**9, "teacher_nfe must be in"),
        ("gt_weight", float("nan"), "gt_weight is a loss weight"),
        ("gt_weight", -0.5, "gt_weight is a loss weight"),
        ("teacher_guidance", -1e308, "teacher_guidance must be in"),
        ("teacher_memory_guidance", -1.0, "teacher_memory_guidance must be in"),
        ("teacher_memory_guidance", 1e9, "teacher_memory_guidance must be in"),
    ],
)
def test_distill_settings_out_of_range_are_refused(field, value, message):
    """As the sampler's: a teacher of 10**9 steps would run for ever, a NaN weight train NaN."""
    with pytest.raises(ValueError, match=message):
        DistillConfig(**{field: value})


def test_rollouts_of_a_world_moving_with_the_car_start_from_a_pose():
    model = WorldModel(WorldModelConfig.tiny()).with_anchor_ego(("driving",), ())
    model = randomize(model).eval()
    start = np.random.default_rng(0).integers(0, 256, (1, 32, 32, 3), dtype=np.uint8)
    actions = np.zeros((1, 4, 2), np.float32)
    with pytest.raises(ValueError, match="start_poses"):
        rollout(model, "driving", start, actions, 0)
    parked, moving = (
        rollout(model, "driving", start, actions, 0, start_poses=np.array([[0, 0, 0, v]]))
        for v in (0.0, 20.0)
    )
    assert not np.array_equal(parked, moving)  # the anchors moved with the car
    plain = randomize(WorldModel(WorldModelConfig.tiny())).eval()  # ignores them
    assert np.array_equal(
        rollout(plain, "driving", start, actions, 0),
        rollout(plain, "driving", start, actions, 0, start_poses=np.array([[0, 0, 0, 20.0]])),
    )


def test_eval_end_to_end_on_a_tiny_model(tmp_path, monkeypatch):
    from gym_worldmodel.evaluation import open_loop

    data = tmp_path / "data"  # with poses, which the start poses are read from
    collect(RevisitSquareSource(), data, episodes=6, steps=12, heldout_every=3, progress=False)
    model = randomize(WorldModel(dataclasses.replace(WorldModelConfig.tiny(), fps=16))).eval()
    starts, window_starts = [], open_loop.window_starts
    monkeypatch.setattr(
        open_loop, "window_starts", lambda *a: starts.append(a) or window_starts(*a)
    )
    result, sample = evaluate_world(model, data, EvalConfig.budget(), teacher=model, progress=False)
    assert len(starts) == 1  # every run, its scores and their episodes from one set of starts
    assert result.world == "citywalk" and result.rollouts == 2
    assert set(result.psnr) == {
        "model",
        "copy last frame",
        "teacher (4 NFE)",
        "autoencoder (ceiling)",
    }
    for table in (*result.psnr.values(), *result.ssim.values()):
        assert set(table) == {1, 3} and all(np.isfinite(v) for v in table.values())
    assert 0.0 <= result.control["real"] <= 1.0 and result.control["metric"] == "key accuracy"
    assert 0.2 <= result.control["majority"] <= 1.0  # 5 keys: the most common has >= 1/5
    c = result.control  # measured from chance: a probe that ignores the frames scores 0
    if c["real"] - c["majority"] >= 0.05:
        expected = (c["generated"] - c["majority"]) / (c["real"] - c["majority"])
        assert c["above_chance"] == pytest.approx(expected)
    else:  # the tiny random model's probe reads nothing beyond chance
        assert np.isnan(c["above_chance"])
    assert all("above_chance" in v and "chance" in v for v in c["by_horizon"].values())
    # per key group, a row per recorded key: every window is counted once, read as one key
    confusion = np.asarray(result.control["confusion_generated"])
    assert confusion.shape == (2, 5, 5)
    assert (confusion.sum(axis=(1, 2)) == confusion[0].sum()).all() and confusion.sum() > 0
    diagonal = np.trace(confusion, axis1=1, axis2=2) / confusion.sum(axis=(1, 2))
    assert diagonal.mean() == pytest.approx(result.control["generated"])  # the key accuracy
    # by step: the spans between horizons split the windows, so their scores average to it
    by_h = result.control["by_horizon"]
    assert [v["steps"] for v in by_h.values()] == [[1, 1], [2, 3]]
    windows = np.array([v["windows"] for v in by_h.values()])
    assert windows.sum() == confusion[0].sum() and (windows > 0).all()
    for who in ("real", "generated"):
        mean = sum(v["windows"] * v[who] for v in by_h.values()) / windows.sum()
        assert mean == pytest.approx(result.control[who])
    stab = result.stability
    assert np.isfinite(stab["fraction_in_range"])
    # the verdict's range takes in the autoencoded real frames as well as the recorded ones
    assert stab["fraction_in_range"] >= stab["fraction_in_real_range"]
    assert stab["outside_real_range"] or not stab["collapsed"]
    assert len(result.stability["curve"]) == 4  # one (last) frame per step
    # the held-out episodes outlast the 4 steps: their own actions, and their frames' figure
    assert stab["actions"] == "recorded" and 0.0 <= stab["recorded_fraction_in_range"] <= 1.0
    report = tmp_path / "docs" / "evaluation.md"
    write_report([result], {"citywalk": sample}, tmp_path / "docs" / "eval", report, "cmd")
    text = report.read_text()
    assert "| model |" in text and "Controllability" in text and "cmd" in text
    assert "autoencoded [" in text and "most common keys scores" in text
    assert "their own actions from their first frame" in text
    assert "The recorded frames under the same actions:" in text
    assert f"real {result.control['motion_real']:.2f}, generated" in text
    assert set(result.gain_interval) == {"model", "teacher (4 NFE)"}  # copying is the baseline
    for name, spans in result.gain_interval.items():
        for h, (lo, hi) in spans.items():
            gain = result.psnr[name][h] - result.psnr["copy last frame"][h]
            assert lo - 1e-9 <= gain <= hi + 1e-9, (name, h)
    assert "with a 90% interval from resampling the" in text
    assert "| key | windows | recorded | generated | read most on generated |" in text
    assert "| steps | 1 | 2-3 |" in text and f"| ratio | {ratio_text(by_h[1]['ratio'])} |" in text
    moved = result.control["scene_motion_generated"]
    assert moved.keys() == result.control["scene_motion_real"].keys() and moved
    assert "| key | frames | measure | recorded | generated |" in text
    for name in ("open_loop.png", "stability.png", "citywalk_strip.png", "results.json"):
        assert (tmp_path / "docs" / "eval" / name).stat().st_size > 0
    # every image the report links is where the link says, wherever the report is written
    elsewhere = tmp_path / "reports" / "run.md"
    write_report([result], {"citywalk": sample}, tmp_path / "figs", elsewhere, "cmd")
    for page, folder in ((report, "eval"), (elsewhere, "../figs")):
        links = re.findall(r"!\[[^]]*\]\(([^)]+)\)", page.read_text())
        assert links and all(link.startswith(folder + "/") for link in links), links
        assert all((page.parent / link).is_file() for link in links)
    raw = (tmp_path / "docs" / "eval" / "results.json").read_text()
    json.loads(raw, parse_constant=lambda name: pytest.fail(f"results.json holds {name}"))
    saved = json.loads((tmp_path / "docs" / "eval" / "results.json").read_text())
    assert saved[0]["psnr"]["model"]["1"] == result.psnr["model"][1]
    hub.save_pretrained(model, tmp_path / "model")  # the CLI path loads the same checkpoint


CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=CUDA)])
def test_eval_and_revisit_run_on_the_models_device(tmp_path, device):
    from gym_worldmodel.evaluation.revisit import evaluate_revisit

    data, revisit = tmp_path / "data", tmp_path / "revisit"
    collect(SquareSource(), data, episodes=6, steps=12, heldout_every=3, progress=False)
    collect(RevisitSquareSource(), revisit, episodes=4, steps=12, heldout_every=2, progress=False)
    config = dataclasses.replace(WorldModelConfig.tiny(), fps=16)
    model = randomize(WorldModel(config)).eval().to(device)
    result, _ = evaluate_world(model, data, EvalConfig.budget(), teacher=model, progress=False)
    memory = evaluate_revisit(model, revisit, min_gap=6, progress=False, oracle=True)
    assert model.device.type == device  # the engines ran it where it was, not on the CPU
    figures = [v for table in result.psnr.values() for v in table.values()]
    figures += [memory.psnr_on, memory.psnr_off, memory.psnr_oracle]
    assert np.isfinite(figures).all()


def test_dtype_benchmark_compares_float32_and_bf16_rollouts_end_to_end(tmp_path, capsys):
    from gym_worldmodel.bench_dtype import dtype_benchmark

    data = tmp_path / "data"
    collect(SquareSource(), data, episodes=6, steps=12, heldout_every=3, progress=False)
    row = dtype_benchmark([data], (1, 3), "random-tiny")["citywalk"]
    for name in ("float32", "bfloat16", "bf16_vs_float32"):
        assert set(row[name]) == {1, 3} and np.isfinite(list(row[name].values())).all()
    assert row["bf16_vs_float32"][1] > row["float32"][1]  # closer to each other than to the truth
    assert "bf16 frames against float32 frames" in capsys.readouterr().out


def test_bundled_start_frames_come_from_training_episodes(tmp_path):
    from gym_worldmodel.sources.episodes import load_episodes
    from gym_worldmodel.training.start_frames import pick_start_frames, write_start_frames

    data = tmp_path / "data"
    collect(SquareSource(), data, episodes=6, steps=4, heldout_every=3, progress=False)
    path = write_start_frames(*pick_start_frames(data, 3), tmp_path / "worlds")
    assert path.parent.parent == tmp_path / "worlds"
    assert path == tmp_path / "worlds" / "citywalk" / "start_frames.npz"
    frames = np.load(path)["frames"]
    firsts = [ep.frames[0] for ep in load_episodes(data, "train")]
    distinct = len(np.unique(np.stack(firsts).reshape(len(firsts), -1), axis=0))
    assert frames.shape == (min(3, distinct), 32, 32, 3) and frames.dtype == np.uint8
    assert all(any(np.array_equal(f, g) for g in firsts) for f in frames)


def test_a_failed_ship_writes_nothing(tmp_path):
    from gym_worldmodel.cli import ship_main

    good, bad = tmp_path / "good", tmp_path / "bad"
    for data in (good, bad):
        collect(SquareSource(), data, episodes=4, steps=4, heldout_every=2, progress=False)
    shard = next(bad.glob("train-*.npz"))
    shard.write_bytes(shard.read_bytes()[:-100])
    model = hub.save_pretrained(WorldModel(WorldModelConfig.tiny()), tmp_path / "model")
    out = tmp_path / "worlds"
    with pytest.raises(DatasetError, match="SHA-256"):
        ship_main(["--model", str(model), "--data", str(good), str(bad), "--out", str(out)])
    assert not out.exists()  # neither the checkpoint nor the good dataset's start frames
    ship_main(["--model", str(model), "--data", str(good), "--out", str(out)])
    assert (out / "shared" / "model.safetensors").exists()
    assert (out / "citywalk" / "start_frames.npz").exists()


def test_shipping_into_the_package_takes_no_start_frames_of_the_run(tmp_path, monkeypatch):
    """A shipped world's env starts from its bundled frames; a checkpoint's own would win."""
    from gym_worldmodel import files
    from gym_worldmodel.cli import ship_main
    from gym_worldmodel.training.start_frames import write_checkpoint_start_frames

    data = tmp_path / "data"
    collect(SquareSource(), data, episodes=4, steps=4, heldout_every=2, progress=False)
    model = hub.save_pretrained(WorldModel(WorldModelConfig.tiny()), tmp_path / "model")
    write_checkpoint_start_frames(model, {"robot": np.zeros((1, 32, 32, 3), np.uint8)})
    monkeypatch.setattr(files, "WORLDS_DIR", tmp_path / "package")
    ship_main(["--model", str(model), "--data", str(data), "--into-package"])
    assert not (tmp_path / "package" / "shared" / files.START_FRAMES).exists()
    ship_main(["--model", str(model), "--data", str(data), "--out", str(tmp_path / "own")])
    assert (tmp_path / "own" / "shared" / files.START_FRAMES / "robot.npz").exists()  # carried


def test_episode_poses_must_be_finite():
    ep = moving_square_episode(0, 4)
    poses = np.zeros((len(ep.frames), 4))
    poses[2, 1] = np.nan
    with pytest.raises(DatasetError, match=r"\(seed 0\) poses contain NaN or inf, first at row 2"):
        dataclasses.replace(ep, poses=poses)
    actions = ep.actions.copy()
    actions[3, 0] = np.inf
    with pytest.raises(
        DatasetError, match=r"\(seed 0\) actions contain NaN or inf, first at row 3"
    ):
        dataclasses.replace(ep, actions=actions)


class RevisitSquareSource(SquareSource):
    """Squares whose camera walks 0.2 m east for half the episode, then backs up the same way."""

    def rollout(self, seed: int, steps: int):
        ep = super().rollout(seed, steps)
        half = steps // 2
        x = 0.2 * np.concatenate(
            [np.arange(half + 1), np.arange(half - 1, half - steps + half - 1, -1)]
        )
        poses = np.zeros((steps + 1, 4))
        poses[:, 0] = x[: steps + 1]
        return dataclasses.replace(ep, poses=poses)


def test_paired_interval_resamples_episodes_keeping_their_pairs():
    """A difference that every episode shares has no spread; one that flips sign from episode
    to episode has an interval around 0; the pairs are resampled together (a shift shared by
    both sides of each pair does not widen it); bad input is refused by shape."""
    from gym_worldmodel.evaluation import paired_interval

    base = np.linspace(10.0, 20.0, 20)  # episodes differ a lot; their pairs do not
    assert paired_interval(base + 1.0, base) == pytest.approx((1.0, 1.0))
    flips = base + np.where(np.arange(20) % 2 == 0, 1.0, -1.0)
    lo, hi = paired_interval(flips, base)
    assert lo < 0 < hi and hi - lo < 1.0
    assert paired_interval(flips, base) == (lo, hi)  # seeded: one report, one interval
    assert paired_interval(flips, base, level=0.5)[1] < hi
    with pytest.raises(ValueError, match="one length"):
        paired_interval([1.0, 2.0], [1.0])
    with pytest.raises(ValueError, match="2 or more"):  # one episode has no spread
        paired_interval([1.0], [0.0])
    with pytest.raises(ValueError, match="finite"):
        paired_interval([1.0, np.nan], [0.0, 0.0])
    for bad in (dict(level=1.0), dict(level=0.0), dict(draws=0)):
        with pytest.raises(ValueError, match="level must be in"):
            paired_interval([1.0, 2.0], [0.0, 0.0], **bad)


def test_revisit_frames_need_the_same_pose_long_enough_before():
    from gym_worldmodel.evaluation.revisit import first_visits, revisit_frames

    poses = np.zeros((10, 4))
    poses[:, 0] = [0, 1, 2, 3, 4, 4, 3, 2, 1, 0]
    assert revisit_frames(poses, min_gap=5).tolist() == [7, 8, 9]
    poses[9, 2] = 90.0  # same place, looking elsewhere: not a revisit
    assert revisit_frames(poses, min_gap=5).tolist() == [7, 8]
    frames, first = first_visits(poses, min_gap=5)
    assert frames.tolist() == [7, 8] and first.tolist() == [2, 1]
    poses[:, 0] = [0, 0, 0, 1, 1, 1, 1, 0, 0, 0]  # back where it stood for three frames
    poses[9, 2] = 0.0
    frames, first = first_visits(poses, min_gap=5)
    assert frames.tolist() == [7, 8, 9] and first.tolist() == [0, 0, 0]  # the first of them


def test_revisit_frames_are_binned_by_the_frame_their_place_was_first_shown_at():
    from gym_worldmodel.evaluation.revisit import FIRST_VIEW_BINS, _by_first_view, first_view_span

    first = np.array([1, 15, 16, 30, 31, 240, 241, 900])
    on = np.arange(len(first), dtype=float)
    rows = _by_first_view(first, {"on": on, "off": on - 1, "oracle": None}, on + 10)
    spans = [first_view_span(r) for r in rows]
    assert spans == ["1-15", "16-30", "31-60", "121-240", "241+"]  # 61-120 holds none
    assert [r["frames"] for r in rows] == [2, 2, 1, 1, 2]
    assert rows[0]["on"] == 0.5 and rows[0]["off"] == -0.5 and rows[0]["held"] == 10.5
    assert rows[-1]["on"] == 6.5 and rows[0]["oracle"] is None
    assert FIRST_VIEW_BINS[0] == 1  # the start frame, frame 0, is in no bin


def test_revisit_benchmark_end_to_end_on_a_tiny_model(tmp_path, capsys):
    from gym_worldmodel.evaluation.revisit import evaluate_revisit, write_revisit_report
    from gym_worldmodel.sources.episodes import DatasetError

    data = tmp_path / "revisit"
    collect(RevisitSquareSource(), data, episodes=4, steps=12, heldout_every=2, progress=False)
    model = randomize(WorldModel(dataclasses.replace(WorldModelConfig.tiny(), fps=16))).eval()
    result = evaluate_revisit(model, data, min_gap=6, progress=False, oracle=True)
    assert result.episodes == 2 and result.revisit_frames > 0 and result.hit_rate > 0
    figures = [result.psnr_on, result.psnr_off, result.ssim_on, result.ssim_off]
    assert np.isfinite([*figures, result.psnr_oracle, result.ssim_oracle]).all()
    assert np.isfinite(result.psnr_first_visit)
    assert result.psnr_oracle != result.psnr_on  # other memories, other frames
    # the revisit frames by when their place was first shown: every one of them after the start
    from gym_worldmodel.evaluation.revisit import first_visits
    from gym_worldmodel.sources.episodes import load_episodes

    shown = [first_visits(ep.poses, 6)[1] for ep in load_episodes(data, "heldout")]
    later = np.concatenate(shown)
    bins = result.by_first_view
    assert sum(b["frames"] for b in bins) == (later >= 1).sum() <= result.revisit_frames
    assert [b["first"][0] for b in bins] == sorted(b["first"][0] for b in bins)
    assert all(b["first"][0] <= later.max() for b in bins)
    assert all(np.isfinite([b["on"], b["off"], b["oracle"], b["held"]]).all() for b in bins)
    report = tmp_path / "docs" / "memory.md"
    write_revisit_report(result, tmp_path / "docs" / "eval", report, "cmd")
    assert "memory on" in report.read_text() and "recorded frames" in report.read_text()
    assert "What memory holds" in report.read_text()
    assert "| first shown at frame |" in report.read_text()
    lo, hi = result.gain_interval
    assert f"{lo:+.2f} to {hi:+.2f} dB" in report.read_text()
    saved = json.loads((tmp_path / "docs" / "eval" / "revisit.json").read_text())
    assert saved["gain_interval"] == [lo, hi]
    assert (tmp_path / "docs" / "eval" / "revisit.png").stat().st_size > 0
    # the CLI prints every figure of the report
    from gym_worldmodel.cli import main

    hub.save_pretrained(model, tmp_path / "model")
    argv = ["eval", "--revisit", "--oracle-memory", "--model", str(tmp_path / "model")]
    argv += ["--data", str(data), "--min-gap", "6", "--no-progress"]
    main([*argv, "--out", str(tmp_path / "cli"), "--report", str(tmp_path / "cli.md")])
    printed = capsys.readouterr().out
    assert f"on {result.psnr_on:.2f} dB" in printed
    assert "what memory holds (the rollout where it first showed those places): " in printed
    assert f"{result.psnr_first_visit:.2f} dB" in printed and "recorded frames" in printed
    assert "by the frame the place was first shown at: 1-15: " in printed
    assert f"the gain's 90% interval over episodes {lo:+.2f} to {hi:+.2f} dB" in printed
    # --against: the same run again, paired episode by episode with the first
    earlier = tmp_path / "cli" / "revisit.json"
    main([*argv, "--out", str(tmp_path / "again"), "--against", str(earlier)])
    printed = capsys.readouterr().out
    assert "better in 0 of 2 episodes, mean +0.00 dB, median +0.00 dB" in printed
    assert "90% interval +0.00 to +0.00 dB" in printed
    main(
        [*argv[:-3], "--min-gap", "5", "--no-progress", "--out", str(tmp_path / "gap5")]
        + ["--against", str(earlier)]
    )  # other revisit frames: the run kept, the pairing not
    assert "not compared with --against" in capsys.readouterr().err
    assert (tmp_path / "gap5" / "revisit.json").is_file()
    (tmp_path / "bad.json").write_text("{}")
    for extra, why in (
        (["--against", str(tmp_path / "bad.json")], "is not a revisit run's revisit.json"),
        (["--against", str(tmp_path / "none.json")], "No such file"),
    ):
        with pytest.raises(SystemExit):
            main([*argv, "--out", str(tmp_path / "x"), *extra])
        assert why in capsys.readouterr().err
    with pytest.raises(SystemExit):  # open-loop eval has nothing to pair
        main(["eval", "--data", str(data), "--against", str(earlier), "--out", str(tmp_path / "y")])
    assert "--against compares revisit runs: it needs --revisit" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # one report per run: a second dataset is refused, not lost
        main([*argv, "--data", str(data), str(data), "--out", str(tmp_path / "two")])
    assert "--revisit measures one dataset per run, got 2" in capsys.readouterr().err
    plain = tmp_path / "plain"
    collect(SquareSource(), plain, episodes=2, steps=12, heldout_every=2, progress=False)
    with pytest.raises(DatasetError, match="needs episodes with poses"):
        evaluate_revisit(model, plain, progress=False)
    with pytest.raises(DatasetError, match="no held-out episodes"):
        evaluate_revisit(model, data, max_episodes=0, progress=False)


def test_revisit_runs_each_episode_to_its_own_length(tmp_path, monkeypatch, capsys):
    from gym_worldmodel.evaluation import revisit
    from gym_worldmodel.evaluation.revisit import evaluate_revisit, revisit_frames

    data = tmp_path / "revisit"  # the card the model is checked against
    collect(RevisitSquareSource(), data, episodes=2, steps=12, heldout_every=2, progress=False)
    source = RevisitSquareSource()
    # 16 and 12 steps (revisits from frame 11 and 9 on), 4 steps: no pose 6 frames back
    long, short, tiny = source.rollout(0, 16), source.rollout(1, 12), source.rollout(2, 4)
    held = [long, short, tiny]
    monkeypatch.setattr(revisit, "load_episodes", lambda data, split: list(held))
    model = randomize(WorldModel(dataclasses.replace(WorldModelConfig.tiny(), fps=16))).eval()
    result = evaluate_revisit(model, data, min_gap=6, progress=False, oracle=True)
    assert "note: 1 of 3 held-out episodes left out: too short" in capsys.readouterr().err
    # every revisit of each episode counts, also past the shorter one's end (they were cut at
    # the shortest episode's 4 frames: none was left)
    counts = [len(revisit_frames(ep.poses, 6)) for ep in (long, short)]
    assert counts == [6, 4] and result.revisit_frames == 10 and result.episodes == 2
    assert len(result.curve_on) == len(result.curve_oracle) == len(result.revisit_mask) == 16
    assert np.isfinite(result.curve_on).all()
    assert result.revisit_mask[9:] == [0.5, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0]  # frames 10..16
    assert np.isfinite([result.psnr_on, result.ssim_on, result.psnr_oracle]).all()
    # an episode's figures are its own, whatever the lengths of the others
    alone = evaluate_revisit(model, data, min_gap=6, max_episodes=1, progress=False)
    assert alone.psnr_on_episodes[0] == result.psnr_on_episodes[0]
    assert alone.curve_on[12:] == result.curve_on[12:]  # frames 13..16: the long one alone
    held[1] = dataclasses.replace(short, poses=None)  # every episode's poses are checked
    with pytest.raises(DatasetError, match=r"held-out episode 1 \(seed 1\) has none"):
        evaluate_revisit(model, data, min_gap=6, progress=False)
    held[:] = [tiny]  # none long enough
    with pytest.raises(DatasetError, match="no held-out frame revisits a pose 6.* too short"):
        evaluate_revisit(model, data, min_gap=6, progress=False)


class DrivingRevisitSource(RevisitSquareSource):
    """The squares as a driving dataset: two action columns, poses (x, y, heading, speed)."""

    info = {**RevisitSquareSource.info, "world": "driving", "modality": "driving"}
    info["action_width"] = 2

    def rollout(self, seed: int, steps: int):
        ep = super().rollout(seed, steps)
        actions = np.zeros((steps, 2), np.float32)
        actions[:, 0] = 0.1  # steer a little left, so the ego shift is not zero
        poses = ep.poses.copy()
        poses[:, 3] = 25.0
        return dataclasses.replace(ep, actions=actions, poses=poses)


def test_revisit_moves_the_anchors_of_a_world_that_moves_them_with_the_car(
    tiny_model, tmp_path, monkeypatch
):
    from gym_worldmodel.envs.pose import EgoShift
    from gym_worldmodel.evaluation.revisit import evaluate_revisit

    data = tmp_path / "driving"
    collect(DrivingRevisitSource(), data, episodes=4, steps=12, heldout_every=2, progress=False)
    model = tiny_model.with_anchor_flow(("driving",)).with_anchor_ego(
        ("driving",), (12, 16, 12, 20)
    )
    model = randomize(model).eval()
    steps, step = [], EgoShift.step
    monkeypatch.setattr(EgoShift, "step", lambda self, *a: steps.append(1) or step(self, *a))
    result = evaluate_revisit(model, data, min_gap=6, progress=False)
    assert np.isfinite([result.psnr_on, result.psnr_off]).all()
    assert len(steps) == 12 // model.config.dit.chunk_frames  # once per step, as the env does


@pytest.mark.parametrize(
    "settings",
    [
        {"horizons": (0, 4)},
        {"horizons": (-1,)},
        {"horizons": ()},
        {"teacher_horizon": 0},
        {"starts_per_episode": 0},
        {"stability_rows": 0},
    ],
)
def test_eval_settings_that_cannot_run_are_refused(settings):
    with pytest.raises(ValueError, match="must be"):
        EvalConfig(**settings)


def test_open_loop_windows_take_every_row_from_the_same_start():
    from gym_worldmodel.evaluation.open_loop import open_loop_windows, window_starts

    held = [RevisitSquareSource().rollout(seed, steps) for seed, steps in ((0, 12), (1, 8))]
    windows = open_loop_windows(held, 5, 2)
    assert windows.starts == window_starts(held, 5, 2) and len(windows.starts) == 4
    assert windows.episode.tolist() == [0, 0, 1, 1]
    for r, (e, s) in enumerate(windows.starts):
        assert np.array_equal(windows.first[r], held[e].frames[s])
        assert np.array_equal(windows.truth[r], held[e].frames[s + 1 : s + 6])
        assert np.array_equal(windows.actions[r], held[e].actions[s : s + 5])
        assert np.array_equal(windows.poses[r], held[e].poses[s])
    held[1] = dataclasses.replace(held[1], poses=None)  # poses of every episode, or none
    assert open_loop_windows(held, 5, 2).poses is None


def test_held_out_episodes_missing_or_too_short_say_which():
    from gym_worldmodel.evaluation.open_loop import open_loop_windows

    with pytest.raises(DatasetError, match="d: no held-out episodes .* smaller --heldout-every"):
        open_loop_windows([], 10, 1, "d")
    short = [moving_square_episode(0, steps=4)]
    with pytest.raises(DatasetError, match=r"the 11 frames needed \(longest: 5\); collect long"):
        open_loop_windows(short, 10, 1, "d")


def sliding_square_episode(seed: int, steps: int = 60) -> Episode:
    """A square slides sideways by 3 px x steering per frame; acceleration changes nothing seen."""
    rng = np.random.default_rng(seed)
    steer = np.repeat(rng.uniform(-1, 1, steps // 6 + 1), 6)[:steps]
    accel = rng.uniform(-1, 1, steps)
    x = 16 + np.concatenate([[0.0], np.cumsum(3 * steer)])
    frames = np.full((steps + 1, 32, 32, 3), 40, np.uint8)
    for t, c in enumerate(np.round(x).astype(int) % 28):
        frames[t, 12:20, c : c + 4] = 220
    return Episode(frames, np.stack([steer, accel], 1).astype(np.float32), None, seed)


def test_probe_reads_the_action_the_frames_show_and_leaves_out_the_one_they_do_not():
    from gym_worldmodel.evaluation import episode_windows, probe_targets, train_probe

    probe = train_probe("driving", [sliding_square_episode(s) for s in range(8)], 100, seed=0)
    assert probe.visible.tolist() == [True, False]
    assert probe.validation[0] > 0.5 and probe.validation[1] < 0.1
    windows, actions = episode_windows([sliding_square_episode(100)], every=1)
    targets = probe_targets("driving", actions)
    assert probe.score(windows, targets) > 0.5  # only the steering counts
    still = np.repeat(windows[:, :1], windows.shape[1], 1)  # frames that ignore the action
    assert probe.score(still, targets) < 0.2
    # the probe measures in float32, also inside a rollout's bf16 autocast
    with torch.autocast("cpu", torch.bfloat16):
        inside = probe.predict(windows)
    assert inside.dtype == np.float32
    np.testing.assert_array_equal(inside, probe.predict(windows))


def test_probe_needs_a_validation_episode():
    from gym_worldmodel.evaluation import train_probe

    with pytest.raises(ValueError, match="2 or more training episodes"):
        train_probe("driving", [sliding_square_episode(0)], 10, seed=0)


def test_probe_leaves_out_episodes_too_short_for_a_window_and_says_when_none_is_left():
    from gym_worldmodel.evaluation import train_probe
    from gym_worldmodel.evaluation.control import PROBE_MIN_ACTIONS, _probe_split

    assert PROBE_MIN_ACTIONS == 5  # frames t-1 .. t+4 around action t
    short = [sliding_square_episode(s, steps=PROBE_MIN_ACTIONS - 1) for s in range(4)]
    long = [sliding_square_episode(s, steps=PROBE_MIN_ACTIONS) for s in range(10, 14)]
    mixed = [short[0], long[0], short[1], long[1], long[2], short[2], short[3], long[3]]
    held, fit = _probe_split(mixed)  # every 6th validates; the short ones (first of all) out
    assert [ep.seed for ep in held] == [10] and [ep.seed for ep in fit] == [11, 12, 13]
    probe = train_probe("driving", mixed, 3, seed=0)  # once an IndexError: no window
    assert probe.validation.shape == (2,)  # read on the one window of the validation episode
    # episodes of one length keep the split they had: every 6th validates
    same = [sliding_square_episode(s, steps=8) for s in range(8)]
    assert _probe_split(same) == ([same[0], same[6]], [*same[1:6], same[7]])
    with pytest.raises(DatasetError, match=r"at least 5 actions .* got 1 of 5; collect longer"):
        train_probe("driving", [*short, long[0]], 3, seed=0)
    with pytest.raises(DatasetError, match="at least 5 actions"):
        train_probe("camera", short, 3, seed=0)


def test_probe_leaves_the_callers_torch_generator_as_it_was():
    from gym_worldmodel.evaluation import train_probe

    episodes = [sliding_square_episode(s) for s in range(3)]
    torch.manual_seed(123)
    torch.rand(3)  # a state no seed gives
    before = torch.get_rng_state()
    first = train_probe("driving", episodes, 3, seed=0)
    assert torch.equal(torch.get_rng_state(), before)
    torch.manual_seed(7)  # the probe is its seed's alone, whatever the caller's state
    again = train_probe("driving", episodes, 3, seed=0)
    for a, b in zip(first.net.state_dict().values(), again.net.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_controllability_above_chance_counts_from_what_ignoring_the_frames_scores():
    from gym_worldmodel.evaluation.control import above_chance, majority_score

    targets = np.array([[1, 0], [1, 0], [1, 2], [3, 0]])  # most common: 3 of 4 in each group
    assert majority_score(targets) == pytest.approx(0.75)
    # the city walk's published figures: real 0.928, generated 0.428, majority 0.487
    assert above_chance(0.428, 0.928, 0.487) == pytest.approx(-0.1338, abs=1e-4)
    assert above_chance(0.9, 0.9, 0.5) == pytest.approx(1.0)
    assert np.isnan(above_chance(0.5, 0.52, 0.5))  # real frames barely beat chance


def test_eval_flags_set_their_fields_over_budget_and_default_settings():
    from gym_worldmodel.cli.evaluate import _parser, eval_config

    parse = _parser().parse_args
    base = ["--data", "d"]
    assert eval_config(parse(base)) == EvalConfig()
    assert eval_config(parse([*base, "--budget"])) == EvalConfig.budget()
    given = eval_config(parse([*base, "--budget", "--horizons", "1", "2", "--probe-steps", "9"]))
    assert given == dataclasses.replace(EvalConfig.budget(), horizons=(1, 2), probe_steps=9)
    assert eval_config(parse([*base, "--stability-rows", "7"])).stability_rows == 7


@pytest.mark.parametrize(
    "given, refused, reader",
    [
        (["--revisit", "--teacher", "t"], "--teacher", "the open-loop evaluation"),
        (["--revisit", "--budget"], "--budget", "the open-loop evaluation"),
        (["--revisit", "--horizons", "1", "2"], "--horizons", "the open-loop evaluation"),
        (["--revisit", "--probe-steps", "5"], "--probe-steps", "the open-loop evaluation"),
        (["--revisit", "--stability-rows", "2"], "--stability-rows", "the open-loop evaluation"),
        (["--revisit", "--starts-per-episode", "1"], "--starts-per-episode", "the open-loop"),
        (["--revisit", "--teacher-nfe", "4"], "--teacher-nfe", "the open-loop evaluation"),
        (["--revisit", "--probe-cache", "p"], "--probe-cache", "the open-loop evaluation"),
        (["--revisit", "--no-probe-cache"], "--no-probe-cache", "the open-loop evaluation"),
        (["--min-gap", "250"], "--min-gap", "--revisit"),  # given, if as its default
        (["--max-episodes", "3"], "--max-episodes", "--revisit"),
        (["--oracle-memory"], "--oracle-memory", "--revisit"),
    ],
)
def test_eval_refuses_an_option_the_chosen_mode_does_not_read(given, refused, reader, capsys):
    from gym_worldmodel.cli.evaluate import eval_main

    with pytest.raises(SystemExit) as exit_:
        eval_main(["--data", "d", *given])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert f"{refused}: read by {reader}" in err and "only;" in err


def test_eval_options_of_the_chosen_mode_and_of_both_are_not_refused(capsys):
    from gym_worldmodel.cli.evaluate import _parser, _refuse_other_modes_options

    parser = _parser()
    for argv in (
        ["--revisit", "--min-gap", "6", "--max-episodes", "2", "--oracle-memory", "--nfe", "1"],
        ["--budget", "--teacher", "t", "--horizons", "1", "--probe-steps", "5", "--nfe", "1"],
        ["--revisit"],  # every option left at its default
        [],
    ):
        _refuse_other_modes_options(parser, parser.parse_args(["--data", "d", *argv]))
    # every option given that the mode does not read is named at once
    with pytest.raises(SystemExit):
        args = parser.parse_args(["--data", "d", "--revisit", "--budget", "--teacher", "t"])
        _refuse_other_modes_options(parser, args)
    assert "--teacher, --budget: read by the open-loop evaluation" in capsys.readouterr().err


def test_eval_seed_reaches_both_modes_and_the_reports_command(tmp_path, monkeypatch, capsys):
    import inspect

    from gym_worldmodel import evaluation
    from gym_worldmodel.cli import evaluate as cli_eval
    from gym_worldmodel.evaluation import revisit
    from gym_worldmodel.sources import episodes

    # the CLI's default is the library's, in both modes
    assert cli_eval.SEED == EvalConfig().seed == EvalConfig.budget().seed
    assert inspect.signature(revisit.evaluate_revisit).parameters["seed"].default == cli_eval.SEED
    seen = {}
    monkeypatch.setattr(episodes, "read_card", lambda data: {"world": "citywalk"})
    monkeypatch.setattr(cli_eval, "per_world", lambda *a: lambda world: "model")

    def evaluate_world(model, data, config, teacher, progress, probe_cache, resume):
        seen["config"] = config
        result = evaluation.evaluate.WorldResult("citywalk", "camera", 1, 1, 3)
        result.control = {"ratio": 0.5, "by_horizon": {}}
        result.stability = {"collapsed": False}
        return result, {}

    def evaluate_revisit(model, data, min_gap, seed, **kwargs):
        seen["revisit"] = (min_gap, seed)
        return revisit.RevisitResult("citywalk", 1, 1, min_gap, 1, 1, 1, 1, 1, [1], [1], [], [], [])

    monkeypatch.setattr(evaluation, "evaluate_world", evaluate_world)
    monkeypatch.setattr(evaluation, "write_report", lambda *a: seen.update(command=a[-1]))
    monkeypatch.setattr(revisit, "evaluate_revisit", evaluate_revisit)
    monkeypatch.setattr(revisit, "write_revisit_report", lambda *a: seen.update(command=a[-1]))
    data = str(tmp_path / "my data")  # a path with a space: the command quotes it
    base = ["--data", data, "--out", str(tmp_path / "out"), "--no-progress"]
    cli_eval.eval_main([*base, "--budget", "--seed", "5"])
    assert seen["config"] == dataclasses.replace(EvalConfig.budget(), seed=5)
    assert seen["command"] == f"gym-worldmodel eval --data '{data}' {' '.join(base[2:])} " + (
        "--budget --seed 5"
    )
    cli_eval.eval_main(base)  # the seed it ran with is written out
    assert seen["config"] == EvalConfig() and seen["command"].endswith(" --no-progress --seed 0")
    cli_eval.eval_main([*base, "--revisit", "--seed", "3"])
    assert seen["revisit"] == (cli_eval.MIN_GAP, 3) and seen["command"].endswith("--seed 3")
    cli_eval.eval_main([*base, "--revisit", "--min-gap", "6"])
    assert seen["revisit"] == (6, 0) and seen["command"].endswith("--min-gap 6 --seed 0")
    capsys.readouterr()


def test_eval_sampler_options_reach_the_evaluated_model_in_both_modes(
    tiny_model, tmp_path, monkeypatch
):
    from gym_worldmodel import evaluation
    from gym_worldmodel.cli import evaluate as cli_eval
    from gym_worldmodel.evaluation import revisit
    from gym_worldmodel.sources import episodes

    class HandedOver(Exception):
        """Stops eval once the model is handed to the evaluation."""

    seen = []

    def evaluate(model, *args, **kwargs):
        seen.append(model)
        raise HandedOver

    monkeypatch.setattr(episodes, "read_card", lambda data: {"world": "citywalk"})
    monkeypatch.setattr(cli_eval, "per_world", lambda *a: lambda world: tiny_model)
    monkeypatch.setattr(evaluation, "evaluate_world", evaluate)
    monkeypatch.setattr(revisit, "evaluate_revisit", evaluate)
    base = ["--data", str(tmp_path), "--out", str(tmp_path / "out"), "--no-progress"]
    for mode in ([], ["--revisit"]):
        with pytest.raises(HandedOver):
            cli_eval.eval_main([*base, *mode, "--memory-guidance", "2", "--nfe", "2"])
        with pytest.raises(HandedOver):
            cli_eval.eval_main([*base, *mode])
    own = tiny_model.config.sampler
    for model, guidance, nfe in zip(seen, (2.0, 1.0) * 2, (2, own.nfe) * 2, strict=True):
        assert model.config.sampler.memory_guidance == guidance and model.config.sampler.nfe == nfe
    assert seen[1] is tiny_model and seen[3] is tiny_model  # none given: the checkpoint's own


def test_eval_help_states_the_configs_own_defaults():
    """The help's "default: X; --budget: Y" of each config flag are EvalConfig's and budget's."""
    from gym_worldmodel.cli.evaluate import _CONFIG_FLAGS, _parser

    helps = {a.dest: " ".join(a.help.split()) for a in _parser()._actions if a.help}
    for name in _CONFIG_FLAGS:
        full, budget = (getattr(c, name) for c in (EvalConfig(), EvalConfig.budget()))
        said = [" ".join(map(str, v)) if isinstance(v, tuple) else str(v) for v in (full, budget)]
        assert f"default: {said[0]}; --budget: {said[1]})" in helps[name], name


def test_start_frames_skip_episodes_that_begin_alike(monkeypatch):
    """A simulator's episodes may begin alike (driving's did): each picked frame differs."""
    from gym_worldmodel.training import start_frames

    values = [0, 0, 1, 1, 1, 2, 3, 3]  # first-frame values of 8 episodes: 4 distinct
    episodes = [
        Episode(np.full((2, 4, 4, 3), v, np.uint8), np.zeros((1, 2), np.float32), None, i)
        for i, v in enumerate(values)
    ]
    monkeypatch.setattr(start_frames, "read_card", lambda data: {"world": "driving"})
    monkeypatch.setattr(start_frames, "load_episodes", lambda data, split: episodes)
    _, frames = start_frames.pick_start_frames("data", count=4)
    assert sorted(frames[:, 0, 0, 0].tolist()) == [0, 1, 2, 3]
    _, frames = start_frames.pick_start_frames("data", count=6)  # only 4 differ
    assert sorted(frames[:, 0, 0, 0].tolist()) == [0, 1, 2, 3]


def test_eval_writes_its_report_beside_its_plots_unless_they_are_the_docs_own():
    from pathlib import Path

    from gym_worldmodel.cli.evaluate import DOCS_OUT, _default_report

    assert _default_report(DOCS_OUT, "evaluation.md") == Path("docs/evaluation.md")
    assert _default_report(Path("docs/eval"), "memory.md") == Path("docs/memory.md")
    assert _default_report(Path("mine"), "evaluation.md") == Path("mine/evaluation.md")


def test_the_report_holds_each_world_against_the_targets():
    from gym_worldmodel.evaluation.evaluate import WorldResult
    from gym_worldmodel.evaluation.report import _targets_table

    def world(name, model, copy, teacher, ratio, collapsed, steps=1000):
        r = WorldResult(name, "camera", 2, 4, 3)
        r.psnr = {"model": model, "copy last frame": copy, **teacher}
        r.control, r.stability = {"ratio": ratio}, {"collapsed": collapsed, "steps": steps}
        return r

    good = world(
        "a",
        {1: 25, 4: 20, 16: 15},
        {1: 20, 4: 17, 16: 13},
        {"teacher (32 NFE)": {16: 15.5}},
        0.95,
        False,
    )
    bad = world(
        "b",
        {1: 21, 4: 18, 16: 13},
        {1: 20, 4: 17, 16: 13},
        {"teacher (32 NFE)": {16: 15}},
        0.5,
        True,
    )
    short = world(  # a --budget run: what it did not measure is not judged
        "c", {1: 21, 3: 18}, {1: 20, 3: 17}, {"teacher (4 NFE)": {16: 15}}, float("nan"), False, 4
    )
    table = "\n".join(_targets_table([good, bad, short]))
    row = lambda name: next(x for x in table.splitlines() if x.startswith(f"| {name}"))  # noqa: E731
    assert row(">= copy last frame") == (
        "| >= copy last frame + 2 dB PSNR at h = 1, 4, 16 | **yes**: +5.00, +3.00, +2.00 at h = "
        "1, 4, 16 | no: +1.00, +1.00, +0.00 at h = 1, 4, 16 | n/a (+1.00 at h = 1) |"
    )
    assert row("within 1 dB").endswith(
        "| **yes**: 15.00 against 15.50 | no: 13.00 against 15.00 | n/a |"
    )
    assert row("controllability").endswith("| **yes**: 0.95 | no: 0.50 | n/a |")
    assert row("no collapse").endswith(
        "| **yes**: 1000 steps | no: 1000 steps | n/a (no collapse over 4 steps) |"
    )
    from gym_worldmodel.evaluation.report import _near_teacher

    few = world("d", {16: 14}, {16: 12}, {"teacher (4 NFE)": {16: 14.5}}, 0.9, False)
    assert _near_teacher(few) == "n/a (14.00 against 14.50, a teacher (4 NFE))"
