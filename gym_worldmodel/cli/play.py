"""``gym-worldmodel play``: walk, drive or move the arm in a world from the keyboard."""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from collections.abc import Callable, Sequence
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
    positive_float,
    positive_int,
)
from gym_worldmodel.cli.rollout import read_start_image
from gym_worldmodel.cli.worlds import SIMULATOR_WORLD_IDS, WORLD_IDS

if TYPE_CHECKING:
    from gym_worldmodel.envs import WorldModelEnv
    from gym_worldmodel.sources.simulator_env import SimulatorEnv


def play_main(argv: Sequence[str], callback: Callable[..., Any] | None = None) -> None:
    """``gym-worldmodel play``: Gymnasium's ``play`` loop over a world env, in a window.

    The env's ``get_keys_to_action`` gives the controls (printed at the start); no key held
    plays the do-nothing action, so the world runs on while you watch. Escape or closing the
    window quits. ``callback`` is ``gymnasium.utils.play.play``'s (tests use it).
    """
    parser = _parser()
    args = parser.parse_args(argv)
    world_options = (
        args.model,
        args.image,
        args.nfe,
        args.memory_guidance is not None,
        args.device != "cpu",
        args.dtype != "auto",
    )
    if args.simulator and any(world_options):
        parser.error(
            "--simulator plays the simulator: --model, --image, --nfe, --memory-guidance, "
            "--device and --dtype are the world's"
        )
    check_device(args.device)
    _check_display()
    try:
        import pygame  # noqa: F401  (gymnasium's play needs it)

        with warnings.catch_warnings():  # its optional plotting helper's import notice
            warnings.simplefilter("ignore", UserWarning)
            from gymnasium.utils.play import play
    except ImportError as err:
        raise SystemExit(f"play needs pygame: pip install gym-worldmodel[play] ({err})") from err
    import gym_worldmodel  # noqa: F401  (registers the ids)

    if args.video is not None:
        check_video(args.video)
    env = _make_env(args)
    world_env = cast("WorldModelEnv | SimulatorEnv", env.unwrapped)
    controls = world_env.get_keys_to_action()
    print(f"{env.spec.id}: hold the keys below (Escape quits)")
    for keys in (k for k in controls if len(k) == 1):
        print(f"  {keys.upper()}: {_describe(controls[keys])}")
    fps = args.fps or env.metadata["render_fps"]  # the env's is a float; play wants an int
    frames: list = []  # what --video keeps

    def record(obs, next_obs, *rest: Any) -> None:
        if args.video is not None:
            if isinstance(obs, tuple):  # an episode's first step: obs is its reset's (obs, info)
                frames.append(obs[0][-1])
            frames.extend(next_obs)
        if callback is not None:
            callback(obs, next_obs, *rest)

    interrupted = False
    try:
        # play resets with the seed it is given at every episode end, so every episode would
        # start alike: seed the env's generator here instead and let play's resets draw from it
        env.reset(seed=args.seed)
        play(
            env,
            fps=max(1, round(fps)),  # a checkpoint's own rate may be under 1 step a second
            zoom=args.zoom,
            keys_to_action=controls,
            noop=world_env.idle_action(),
            callback=record,
        )
    except KeyboardInterrupt:  # Ctrl-C: the video of what was played is still written
        interrupted = True
    finally:
        world_fps = env.unwrapped.metadata["world_fps"]
        env.close()
    if args.video is not None and not frames:
        print(f"no step was played: {args.video} not written")
    elif args.video is not None:
        import numpy as np

        from gym_worldmodel.video import write_video

        write_video(args.video, np.stack(frames), world_fps, args.scale)
        print(f"wrote {args.video}: {len(frames)} frames at {world_fps:g} fps")
    if interrupted:
        raise KeyboardInterrupt


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gym-worldmodel play",
        description="Play a world from the keyboard in a window (the play extra: pygame-ce).",
    )
    parser.add_argument("--world", choices=sorted(WORLD_IDS), default="citywalk")
    parser.add_argument(
        "--model",
        help="checkpoint directory, hub repo id (owner/name[@revision]) or 'random' "
        "(default: the shipped world)",
    )
    parser.add_argument(
        "--seed", type=non_negative_int, default=0, help="seeds the episodes (each follows from it)"
    )
    parser.add_argument(
        "--image",
        type=Path,
        help="start every episode from this picture (as rollout --image) instead of a bundled "
        "start frame",
    )
    parser.add_argument(
        "--simulator",
        action="store_true",
        help="play the simulator the world was trained on instead (Simulator-<World>-v0, the "
        "same keys), to feel the difference",
    )
    parser.add_argument(
        "--fps",
        type=positive_int,
        help="steps per second, a whole number as Gymnasium's play loop takes (default: the "
        "env's, 5)",
    )
    parser.add_argument("--zoom", type=positive_float, default=8.0, help="window scale")
    parser.add_argument(
        "--nfe", type=denoiser_passes, help="denoiser passes per step (default: the world's)"
    )
    add_memory_guidance(parser)
    parser.add_argument("--device", default="cpu", help="the world's torch device (cpu, cuda)")
    add_world_dtype(parser)
    parser.add_argument(
        "--video",
        type=Path,
        help="also write what you played to this MP4 (every frame, at the world's rate; the "
        "video extra), when the window closes, Escape is pressed or Ctrl-C stops it",
    )
    add_video_scale(parser)
    return parser


def _make_env(args: argparse.Namespace) -> Any:
    """The env ``args`` name, every frame of a step in its observation (the video's)."""
    import gymnasium as gym

    # the window shows env.render(); the observation holds every frame of a step, for --video
    kwargs: dict[str, Any] = {"render_mode": "rgb_array", "obs_mode": "chunk"}
    if args.simulator:
        env_id = SIMULATOR_WORLD_IDS[args.world]
    else:
        env_id = WORLD_IDS[args.world]
        kwargs |= {"model": args.model, "nfe": args.nfe, "device": args.device}
        kwargs["memory_guidance"] = args.memory_guidance
        kwargs["dtype"] = args.dtype
        if args.image is not None:
            start = read_start_image(args.image)
            kwargs["start_fn"] = lambda rngs: start  # every episode starts from the picture
    env = gym.make(env_id, **kwargs)
    return env


def _describe(action: Any) -> str:
    """One key's action, as printed in the controls."""
    import numpy as np

    def numbers(values: Any) -> list:
        return np.round(np.asarray(values, np.float64), 3).tolist()

    if isinstance(action, dict):
        moving = {k: v for k, v in action.items() if k != "terminate_episode" and np.any(v)}
        return ", ".join(f"{k} {numbers(v)}" for k, v in moving.items())
    return str(numbers(action) if action.dtype.kind == "f" else action.tolist())


def _check_display() -> None:
    """Refuse to open no window: on Linux without a display pygame's loop runs on unseen."""
    headless = not any(os.environ.get(k) for k in ("DISPLAY", "WAYLAND_DISPLAY", "SDL_VIDEODRIVER"))
    if sys.platform.startswith("linux") and headless:
        raise SystemExit(
            "play opens a window, and this session has no display (DISPLAY and WAYLAND_DISPLAY "
            "are unset): run it on a desktop or over ssh -X, or watch a world headless with "
            "gym-worldmodel rollout --video"
        )
