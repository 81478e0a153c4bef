"""Imagine RT-1 action plans from your own camera picture: one start, a future per plan.

    python examples/robot_plans.py --image my_camera.png --steps 8 --out runs/robot_plans.png

One vector env of the robot world holds a row per plan, played by ``imagine``. Every row starts
from the same picture (``--image``, any size, centre-cropped and resized; without it the world's
first bundled start frame) and draws the same noise (one seed for all rows), so the futures
differ only by their actions. Each plan holds one RT-1 action for every step, given as the RT-1
dict: world_vector (normalised end-effector translation in [-1, 1]), rotation_delta (radians),
gripper closedness (-1 open, +1 close), the base's displacement and rotation (0 here: a fixed
arm) and terminate_episode (1: keep moving the arm). The script prints how far each future's
last frame is from the still plan's (mean absolute difference in grey levels) and saves a strip:
a row per plan, the start frame then every step's frame.

The shipped robot world is early: its arm follows its actions much less than robosuite's does
(docs/worlds.md), so expect futures that differ by little. The same code plays a world you
trained yourself: ``--model runs/student/model``.
"""

import argparse
from pathlib import Path

import numpy as np
from PIL import Image

from gym_worldmodel.cli import non_negative_int, picture_path, positive_int
from gym_worldmodel.envs import WorldModelVectorEnv, imagine

#: name -> (world_vector, gripper_closedness_action): held for every step of the plan.
PLANS = {
    "still": ((0.0, 0.0, 0.0), 0.0),
    "+x": ((0.6, 0.0, 0.0), 0.0),
    "-x": ((-0.6, 0.0, 0.0), 0.0),
    "+y": ((0.0, 0.6, 0.0), 0.0),
    "+z (up)": ((0.0, 0.0, 0.6), 0.0),
    "close gripper": ((0.0, 0.0, 0.0), 1.0),
}


def rt1_actions(plans: dict) -> dict[str, np.ndarray]:
    """One step's batched RT-1 dict: a row per plan, the arm moving, the base still."""
    n = len(plans)
    return {
        "world_vector": np.array([v for v, _ in plans.values()], np.float32),
        "rotation_delta": np.zeros((n, 3), np.float32),
        "gripper_closedness_action": np.array([[g] for _, g in plans.values()], np.float32),
        "base_displacement_vector": np.zeros((n, 2), np.float32),
        "base_displacement_vertical_rotation": np.zeros((n, 1), np.float32),
        "terminate_episode": np.ones(n, np.int64),  # 1: arm mode, the episode goes on
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image", type=Path, help="your camera picture (default: the world's)")
    parser.add_argument(
        "--steps", type=positive_int, default=8, help="steps of each plan (3 frames each)"
    )
    parser.add_argument(
        "--seed", type=non_negative_int, default=0, help="the noise every future draws"
    )
    parser.add_argument("--model", help="a checkpoint directory (default: the shipped world)")
    parser.add_argument("--tiny", action="store_true", help="untrained tiny model (smoke test)")
    parser.add_argument("--out", type=picture_path, default=Path("runs/robot_plans.png"))
    args = parser.parse_args()
    if args.steps < 1:
        parser.error(f"--steps must be >= 1, got {args.steps}")

    model = "random-tiny" if args.tiny else args.model
    env = WorldModelVectorEnv(len(PLANS), world="robot", action_mode="dict", model=model)
    options = None
    if args.image is not None:
        try:  # the env takes a PIL image as it is (8-bit modes as RGB; 16-bit refused)
            options = {"image": Image.open(args.image)}
        except OSError as err:  # missing, or not a picture PIL reads
            raise SystemExit(f"--image {args.image}: {err}") from err
    seeds = [args.seed] * len(PLANS)  # one seed: the same start frame and the same noise
    try:
        obs, _ = env.reset(seed=seeds, options=options)
    except (OSError, ValueError) as err:  # a picture the env cannot start from (or decode)
        raise SystemExit(f"--image {args.image}: {err}") from err
    # every plan (N, steps, ...): its RT-1 action held for every step, played from the start
    plans = {k: np.repeat(v[:, None], args.steps, 1) for k, v in rt1_actions(PLANS).items()}
    futures = imagine(env, plans, observations=True).observations  # (N, steps, H, W, 3)
    frames = [obs, *futures.swapaxes(0, 1)]
    last = futures[:, -1].astype(np.float32)
    print(f"{len(PLANS)} futures of {args.steps} steps from one start; last frame against 'still':")
    for row, name in enumerate(PLANS):
        print(f"  {name:<14} {np.abs(last[row] - last[0]).mean():6.2f} grey levels")
    strip = np.concatenate([np.concatenate(list(step), 0) for step in frames], 1)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(strip).save(args.out)
    print(f"wrote {args.out} (a row per plan: {', '.join(PLANS)}; a column per step)")


if __name__ == "__main__":
    main()
