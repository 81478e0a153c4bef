"""How far each action moves the picture: the prior behind ``DiTConfig.anchor_motion``.

A camera that turns or strafes moves the whole scene across the frame by a few pixels per
frame. :func:`image_shift` finds that global shift between two frames (the integer shift with
the least squared difference over the overlap), and :func:`fit_anchor_motion` fits a linear map
from a world's action vector to it, by least squares over sampled frame pairs of the recorded
episodes, in latent pixels. Fine-tuning starts from this map (``WorldModel.with_anchor_motion``)
and refines it with the rest of the model.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from gym_worldmodel.sources.episodes import Episode


def image_shift(before: np.ndarray, after: np.ndarray, reach: int = 10) -> np.ndarray:
    """Integer (x, y) pixel shifts of ``after`` against ``before``: ``(n, 2)``, right/down +.

    Args:
        before: uint8 or float frames ``(n, H, W, 3)``.
        after: The frames that follow them, same shape.
        reach: Largest shift tried along each axis.
    """
    a = np.asarray(before, np.float32).mean(-1)
    b = np.asarray(after, np.float32).mean(-1)
    h, w = a.shape[1:]
    if reach >= min(h, w) // 2:
        raise ValueError(f"reach {reach} must be under half the frame side ({min(h, w)})")
    best = np.full(len(a), np.inf)
    out = np.zeros((len(a), 2), np.float32)
    for dy in range(-reach, reach + 1):
        for dx in range(-reach, reach + 1):
            moved = b[:, max(dy, 0) : h + min(dy, 0), max(dx, 0) : w + min(dx, 0)]
            still = a[:, max(-dy, 0) : h + min(-dy, 0), max(-dx, 0) : w + min(-dx, 0)]
            err = ((moved - still) ** 2).mean((1, 2))
            better = err < best
            best[better] = err[better]
            out[better] = dx, dy
    return out


def fit_anchor_motion(
    episodes: Sequence[Episode], latent_scale: float, pairs: int = 2000, seed: int = 0
) -> tuple[np.ndarray, float]:
    """Least-squares map from one frame's action to its image shift, in latent pixels.

    Args:
        episodes: Recorded episodes of one world (frames and the actions between them).
        latent_scale: Latent pixels per image pixel (``latent_size / image_size``).
        pairs: Successive frame pairs sampled.
        seed: Sampling seed.

    Returns:
        ``(A, 2)`` latent pixels (x, y) per unit of each action dimension (no constant term:
        the zero action moves nothing), and the fraction of the shifts' variance it explains.
    """
    eps = [ep for ep in episodes if len(ep.actions)]
    if not eps:
        raise ValueError("fit_anchor_motion needs episodes with at least one action")
    rng = np.random.default_rng(seed)
    rows = rng.integers(len(eps), size=pairs)
    picks = [(e, int(rng.integers(len(eps[e].actions)))) for e in rows]
    before = np.stack([eps[e].frames[t] for e, t in picks])
    after = np.stack([eps[e].frames[t + 1] for e, t in picks])
    actions = np.stack([eps[e].actions[t] for e, t in picks]).astype(np.float64)
    shift = image_shift(before, after).astype(np.float64)
    rate, *_ = np.linalg.lstsq(actions, shift, rcond=None)
    residual = ((shift - actions @ rate) ** 2).sum()
    total = ((shift - shift.mean(0)) ** 2).sum()
    explained = float(1 - residual / total) if total > 0 else 0.0
    return (rate * latent_scale).astype(np.float32), explained
