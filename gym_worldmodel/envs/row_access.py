"""Gymnasium's questions to a vector env's sub-envs, put to the rows of one batched env.

``SyncVectorEnv`` answers ``call``, ``get_attr`` and ``set_attr`` with one value per sub-env.
:class:`RowAccessMixin` gives the same answers for the rows of
:class:`~gym_worldmodel.envs.vector_env.WorldModelVectorEnv`, which are one env: a row answers
only what it holds alone (its frame, its do-nothing action, what a method taking ``env_idx``
says of it, a sub-env's spaces), and every other attribute is the env's own, shared.
"""

from __future__ import annotations

import inspect
from typing import Any

import numpy as np
import torch
from gymnasium.vector import VectorEnv

from gym_worldmodel.envs.actions import ActionHead

#: A row's spaces, as :meth:`RowAccessMixin.get_attr` reads them (a sub-env's are its own).
ROW_SPACES = {
    "observation_space": "single_observation_space",
    "action_space": "single_action_space",
}


class RowAccessMixin(VectorEnv):
    """``call``, ``get_attr`` and ``set_attr`` of a vector env whose rows share one env.

    A mixin of ``WorldModelVectorEnv``, whose ``__init__`` sets the action head.
    """

    head: ActionHead

    def call(self, name: str, *args: Any, **kwargs: Any) -> tuple[Any, ...]:
        """Each row's answer to ``name``, as ``SyncVectorEnv.call`` asks each of its envs.

        The rows are one env, not envs of their own, so a row answers only what it holds
        alone: ``render`` is each row's frame (None without a render mode), ``idle_action``
        its do-nothing action, and a method that takes ``env_idx`` (``get_state``,
        ``set_state``, ``set_memory``, ``hand_over_memory``) is called once per row with
        ``env_idx=[row]`` (``get_state``: one row's state each). An attribute that is not
        callable is :meth:`get_attr`'s.

        Raises:
            ValueError: ``name`` is another method (``reset``, ``step``, ``fork``, ``close``,
                a hook), which acts on every row at once and has no answer per row: call it
                once, on the env itself.
            TypeError: Arguments for an attribute, or an ``env_idx`` (call gives each row's).
        """
        if name == "render":
            frames = self.render(*args, **kwargs)
            return (None,) * self.num_envs if frames is None else frames
        if name == "idle_action":
            return tuple(self.head.idle_action(*args, **kwargs) for _ in range(self.num_envs))
        value = getattr(self, name)
        if not callable(value):
            if args or kwargs:
                raise TypeError(f"call({name!r}, ...): {name} is an attribute, not a method")
            return self.get_attr(name)
        takes = inspect.signature(value).parameters
        if "env_idx" not in takes:
            raise ValueError(
                f"call({name!r}): {name} acts on every row of this batched env at once, so it "
                f"has no answer per row; call envs.unwrapped.{name}(...) once (call answers "
                "per row for render, idle_action, attributes and methods that take env_idx)"
            )
        if "env_idx" in inspect.signature(value).bind_partial(*args, **kwargs).arguments:
            raise TypeError(f"call({name!r}, ...) calls {name} with each row's env_idx itself")
        return tuple(value(*args, env_idx=[row], **kwargs) for row in range(self.num_envs))

    def get_attr(self, name: str) -> tuple[Any, ...]:
        """Each row's ``name``, as ``SyncVectorEnv.get_attr`` reads each of its envs'.

        ``observation_space`` and ``action_space`` are a row's (``single_observation_space``,
        ``single_action_space``), as a sub-env's are. Every other attribute is the env's own,
        which its rows share: the same object once per row (``spec``, ``metadata``,
        ``render_mode``, ``max_episode_steps``, ...). A method is read, not called (Gymnasium's
        ``get_attr`` calls what is callable): :meth:`call` calls.
        """
        value = getattr(self, ROW_SPACES.get(name, name))
        return (value,) * self.num_envs

    def set_attr(self, name: str, values: Any) -> None:
        """Set ``name`` for every row, as ``SyncVectorEnv.set_attr`` sets it in each of its envs.

        ``values`` is one value for every row, or (Gymnasium's contract) a list or tuple of
        ``num_envs`` values, which must then all be that one value: the rows share this env,
        which holds one of each attribute. A list meant as the value itself (``reward_fn``'s
        hooks) goes once per row, or straight to the attribute.

        Raises:
            ValueError: A list or tuple of another length than ``num_envs``, or whose values
                differ between rows.
            AttributeError: ``name`` is one of the spaces, which are the world's.
        """
        if name in ROW_SPACES or name in ROW_SPACES.values():
            raise AttributeError(
                f"set_attr({name!r}): the spaces are the world's and cannot be set; wrap the env "
                "(gymnasium.vector's wrappers) to change what an agent sees or sends"
            )
        if isinstance(values, (list, tuple)):
            if len(values) != self.num_envs:
                raise ValueError(
                    f"set_attr({name!r}): values is a list or tuple, so one value per row: "
                    f"expected {self.num_envs}, got {len(values)}"
                )
            differ = [row for row, value in enumerate(values) if not _same(value, values[0])]
            if differ:
                raise ValueError(
                    f"set_attr({name!r}): the rows share one env, which holds one {name}, but "
                    f"rows {differ} got other values than row 0; give one value for every row"
                )
            values = values[0]
        setattr(self, name, values)


def _same(a: Any, b: Any) -> bool:
    """Whether two rows' values are one value: the same object, or equal (arrays entry by entry)."""
    if a is b:
        return True
    try:
        if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
            return type(a) is type(b) and np.array_equal(a, b)
        if isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor):
            return a.shape == b.shape and torch.equal(a, b)  # (other devices: RuntimeError)
        return bool(a == b)
    except (TypeError, ValueError, RuntimeError):  # values that do not compare: not one value
        return False
