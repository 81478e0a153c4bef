"""Vector wrappers for envs whose returns stay on the device (``output="torch"``).

Gymnasium's ``RecordEpisodeStatistics`` works on NumPy arrays; with ``output="torch"`` the
rewards and flags are tensors (on the GPU, where the env runs there), so it cannot count them.
:class:`TorchEpisodeStatistics` keeps the same books on the device; one host sync a step asks
whether an episode ended, as Gymnasium's ``"episode" in infos`` needs.
"""

from __future__ import annotations

import time
from typing import Any

import torch
from gymnasium.vector import AutoresetMode, VectorEnv, VectorWrapper

from gym_worldmodel.envs.options import host_options, reset_rows


class TorchEpisodeStatistics(VectorWrapper):
    """Gymnasium's ``RecordEpisodeStatistics`` for tensor returns, kept on the env's device.

    At a step where an episode ends (only then, as in Gymnasium), ``info[stats_key]`` holds
    ``{"r": returns, "l": lengths, "t": seconds since its start}`` as ``(num_envs,)`` tensors
    (zero in rows that did not end) and ``info["_" + stats_key]`` the bool tensor of rows that
    ended, as Gymnasium's wrapper gives them. The env's autoreset mode decides what a step
    counts: with ``NEXT_STEP`` the step that resets a row counts towards no episode; with
    ``SAME_STEP`` and ``DISABLED`` (where done rows are reset by hand) every step counts. A
    partial reset (``options["env_idx"]`` or
    ``["reset_mask"]``) restarts those rows' books only.

    Args:
        env: A vector env whose ``step`` returns torch tensors (e.g. ``WorldModelVectorEnv(...,
            output="torch")``).
        stats_key: The info key of the statistics.
    """

    def __init__(self, env: VectorEnv, stats_key: str = "episode") -> None:
        super().__init__(env)
        self.stats_key = stats_key
        self._same_step = env.metadata.get("autoreset_mode") != AutoresetMode.NEXT_STEP
        self.device = torch.device(getattr(env.unwrapped, "device", "cpu"))
        self._clock = time.perf_counter()
        n, dev = self.num_envs, self.device
        self.returns = torch.zeros(n, device=dev)
        self.lengths = torch.zeros(n, dtype=torch.long, device=dev)
        self._starts = torch.zeros(n, device=dev)  # seconds since the wrapper was made
        self._prev_dones = torch.zeros(n, dtype=torch.bool, device=dev)

    def reset(self, *, seed: Any = None, options: dict | None = None):
        """Reset the env; the rows it resets start new books."""
        obs, info = self.env.reset(seed=seed, options=options)
        options = host_options(options)  # a CUDA mask, say
        rows = torch.as_tensor(reset_rows(options, self.num_envs), device=self.device)
        self.returns[rows], self.lengths[rows], self._prev_dones[rows] = 0.0, 0, False
        self._starts[rows] = time.perf_counter() - self._clock
        return obs, info

    def step(self, actions: Any):
        """Step the env and add this step's rewards; finished episodes go into ``info``."""
        obs, rewards, terminated, truncated, info = self.env.step(actions)
        if not isinstance(rewards, torch.Tensor):
            raise TypeError(
                "TorchEpisodeStatistics counts tensor rewards (an env with output='torch'); for "
                "NumPy returns use gymnasium.wrappers.vector.RecordEpisodeStatistics"
            )
        now = torch.full((), time.perf_counter() - self._clock, device=self.device)  # no upload
        counts = torch.ones_like(self._prev_dones) if self._same_step else ~self._prev_dones
        self.returns = torch.where(counts, self.returns + rewards.to(self.returns), 0.0)
        self.lengths = torch.where(counts, self.lengths + 1, 0)
        self._starts = torch.where(counts, self._starts, now)
        dones = (terminated | truncated).to(self.device)
        if self.stats_key in info:
            raise ValueError(f"info already has a {self.stats_key!r} key: pass another stats_key")
        if dones.any():  # one host sync, as Gymnasium's ``if "episode" in infos`` needs
            info[self.stats_key] = {
                "r": torch.where(dones, self.returns, 0.0),
                "l": torch.where(dones, self.lengths, 0),
                "t": torch.where(dones, now - self._starts, 0.0),
            }
            info[f"_{self.stats_key}"] = dones
        if self._same_step:  # the rows that ended already started their next episode
            self.returns = torch.where(dones, 0.0, self.returns)
            self.lengths = torch.where(dones, 0, self.lengths)
            self._starts = torch.where(dones, now, self._starts)
        self._prev_dones = dones
        return obs, rewards, terminated, truncated, info
