"""MPPI over imagined futures: change lanes on the highway with continuous controls.

    python agents/mppi_driving.py --lane 4 --steps 12

Model-predictive path integral control in the driving world, whose actions are continuous
(steering and acceleration, each in [-1, 1]). Each real step loads the env's state into
``--samples`` forked rows of one batched vector env, perturbs the nominal control sequence with
Gaussian noise, rolls ``--horizon`` imagined steps per sample under the reward hooks
(``imagine``), weights every sample by ``exp(return / --temperature)``, moves the nominal
sequence to the weighted mean, executes its first control and shifts the sequence by one step.

The task is the ``LaneCentre`` reward hook: minus the car's lateral distance in metres to the
centre of the lane at ``y = --lane`` and minus its heading off the road's direction (in radians,
times ``--heading-weight``), so the car moves over and straightens out; ``ActionCost`` adds a
little effort. The car starts at 25 m/s (5 m a step);
y is to the left, and highway-env's lanes are 4 m apart. This script is meant to be read and
copied, not imported.
"""

import argparse
import time
from pathlib import Path

import numpy as np

from gym_worldmodel.cli import (
    denoiser_passes,
    finite_float,
    non_negative_float,
    non_negative_int,
    positive_float,
    positive_int,
)
from gym_worldmodel.cli.argtypes import require
from gym_worldmodel.envs import ActionCost, LaneCentre, WorldModelVectorEnv, imagine
from gym_worldmodel.plotting import pyplot


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="checkpoint dir, repo id or random-tiny")
    parser.add_argument(
        "--lane", type=finite_float, default=4.0, help="lane centre y, metres (left +)"
    )
    parser.add_argument(
        "--heading-weight", type=non_negative_float, default=2.0, help="metres per radian"
    )
    parser.add_argument("--steps", type=positive_int, default=12, help="real steps")
    parser.add_argument("--horizon", type=positive_int, default=5)
    parser.add_argument("--samples", type=positive_int, default=32)
    parser.add_argument(
        "--noise",
        type=positive_float,
        nargs=2,
        default=[0.1, 0.2],
        help="control noise std (steering, acceleration): at 25 m/s a steering of 0.1 (3 deg) "
        "turns the car 3 deg a step",
    )
    parser.add_argument("--temperature", type=positive_float, default=1.0, help="in return units")
    parser.add_argument("--effort", type=non_negative_float, default=0.5, help="ActionCost weight")
    parser.add_argument("--seed", type=non_negative_int, default=0)
    parser.add_argument(
        "--nfe",
        type=denoiser_passes,
        help="denoiser passes per step (default: the world's own, 2); this reward reads the pose, "
        "not the frames, so 1 plans the same moves in less time",
    )
    parser.add_argument(
        "--plot",
        type=Path,
        default=None,
        help="draw every step's imagined trajectories and the path driven into this PNG",
    )
    args = parser.parse_args()
    if args.plot is not None:
        require("matplotlib", "--plot", "train")
        if args.plot.suffix.lower() != ".png":
            parser.error(f"--plot writes a PNG: give a name ending in .png, got {args.plot}")
    if args.samples < 2 or args.horizon < 1 or min(args.noise) <= 0 or args.temperature <= 0:
        parser.error("need --samples >= 2, --horizon >= 1, --noise > 0, --temperature > 0")

    reward = [LaneCentre(args.lane, args.heading_weight), ActionCost(args.effort)]
    env = WorldModelVectorEnv(
        1, world="driving", model=args.model, reward_fn=reward, memory=False, nfe=args.nfe
    )
    _, info = env.reset(seed=args.seed)
    futures = env.fork(0, args.samples)
    rng = np.random.default_rng(args.seed)
    nominal = np.zeros((args.horizon, 2), np.float32)  # (steering, acceleration) per step
    drawn: list[
        tuple[np.ndarray, np.ndarray, np.ndarray]
    ] = []  # each step's (start, paths, weights)
    start = time.perf_counter()
    for step in range(args.steps):
        noise = rng.normal(0.0, args.noise, (args.samples, args.horizon, 2)).astype(np.float32)
        noise[0] = 0.0  # one sample keeps the nominal plan
        plans = np.clip(nominal[None] + noise, -1.0, 1.0)
        got = imagine(futures, plans, env.get_state(0), infos=args.plot is not None)
        returns = got.returns
        weights = np.exp((returns - returns.max()) / args.temperature)
        weights /= weights.sum()
        if got.infos is not None:  # the samples' (x, y) after each imagined step
            drawn.append((info["pose"][0, :2], got.infos["pose"][..., :2], weights))
        nominal = np.einsum("s,shc->hc", weights, plans).astype(np.float32)
        _, r, *_, info = env.step(nominal[:1])
        x, y, heading, speed = info["pose"][0]
        print(
            f"step {step}: steering {nominal[0, 0]:+.2f} acceleration {nominal[0, 1]:+.2f}  "
            f"pose x {x:.1f} m y {y:.2f} m heading {heading:+.1f} deg {speed:.1f} m/s  "
            f"off the lane {abs(y - args.lane):.2f} m  "
            f"(effective samples {1 / np.square(weights).sum():.1f})"
        )
        nominal = np.concatenate([nominal[1:], nominal[-1:]])  # shift: the plan's next step
    print(
        f"{args.steps} steps, {args.steps * args.horizon} imagined batched steps of "
        f"{args.samples} futures in {time.perf_counter() - start:.1f} s "
        f"(denoiser passes a step: {futures.config.sampler.nfe})"
    )
    if args.plot is not None:
        path = np.array([begin for begin, _, _ in drawn] + [info["pose"][0, :2]])
        plot(args.plot, drawn, path, args.lane)
        print(f"wrote {args.plot}")


def plot(out: Path, drawn: list, path: np.ndarray, lane: float) -> None:
    """Each step's sampled futures (x, y), darker where MPPI weighted them more, and the path."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(9, 3.4))
    colours = plt.get_cmap("viridis")(np.linspace(0, 0.9, len(drawn)))
    for (begin, paths, weights), colour in zip(drawn, colours, strict=True):
        alpha = 0.08 + 0.9 * weights / weights.max()
        for xy, a in zip(paths, alpha, strict=True):
            line = np.vstack([begin, xy])
            ax.plot(line[:, 0], line[:, 1], color=colour, alpha=float(a), lw=0.8)
    ax.plot(path[:, 0], path[:, 1], "k.-", lw=2, label="driven (the env's pose)")
    ax.axhline(lane, color="tab:red", ls="--", lw=1, label=f"target lane (y = {lane:g} m)")
    ax.set(xlabel="x, metres along the road", ylabel="y, metres (left +)")
    ax.set_title("MPPI: each step's imagined futures (colour: step; darker: more weight)")
    ax.legend(loc="lower right")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".partial.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(out)


if __name__ == "__main__":
    main()
