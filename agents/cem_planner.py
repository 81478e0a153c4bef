"""CEM planning over imagined futures: walk the camera to a target point.

    python agents/cem_planner.py --target 3 1 --steps 10

Each real step loads the env's state into ``--population`` forked rows of one batched vector
env, rolls ``--horizon`` imagined steps per candidate key sequence (``imagine``), scores them with
the PoseDistance hook, refits a categorical distribution per step to the elites, and executes the
best first action. ``--radius R`` ends the episode within R metres of the target (the PoseReached
termination hook); ``imagine`` then scores each future only until it reaches it.
This script is meant to be read and copied; ``agents/cem_goal_image.py`` imports its ``cem``.
"""

import argparse
import time
from collections.abc import Callable

import numpy as np

from gym_worldmodel.cli import finite_float, non_negative_int, positive_int
from gym_worldmodel.envs import PoseDistance, PoseReached, WorldModelVectorEnv, imagine


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="checkpoint dir, repo id or random-tiny")
    parser.add_argument(
        "--target", type=finite_float, nargs=2, default=[3.0, 1.0], help="x y metres"
    )
    parser.add_argument("--steps", type=positive_int, default=10, help="real steps")
    parser.add_argument(
        "--horizon", type=positive_int, default=4, help="steps each plan looks ahead"
    )
    parser.add_argument("--population", type=positive_int, default=16, help="plans per iteration")
    parser.add_argument("--elites", type=positive_int, default=4, help="best plans refitted to")
    parser.add_argument("--iterations", type=positive_int, default=3, help="CEM rounds per step")
    parser.add_argument("--seed", type=non_negative_int, default=0, help="the planner's and env's")
    parser.add_argument(
        "--radius",
        type=finite_float,
        default=None,
        help="end the episode within this many metres of the target (PoseReached); default: never",
    )
    args = parser.parse_args()
    if args.radius is not None and args.radius < 0:
        parser.error(f"--radius must be a distance >= 0 in metres, got {args.radius}")
    if args.elites > args.population:
        parser.error(f"--elites {args.elites} is more than --population {args.population}")

    reward = PoseDistance(args.target)
    end = None if args.radius is None else PoseReached(args.target, args.radius)
    env = WorldModelVectorEnv(
        1, world="citywalk", model=args.model, reward_fn=reward, termination_fn=end
    )
    env.reset(seed=args.seed)
    futures = env.fork(0, args.population)
    rng = np.random.default_rng(args.seed)
    start = time.perf_counter()
    for step in range(args.steps):
        state = env.get_state(0)  # row 0's, loaded into every future

        def rollout(plans: np.ndarray, state=state) -> np.ndarray:  # (P, horizon, 2) -> (P,)
            return imagine(futures, plans, state).returns

        best = cem(rollout, rng, args.horizon, args.population, args.elites, args.iterations)
        _, r, terminated, _, info = env.step(best[:1])
        print(
            f"step {step}: keys (move, turn) {best[0].tolist()}  distance to target "
            f"{-r[0]:.2f} m  pose (x m, y m, yaw deg, pitch deg) "
            f"{np.round(info['pose'][0], 2).tolist()}"
        )
        if terminated[0]:
            print(f"reached the target (within {args.radius} m) in {step + 1} steps")
            break
    print(
        f"{step + 1} steps, {(step + 1) * args.iterations * args.horizon} imagined batched "
        f"steps of {args.population} futures in {time.perf_counter() - start:.1f} s"
    )


def cem(
    rollout: Callable[[np.ndarray], np.ndarray],
    rng: np.random.Generator,
    horizon: int,
    population: int,
    elites: int,
    iterations: int,
) -> np.ndarray:
    """The best of the last population of key sequences ``(horizon, 2)``, by cross-entropy.

    Starts from uniform keys; each iteration draws ``population`` sequences, scores them with
    ``rollout(plans) -> returns`` and refits each step's key distribution to the ``elites`` best
    (mixed with 10% uniform, so no key dies out).
    """
    if not 1 <= elites <= population or horizon < 1 or iterations < 1:
        raise ValueError(
            f"CEM needs 1 <= elites <= population and horizon, iterations >= 1, got elites "
            f"{elites}, population {population}, horizon {horizon}, iterations {iterations}"
        )
    probs = np.full((horizon, 2, 5), 0.2)  # per step: translation and rotation keys
    for _ in range(iterations):
        plans = sample(rng, probs, population)  # (P, horizon, 2)
        returns = np.asarray(rollout(plans))
        best = plans[np.argsort(returns)[-elites:]]
        for k in range(5):
            probs[..., k] = 0.1 / 5 + 0.9 * (best == k).mean(0)
    return plans[np.argmax(returns)]


def sample(rng: np.random.Generator, probs: np.ndarray, n: int) -> np.ndarray:
    """Draw ``n`` key sequences from per-step categorical distributions ``(H, 2, 5)``."""
    cum = probs.cumsum(-1)
    u = rng.random((n, *probs.shape[:-1], 1))
    return (u > cum[None]).sum(-1).clip(0, 4)


if __name__ == "__main__":
    main()
