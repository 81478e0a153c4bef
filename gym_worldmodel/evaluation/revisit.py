"""Revisit benchmark: does the world look the same when you come back?

Held-out episodes of a world with a pose that leave a place and return to it (MiniWorld's
``revisit`` policy walks out, then undoes every move in reverse, passing back through the poses
it had on the way out). The model runs each episode open loop from its first frame under the
recorded actions and poses, twice in one batch with the same noise: once with spatial memory,
once without. A frame is a *revisit* when its recorded pose matches (within ``tol_m`` and
``tol_deg``) the pose of a frame at least ``min_gap`` frames earlier; PSNR and SSIM of the
generated revisit frames against the recorded ones are the figures, memory on next to memory
off, plus how often memory retrieved something on those frames. PSNR here is the mean of the
revisit frames' per-frame PSNR in each episode, then over episodes (as WorldPlay reports its
revisits), not the PSNR of the pooled error that ``eval``'s open-loop tables give: a mean of
decibels is never lower than the pooled figure (the logarithm is concave), so the two are not
compared with each other; memory on and off are measured alike.

The memory-on rollout's PSNR where it first showed each revisited place is reported too: those
are the frames memory stores and gives back, so memory on can hardly score more on return. The
same figures by how early in the episode the place was first shown (``by_first_view``) say how
the gain depends on what memory holds: a place shown in the first steps is remembered as the
model drew it before it drifted.

With ``oracle``, a third run stores the encoded recorded frames in memory instead of the
generated ones (everything else alike): a diagnostic that separates how well the model uses
what it retrieves from how good its own memories are.

Run it with ``gym-worldmodel eval --revisit --model ... --data <revisit dataset>``.
"""

from __future__ import annotations

import json
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from gym_worldmodel.envs.engine import WorldEngine
from gym_worldmodel.envs.pose import wrap_deg
from gym_worldmodel.evaluation import paired_interval, psnr, ssim
from gym_worldmodel.evaluation.open_loop import step_actions
from gym_worldmodel.evaluation.report import image_dir
from gym_worldmodel.evaluation.resume import RolloutProgress
from gym_worldmodel.files import atomic_write, atomic_write_all, remove_stale_temps
from gym_worldmodel.models import WorldModel
from gym_worldmodel.plotting import pyplot
from gym_worldmodel.sources.episodes import (
    DatasetError,
    Episode,
    check_datasets,
    load_episodes,
)


@dataclass
class RevisitResult:
    """Figures of :func:`evaluate_revisit`.

    The PSNR and SSIM are means over episodes of per-episode means; ``revisit_frames`` and
    ``hit_rate`` count every episode's revisit frames together.
    """

    world: str
    episodes: int
    revisit_frames: int
    min_gap: int
    psnr_on: float
    psnr_off: float
    ssim_on: float
    ssim_off: float
    hit_rate: float
    psnr_on_episodes: list[float]
    psnr_off_episodes: list[float]
    #: per generated frame, the mean over the episodes that run to it (the curves' and the
    #: share of revisit frames; episodes of other lengths end at other frames)
    curve_on: list[float]
    curve_off: list[float]
    revisit_mask: list[float]
    psnr_first_visit: float | None = None
    psnr_oracle: float | None = None
    ssim_oracle: float | None = None
    curve_oracle: list[float] | None = None
    #: the revisit frames grouped by the frame their place was first shown at
    #: (:data:`FIRST_VIEW_BINS`; revisits of the start frame, the sink, left out):
    #: ``first`` ``[from, to)``, ``frames``, mean per-frame PSNR
    #: ``on``, ``off``, ``oracle`` (None without it) and ``held`` (memory on at the first view)
    by_first_view: list[dict] | None = None

    @property
    def gain_db(self) -> float:
        """PSNR with memory minus without, on revisit frames."""
        return self.psnr_on - self.psnr_off

    @property
    def gain_interval(self) -> tuple[float, float] | None:
        """90% bootstrap interval of :attr:`gain_db` over the episodes (``paired_interval``).

        None from one episode, which has no spread to resample.
        """
        if len(self.psnr_on_episodes) < 2:
            return None
        return paired_interval(self.psnr_on_episodes, self.psnr_off_episodes)

    @property
    def episodes_helped(self) -> int:
        """Episodes whose revisit frames scored higher with memory than without."""
        pairs = zip(self.psnr_on_episodes, self.psnr_off_episodes, strict=True)
        return sum(on > off for on, off in pairs)


#: Where :func:`evaluate_revisit` splits the revisit frames by the frame their place was first
#: shown at (the last bin runs to the end of the episode).
FIRST_VIEW_BINS = (1, 16, 31, 61, 121, 241)


def _by_first_view(
    src: np.ndarray, psnrs: dict[str, np.ndarray | None], held: np.ndarray
) -> list[dict]:
    """Mean per-frame PSNRs of the revisit frames whose place was first shown in each bin."""
    out = []
    for lo, hi in zip(FIRST_VIEW_BINS, (*FIRST_VIEW_BINS[1:], None), strict=True):
        sel = (src >= lo) & (src < hi if hi is not None else True)
        if sel.any():
            row = {"first": [lo, hi], "frames": int(sel.sum()), "held": float(held[sel].mean())}
            row |= {k: None if v is None else float(v[sel].mean()) for k, v in psnrs.items()}
            out.append(row)
    return out


def first_view_span(row: dict) -> str:
    """``"1-15"`` (or ``"241+"``): the frames of a :attr:`RevisitResult.by_first_view` row."""
    lo, hi = row["first"]
    return f"{lo}-{hi - 1}" if hi is not None else f"{lo}+"


def _same_pose_earlier(poses: np.ndarray, min_gap: int, tol_m: float, tol_deg: float) -> np.ndarray:
    """``(T, T)``: frame ``i`` holds the pose frame ``j`` held ``min_gap`` or more frames before."""
    near = (np.abs(poses[:, None, :2] - poses[None, :, :2]) <= tol_m).all(-1)
    turn = np.abs(wrap_deg(poses[:, None, 2:] - poses[None, :, 2:]))
    t = np.arange(len(poses))
    return near & (turn <= tol_deg).all(-1) & (t[:, None] - t[None, :] >= min_gap)


def revisit_frames(
    poses: np.ndarray, min_gap: int, tol_m: float = 0.05, tol_deg: float = 1.0
) -> np.ndarray:
    """Frames whose pose ``(T, 4)`` repeats one held at least ``min_gap`` frames earlier."""
    return np.flatnonzero(_same_pose_earlier(poses, min_gap, tol_m, tol_deg).any(1))


def first_visits(
    poses: np.ndarray, min_gap: int, tol_m: float = 0.05, tol_deg: float = 1.0
) -> tuple[np.ndarray, np.ndarray]:
    """The revisit frames (as :func:`revisit_frames`) and, for each, the first frame at its pose."""
    same = _same_pose_earlier(poses, min_gap, tol_m, tol_deg)
    frames = np.flatnonzero(same.any(1))
    return frames, same[frames].argmax(1)


def evaluate_revisit(
    model: WorldModel,
    data: Path,
    min_gap: int = 250,
    seed: int = 0,
    max_episodes: int | None = None,
    progress: bool = True,
    oracle: bool = False,
    resume: Path | None = None,
) -> RevisitResult:
    """Memory on against memory off on the revisit frames of ``data``'s held-out episodes.

    ``min_gap`` (frames): how long before a revisit its pose was held. Each episode runs to its
    own last whole step: episodes of one length in one batch, a batch per length (row ``i`` of
    the held-out episodes samples with seed ``seed + i`` whatever its batch). Episodes too short
    to hold a revisit (under ``min_gap`` frames in whole steps) are left out, with a note on
    stderr. ``oracle``: also run memory on with the recorded frames remembered (see the module
    docstring). ``resume``: a folder where the rollouts keep their progress, so that a rerun
    goes on where a stopped one saved (:mod:`.evaluation.resume`); None keeps nothing.
    """
    card, episodes = _posed_heldout(model, data, max_episodes)
    f = model.config.dit.chunk_frames
    rows = _long_enough(episodes, f, min_gap, data)
    episodes = [episodes[i] for i in rows]
    steps = [len(ep.actions) // f for ep in episodes]
    truth = [ep.frames[1 : n * f + 1] for ep, n in zip(episodes, steps, strict=True)]
    on_rows, off_rows, hit, remembered = _rollouts_by_length(
        model, episodes, card, steps, [seed + i for i in rows], oracle, progress, resume
    )

    def per_frame(rows: list[np.ndarray]) -> list[np.ndarray]:  # PSNR of each episode
        return [psnr(g, t) for g, t in zip(rows, truth, strict=True)]

    p_on, p_off = per_frame(on_rows), per_frame(off_rows)
    p_oracle = None if remembered is None else per_frame(remembered)
    mask, (ep_i, now, then) = _revisits(episodes, [n * f for n in steps], min_gap)
    # the memory-on rollout where it first showed the revisited places, per episode
    first_psnr = [float(p_on[i][then[ep_i == i] - 1].mean()) for i in np.unique(ep_i)]
    used = [i for i in range(len(episodes)) if mask[i].any()]
    if not used:
        raise DatasetError(f"{data}: no held-out frame revisits a pose {min_gap}+ frames later")

    def mean(x: list[np.ndarray]) -> list[float]:
        return [float(x[i][mask[i]].mean()) for i in used]

    def mean_ssim(gen: list[np.ndarray]) -> list[float]:  # on the revisit frames only (memory)
        return [float(ssim(gen[i][mask[i]], truth[i][mask[i]]).mean()) for i in used]

    on, off = mean(p_on), mean(p_off)
    extra: dict[str, Any] = {}
    if len(ep_i):
        psnrs = {"on": p_on, "off": p_off, "oracle": p_oracle}
        at = {k: None if v is None else _at(v, ep_i, now - 1) for k, v in psnrs.items()}
        extra["by_first_view"] = _by_first_view(then, at, _at(p_on, ep_i, then - 1))
    if remembered is not None:
        assert p_oracle is not None  # (measured on remembered)
        extra |= {
            "psnr_oracle": float(np.mean(mean(p_oracle))),
            "ssim_oracle": float(np.mean(mean_ssim(remembered))),
            "curve_oracle": _mean_curve(p_oracle),
        }
    return RevisitResult(
        world=card["world"],
        episodes=len(used),
        revisit_frames=int(sum(m.sum() for m in mask)),
        min_gap=min_gap,
        psnr_on=float(np.mean(on)),
        psnr_off=float(np.mean(off)),
        ssim_on=float(np.mean(mean_ssim(on_rows))),
        ssim_off=float(np.mean(mean_ssim(off_rows))),
        hit_rate=float(np.concatenate([h[m] for h, m in zip(hit, mask, strict=True)]).mean()),
        psnr_on_episodes=on,
        psnr_off_episodes=off,
        curve_on=_mean_curve(p_on),
        curve_off=_mean_curve(p_off),
        revisit_mask=_mean_curve(mask),
        psnr_first_visit=float(np.mean(first_psnr)) if first_psnr else None,
        **extra,
    )


def _posed_heldout(
    model: WorldModel, data: Path, max_episodes: int | None
) -> tuple[dict, list[Episode]]:
    """``data``'s card and its first ``max_episodes`` held-out episodes, each with poses.

    A dataset the model cannot take, or without such episodes, is a :class:`DatasetError`.
    """
    (card,) = check_datasets(model.config, [data])
    model.config.check_trained(card["modality"], card["world"])
    episodes = load_episodes(Path(data), "heldout")[:max_episodes]
    if not episodes:
        raise DatasetError(f"{data}: no held-out episodes to measure (max_episodes={max_episodes})")
    if card["modality"] == "robot":
        raise DatasetError(f"{data}: the revisit benchmark needs episodes with poses")
    for i, ep in enumerate(episodes):
        if ep.poses is None:
            raise DatasetError(
                f"{data}: the revisit benchmark needs episodes with poses; held-out episode {i} "
                f"(seed {ep.seed}) has none"
            )
    return card, episodes


def _long_enough(episodes: list, f: int, min_gap: int, data: Path) -> list[int]:
    """The episodes long enough to hold a revisit: a step of ``f`` frames and ``min_gap`` more.

    The others are left out with a note on stderr; none left is a :class:`DatasetError`.
    """
    frames = [len(ep.actions) // f * f for ep in episodes]  # the frames each one's steps make
    need = max(min_gap, 1)
    rows = [i for i, n in enumerate(frames) if n >= need]
    if not rows:
        raise DatasetError(
            f"{data}: no held-out frame revisits a pose {min_gap}+ frames later: every episode "
            f"is too short (the longest runs {max(frames)} frames in whole steps of {f})"
        )
    if len(rows) < len(episodes):
        print(
            f"note: {len(episodes) - len(rows)} of {len(episodes)} held-out episodes left out: "
            f"too short to revisit a pose {min_gap}+ frames later (under {need} frames in whole "
            f"steps of {f})",
            file=sys.stderr,
        )
    return rows


def _at(rows: list[np.ndarray], episode: np.ndarray, frame: np.ndarray) -> np.ndarray:
    """``rows[episode[k]][frame[k]]`` for each ``k``: values of episodes of any lengths."""
    return np.array([rows[i][t] for i, t in zip(episode, frame, strict=True)], np.float64)


def _mean_curve(rows: list[np.ndarray]) -> list[float]:
    """Per frame, the mean over the episodes that reach it (all of them where all are as long)."""
    if len({len(r) for r in rows}) == 1:
        return np.stack(rows).mean(0).tolist()
    padded = np.full((len(rows), max(len(r) for r in rows)), np.nan)
    for k, r in enumerate(rows):
        padded[k, : len(r)] = r
    return np.nanmean(padded, 0).tolist()


def _rollouts_by_length(
    model: WorldModel,
    episodes: list,
    card: dict,
    steps: list[int],
    seeds: list[int],
    oracle: bool,
    progress: bool,
    resume: Path | None,
) -> tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray], list[np.ndarray] | None]:
    """:func:`_rollouts` of the episodes of each length (``steps``) in a batch of their own.

    Returns, per episode, its memory-on and memory-off frames ``(steps * F, H, W, 3)``, whether
    memory retrieved a chunk at each frame, and (``oracle``) the rollout remembering the
    recorded frames (else None).
    """
    f, e = model.config.dit.chunk_frames, len(episodes)
    on: list[Any] = [None] * e
    off: list[Any] = [None] * e
    hit: list[Any] = [None] * e
    remembered: list[Any] = [None] * e
    for n in sorted(set(steps), reverse=True):
        group = [i for i in range(e) if steps[i] == n]
        eps = [episodes[i] for i in group]
        truth = np.stack([ep.frames[1 : n * f + 1] for ep in eps]) if oracle else None
        frames, hits, recalled = _rollouts(
            model, eps, card, n, truth, [seeds[i] for i in group], progress, resume
        )
        for k, i in enumerate(group):
            on[i], off[i], hit[i] = frames[k], frames[len(group) + k], hits[k]
            if recalled is not None:
                remembered[i] = recalled[k]
    return on, off, hit, remembered if oracle else None


def _rollouts(
    model: WorldModel,
    episodes: list,
    card: dict,
    steps: int,
    truth: np.ndarray | None,
    seeds: list[int],
    progress: bool,
    resume: Path | None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Each episode rolled out under its recorded actions, memory on and off, in one batch.

    Returns the frames ``(2e, steps * F, H, W, 3)`` (memory on: rows ``:e``; off: ``e:``),
    whether memory-on rows retrieved a chunk at each frame ``(e, steps * F)``, and, given the
    recorded frames ``truth``, the memory-on rollout that remembers those (else None). Episode
    ``i`` samples with ``seeds[i]``, memory on and off alike. ``resume``: as
    :func:`evaluate_revisit`'s.
    """
    f, e = model.config.dit.chunk_frames, len(episodes)
    engine = WorldEngine(model, 2 * e, card["modality"], model.device, memory=True)
    engine.set_memory_enabled(False, range(e, 2 * e))  # rows e.. : the same episodes, no memory
    engine.seed(list(seeds) * 2, env_idx=range(2 * e))
    first = np.stack([ep.frames[0] for ep in episodes] * 2)
    poses = np.stack([ep.poses[: steps * f + 1] for ep in episodes] * 2)  # (2e, T + 1, 4)
    actions = np.stack([ep.actions[: steps * f] for ep in episodes] * 2)
    start = torch.from_numpy(np.repeat(first[:, None], f, 1))
    engine.start(range(2 * e), start, poses[:, 0])
    if truth is not None:  # rows like the memory-on ones, remembering the recorded frames
        recorded = WorldEngine(model, e, card["modality"], model.device, memory=True)
        recorded.seed(list(seeds), env_idx=range(e))
        recorded.start(range(e), start[:e], poses[:e, 0])
    # (a world whose anchors move with the car reads the pose its actions integrate to, as the
    # env and open-loop evaluation give it)
    chunks = step_actions(model, card["modality"], actions, poses[:, 0])
    engines = {"engine": engine} if truth is None else {"engine": engine, "recorded": recorded}
    inputs = {"first": first, "actions": actions, "poses": poses, "truth": truth, "seeds": seeds}
    with RolloutProgress(resume, "revisit", model, engines, inputs, steps) as saved:
        for k in tqdm(
            range(saved.step, steps),
            desc=f"revisit {card['world']}",
            disable=not progress,
            initial=saved.step,
            total=steps,
        ):
            chunk, out = chunks[k], {}
            out["frames"] = engine.step(chunk, poses=poses[:, (k + 1) * f])[1].cpu().numpy()
            assert engine.recall is not None  # (a step with memory retrieves)
            out["hits"] = np.repeat(engine.recall.hits[:e, None] > 0, f, 1)
            if truth is not None:
                real = torch.from_numpy(truth[:, k * f : (k + 1) * f])
                with torch.no_grad():
                    latents = model.vae.encode(real.to(recorded.device)).float()
                step = recorded.step(chunk[:e], poses=poses[:e, (k + 1) * f], remember=latents)
                out["oracle"] = step[1].cpu().numpy()
            saved.record(**out)
    remembered = saved.outputs("oracle") if truth is not None else None
    return saved.outputs("frames"), saved.outputs("hits"), remembered


def _revisits(
    episodes: list, frames: list[int], min_gap: int
) -> tuple[list[np.ndarray], tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Which generated frames (1 .. ``frames[i]``) revisit a pose, and where it was first shown.

    Returns each episode's mask ``(frames[i],)`` over its generated frames, and for each revisit
    whose place was first shown after the start frame (the start frame is the sink, not
    generated) three aligned int arrays: its episode, its frame and the frame that first showed
    the place.
    """
    mask = [np.zeros(n, bool) for n in frames]
    ep_i, now, then = [], [], []
    for i, (ep, n) in enumerate(zip(episodes, frames, strict=True)):
        idx, src = first_visits(ep.poses[: n + 1], min_gap)
        mask[i][idx[idx >= 1] - 1] = True
        keep = (idx >= 1) & (src >= 1)
        ep_i.append(np.full(int(keep.sum()), i))
        now.append(idx[keep])
        then.append(src[keep])
    ep_i_all, now_all, then_all = (np.concatenate(c).astype(np.int64) for c in (ep_i, now, then))
    return mask, (ep_i_all, now_all, then_all)


#: What two revisit runs must share for their episodes to be paired (``read_revisit``).
_SAME_EPISODES = ("world", "episodes", "revisit_frames", "min_gap", "revisit_mask")


def read_revisit(path: Path) -> dict[str, Any]:
    """An earlier run's ``revisit.json`` (:func:`write_revisit_report`), checked for pairing.

    Raises:
        ValueError: The file is not JSON or lacks the figures a pairing reads.
    """
    try:
        raw = json.loads(Path(path).read_text())
    except ValueError as err:
        raise ValueError(f"{path} is not a revisit run's revisit.json ({err})") from None
    missing = [
        k
        for k in (*_SAME_EPISODES, "psnr_on_episodes")
        if not isinstance(raw, dict) or k not in raw
    ]
    if missing:
        raise ValueError(f"{path} is not a revisit run's revisit.json: it lacks {missing}")
    return raw


def against(result: RevisitResult, other: dict[str, Any]) -> dict[str, Any]:
    """Memory on of ``result`` against memory on of another run (``read_revisit``), by episode.

    Two worlds, or two settings of one, on the same revisit episodes: ``better`` of
    ``episodes``, the mean and median difference (dB) and its 90% interval over the episodes
    (``paired_interval``: a mean difference inside an interval around 0 says little about the
    next episode).

    Raises:
        ValueError: The runs did not score the same revisit frames (another dataset,
            ``--min-gap`` or ``--max-episodes``), naming what differs.
    """
    ours = asdict(result)
    differ = [k for k in _SAME_EPISODES if ours[k] != other[k]]
    if differ:
        raise ValueError(
            "the two revisit runs scored different revisit frames (they differ in "
            f"{', '.join(differ)}): run both on the same --data, --min-gap and --max-episodes"
        )
    ours_on, theirs_on = result.psnr_on_episodes, other["psnr_on_episodes"]
    diff = np.subtract(ours_on, theirs_on)
    spread = None if len(diff) < 2 else paired_interval(ours_on, theirs_on)
    return {
        "episodes": len(diff),
        "better": int((diff > 0).sum()),
        "mean": float(diff.mean()),
        "median": float(np.median(diff)),
        "interval": spread,
    }


def write_revisit_report(result: RevisitResult, out_dir: Path, report: Path, command: str) -> None:
    """Markdown section, a PSNR-over-time plot and the raw JSON.

    The plot first, then the page and the JSON together (as ``evaluation.write_report`` does).
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    report.parent.mkdir(parents=True, exist_ok=True)
    for folder in {out_dir, report.parent}:  # a report stopped while it was written
        remove_stale_temps(folder, names=[report.name, "revisit.json", "revisit.png"])
    interval = result.gain_interval
    extra = {"gain_db": result.gain_db, "gain_interval": interval and list(interval)}
    raw = json.dumps({**asdict(result), **extra}, indent=1) + "\n"
    _plot_revisit(result, out_dir / "revisit.png")
    body = "\n".join(_revisit_lines(result, command, image_dir(out_dir, report)))
    atomic_write_all(
        {
            report: lambda fh: fh.write(body.encode()),
            out_dir / "revisit.json": lambda fh: fh.write(raw.encode()),
        }
    )


def _plot_revisit(result: RevisitResult, path: Path) -> None:
    """PSNR over the episode, memory on and off (and of recorded frames), revisits shaded."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(8, 3.2))
    t = np.arange(1, len(result.curve_on) + 1)
    ax.fill_between(
        t,
        0,
        1,
        where=np.asarray(result.revisit_mask) > 0,
        color="0.9",
        transform=ax.get_xaxis_transform(),
        label=f"revisit frames (gap >= {result.min_gap})",
    )
    ax.plot(t, result.curve_on, lw=0.9, label="memory on")
    ax.plot(t, result.curve_off, lw=0.9, label="memory off")
    if result.curve_oracle is not None:
        ax.plot(t, result.curve_oracle, lw=0.9, ls="--", label="memory of recorded frames")
    ax.set_xlabel("frame")
    ax.set_ylabel("PSNR (dB), mean over episodes")
    ax.legend(fontsize=8)
    fig.tight_layout()
    atomic_write(path, lambda fh: fig.savefig(fh, format="png", dpi=90))
    plt.close(fig)


def _revisit_lines(r: RevisitResult, command: str, images: str) -> list[str]:
    """The report's markdown lines; ``images``: the plot's folder as the page links it."""
    spread, interval = "", r.gain_interval
    if interval is not None:
        lo, hi = interval
        spread = (
            f" The PSNR difference, with the episodes resampled (a 90% bootstrap interval): "
            f"{lo:+.2f} to {hi:+.2f} dB: how much the figure hangs on which episodes were held out."
        )
    lines = [
        "# Spatial memory: the revisit benchmark",
        "",
        "Generated by `gym_worldmodel.evaluation.revisit` on held-out episodes that leave a "
        "place and come back (see the module docstring). Command:",
        "",
        f"    {command}",
        "",
        f"{r.episodes} episodes, {r.revisit_frames} revisit frames (a recorded pose held again "
        f"at least {r.min_gap} frames later); memory retrieved a chunk on "
        f"{100 * r.hit_rate:.0f}% of them.",
        "",
        "| on revisit frames | memory on | memory off | difference |",
        "|---|---|---|---|",
        "| PSNR (dB; mean of per-frame PSNR, not eval's pooled figure) | "
        f"{r.psnr_on:.2f} | {r.psnr_off:.2f} | **{r.gain_db:+.2f}** |",
        f"| SSIM | {r.ssim_on:.3f} | {r.ssim_off:.3f} | {r.ssim_on - r.ssim_off:+.3f} |",
        "",
        f"Episodes where memory on scored higher: {r.episodes_helped} of {r.episodes}.{spread}",
        "",
    ]
    if r.psnr_first_visit is not None:
        lines += [
            "What memory holds: the memory-on rollout scored "
            f"{r.psnr_first_visit:.2f} dB where it first showed the revisited places (the frames "
            "it stored, at the recorded pose first held there; the start frame, which is the "
            "sink, left out). Retrieval brings back those frames, drift included, so this is "
            "about as high as memory on can score on return.",
            "",
        ]
    lines += _by_first_view_table(r)
    if r.psnr_oracle is not None:
        lines += [
            "Diagnostic (`--oracle-memory`): the same memory-on run, but storing the recorded "
            "frames in memory instead of the generated ones, so what is retrieved is right: "
            f"PSNR {r.psnr_oracle:.2f} dB ({r.psnr_oracle - r.psnr_off:+.2f} against memory off), "
            f"SSIM {r.ssim_oracle:.3f}. It shows what this model makes of memories that are "
            "right; the gap between it and memory on is what the model's drift costs its own "
            "memories.",
            "",
        ]
    return [*lines, f"![PSNR over the episode]({images}/revisit.png)", ""]


def _by_first_view_table(r: RevisitResult) -> list[str]:
    """Report lines: the revisit figures by how early their place was first shown (if measured)."""
    if not r.by_first_view:
        return []
    oracle = r.psnr_oracle is not None
    lines = [
        "By how early the revisited place was first shown (frame 0 is the start frame, which "
        "the model always attends to as its sink: revisits of it are left out here; the "
        "revisit frames of all episodes pooled, mean per-frame PSNR in dB):",
        "",
        "| first shown at frame | revisit frames | memory on | memory off | difference | "
        "memory on where first shown |" + (" memory of recorded frames |" if oracle else ""),
        "|---|---|---|---|---|---|" + ("---|" if oracle else ""),
    ]
    for b in r.by_first_view:
        lines.append(
            f"| {first_view_span(b)} | {b['frames']} | {b['on']:.2f} | {b['off']:.2f} | "
            f"{b['on'] - b['off']:+.2f} | {b['held']:.2f} |"
            + (f" {b['oracle']:.2f} |" if b["oracle"] is not None else "")
        )
    return [*lines, ""]
