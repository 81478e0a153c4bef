"""Whether rows fit: the memory a state takes and the memory free on a device (forks check it)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch


def state_bytes(state: Any) -> int:
    """Bytes of the tensors and arrays of a (nested) state."""
    if isinstance(state, dict):
        return sum(state_bytes(v) for v in state.values())
    if isinstance(state, (list, tuple)):
        return sum(state_bytes(v) for v in state)
    if isinstance(state, (torch.Tensor, np.ndarray)):
        return int(state.nbytes)
    return 0


#: Where Linux says how much memory the host has free, and a container's cgroup its limit and
#: use (cgroup v2, then v1): a container's limit is below the host's free memory it sees.
MEMINFO = "/proc/meminfo"
CGROUP_LIMITS = (
    ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
    ("/sys/fs/cgroup/memory/memory.limit_in_bytes", "/sys/fs/cgroup/memory/memory.usage_in_bytes"),
)


def free_bytes(device: torch.device) -> int | None:
    """Memory free for new rows on ``device`` (a CUDA device's, else the host's); None: unknown."""
    if device.type == "cuda":  # and what torch's allocator holds free for new tensors
        held = torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
        return int(torch.cuda.mem_get_info(device)[0]) + held
    try:  # Linux; elsewhere the check is skipped
        with open(MEMINFO) as f:
            info = dict(line.split(":", 1) for line in f)
        free = int(info["MemAvailable"].split()[0]) * 1024
    except (OSError, KeyError, ValueError):
        return None
    for limit_path, usage_path in CGROUP_LIMITS:
        try:
            with open(limit_path) as limit, open(usage_path) as usage:
                left = int(limit.read()) - int(usage.read())  # "max": no limit (ValueError)
        except (OSError, ValueError):
            continue
        return max(0, min(free, left))
    return free


def check_fits(
    one_row: dict[str, Any], rows: int, device: torch.device, what: str, copies: int = 2
) -> None:
    """Raise ``MemoryError`` before ``rows`` rows of ``one_row``'s size are made, if they won't fit.

    A fork of several rows holds each new row's state twice for a moment (``copies``: the copy
    read, then the new rows; a fork of one row only the new rows), so a fork of 10**9 rows is
    refused here instead of by the operating system's out-of-memory killer.
    """
    free, size = free_bytes(device), state_bytes(one_row)
    if free is not None and copies * rows * size > free:
        held = ", held twice while forking" if copies == 2 else ""
        raise MemoryError(
            f"{what} of {rows} rows needs about {copies * rows * size / 2**30:.1f} GiB "
            f"({size / 2**20:.1f} MiB a row, its KV cache, frames and memory bank{held}), and "
            f"{free / 2**30:.1f} GiB is free on {device}: fork fewer rows at a time"
        )
