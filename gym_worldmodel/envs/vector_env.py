"""Native batched Gymnasium vector env: every row of one world in one forward per step."""

from __future__ import annotations

import dataclasses
import inspect
import os
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, cast

import numpy as np
import torch
from gymnasium import spaces
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space, concatenate, create_empty_array

from gym_worldmodel.envs import hooks as hook_lib
from gym_worldmodel.envs import observations as obs_lib
from gym_worldmodel.envs.actions import DrivingHead, encode_rows
from gym_worldmodel.envs.engine import Engine, FullEngine, WorldEngine
from gym_worldmodel.envs.options import autoreset_mode as autoreset_mode_of
from gym_worldmodel.envs.options import (
    check_choice,
    check_count,
    check_options,
    check_switch,
    checked_seeds,
    first_chunk,
    host_options,
    initial_conditions,
    parse_rows,
    reset_rows,
    rng_from_state,
    row_seeds,
    start_options,
    step_limit,
    user_rng,
)
from gym_worldmodel.envs.pose import POSE_FIELDS, EgoShift, advance
from gym_worldmodel.envs.resources import check_fits
from gym_worldmodel.envs.settings import (
    check_render_mode,
    memory_switch,
    resolve_dtype,
    resolve_model,
)
from gym_worldmodel.envs.state import (
    check_pose_range,
    loadable_state,
    to_meta,
    with_rows,
)
from gym_worldmodel.envs.window import Window, tile
from gym_worldmodel.envs.worlds import (
    check_finite_weights,
    get_world,
    load_model,
    start_frames,
)
from gym_worldmodel.models import (
    DTYPES,
    WorldModel,
    available_device,
)


@dataclasses.dataclass
class _StartPlan:
    """How rows start: their NumPy generators after the draws, start chunks, poses, seeds."""

    rngs: list[np.random.Generator]
    frames: np.ndarray
    poses: np.ndarray | None
    torch_seeds: list[int]


#: Constructor arguments that a fork does not take from its parent's (see ``__init__``).
_NOT_FORK_SETTINGS = ("self", "num_envs", "reward_fn", "termination_fn", "start_fn", "engine")
#: A row's spaces, as :meth:`WorldModelVectorEnv.get_attr` reads them (a sub-env's are its own).
_ROW_SPACES = {
    "observation_space": "single_observation_space",
    "action_space": "single_action_space",
}


class WorldModelVectorEnv(VectorEnv):
    """``num_envs`` rows of one world, stepped by one batched forward.

    Args:
        num_envs: Rows.
        world: ``"citywalk"``, ``"robot"`` or ``"driving"``.
        model: A checkpoint directory, hub repo id, ``WorldModel``, ``"random"`` /
            ``"random-tiny"`` (untrained), or None for the world's shipped weights. Weights load
            on the first reset. A reset without an image starts from the checkpoint
            directory's own start frames of this world where it has them (``gym-worldmodel
            train`` and ``ship --out`` write them; the directory is ``checkpoint_dir``: a
            ``WorldModel`` from ``hub.from_pretrained`` has its own), else from the world's
            bundled ones. An env refuses a model whose ``trained_modalities`` lack its world's.
            A ``WorldModel`` is shared, not copied: the env moves it to ``device`` and puts it
            in eval mode (``nfe`` does not change it either). A step writes its chunk into the
            KV cache at the env's next call (a planner that reloads its futures skips it):
            change the weights between steps (a world model trained online) and the last
            step's chunk is written with the new ones, unless a ``get_state`` wrote it first.
        action_mode: The action head's mode (camera ``"keys"``/``"discrete"``/``"look"``, robot
            ``"dict"``/``"flat"``); None for the world's default.
        obs_mode: ``"rgb"`` (last frame ``(H, W, 3)`` uint8), ``"chunk"`` (``(F, H, W, 3)``) or
            ``"latent"`` (``(F, C, h, w)`` float32, clipped to +-100). Worlds with a pose also
            take ``"rgb+pose"``, ``"chunk+pose"`` and ``"latent+pose"``: a ``Dict`` of the frames
            (key ``"rgb"``, ``"chunk"`` or ``"latent"``) and ``"pose"``, ``info["pose"]`` as
            ``(4,)`` float32 (see :mod:`gym_worldmodel.envs.observations`).
        device: Torch device of the model and, with ``output="torch"``, of the returns.
        dtype: ``"auto"`` (the default: bfloat16 autocast where the device computes it natively,
            a CUDA GPU with bf16 or a CPU with AVX512-BF16 or AMX; float32 elsewhere, where bf16
            is emulated and slower), ``"float32"`` or ``"bfloat16"`` (or that ``torch.dtype``).
            It is the precision of the forwards (autocast). A model the env loads itself (a
            world, a checkpoint) holds its linear and convolution weights in it too, bitwise the
            same frames in less time (``WorldModel.for_autocast``); a ``model=`` object given is
            left as it is. The memory bank keeps its latents in it. The shipped worlds' frames
            in bf16 stay within 0.02 dB PSNR of float32's against held-out episodes over 64
            steps (``python -m gym_worldmodel.bench dtype --data DATASET ...``, docs/benchmarks.md).
            ``env.dtype`` is the one chosen.
        output: ``"numpy"`` (rewards float64, as Gymnasium's vector envs give them) or
            ``"torch"`` (rewards float32, the dtype of a policy's losses; obs, rewards and
            flags stay on the device, which
            CuPy and other Array API libraries take by DLPack: ``cupy.from_dlpack(obs)``;
            Gymnasium's vector ``ArrayConversion`` serves host targets only, as the infos are
            NumPy).
        autoreset_mode: A ``gymnasium.vector.AutoresetMode`` (or its value).
        max_episode_steps: Truncate episodes after this many steps (None, or -1 as
            ``gym.make`` takes it: never).
        render_mode: None, ``"rgb_array"`` (:meth:`render` returns every row's frame) or
            ``"human"``: a pygame window (the ``play`` extra) shows the rows' frames, tiled in
            a grid, as :meth:`reset` and :meth:`step` return them, every frame of a step's
            chunk in turn at ``metadata["world_fps"]`` (so a step lasts at least
            ``1 / metadata["render_fps"]``); :meth:`render` returns None, and :meth:`close`
            closes the window (see :mod:`gym_worldmodel.envs.window`).
        reward_fn: Hook or list of hooks (:mod:`gym_worldmodel.envs.hooks`); default 0.
        termination_fn: Hook or list of hooks; default never.
        start_fn: Initial conditions (:mod:`envs.hooks`): called as ``start_fn(rngs)`` at every
            start of rows, reset or autoreset, with one seeded ``numpy.random.Generator`` per
            starting row (draw from them and episodes stay reproducible); returns reset options
            for those rows: ``image`` / ``frames``, and in the driving world ``speed`` and
            ``heading``, one value or one per row. Options given to :meth:`reset` win.
        memory: Whether the env runs spatial memory (``memory.SpatialMemory``): before each
            step every row retrieves the past chunk whose view overlaps most with where it now
            looks and attends to it. None: on for worlds with a pose (city walk, driving), off
            for the robot (fixed camera; retrieval by latent similarity, not trained). Switch
            rows off with :meth:`set_memory`. ``info["memory_hits"]`` counts retrieved chunks
            per row and ``info["memory_score"]`` is the first memory slot's score: its view
            overlap (0 to 1), or for the robot its latent similarity (cosine); 0 where nothing
            was retrieved.
        memory_shared: All rows share one memory bank (what one saw, another finds); poses
            then need a common origin, e.g. every row starting from the same image.
        memory_capacity: Chunks kept per bank (the bank is bounded; step cost stays flat).
        nfe: Denoiser passes per step; None for the checkpoint's own (``config.sampler.nfe``,
            2 for the shipped driving world, 1 for the others). More passes cost about one
            forward each and trade closeness to the recorded future for cleaner long rollouts:
            the driving world at 2 stays in the recorded frames' range over 1000 steps, and at
            1 scores about 1 dB closer at 16 steps and more (docs/experiments.md, "Driving's
            extra lane lines").
        engine: A prebuilt engine (tests, forks); overrides ``model``, ``nfe`` and the memory
            settings.

    Autoreset (``autoreset_mode``, Gymnasium's three): ``NEXT_STEP`` (the default) returns the
    last observation of a finished episode, and the next ``step`` resets that row (its action is
    ignored, unchecked, and the hooks see the idle action there; reward 0) and returns the new
    episode's first observation; ``SAME_STEP`` resets in
    the step that ends the episode and returns the new first observation, with the finished
    one's in ``info["final_obs"]`` (an object array, None in rows not done) and
    ``info["final_info"]`` (a dict of batched values with ``_key`` masks, as Gymnasium's
    ``SyncVectorEnv`` gives them); ``DISABLED`` never resets: step
    raises until the done rows are reset with ``reset(options={"reset_mask": ...})``.

    Poses (``info["pose"]``, worlds with a pose): camera ``(x_m, y_m, yaw_deg, pitch_deg)``,
    driving ``(x_m, y_m, heading_deg, speed_mps)``, integrated from the actions (see
    ``envs.pose``). Each reset puts the position and heading at zero; driving starts at 25 m/s,
    the speed of the recorded episodes' start, or at ``options["speed"]`` (m/s), and along
    the road or at ``options["heading"]`` (degrees, positive left).
    """

    metadata = {
        "render_modes": ["human", "rgb_array"],
        "render_fps": 5,  # the shipped worlds' steps a second; each env sets its world's
        "autoreset_mode": AutoresetMode.NEXT_STEP,
    }
    # assigned later too (env.reward_fn = hook), each is checked as at make
    reward_fn = hook_lib.CheckedHook()
    termination_fn = hook_lib.CheckedHook()
    start_fn = hook_lib.CheckedHook()

    def __init__(
        self,
        num_envs: int = 1,
        *,
        world: str = "citywalk",
        model: WorldModel | str | os.PathLike | None = None,
        action_mode: str | None = None,
        obs_mode: str = "rgb",
        device: str | torch.device = "cpu",
        dtype: str | torch.dtype = "auto",
        output: str = "numpy",
        autoreset_mode: AutoresetMode | str = AutoresetMode.NEXT_STEP,
        max_episode_steps: int | None = None,
        render_mode: str | None = None,
        reward_fn: hook_lib.Hook | Sequence[hook_lib.Hook] | None = None,
        termination_fn: hook_lib.Hook | Sequence[hook_lib.Hook] | None = None,
        start_fn: hook_lib.StartHook | None = None,
        memory: bool | None = None,
        memory_shared: bool = False,
        memory_capacity: int = 256,
        nfe: int | None = None,
        engine: Engine | None = None,
    ) -> None:
        # The settings as given, for a fork: a new option reaches forks without a line in fork().
        # Not the hooks or an engine: fork passes those of its own. (The first statement, so
        # that locals() holds the arguments alone; no super() call may come before it.)
        self._settings = {k: v for k, v in locals().items() if k not in _NOT_FORK_SETTINGS}
        check_choice("output", output, ("numpy", "torch"))
        check_choice("dtype", dtype, ("auto", *DTYPES, *DTYPES.values()))
        check_render_mode(render_mode)
        check_count("num_envs", num_envs)
        # (pygame imported now: without it, making the env is what fails)
        self._window = Window(f"gym-worldmodel {world}") if render_mode == "human" else None
        self.max_episode_steps = max_episode_steps
        self.world = get_world(world)
        self._frames_mode, self._pose_obs = obs_lib.parse_obs_mode(obs_mode, self.world.pose)
        # The frames a step decodes and keeps: the whole chunk where the observation shows it,
        # else only the last frame (all that rgb and latent observations, render() and the
        # hooks read). The VAE decodes each frame alone, and on the CPU its bits do not depend
        # on how many it decodes at once (tests/test_envs.py pins it); not checked on a GPU.
        self._decode = slice(None) if self._frames_mode == "chunk" else slice(-1, None)
        self.head = self.world.action_head(action_mode)
        self.num_envs, self.obs_mode, self.output = num_envs, obs_mode, output
        self.device = available_device(device)
        self.dtype = resolve_dtype(dtype, self.device)
        self.render_mode = render_mode
        self._engine, self._engine_given = engine, engine is not None  # (a fork's: a closed
        # one cannot be rebuilt)
        self.config, self.checkpoint_dir, self._model_arg = resolve_model(
            self.world, model, engine, nfe
        )
        self.config.check_trained(self.head.modality, self.world.name)
        self.reward_fn, self.termination_fn = reward_fn, termination_fn  # checked (CheckedHook)
        self.start_fn = start_fn
        driving = self.head if isinstance(self.head, DrivingHead) else None  # the car's limits
        self._ego = EgoShift.for_model(self.config, self.head.modality, driving)
        self.memory = memory_switch(self.world, self.config, memory, memory_shared, memory_capacity)
        self.memory_shared, self.memory_capacity = memory_shared, memory_capacity
        self.metadata = {
            **self.metadata,
            # render() gives one frame per step, so videos play in real time at the step rate;
            # the generated video's own rate is world_fps (obs_mode="chunk" has every frame).
            "render_fps": self.config.fps / self.config.dit.chunk_frames,
            "world_fps": self.config.fps,
            "autoreset_mode": autoreset_mode_of(autoreset_mode),
        }
        self.single_observation_space = self._obs_space()
        self.single_action_space = self.head.space
        self.observation_space = batch_space(self.single_observation_space, num_envs)
        self.action_space = batch_space(self.single_action_space, num_envs)
        self._rngs: list[np.random.Generator | None] = [None] * num_envs
        self._steps = np.zeros(num_envs, np.int64)
        self._done = np.zeros(num_envs, bool)
        self._pose = np.zeros((num_envs, 4)) if self.world.pose else None
        self._frames: torch.Tensor | None = None  # (B, F', H, W, 3) uint8, from the first start
        self._latents: torch.Tensor | None = None
        self._templates: dict[int, dict[str, Any]] = {}  # set_state's, per row count
        self._started = self.closed = False

    # --- Gymnasium API -------------------------------------------------------------------------

    def reset(self, *, seed: int | Sequence[int | None] | None = None, options: dict | None = None):
        """Reset all rows, or those named by ``options["env_idx"]`` / ``options["reset_mask"]``.

        ``options["image"]`` (uint8 ``(H, W, 3)`` of any size, or one per reset row, as an array
        or a list of pictures of different sizes; 8-bit PIL images are taken as RGB) or
        ``options["frames"]`` (``(k, H, W, 3)``, or
        one stack per row) start from the user's pictures, centre-cropped to a square and
        resized; otherwise a start frame is drawn, seeded, from the checkpoint's own start frames
        of this world (``checkpoint_dir``), else from the world's bundled frames.
        ``options["speed"]`` (driving): the start speed in m/s, one or one per reset row
        (default 25, the recorded episodes' start speed), and ``options["heading"]``: the start
        heading in degrees from the road's direction (default 0, along it; positive left);
        autoresets start at the defaults, or where ``start_fn`` says (options given here win).
        Per-row options are in the order of ``env_idx`` (each row named once).
        ``seed``: an int seeds row i with ``seed + i``; a list gives one seed (or None) per env.
        A partial reset's infos are those of its rows alone (zero and masked out elsewhere), as
        Gymnasium's vector envs give them.

        A reset after :meth:`close` reopens the env, as a new one: every row starts, and the
        weights load again (SB3's ``check_env`` renders, closes and then steps the same env).
        """
        reopening = self.closed and not self._engine_given  # its engine is built anew
        if not reopening:
            self._check_open()
        check_options(options)
        options = host_options(options)  # CUDA tensors too
        rows = reset_rows(options, self.num_envs)
        if not self._started and len(rows) != self.num_envs:
            raise RuntimeError("the first reset must reset every row (no env_idx / reset_mask)")
        frames, start = self._start_options(options, len(rows), also=("env_idx", "reset_mask"))
        order = np.argsort(rows)  # per-row options follow env_idx's order; rows start ascending
        rows = rows[order]
        frames = None if frames is None else frames[order]
        start = {column: values[order] for column, values in start.items()}
        seeds = row_seeds(seed, rows, self.num_envs)
        self._start_rows(rows, seeds, frames, start)
        if isinstance(seed, (int, np.integer)):  # as Gymnasium's VectorEnv.reset: np_random
            # too, for a user's noise; a stream of its own (row 0's start draws from seed's)
            self._np_random_seed, self._np_random = int(seed), user_rng(seed)
        self._started, self.closed = True, False
        infos = self._infos()
        if len(rows) < self.num_envs:  # as Gymnasium's vector envs: the reset rows' infos only
            infos = obs_lib.rows_only(infos, np.isin(np.arange(self.num_envs), rows))
        assert self._frames is not None  # the rows' start
        self._show(self._frames[:, -1:], np.zeros(self.num_envs, bool))
        return self._obs(), infos

    def step(self, actions: Any):
        """Advance every row one chunk; see the class docstring for the autoreset modes.

        Bad actions raise before anything changes, and so does a ``start_fn`` asked for the rows
        that start over in this step (next-step autoreset). A reward or termination hook that
        raises (or returns the wrong shape, or NaN) does so after the model has stepped: the rows
        have advanced (and those that start over in this step have started), and the error
        names the hook; so does a ``start_fn`` under same-step
        autoreset, whose rows end in the step itself.

        With ``render_mode="human"`` the step decodes every frame of the chunk and shows them
        (the observations are the same bits as without a window, on the CPU); a row that
        starts over in the step shows its new episode's first frame.
        """
        self._check_open()
        if not self._started:
            raise RuntimeError("call reset() before step()")
        mode = self.metadata["autoreset_mode"]
        if mode == AutoresetMode.DISABLED and self._done.any():
            raise RuntimeError(
                f"rows {np.flatnonzero(self._done).tolist()} are done and autoreset is disabled: "
                "reset them with reset(options={'reset_mask': mask}) before stepping"
            )
        resetting = (
            self._done.copy() if mode == AutoresetMode.NEXT_STEP else np.zeros_like(self._done)
        )
        # (the actions of rows that start over are ignored, unchecked)
        vec = encode_rows(self.head, actions, self.config.dit.chunk_frames, resetting)
        restart = np.flatnonzero(resetting)  # planned now: a start_fn fails before the step
        plan = self._plan_start(restart, [None] * len(restart), None) if len(restart) else None
        assert self._engine is not None and self._frames is not None  # started
        prev_frame, prev_pose = self._frames[:, -1], self._pose
        # memory retrieves by where the rows will look
        pose, model_vec = advance(self._pose, vec, self.head, 1.0 / self.config.fps, self._ego)
        decode = slice(None) if self._showing else self._decode  # a window plays every frame
        self._latents, chunk = self._engine.step(
            model_vec, decode=decode, poses=pose, store=~resetting
        )
        self._frames = chunk if decode == self._decode else chunk[:, self._decode].clone()
        self._pose = pose  # after the step: a failed forward leaves the rows where they were
        self._steps += 1
        if plan is not None:  # before the hooks: they see these rows at their new start, step 0
            self._begin_rows(restart, plan)
        rewards, terminated, truncated = self._judge(prev_frame, vec, prev_pose)
        rewards[resetting], terminated[resetting], truncated[resetting] = 0.0, False, False
        done = terminated | truncated
        infos = self._infos()
        started = resetting.copy()
        if mode == AutoresetMode.SAME_STEP and done.any():
            infos.update(self._final(done, infos))
            self._start_rows(np.flatnonzero(done), [None] * int(done.sum()), None)
            infos.update(self._infos())
            started, done = done, np.zeros_like(done)
        self._done = done
        self._show(chunk, started)
        return self._obs(), *self._flags(rewards, terminated, truncated), infos

    def idle_action(self) -> Any:
        """Every row's do-nothing action: the single env's ``idle_action()``, one per row."""
        space, rows = self.single_action_space, [self.head.idle_action()] * self.num_envs
        out = create_empty_array(space, self.num_envs)
        # Gymnasium's stubs: its concatenate takes the None create_empty_array gives a custom space
        return concatenate(space, rows, out)  # type: ignore[arg-type]

    def render(self) -> tuple[np.ndarray, ...] | None:
        """The current last frame of every row (no model forward) with ``"rgb_array"``.

        None without a render mode, and with ``"human"``, whose window :meth:`reset` and
        :meth:`step` draw themselves.
        """
        if self.render_mode != "rgb_array" or self._frames is None:
            return None
        return tuple(self._frames[:, -1].to("cpu", copy=True).numpy())

    # --- SyncVectorEnv's questions to its sub-envs, put to the rows -----------------------------

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
        value = getattr(self, _ROW_SPACES.get(name, name))
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
        if name in _ROW_SPACES or name in _ROW_SPACES.values():
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

    def set_memory(
        self,
        enabled: bool | None,
        env_idx: int | Sequence[int] | np.ndarray | None = None,
        store: bool | None = None,
    ) -> None:
        """Turn spatial-memory retrieval on or off for rows ``env_idx`` (all if None).

        Rows switched off keep storing what they see; they just stop attending to it (for
        memory on/off comparisons within one batch). ``store=False`` stops rows storing what
        they see (a read-only memory, e.g. rows exploring a bank filled by others); ``True``
        resumes. None leaves a switch as it is. Needs an env built with memory.
        """
        self._check_open()
        check_switch("enabled", enabled, optional=True)
        check_switch("store", store, optional=True)
        rows = None
        if env_idx is not None:  # (a device tensor of rows too)
            rows = self._rows(env_idx, True).tolist()
        self._build_engine()
        # an engine that switches memory has set_memory_enabled (see Engine)
        cast(FullEngine, self._engine).set_memory_enabled(enabled, rows, store)

    def hand_over_memory(self, env_idx: int | Sequence[int] | np.ndarray) -> None:
        """Keep what rows ``env_idx`` stored in their shared bank for the rows sharing it.

        A later reset of these rows then leaves their stored chunks to the others (a reset
        otherwise forgets what a row stored); they go when every row of the bank resets at
        once. For rows that share a bank (``memory_shared=True``): the PettingZoo env hands a
        dead agent's views to the live agents so.
        """
        self._check_open()
        rows = self._rows(env_idx, False).tolist()
        if not (self.memory and self.memory_shared):
            raise ValueError(
                "hand_over_memory needs rows sharing a memory bank: make the env with "
                "memory=True and memory_shared=True"
            )
        self._build_engine()
        memory = cast(FullEngine, self._engine).memory  # an engine with memory (see Engine)
        assert memory is not None  # the env's memory switch built it
        memory.hand_over(rows)

    def close_extras(self, **kwargs: Any) -> None:
        """Release the engine, the rows' frames and the window; a :meth:`reset` reopens the env."""
        if self._window is not None:
            self._window.close()
        self._engine = self._frames = self._latents = None
        self._started = False
        self._rngs = [None] * self.num_envs  # a reopened env starts as a new one

    @property
    def started(self) -> bool:
        """Whether every row has been reset (or loaded by :meth:`set_state`) at least once."""
        return self._started

    @property
    def done(self) -> np.ndarray:
        """A copy of the rows' done flags (the episode ended at their last step) ``(num_envs,)``."""
        return self._done.copy()

    @property
    def max_episode_steps(self) -> int | None:
        """Steps after which a row truncates (None: never); settable, checked either way."""
        return self._max_episode_steps

    @max_episode_steps.setter
    def max_episode_steps(self, value: int | None) -> None:
        self._max_episode_steps = step_limit("max_episode_steps", value)

    # --- state for planners ----------------------------------------------------------------------

    def get_state(self, env_idx: int | Sequence[int] | np.ndarray | None = None) -> dict[str, Any]:
        """Copy of the rows' full state (repeats allowed: ``[0, 0, 0]`` forks row 0 three times).

        ``env_idx``: a list of rows, one row (an int), or None for every row. Covers the KV
        cache, generator states, the last chunk's latents and frames (its last frame, or all of
        them in a chunk ``obs_mode``), pose, step count, done flags and the rows' NumPy
        generators.
        """
        self._check_open()
        if not self._started:
            raise RuntimeError("call reset() before get_state()")
        rows = self._rows(env_idx, repeats=True)
        assert self._engine is not None and self._frames is not None and self._latents is not None
        return {
            "world": self.world.name,
            "engine": self._engine.get_state(rows.tolist()),
            "frames": self._frames[rows].clone(),
            "latents": self._latents[rows].clone(),
            "pose": None if self._pose is None else self._pose[rows].copy(),
            "steps": self._steps[rows].copy(),
            "done": self._done[rows].copy(),
            "rngs": [
                None if self._rngs[i] is None else self._rngs[i].bit_generator.state for i in rows
            ],
        }

    def set_state(
        self,
        state: dict[str, Any],
        env_idx: int | Sequence[int] | np.ndarray | None = None,
        *,
        seeds: int | Iterable[int] | None = None,
    ) -> None:
        """Load :meth:`get_state` output of as many rows into rows ``env_idx`` (all if None).

        The rows draw the noise of the state's generators, unless ``seeds`` (one per loaded row,
        or an int: the i-th loaded row gets ``seeds + i``) reseeds them as :meth:`fork` does: a
        planner that loads one state into its futures every step draws fresh noise so.

        The state is checked against the rows' own first (keys, shapes, dtypes, the world and
        a digest of the weights that made it, read from the engine's model once, when a state
        first needs it; floats finite, the KV cache's and the memory's stored entries
        included; poses in ``info["pose"]``'s range): one from another world, model or env
        configuration is a ``ValueError`` that names the first entry that differs, and the env
        is left as it was.
        Floating tensors may come at another precision (a float32 env's state into a bf16 one);
        they are converted. A chunk ``obs_mode``'s state loads into an env that keeps only the
        last frame (it takes that one); the reverse is refused. On an env never reset, the
        first ``set_state`` starts every row once to learn what a state looks like (row seed 0;
        a ``start_fn`` is called for it).
        """
        self._check_open()
        rows = self._rows(env_idx, repeats=False)
        if not isinstance(state, dict) or "steps" not in state:
            raise ValueError(f"state must be what get_state() returns, got {type(state).__name__}")
        steps = state["steps"]
        if not isinstance(steps, np.ndarray) or steps.ndim != 1:
            raise ValueError(
                "state['steps'] must be a 1-D array (one step count per row, as get_state() "
                f"gives it), got {type(steps).__name__} of shape {np.shape(steps)}"
            )
        if len(steps) != len(rows):
            into = (
                f"env_idx names {len(rows)}" if env_idx is not None else f"this env has {len(rows)}"
            )
            raise ValueError(f"state holds {len(steps)} rows, {into}")
        if not self._started and len(rows) != self.num_envs:
            raise RuntimeError("set the state of every row (or reset) before a partial one")
        if not len(rows):
            return  # a state of no rows, into none
        started = self._started
        try:
            template = self._state_template(len(rows))
            check_engine = getattr(self._engine, "check_state", None)  # optional (see Engine)
            state = loadable_state(state, template, self.device, self.obs_mode, check_engine)
            if self.world.pose is not None:  # in the pose space, as info["pose"] gives them
                space = obs_lib.pose_space(self.world.pose, self.head.max_speed)
                check_pose_range(state["pose"], space, POSE_FIELDS[self.world.pose])
            seeds = checked_seeds(seeds, len(rows), "set_state seeds")
        except ValueError:
            self._started = started  # an env never reset stays so
            raise
        self._load_state(state, rows)
        if seeds is not None:
            self._reseed(rows, seeds)

    def _state_template(self, n: int) -> dict[str, Any]:
        """What the state of ``n`` rows looks like (tensors on the meta device), made once."""
        template = self._templates.get(n)
        if template is None:
            rngs = list(self._rngs)  # what an env never reset draws its unseeded starts from
            if not self._started:  # an env never reset is started (from row seed 0) to say
                self._start_rows(np.arange(self.num_envs), [0] * self.num_envs, None)
                self._started = True
            # From the states of one and two rows, not of n: a state is megabytes a row.
            one, two = (to_meta(self.get_state(np.zeros(k, np.int64))) for k in (1, 2))
            template = with_rows(one, two, n)
            self._rngs[:] = rngs  # and keeps: a refused state leaves no seed 0 behind
            self._templates[n] = template
        return template

    def _load_state(self, state: dict[str, Any], rows: np.ndarray) -> None:
        """Load a state known to fit (checked, or this env class's own) into ``rows``."""
        self._build_engine()
        if not self._started:
            self._frames = torch.zeros_like(state["frames"], device=self.device)
            self._latents = torch.zeros_like(
                state["latents"], device=self.device, dtype=torch.float32
            )
        assert self._engine is not None and self._frames is not None and self._latents is not None
        self._engine.set_state(state["engine"], rows.tolist())
        self._frames[rows] = state["frames"].to(self._frames.device)
        self._latents[rows] = state["latents"].to(self._latents)
        if self._pose is not None:
            self._pose[rows] = state["pose"]
        self._steps[rows], self._done[rows] = state["steps"], state["done"]
        for row, rng_state in zip(rows, state["rngs"], strict=True):
            self._rngs[row] = None if rng_state is None else rng_from_state(rng_state)
        self._started = True

    def fork(
        self,
        row: int | Sequence[int] | np.ndarray,
        n: int,
        seeds: int | Iterable[int] | None = None,
        *,
        autoreset_mode: AutoresetMode | str | None = None,
        output: str | None = None,
        max_episode_steps: int | None = None,
    ) -> WorldModelVectorEnv:
        """A new ``n``-row env whose rows all continue from row ``row`` (the model is shared).

        ``row`` may be a list of B rows: the new env then has ``B * n`` rows, row ``row[i]``'s
        futures at ``i * n`` to ``(i + 1) * n - 1`` (planning for B envs in one batch; its
        ``seeds`` are one per new row).

        Without ``seeds`` every fork draws the same noise (common random numbers: futures differ
        only by their actions); ``seeds`` (one per fork, or an int: fork i gets ``seeds + i``, as
        in :meth:`reset`) reseeds each fork's generators (the model's noise and the NumPy
        generator that picks start frames on autoreset) so their futures differ. A state loaded
        later (:meth:`set_state`) brings its rows' generators with it, unless its ``seeds``
        reseed them. With memory, each fork gets its own copy of the row's memory. Hooks with values
        per row (a goal image or target per row) keep row ``row``'s in every fork (``select``,
        see :mod:`gym_worldmodel.envs.hooks`).

        ``output`` (``"numpy"`` or ``"torch"``; default this env's) is what the forks return: a
        planner scoring futures on the GPU takes ``"torch"`` from an env that gives an agent NumPy.
        Forks render as this env does, but for ``"human"``: a fork of an env that shows its
        frames in a window renders ``"rgb_array"``, unseen.

        Forks keep the rows' step counts and, unless ``max_episode_steps`` says otherwise (-1:
        no limit), this env's ``max_episode_steps``: ``max_episode_steps=-1`` imagines past the
        episode's time limit (a future forked near its end would restart inside a planning
        horizon). A fork that
        ends inside a planning horizon (a termination hook, the robot's
        ``terminate_episode = 0``, ``max_episode_steps``) restarts as ``autoreset_mode`` says
        (default: this env's): with ``NEXT_STEP`` its next step begins a new episode (reward 0)
        and the rewards after it are that episode's; with ``DISABLED`` stepping it raises. Count
        a plan's return until its row is done::

            alive, ret = np.ones(n, bool), np.zeros(n)
            for action in plan:
                _, reward, terminated, truncated, _ = futures.step(action)
                ret += alive * reward
                alive &= ~(terminated | truncated)
        """
        self._check_open()
        if not self._started:
            raise RuntimeError("call reset() before fork()")
        # rows picked on the device (a torch planner's argmax) too
        parents = parse_rows(row, self.num_envs, "row", repeats=True, empty=False).tolist()
        check_count("n", n, "forks")
        if output is not None:
            check_choice("output", output, ("numpy", "torch"))
        limit = self.max_episode_steps if max_episode_steps is None else max_episode_steps
        step_limit("max_episode_steps", limit)  # checked before the fork is built
        check_fits(self._state_template(1), len(parents) * n, self.device, "a fork")
        mode = autoreset_mode_of(autoreset_mode or self.metadata["autoreset_mode"])
        rows = np.repeat(np.asarray(parents, np.int64), n).tolist()  # each parent's n futures
        seeds = checked_seeds(seeds, len(rows), "fork seeds")
        state = self.get_state(rows)
        source = cast(FullEngine, self._engine)  # forking needs the engine's model (see Engine)
        engine = self._make_engine(
            source.model, len(rows), source.memory is not None, weights=source.weights
        )
        child = WorldModelVectorEnv(
            len(rows),
            **{
                **self._settings,  # as this env was made, but for what is its own now:
                "model": None,  # the engine brings it (a fork keeps no model alive of its own)
                "device": self.device,
                "dtype": self.dtype,
                # imagined futures are not shown (a planner's forks would fill the window)
                "render_mode": "rgb_array" if self.render_mode == "human" else self.render_mode,
                "output": output or self.output,
                "autoreset_mode": mode,
                "max_episode_steps": limit,
                "reward_fn": hook_lib.select(self.reward_fn, rows),
                "termination_fn": hook_lib.select(self.termination_fn, rows),
                "start_fn": self.start_fn,
                "memory": self.memory,
                "memory_shared": False,  # each fork its own copy of its row's memory
                "engine": engine,  # the model, its nfe and the memory come with the engine
            },
        )
        child.checkpoint_dir = self.checkpoint_dir  # its start frames for the forks' autoresets
        child._load_state(state, np.arange(len(rows)))  # this env's own state: nothing to check
        if seeds is not None:
            child._reseed(np.arange(len(rows)), seeds)
        return child

    def _reseed(self, rows: np.ndarray, seeds: list[int]) -> None:
        """Reseed the rows' generators: the model's noise and the NumPy one of their autoresets."""
        assert self._engine is not None  # built by the reset, set_state or fork before
        self._engine.seed(seeds, env_idx=rows.tolist())
        for row, seed in zip(rows, seeds, strict=True):
            self._rngs[row] = np.random.default_rng(seed)

    # --- internals -------------------------------------------------------------------------------

    def _obs_space(self) -> spaces.Space:
        return obs_lib.observation_space(
            self._frames_mode, self._pose_obs, self.config, self.world.pose, self.head.max_speed
        )

    def _build_engine(self) -> None:
        if self._engine is None:
            banks = [0] * self.num_envs if self.memory_shared else None
            model = load_model(self.world, self._model_arg)
            if model is not self._model_arg:  # the env's own: it runs only in self.dtype
                model.for_autocast(self.dtype)
            else:  # a checkpoint's weights are checked as they load; a given model's here
                check_finite_weights(model)
                lower = {p.dtype for p in model.parameters()} - {torch.float32}
                if self.dtype == torch.float32 and lower:
                    raise ValueError(
                        f"model= holds {sorted(map(str, lower))} weights and this env runs in "
                        "float32 (no autocast): make the env with dtype=torch.bfloat16, or "
                        "pass a float32 model"
                    )
            self._engine = self._make_engine(model, self.num_envs, self.memory, banks)

    def _make_engine(
        self,
        model: WorldModel,
        n: int,
        memory: bool,
        banks: list[int] | None = None,
        weights: str | None = None,
    ) -> WorldEngine:
        """An engine of ``n`` rows running ``model`` as this env does (its sampler: its nfe)."""
        return WorldEngine(
            model,
            n,
            self.head.modality,
            self.device,
            self.dtype,
            memory=memory,
            memory_banks=banks,
            memory_capacity=self.memory_capacity,
            sampler=self.config.sampler,
            weights=weights,
        )

    def _rows(self, env_idx: Any, repeats: bool) -> np.ndarray:
        """Validated row indices ``(n,)``: all rows for None, one row for an int."""
        if env_idx is None:
            return np.arange(self.num_envs)
        return parse_rows(env_idx, self.num_envs, "env_idx", repeats=repeats, empty=True)

    def _check_open(self) -> None:
        if self.closed:
            raise RuntimeError(
                "this env is closed; make a new one"
                if self._engine_given  # a fork's: its engine is gone with it
                else "this env is closed: reset() reopens it (the weights load again)"
            )

    def check_reset_options(self, options: Mapping[str, Any], n: int) -> None:
        """Raise as ``reset(options=options)`` of ``n`` rows would, without resetting any.

        For adapters that reset groups of rows with their own options (SB3's per-row options):
        every group is checked before any row is reset.
        """
        self._start_options(host_options(options), n)

    def _start_options(self, options: dict, n: int, also: tuple[str, ...] = ()):
        """Options that start ``n`` rows: ``(user start chunks or None, pose column -> values)``."""
        max_speed = self.head.max_speed  # the driving head's
        return start_options(options, n, self.config, self.world.pose, max_speed, also)

    def _start_rows(
        self,
        rows: np.ndarray,
        seeds: list[int | None],
        frames: np.ndarray | None,
        start: dict[int, np.ndarray] | None = None,
    ) -> None:
        """Reseed, pick start frames and start ``rows`` in the engine.

        ``start``: pose column -> the rows' values there (driving: speed and heading); the
        other columns start at the world's start pose.
        """
        self._begin_rows(rows, self._plan_start(rows, seeds, frames, start))

    def _plan_start(
        self,
        rows: np.ndarray,
        seeds: list[int | None],
        frames: np.ndarray | None,
        start: dict[int, np.ndarray] | None = None,
    ) -> _StartPlan:
        """What starting ``rows`` takes (start_fn asked, frames picked), nothing changed yet.

        Made before a step whose rows reset next, so that a ``start_fn`` that raises or returns
        options that do not fit raises before the model steps.
        """
        self._build_engine()
        # The rows' generators change only once the engine has started them: a failed start
        # leaves them (and the rows) as they were.
        rngs = []
        for k, row in enumerate(rows):
            rng = self._rngs[row]
            if seeds[k] is not None or rng is None:
                rngs.append(np.random.default_rng(seeds[k]))
            else:
                rngs.append(rng_from_state(rng.bit_generator.state))
        if self.start_fn is not None:
            frames, start = initial_conditions(
                self.start_fn, rngs, self._start_options, frames, start or {}
            )
        size = self.config.vae.image_size
        bundled = start_frames(self.world, size, self.checkpoint_dir) if frames is None else None
        torch_seeds, chunks = [], []
        for rng in rngs:
            if bundled is not None:
                chunks.append(first_chunk(bundled[rng.integers(len(bundled))][None], self.config))
            torch_seeds.append(int(rng.integers(2**63 - 1)))
        frames = np.stack(chunks) if frames is None else frames
        poses = None
        if self._pose is not None:
            poses = np.tile(np.asarray(self.world.start_pose, np.float64), (len(rows), 1))
            for column, values in (start or {}).items():
                poses[:, column] = values
        return _StartPlan(rngs, frames, poses, torch_seeds)

    def _begin_rows(self, rows: np.ndarray, plan: _StartPlan) -> None:
        """Start ``rows`` in the engine as ``plan`` says, then take its generators."""
        assert self._engine is not None  # built by _plan_start
        frames_t = torch.from_numpy(np.ascontiguousarray(plan.frames)).to(self.device)
        latents, frames_t = self._engine.start(
            rows.tolist(), frames_t, poses=plan.poses, seeds=plan.torch_seeds
        )
        frames_t = frames_t[:, self._decode]
        for row, rng in zip(rows, plan.rngs, strict=True):
            self._rngs[row] = rng
        if self._frames is None:
            self._frames, self._latents = frames_t.clone(), latents.clone()
        else:
            assert self._latents is not None  # set with the frames
            self._frames[rows], self._latents[rows] = frames_t, latents
        self._steps[rows], self._done[rows] = 0, False
        if self._pose is not None:
            self._pose[rows] = plan.poses

    def _judge(
        self, prev_frame: torch.Tensor, vec: np.ndarray, prev_pose: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The step's rewards, terminations (hooks, the action's own) and truncations."""
        assert self._frames is not None  # the step's
        last = self._frames[:, -1]

        def arguments() -> tuple:
            effort = self.head.effort(vec)  # (hooks get copies of every argument)
            step = (prev_frame, vec, last, self._pose, prev_pose, self._steps, effort)
            return hook_lib.arguments(*step, self._on_device)

        rewards, terminated = hook_lib.judge(
            self.reward_fn,
            self.termination_fn,
            arguments,
            self.num_envs,
            self.head.ends_episode(vec),
        )
        limit = self.max_episode_steps
        truncated = np.zeros(self.num_envs, bool) if limit is None else self._steps >= limit
        return rewards, terminated, truncated

    def _obs(self) -> Any:
        """The rows' observations now: always copies (callers keep them while the env steps)."""
        assert self._frames is not None and self._latents is not None  # started
        frames = self._frames[:, -1] if self._frames_mode == "rgb" else self._frames
        pose = self._pose if self._pose_obs else None
        return obs_lib.observe(
            self.single_observation_space,
            self._frames_mode,
            frames,
            self._latents,
            pose,
            self._on_device if self.output == "torch" else None,
        )

    def _infos(self) -> dict[str, Any]:
        return obs_lib.step_infos(self._steps, self._pose, self._engine)

    def _final(self, done: np.ndarray, infos: dict[str, Any]) -> dict[str, Any]:
        """SAME_STEP bookkeeping: terminal observations and infos of the done rows."""
        return obs_lib.final_infos(done, self._obs(), infos)

    def _flags(self, rewards: np.ndarray, terminated: np.ndarray, truncated: np.ndarray):
        if self.output == "numpy":
            return rewards, terminated, truncated
        to = self._on_device
        return to(rewards.astype(np.float32)), to(terminated), to(truncated)

    def _on_device(self, array: np.ndarray) -> torch.Tensor:
        """A NumPy array as a tensor on the env's device."""
        return torch.from_numpy(array).to(self.device)

    @property
    def _showing(self) -> bool:
        """Whether the env draws its frames in a window now (not closed by its user)."""
        return self._window is not None and not self._window.dismissed

    def _show(self, chunk: torch.Tensor, started: np.ndarray) -> None:
        """Draw the rows' frames ``(B, T, H, W, 3)`` in the window, in a step's time.

        Rows ``started`` (a ``(B,)`` mask) show their current frame, a new episode's first.
        """
        if not self._showing:
            return
        assert self._window is not None and self._frames is not None  # showing, started
        frames = chunk.to("cpu", copy=True).numpy()
        rows = np.flatnonzero(started)
        frames[rows] = self._frames[rows, -1:].cpu().numpy()
        self._window.show(tile(frames), self.metadata["render_fps"] * frames.shape[1])


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
