"""``gym-worldmodel train <stage>``: its options, and the run of one stage of the recipe."""

from __future__ import annotations

import argparse
import copy
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from gym_worldmodel.cli.argtypes import (
    check_device,
    denoiser_passes,
    fraction,
    non_negative_float,
    non_negative_int,
    positive_float,
    positive_int,
)

#: ``train`` options that only some stages read (others are checked in ``train_main``).
STAGE_OPTIONS = {
    "--preset": ("vae",),
    "--init": ("decoder", "teacher", "student", "flow", "self-forcing"),
    "--nfe": ("student", "self-forcing"),
    "--memory": ("teacher", "student", "self-forcing"),
    "--student-init": ("student",),
    "--pair-steps": ("flow",),
    **{
        flag: ("teacher",)
        for flag in (
            "--frame-anchor",
            "--anchor-sigma",
            "--clean-anchors",
            "--motion-focus",
            "--action-scale",
            "--memory-only",
        )
    },
    **{
        flag: ("self-forcing",)
        for flag in (
            "--memory-gap",
            "--max-chunks",
            "--action-weight",
            "--motion-weight",
            "--shift-weight",
            "--adversarial-weight",
            "--probe-steps",
            "--balanced",
            "--anchor-motion",
            "--anchor-ego",
        )
    },
}


def _train_parser() -> argparse.ArgumentParser:
    """``gym-worldmodel train``'s options."""
    parser = argparse.ArgumentParser(prog="gym-worldmodel train")
    parser.add_argument(
        "stage", choices=["vae", "decoder", "teacher", "student", "flow", "self-forcing"]
    )
    parser.add_argument("--data", type=Path, nargs="+", required=True, help="dataset directories")
    parser.add_argument(
        "--out", type=Path, required=True, help="run directory (resumes if present)"
    )
    parser.add_argument(
        "--init",
        help="a checkpoint directory or Hugging Face repo id; teacher: the VAE checkpoint "
        "(<vae run>/model); student: the teacher's; self-forcing: the model to fine-tune; "
        "decoder: the world whose VAE decoder to fine-tune (encoder and DiT kept); flow: the "
        "world whose anchors the flow warp will move",
    )
    parser.add_argument(
        "--preset",
        choices=["compact", "default", "tiny"],
        default="compact",
        help="vae: model size (compact is what the shipped worlds use)",
    )
    parser.add_argument(
        "--nfe",
        type=denoiser_passes,
        help="student, self-forcing: denoising steps of the checkpoint (default: student 3, "
        "self-forcing 1, as the shipped worlds)",
    )
    parser.add_argument(
        "--max-chunks",
        type=non_negative_int,
        default=6,
        help="self-forcing: most chunks the model generates itself before the trained one",
    )
    parser.add_argument(
        "--action-weight",
        type=non_negative_float,
        default=0.0,
        help="self-forcing: weight of a latent inverse-dynamics probe's error on each predicted "
        "chunk (the chunk must show its action; the probe is trained first on the recorded "
        "latents)",
    )
    parser.add_argument(
        "--motion-weight",
        type=non_negative_float,
        default=0.0,
        help="self-forcing: weight of the error of each predicted chunk's motion (mean latent "
        "change per frame) against the recorded chunk's, so the world moves as fast as the "
        "simulator did",
    )
    parser.add_argument(
        "--shift-weight",
        type=non_negative_float,
        default=0.0,
        help="self-forcing: weight of the error of each predicted frame's coherent shift "
        "(latent pixels, a soft whole-pixel search) against the recorded frame's",
    )
    parser.add_argument(
        "--adversarial-weight",
        type=non_negative_float,
        default=0.0,
        help="self-forcing: weight of a chunk critic's verdict on each chunk the model outputs at "
        "run time (the critic is trained alongside to tell them from recorded chunks, so a "
        "blurred chunk costs something)",
    )
    parser.add_argument(
        "--probe-steps",
        type=positive_int,
        default=600,
        help="self-forcing, with --action-weight: training steps of that probe",
    )
    parser.add_argument(
        "--memory",
        action="store_true",
        help="teacher/student/self-forcing: train with retrieved spatial-memory chunks (worlds "
        "with a pose)",
    )
    parser.add_argument(
        "--balanced",
        action="store_true",
        help="self-forcing: draw each world (modality) equally often, not in proportion to its "
        "frames (the robot and driving sets are a fraction of the city walk's)",
    )
    parser.add_argument(
        "--student-init", help="student: fine-tune this student (directory or repo id), not a copy"
    )
    parser.add_argument(
        "--frame-anchor",
        action="store_true",
        help="teacher: add the frame anchor (a direct path from the previous frame) to an "
        "--init that has none; it starts at zero, so training begins from the same model",
    )
    parser.add_argument(
        "--anchor-sigma",
        type=positive_float,
        metavar="SIGMA",
        help="teacher: predict each frame as a change from the previous frame, with a prior of "
        "this std (scaled latent units) around it (DiTConfig.anchor_sigma); the output layer "
        "restarts at zero, so training begins from repeating the last frame",
    )
    parser.add_argument(
        "--anchor-motion",
        action="store_true",
        help="self-forcing: move each frame's anchor by the image shift its actions imply "
        "(DiTConfig.anchor_motion), fitted to the recorded frames of each world whose picture "
        "moves with its actions",
    )
    parser.add_argument(
        "--anchor-ego",
        action="store_true",
        help="self-forcing: the driving world's anchors move with the car, by the shift its "
        "pose integrated from the actions implies (DiTConfig.anchor_ego), instead of a "
        "learned flow",
    )
    parser.add_argument(
        "--clean-anchors",
        action="store_true",
        help="teacher: anchor every chunk to the clean previous recorded frame, as the env "
        "anchors to the frame it wrote, also where the history is noised",
    )
    parser.add_argument(
        "--motion-focus",
        type=non_negative_float,
        default=0.0,
        metavar="WEIGHT",
        help="teacher: weight the flow loss towards where the picture was moving just before "
        "each chunk, so a small moving part (a robot arm, a car) and the action that moves it "
        "count (1: the tenth of the robot's places that moved most carries about 40%% of it)",
    )
    parser.add_argument(
        "--action-scale",
        action="store_true",
        help="teacher: rescale each action dimension to unit spread over --data before its "
        "projector (DiTConfig.action_scale; the model's output unchanged at the start), so a "
        "robot's 5 mm moves are learned as fast as its gripper",
    )
    parser.add_argument(
        "--memory-gap",
        type=non_negative_int,
        default=0,
        metavar="FRAMES",
        help="self-forcing, with --memory: the retrieved chunk ends at least this many frames "
        "before the window's last frame (default 0: any chunk before the window); 250, the "
        "revisit benchmark's gap, trains on places left long ago",
    )
    parser.add_argument(
        "--memory-only",
        type=fraction,
        default=0.0,
        metavar="FRACTION",
        help="teacher, with --memory: fraction of windows with a memory hit whose history is "
        "masked with pure noise, so the retrieved memory is the only source of the view",
    )
    parser.add_argument(
        "--pair-steps",
        type=positive_int,
        metavar="STEPS",
        help="flow: steps of the first stage, the pair net that finds the recorded flows "
        "(default --steps)",
    )
    parser.add_argument(
        "--cooldown", type=float, default=0.2, help="fraction of steps decaying the lr to 0"
    )
    parser.add_argument("--steps", type=positive_int, default=10_000)
    parser.add_argument("--batch-size", type=positive_int, default=32)
    parser.add_argument("--lr", type=positive_float, default=3e-4)
    parser.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32")
    parser.add_argument(
        "--device",
        default="cpu",
        help="torch device to train on (cpu, cuda, cuda:1); a run resumes on the device type it "
        "started on",
    )
    parser.add_argument("--save-every", type=positive_int, default=500)
    parser.add_argument("--seed", type=non_negative_int, default=0)
    parser.add_argument(
        "--budget", action="store_true", help="reduced recipe for smoke tests: 20 steps of batch 4"
    )
    parser.add_argument(
        "--no-progress",
        action="store_true",
        help="no progress bars; print one line per checkpoint instead (for log files)",
    )
    return parser


def _given(parser: argparse.ArgumentParser, argv: Sequence[str]) -> set[str]:
    """The options ``argv`` gives, as flags (``"--steps"``), whatever their values."""
    probe = copy.deepcopy(parser)
    for action in probe._actions:  # parsed without defaults, only what argv sets is there
        action.default = argparse.SUPPRESS
    return {"--" + dest.replace("_", "-") for dest in vars(probe.parse_args(argv))}


def train_main(argv: Sequence[str]) -> None:
    """``gym-worldmodel train <stage>``: run (or resume) one stage of the recipe."""
    parser = _train_parser()
    args = parser.parse_args(argv)
    _check_args(parser, args, _given(parser, argv))
    check_device(args.device)
    from gym_worldmodel import hub
    from gym_worldmodel.training.start_frames import (
        pick_world_start_frames,
        write_checkpoint_start_frames,
    )
    from gym_worldmodel.training.trainer import TrainConfig

    steps, batch = (20, 4) if args.budget else (args.steps, args.batch_size)
    train = TrainConfig(
        steps=steps,
        batch_size=batch,
        lr=args.lr,
        dtype=args.dtype,
        save_every=min(args.save_every, steps),
        seed=args.seed,
        device=args.device,
        warmup=min(200, steps // 10 + 1),
        cooldown=args.cooldown,
    )
    starts = pick_world_start_frames(args.data)  # checked now, written when the run ends
    _run_stage(args, train, progress=not args.no_progress)
    # an env running the checkpoint starts from frames of its data (and of its init's worlds)
    carry = None if args.init is None else hub.checkpoint_directory(args.init)
    write_checkpoint_start_frames(args.out / "model", starts, carry)
    print(f"wrote {args.out / 'model'} (losses: {args.out / 'losses.png'})")


def _check_args(parser: argparse.ArgumentParser, args: argparse.Namespace, given: set[str]) -> None:
    """Refuse options that cannot work together (a usage error); fill the stage's ``--nfe``."""
    for flag, stages in STAGE_OPTIONS.items():  # an option the stage would silently ignore
        if args.stage not in stages and flag in given:
            parser.error(f"{flag} is an option of train {' / '.join(stages)}, not of {args.stage}")
    budgeted = ("--steps", "--batch-size", "--probe-steps", "--pair-steps")
    overridden = [flag for flag in budgeted if flag in given]
    if args.budget and overridden:  # the smoke recipe sets these itself
        parser.error(
            f"--budget runs 20 steps of batch 4 (and 20 probe or pair steps): drop "
            f"{' and '.join(overridden)}"
        )
    if args.stage != "vae" and args.init is None:
        previous = {
            "teacher": "<vae run>/model",
            "decoder": "<world to fine-tune>",
            "student": "<teacher run>/model",
            "flow": "<world whose anchors to move>",
            "self-forcing": "<model to fine-tune>",
        }[args.stage]
        parser.error(f"train {args.stage} needs --init {previous}")
    if args.memory_only and not args.memory:
        parser.error("--memory-only needs --memory")
    if args.memory_gap and not args.memory:
        parser.error("--memory-gap needs --memory")
    if args.nfe is None:
        args.nfe = 1 if args.stage == "self-forcing" else 3
    if args.nfe > 8:
        parser.error(f"--nfe takes 1 to 8 denoising steps, got {args.nfe}")


def _run_stage(args: argparse.Namespace, train: Any, progress: bool) -> None:
    """Run ``args.stage`` with its options (``train``: the ``TrainConfig``)."""
    from gym_worldmodel.models import WorldModelConfig
    from gym_worldmodel.training import recipes
    from gym_worldmodel.training.self_forcing import SelfForcingConfig

    run = (args.data, args.init, args.out, train)
    if args.stage == "vae":
        presets = {
            "compact": WorldModelConfig.compact,
            "default": WorldModelConfig,
            "tiny": WorldModelConfig.tiny,
        }
        recipes.train_vae(args.data, args.out, presets[args.preset](), train, progress)
    elif args.stage == "decoder":
        recipes.train_decoder(*run, progress)
    elif args.stage == "flow":
        recipes.train_flow(*run, train.steps if args.budget else args.pair_steps, progress)
    elif args.stage == "teacher":
        recipes.train_teacher(
            *run,
            memory=args.memory,
            frame_anchor=args.frame_anchor,
            memory_only=args.memory_only,
            anchor_sigma=args.anchor_sigma,
            clean_anchors=args.clean_anchors,
            motion_focus=args.motion_focus,
            action_scale=args.action_scale,
            progress=progress,
        )
    elif args.stage == "self-forcing":
        config = SelfForcingConfig(
            max_chunks=args.max_chunks,
            action_weight=args.action_weight,
            motion_weight=args.motion_weight,
            shift_weight=args.shift_weight,
            adversarial_weight=args.adversarial_weight,
        )
        recipes.train_self_forcing(
            *run,
            nfe=args.nfe,
            config=config,
            memory=args.memory,
            probe_steps=20 if args.budget and args.action_weight else args.probe_steps,
            balanced=args.balanced,
            anchor_motion=args.anchor_motion,
            anchor_ego=args.anchor_ego,
            memory_gap=args.memory_gap,
            progress=progress,
        )
    else:
        recipes.train_student(
            *run, nfe=args.nfe, memory=args.memory, init=args.student_init, progress=progress
        )
