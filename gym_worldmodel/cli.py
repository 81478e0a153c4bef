"""The ``gym-worldmodel`` command line.

Subcommands:
    bench: benchmarks that print their figures (see :mod:`gym_worldmodel.bench`).
    collect: record episodes from a simulator into the episode format (resumable).
    train: train a stage (vae, decoder, teacher, student, flow, self-forcing; resumable).
    eval: score a model against held-out episodes and write a report.
    rollout: play a world and write the video.
    ship: install a checkpoint and start frames as an embedded world.
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from gym_worldmodel.envs.registration import IDS

#: Named data sources; any other ``module:Class`` with the Source protocol works too.
SOURCES = {
    "miniworld": "gym_worldmodel.sources.miniworld:MiniWorldSource",
    "highway": "gym_worldmodel.sources.highway:HighwaySource",
    "robosuite": "gym_worldmodel.sources.robosuite_source:RobosuiteSource",
}


def main(argv: Sequence[str] | None = None) -> int:
    """Dispatch ``gym-worldmodel <command> ...``."""
    args = list(sys.argv[1:] if argv is None else argv)
    commands = {
        "bench": "benchmarks that print their figures",
        "collect": "record simulator episodes into a dataset (resumable)",
        "train": "train a stage: vae, decoder, teacher, student, flow, self-forcing (resumable)",
        "eval": "score a model against held-out episodes; writes a markdown report",
        "rollout": "play a world (random or given actions, any start image); write the video",
        "ship": "install a checkpoint and start frames as the embedded default worlds",
    }
    if not args or args[0] in ("-h", "--help") or args[0] not in commands:
        helped = bool(args) and args[0] in ("-h", "--help")
        out = sys.stdout if helped else sys.stderr
        if args and not helped:
            print(f"gym-worldmodel: unknown command {args[0]!r}\n", file=out)
        print("usage: gym-worldmodel <command> [options]\n\ncommands:", file=out)
        for name, help_text in commands.items():
            print(f"  {name:<8} {help_text}", file=out)
        return 0 if helped else 2
    from gym_worldmodel.sources.episodes import DatasetError

    try:
        if args[0] == "bench":
            from gym_worldmodel import bench

            bench.main(args[1:])
        elif args[0] == "collect":
            collect_main(args[1:])
        elif args[0] == "eval":
            eval_main(args[1:])
        elif args[0] == "rollout":
            rollout_main(args[1:])
        elif args[0] == "ship":
            ship_main(args[1:])
        else:
            train_main(args[1:])
    except (ValueError, OSError, FloatingPointError) as err:
        # what the user gave (a path, a dataset, a checkpoint, a setting) does not fit, or a run
        # diverged: the message says what was expected
        if os.environ.get("GYM_WORLDMODEL_TRACEBACK"):
            raise
        kind = (
            "" if isinstance(err, (DatasetError, FileNotFoundError)) else f"{type(err).__name__}: "
        )
        print(f"gym-worldmodel {args[0]}: error: {kind}{err}", file=sys.stderr)
        print("(GYM_WORLDMODEL_TRACEBACK=1 shows where it was raised)", file=sys.stderr)
        return 2
    return 0


def collect_main(argv: Sequence[str]) -> None:
    """``gym-worldmodel collect``: parse options, build the source, collect."""
    parser = argparse.ArgumentParser(prog="gym-worldmodel collect")
    parser.add_argument(
        "--source",
        required=True,
        help=f"one of {sorted(SOURCES)} or module:Class of a custom source",
    )
    parser.add_argument("--out", type=Path, required=True, help="dataset directory")
    parser.add_argument("--episodes", type=positive_int, required=True)
    parser.add_argument("--steps", type=positive_int, default=128, help="actions per episode")
    parser.add_argument("--seed", type=non_negative_int, default=0, help="episode i uses seed + i")
    parser.add_argument("--episodes-per-shard", type=positive_int, default=16)
    parser.add_argument(
        "--heldout-every",
        type=int,
        default=10,
        help="every k-th episode goes to the held-out split",
    )
    parser.add_argument(
        "--source-option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="keyword argument of the source, e.g. env_name=MiniWorld-FourRooms-v0 (repeatable)",
    )
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    from gym_worldmodel.sources.collect import collect

    card = collect(
        load_source(args.source)(**parse_options(args.source_option)),
        args.out,
        args.episodes,
        args.steps,
        args.seed,
        args.episodes_per_shard,
        args.heldout_every,
        progress=not args.no_progress,
    )
    counts = {
        split: sum(s["episodes"] for s in card["shards"] if s["split"] == split)
        for split in ("train", "heldout")
    }
    print(f"{args.out}: {counts['train']} train and {counts['heldout']} held-out episodes")


def _int_at_least(least: int, text: str) -> int:
    if not text.strip().isdigit() or int(text) < least:
        raise argparse.ArgumentTypeError(f"must be an int >= {least}, got {text!r}")
    return int(text)


def _finite_number(text: str, fits: Callable[[float], bool], what: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and fits(value)):
        raise argparse.ArgumentTypeError(f"must be {what}, got {text!r}")
    return value


def positive_int(text: str) -> int:
    """Argparse type of counts and sizes (steps, episodes, batch size, ``--nfe``): an int >= 1."""
    return _int_at_least(1, text)


#: ``--nfe``'s type: denoiser passes per step.
denoiser_passes = positive_int


def non_negative_int(text: str) -> int:
    """Argparse type of seeds and counts that may be 0: an int >= 0.

    NumPy's and torch's generators take no other seeds.
    """
    return _int_at_least(0, text)


def non_negative_float(text: str) -> float:
    """Argparse type of loss weights: a finite number >= 0."""
    return _finite_number(text, lambda v: v >= 0, "a finite number >= 0")


def fraction(text: str) -> float:
    """Argparse type of a fraction of windows: a number in [0, 1]."""
    value = non_negative_float(text)
    if value > 1:
        raise argparse.ArgumentTypeError(f"must be a fraction in [0, 1], got {text!r}")
    return value


def positive_float(text: str) -> float:
    """Argparse type of rates (``--lr``): a finite number > 0."""
    return _finite_number(text, lambda v: v > 0, "a finite number > 0")


def check_device(device: str) -> None:
    """Exit with a clear message unless ``device`` names a torch device present here."""
    import torch

    try:
        parsed = torch.device(device)
    except RuntimeError:
        raise SystemExit(
            f"--device takes a torch device such as cpu, cuda or cuda:1; got {device!r}"
        ) from None
    if parsed.type != "cuda":
        return
    if not torch.cuda.is_available():
        raise SystemExit(f"--device {device}: no CUDA device is available on this machine")
    if parsed.index is not None and parsed.index >= torch.cuda.device_count():
        raise SystemExit(
            f"--device {device}: this machine has {torch.cuda.device_count()} CUDA device(s)"
        )


#: ``train`` options that only some stages read (others are checked in ``train_main``).
STAGE_OPTIONS = {
    "--preset": ("vae",),
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
        type=Path,
        help="teacher: the VAE checkpoint (<vae run>/model); student: the teacher's; "
        "self-forcing: the model to fine-tune; decoder: the world whose VAE decoder to fine-tune "
        "(encoder and DiT kept); flow: the world whose anchors the flow warp will move",
    )
    parser.add_argument(
        "--preset",
        choices=["compact", "default", "tiny"],
        default="compact",
        help="vae: model size (compact is what the shipped worlds use)",
    )
    parser.add_argument(
        "--nfe", type=denoiser_passes, default=3, help="student, self-forcing: denoising steps"
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
        "--student-init", type=Path, help="student: fine-tune this student instead of a copy"
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


def train_main(argv: Sequence[str]) -> None:
    """``gym-worldmodel train <stage>``: run (or resume) one stage of the recipe."""
    parser = _train_parser()
    args = parser.parse_args(argv)
    for flag, stages in STAGE_OPTIONS.items():  # an option the stage would silently ignore
        dest = flag.lstrip("-").replace("-", "_")
        if args.stage not in stages and getattr(args, dest) != parser.get_default(dest):
            parser.error(f"{flag} is an option of train {' / '.join(stages)}, not of {args.stage}")
    progress = not args.no_progress
    check_device(args.device)
    from gym_worldmodel.models import WorldModelConfig
    from gym_worldmodel.training.recipes import (
        train_decoder,
        train_flow,
        train_self_forcing,
        train_student,
        train_teacher,
        train_vae,
    )
    from gym_worldmodel.training.self_forcing import SelfForcingConfig
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
    if args.nfe > 8:
        parser.error(f"--nfe takes 1 to 8 denoising steps, got {args.nfe}")
    run = (args.data, args.init, args.out, train)
    if args.stage == "vae":
        presets = {
            "compact": WorldModelConfig.compact,
            "default": WorldModelConfig,
            "tiny": WorldModelConfig.tiny,
        }
        train_vae(args.data, args.out, presets[args.preset](), train, progress)
    elif args.stage == "decoder":
        train_decoder(*run, progress)
    elif args.stage == "flow":
        train_flow(*run, steps if args.budget else args.pair_steps, progress)
    elif args.stage == "teacher":
        train_teacher(
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
        train_self_forcing(
            *run,
            nfe=args.nfe,
            config=config,
            memory=args.memory,
            probe_steps=20 if args.budget else args.probe_steps,
            balanced=args.balanced,
            anchor_motion=args.anchor_motion,
            anchor_ego=args.anchor_ego,
            progress=progress,
        )
    else:
        train_student(
            *run, nfe=args.nfe, memory=args.memory, init=args.student_init, progress=progress
        )
    print(f"wrote {args.out / 'model'} (losses: {args.out / 'losses.png'})")


def parse_options(pairs: Sequence[str]) -> dict[str, object]:
    """``["size=64", "env_name=X"]`` -> ``{"size": 64, "env_name": "X"}`` (JSON, else str)."""
    options: dict[str, object] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise SystemExit(f"source option {pair!r}: expected KEY=VALUE")
        try:
            options[key] = json.loads(value)
        except json.JSONDecodeError:
            options[key] = value
    return options


def eval_main(argv: Sequence[str]) -> None:
    """``gym-worldmodel eval``: open loop, controllability and stability on held-out episodes."""
    parser = argparse.ArgumentParser(prog="gym-worldmodel eval")
    parser.add_argument(
        "--model",
        nargs="+",
        default=[SHIPPED],
        metavar="[WORLD=]DIR",
        help="checkpoint directory (or repo id) for every dataset; WORLD=DIR gives one world "
        "its own (e.g. --model gym_worldmodel/worlds/shared robot=runs/student-robot/model); "
        f"{SHIPPED!r} (the default) is each world's embedded checkpoint",
    )
    parser.add_argument(
        "--teacher",
        nargs="+",
        metavar="[WORLD=]DIR",
        help="teacher checkpoint for the full-NFE baseline, per world as --model",
    )
    parser.add_argument("--data", type=Path, nargs="+", required=True, help="dataset directories")
    parser.add_argument("--horizons", type=positive_int, nargs="+", default=[1, 4, 16, 64])
    parser.add_argument(
        "--nfe",
        type=denoiser_passes,
        help="denoiser passes per chunk of the evaluated worlds (default: each checkpoint's own)",
    )
    parser.add_argument("--teacher-nfe", type=positive_int, default=32)
    parser.add_argument("--teacher-horizon", type=positive_int, default=16)
    parser.add_argument("--stability-steps", type=positive_int, default=1000)
    parser.add_argument("--stability-rows", type=positive_int, default=4)
    parser.add_argument("--probe-steps", type=positive_int, default=1500)
    parser.add_argument("--starts-per-episode", type=positive_int, default=2)
    parser.add_argument("--out", type=Path, default=Path("docs/eval"), help="plots and JSON")
    parser.add_argument(
        "--report", type=Path, help="markdown page (docs/evaluation.md; docs/memory.md)"
    )
    parser.add_argument("--budget", action="store_true", help="tiny settings for smoke tests")
    parser.add_argument(
        "--revisit",
        action="store_true",
        help="spatial-memory revisit benchmark (memory on vs off) on a revisit dataset",
    )
    parser.add_argument(
        "--min-gap", type=positive_int, default=250, help="revisit: frames before return"
    )
    parser.add_argument(
        "--max-episodes", type=positive_int, help="revisit: use the first n held-out"
    )
    parser.add_argument(
        "--oracle-memory",
        action="store_true",
        help="revisit: also run memory on with the recorded frames remembered (a diagnostic)",
    )
    parser.add_argument(
        "--device", default="cpu", help="torch device the worlds run on (cpu, cuda); probes on CPU"
    )
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    check_device(args.device)
    # what is written at the end is checked now, not after an evaluation of many minutes
    for flag, path, kind in (("--out", args.out, "a directory"), ("--report", args.report, "")):
        if path is not None and path.exists() and path.is_dir() != bool(kind):
            parser.error(f"{flag} {path}: must be {kind or 'a file (the markdown page)'}")
    from gym_worldmodel.evaluation import EvalConfig, evaluate_world, ratio_text, write_report
    from gym_worldmodel.sources.episodes import read_card

    command = "gym-worldmodel eval " + " ".join(argv)
    checkpoints = per_world(args.model, "--model", args.device)

    def models(world: str) -> Any:
        model = checkpoints(world)
        return model if args.nfe is None else model.with_sampler(nfe=args.nfe)

    teachers = per_world(args.teacher, "--teacher", args.device)
    if args.revisit:
        from gym_worldmodel.revisit import evaluate_revisit, write_revisit_report

        if len(args.data) != 1:  # one report and one revisit.json per run
            parser.error(f"--revisit measures one dataset per run, got {len(args.data)}")
        report, data = args.report or Path("docs/memory.md"), args.data[0]
        result = evaluate_revisit(
            models(read_card(data)["world"]),
            data,
            args.min_gap,
            max_episodes=args.max_episodes,
            progress=not args.no_progress,
            oracle=args.oracle_memory,
        )
        print(
            f"{result.world}: revisit PSNR memory on {result.psnr_on:.2f} dB, off "
            f"{result.psnr_off:.2f} dB ({result.gain_db:+.2f}); SSIM {result.ssim_on:.3f} vs "
            f"{result.ssim_off:.3f}; hits on {100 * result.hit_rate:.0f}% of revisit frames",
            flush=True,
        )
        if result.psnr_first_visit is not None:
            print(
                f"  what memory holds (the rollout where it first showed those places): "
                f"{result.psnr_first_visit:.2f} dB",
                flush=True,
            )
        if result.psnr_oracle is not None:
            print(f"  memory of recorded frames: {result.psnr_oracle:.2f} dB", flush=True)
        write_revisit_report(result, args.out, report, command)
        print(f"wrote {report} and {args.out}/")
        return

    if args.budget:
        config = EvalConfig.budget()
    else:
        try:
            config = EvalConfig(
                horizons=tuple(args.horizons),
                starts_per_episode=args.starts_per_episode,
                teacher_nfe=args.teacher_nfe,
                teacher_horizon=args.teacher_horizon,
                probe_steps=args.probe_steps,
                stability_steps=args.stability_steps,
                stability_rows=args.stability_rows,
            )
        except ValueError as err:
            parser.error(str(err))
    results, samples = [], {}
    for data in args.data:
        world = read_card(data)["world"]
        model, teacher = models(world), teachers(world) if args.teacher else None
        result, sample = evaluate_world(model, data, config, teacher, not args.no_progress)
        results.append(result)
        samples[result.world] = sample
        print(
            f"{result.world}: PSNR {result.psnr}; control {ratio_text(result.control['ratio'])} "
            f"(by step: {_ratios_by_step(result.control)}); "
            f"collapsed {result.stability['collapsed']}",
            flush=True,
        )
    report = args.report or Path("docs/evaluation.md")
    write_report(results, samples, args.out, report, command, model.config.dit.chunk_frames)
    print(f"wrote {report} and {args.out}/")


def _ratios_by_step(control: dict[str, Any]) -> str:
    """``1: 0.92, 2-4: 0.61, ...``: the controllability ratio in each span between horizons."""
    from gym_worldmodel.evaluation import ratio_text, steps_label

    return ", ".join(
        f"{steps_label(v['steps'])}: {ratio_text(v['ratio'])}"
        for v in control["by_horizon"].values()
    )


def per_world(
    values: Sequence[str] | None, option: str, device: str = "cpu"
) -> Callable[[str], Any]:
    """``--model A robot=B`` -> a function ``world -> WorldModel`` (B for the robot, else A).

    ``shipped`` (for every world or as ``WORLD=shipped``) is each world's embedded checkpoint.
    Each checkpoint loads once, when a world first asks for it.
    """
    import functools

    from gym_worldmodel import hub
    from gym_worldmodel.envs.worlds import get_world, shipped_checkpoint

    paths: dict[str | None, str] = {}
    for value in values or ():
        world, sep, path = value.partition("=")
        if sep and world in WORLD_IDS:
            paths[world] = path
        elif None in paths:
            raise SystemExit(f"{option}: more than one checkpoint for every world: {values}")
        else:
            paths[None] = value
    load = functools.cache(functools.partial(hub.from_pretrained, device=device))

    def resolve(world: str) -> Any:
        if world not in paths and None not in paths:
            raise SystemExit(f"{option}: no checkpoint for the {world} world (WORLD=DIR or DIR)")
        path = paths.get(world, paths.get(None))
        if path == SHIPPED:
            path = str(shipped_checkpoint(get_world(world)))
        return load(path)

    return resolve


SHIPPED = "shipped"  # --model: each world's embedded checkpoint (envs/worlds.py)
WORLD_IDS = {world: env_id for env_id, (world, _) in IDS.items()}  # world -> its env id


def _load_array_file(path: Path, flag: str) -> Any:
    """``np.load`` of a ``.npy`` / ``.npz`` without pickles; a clear error if it is not one."""
    import numpy as np

    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError) as err:  # not numpy's format, or objects that need pickle
        raise SystemExit(f"{flag} {path}: not a {path.suffix} file of numbers") from err


def read_start_image(path: Path) -> Any:
    """A start picture for ``reset(options=...)``: ``{"image": (H, W, 3)}`` or ``{"frames": ...}``.

    PNG, JPEG or anything Pillow reads (converted to RGB), or a ``.npy`` of uint8 ``(H, W, 3)``
    (one picture) or ``(k, H, W, 3)`` (the last frames before the rollout). Any size: the env
    centre-crops to a square and resizes.
    """
    import numpy as np

    if not path.is_file():
        raise SystemExit(f"--image {path}: no such file")
    if path.suffix == ".npy":
        arr = _load_array_file(path, "--image")
    else:
        try:
            from PIL import Image
        except ImportError as err:
            raise SystemExit("--image needs Pillow: pip install gym-worldmodel[video]") from err
        try:
            with Image.open(path) as img:
                arr = np.asarray(img.convert("RGB"))
        except OSError as err:
            raise SystemExit(f"--image {path}: not an image Pillow can read ({err})") from err
    if arr.dtype != np.uint8 or arr.ndim not in (3, 4) or arr.shape[-1] != 3 or 0 in arr.shape:
        raise SystemExit(
            f"--image {path}: expected uint8 RGB (H, W, 3) or (k, H, W, 3), not empty; "
            f"got {arr.dtype} {arr.shape}"
        )
    return {"image": arr} if arr.ndim == 3 else {"frames": arr}


def read_actions(path: Path) -> Any:
    """The actions of ``rollout --actions``: an array with one row per step, or RT-1 columns.

    * ``.npy`` or ``.csv`` (comma-separated, ``#`` comments): ``(steps, *action)`` in the world's
      default action space (camera keys ``(steps, 2)``, driving ``(steps, 2)``, robot flat
      ``(steps, 10)``; ``.npy`` may add a per-frame axis, ``(steps, F, ...)``).
    * ``.npz`` (robot): the RT-1 dict, one array per key with ``steps`` rows
      (``world_vector`` ``(steps, 3)``, ``rotation_delta`` radians, ...); ``terminate_episode``
      is ``(steps,)`` integers or RT-1's one-hot ``(steps, 3)``, and may be left out (1, arm).
    """
    import warnings

    import numpy as np

    if not path.is_file():
        raise SystemExit(f"--actions {path}: no such file")
    if path.suffix == ".npz":
        data = _load_array_file(path, "--actions")
        if not hasattr(data, "files"):
            raise SystemExit(f"--actions {path}: an .npz holds named arrays; this is one array")
        with data:
            columns = {k: data[k] for k in data.files}
        shapes = {k: np.shape(v) for k, v in columns.items()}
        rows = {shape[0] if shape else 0 for shape in shapes.values()}
        if not columns or len(rows) != 1 or 0 in rows:
            raise SystemExit(
                f"--actions {path}: every array must have the same number of rows (one per "
                f"step, at least one), got shapes {shapes}"
            )
        term = columns.get("terminate_episode")
        if term is not None and term.ndim == 2 and term.shape[1] == 3:  # RT-1's one-hot
            if not np.array_equal(np.sort(term, axis=1), np.tile([0, 0, 1], (len(term), 1))):
                raise SystemExit(f"--actions {path}: terminate_episode (steps, 3) must be one-hot")
            columns["terminate_episode"] = term.argmax(1)
        return columns
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


def rollout_main(argv: Sequence[str]) -> None:
    """``gym-worldmodel rollout``: play a world and save the MP4 (and the frames).

    Under random actions held a few steps, or the steps of an actions file, from the world's
    bundled start frames or the user's own picture.
    """
    parser = argparse.ArgumentParser(prog="gym-worldmodel rollout")
    parser.add_argument("--world", choices=sorted(WORLD_IDS), default="citywalk")
    parser.add_argument(
        "--model",
        help="checkpoint directory, hub repo id or 'random' (default: the shipped world)",
    )
    parser.add_argument(
        "--steps",
        type=positive_int,
        help="env steps (chunks); default 100, or every row of --actions",
    )
    parser.add_argument("--seed", type=non_negative_int, default=0)
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
    parser.add_argument("--video", type=Path, default=Path("rollout.mp4"))
    parser.add_argument(
        "--frames", type=Path, help="also save the frames, uint8 (T, H, W, 3), to this .npy"
    )
    parser.add_argument(
        "--dtype",
        choices=["auto", "float32", "bfloat16"],
        default="auto",
        help="auto: bf16 autocast where the device computes it natively, else float32",
    )
    parser.add_argument("--device", default="cpu", help="torch device to run on (cpu, cuda)")
    parser.add_argument(
        "--nfe",
        type=denoiser_passes,
        help="denoiser passes per step (default: the world's own; 2 for driving, 1 for the others)",
    )
    args = parser.parse_args(argv)
    check_device(args.device)
    import time

    import gymnasium as gym
    import numpy as np

    import gym_worldmodel  # noqa: F401 - registers the ids
    from gym_worldmodel.envs.actions import ActionError
    from gym_worldmodel.files import atomic_write

    reset_options = read_start_image(args.image) if args.image else None
    actions = read_actions(args.actions) if args.actions is not None else None
    if actions is None:
        steps = 100 if args.steps is None else args.steps
    else:
        rows = len(next(iter(actions.values()))) if isinstance(actions, dict) else len(actions)
        if args.steps is not None and args.steps > rows:
            raise SystemExit(f"--steps {args.steps}: {args.actions} has only {rows} rows")
        steps = rows if args.steps is None else args.steps
    if steps < 1:
        raise SystemExit(f"--steps must be at least 1, got {steps}")
    from gym_worldmodel.envs.worlds import get_world, load_model

    try:  # now, so that a bad checkpoint is named as such (the env would load it on reset)
        kwargs = {"model": load_model(get_world(args.world), args.model or None)}
    except (OSError, ValueError) as err:
        name = args.model or f"(the shipped {args.world} world)"
        raise SystemExit(f"--model {name}: {err}") from err
    kwargs["dtype"], kwargs["device"], kwargs["nfe"] = args.dtype, args.device, args.nfe
    if isinstance(actions, dict):
        if args.world != "robot":
            raise SystemExit(f"--actions {args.actions}: .npz (RT-1 keys) is for --world robot")
        kwargs["action_mode"] = "dict"
        from gym_worldmodel.envs.actions import RT1_KEYS

        keys = {k for k, _, _ in RT1_KEYS}
        if not keys <= set(actions) <= keys | {"terminate_episode"}:
            raise SystemExit(
                f"--actions {args.actions}: expected the RT-1 keys {sorted(keys)} (and optionally "
                f"terminate_episode), got {sorted(actions)}"
            )
        actions.setdefault("terminate_episode", np.ones(steps, np.int64))
    env = gym.make(WORLD_IDS[args.world], obs_mode="chunk", max_episode_steps=-1, **kwargs)
    env.action_space.seed(args.seed)
    rng = np.random.default_rng(args.seed)
    try:
        obs, _ = env.reset(seed=args.seed, options=reset_options)
    except ValueError as err:
        if args.image is None:
            raise
        raise SystemExit(f"--image {args.image}: {err}") from err
    frames, action, hold = [obs[-1]], None, 0
    start = time.perf_counter()
    for i in range(steps):
        if isinstance(actions, dict):
            action = {k: v[i] for k, v in actions.items()}
        elif actions is not None:
            action = actions[i]
        elif hold <= 0:  # a new random action, held 2-6 steps so motion is visible
            action, hold = env.action_space.sample(), int(rng.integers(2, 7))
        hold -= 1
        try:
            obs, _, terminated, *_ = env.step(action)
        except ActionError as err:
            raise SystemExit(
                f"--actions {args.actions}: row {i}: {err} (nothing was written)"
            ) from err
        frames.extend(obs)
        if terminated:  # the robot's terminate_episode = 0 ends the episode after this step
            break
    elapsed = time.perf_counter() - start
    fps = env.unwrapped.metadata["world_fps"]
    dtype = str(env.unwrapped.dtype).removeprefix("torch.")
    nfe = env.unwrapped.vector.config.sampler.nfe
    env.close()
    from gym_worldmodel.video import write_video

    frames = np.stack(frames)
    if args.frames:  # first: the arrays are kept even where the video cannot be written
        atomic_write(args.frames, lambda f: np.save(f, frames))
    write_video(args.video, frames, fps)
    print(
        f"{args.world}: {i + 1} steps, {len(frames) - 1} frames after the start frame in "
        f"{elapsed:.1f} s "
        f"({(len(frames) - 1) / elapsed:.1f} frames/s, {dtype}, nfe {nfe}); wrote {args.video} "
        f"at {fps} fps" + (f" and {args.frames}" if args.frames else "")
    )


def ship_main(argv: Sequence[str]) -> None:
    """``gym-worldmodel ship``: the checkpoint (float16) and each dataset's start frames."""
    parser = argparse.ArgumentParser(prog="gym-worldmodel ship")
    parser.add_argument("--model", required=True, help="checkpoint directory to ship")
    parser.add_argument("--data", type=Path, nargs="+", required=True, help="dataset directories")
    parser.add_argument(
        "--start-frames", type=positive_int, default=16, help="start frames per world"
    )
    parser.add_argument("--out", type=Path, help="worlds directory (default: the package's)")
    parser.add_argument(
        "--name",
        default="shared",
        help="checkpoint folder under the worlds directory: shared (what every world without "
        "its own loads) or a world's own (the world's `checkpoint` in envs/worlds.py)",
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
    from gym_worldmodel.files import WORLDS_DIR
    from gym_worldmodel.training.start_frames import pick_start_frames, write_start_frames

    root = args.out or WORLDS_DIR
    model = hub.from_pretrained(args.model)
    if args.nfe is not None:
        model = model.with_sampler(nfe=args.nfe)
    # every dataset is read and checked before anything is written: a failed ship changes
    # nothing (start frames of another size are fine: envs resize them)
    starts = [pick_start_frames(data, args.start_frames) for data in args.data]
    target = hub.save_pretrained(model, root / args.name, torch.float16)
    print(f"wrote {target} (float16, {model.config.sampler.nfe} denoiser passes a step)")
    for world, frames in starts:
        print(f"wrote {write_start_frames(world, frames, root)}")


def load_source(name: str) -> type:
    """The source class called ``name`` (a key of SOURCES or ``module:Class``)."""
    target = SOURCES.get(name, name)
    if ":" not in target:
        raise SystemExit(f"unknown source {name!r}: use one of {sorted(SOURCES)} or module:Class")
    module, cls = target.split(":", 1)
    try:
        found = getattr(importlib.import_module(module), cls)
    except (ImportError, AttributeError) as err:
        raise SystemExit(f"source {name!r}: cannot import {cls} from {module} ({err})") from err
    if not isinstance(found, type):
        raise SystemExit(
            f"source {name!r}: {module}.{cls} is a {type(found).__name__}, not a class with an "
            "info dict and rollout(seed, steps)"
        )
    return found


if __name__ == "__main__":
    raise SystemExit(main())
