"""robosuite source: action mapping always; rollouts only where robosuite's venv is configured."""

import os

import numpy as np
import pytest
from helpers import assert_same_episode

from gym_worldmodel.envs.actions import RobotHead
from gym_worldmodel.sources.robosuite_source import (
    PYTHON_ENV,
    RobosuiteSource,
    model_to_osc,
    osc_to_model,
)


def test_osc_and_rt1_vectors_round_trip():
    osc = np.random.default_rng(0).uniform(-1, 1, (50, 7)).astype(np.float32)
    vec = osc_to_model(osc)
    assert vec.shape == (50, 13) and (vec[:, 11] == 1).all() and not vec[:, 7:11].any()
    assert np.abs(vec[:, 3:6]).max() <= 0.5 / (np.pi / 2) + 1e-6  # 0.5 rad per frame at most
    assert RobotHead(mode="flat").space.contains(vec[0, :10])
    assert np.allclose(model_to_osc(vec), osc, atol=1e-6)


def test_missing_venv_is_a_clear_error(monkeypatch):
    monkeypatch.delenv(PYTHON_ENV, raising=False)
    with pytest.raises(ImportError, match="own venv"):
        RobosuiteSource()


needs_robosuite = pytest.mark.skipif(
    not os.environ.get(PYTHON_ENV), reason=f"robosuite venv not configured ({PYTHON_ENV})"
)


@needs_robosuite
def test_rollout_replay_and_seeds():
    src = RobosuiteSource()
    ep = src.rollout(0, 20)
    assert ep.frames.shape == (21, 64, 64, 3) and ep.frames.dtype == np.uint8
    assert ep.actions.shape == (20, 13) and ep.poses is None
    assert ep.frames.std() > 5  # a rendered scene, not a blank buffer
    assert not np.array_equal(ep.frames[0], ep.frames[-1])  # the arm moved
    assert_same_episode(ep, src.rollout(0, 20))
    assert not np.array_equal(ep.frames, src.rollout(1, 20).frames)
    assert_same_episode(ep, src.replay(0, ep.actions))
    src.close()
