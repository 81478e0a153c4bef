"""The options of ``gym-worldmodel train``: the stages that take each, its type, default and help.

A table (``OPTIONS``) rather than ``add_argument`` calls, so that each stage's ``--help`` lists
only its own options and another stage refuses them by name (``STAGE_OPTIONS``). Defaults the
library keeps are read from ``training/config.py`` (:func:`library_default`), which imports no
torch, so a stage's ``--help`` stays fast.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from gym_worldmodel.cli.argtypes import (
    denoiser_passes,
    folder_path,
    fraction,
    non_negative_float,
    non_negative_int,
    positive_float,
    positive_int,
)
from gym_worldmodel.cli.worlds import init_checkpoint
from gym_worldmodel.training.config import (  # no torch: a stage's --help stays fast
    RECIPE_DEFAULTS,
    DistillConfig,
    SelfForcingConfig,
    TeacherLossConfig,
    TrainConfig,
)

#: What ``--budget`` runs instead of the defaults: steps, batch size, probe or pair-net steps.
BUDGET = 20, 4, 20


@dataclasses.dataclass(frozen=True)
class FromLibrary:
    """An option's ``default`` that the library keeps: read when a parser is built.

    The field or keyword of the option's name (:func:`library_default`), so that the command
    line holds no copy of it to drift from. ``unset``: the option stays None unless given (the
    options ``--budget`` replaces, so that one given with it is refused), its help naming the
    default.
    """

    unset: bool = False


LIBRARY, LIBRARY_UNSET = FromLibrary(), FromLibrary(unset=True)

#: The stages of the recipe, in order, each with what it trains.
STAGES = {
    "vae": "the autoencoder, the first stage",
    "decoder": "fine-tune a world's VAE decoder on --data (its encoder and denoiser kept)",
    "teacher": "the flow-matching teacher, on a VAE's latents",
    "student": "distil a few-step student from a teacher",
    "flow": "a flow warp that moves a world's anchors by its actions (DiTConfig.anchor_flow)",
    "self-forcing": "fine-tune a world on its own rollouts",
}
_ALL = tuple(STAGES)
_AFTER_VAE = _ALL[1:]
_MEMORY = ("teacher", "student", "self-forcing")

#: Each ``train`` option: the stages that take it, its flag, and ``add_argument``'s keywords
#: (``help`` may name a text per stage). A stage's ``--help`` lists only its own.
OPTIONS: tuple[tuple[tuple[str, ...], str, dict[str, Any]], ...] = (
    (_ALL, "--data", dict(type=Path, nargs="+", required=True, help="dataset directories")),
    (
        _ALL,
        "--out",
        dict(type=folder_path, required=True, help="run directory (resumes if present)"),
    ),
    (
        _AFTER_VAE,
        "--init",
        dict(
            type=init_checkpoint,
            required=True,
            metavar={  # usage shows what each stage starts from
                "decoder": "WORLD",
                "teacher": "VAE_RUN/model",
                "student": "TEACHER_RUN/model",
                "flow": "WORLD",
                "self-forcing": "MODEL",
            },
            help={
                "decoder": "the world whose VAE decoder to fine-tune: a checkpoint directory, "
                "Hugging Face repo id, or shipped (the embedded shared world) or WORLD=shipped "
                "(that world's own)",
                "teacher": "the VAE run's checkpoint (<vae run>/model)",
                "student": "the teacher's checkpoint (<teacher run>/model)",
                "flow": "the world whose anchors the flow warp will move (as for self-forcing)",
                "self-forcing": "the world to fine-tune: a checkpoint directory, Hugging Face "
                "repo id, or shipped (the embedded shared world, the robot's) or WORLD=shipped "
                "(that world's own, e.g. citywalk=shipped)",
            },
        ),
    ),
    (
        ("vae",),
        "--preset",
        dict(
            choices=["compact", "default", "tiny"],
            default="compact",
            help="model size (compact is what the shipped worlds use; tiny: 32x32 frames at an "
            "even frame rate, chunks of 2)",
        ),
    ),
    (
        ("student",),
        "--nfe",
        dict(type=denoiser_passes, default=LIBRARY, help="denoising steps of the student (1 to 8)"),
    ),
    (
        ("self-forcing",),
        "--nfe",
        dict(
            type=denoiser_passes,
            default=LIBRARY,
            help="denoising steps of the checkpoint (1 to 8; the shipped worlds run 1, driving 2)",
        ),
    ),
    (
        ("student",),
        "--student-init",
        dict(help="fine-tune this student (directory or repo id), not a copy of the teacher"),
    ),
    (
        ("student",),
        "--teacher-nfe",
        dict(
            type=denoiser_passes,
            default=LIBRARY,
            help="Euler steps of the teacher's target (1 to 8; 1 with the student's own "
            "checkpoint as the teacher distils its guidance alone)",
        ),
    ),
    (
        ("student",),
        "--gt-weight",
        dict(
            type=non_negative_float,
            default=LIBRARY,
            metavar="WEIGHT",
            help="weight of the error to the recorded chunk beside the teacher's (0: pure "
            "distillation)",
        ),
    ),
    (
        ("student",),
        "--teacher-memory-guidance",
        dict(
            type=non_negative_float,
            default=LIBRARY,
            metavar="SCALE",
            help="with --memory: memory guidance of the teacher's target "
            "(SamplerConfig.memory_guidance, 0 to 100; 1: none): the student learns to lean on "
            "its retrieved memory as the guided teacher does, at one pass",
        ),
    ),
    (
        _MEMORY,
        "--memory",
        dict(
            action="store_true",
            help="train with retrieved spatial-memory chunks (worlds with a pose)",
        ),
    ),
    (
        ("teacher",),
        "--memory-only",
        dict(
            type=fraction,
            default=LIBRARY,
            metavar="FRACTION",
            help="with --memory: fraction of windows with a memory hit whose history is masked "
            "with pure noise, so the retrieved memory is the only source of the view",
        ),
    ),
    (
        ("teacher",),
        "--frame-anchor",
        dict(
            action="store_true",
            help="add the frame anchor (a direct path from the previous frame) to an --init "
            "that has none; it starts at zero, so training begins from the same model",
        ),
    ),
    (
        ("teacher",),
        "--anchor-sigma",
        dict(
            type=positive_float,
            metavar="SIGMA",
            help="predict each frame as a change from the previous frame, with a prior of this "
            "std (scaled latent units) around it (DiTConfig.anchor_sigma); the output layer "
            "restarts at zero, so training begins from repeating the last frame",
        ),
    ),
    (
        ("teacher",),
        "--clean-anchors",
        dict(
            action="store_true",
            help="anchor every chunk to the clean previous recorded frame, as the env anchors "
            "to the frame it wrote, also where the history is noised",
        ),
    ),
    (
        ("teacher",),
        "--motion-focus",
        dict(
            type=non_negative_float,
            default=LIBRARY,
            metavar="WEIGHT",
            help="weight the flow loss towards where the picture was moving just before each "
            "chunk, so a small moving part (a robot arm, a car) and the action that moves it "
            "count (1: the tenth of the robot's places that moved most carries about 40%% of "
            "it)",
        ),
    ),
    (
        ("teacher",),
        "--action-scale",
        dict(
            action="store_true",
            help="rescale each action dimension to unit spread over --data before its "
            "projector (DiTConfig.action_scale; the model's output unchanged at the start), so "
            "a robot's 5 mm moves are learned as fast as its gripper",
        ),
    ),
    (
        ("flow",),
        "--pair-steps",
        dict(
            type=positive_int,
            metavar="STEPS",
            help="steps of the first stage, the pair net that finds the recorded flows "
            "(default --steps)",
        ),
    ),
    (
        ("self-forcing",),
        "--max-chunks",
        dict(
            type=non_negative_int,
            default=LIBRARY,
            help="most chunks the model generates itself before the trained one",
        ),
    ),
    (
        ("self-forcing",),
        "--memory-gap",
        dict(
            type=non_negative_int,
            default=LIBRARY,
            metavar="FRAMES",
            help="with --memory: the retrieved chunk ends at least this many frames before the "
            "frame it is retrieved for (default {default}: any chunk before the window); 250, "
            "the revisit benchmark's gap, trains on places left long ago",
        ),
    ),
    (
        ("self-forcing",),
        "--action-weight",
        dict(
            type=non_negative_float,
            default=LIBRARY,
            help="weight of a latent inverse-dynamics probe's error on each predicted chunk "
            "(the chunk must show its action; the probe is trained first on the recorded "
            "latents)",
        ),
    ),
    (
        ("self-forcing",),
        "--probe-steps",
        dict(
            type=positive_int,
            default=LIBRARY_UNSET,
            help="with --action-weight: training steps of that probe (default {default})",
        ),
    ),
    (
        ("self-forcing",),
        "--motion-weight",
        dict(
            type=non_negative_float,
            default=LIBRARY,
            help="weight of the error of each predicted chunk's motion (mean latent change per "
            "frame) against the recorded chunk's, so the world moves as fast as the simulator "
            "did",
        ),
    ),
    (
        ("self-forcing",),
        "--shift-weight",
        dict(
            type=non_negative_float,
            default=LIBRARY,
            help="weight of the error of each predicted frame's coherent shift (latent pixels, a "
            "soft whole-pixel search) against the recorded frame's",
        ),
    ),
    (
        ("self-forcing",),
        "--adversarial-weight",
        dict(
            type=non_negative_float,
            default=LIBRARY,
            help="weight of a chunk critic's verdict on each chunk the model outputs at run "
            "time (the critic is trained alongside to tell them from recorded chunks, so a "
            "blurred chunk costs something)",
        ),
    ),
    (
        ("self-forcing",),
        "--balanced",
        dict(
            action="store_true",
            help="draw each world (modality) equally often, not in proportion to its frames "
            "(the robot and driving sets are a fraction of the city walk's)",
        ),
    ),
    (
        ("self-forcing",),
        "--anchor-motion",
        dict(
            action="store_true",
            help="move each frame's anchor by the image shift its actions imply "
            "(DiTConfig.anchor_motion), fitted to the recorded frames of each world whose "
            "picture moves with its actions",
        ),
    ),
    (
        ("self-forcing",),
        "--anchor-ego",
        dict(
            action="store_true",
            help="the driving world's anchors move with the car, by the shift its pose "
            "integrated from the actions implies (DiTConfig.anchor_ego), instead of a learned "
            "flow",
        ),
    ),
    (
        _ALL,
        "--steps",
        dict(
            type=positive_int,
            default=LIBRARY_UNSET,
            help="training steps (default {default}, a day's run on a CPU: the recipe's own "
            "counts are in docs/training.md)",
        ),
    ),
    (
        _ALL,
        "--batch-size",
        dict(
            type=positive_int,
            default=LIBRARY_UNSET,
            help={
                stage: ("frames" if stage in ("vae", "decoder") else "windows")
                + " a step (default {default})"
                for stage in _ALL
            },
        ),
    ),
    (_ALL, "--lr", dict(type=positive_float, default=LIBRARY, help="peak learning rate")),
    (
        _ALL,
        "--cooldown",
        dict(type=fraction, default=LIBRARY, help="fraction of steps decaying the lr to 0"),
    ),
    (_ALL, "--dtype", dict(choices=["float32", "bfloat16"], default=LIBRARY)),
    (
        _ALL,
        "--device",
        dict(
            default=LIBRARY,
            help="torch device to train on (cpu, cuda, cuda:1); a run resumes on the device "
            "type it started on",
        ),
    ),
    (
        _ALL,
        "--save-every",
        dict(
            type=positive_int,
            default=LIBRARY,
            help="steps between checkpoints (Ctrl-C or SIGTERM also writes one, after its step)",
        ),
    ),
    (_ALL, "--seed", dict(type=non_negative_int, default=LIBRARY)),
    (
        _ALL,
        "--budget",
        dict(
            action="store_true",
            help=f"reduced recipe for smoke tests: {BUDGET[0]} steps of batch {BUDGET[1]} "
            f"({BUDGET[2]} action-probe or pair-net steps where the stage trains one)",
        ),
    ),
    (
        _ALL,
        "--no-progress",
        dict(
            action="store_true",
            help="no progress bars; print one line per checkpoint instead (for log files)",
        ),
    ),
)


def _stage_options() -> dict[str, tuple[str, ...]]:
    """Each option that only some stages take, with those stages."""
    stages: dict[str, tuple[str, ...]] = {}
    for taken_by, flag, _ in OPTIONS:
        stages[flag] = stages.get(flag, ()) + taken_by
    return {flag: taken_by for flag, taken_by in stages.items() if set(taken_by) != set(_ALL)}


#: ``train`` options that only some stages take: another stage refuses them by name.
STAGE_OPTIONS = _stage_options()


def stage_keywords(stage: str, flag: str, kwargs: dict[str, Any]) -> dict[str, Any]:
    """``add_argument``'s keywords of option ``flag`` for ``stage``.

    Its metavar and help for that stage, and a default the library keeps read from there.
    """
    own = dict(kwargs)
    for key in ("metavar", "help"):
        if isinstance(own.get(key), dict):
            own[key] = own[key][stage]
    default = own.get("default")
    if isinstance(default, FromLibrary):
        shown = library_default(stage, flag.removeprefix("--").replace("-", "_"))
        own["default"] = None if default.unset else shown
    else:
        shown = default
    own["help"] = _help(own.get("help"), shown)
    return own


#: The configs whose fields hold a stage's own defaults, after ``TrainConfig``'s.
_STAGE_CONFIGS: dict[str, tuple[type, ...]] = {
    "teacher": (TeacherLossConfig,),
    "student": (DistillConfig,),
    "self-forcing": (SelfForcingConfig,),
}


def library_default(stage: str, name: str) -> Any:
    """The library's default of ``train <stage>``'s option ``name`` (its ``dest``).

    A ``TrainConfig`` field's, else a field's of the stage's config (``teacher``:
    ``TeacherLossConfig``, ``student``: ``DistillConfig``, ``self-forcing``:
    ``SelfForcingConfig``), else the keyword default of
    the stage's recipe (``training.config.RECIPE_DEFAULTS``): where the run takes it from. All
    of them live in ``training/config.py``, which imports no torch.
    """
    for config in (TrainConfig, *_STAGE_CONFIGS.get(stage, ())):
        defaults = {f.name: f.default for f in dataclasses.fields(config)}
        if name in defaults:
            return defaults[name]
    return RECIPE_DEFAULTS["train_" + stage.replace("-", "_")][name]


def _help(text: str | None, default: Any) -> str | None:
    """An option's help with its ``default`` where it has one worth saying.

    In place of ``{default}`` where the text has it, else after the text.
    """
    shown = f"{default:g}" if isinstance(default, float) else default
    if text and "{default}" in text:
        return text.format(default=shown)
    if default is None or default is False or "default" in (text or ""):
        return text
    return f"{text} (default {shown})" if text else f"default {shown}"
