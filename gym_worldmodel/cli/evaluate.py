"""``gym-worldmodel eval``: score worlds against held-out episodes and write the report."""

from __future__ import annotations

import argparse
import dataclasses
import shlex
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gym_worldmodel.cli.argtypes import (
    Interrupted,
    add_memory_guidance,
    check_device,
    denoiser_passes,
    non_negative_int,
    positive_int,
    require,
)
from gym_worldmodel.cli.worlds import SHIPPED, per_world
from gym_worldmodel.files import CACHE_ENV, unwritable
from gym_worldmodel.user_cache import probe_cache_limit

if TYPE_CHECKING:
    from gym_worldmodel.evaluation import EvalConfig


def eval_main(argv: Sequence[str]) -> None:
    """``gym-worldmodel eval``: open loop, controllability and stability on held-out episodes.

    Its rollouts and probe training keep their progress in ``OUT/.resume``
    (:mod:`.evaluation.resume`): stopped (Ctrl-C, SIGTERM, a crash), the same command goes on
    from there; the folder is removed once the report is written.
    """
    parser = _parser()
    args = parser.parse_args(argv)
    _refuse_other_modes_options(parser, args)
    check_device(args.device)
    if args.out == DOCS_OUT and not DOCS_OUT.parent.is_dir():  # outside the project's checkout
        print(
            f"note: writing the report into {DOCS_OUT}/ and {DOCS_OUT.parent}/ here (the "
            "project's own report's place); --out DIR names another",
            file=sys.stderr,
        )
    # what is written at the end is checked now, not after an evaluation of many minutes
    for flag, path, kind in (
        ("--out", args.out, "a directory"),
        ("--report", args.report, ""),
        ("--probe-cache", args.probe_cache, "a directory"),
    ):
        if path is not None and path.exists() and path.is_dir() != bool(kind):
            parser.error(f"{flag} {path}: must be {kind or 'a file (the markdown page)'}")
        why = None if path is None else unwritable(path, folder=bool(kind))
        if why:
            parser.error(f"{flag} {path}: {why}")
    if not (args.no_probe_cache or args.revisit):  # the probes' size bound (no probe in revisit)
        try:
            probe_cache_limit()
        except ValueError as err:
            parser.error(str(err))
    if args.against is not None:  # read now, not after the run
        if not args.revisit:
            parser.error("--against compares revisit runs: it needs --revisit")
        from gym_worldmodel.evaluation.revisit import read_revisit

        try:
            args.against_run = read_revisit(args.against)
        except (OSError, ValueError) as err:
            parser.error(f"--against {args.against}: {err}")
    if args.report is not None and args.report.suffix.lower() != ".md":  # not a dataset's card
        parser.error(f"--report {args.report}: name a markdown page (.md) to write")
    if args.out is not None or args.report is not None:  # its plots and sample strips
        require("matplotlib", "eval --out/--report", "train")
    from gym_worldmodel.evaluation.resume import clear, saved_in
    from gym_worldmodel.sources.episodes import read_card

    command = "gym-worldmodel eval " + shlex.join(argv)  # a path with spaces reruns
    if args.seed is None:  # the seed it ran with, so that the command reruns it
        args.seed = SEED
        command += f" --seed {SEED}"
    worlds = [read_card(data)["world"] for data in args.data]
    checkpoints = per_world(args.model, "--model", args.device, worlds)

    def models(world: str) -> Any:
        model = checkpoints(world)
        sampler = {"nfe": args.nfe, "memory_guidance": args.memory_guidance}
        changes = {name: value for name, value in sampler.items() if value is not None}
        return model.with_sampler(**changes) if changes else model

    teachers = per_world(args.teacher, "--teacher", args.device, worlds)
    if args.revisit and len(args.data) != 1:  # one report and one revisit.json per run
        parser.error(f"--revisit measures one dataset per run, got {len(args.data)}")
    try:
        config = None if args.revisit else eval_config(args)
    except ValueError as err:
        parser.error(str(err))
    resume = args.out / RESUME
    try:
        if args.revisit:
            _revisit(args, models(worlds[0]), command, resume)
        else:
            assert config is not None
            _open_loop(args, config, models, teachers, worlds, command, resume)
    except KeyboardInterrupt:
        if not saved_in(resume):
            raise Interrupted(
                "nothing had saved its progress yet: the same command starts again"
            ) from None
        raise Interrupted(
            f"the progress is kept in {resume}/: the same command goes on from there"
        ) from None
    clear(resume)  # (the report is written: nothing to go on with)


def _open_loop(
    args: argparse.Namespace,
    config: EvalConfig,
    models: Callable[[str], Any],
    teachers: Callable[[str], Any],
    worlds: list[str],
    command: str,
    resume: Path,
) -> None:
    """``eval`` without ``--revisit``: every measurement of each world, then the report."""
    from gym_worldmodel.evaluation import (
        default_probe_cache,
        evaluate_world,
        ratio_text,
        write_report,
    )

    probes = None if args.no_probe_cache else args.probe_cache or default_probe_cache()
    results, samples = [], {}
    for data, world in zip(args.data, worlds, strict=True):
        model, teacher = models(world), teachers(world) if args.teacher else None
        figures, sample = evaluate_world(
            model, data, config, teacher, not args.no_progress, probe_cache=probes, resume=resume
        )
        results.append(figures)
        samples[figures.world] = sample
        print(
            f"{figures.world}: PSNR {_psnr_text(figures.psnr)}; "
            f"control {ratio_text(figures.control['ratio'])} "
            f"(by step: {_ratios_by_step(figures.control)}); "
            f"collapsed {figures.stability['collapsed']}",
            flush=True,
        )
    report = args.report or _default_report(args.out, "evaluation.md")
    write_report(results, samples, args.out, report, command)
    print(f"wrote {report} and {args.out}/")


def eval_config(args: argparse.Namespace) -> EvalConfig:
    """--budget's settings, or the full ones, with every flag given on top."""
    from gym_worldmodel.evaluation import EvalConfig

    names = (*_CONFIG_FLAGS, "seed")
    given = {name: getattr(args, name) for name in names if getattr(args, name) is not None}
    if "horizons" in given:
        given["horizons"] = tuple(given["horizons"])
    return dataclasses.replace(EvalConfig.budget() if args.budget else EvalConfig(), **given)


#: The folder in OUT where a run's rollouts and probe training keep their progress (removed
#: once it finishes).
RESUME = ".resume"
#: Where the project's own report keeps its plots (docs/evaluation.md, docs/memory.md link them).
DOCS_OUT = Path("docs/eval")


def _default_report(out: Path, name: str) -> Path:
    """The report beside its plots; the project's docs page where they are the docs' own."""
    own = out.resolve() == DOCS_OUT.resolve()
    return DOCS_OUT.parent / name if own else out / name


#: The flags that set ``EvalConfig`` fields of the same names (their defaults: None, the
#: config's own, or --budget's).
_CONFIG_FLAGS = (
    "horizons",
    "starts_per_episode",
    "teacher_nfe",
    "teacher_horizon",
    "probe_steps",
    "stability_steps",
    "stability_rows",
)


#: The options only one mode reads (their dests): the open-loop evaluation (without --revisit)
#: and --revisit. Each defaults to None or False, so one given is told from one left out.
_OPEN_LOOP_ONLY = ("teacher", "budget", "probe_cache", "no_probe_cache", *_CONFIG_FLAGS)
_REVISIT_ONLY = ("min_gap", "max_episodes", "oracle_memory")
#: --seed's value where it is not given: the library's (``EvalConfig.seed``, ``evaluate_revisit``)
SEED = 0
#: --min-gap's value where it is not given (its parser default is None, to tell it given)
MIN_GAP = 250


def _refuse_other_modes_options(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """``parser.error`` on an option given that the chosen mode does not read.

    Every option of one mode only defaults to None or False (``_OPEN_LOOP_ONLY``,
    ``_REVISIT_ONLY``): one that differs from its parser default was given.
    """
    unread, reader, mode = (
        (_OPEN_LOOP_ONLY, "the open-loop evaluation (eval without --revisit)", "--revisit")
        if args.revisit
        else (_REVISIT_ONLY, "--revisit", "the open-loop evaluation")
    )
    flags = {a.dest: a.option_strings[0] for a in parser._actions if a.option_strings}
    given = [flags[d] for d in unread if getattr(args, d) != parser.get_default(d)]
    if given:
        parser.error(
            f"{', '.join(given)}: read by {reader} only; {mode} does not use "
            f"{'it' if len(given) == 1 else 'them'}"
        )


def _parser() -> argparse.ArgumentParser:
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
    parser.add_argument(
        "--horizons",
        type=positive_int,
        nargs="+",
        help="steps (chunks) after the start at which PSNR and SSIM are reported (default: 1 4 "
        "16 64; --budget: 1 3)",
    )
    parser.add_argument(
        "--nfe",
        type=denoiser_passes,
        help="denoiser passes per chunk of the evaluated worlds (default: each checkpoint's own)",
    )
    add_memory_guidance(parser, "the evaluated worlds")
    parser.add_argument(
        "--teacher-nfe",
        type=positive_int,
        help="Euler steps of the teacher baseline (default: 32; --budget: 4)",
    )
    parser.add_argument(
        "--teacher-horizon",
        type=positive_int,
        help="largest horizon the teacher baseline runs to (it costs nfe + 1 passes a step; "
        "default: 16; --budget: 3)",
    )
    parser.add_argument(
        "--stability-steps",
        type=positive_int,
        help="steps of the long rollouts (default: 1000; --budget: 4)",
    )
    parser.add_argument(
        "--stability-rows",
        type=positive_int,
        help="long rollouts per world (default: 4; --budget: 2)",
    )
    parser.add_argument(
        "--probe-steps",
        type=positive_int,
        help="training steps of the inverse-dynamics probe, trained on recorded frames only "
        "(default: 1500; --budget: 5)",
    )
    probes = parser.add_mutually_exclusive_group()
    probes.add_argument(
        "--probe-cache",
        type=Path,
        metavar="DIR",
        help="folder that keeps the trained probes: a rerun on the same training data with the "
        "same probe settings reads its probe back instead of training it (default: probes/ in "
        f"${CACHE_ENV}, else in $XDG_CACHE_HOME/gym-worldmodel, else in ~/.cache/gym-worldmodel)",
    )
    probes.add_argument(
        "--no-probe-cache",
        action="store_true",
        help="train the probe and keep nothing (no probe is read back either)",
    )
    parser.add_argument(
        "--starts-per-episode",
        type=positive_int,
        help="open-loop rollouts per held-out episode, starts spread over its length (default: "
        "2; --budget: 1)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=DOCS_OUT,
        help=f"plots and JSON (default: {DOCS_OUT}); rollouts and probe training keep progress in "
        f"OUT/{RESUME} until the report is written, so that the same command, stopped, goes on",
    )
    parser.add_argument(
        "--report",
        type=Path,
        help="markdown page (default: OUT/evaluation.md, or OUT/memory.md with --revisit; the "
        f"project's docs/evaluation.md and docs/memory.md where OUT is {DOCS_OUT})",
    )
    parser.add_argument(
        "--budget",
        action="store_true",
        help="tiny settings for smoke tests (the flags above, where given, still set theirs)",
    )
    parser.add_argument(
        "--revisit",
        action="store_true",
        help="spatial-memory revisit benchmark (memory on vs off) on a revisit dataset",
    )
    parser.add_argument(
        "--min-gap",
        type=positive_int,
        help=f"revisit: frames before return (default: {MIN_GAP})",
    )
    parser.add_argument(
        "--max-episodes", type=positive_int, help="revisit: use the first n held-out episodes"
    )
    parser.add_argument(
        "--oracle-memory",
        action="store_true",
        help="revisit: also run memory on with the recorded frames remembered (a diagnostic)",
    )
    parser.add_argument(
        "--against",
        type=Path,
        metavar="REVISIT_JSON",
        help="revisit: an earlier run's revisit.json on the same episodes (another world or "
        "setting): also print memory on against its memory on, episode by episode, with a "
        "90%% interval over the episodes",
    )
    parser.add_argument(
        "--seed",
        type=non_negative_int,
        help="seeds the rollouts' noise and the probe (open loop) or the rollouts (--revisit); "
        f"the report's command records it (default: {SEED})",
    )
    parser.add_argument(
        "--device", default="cpu", help="torch device the worlds run on (cpu, cuda); probes on CPU"
    )
    parser.add_argument(
        "--no-progress", action="store_true", help="log lines instead of progress bars"
    )
    return parser


def _revisit(args: argparse.Namespace, model: Any, command: str, resume: Path) -> None:
    """``eval --revisit``: memory on against off on the frames that return to a place."""
    from gym_worldmodel.evaluation.revisit import (
        against,
        evaluate_revisit,
        first_view_span,
        write_revisit_report,
    )

    report, data = args.report or _default_report(args.out, "memory.md"), args.data[0]
    result = evaluate_revisit(
        model,
        data,
        MIN_GAP if args.min_gap is None else args.min_gap,
        seed=args.seed,  # (eval_main resolves it)
        max_episodes=args.max_episodes,
        progress=not args.no_progress,
        oracle=args.oracle_memory,
        resume=resume,
    )
    print(
        f"{result.world}: revisit PSNR memory on {result.psnr_on:.2f} dB, off "
        f"{result.psnr_off:.2f} dB ({result.gain_db:+.2f}); SSIM {result.ssim_on:.3f} vs "
        f"{result.ssim_off:.3f}; hits on {100 * result.hit_rate:.0f}% of revisit frames",
        flush=True,
    )
    spread = result.gain_interval
    print(
        f"  better with memory in {result.episodes_helped} of {result.episodes} episodes"
        + (
            ""
            if spread is None
            else f"; the gain's 90% interval over episodes {spread[0]:+.2f} to {spread[1]:+.2f} dB"
        ),
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
    if result.by_first_view:
        spans = (
            f"{first_view_span(b)}: {b['on'] - b['off']:+.2f} dB ({b['frames']} frames)"
            for b in result.by_first_view
        )
        print(f"  by the frame the place was first shown at: {', '.join(spans)}", flush=True)
    write_revisit_report(result, args.out, report, command)
    print(f"wrote {report} and {args.out}/")
    if args.against is not None:
        try:
            pair = against(result, args.against_run)
        except ValueError as err:  # the run's own report is written: only the pairing is lost
            print(f"note: not compared with --against {args.against}: {err}", file=sys.stderr)
            return
        spread = pair["interval"]
        print(
            f"memory on against {args.against}'s memory on: better in {pair['better']} of "
            f"{pair['episodes']} episodes, mean {pair['mean']:+.2f} dB, median "
            f"{pair['median']:+.2f} dB"
            + ("" if spread is None else f", 90% interval {spread[0]:+.2f} to {spread[1]:+.2f} dB"),
            flush=True,
        )


def _psnr_text(psnr: dict[str, dict[int, float]]) -> str:
    """``at h = 1 / 4: model 26.08 / 18.98 dB, copy last frame 20.50 / 16.12 dB``."""
    horizons = sorted({h for by_h in psnr.values() for h in by_h})
    rows = ", ".join(
        f"{name} " + " / ".join(f"{by_h[h]:.2f}" if h in by_h else "-" for h in horizons) + " dB"
        for name, by_h in psnr.items()
    )
    return f"at h = {' / '.join(map(str, horizons))}: {rows}"


def _ratios_by_step(control: dict[str, Any]) -> str:
    """``1: 0.92, 2-4: 0.61, ...``: the controllability ratio in each span between horizons."""
    from gym_worldmodel.evaluation import ratio_text, steps_label

    return ", ".join(
        f"{steps_label(v['steps'])}: {ratio_text(v['ratio'])}"
        for v in control["by_horizon"].values()
    )
