"""Drive the engine directly: a batched rollout, a fork into futures, a checkpoint round trip.

    python examples/engine_rollout.py --steps 20 --batch 4 --out runs/engine_rollout.npz

The weights are random (the default, untrained architecture): this shows the API and its costs,
and the frames it saves are noise. The trained worlds are what the envs load.
"""

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from gym_worldmodel import hub
from gym_worldmodel.cli import positive_int
from gym_worldmodel.memory import KVCache
from gym_worldmodel.models import WorldModel, WorldModelConfig
from gym_worldmodel.sampling import ChunkRollout, RowGenerators


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=positive_int, default=20, help="chunks each row generates")
    parser.add_argument("--batch", type=positive_int, default=4, help="rows of the batch")
    parser.add_argument(
        "--futures", type=positive_int, default=3, help="forks of row 0 after the rollout (>= 2)"
    )
    parser.add_argument("--tiny", action="store_true", help="tiny model (smoke test)")
    parser.add_argument("--out", type=Path, default=Path("runs/engine_rollout.npz"))
    args = parser.parse_args()
    if args.futures < 2:
        parser.error("--futures: the spread between futures needs 2 or more")

    config = WorldModelConfig.tiny() if args.tiny else WorldModelConfig()
    model = WorldModel(config).eval()
    cache = KVCache.for_model(config.dit, model.dit.rope, args.batch)
    rollout = ChunkRollout(model.dit, config.sampler)
    gens = RowGenerators(list(range(args.batch)))
    modality = torch.full((args.batch,), config.dit.modality_id("camera"))
    actions = torch.zeros(args.batch, *rollout.action_shape)
    actions[..., 1] = 1.0  # translation one-hot: W (forward), every frame of every row

    frames, start = [], time.perf_counter()
    with torch.inference_mode():
        for _ in range(args.steps):
            frames.append(model.vae.decode(rollout.generate(cache, actions, modality, gens)))
        seconds = time.perf_counter() - start
        video = torch.cat(frames, dim=1).numpy()  # (B, steps * F, H, W, 3) uint8
        print(
            f"{args.steps} steps x {args.batch} rows: {video.shape[1] * args.batch / seconds:.1f} "
            f"frames/s, video {video.shape}"
        )

        # Fork row 0 into several futures with different seeds: the planner's primitive.
        fork = cache.select([0] * args.futures)
        fork_gens = gens.select([0] * args.futures)
        fork_gens.seed(list(range(100, 100 + args.futures)))
        fork_modality = modality[:1].expand(args.futures)
        futures = rollout.generate(
            fork, actions[:1].expand(args.futures, -1, -1), fork_modality, fork_gens
        )
        spread = (futures[1:] - futures[:1]).abs().mean().item()
        print(
            f"{args.futures} futures forked from row 0; mean latent spread {spread:.3f}; "
            f"row 0 still at chunk {int(cache.chunks[0])}"
        )

    with tempfile.TemporaryDirectory() as tmp:
        hub.save_pretrained(model, tmp)
        same = hub.from_pretrained(tmp)
        equal = all(
            torch.equal(a, b)
            for a, b in zip(model.state_dict().values(), same.state_dict().values(), strict=True)
        )
        print(f"checkpoint round trip bitwise equal: {equal}")

    args.out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(args.out, video=video)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
