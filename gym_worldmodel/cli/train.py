"""``gym-worldmodel train <stage>``: its parser, and the run of one stage of the recipe.

The options themselves, per stage, are a table in ``cli/train_options.py``.
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Sequence
from typing import Any

from gym_worldmodel.cli.argtypes import Interrupted, check_device
from gym_worldmodel.cli.train_options import (
    BUDGET,
    OPTIONS,
    STAGE_OPTIONS,
    STAGES,
    stage_keywords,
)
from gym_worldmodel.training.config import (  # no torch: a stage's --help stays fast
    PROBE_STEPS,
    DistillConfig,
    SelfForcingConfig,
    TrainConfig,
)


def _train_parser() -> tuple[argparse.ArgumentParser, dict[str, argparse.ArgumentParser]]:
    """``gym-worldmodel train``'s parser, and a sub-parser per stage with its own options."""
    parser = argparse.ArgumentParser(
        prog="gym-worldmodel train",
        description="Train one stage of the recipe (docs/training.md); run the same command "
        "again to resume it. `gym-worldmodel train STAGE --help` lists a stage's options.",
    )
    subparsers = parser.add_subparsers(dest="stage", required=True, metavar="STAGE")
    stages = {}
    for stage, summary in STAGES.items():
        stages[stage] = sub = subparsers.add_parser(
            stage, help=summary, description=summary[0].upper() + summary[1:]
        )
        for taken_by, flag, kwargs in OPTIONS:
            if stage in taken_by:
                sub.add_argument(flag, **stage_keywords(stage, flag, kwargs))
    return parser, stages


def _parse(argv: Sequence[str]) -> tuple[argparse.Namespace, argparse.ArgumentParser]:
    """``argv`` parsed, and the parser of its stage (whose usage line its errors print).

    An option of another stage is refused with the stages that take it.
    """
    parser, stages = _train_parser()
    if argv and argv[0].startswith("-") and argv[0] not in ("-h", "--help"):
        parser.error(
            f"options go after the stage: gym-worldmodel train STAGE [options], got {argv[0]} "
            f"first (STAGE: {', '.join(STAGES)})"
        )
    args, unknown = parser.parse_known_args(argv)
    stage = stages[args.stage]
    if unknown:
        for token in unknown:
            flag = token.split("=", 1)[0]
            if flag in STAGE_OPTIONS:  # an option of another stage: say whose
                taken_by = " / ".join(STAGE_OPTIONS[flag])
                stage.error(f"{flag} is an option of train {taken_by}, not of {args.stage}")
        stage.error(f"unrecognized arguments: {' '.join(unknown)}")
    return args, stage


def train_main(argv: Sequence[str]) -> None:
    """``gym-worldmodel train <stage>``: run (or resume) one stage of the recipe."""
    args, parser = _parse(argv)
    _check_args(parser, args)
    check_device(args.device)
    # the recipe writes <out>/model with each checkpoint, with the start frames an env running
    # it starts from (its data's, and its init's of other worlds)
    try:
        _run_stage(args, train_config(args), progress=not args.no_progress)
    except KeyboardInterrupt:
        if not any(args.out.rglob("checkpoint.pt")):  # (the run directory is gone, or empty)
            raise Interrupted(
                "nothing was checkpointed yet: the same command starts the run again"
            ) from None
        raise
    plot = args.out / "losses.png"  # or only its figures, without matplotlib
    losses = plot if plot.is_file() else plot.with_suffix(".json")
    print(f"wrote {args.out / 'model'} (losses: {losses})")


def train_config(args: argparse.Namespace) -> TrainConfig:
    """The run's ``TrainConfig``: the options given, ``--budget``'s size, else its own defaults.

    Its warm-up is ``TrainConfig``'s own (a tenth of the steps plus one, at most 200).
    """
    size = BUDGET[:2] if args.budget else (args.steps, args.batch_size)
    given = {k: v for k, v in zip(("steps", "batch_size"), size, strict=True) if v is not None}
    train = TrainConfig(
        **given,
        lr=args.lr,
        dtype=args.dtype,
        save_every=args.save_every,
        seed=args.seed,
        device=args.device,
        cooldown=args.cooldown,
    )
    # no checkpoint interval longer than the run (as run.json has always recorded it)
    return dataclasses.replace(train, save_every=min(train.save_every, train.steps))


def _check_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Refuse options that cannot work together (a usage error of the stage's ``parser``)."""
    budgeted = ("steps", "batch_size", "probe_steps", "pair_steps")
    overridden = ["--" + d.replace("_", "-") for d in budgeted if getattr(args, d, None)]
    if args.budget and overridden:  # the smoke recipe sets these itself
        steps, batch_size, probe_steps = BUDGET
        parser.error(
            f"--budget runs {steps} steps of batch {batch_size} (and {probe_steps} probe or pair "
            f"steps): drop {' and '.join(overridden)}"
        )
    for marker, what in (("dataset.json", "a dataset"), ("model.safetensors", "a checkpoint")):
        if (args.out / marker).is_file():  # a run would write its files among them
            parser.error(f"--out {args.out} is {what} (it holds {marker}): give a run directory")
    if getattr(args, "memory_only", 0.0) and not args.memory:
        parser.error("--memory-only needs --memory")
    if getattr(args, "memory_gap", 0) and not args.memory:
        parser.error("--memory-gap needs --memory")
    if getattr(args, "teacher_memory_guidance", 1.0) != 1.0 and not args.memory:
        parser.error(
            "--teacher-memory-guidance needs --memory (windows without a memory have none)"
        )
    if getattr(args, "probe_steps", None) and not args.action_weight:
        parser.error("--probe-steps sets the action probe's steps: it needs --action-weight")
    if getattr(args, "nfe", 1) > 8:
        parser.error(f"--nfe takes 1 to 8 denoising steps, got {args.nfe}")


def _run_stage(args: argparse.Namespace, train: Any, progress: bool) -> None:
    """Run ``args.stage`` with its options (``train``: the ``TrainConfig``)."""
    from gym_worldmodel.models import WorldModelConfig
    from gym_worldmodel.training import recipes

    if args.stage == "vae":
        presets = {
            "compact": WorldModelConfig.compact,
            "default": WorldModelConfig,
            "tiny": WorldModelConfig.tiny,
        }
        recipes.train_vae(args.data, args.out, presets[args.preset](), train, progress)
        return
    run = (args.data, args.init, args.out, train)
    if args.stage == "decoder":
        recipes.train_decoder(*run, progress)
    elif args.stage == "flow":
        recipes.train_flow(*run, BUDGET[2] if args.budget else args.pair_steps, progress)
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
            probe_steps=BUDGET[2]
            if args.budget and args.action_weight
            else args.probe_steps or PROBE_STEPS,
            balanced=args.balanced,
            anchor_motion=args.anchor_motion,
            anchor_ego=args.anchor_ego,
            memory_gap=args.memory_gap,
            progress=progress,
        )
    else:
        distill = DistillConfig(
            teacher_nfe=args.teacher_nfe,
            gt_weight=args.gt_weight,
            teacher_memory_guidance=args.teacher_memory_guidance,
        )
        recipes.train_student(
            *run,
            nfe=args.nfe,
            # None at the defaults: the call a run started before these options recorded
            distill=None if distill == DistillConfig() else distill,
            memory=args.memory,
            init=args.student_init,
            progress=progress,
        )
