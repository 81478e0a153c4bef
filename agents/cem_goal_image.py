"""CEM to a goal image: plan in the city-walk world, walk in MiniWorld, score against the goal.

    python agents/cem_goal_image.py --episodes 16 --plan-in world simulator none

A planning benchmark for the world with the simulator as ground truth (needs the
``simulators`` extra). Each episode draws its goal in MiniWorld itself: from a seeded start
it holds one movement key and one turn key for ``--goal-steps`` steps and keeps the last view
as the goal image; the goal's pose is kept for scoring only. Back at the start, every real step
plans ``--horizon`` steps of keys by CEM (``cem_planner.cem``) under the ``GoalImageSimilarity``
reward, summed over the horizon, and plays the best plan's first keys in MiniWorld
(``Simulator-CityWalk-v0``). What plans, ``--plan-in``:

    world       the world, restarted every real step from MiniWorld's last step of frames and
                forked into ``--population`` rows: planning in imagination, acting in reality.
    simulator   MiniWorld itself, each candidate played from the env's ``get_state`` and set
                back: the same planner with a perfect model, what this reward allows.
    none        stand still (the goal's distance from the start).
    random      uniform random keys.

After ``--goal-steps + 2`` real steps it prints, per planner, the median distance (metres) and
yaw error (degrees) from the goal's pose and how many episodes ended at the goal: within half a
step of it (0.3 m and 9 degrees; a step moves 0.6 m or turns 18 degrees). This script is meant
to be read and copied, not imported.
"""

import argparse
import time

import gymnasium as gym
import numpy as np
from cem_planner import cem

import gym_worldmodel  # noqa: F401  (registers the ids)
from gym_worldmodel.cli import non_negative_int, positive_int
from gym_worldmodel.envs import GoalImageSimilarity, WorldModelVectorEnv, imagine
from gym_worldmodel.envs.pose import wrap_deg

PLANNERS = ("world", "simulator", "none", "random")
MOVE_P = (0.0, 0.5, 0.2, 0.1, 0.2)  # the goal walk's held movement key: none, W, A, S, D
TURN_P = (0.4, 0.3, 0.3, 0.0, 0.0)  # its held turn key: none, left, right (no pitch)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="checkpoint dir, repo id or random-tiny")
    parser.add_argument("--plan-in", nargs="+", choices=PLANNERS, default=["world", "none"])
    parser.add_argument("--episodes", type=positive_int, default=16)
    parser.add_argument("--goal-steps", type=positive_int, default=4, help="steps to the goal")
    parser.add_argument(
        "--horizon",
        type=positive_int,
        default=2,
        help="steps planned ahead (2: the world ranks plans as MiniWorld does for 2 steps, not 4)",
    )
    parser.add_argument("--population", type=positive_int, default=16)
    parser.add_argument("--elites", type=positive_int, default=4)
    parser.add_argument("--iterations", type=positive_int, default=3)
    parser.add_argument(
        "--pool", type=positive_int, default=8, help="compare pool x pool pixel means (1: pixels)"
    )
    parser.add_argument("--seed", type=non_negative_int, default=0)
    args = parser.parse_args()
    if args.elites > args.population:
        parser.error("--elites must not exceed --population")

    try:
        real = gym.make("Simulator-CityWalk-v0", obs_mode="chunk+pose", max_episode_steps=-1)
        real = real.unwrapped  # get_state / set_state, and no time limit to keep in step
    except ImportError as err:
        raise SystemExit(
            f"MiniWorld is needed (pip install gym-worldmodel[simulators]): {err}"
        ) from err
    world = None
    if "world" in args.plan_in:
        world = WorldModelVectorEnv(
            args.population, world="citywalk", model=args.model, memory=False
        )
        size, own = world.single_observation_space.shape, real.observation_space["chunk"].shape
        if size != own[1:]:
            raise SystemExit(f"the world's frames are {size}, MiniWorld's {own[1:]}: --model")
    results = {name: [] for name in args.plan_in}
    for episode in range(args.episodes):
        seed = args.seed + episode
        goal, goal_pose = draw_goal(real, seed, args.goal_steps)
        reward = GoalImageSimilarity(goal, pool=args.pool)
        for name in args.plan_in:
            start = time.perf_counter()
            rng = np.random.default_rng([seed, PLANNERS.index(name)])
            obs, _ = real.reset(seed=seed)
            for _ in range(args.goal_steps + 2):
                obs, *_ = real.step(choose(name, obs, real, world, reward, rng, args))
            pose = obs["pose"]
            distance = float(np.hypot(*(pose[:2] - goal_pose[:2])))
            yaw = abs(wrap_deg(pose[2] - goal_pose[2]))
            results[name].append((distance, yaw))
            print(
                f"episode {episode} ({np.hypot(*goal_pose[:2]):.2f} m, {goal_pose[2]:+.0f} deg "
                f"away), planned in {name}: {distance:.2f} m and {yaw:.0f} deg from the goal "
                f"({time.perf_counter() - start:.1f} s)",
                flush=True,
            )
    print(f"\n{args.episodes} goals {args.goal_steps} steps away, {args.goal_steps + 2} steps:")
    print("| planned in | distance to the goal, median | yaw error, median | at the goal |")
    print("|---|---|---|---|")
    for name, rows in results.items():
        d, y = np.array(rows).T
        at = int(((d <= 0.3) & (y <= 9.0)).sum())
        print(f"| {name} | {np.median(d):.2f} m | {np.median(y):.0f} deg | {at} of {len(d)} |")


def draw_goal(real, seed: int, steps: int) -> tuple[np.ndarray, np.ndarray]:
    """The view and pose after holding one drawn movement and turn key for ``steps`` steps."""
    rng = np.random.default_rng([seed, len(PLANNERS)])
    keys = [rng.choice(5, p=MOVE_P), rng.choice(5, p=TURN_P)]
    real.reset(seed=seed)
    for _ in range(steps):
        obs, *_ = real.step(keys)
    return obs["chunk"][-1], obs["pose"]


def choose(name, obs, real, world, reward, rng: np.random.Generator, args) -> np.ndarray:
    """The keys ``(2,)`` planner ``name`` plays from the real env's present state (``obs``)."""
    if name == "none":
        return np.zeros(2, np.int64)
    if name == "random":
        return rng.integers(5, size=2)
    horizon, population = args.horizon, args.population
    if name == "world":
        world.reward_fn = reward
        seeds = [int(s) for s in rng.integers(2**31 - 1, size=population)]
        world.reset(seed=seeds, options={"frames": obs["chunk"]})
        state = world.get_state()

        def rollout(plans: np.ndarray) -> np.ndarray:
            return imagine(world, plans, state).returns

    else:  # the simulator: play each candidate from the present state, then set it back
        state = real.get_state()
        real.reward_fn = reward

        def rollout(plans: np.ndarray) -> np.ndarray:
            returns = np.zeros(len(plans))
            for p, plan in enumerate(plans):
                real.set_state(state)
                returns[p] = sum(real.step(keys)[1] for keys in plan)
            return returns

    try:
        best = cem(rollout, rng, horizon, population, args.elites, args.iterations)
    finally:
        real.reward_fn = None
        if name == "simulator":
            real.set_state(state)
    return best[0]


if __name__ == "__main__":
    main()
