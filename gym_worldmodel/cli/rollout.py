"""``gym-worldmodel rollout``: play a world from a start image and actions; write the video."""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from gym_worldmodel.cli.argtypes import (
    add_memory_guidance,
    add_video_scale,
    add_world_dtype,
    check_device,
    check_video,
    denoiser_passes,
    non_negative_int,
    positive_int,
)
from gym_worldmodel.cli.worlds import SIMULATOR_WORLD_IDS, WORLD_IDS
from gym_worldmodel.files import unwritable

if TYPE_CHECKING:
    from gym_worldmodel.envs import WorldModelEnv


def _load_array_file(path: Path, flag: str) -> Any:
    """A ``.npy``'s array or an ``.npz``'s arrays (a dict), read whole, without pickles.

    A file that is not one (truncated, corrupt, empty, an ``.npz`` named ``.npy``, objects that
    need pickle) is a clear error naming it.
    """
    from gym_worldmodel.files import load_numbers, numpy_load_error

    try:
        data = load_numbers(path)
    except (OSError, ValueError) as err:
        why = numpy_load_error(err)
        raise SystemExit(f"{flag} {path}: not a {path.suffix} file of numbers ({why})") from err
    if isinstance(data, dict) != (path.suffix == ".npz"):
        held = "named arrays (an .npz)" if isinstance(data, dict) else "one array (an .npy)"
        raise SystemExit(f"{flag} {path}: expected a {path.suffix} file, this one holds {held}")
    return data


def read_start_image(path: Path) -> Any:
    """A start picture for ``reset(options=...)``: ``{"image": (H, W, 3)}`` or ``{"frames": ...}``.

    PNG, JPEG or anything Pillow reads (converted to RGB), or a ``.npy`` of uint8 ``(H, W, 3)``
    (one picture) or ``(k, H, W, 3)`` (the last frames before the rollout). Any size: the env
    centre-crops to a square and resizes.
    """
    import numpy as np

    from gym_worldmodel.envs.pictures import picture_hint, pil_as_rgb

    if not path.is_file():
        raise SystemExit(f"--image {path}: {'a folder' if path.is_dir() else 'no such file'}")
    if path.suffix == ".npy":
        arr = _load_array_file(path, "--image")
    else:
        try:
            from PIL import Image
        except ImportError as err:
            raise SystemExit("--image needs Pillow: pip install gym-worldmodel[video]") from err
        try:
            with Image.open(path) as img:
                arr = pil_as_rgb("reset image", img)  # 8-bit modes as RGB; 16-bit refused
        except OSError as err:
            raise SystemExit(f"--image {path}: not an image Pillow can read ({err})") from err
        except ValueError as err:
            raise SystemExit(f"--image {path}: {err}") from err
    if arr.dtype != np.uint8 or arr.ndim not in (3, 4) or arr.shape[-1] != 3 or 0 in arr.shape:
        raise SystemExit(
            f"--image {path}: expected uint8 RGB (H, W, 3) or (k, H, W, 3), not empty; "
            f"got {arr.dtype} {arr.shape}{picture_hint(arr)}"
        )
    return {"image": arr} if arr.ndim == 3 else {"frames": arr}


def read_actions(path: Path) -> Any:
    """The actions of ``rollout --actions``: an array with one row per step, or RT-1 columns.

    * ``.npy`` or ``.csv`` (comma-separated, ``#`` comments): ``(steps, *action)`` in the world's
      default action space (camera keys ``(steps, 2)``, driving ``(steps, 2)``, robot flat
      ``(steps, 10)``; ``.npy`` may add a per-frame axis, ``(steps, F, ...)``).
    * ``.npz`` (robot): the RT-1 dict, one array per key with ``steps`` rows
      (``world_vector`` ``(steps, 3)``, ``rotation_delta`` radians, ...; the 1-wide keys
      ``(steps, 1)`` or ``(steps,)``); ``terminate_episode`` is ``(steps,)`` integers or RT-1's
      one-hot ``(steps, 3)``, and may be left out (1, arm), as may the base keys (zeros).
    """
    import warnings

    import numpy as np

    if not path.is_file():
        raise SystemExit(f"--actions {path}: {'a folder' if path.is_dir() else 'no such file'}")
    if path.suffix == ".npz":
        from gym_worldmodel.envs.actions import complete_rt1

        try:
            return complete_rt1(_load_array_file(path, "--actions"))
        except ValueError as err:  # (ActionError)
            raise SystemExit(f"--actions {path}: {err}") from err
    if path.suffix == ".npy":
        arr = _load_array_file(path, "--actions")
    else:
        try:
            with warnings.catch_warnings():  # an empty file is refused below, without numpy's
                warnings.simplefilter("ignore", UserWarning)
                arr = np.loadtxt(path, delimiter=",", ndmin=2, dtype=np.float64)
        except (OSError, ValueError) as err:
            raise SystemExit(f"--actions {path}: not comma-separated numbers ({err})") from err
    if arr.ndim < 2 or not len(arr):
        raise SystemExit(f"--actions {path}: expected one row per step, got shape {arr.shape}")
    return arr


def _world_of(modalities: tuple[str, ...] | None, default: str) -> str:
    """The world a denoiser trained on ``modalities`` plays.

    ``default`` where it learned that world's actions (or says nothing of what it learned),
    else the world of the first modality it lists.
    """
    from gym_worldmodel.envs.worlds import WORLD_MODALITIES

    worlds = [w for m in modalities or () for w, of in WORLD_MODALITIES.items() if of == m]
    return default if not worlds or default in worlds else worlds[0]


def rollout_main(argv: Sequence[str]) -> None:
    """``gym-worldmodel rollout``: play a world and save the MP4 (and the frames).

    Under random actions held a few steps, or the steps of an actions file, from the world's
    bundled start frames or the user's own picture.
    """
    args = _parser().parse_args(argv)
    check_device(args.device)
    if args.simulator and args.image:
        raise SystemExit(
            "--simulator starts the world from the simulator's first frame: drop --image"
        )
    # The outputs' names first, so that a bad one fails before the frames are made; their folders
    # only when they are written, so that a refused input or action leaves none behind
    if args.video is None and args.frames is None:
        args.video = Path("rollout.mp4")
    if args.video is not None:
        check_video(args.video, make_folder=False)
    if args.frames is not None and (args.frames.suffix.lower() != ".npy" or args.frames.is_dir()):
        raise SystemExit(f"--frames {args.frames}: name a .npy file to write")
    why = None if args.frames is None else unwritable(args.frames)
    if why:
        raise SystemExit(f"--frames {args.frames}: {why} (nothing was played)")
    reset_options = read_start_image(args.image) if args.image else None
    actions, steps = _actions_and_steps(args)
    env_kwargs = _env_kwargs(args, actions)
    sim = _simulator(args.world, env_kwargs.get("action_mode")) if args.simulator else None
    played = _play(args, env_kwargs, reset_options, actions, steps, sim)
    _write(args, played, steps)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gym-worldmodel rollout")
    parser.add_argument(
        "--world",
        choices=sorted(WORLD_IDS),
        help="which world (default: citywalk, robot for an .npz plan, where --model's denoiser "
        "learned that world; else the first world it learned)",
    )
    parser.add_argument(
        "--model",
        help="checkpoint directory, hub repo id (owner/name[@revision]) or 'random' "
        "(default: the shipped world)",
    )
    parser.add_argument(
        "--steps",
        type=positive_int,
        help="env steps (chunks); default 100, or every row of --actions",
    )
    parser.add_argument(
        "--seed",
        type=non_negative_int,
        default=0,
        help="seeds the world's noise, the start frame and the random actions",
    )
    parser.add_argument(
        "--image",
        type=Path,
        help="start from this picture (PNG/JPEG of any size, or .npy uint8 (H, W, 3) or "
        "(k, H, W, 3)) instead of a bundled start frame",
    )
    parser.add_argument(
        "--actions",
        type=Path,
        help="play these actions, one row per step: .npy/.csv in the world's action space "
        "(see envs/<id>.md), or .npz with the RT-1 keys for the robot",
    )
    parser.add_argument(
        "--simulator",
        action="store_true",
        help="also play the same actions in the simulator the world was trained on "
        "(Simulator-<World>-v0; the simulators extra, robosuite's venv for the robot): the world "
        "starts from the simulator's first frame, the video shows both side by side (world "
        "left), and the closeness of the world's frames to the simulator's is printed",
    )
    parser.add_argument(
        "--video",
        type=Path,
        help="the video to write: .mp4, .mov, .mkv or .gif (default rollout.mp4 here, none when "
        "--frames alone is asked for, which needs no video extra)",
    )
    add_video_scale(parser)
    parser.add_argument(
        "--frames", type=Path, help="also save the frames, uint8 (T, H, W, 3), to this .npy"
    )
    add_world_dtype(parser)
    parser.add_argument("--device", default="cpu", help="torch device to run on (cpu, cuda)")
    parser.add_argument(
        "--nfe",
        type=denoiser_passes,
        help="denoiser passes per step (default: the world's own; 2 for driving, 1 for the others)",
    )
    add_memory_guidance(parser)
    return parser


def _actions_and_steps(args: argparse.Namespace) -> tuple[Any, int]:
    """The actions file's rows (None: random actions) and the steps to play."""
    npz = args.actions is not None and args.actions.suffix == ".npz"
    if npz and args.world not in (None, "robot"):  # said before the file is read as RT-1 keys
        raise SystemExit(f"--actions {args.actions}: .npz (RT-1 keys) is for --world robot")
    actions = read_actions(args.actions) if args.actions is not None else None
    if actions is None:
        return None, 100 if args.steps is None else args.steps
    rows = len(next(iter(actions.values()))) if isinstance(actions, dict) else len(actions)
    if args.steps is not None and args.steps > rows:
        raise SystemExit(f"--steps {args.steps}: {args.actions} has only {rows} rows")
    return actions, rows if args.steps is None else args.steps


def _env_kwargs(args: argparse.Namespace, actions: Any) -> dict[str, Any]:
    """The world env's arguments: the model loaded now (a bad checkpoint is named as such).

    Sets ``args.world`` where it was not given: the world ``--model`` was trained for (the
    robot for RT-1 actions, which :func:`read_actions` completed).
    """
    from gym_worldmodel.envs.worlds import get_world, load_model

    # until the model says otherwise
    world = args.world or ("robot" if isinstance(actions, dict) else "citywalk")
    try:  # (the env would load it on reset)
        kwargs: dict[str, Any] = {"model": load_model(get_world(world), args.model or None)}
    except (OSError, ValueError) as err:
        name = args.model or f"(the shipped {world} world)"
        raise SystemExit(f"--model {name}: {err}") from err
    args.world_inferred = args.world is None  # (named in an error of the actions)
    if args.world is None:
        args.world = _world_of(kwargs["model"].config.trained_modalities, world)
    kwargs["dtype"], kwargs["device"], kwargs["nfe"] = args.dtype, args.device, args.nfe
    kwargs["memory_guidance"] = args.memory_guidance
    if isinstance(actions, dict):
        if args.world != "robot":
            raise SystemExit(f"--actions {args.actions}: .npz (RT-1 keys) is for --world robot")
        kwargs["action_mode"] = "dict"
    return kwargs


@dataclasses.dataclass
class _Played:
    """What a rollout played: the world's frames, the simulator's, and how it went."""

    frames: Any  # uint8 (T, H, W, 3)
    sim_frames: Any | None
    steps: int  # played (a robot's terminate_episode = 0 ends it early)
    elapsed: float  # seconds in the world's steps
    fps: int
    dtype: str
    nfe: int
    per_step: int  # frames a step


def _play(
    args: argparse.Namespace,
    env_kwargs: dict[str, Any],
    reset_options: Any,
    actions: Any,
    steps: int,
    sim: Any,
) -> _Played:
    """Make the world env, play the actions (and the simulator beside it), keep the frames."""
    import time

    import gymnasium as gym
    import numpy as np

    import gym_worldmodel  # noqa: F401 - registers the ids
    from gym_worldmodel.envs.actions import ActionError

    if sim is not None:
        sim_list = [sim.reset(seed=args.seed)[0][-1]]
        reset_options = {"image": sim_list[0]}  # driving: both start at 25 m/s, along the road
    env = gym.make(WORLD_IDS[args.world], obs_mode="chunk", max_episode_steps=-1, **env_kwargs)
    if sim is not None and sim.observation_space != env.observation_space:
        sim.close()
        raise SystemExit(
            f"--simulator: the simulator's frames are {sim.observation_space.shape}, this "
            f"model's {env.observation_space.shape}: compare a world of the simulator's frame "
            "size (the shipped ones)"
        )
    env.action_space.seed(args.seed)
    rng = np.random.default_rng(args.seed)
    try:
        obs, _ = env.reset(seed=args.seed, options=reset_options)
    except ValueError as err:
        if args.image is None:
            raise
        raise SystemExit(f"--image {args.image}: {err}") from err
    frame_list, action, hold = [obs[-1]], None, 0
    elapsed = 0.0  # the world's steps only (not the simulator's)
    for i in range(steps):
        if isinstance(actions, dict):
            action = {k: v[i] for k, v in actions.items()}
        elif actions is not None:
            action = actions[i]
        elif hold <= 0:  # a new random action, held 2-6 steps so motion is visible
            action, hold = env.action_space.sample(), int(rng.integers(2, 7))
        hold -= 1
        try:
            start = time.perf_counter()
            obs, _, terminated, *_ = env.step(action)
            elapsed += time.perf_counter() - start
        except ActionError as err:
            hint = ""
            space = env.action_space.shape
            shape = np.asarray(action).shape if not isinstance(action, dict) else None
            fits = space is not None and shape is not None and shape[-len(space) :] == space
            if (
                getattr(args, "world_inferred", False)
                and i == 0
                and not isinstance(actions, dict)
                and (not fits or "integers" in str(err))  # another world's actions
            ):
                others = " or ".join(w for w in ("citywalk", "robot", "driving") if w != args.world)
                hint = (
                    f"; without --world this plays the {args.world} world: --world {others} "
                    "takes another world's actions"
                )
            raise SystemExit(
                f"--actions {args.actions}: row {i}: {err}{hint} (nothing was written)"
            ) from err
        frame_list.extend(obs)
        if sim is not None:
            sim_list.extend(sim.step(action)[0])
        if terminated:  # the robot's terminate_episode = 0 ends the episode after this step
            break
    world_env = cast("WorldModelEnv", env.unwrapped)
    played = _Played(
        frames=np.stack(frame_list),
        sim_frames=None if sim is None else np.stack(sim_list),
        steps=i + 1,
        elapsed=elapsed,
        fps=world_env.metadata["world_fps"],
        dtype=str(world_env.dtype).removeprefix("torch."),
        nfe=world_env.vector.config.sampler.nfe,
        per_step=len(obs),
    )
    env.close()
    if sim is not None:
        sim.close()
    return played


def _write(args: argparse.Namespace, played: _Played, steps: int) -> None:
    """Write the frames (``--frames``) and the video; print what was played."""
    import numpy as np

    from gym_worldmodel.files import atomic_write
    from gym_worldmodel.video import write_video

    frames = played.frames
    if args.frames:  # first: the arrays are kept even where the video cannot be written
        try:
            args.frames.parent.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise SystemExit(f"--frames {args.frames}: {err}") from err
        atomic_write(args.frames, lambda f: np.save(f, frames))
    if played.sim_frames is not None:
        print(_closeness(frames, played.sim_frames, played.per_step))
        frames = np.concatenate([frames, played.sim_frames], axis=2)  # world left, sim right
    wrote = [] if args.frames is None else [str(args.frames)]
    if args.video is not None:
        write_video(args.video, frames, played.fps, args.scale)
        wrote.insert(0, f"{args.video} at {played.fps} fps")
    made = len(played.frames) - 1
    print(
        f"{args.world}: {played.steps} steps, {made} frames after the start frame in "
        f"{played.elapsed:.1f} s ({made / played.elapsed:.1f} frames/s, {played.dtype}, nfe "
        f"{played.nfe}); wrote {' and '.join(wrote)}"
    )
    if played.steps < steps:  # the robot's terminate_episode = 0 in the last row played
        print(
            f"terminate_episode = 0 in row {played.steps - 1} of --actions ended the episode "
            f"after {played.steps} of {steps} steps; the rows after it were not played"
        )


def _simulator(world: str, action_mode: str | None) -> Any:
    """The world's simulator env for ``--simulator``, as the world env takes the actions."""
    import gymnasium as gym

    kwargs: dict[str, Any] = {"obs_mode": "chunk", "max_episode_steps": -1, "crash_ends": False}
    if action_mode is not None:
        kwargs["action_mode"] = action_mode
    try:
        return gym.make(SIMULATOR_WORLD_IDS[world], **kwargs)
    except ImportError as err:
        raise SystemExit(f"--simulator: {err}") from err


def _closeness(world: Any, sim: Any, per_step: int) -> str:
    """One line: PSNR of the world's frames against the simulator's at a few steps.

    Next to each, copying the start frame; both pooled over the step's frames.
    """
    from gym_worldmodel.evaluation import pooled_psnr

    steps = (len(sim) - 1) // per_step
    parts = []
    for h in (h for h in (1, 4, 16, 64, 256) if h <= steps):
        sl = slice(1 + (h - 1) * per_step, 1 + h * per_step)
        copy = pooled_psnr(sim[:1].repeat(per_step, 0), sim[sl])
        parts.append(f"step {h} {pooled_psnr(world[sl], sim[sl]):.2f} (copy {copy:.2f})")
    return "PSNR of the world against the simulator, dB: " + ", ".join(parts)
