"""Image metrics of generated frames against recorded ones (uint8 ``(..., H, W, 3)``)."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def _check_frames(a: np.ndarray, b: np.ndarray, min_side: int = 1) -> None:
    """Raise a clear ``ValueError`` unless ``a`` and ``b`` are uint8 frames of one size.

    Float frames in [0, 1] would be scored on the 0-255 scale (a constant 0 against 0.5 came
    out at 54 dB), and frames of two sizes would fail in NumPy's broadcasting.
    """
    for name, x in (("a", a), ("b", b)):
        if not isinstance(x, np.ndarray) or x.dtype != np.uint8 or x.ndim < 3 or x.shape[-1] != 3:
            got = f"{x.dtype} {x.shape}" if isinstance(x, np.ndarray) else type(x).__name__
            raise ValueError(f"{name} must be uint8 frames (..., H, W, 3), got {got}")
    if a.shape[-3:] != b.shape[-3:]:  # leading axes may broadcast, as NumPy's would
        raise ValueError(
            f"frames of two shapes, {a.shape} and {b.shape}: score frames of one size "
            "(gym_worldmodel.envs.worlds.fit_frames resizes them)"
        )
    if min(a.shape[-3:-1]) < min_side:
        raise ValueError(f"frames of {a.shape[-3:-1]} pixels; this metric needs {min_side} a side")


def _frame_mse(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per-frame mean squared error of uint8 frames ``(..., H, W, 3)``."""
    _check_frames(a, b)
    return ((a.astype(np.float64) - b.astype(np.float64)) ** 2).mean(axis=(-3, -2, -1))


def _decibels(mse: np.ndarray | float) -> np.ndarray:
    """PSNR (dB) of a mean squared error on the uint8 scale (zero error clamped at 1e-10)."""
    return 10.0 * np.log10(255.0**2 / np.maximum(mse, 1e-10))


def psnr(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per-frame PSNR (dB) of uint8 frames ``(..., H, W, 3)``."""
    return _decibels(_frame_mse(a, b))


def pooled_psnr(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR (dB) of the mean squared error over every frame of uint8 ``a`` against ``b``.

    Open-loop tables use this, not the mean of per-frame PSNRs: a recorded frame that repeats the
    start exactly (the agent stood still) gives copying the last frame an unbounded per-frame
    PSNR, so that mean would hang on how a zero error is clamped (at 1e-10 each such frame
    counts 148 dB) rather than on the frames.
    """
    return float(_decibels(_frame_mse(a, b).mean()))  # frames are equal-sized: the pooled MSE


def gain_interval(
    frames: np.ndarray,
    baseline: np.ndarray,
    truth: np.ndarray,
    groups: np.ndarray,
    level: float = 0.9,
    draws: int = 2000,
    seed: int = 0,
) -> tuple[float, float]:
    """Bootstrap interval of the pooled-PSNR gain (dB) of ``frames`` over ``baseline``.

    ``frames``, ``baseline`` and ``truth`` are uint8 rollouts ``(R, T, H, W, 3)``; ``groups``
    ``(R,)`` says which held-out episode each rollout starts in. Episodes, not rollouts, are
    resampled with replacement: rollouts from one episode are not independent of each other.
    With few episodes the interval says how much the figure hangs on which were held out.
    """
    err, base = _frame_mse(frames, truth).mean(1), _frame_mse(baseline, truth).mean(1)
    members = [np.flatnonzero(groups == g) for g in np.unique(groups)]
    rng, gains = np.random.default_rng(seed), np.empty(draws)
    for i in range(draws):
        rows = np.concatenate([members[j] for j in rng.integers(len(members), size=len(members))])
        gains[i] = _decibels(err[rows].mean()) - _decibels(base[rows].mean())
    lo, hi = np.percentile(gains, [50 * (1 - level), 50 * (1 + level)])
    return float(lo), float(hi)


def paired_interval(
    a: np.ndarray | list[float],
    b: np.ndarray | list[float],
    level: float = 0.9,
    draws: int = 2000,
    seed: int = 0,
) -> tuple[float, float]:
    """Bootstrap interval of ``mean(a) - mean(b)`` over paired per-episode figures.

    ``a[i]`` and ``b[i]`` are one episode's figure under two settings (memory on and off, or
    two worlds on one episode); episodes are resampled with replacement, the pairs kept
    together. With 20 episodes whose differences spread by a dB or more, a mean difference of
    a few tenths can sit inside an interval around 0: it then says little about the next
    episode. Seeded, so one report gives one interval.
    """
    x, y = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if x.ndim != 1 or x.shape != y.shape or len(x) < 2:
        raise ValueError(
            f"expected two lists of per-episode figures of one length, 2 or more (one episode "
            f"has no spread to resample), got shapes {x.shape} and {y.shape}"
        )
    if not (np.isfinite(x).all() and np.isfinite(y).all()):
        raise ValueError("per-episode figures must be finite, got NaN or inf")
    if not 0.0 < level < 1.0 or draws < 1:
        raise ValueError(f"level must be in (0, 1) and draws >= 1, got {level} and {draws}")
    diff = x - y
    rng = np.random.default_rng(seed)
    means = diff[rng.integers(len(diff), size=(draws, len(diff)))].mean(1)
    lo, hi = np.percentile(means, [50 * (1 - level), 50 * (1 + level)])
    return float(lo), float(hi)


def ssim(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per-frame SSIM of uint8 frames ``(..., H, W, 3)``.

    Gaussian window 11, sigma 1.5, averaged over channels (Wang et al. 2004): frames of 11
    pixels a side or more.
    """
    _check_frames(a, b, min_side=11)
    shape = a.shape[:-3]
    x = torch.from_numpy(a.reshape(-1, *a.shape[-3:])).permute(0, 3, 1, 2).double() / 255.0
    y = torch.from_numpy(b.reshape(-1, *b.shape[-3:])).permute(0, 3, 1, 2).double() / 255.0
    g = torch.exp(-((torch.arange(11, dtype=torch.float64) - 5) ** 2) / (2 * 1.5**2))
    g = g / g.sum()
    across, down = g.view(1, 1, 1, 11).expand(3, 1, 1, 11), g.view(1, 1, 11, 1).expand(3, 1, 11, 1)

    def blur(z: torch.Tensor) -> torch.Tensor:  # the 11 x 11 window as two passes of 11
        return F.conv2d(F.conv2d(z, across, groups=3), down, groups=3)

    mx, my = blur(x), blur(y)
    sxx, syy, sxy = blur(x * x) - mx**2, blur(y * y) - my**2, blur(x * y) - mx * my
    c1, c2 = 0.01**2, 0.03**2
    s = ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx**2 + my**2 + c1) * (sxx + syy + c2))
    return s.mean(dim=(1, 2, 3)).numpy().reshape(shape)


STATS = ("brightness", "contrast", "sharpness")  # the columns of frame_stats


def frame_stats(frames: np.ndarray) -> np.ndarray:
    """``(..., H, W, 3)`` uint8 -> ``(..., 3)``: brightness, contrast, sharpness (0-255 units).

    On the grey image: brightness its mean, contrast its std, sharpness the mean absolute
    difference between horizontal neighbours plus that between vertical neighbours.
    """
    x = frames.astype(np.float32).mean(-1)
    grad = np.abs(np.diff(x, axis=-1)).mean((-2, -1)) + np.abs(np.diff(x, axis=-2)).mean((-2, -1))
    return np.stack([x.mean((-2, -1)), x.std((-2, -1)), grad], -1)


def frame_motion(frames: np.ndarray) -> float:
    """Mean absolute change between successive frames ``(R, T, H, W, 3)``, in grey levels.

    A model unsure where the view goes can lower its error by moving too little; next to the
    recorded frames' figure this says how much of the world's motion a rollout shows.
    """
    steps = [np.abs(np.diff(row.astype(np.int16), axis=0)).mean() for row in frames]
    return float(np.mean(steps))
