"""Checking a saved env state against the env's own before any of it is loaded.

``set_state`` loads into the cache, the generators, the memory banks and the env's arrays in
turn; a state that fails half way would leave rows mixing two states. :func:`check_state`
compares every entry of a state with the same rows' own state (same keys, types, shapes and
dtypes; floats finite, the KV cache's too; names equal) so that a state from another world,
model or env, or one edited by hand, is refused with its first difference named, and nothing
is changed. :func:`loadable_state` runs every check in turn; :func:`to_meta` and
:func:`with_rows` make the template it checks against (the shapes of ``n`` rows' state, from
those of one and two).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from gym_worldmodel.envs.options import rng_from_state

#: Entries whose floats this module does not scan for NaN: a memory bank's slots are mostly
#: empty, and ``WorldEngine.check_state`` scans the entries stored.
UNSCANNED = ("memory",)


#: The largest step count (they load as int64).
_INT64_MAX = np.iinfo(np.int64).max


def check_state(state: Any, template: Any, where: str = "state", scan: bool = True) -> None:
    """Raise ``ValueError`` naming the first entry of ``state`` that ``template`` does not match.

    Floating tensors may be of another floating dtype (they are converted on loading), integer
    arrays of another integer dtype; other dtypes must be the same.
    """
    if isinstance(template, dict):
        if not isinstance(state, dict):
            raise ValueError(
                f"{where} must be a dict like get_state() returns, got {_describe(state)}"
            )
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
            check_state(state[key], value, f"{where}[{key!r}]", scan and key not in UNSCANNED)
    elif isinstance(template, (list, tuple)):
        if not isinstance(state, (list, tuple)) or len(state) != len(template):
            raise ValueError(f"{where} must be a list of {len(template)}, got {_describe(state)}")
        for i, (s, t) in enumerate(zip(state, template, strict=True)):
            check_state(s, t, f"{where}[{i}]", scan)
    elif isinstance(template, (torch.Tensor, np.ndarray)):
        kind = torch.Tensor if isinstance(template, torch.Tensor) else np.ndarray
        if not isinstance(state, kind) or state.shape != template.shape:
            raise ValueError(
                f"{where} must be a {kind.__name__} of shape {tuple(template.shape)} and dtype "
                f"{template.dtype}, got {_describe(state)}"
            )
        floating = _kind(template) == "f"
        if _kind(state) != _kind(template) or (
            _kind(template) not in ("f", "i") and state.dtype != template.dtype
        ):
            raise ValueError(f"{where} must have dtype {template.dtype}, got {state.dtype}")
        if floating and scan and not all_finite(state):
            raise ValueError(f"{where} holds NaN or inf")
        if _kind(template) == "i" and state.dtype != template.dtype:
            _check_fits_dtype(state, template.dtype, where)
    elif template is None or isinstance(template, str):  # names (a world, a bit generator)
        if type(state) is not type(template) or state != template:
            raise ValueError(f"{where} must be {template!r}, got {_describe(state)}")
    elif isinstance(template, (bool, np.bool_)):
        if not isinstance(state, (bool, np.bool_)):
            raise ValueError(f"{where} must be a bool, got {_describe(state)}")
    elif isinstance(template, (int, np.integer)):
        if not isinstance(state, (int, np.integer)) or isinstance(state, (bool, np.bool_)):
            raise ValueError(f"{where} must be an int, got {_describe(state)}")
    else:  # other values (floats) need only be of the same type
        if type(state) is not type(template):
            raise ValueError(f"{where} must be a {type(template).__name__}, got {_describe(state)}")


def check_pose_range(pose: np.ndarray, space: Any, fields: tuple[str, ...]) -> None:
    """Refuse a state's poses ``(n, 4)`` outside the pose space (a ``Box``), naming the first."""
    low, high = space.low.astype(np.float64), space.high.astype(np.float64)
    outside = (pose < low) | (pose > high)
    if outside.any():
        row, col = np.argwhere(outside)[0]
        raise ValueError(
            f"state['pose'] row {row}: {fields[col]} {pose[row, col]:g} is outside "
            f"[{low[col]:g}, {high[col]:g}], the range of info['pose']"
        )


def all_finite(array: torch.Tensor | np.ndarray) -> bool:
    """Whether a floating array holds no NaN or inf (the KV cache's megabytes too).

    The sum first, in the array's own dtype (over 100x faster than an elementwise test on the
    bf16 cache): it is finite when every entry is, unless finite entries overflow it (float16),
    which the elementwise test then rules on.
    """
    if isinstance(array, np.ndarray):
        with np.errstate(over="ignore", invalid="ignore"):  # inf - inf, overflow: ruled below
            total = array.sum()
        return bool(np.isfinite(total) or np.isfinite(array).all())
    return bool(array.sum().isfinite() or torch.isfinite(array).all())


def check_rngs(state: dict[str, Any]) -> None:
    """Raise ``ValueError`` naming a NumPy generator state the right types cannot restore.

    ``check_state`` compares types; whether a bit generator takes the numbers is known only by
    restoring them, which here is done on a throwaway generator, before anything is changed.
    """
    for i, rng_state in enumerate(state["rngs"]):
        if rng_state is None:
            continue
        try:
            rng_from_state(rng_state)
        except (OverflowError, TypeError, ValueError, KeyError) as err:
            raise ValueError(
                f"state['rngs'][{i}] is no NumPy bit generator state (what "
                f"Generator.bit_generator.state returns): {type(err).__name__}: {err}"
            ) from None


def check_same_world(state: Any, template: dict[str, Any]) -> None:
    """Name a state of another world (a city walk's loaded into driving), before any detail."""
    theirs = state.get("world") if isinstance(state, dict) else None
    if isinstance(theirs, str) and theirs != template["world"]:
        raise ValueError(
            f"state is of the {theirs!r} world, this env runs {template['world']!r}: a state "
            "loads into an env of the world that made it"
        )


def check_same_memory(state: Any, template: dict[str, Any]) -> None:
    """Name a state with memory off where the env has it on (or back), or of another capacity."""
    engine = state.get("engine") if isinstance(state, dict) else None
    if (
        not isinstance(engine, dict)
        or "memory" not in engine
        or state["world"] != template["world"]
    ):
        return  # check_state names what is wrong
    ours, theirs = template["engine"]["memory"] is not None, engine["memory"] is not None
    if ours != theirs:
        raise ValueError(
            f"state is of an env with memory {'on' if theirs else 'off'}, this env has it "
            f"{'on' if ours else 'off'}: make the env with memory={theirs}"
        )
    banks = engine["memory"]
    if ours and isinstance(banks, list) and banks and isinstance(banks[0], dict):
        theirs_size = np.shape(banks[0].get("uid", ()))
        ours_size = np.shape(template["engine"]["memory"][0]["uid"])
        if len(theirs_size) == 1 and theirs_size != ours_size:
            raise ValueError(
                f"state's memory banks hold {theirs_size[0]} chunks each, this env's "
                f"{ours_size[0]}: make the env with memory_capacity={theirs_size[0]}"
            )


def check_same_weights(state: Any, template: dict[str, Any]) -> None:
    """Name a state made by other weights (``WorldEngine.get_state``'s ``"weights"`` digest).

    Its cache holds keys and values those weights computed: loaded into another model of the
    same shapes, it would run without a word and show neither model's world.
    """
    engine = state.get("engine") if isinstance(state, dict) else None
    theirs = engine.get("weights") if isinstance(engine, dict) else None
    ours = template["engine"].get("weights") if isinstance(template.get("engine"), dict) else None
    if isinstance(theirs, str) and isinstance(ours, str) and theirs != ours:
        raise ValueError(
            f"state was made by other weights (digest {theirs}, this env's model {ours}): a "
            "state loads into an env running the model that made it"
        )


def check_same_device_type(state: Any, template: dict[str, Any], device: torch.device) -> None:
    """Name a state saved on another device type (a CUDA env's into a CPU one, or back).

    Its noise generators' states differ in size by device type, which the general check would
    name only as a shape.
    """
    engine = state.get("engine") if isinstance(state, dict) else None
    gens = engine.get("generators") if isinstance(engine, dict) else None
    own = template.get("engine", {}).get("generators") if isinstance(template, dict) else None
    if not (isinstance(gens, list) and isinstance(own, list) and gens and own):
        return  # check_state names what is wrong
    theirs, ours = gens[0], own[0]
    if not isinstance(theirs, torch.Tensor) or theirs.shape == ours.shape:
        return
    other = _CUDA_GENERATOR_BYTES if device.type == "cpu" else _cpu_generator_bytes()
    if theirs.numel() == other:
        raise ValueError(
            f"state's noise generators are not {device.type} ones ({theirs.numel()} bytes each, "
            f"this env's {ours.numel()}): a state loads into an env on the device type it was "
            "saved from"
        )
    raise ValueError(
        f"state['engine']['generators'][0] holds {theirs.numel()} bytes, where this env's "
        f"{device.type} generators hold {ours.numel()}: it is no generator state (what "
        "torch.Generator.get_state() returns), damaged or edited"
    )


#: A CUDA generator's state: its seed and offset, 8 bytes each.
_CUDA_GENERATOR_BYTES = 16


def _cpu_generator_bytes() -> int:
    """The size of a CPU generator's state (its Mersenne twister's)."""
    return torch.Generator("cpu").get_state().numel()


def _kind(array: Any) -> str:
    """'f' floating, 'i' signed or unsigned integer (not bool or uint8 frames), else the dtype."""
    if isinstance(array, torch.Tensor):
        if array.is_floating_point():
            return "f"
        return "i" if array.dtype in (torch.int16, torch.int32, torch.int64) else str(array.dtype)
    if array.dtype.kind == "f":
        return "f"
    return "i" if array.dtype.kind in "iu" and array.dtype != np.uint8 else str(array.dtype)


def _check_fits_dtype(array: torch.Tensor | np.ndarray, dtype: Any, where: str) -> None:
    """Refuse integers of another dtype that ``dtype`` (the env's) cannot hold."""
    info = torch.iinfo(dtype) if isinstance(dtype, torch.dtype) else np.iinfo(dtype)
    if array.numel() if isinstance(array, torch.Tensor) else array.size:
        low, high = int(array.min()), int(array.max())
        if low < info.min or high > info.max:
            raise ValueError(
                f"{where} must fit {dtype} ([{info.min}, {info.max}]), got values in "
                f"[{low}, {high}]"
            )


def _describe(value: Any) -> str:
    if isinstance(value, (torch.Tensor, np.ndarray)):
        return f"{type(value).__name__} of shape {tuple(value.shape)} and dtype {value.dtype}"
    if isinstance(value, (list, tuple)):
        return f"a {type(value).__name__} of {len(value)}"
    return f"{type(value).__name__} {value!r}"[:120]


def loadable_state(
    state: dict[str, Any],
    template: dict[str, Any],
    device: torch.device,
    obs_mode: str,
    check_engine: Callable[[Any], None] | None = None,
) -> dict[str, Any]:
    """``state`` as the env loads it, every check passed; a ``ValueError`` names what differs.

    ``template``: the same rows' own state (:func:`with_rows`); ``check_engine``: the engine's
    own check of its part (``WorldEngine.check_state``), if it has one.
    """
    state = {"world": template["world"], **state}  # states from before the world was recorded
    state = with_weights(state, template)
    check_same_world(state, template)
    state = drop_unused_keys(keep_frames(state, template, obs_mode), template)
    check_same_memory(state, template)
    check_same_weights(state, template)
    check_same_device_type(state, template, device)
    check_state(state, template)
    check_rngs(state)
    if check_engine is not None:
        check_engine(state["engine"])
    steps = state["steps"]
    if (steps < 0).any() or (steps.dtype.kind == "u" and (steps > np.uint64(_INT64_MAX)).any()):
        raise ValueError(f"state['steps'] must be in [0, 2**63), got {steps}")
    return state


def with_weights(state: dict[str, Any], template: dict[str, Any]) -> dict[str, Any]:
    """``state`` with the env's weights digest where it has none (states saved before one was)."""
    engine, own = state.get("engine"), template.get("engine")
    if isinstance(engine, dict) and isinstance(own, dict) and "weights" in own:
        return {**state, "engine": {"weights": own["weights"], **engine}}
    return state


def drop_unused_keys(state: dict[str, Any], template: dict[str, Any]) -> dict[str, Any]:
    """``state`` without the latent-similarity keys its memory banks never read.

    Banks that retrieve by pose keep none (a state saved by an earlier version has them); a
    bank that reads them is compared as it is (``check_state`` names what differs).
    """
    engine = state.get("engine")
    if not isinstance(engine, dict):  # check_state names what it is
        return state
    rows, own = engine.get("memory"), template["engine"].get("memory")
    if not isinstance(rows, list) or not own or own[0]["keys"].shape[-1] != 0:
        return state
    unread = [
        {**row, "keys": row["keys"][..., :0]}
        if isinstance(row, dict) and isinstance(row.get("keys"), torch.Tensor)
        else row
        for row in rows
    ]
    return {**state, "engine": {**engine, "memory": unread}}


def to_meta(state: Any) -> Any:
    """``state`` with its tensors as meta tensors (shape and dtype, no data)."""
    if isinstance(state, torch.Tensor):
        return state.to("meta")
    if isinstance(state, dict):
        return {k: to_meta(v) for k, v in state.items()}
    if isinstance(state, (list, tuple)):
        return type(state)(to_meta(v) for v in state)
    return state


def with_rows(one: Any, two: Any, n: int) -> Any:
    """The template of an ``n``-row state from those of one and two rows (:func:`to_meta`'s).

    What grows with the rows is what differs between the two: a list's length, an array's or
    a tensor's size along its row axis (the cache's keys have theirs second).
    """
    if isinstance(one, dict):
        return {k: with_rows(v, two[k], n) for k, v in one.items()}
    if isinstance(one, (list, tuple)):
        if len(two) != len(one):  # one entry per row
            assert (len(one), len(two)) == (1, 2), "a list that grows otherwise than by row"
            return type(one)(one * n)
        return type(one)(with_rows(a, b, n) for a, b in zip(one, two, strict=True))
    if isinstance(one, (torch.Tensor, np.ndarray)) and one.shape != two.shape:
        axis = next(i for i, (a, b) in enumerate(zip(one.shape, two.shape, strict=True)) if a != b)
        assert (one.shape[axis], two.shape[axis]) == (1, 2), "an axis that is not the rows'"
        shape = (*one.shape[:axis], n, *one.shape[axis + 1 :])
        if isinstance(one, np.ndarray):
            return np.zeros(shape, one.dtype)
        return torch.empty(shape, dtype=one.dtype, device="meta")
    return one


def repeat_rows(state: Any, one: Any, many: Any) -> Any:
    """A loadable one-row ``state`` as every row of ``many``, the template it is loaded as.

    ``one`` is the one-row template (:func:`with_rows`'s): what differs from ``many`` is the
    rows. Lists repeat their one entry (the same object: loading copies it), arrays and tensors
    are broadcast along their row axis (views, no copy).
    """
    if isinstance(one, dict):
        return {k: repeat_rows(state[k], v, many[k]) for k, v in one.items()}
    if isinstance(one, (list, tuple)):
        if len(many) != len(one):  # one entry per row
            return type(state)(list(state) * len(many))
        return type(state)(repeat_rows(*t) for t in zip(state, one, many, strict=True))
    if isinstance(one, (torch.Tensor, np.ndarray)) and one.shape != many.shape:
        if isinstance(state, torch.Tensor):
            return state.expand(many.shape)
        return np.broadcast_to(state, many.shape)
    return state


def keep_frames(state: dict[str, Any], template: dict[str, Any], obs_mode: str) -> dict[str, Any]:
    """``state`` with the frames this env keeps: a chunk-mode env's state gives its last."""
    frames, keep = state.get("frames"), template["frames"].shape[1]
    if not isinstance(frames, torch.Tensor) or frames.ndim != 5 or frames.shape[1] == keep:
        return state  # check_state names what is wrong
    if frames.shape[1] < keep:
        raise ValueError(
            f"state['frames'] holds {frames.shape[1]} frame(s) per row, the last of each "
            f"chunk, and this env's obs_mode {obs_mode!r} shows all {keep}: load it into "
            "an env whose obs_mode is not a chunk mode"
        )
    return {**state, "frames": frames[:, -keep:]}
