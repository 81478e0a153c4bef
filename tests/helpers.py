"""Assertions shared by several test files."""

import numpy as np


def assert_same_episode(a, b) -> None:
    """Two episodes are bitwise identical (frames, actions, poses, seed)."""
    np.testing.assert_array_equal(a.frames, b.frames)
    np.testing.assert_array_equal(a.actions, b.actions)
    np.testing.assert_array_equal(a.poses, b.poses)
    assert a.seed == b.seed
