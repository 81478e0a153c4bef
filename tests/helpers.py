"""Assertions and small stand-ins shared by several test files."""

import numpy as np
import torch

from gym_worldmodel.envs import WorldModelVectorEnv
from gym_worldmodel.models import WorldModelConfig


def assert_same_episode(a, b) -> None:
    """Two episodes are bitwise identical (frames, actions, poses, seed)."""
    np.testing.assert_array_equal(a.frames, b.frames)
    np.testing.assert_array_equal(a.actions, b.actions)
    np.testing.assert_array_equal(a.poses, b.poses)
    assert a.seed == b.seed


#: The tiny random-weight model the env tests run.
TINY = {"model": "random-tiny"}


class CountingEngine:
    """Stands in for WorldEngine: frame value = steps since the row's start."""

    memory = None

    def __init__(self, num_envs: int):
        self.config = WorldModelConfig.tiny()
        self.num_envs, self.count = num_envs, np.zeros(num_envs, np.int64)
        self.f, self.size = self.config.dit.chunk_frames, self.config.vae.image_size

    def _frames(self, values):
        v = torch.as_tensor(values, dtype=torch.uint8)[:, None, None, None, None]
        return v.expand(-1, self.f, self.size, self.size, 3).clone()

    def seed(self, seeds, *, env_idx):  # as Engine.seed
        pass

    def start(self, env_idx, frames, poses=None, seeds=None):
        self.count[env_idx] = 0
        zeros = torch.zeros(len(env_idx), self.f, 4, 16, 16)
        return zeros, self._frames(self.count[env_idx])

    def step(self, actions, decode=slice(None), poses=None, store=None):
        self.count += 1
        return torch.zeros(self.num_envs, self.f, 4, 16, 16), self._frames(self.count)[:, decode]

    def get_state(self, env_idx):
        return {"count": self.count[list(env_idx)].copy()}

    def set_state(self, state, env_idx):
        self.count[list(env_idx)] = state["count"]


def counting_env(mode, num_envs=1, max_steps=2, **kwargs):
    return WorldModelVectorEnv(
        num_envs,
        world="driving",
        engine=CountingEngine(num_envs),
        autoreset_mode=mode,
        max_episode_steps=max_steps,
        **kwargs,
    )


def value(obs):
    return obs[:, 0, 0, 0].tolist()


def snapshot(env):
    return env.get_state()


def rows_equal(a, b, rows):
    same_cache = all(
        torch.equal(
            a["engine"]["cache"][k][:, rows] if k in ("k", "v") else a["engine"]["cache"][k][rows],
            b["engine"]["cache"][k][:, rows] if k in ("k", "v") else b["engine"]["cache"][k][rows],
        )
        for k in a["engine"]["cache"]
    )
    generators = a["engine"]["generators"], b["engine"]["generators"]
    return (
        same_cache
        and torch.equal(a["frames"][rows], b["frames"][rows])
        and np.array_equal(a["steps"][rows], b["steps"][rows])
        and np.array_equal(a["pose"][rows], b["pose"][rows])
        and all(torch.equal(generators[0][r], generators[1][r]) for r in rows)
        and all(a["rngs"][r] == b["rngs"][r] for r in rows)
    )


class DeviceTensor(torch.Tensor):
    """A CPU tensor that NumPy cannot read, as it cannot read a CUDA tensor: for the GPU path."""

    def __array__(self, *args, **kwargs):
        raise TypeError("can't convert cuda:0 device type tensor to numpy")

    def numpy(self, *args, **kwargs):
        raise TypeError("can't convert cuda:0 device type tensor to numpy")

    def to(self, *args, **kwargs):  # a copy to the host is a plain tensor again
        return torch.Tensor.to(self.as_subclass(torch.Tensor), *args, **kwargs).clone()

    def cpu(self, *args, **kwargs):
        return torch.Tensor.cpu(self.as_subclass(torch.Tensor), *args, **kwargs).clone()


def on_device(values) -> DeviceTensor:
    """``values`` as a :class:`DeviceTensor`."""
    return torch.as_tensor(np.asarray(values)).as_subclass(DeviceTensor)
