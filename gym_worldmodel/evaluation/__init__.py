"""Evaluation of a world model against the simulator it learned, on held-out episodes.

Three measurements per world (each dataset's card names its world and modality):

* **Open loop.** From each held-out start frame the model runs the recorded actions through the
  env's engine; chunk ``h`` (frames ``s + (h-1)F + 1 .. s + hF``) is scored against the
  recorded frames with PSNR and SSIM at horizons ``h`` (steps). Baselines: copy the start frame
  (what a model that predicts no change scores), and optionally the teacher at full NFE.
* **Controllability.** An inverse-dynamics probe, trained on real training frames only, reads the
  action from a window of frames (``t-1 .. t+4`` -> action ``t``). It is scored on real held-out
  frames and on generated frames that followed the same actions: accuracy of the translation and
  rotation keys (camera), R^2 of the continuous actions (robot, driving) averaged over the
  dimensions the probe reads on validation episodes (an action that frames do not show, such
  as a small wrist rotation at 64 x 64, cannot measure a model). The ratio generated / real is
  the issue's figure; for key accuracy, whose floor is not 0 but what always answering the most
  common keys scores, ``above_chance`` = (generated - majority) / (real - majority) says how
  much of what real frames show the generated ones show (for R^2 the two are the same). The
  same figures over the
  steps after each horizon up to the next (h = 1, 2-4, 5-16, 17-64) tell a model that shows
  its actions and then drifts from one that never shows them.
* **Stability.** Long rollouts (1000 steps by default) under recorded actions: held-out episodes
  long enough give their own from their first frame (a policy that kept the car on the road keeps
  it there), else all held-out actions are joined end to end (:func:`.open_loop.long_inputs`).
  For each step's last frame the mean brightness, contrast (std) and sharpness (the mean
  absolute difference between horizontal neighbours plus that between vertical ones, grey
  levels). A world has not collapsed when the medians over the last 100 steps sit inside the
  1st-99th percentile range of the same statistics on real frames, widened to take in the real
  frames as the autoencoder gives them back (a generated frame can be no sharper than its
  decoder makes it). The verdict against the recorded frames alone is reported next to it.

:func:`write_report` writes the figures, plots and sample strips (generated under recorded)
as a markdown page.

Modules: :mod:`.metrics` (PSNR, SSIM, frame statistics), :mod:`.open_loop` (rollouts of recorded
actions from held-out starts), :mod:`.control` (the probe and scene motion per key),
:mod:`.probe_cache` (trained probes kept on disk: a rerun on the same data reads its probe
back), :mod:`.resume` (rollouts that keep their progress on disk: a stopped eval goes on where
it stopped), :mod:`.evaluate` (:func:`evaluate_world`) and :mod:`.report`. Their public names
are here too.
"""

from gym_worldmodel.evaluation.control import (
    CAMERA_KEYS,
    KEY_MOTION,
    MIN_REAL_SCORE,
    MOTION_GAIN,
    MOTION_UNITS,
    PROBE_DIMS,
    PROBE_VERSION,
    PROBE_VISIBLE_R2,
    PROBE_WINDOW,
    InverseDynamicsProbe,
    Probe,
    control_by_horizon,
    control_ratio,
    episode_windows,
    probe_targets,
    probe_windows,
    ratio_text,
    scene_motion_by_key,
    train_probe,
    window_centres,
)
from gym_worldmodel.evaluation.evaluate import (
    SCENE_MOTION_STEPS,
    EvalConfig,
    WorldResult,
    evaluate_world,
)
from gym_worldmodel.evaluation.metrics import (
    STATS,
    frame_motion,
    frame_stats,
    gain_interval,
    paired_interval,
    pooled_psnr,
    psnr,
    ssim,
)
from gym_worldmodel.evaluation.open_loop import (
    LongInputs,
    OpenLoopWindows,
    autoencode,
    long_inputs,
    open_loop_windows,
    rollout,
    window_starts,
    with_sampler,
)
from gym_worldmodel.evaluation.probe_cache import cached_probe, default_probe_cache
from gym_worldmodel.evaluation.report import steps_label, write_report

__all__ = [
    "CAMERA_KEYS",
    "KEY_MOTION",
    "MIN_REAL_SCORE",
    "MOTION_GAIN",
    "MOTION_UNITS",
    "PROBE_DIMS",
    "PROBE_VERSION",
    "PROBE_VISIBLE_R2",
    "PROBE_WINDOW",
    "SCENE_MOTION_STEPS",
    "STATS",
    "EvalConfig",
    "InverseDynamicsProbe",
    "LongInputs",
    "OpenLoopWindows",
    "Probe",
    "WorldResult",
    "autoencode",
    "cached_probe",
    "control_by_horizon",
    "control_ratio",
    "default_probe_cache",
    "episode_windows",
    "evaluate_world",
    "frame_motion",
    "frame_stats",
    "gain_interval",
    "paired_interval",
    "long_inputs",
    "open_loop_windows",
    "pooled_psnr",
    "probe_targets",
    "probe_windows",
    "psnr",
    "ratio_text",
    "rollout",
    "scene_motion_by_key",
    "ssim",
    "steps_label",
    "train_probe",
    "window_centres",
    "window_starts",
    "with_sampler",
    "write_report",
]
