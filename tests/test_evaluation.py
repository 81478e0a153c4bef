"""Evaluation and distillation on tiny models: metrics, the student loss, eval end to end."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import torch
from conftest import randomize
from test_training import SquareSource

from gym_worldmodel import hub
from gym_worldmodel.evaluation import EvalConfig, evaluate_world, psnr, ssim, write_report
from gym_worldmodel.models import WorldModel, WorldModelConfig
from gym_worldmodel.sources.collect import collect
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


def test_eval_end_to_end_on_a_tiny_model(tmp_path):
    data = tmp_path / "data"
    collect(SquareSource(), data, episodes=6, steps=12, heldout_every=3, progress=False)
    model = randomize(WorldModel(dataclasses.replace(WorldModelConfig.tiny(), fps=16))).eval()
    result, sample = evaluate_world(model, data, EvalConfig.budget(), teacher=model, progress=False)
    assert result.world == "citywalk" and result.rollouts == 2
    assert set(result.psnr) == {
        "model",
        "copy last frame",
        "teacher (4 NFE)",
        "autoencoder (ceiling)",
    }
    for table in (*result.psnr.values(), *result.ssim.values()):
        assert set(table) == {1, 2} and all(np.isfinite(v) for v in table.values())
    assert 0.0 <= result.control["real"] <= 1.0 and result.control["metric"] == "key accuracy"
    assert np.isfinite(result.stability["fraction_in_range"])
    assert len(result.stability["curve"]) == 4  # one (last) frame per step
    report = tmp_path / "docs" / "evaluation.md"
    write_report([result], {"citywalk": sample}, tmp_path / "docs" / "eval", report, "cmd", 2)
    text = report.read_text()
    assert "| model |" in text and "Controllability" in text and "cmd" in text
    for name in ("open_loop.png", "stability.png", "citywalk_strip.png", "results.json"):
        assert (tmp_path / "docs" / "eval" / name).stat().st_size > 0
    saved = json.loads((tmp_path / "docs" / "eval" / "results.json").read_text())
    assert saved[0]["psnr"]["model"]["1"] == result.psnr["model"][1]
    hub.save_pretrained(model, tmp_path / "model")  # the CLI path loads the same checkpoint


def test_bundled_start_frames_come_from_training_episodes(tmp_path):
    from gym_worldmodel.sources.episodes import load_episodes
    from gym_worldmodel.training.start_frames import bundle_start_frames

    data = tmp_path / "data"
    collect(SquareSource(), data, episodes=6, steps=4, heldout_every=3, progress=False)
    path = bundle_start_frames(data, count=3, out_root=tmp_path / "worlds")
    assert path.parent.parent == tmp_path / "worlds"
    assert path == tmp_path / "worlds" / "citywalk" / "start_frames.npz"
    frames = np.load(path)["frames"]
    firsts = [ep.frames[0] for ep in load_episodes(data, "train")]
    assert frames.shape == (3, 32, 32, 3) and frames.dtype == np.uint8
    assert all(any(np.array_equal(f, g) for g in firsts) for f in frames)
