"""Native batched Gymnasium vector env: every row of one world in one forward per step."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any, SupportsInt, cast

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
    host_options,
    is_seed,
    parse_rows,
    reset_rows,
    row_seeds,
    step_limit,
    user_rng,
)
from gym_worldmodel.envs.pose import EgoShift, advance
from gym_worldmodel.envs.row_access import RowAccessMixin
from gym_worldmodel.envs.row_state import RowStateMixin
from gym_worldmodel.envs.settings import (
    check_render_mode,
    memory_switch,
    resolve_dtype,
    resolve_model,
)
from gym_worldmodel.envs.starts import RowStartsMixin
from gym_worldmodel.envs.window import Window
from gym_worldmodel.envs.worlds import (
    check_finite_weights,
    get_world,
    load_model,
)
from gym_worldmodel.models import (
    DTYPES,
    WorldModel,
    available_device,
)

#: Constructor arguments that a fork does not take from its parent's (see ``__init__``).
_NOT_FORK_SETTINGS = ("self", "num_envs", "reward_fn", "termination_fn", "start_fn", "engine")


class WorldModelVectorEnv(RowAccessMixin, RowStateMixin, RowStartsMixin, VectorEnv):
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
            looks and attends to it. None: on for worlds with a pose (city walk, driving) whose
            model has memory slots, off for the robot (fixed camera; retrieval by latent
            similarity, not trained) and for a model without slots. Switch
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
        memory_guidance: Guidance towards the retrieved memory (``SamplerConfig.
            memory_guidance``); None for the checkpoint's own (1: none, in the shipped
            worlds). Above 1, a step where some row holds memory runs the denoiser again
            without it and extrapolates away from that: the city walk's revisits come back
            closer to what it showed before (+1.40 dB over memory off at 2, +1.07 at 1), and
            such a step costs about 1.7x at one row, 2.2x at 8 (docs/experiments.md, "Memory
            guidance").
        engine: A prebuilt engine (tests, forks); overrides ``model``, ``nfe``,
            ``memory_guidance`` and the memory settings.

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
        memory_guidance: float | None = None,
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
            self.world, model, engine, nfe, memory_guidance
        )
        self.config.check_trained(self.head.modality, self.world.name)
        self.reward_fn, self.termination_fn = reward_fn, termination_fn  # checked (CheckedHook)
        self.start_fn = start_fn
        driving = self.head if isinstance(self.head, DrivingHead) else None  # the car's limits
        self._ego = EgoShift.for_model(self.config, self.head.modality, driving)
        self.memory = memory_switch(self.world, self.config, memory, memory_shared, memory_capacity)
        self.memory_shared, self.memory_capacity = memory_shared, memory_capacity
        bank = getattr(engine, "memory", None)
        if engine is not None:  # its memory, whatever the arguments say (see Args)
            self.memory = bank is not None
        if bank is not None:  # (a fork builds its engine with these)
            self.memory_capacity = int(bank.capacity)
            if len(bank.banks) > 1:  # (one row: as the argument says)
                self.memory_shared = len(set(bank.banks.tolist())) == 1
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
        if is_seed(seed):  # one seed (a 0-d tensor too), as Gymnasium's VectorEnv.reset:
            # np_random too, for a user's noise; a stream of its own (row 0's start draws from
            # seed's)
            one = int(cast(SupportsInt, seed))
            self._np_random_seed, self._np_random = one, user_rng(one)
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
        started = resetting  # (read only from here on)
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

    def set_window(self, window: Window) -> None:
        """Draw ``"human"`` mode's frames in ``window`` from now on, in place of the env's own.

        The hook of a wrapper that shows the rows its own way: :meth:`reset` and :meth:`step`
        hand ``window.show_rows`` what they draw, the rows' frames ``(B, T, H, W, 3)`` and their
        frames a second, and :meth:`close` closes it. PettingZoo's parallel env gives a
        :class:`~gym_worldmodel.envs.window.Window` that keeps each draw and shows its agents'
        views, a done agent's last frame in its place.
        """
        if self._window is None:
            raise ValueError(
                f"set_window needs an env made with render_mode='human', got {self.render_mode!r}"
            )
        if not isinstance(window, Window):
            raise TypeError(f"window must be a gym_worldmodel Window, got {type(window).__name__}")
        self._window.close()  # the env's own, if it opened
        self._window = window

    # --- memory switches per row -----------------------------------------------------------------

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
        self._window.show_rows(frames, self.metadata["render_fps"] * frames.shape[1])
