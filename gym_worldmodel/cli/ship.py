"""``gym-worldmodel ship``: install a checkpoint and start frames as an embedded world."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from gym_worldmodel.cli.argtypes import denoiser_passes, folder_name, folder_path, positive_int


def ship_main(argv: Sequence[str]) -> None:
    """``gym-worldmodel ship``: the checkpoint (float16) and each dataset's start frames."""
    parser = argparse.ArgumentParser(prog="gym-worldmodel ship")
    parser.add_argument("--model", required=True, help="checkpoint directory to ship")
    parser.add_argument("--data", type=Path, nargs="+", required=True, help="dataset directories")
    parser.add_argument(
        "--start-frames",
        type=positive_int,
        default=16,
        help="how many start frames to bundle per world (first frames of training episodes; "
        "default 16)",
    )
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument(
        "--out",
        type=folder_path,
        help="a worlds directory of your own: its checkpoint plays with model=OUT/NAME",
    )
    where.add_argument(
        "--into-package",
        action="store_true",
        help="write into this install's gym_worldmodel/worlds, which the ids load by default, "
        "replacing the shipped checkpoint and start frames (a checkout restores them with "
        "git; a pip install only by reinstalling)",
    )
    parser.add_argument(
        "--name",
        type=folder_name,
        default="shared",
        help="checkpoint folder under the worlds directory: shared (the default: what every "
        "world without its own loads) or a world's own (the world's `checkpoint` in "
        "envs/worlds.py)",
    )
    parser.add_argument(
        "--nfe",
        type=denoiser_passes,
        help="denoiser passes per step the shipped world runs by default (its sampler's nfe; "
        "default: the checkpoint's own)",
    )
    args = parser.parse_args(argv)
    import torch

    from gym_worldmodel import hub
    from gym_worldmodel.envs.worlds import WORLD_MODALITIES, WORLDS
    from gym_worldmodel.files import WORLDS_DIR
    from gym_worldmodel.training.start_frames import (
        pick_world_start_frames,
        write_checkpoint_start_frames,
        write_start_frames,
    )

    root = WORLDS_DIR if args.into_package else args.out
    source = hub.checkpoint_directory(args.model)
    if args.out is not None and (root / args.name).resolve() == Path(source).resolve():
        raise SystemExit(
            f"--out {args.out} --name {args.name} is the checkpoint --model reads: ship writes "
            "a float16 copy, which would replace a run's own weights; give another --out or --name"
        )
    model = hub.from_pretrained(source)
    if args.nfe is not None:
        model = model.with_sampler(nfe=args.nfe)
    # every dataset is read and checked before anything is written: a failed ship changes
    # nothing (start frames of another size are fine: envs resize them)
    starts = pick_world_start_frames(args.data, args.start_frames)
    loaders = [w.name for w in WORLDS.values() if w.checkpoint == args.name]
    for world in sorted(set(starts) | set(loaders if args.into_package else [])):
        try:  # a world this ship starts, or one that would load the replaced checkpoint
            model.config.check_trained(WORLD_MODALITIES[world], world)
        except ValueError as err:
            raise SystemExit(f"the {world} world could not run this model: {err}") from None
    # a shipped world's env starts from the bundled frames written below, not a run's own
    target = hub.save_pretrained(
        model, root / args.name, torch.float16, start_frames=args.out is not None
    )
    passes = model.config.sampler.nfe
    print(f"wrote {target} (float16, {passes} denoiser pass{'es' if passes > 1 else ''} a step)")
    for world, frames in starts.items():
        print(f"wrote {write_start_frames(world, frames, root)}")
    if args.out is not None:  # a checkpoint of its own, played with model=: its frames too
        for path in write_checkpoint_start_frames(target, starts, source):
            print(f"wrote {path}")
