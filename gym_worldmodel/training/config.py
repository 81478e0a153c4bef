"""The training settings that ``gym-worldmodel train`` reads its defaults from; no torch.

``TrainConfig`` (the optimisation), ``TeacherLossConfig`` (the teacher's loss),
``SelfForcingConfig`` (self-forcing's loss), ``DistillConfig`` (the student's) and the recipes'
keyword defaults that no config holds (``RECIPE_DEFAULTS``). The recipes
(``training/recipes.py``) and the command line both take them from here, so a stage's
``--help`` lists its defaults without importing torch. Each config is importable from the module
that uses it too (``training.trainer``, ``training.losses``, ``training.self_forcing``,
``training.distill``).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings; the defaults are the recipe's (docs/training.md).

    ``gym-worldmodel train`` reads its defaults from these fields. Until 2026-12-07 the
    library's own were a warm-up of 200 steps and no cool-down, where ``train`` gave a tenth of
    the steps plus one (at most 200) and a 20% cool-down: a config that leaves ``warmup`` and
    ``cooldown`` out now trains as ``train`` does.

    Attributes:
        steps: Total optimizer steps of the run.
        batch_size: Items per step (drawn with replacement, seeded).
        lr: AdamW learning rate: linear warm-up over ``warmup`` steps, constant, then a linear
            cool-down over the last ``cooldown`` fraction of ``steps`` (the last step runs at
            ``lr`` divided by the cool-down's length in steps).
        weight_decay: AdamW weight decay.
        warmup: Warm-up steps; None (the default): a tenth of ``steps`` plus one, at most 200
            (:func:`default_warmup`), set when the config is made (``dataclasses.replace``
            keeps it, for another ``steps`` too).
        cooldown: Fraction of the steps spent decaying the learning rate to zero (0: none).
        grad_clip: Gradient norm clip.
        dtype: ``"float32"`` or ``"bfloat16"`` (autocast).
        save_every: Steps between checkpoints.
        seed: Seeds batch order and every noise draw.
        device: Torch device the module trains on (``"cpu"``, ``"cuda"``, ``"cuda:1"``); each
            batch is moved there and the noise is drawn there. A run resumes on the device type
            it started on (its noise generator's state is that device's).
    """

    steps: int = 10_000
    batch_size: int = 32
    lr: float = 3e-4
    weight_decay: float = 0.01
    warmup: int | None = None
    cooldown: float = 0.2
    grad_clip: float = 1.0
    dtype: str = "float32"
    save_every: int = 100
    seed: int = 0
    device: str = "cpu"

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "save_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        warmup = default_warmup(self.steps) if self.warmup is None else self.warmup
        object.__setattr__(self, "warmup", warmup)  # a number from here on: checkpoints record it
        if not self.lr > 0 or warmup < 0 or not 0 <= self.cooldown <= 1:
            raise ValueError(
                f"need lr > 0, warmup >= 0 and cooldown in [0, 1], got lr={self.lr}, "
                f"warmup={self.warmup}, cooldown={self.cooldown}"
            )
        if self.dtype not in ("float32", "bfloat16"):
            raise ValueError(f"dtype must be 'float32' or 'bfloat16', got {self.dtype!r}")

    def run_settings(self) -> dict[str, Any]:
        """The settings a resumed run must share with the run it continues.

        Everything that changes the batches, the noise or the optimisation: ``save_every`` may
        change, and the device type is checked on its own. ``steps`` too, as long as the steps
        run so far had the same learning rate under the new count (checked on resume: a
        cool-down that has begun is tied to the count it began under).
        """
        out = dataclasses.asdict(self)
        for free in ("steps", "save_every", "device"):
            del out[free]
        return out


def default_warmup(steps: int) -> int:
    """``TrainConfig``'s warm-up for a run of ``steps``: a tenth of them plus one, at most 200."""
    return min(200, steps // 10 + 1)


@dataclass(frozen=True)
class TeacherLossConfig:
    """Sampling of noise levels and action dropout for the teacher.

    Attributes:
        shift: Timestep shift applied to uniform levels (as the sampler uses).
        teacher_forcing: Fraction of rows whose history is only lightly noised (levels up to
            ``context_noise``) while the last chunk takes any level; the other rows draw every
            chunk's level independently (diffusion forcing). Noise on history is the mask that
            teaches the model to trust imperfect context.
        context_noise: Largest history level in teacher-forcing rows.
        action_dropout: Fraction of rows trained with the null action (for action guidance).
        memory_only: Fraction of rows with a real memory chunk whose every chunk before the last
            is pure noise (level 1): nothing but the retrieved memory and the actions tells the
            model what the last chunk shows, so it learns to read the memory rather than lean on
            a history that already holds the view. No draw is made while it is 0, so runs
            without it draw what they always did.
        clean_anchors: Anchor every chunk (``DiTConfig.frame_anchor``) to the clean previous
            recorded frame, as the env anchors to the frame it wrote, even in rows whose history
            is noised; off, each chunk's anchor is its previous frame as noised with it.
        motion_focus: Weight of the loss where the picture was moving just before each chunk
            (:func:`~gym_worldmodel.training.losses.motion_focus_weights`); 0 weighs every
            position alike. A robot arm or a car fills a few percent of the frame, so an
            unweighted loss barely asks where it goes, and with it what the action says.
    """

    shift: float = 3.0
    teacher_forcing: float = 0.5
    context_noise: float = 0.1
    action_dropout: float = 0.1
    memory_only: float = 0.0
    clean_anchors: bool = False
    motion_focus: float = 0.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.memory_only <= 1.0:
            raise ValueError(f"memory_only is a fraction of rows in [0, 1], got {self.memory_only}")
        if self.motion_focus < 0:
            raise ValueError(f"motion_focus is a weight >= 0, got {self.motion_focus}")


@dataclass(frozen=True)
class SelfForcingConfig:
    """Settings of :func:`~gym_worldmodel.training.self_forcing.self_forcing_loss`.

    Attributes:
        max_chunks: Most chunks the model generates itself before the trained one (the windows
            must hold ``max_chunks + 2`` chunks: the sink, those, and the target).
        sampler_levels: Fraction of rows whose level is one of the sampler's steps.
        action_dropout: Fraction of rows trained with the null action (for guidance).
        action_weight: Weight of the latent action probe's error on the predicted chunk
            (0: none; then no probe is needed).
        motion_weight: Weight of the squared error of each predicted chunk's motion (mean
            absolute latent change per frame, after the previous frame) against the recorded
            chunk's, relative to the batch's mean recorded motion (0: none).
        shift_weight: Weight of the squared error, in latent pixels, of each predicted frame's
            coherent shift against the recorded frame's
            (:func:`~gym_worldmodel.training.self_forcing.chunk_shift`; 0: none).
        adversarial_weight: Weight of the critic's verdict on the chunks the model outputs at
            run time (0: none; then no critic is needed). The critic's own loss is added
            unweighted: it moves only the critic.
    """

    max_chunks: int = 6
    sampler_levels: float = 0.5
    action_dropout: float = 0.1
    action_weight: float = 0.0
    motion_weight: float = 0.0
    shift_weight: float = 0.0
    adversarial_weight: float = 0.0

    def __post_init__(self) -> None:
        if self.max_chunks < 0:
            raise ValueError(f"max_chunks is a number of chunks >= 0, got {self.max_chunks}")
        for name in ("sampler_levels", "action_dropout"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} is a fraction of rows in [0, 1]")
        for name in ("action_weight", "motion_weight", "shift_weight", "adversarial_weight"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} is a loss weight >= 0, got {getattr(self, name)}")


@dataclass(frozen=True)
class DistillConfig:
    """Settings of :func:`~gym_worldmodel.training.distill.student_loss`.

    Attributes:
        teacher_nfe: Euler steps of the teacher's target.
        gt_weight: Weight of the error to the recorded chunk (0: pure distillation).
        teacher_guidance: Classifier-free guidance scale of the teacher's target (the action
            dropped for the unguided pass); the student learns the guided flow and samples
            without guidance. None: the teacher checkpoint's own sampler setting, which
            ``train_student`` reads (``student_loss``, given a bare denoiser, takes None as 1).
            Until 2026-12-07 the default was 1 where a config was given, the teacher's own
            where none was; the same for every teacher whose own is 1, as the shipped worlds'.
        teacher_memory_guidance: Memory guidance of the teacher's target
            (``SamplerConfig.memory_guidance``: ``v_off + s (v - v_off)``, ``v_off`` with the
            retrieved memory masked; 1: none); the student learns to lean on its memory as the
            guided teacher does, at one pass's cost, and then samples without memory guidance
            of its own. Only windows with a retrieved memory (``--memory``) feel it.
    """

    teacher_nfe: int = 8
    gt_weight: float = 0.25
    teacher_guidance: float | None = None
    teacher_memory_guidance: float = 1.0

    def __post_init__(self) -> None:
        # (here, not at the top: the gym_worldmodel.models package imports torch, which importing
        # this module, for a stage's --help, must not)
        from gym_worldmodel.models.config import MAX_GUIDANCE, MAX_NFE

        if not 1 <= self.teacher_nfe <= MAX_NFE:
            raise ValueError(f"teacher_nfe must be in [1, {MAX_NFE}], got {self.teacher_nfe}")
        if not 0.0 <= self.gt_weight < math.inf:
            raise ValueError(f"gt_weight is a loss weight >= 0, got {self.gt_weight}")
        for name in ("teacher_guidance", "teacher_memory_guidance"):
            scale = getattr(self, name)  # as SamplerConfig's guidance scales
            if scale is not None and not 0.0 <= scale <= MAX_GUIDANCE:
                raise ValueError(
                    f"{name} must be in [0, {MAX_GUIDANCE}] (1 turns it off), got {scale}"
                )


#: ``train_student``'s denoising steps of the student (``nfe``).
STUDENT_NFE = 3
#: ``train_self_forcing``'s denoising steps of the checkpoint (``nfe``), the shipped worlds' one.
SELF_FORCING_NFE = 1
#: ``train_self_forcing``'s training steps of the latent action probe (``probe_steps``).
PROBE_STEPS = 600
#: ``train_self_forcing``'s fewest frames between the end of a retrieved memory chunk and the
#: frame it is retrieved for (``memory_gap``): 0 takes any chunk before the window.
MEMORY_GAP = 0

#: Those keyword defaults by recipe and keyword, where ``gym-worldmodel train`` reads them.
RECIPE_DEFAULTS: dict[str, dict[str, int]] = {
    "train_student": {"nfe": STUDENT_NFE},
    "train_self_forcing": {
        "nfe": SELF_FORCING_NFE,
        "probe_steps": PROBE_STEPS,
        "memory_gap": MEMORY_GAP,
    },
}
