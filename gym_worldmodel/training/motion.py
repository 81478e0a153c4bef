"""How far each action moves the picture: the prior behind ``DiTConfig.anchor_motion``.

A camera that turns or strafes moves the whole scene across the frame by a few pixels per
frame; one that walks forward magnifies it about the centre. :func:`image_motion` finds that
global motion between two frames (the zoom and whole-pixel shift with the least squared
difference), and :func:`fit_anchor_motion` fits a linear map from a world's action vector to
it, by least squares over sampled frame pairs of the recorded episodes, in latent pixels.
Fine-tuning starts from this map (``WorldModel.with_anchor_motion``) and refines it with the
rest of the model.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from gym_worldmodel.models.dit import move_frames
from gym_worldmodel.sources.episodes import Episode

#: Log zooms tried per frame pair (about -10% to +10%, in steps of 1%).
ZOOMS = np.linspace(-0.1, 0.1, 21)


def overlap(after, before, dx: int, dy: int):
    """The parts of ``after`` and ``before`` that coincide when ``before`` moves by (dx, dy).

    ``(dx, dy)`` is a whole-pixel shift of ``before``'s content (right/down +) over the last two
    axes (H, W); returns ``(after's part, before's part)``. Plain slicing, so it serves numpy
    arrays and tensors (with their gradient) alike.
    """
    h, w = after.shape[-2:]
    return (
        after[..., max(dy, 0) : h + min(dy, 0), max(dx, 0) : w + min(dx, 0)],
        before[..., max(-dy, 0) : h + min(-dy, 0), max(-dx, 0) : w + min(-dx, 0)],
    )


def image_motion(before: np.ndarray, after: np.ndarray, reach: int = 8) -> np.ndarray:
    """Motion (x, y, log zoom) of ``after`` against ``before``: ``(n, 3)``, right/down +.

    Searched jointly: each zoom of ``ZOOMS`` (about the centre), then every whole-pixel shift;
    the pair with the least mean squared difference over the overlap wins. The result is in
    :func:`~gym_worldmodel.models.dit.move_frames`' terms (shift, then zoom).

    Args:
        before: uint8 or float frames ``(n, H, W, 3)``.
        after: The frames that follow them, same shape.
        reach: Largest shift tried along each axis, in pixels.
    """
    a = np.asarray(before, np.float32).mean(-1)
    b = np.asarray(after, np.float32).mean(-1)
    h, w = a.shape[1:]
    if reach >= min(h, w) // 2:
        raise ValueError(f"reach {reach} must be under half the frame side ({min(h, w)})")
    best = np.full(len(a), np.inf)
    out = np.zeros((len(a), 3), np.float32)
    grey = torch.from_numpy(a)[:, None, None]  # (n, 1, 1, H, W)
    for z in ZOOMS:
        zoom = torch.tensor([0.0, 0.0, float(z)]).expand(len(a), 1, 3)
        grown = move_frames(grey, zoom)[:, 0, 0].numpy()
        for dy in range(-reach, reach + 1):
            for dx in range(-reach, reach + 1):
                moved, still = overlap(b, grown, dx, dy)
                err = ((moved - still) ** 2).mean((1, 2))
                better = err < best
                best[better] = err[better]
                # zoom then shift s == shift s * exp(-z) then zoom
                out[better] = dx * np.exp(-z), dy * np.exp(-z), z
    return out


def fit_anchor_motion(
    episodes: Sequence[Episode], latent_scale: float, pairs: int = 1000, seed: int = 0
) -> tuple[np.ndarray, float]:
    """Least-squares map from one frame's action to its image motion, in latent pixels.

    Args:
        episodes: Recorded episodes of one world (frames and the actions between them).
        latent_scale: Latent pixels per image pixel (``latent_size / image_size``).
        pairs: Successive frame pairs sampled.
        seed: Sampling seed.

    Returns:
        ``(A, 3)``: latent pixels (x, y) and log zoom per unit of each action dimension (no
        constant term: the zero action moves nothing), and the fraction of the motion's
        variance it explains (the zoom counted as the pixels it moves the frame's edge).
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
    motion = image_motion(before, after).astype(np.float64)
    rate, *_ = np.linalg.lstsq(actions, motion, rcond=None)
    edge = np.array([1.0, 1.0, before.shape[2] / 2])  # pixels a unit of each moves the edge
    residual = (((motion - actions @ rate) * edge) ** 2).sum()
    total = (((motion - motion.mean(0)) * edge) ** 2).sum()
    explained = float(1 - residual / total) if total > 0 else 0.0
    return (rate * [latent_scale, latent_scale, 1.0]).astype(np.float32), explained
