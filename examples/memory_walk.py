"""Walk away, turn round, come back: the city walk with spatial memory on and off, side by side.

    python examples/memory_walk.py --out runs/memory_walk.png

Two rows of one vector env start from the same image with the same seed; row 0 keeps spatial
memory on, row 1 has it switched off. Both walk forward, turn 180 degrees, walk back and turn
again, ending where and how they started. The script prints, per row, how often memory retrieved
a chunk and the PSNR of the final frame against the start frame (the same view), and saves a strip:
start frame, then the final frame with memory on and with memory off.
"""

import argparse
from pathlib import Path

import numpy as np
from PIL import Image

from gym_worldmodel.cli import non_negative_int, picture_path, positive_int
from gym_worldmodel.envs import WorldModelVectorEnv
from gym_worldmodel.evaluation import psnr


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--walk", type=positive_int, default=20, help="steps walked each way (0.6 m each)"
    )
    parser.add_argument("--seed", type=non_negative_int, default=0, help="the env's seed")
    parser.add_argument("--tiny", action="store_true", help="untrained tiny model (smoke test)")
    parser.add_argument("--out", type=picture_path, default=Path("runs/memory_walk.png"))
    args = parser.parse_args()

    env = WorldModelVectorEnv(2, world="citywalk", model="random-tiny" if args.tiny else None)
    obs, _ = env.reset(seed=[args.seed, args.seed])  # same seed: same start image, same noise
    env.set_memory(False, [1])
    start = obs[0]
    turn = round(180 / (env.head.turn_deg * env.config.dit.chunk_frames))  # steps for 180 deg
    plan = [(1, 0)] * args.walk + [(0, 1)] * turn + [(1, 0)] * args.walk + [(0, 1)] * turn
    hits = np.zeros(2)
    for keys in plan:
        obs, _, _, _, info = env.step(np.array([keys, keys]))
        hits += info["memory_hits"] > 0
    pose = np.round(info["pose"][0], 2) + 0.0  # + 0.0: no "-0.00"
    print(
        f"back at x={pose[0]:.2f} m, y={pose[1]:.2f} m, yaw={pose[2]:.0f} deg after "
        f"{len(plan)} steps"
    )
    for row, name in ((0, "memory on"), (1, "memory off")):
        print(
            f"  {name:<10}: chunks retrieved on {int(hits[row])}/{len(plan)} steps; final frame "
            f"vs start frame PSNR {float(psnr(obs[row], start)):.2f} dB"
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.concatenate([start, obs[0], obs[1]], 1)).save(args.out)
    print(f"wrote {args.out} (start | memory on | memory off)")


if __name__ == "__main__":
    main()
