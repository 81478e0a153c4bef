"""Checking a saved env state against the env's own before any of it is loaded.

``set_state`` loads into the cache, the generators, the memory banks and the env's arrays in
turn; a state that fails half way would leave rows mixing two states. :func:`check_state`
compares every entry of a state with the same rows' own state (same keys, types, shapes and
dtypes; floats finite; names equal) so that a state from another world, model or env, or one
edited by hand, is refused with its first difference named, and nothing is changed.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch


def check_state(state: Any, template: Any, where: str = "state") -> None:
    """Raise ``ValueError`` naming the first entry of ``state`` that ``template`` does not match."""
    if isinstance(template, dict):
        if not isinstance(state, dict):
            raise ValueError(f"{where} must be a dict like get_state() returns, got {_kind(state)}")
        missing, extra = template.keys() - state.keys(), state.keys() - template.keys()
        if missing or extra:
            parts = [
                f"{what} {sorted(map(str, keys))}"
                for what, keys in (("lacks", missing), ("has unexpected", extra))
                if keys
            ]
            raise ValueError(
                f"{where} does not fit this env: it {' and '.join(parts)} (a state of another "
                "world or version?)"
            )
        for key, value in template.items():
            check_state(state[key], value, f"{where}[{key!r}]")
    elif isinstance(template, (list, tuple)):
        if not isinstance(state, (list, tuple)) or len(state) != len(template):
            raise ValueError(f"{where} must be a list of {len(template)}, got {_kind(state)}")
        for i, (s, t) in enumerate(zip(state, template, strict=True)):
            check_state(s, t, f"{where}[{i}]")
    elif isinstance(template, (torch.Tensor, np.ndarray)):
        kind = torch.Tensor if isinstance(template, torch.Tensor) else np.ndarray
        if not isinstance(state, kind) or state.shape != template.shape:
            raise ValueError(
                f"{where} must be a {kind.__name__} of shape {tuple(template.shape)} and dtype "
                f"{template.dtype}, got {_kind(state)}"
            )
        if state.dtype != template.dtype:
            raise ValueError(f"{where} must have dtype {template.dtype}, got {state.dtype}")
        floating = state.is_floating_point() if kind is torch.Tensor else state.dtype.kind == "f"
        finite = torch.isfinite(state).all() if kind is torch.Tensor else np.isfinite(state).all()
        if floating and not finite:
            raise ValueError(f"{where} holds NaN or inf")
    elif template is None or isinstance(template, str):  # names (a world, a bit generator)
        if type(state) is not type(template) or state != template:
            raise ValueError(f"{where} must be {template!r}, got {_kind(state)}")
    elif isinstance(template, (bool, np.bool_)):
        if not isinstance(state, (bool, np.bool_)):
            raise ValueError(f"{where} must be a bool, got {_kind(state)}")
    elif isinstance(template, (int, np.integer)):
        if not isinstance(state, (int, np.integer)) or isinstance(state, (bool, np.bool_)):
            raise ValueError(f"{where} must be an int, got {_kind(state)}")
    else:  # other values (floats) need only be of the same type
        if type(state) is not type(template):
            raise ValueError(f"{where} must be a {type(template).__name__}, got {_kind(state)}")


def _kind(value: Any) -> str:
    if isinstance(value, (torch.Tensor, np.ndarray)):
        return f"{type(value).__name__} of shape {tuple(value.shape)} and dtype {value.dtype}"
    if isinstance(value, (list, tuple)):
        return f"a {type(value).__name__} of {len(value)}"
    return f"{type(value).__name__} {value!r}"[:120]
