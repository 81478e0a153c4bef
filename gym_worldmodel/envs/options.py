"""Parsing and validation of constructor choices and reset arguments (seeds, rows, frames)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from gymnasium.vector import AutoresetMode

from gym_worldmodel.envs.actions import on_host
from gym_worldmodel.envs.pictures import PICTURE_SHAPES, picture_array, picture_hint, pil_as_rgb
from gym_worldmodel.envs.worlds import fit_frames
from gym_worldmodel.models import WorldModelConfig


def check_choice(name: str, value: Any, choices: tuple) -> None:
    """Raise a clear ``ValueError`` unless ``value`` is one of ``choices``."""
    if value not in choices:
        raise ValueError(f"{name} must be one of {list(choices)}, got {value!r}")


def check_switch(name: str, value: Any, optional: bool = False) -> None:
    """Raise a clear ``ValueError`` unless ``value`` is a bool (or None, when ``optional``).

    A string such as ``"off"`` is truthy: taken as it is, it would turn the switch on.
    """
    if not (isinstance(value, (bool, np.bool_)) or (optional and value is None)):
        kind = "True, False or None" if optional else "True or False"
        raise ValueError(f"{name} must be {kind}, got {value!r}")


def check_count(name: str, value: Any, unit: str = "") -> None:
    """Raise a clear ``ValueError`` unless ``value`` is an int >= 1 (``unit``: what it counts)."""
    if not is_int(value) or value < 1:
        raise ValueError(f"{name} must be an int >= 1{f' ({unit})' if unit else ''}, got {value!r}")


def step_limit(name: str, value: Any) -> int | None:
    """A step limit as given to ``gym.make``: an int >= 1, or None or -1 (no limit: None)."""
    if value is not None and not (is_int(value) and (value >= 1 or value == -1)):
        raise ValueError(f"{name} must be an int >= 1, or None or -1 for no limit, got {value!r}")
    return None if value is None or value == -1 else int(value)


def autoreset_mode(value: Any) -> AutoresetMode:
    """``value`` (an ``AutoresetMode`` or its value) as the mode; a ``ValueError`` lists them."""
    try:
        return AutoresetMode(value)
    except ValueError:
        modes = [m.value for m in AutoresetMode]
        raise ValueError(
            f"autoreset_mode must be a gymnasium.vector.AutoresetMode or one of {modes}, "
            f"got {value!r}"
        ) from None


def host_options(options: Mapping[str, Any] | None) -> dict[str, Any]:
    """Reset options with torch tensors (any device) as NumPy arrays, floats in float64."""
    return {k: on_host(v, torch.float64) for k, v in (options or {}).items()}


#: The reset options that pick rows: a vector env's partial reset.
ROW_OPTIONS = ("env_idx", "reset_mask")


def row_picks(options: Mapping[str, Any]) -> list[str]:
    """The options among ``options`` that pick rows, sorted.

    An env that resets every row at once (a single env, SB3's and PettingZoo's adapters)
    refuses them.
    """
    return sorted(set(ROW_OPTIONS) & set(options))


def reset_rows(options: dict, num_envs: int) -> np.ndarray:
    """Rows a reset applies to: ``options["env_idx"]``, ``options["reset_mask"]`` or all.

    ``env_idx`` rows come back in the order given (per-row options follow that order) and
    each at most once; the others in ascending order.
    """
    if "env_idx" in options and "reset_mask" in options:
        raise ValueError("pass env_idx or reset_mask, not both")
    if "reset_mask" in options:
        mask = np.asarray(options["reset_mask"])
        if mask.dtype != np.bool_ or mask.shape != (num_envs,) or not mask.any():
            raise ValueError(
                f"reset_mask must be a bool array of shape ({num_envs},) with at least one True"
            )
        return np.flatnonzero(mask)
    if "env_idx" in options:
        return parse_rows(options["env_idx"], num_envs, "env_idx", repeats=False, empty=False)
    return np.arange(num_envs)


def parse_rows(value: Any, num_envs: int, name: str, *, repeats: bool, empty: bool) -> np.ndarray:
    """Row indices ``(n,)`` int64 from an int or a 1-D list, array or tensor (any device) of them.

    Each in ``[0, num_envs)`` (a ``ValueError`` names ``name`` and what it was given); the same
    row twice only with ``repeats`` (a fork's parents, a state of several copies), none at all
    only with ``empty``. Bools are refused: ``True`` is not row 1. ``np.nonzero(mask)``'s
    one-array tuple is its array.
    """
    if isinstance(value, tuple) and len(value) == 1 and np.ndim(value[0]) == 1:
        value = value[0]  # np.where(mask) / np.nonzero(mask) of a 1-D mask
    flags = isinstance(value, (list, tuple)) and any(isinstance(v, (bool, np.bool_)) for v in value)
    try:
        rows = np.atleast_1d(np.asarray(on_host(value)))
    except (TypeError, ValueError):  # ragged lists
        rows = np.asarray([None])
    if flags:
        rows = np.asarray([None])  # refused below, as a list of bools is
    kind = "an int or a list of ints" + ("" if repeats else " (each once)")
    if (
        rows.ndim != 1
        or not (rows.size == 0 or np.issubdtype(rows.dtype, np.integer))
        or (rows.size and (rows.min() < 0 or rows.max() >= num_envs))
        or (rows.size == 0 and not empty)
    ):
        hint = " (torch.nonzero(mask) is (k, 1): flatten it)" if rows.ndim == 2 else ""
        raise ValueError(
            f"{name} must be {kind} naming rows in [0, {num_envs}), got {value!r}{hint}"
        )
    if not repeats:
        unique, counts = np.unique(rows, return_counts=True)
        if (counts > 1).any():
            raise ValueError(f"{name} names rows {unique[counts > 1].tolist()} more than once")
    return rows.astype(np.int64)


def is_int(value: Any) -> bool:
    """A Python or NumPy int, not a bool."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def check_options(options: Any) -> None:
    """Refuse reset options that are not a mapping (None: no options)."""
    if options is not None and not isinstance(options, Mapping):
        raise ValueError(
            f"reset options must be a dict (mapping) or None, got {type(options).__name__}"
        )


def check_seed(seed: Any) -> None:
    """Raise a clear ``ValueError`` unless ``seed`` is one (:func:`is_seed`) or None."""
    if seed is not None and not is_seed(seed):
        raise ValueError(f"seed must be a non-negative int or None, got {seed!r}")


def is_seed(value: Any) -> bool:
    """A seed NumPy's and torch's generators take: an int >= 0.

    A 0-d integer tensor counts too (``torch.arange(4)``'s items, a planner's seeds).
    """
    if isinstance(value, torch.Tensor) and value.ndim == 0:
        kind = value.dtype
        integral = not (kind.is_floating_point or kind.is_complex or kind == torch.bool)
        return integral and int(value) >= 0
    return is_int(value) and value >= 0


def row_seeds(seed: Any, rows: np.ndarray, num_envs: int) -> list[int | None]:
    """Per-row seeds: an int seeds row i with ``seed + i``; a list has one entry per env.

    Seeds are non-negative ints (NumPy's and torch's generators take no others); None entries
    leave a row's generators running.
    """
    if seed is None:
        return [None] * len(rows)
    if is_seed(seed):
        return [int(seed) + int(r) for r in rows]
    if isinstance(seed, (str, bytes)) or not hasattr(seed, "__len__"):
        raise ValueError(f"seed must be a non-negative int, a list of them or None, got {seed!r}")
    seeds = list(seed)
    if len(seeds) != num_envs:
        raise ValueError(f"seed list must have num_envs={num_envs} entries, got {len(seeds)}")
    bad = [s for s in seeds if s is not None and not is_seed(s)]
    if bad:
        raise ValueError(f"seeds must be non-negative ints or None, got {bad}")
    return [None if seeds[int(r)] is None else int(seeds[int(r)]) for r in rows]


def start_value(options: dict, key: str, n: int, low: float, high: float, unit: str) -> np.ndarray:
    """Validated reset values ``(n,)`` in ``[low, high]`` from ``options[key]`` (one or per row).

    The driving world's ``speed`` (m/s) and ``heading`` (degrees).
    """
    raw = options[key]
    items = list(raw) if isinstance(raw, (list, tuple)) else [raw]
    kind = raw.dtype.kind if isinstance(raw, np.ndarray) else None
    not_numbers = (bool, np.bool_, str, bytes)  # True: 1 m/s? "10": numpy would read it
    if kind in ("b", "U", "S", "O") or any(isinstance(v, not_numbers) for v in items):
        raise ValueError(f"reset {key} must be a number in {unit}, got {raw!r}")
    try:
        value = np.asarray(raw, np.float64)
    except (TypeError, ValueError) as err:
        raise ValueError(f"reset {key} must be a number in {unit}, got {options[key]!r}") from err
    value = np.broadcast_to(value, (n,)) if value.ndim == 0 else value
    if value.shape != (n,) or not np.isfinite(value).all():
        raise ValueError(
            f"reset {key} must be a finite number or one per reset row ({n}) in {unit}"
        )
    if (value < low).any() or (value > high).any():
        raise ValueError(f"reset {key} must be in [{low:g}, {high:g}] {unit}, got {value.tolist()}")
    return value.copy()


def world_reset_options(pose: str | None) -> list[str]:
    """The reset options that set a start in a world: its picture; driving's speed and heading."""
    return ["image", "frames"] + (["speed", "heading"] if pose == "driving" else [])


def start_options(
    options: dict,
    n: int,
    config: WorldModelConfig,
    pose: str | None,
    max_speed: float | None,
    also: tuple[str, ...] = (),
) -> tuple[np.ndarray | None, dict[int, np.ndarray]]:
    """A start's options for ``n`` rows: ``(user start chunks or None, pose column -> values)``.

    ``image`` / ``frames`` in every world (:func:`user_frames`); in the driving world ``speed``
    (m/s, column 3) and ``heading`` (degrees, column 2). ``also``: other keys the caller has
    read (named in the error for an unknown key). ``max_speed``: the driving head's, m/s.
    """
    world = world_reset_options(pose)
    unknown = set(options) - set(world) - set(also)
    if unknown:
        rows = f"; a vector env also takes {list(also)} to pick rows" if also else ""
        raise ValueError(f"unknown reset options {sorted(unknown)}; this world takes {world}{rows}")
    start = {}
    if "speed" in options:  # an option only in the driving world, whose head has a max_speed
        assert max_speed is not None
        start[3] = start_value(options, "speed", n, 0.0, max_speed, "m/s")
    if "heading" in options:
        start[2] = start_value(options, "heading", n, -180.0, 180.0, "degrees")
    return user_frames(options, n, config), start


def initial_conditions(
    start_fn: Any,
    rngs: list[np.random.Generator],
    parse: Any,
    frames: np.ndarray | None,
    start: dict[int, np.ndarray],
) -> tuple[np.ndarray | None, dict[int, np.ndarray]]:
    """``start_fn``'s options for the starting rows, under the ones ``reset()`` was given.

    ``parse(options, n)`` reads options as :func:`start_options` does for the env; ``frames``
    and ``start`` are what ``reset()``'s own options gave (they win). A bad return is one
    ``ValueError`` naming ``start_fn``.
    """
    try:
        # a copy of the list: the hook may pop from it, the env's rows keep their generators
        own_frames, own_start = parse(host_options(dict(start_fn(list(rngs)))), len(rngs))
    except (TypeError, ValueError) as err:
        raise ValueError(
            f"start_fn must return a dict of reset options for the {len(rngs)} starting rows: {err}"
        ) from err
    return (own_frames if frames is None else frames), {**own_start, **start}


def user_frames(options: dict, n: int, config: WorldModelConfig) -> np.ndarray | None:
    """Validated start chunks ``(n, F, size, size, 3)`` from ``image`` / ``frames``, or None."""
    if "image" in options and "frames" in options:
        raise ValueError("pass image or frames, not both")
    if "image" not in options and "frames" not in options:
        return None
    key = "image" if "image" in options else "frames"
    want = PICTURE_SHAPES[key]
    per_env_ndim = want.count(",") + 1
    value = on_host(pil_as_rgb(f"reset {key}", options[key]), torch.float64)  # tensors too
    if isinstance(value, (list, tuple)) and (
        len({np.shape(v) for v in value}) > 1 or any(np.asarray(v).dtype != np.uint8 for v in value)
    ):
        # one picture per row, of different sizes (or one not uint8, which NumPy would make the
        # whole batch's dtype): each row's checked, named by its place, and resized alone
        if len(value) != n or any(np.ndim(v) != per_env_ndim for v in value):
            raise ValueError(
                f"reset {key} as a list must hold one {want} per reset row ({n}), got shapes "
                f"{[np.shape(v) for v in value]}"
            )
        pictures = [picture_array(f"{key}[{i}]", v) for i, v in enumerate(value)]
        for i, picture in enumerate(pictures):  # named by its place in the list, not as a batch
            if picture.dtype != np.uint8 or picture.shape[-1] != 3 or 0 in picture.shape:
                raise ValueError(
                    f"reset {key}[{i}] must be uint8 RGB {want}, got dtype {picture.dtype} and "
                    f"shape {picture.shape}{picture_hint(picture)}"
                )
        return np.concatenate([user_frames({key: p[None]}, 1, config) for p in pictures])
    arr = picture_array(key, value)
    if arr.dtype != np.uint8:
        raise ValueError(f"reset {key} must be uint8 RGB, got dtype {arr.dtype}{picture_hint(arr)}")
    given = arr.shape
    if arr.ndim == per_env_ndim:
        arr = np.broadcast_to(arr, (n, *arr.shape))
    if arr.ndim != per_env_ndim + 1 or arr.shape[0] != n or arr.shape[-1] != 3:
        raise ValueError(
            f"reset {key} must be {want} or one per reset row ({n}), got shape {given}"
            + picture_hint(arr)
        )
    if min(arr.shape[1:-1]) < 1:  # no frames in a stack, or no pixels
        raise ValueError(f"reset {key} is empty: shape {arr.shape}")
    stacks = arr[:, None] if key == "image" else arr
    return np.stack([first_chunk(s, config) for s in stacks])


def first_chunk(frames: np.ndarray, config: WorldModelConfig) -> np.ndarray:
    """``(k, H, W, 3)`` of any size -> the episode's first chunk ``(F, size, size, 3)``.

    Frames that are not square are centre-cropped to a square (the worlds were trained on square
    frames; stretching would distort them), then resized (:func:`fit_frames`); the last F are
    kept, and fewer are padded by repeating the first.
    """
    f = config.dit.chunk_frames
    frames = fit_frames(frames[-f:], config.vae.image_size)
    return np.concatenate([np.repeat(frames[:1], f - len(frames), 0), frames])


def user_rng(seed: int) -> np.random.Generator:
    """An env's ``np_random`` after ``reset(seed=seed)``: a stream apart from the row's own.

    Row 0 starts (its start frame, its noise's seed) from ``default_rng(seed)``; a user's draws
    from ``np_random`` would mirror those. This one is spawned from the same seed instead.
    """
    return np.random.default_rng(np.random.SeedSequence(int(seed), spawn_key=(1,)))


def rng_from_state(state: Mapping[str, Any]) -> np.random.Generator:
    """A NumPy generator restored from ``bit_generator.state``."""
    rng = np.random.default_rng()
    try:
        rng.bit_generator.state = state
    except (TypeError, ValueError, KeyError) as err:
        raise ValueError(
            "a generator state must be a NumPy PCG64 bit_generator.state (as get_state() "
            f"saves it), got {state!r:.120}: {err}"
        ) from None
    return rng


def checked_seeds(seeds: Any, n: int, what: str) -> list[int] | None:
    """``n`` validated seeds from one per row, an int (row i gets ``seeds + i``) or None."""
    if seeds is None:
        return None
    if not is_seed(seeds):
        if isinstance(seeds, (str, bytes)):  # iterable, but not of seeds
            raise ValueError(f"{what} must be an int, {n} ints or None, got {seeds!r}")
        try:
            seeds = list(seeds)
        except TypeError:
            raise ValueError(f"{what} must be an int, {n} ints or None, got {seeds!r}") from None
        if len(seeds) != n:
            raise ValueError(f"need {n} {what} for {n} rows, got {len(seeds)}")
    seeds = row_seeds(seeds, np.arange(n), n)
    if None in seeds or max(seeds) >= 2**64:  # torch's generators take 64 bits
        raise ValueError(f"{what} must be ints in [0, 2**64), got {seeds}")
    return seeds
