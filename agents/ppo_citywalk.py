"""PPO (Stable-Baselines3) in the imagined city walk: learn to walk to a point from frames.

    python agents/ppo_citywalk.py --steps 8192 --out runs/ppo_citywalk

The agent sees the generated frames (64 x 64 RGB; SB3's CnnPolicy) and, with ``--pose``, also
the camera's pose (``obs_mode="rgb+pose"``: a Dict observation, SB3's MultiInputPolicy), turned
into where the target lies from the camera. Every step of all
``--envs`` rows is one batched forward of the shipped city-walk world, through
``WorldModelSB3VecEnv``. Reward hooks set the task: ``PoseDistance`` pays minus the distance in
metres from the camera's position (integrated from the keys, as ``info["pose"]`` reports it) to
``--target``, every step; ``PoseReached`` ends the episode within ``--radius`` metres of it, and
episodes are cut at ``--episode-steps``. A step is 3 frames: the W key walks 0.6 m.

PPO learns from rewards divided by a running estimate of the returns' spread (SB3's
``VecNormalize``, rewards only): its value head then fits returns near 1, not -25 m, and the
policy learns where it is. Every PPO rollout appends to ``curve.json`` (env steps, mean return
in metres and success rate of the episodes that ended in it) and redraws ``curve.png``; the
policy and the reward scaler are saved atomically (``ppo.zip``, ``reward_scale.pkl``), so a run
stopped at any point (Ctrl-C says where) continues with ``--resume``, from the last update's
policy with episodes of seeds not used before (not bit for bit the uninterrupted run). A new
run into a folder holding a policy is refused; ``task.json`` records the task and ``--model``,
which a resume must ask for again. At the end the trained
policy (keys sampled as in training, and its most likely keys) and a uniform random policy each
play ``--eval-episodes`` episodes from the same seeds, and the script prints their success rate,
return and final distance. With ``--simulator`` they play the same task in MiniWorld itself,
the simulator the world was trained on, through ``Simulator-CityWalk-v0`` (the world's spaces and
hooks; its walls stop the camera, the world's do not); ``--train-in simulator`` trains the
same agent in MiniWorld instead, the control for what training in imagination costs it.
This script is meant to be read and copied, not imported.
"""

import argparse
import json
import os
import time
import zipfile
from functools import partial
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from gym_worldmodel.cli import finite_float, non_negative_float, non_negative_int, positive_int
from gym_worldmodel.envs import PoseDistance, PoseReached
from gym_worldmodel.integrations.sb3 import WorldModelSB3VecEnv

try:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from stable_baselines3 import PPO
    from stable_baselines3.common.callbacks import BaseCallback
    from stable_baselines3.common.torch_layers import BaseFeaturesExtractor
    from stable_baselines3.common.vec_env import (
        DummyVecEnv,
        VecMonitor,
        VecNormalize,
        VecTransposeImage,
    )
except ImportError as err:  # pragma: no cover - depends on the installed extras
    raise SystemExit(
        f"this agent needs stable-baselines3 and matplotlib ({err.name} is missing): pip install "
        '"gym-worldmodel[sb3,train]"'
    ) from err


GAMMA = 0.95  # PPO's discount, and the reward scaler's


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="checkpoint dir or 'random-tiny'")
    parser.add_argument(
        "--target", type=finite_float, nargs=2, default=[3.0, 1.0], help="x y metres"
    )
    parser.add_argument(
        "--radius", type=non_negative_float, default=0.5, help="success radius, metres"
    )
    parser.add_argument(
        "--episode-steps", type=positive_int, default=16, help="steps before truncation"
    )
    parser.add_argument("--envs", type=positive_int, default=8, help="rows of the batched env")
    parser.add_argument(
        "--steps", type=positive_int, default=8192, help="env steps of training, all rows"
    )
    parser.add_argument(
        "--rollout", type=positive_int, default=64, help="steps per row per PPO update"
    )
    parser.add_argument(
        "--eval-episodes", type=positive_int, default=32, help="episodes of each evaluation"
    )
    parser.add_argument("--seed", type=non_negative_int, default=0, help="PPO's and the envs'")
    parser.add_argument(
        "--out", type=Path, default=Path("runs/ppo_citywalk"), help="run folder (policy, curve)"
    )
    parser.add_argument("--resume", action="store_true", help="continue from --out/ppo.zip")
    parser.add_argument("--pose", action="store_true", help="observe the pose too (rgb+pose)")
    parser.add_argument(
        "--simulator",
        action="store_true",
        help="also evaluate in MiniWorld itself, Simulator-CityWalk-v0 (the [simulators] extra)",
    )
    parser.add_argument(
        "--train-in",
        choices=("world", "simulator"),
        default="world",
        help="train in the city-walk world (default) or in MiniWorld itself, the control",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args()
    if args.rollout * args.envs < 2:
        parser.error("--rollout x --envs must be 2 or more (PPO's minibatches need 2 steps)")
    saved, curve_file = args.out / "ppo.zip", args.out / "curve.json"
    scale_file = args.out / "reward_scale.pkl"
    if args.resume:
        if not saved.exists():
            raise SystemExit(f"--resume: no saved policy at {saved}")
        if not scale_file.exists():  # its value head learned rewards on that scale
            raise SystemExit(f"--resume: no reward scaler at {scale_file} beside {saved}")
        if not zipfile.is_zipfile(saved):
            raise SystemExit(f"--resume: cannot read {saved}: not a zip file (a damaged save?)")
    elif saved.exists():  # a new run would overwrite it, and task.json with it
        raise SystemExit(
            f"--out {args.out} holds a trained policy ({saved.name}): --resume continues it, "
            "or give another --out"
        )

    if args.simulator or args.train_in == "simulator":
        check_simulator_fits(args)  # before training: a mismatch found after it wastes the run
    try:
        make = simulator_env if args.train_in == "simulator" else make_env
        monitored = VecMonitor(make(args, args.envs))  # returns in metres, unscaled
    except (OSError, ValueError) as err:  # a missing or damaged --model
        raise SystemExit(f"--model {args.model}: {err}") from err
    if args.resume:
        try:
            venv = VecNormalize.load(scale_file, monitored)
            agent = PPO.load(saved, env=venv, device="cpu")
        except (AssertionError, ValueError) as err:  # SB3 checks the spaces with assert
            was = "without" if args.pose else "with"
            raise SystemExit(
                f"--resume: the policy at {saved} does not fit this env ({err}); was it trained "
                f"{was} --pose?"
            ) from err
        encoder = agent.policy.features_extractor
        if args.pose and encoder.target.tolist() != [float(v) for v in args.target]:
            raise SystemExit(
                f"--resume: the saved policy walks to {encoder.target.tolist()}, "
                f"not --target {args.target}"
            )
        check_task(args)
        curve = json.loads(curve_file.read_text()) if curve_file.exists() else []
        # a run stopped between the policy's save and the curve's keeps no later entries
        curve = [c for c in curve if c["env_steps"] <= agent.num_timesteps]
        print(
            f"resumed from {saved} at {agent.num_timesteps} env steps "
            f"({agent.n_steps} steps per row per update, as saved)"
        )
        # episodes go on from seeds the run before had not used (not bit-exact: the envs'
        # episodes in progress when it stopped start over)
        monitored.seed(args.seed + agent.num_timesteps)
    else:
        args.out.mkdir(parents=True, exist_ok=True)
        write_atomically(args.out / "task.json", json.dumps(task(args)).encode())
        # PPO's value head learns returns near 1 far faster than returns of -25 m: rewards are
        # divided by a running estimate of the returns' spread (kept with the policy)
        venv = VecNormalize(monitored, norm_obs=False, gamma=GAMMA)
        agent = PPO(
            "MultiInputPolicy" if args.pose else "CnnPolicy",
            venv,
            n_steps=args.rollout,
            batch_size=min(64, args.rollout * args.envs),
            n_epochs=10,
            learning_rate=3e-4,
            gamma=GAMMA,
            ent_coef=0.01,
            policy_kwargs=policy_kwargs(args),
            seed=args.seed,
            device="cpu",
        )
        monitored.seed(args.seed)
        curve = []
    before, start = agent.num_timesteps, time.perf_counter()
    if args.steps > before:
        per_update = agent.n_steps * args.envs  # SB3 trains whole rollouts
        total = -(-(args.steps - before) // per_update) * per_update
        bar = tqdm(total=total, unit="step", disable=args.no_progress, desc="PPO")
        callback = CurveCallback(curve, args.out, saved, scale_file, bar, args.train_in)
        try:
            agent.learn(args.steps - before, callback=callback, reset_num_timesteps=False)
        except KeyboardInterrupt:
            bar.close()
            raise SystemExit(
                f"stopped at {agent.num_timesteps} env steps; {saved} holds the last update's "
                "policy: the same command with --resume continues"
            ) from None
        bar.close()
        # SB3 trains whole rollouts: the count can pass --steps by less than one
        print(
            f"trained {agent.num_timesteps - before} env steps in "
            f"{time.perf_counter() - start:.0f} s"
        )
    venv.close()

    evaluate_all(agent, make_env(args, args.eval_episodes), args)  # a row per episode
    if args.simulator:
        print("the same in MiniWorld itself (Simulator-CityWalk-v0; walls stop the camera there):")
        # channels first, as SB3 trained the policy on frames (check_simulator_fits: the same)
        evaluate_all(agent, VecTransposeImage(simulator_env(args, args.eval_episodes)), args)


def task(args: argparse.Namespace) -> dict:
    """What a run trains for, and in; ``--resume`` must ask for the same (``task.json``)."""
    keys = ("train_in", "pose", "target", "radius", "episode_steps", "model")
    return {k: getattr(args, k) for k in keys}


def check_task(args: argparse.Namespace) -> None:
    """Refuse to resume a run that trained for another task (runs before task.json: skipped;
    a task.json from before ``model`` was recorded is compared on what it holds)."""
    path = args.out / "task.json"
    if path.exists():
        saved = json.loads(path.read_text())
        asked = {k: v for k, v in task(args).items() if k in saved}
        if saved != asked:
            raise SystemExit(f"--resume: {args.out} was trained for {saved}, not {asked}")


def check_simulator_fits(args: argparse.Namespace) -> None:
    """The world's and MiniWorld's observations must match (the world's frame size is the
    simulator's 64 px for the shipped city walk, not for ``--model random-tiny``)."""
    world, sim = make_env(args, 1), simulator_env(args, 1)
    spaces = world.observation_space, sim.observation_space
    world.close(), sim.close()
    if spaces[0] != spaces[1]:
        raise SystemExit(
            f"--simulator / --train-in simulator: MiniWorld gives {spaces[1]}, the world "
            f"{spaces[0]}: use a world with the simulator's frame size (the shipped city walk)"
        )


def simulator_env(args: argparse.Namespace, rows: int) -> DummyVecEnv:
    """``rows`` MiniWorlds with the task, one process (a MiniWorld step is about 3 ms)."""
    try:
        make = partial(gym.make, "Simulator-CityWalk-v0", **task_kwargs(args))
        return DummyVecEnv([make] * rows)
    except ImportError as err:
        raise SystemExit(f"MiniWorld is needed (--simulator, --train-in simulator): {err}") from err


def evaluate_all(agent, env, args) -> None:
    """The policy as trained (sampled keys), its most likely keys and chance, same seeds."""
    rng = np.random.default_rng(args.seed)
    policies = {
        "PPO, sampled": lambda obs: agent.predict(obs, deterministic=False)[0],
        "PPO, argmax": lambda obs: agent.predict(obs, deterministic=True)[0],
        "random": lambda obs: rng.integers(0, 5, (env.num_envs, 2)),
    }
    print(f"{args.eval_episodes} episodes each, same seeds, target {args.target} m:")
    for name, act in policies.items():
        success, ret, dist, steps = evaluate(env, act, args)
        print(
            f"  {name:12s}  success {success:.2f}  return {ret:7.2f} (minus metres, summed)  "
            f"final distance {dist:.2f} m  steps {steps:.1f}"
        )
    env.close()


def policy_kwargs(args: argparse.Namespace) -> dict:
    """The frame encoder (and pose features with ``--pose``), then one ReLU layer per head.

    SB3's default heads for a custom encoder are two tanh layers of 64; the encoder's ReLU
    features (tens of units) saturate them, and a policy with saturated heads gives every
    observation the same keys (it learned a fixed mix of "forward" and the rest).
    """
    kwargs = {"net_arch": {"pi": [64], "vf": [64]}, "activation_fn": nn.ReLU}
    if not args.pose:
        return {**kwargs, "features_extractor_class": FrameEncoder}
    return {
        **kwargs,
        "features_extractor_class": FramePoseEncoder,
        "features_extractor_kwargs": {"target": tuple(args.target)},
    }


def task_kwargs(args: argparse.Namespace) -> dict:
    """The task: its hooks, episode length and observation, for the world and the simulator."""
    return {
        "max_episode_steps": args.episode_steps,
        "reward_fn": PoseDistance(args.target),
        "termination_fn": PoseReached(args.target, args.radius),
        "obs_mode": "rgb+pose" if args.pose else "rgb",
    }


def make_env(args: argparse.Namespace, rows: int) -> WorldModelSB3VecEnv:
    """The batched city walk with the task's reward and termination hooks."""
    return WorldModelSB3VecEnv.make(
        "WorldModel-CityWalk-v0",
        num_envs=rows,
        model=args.model,
        memory=False,  # a 16-step episode never comes back to a place: memory would only cost
        **task_kwargs(args),
    )


def evaluate(env, act, args) -> tuple[float, float, float, float]:
    """Play one episode per row of an SB3 VecEnv; mean success, return, final distance (m) and
    length."""
    env.seed(args.seed + 10_000)  # seeds no training episode used
    obs = env.reset()
    rows = env.num_envs
    done = np.zeros(rows, bool)
    ret, length = np.zeros(rows), np.zeros(rows)
    success, dist = np.zeros(rows, bool), np.zeros(rows)
    while not done.all():
        obs, rewards, dones, infos = env.step(act(obs))
        live = ~done
        ret[live] += rewards[live]
        length[live] += 1
        for i in np.flatnonzero(live & dones):
            dist[i] = -rewards[i]  # the last reward: minus the final distance
            success[i] = not infos[i]["TimeLimit.truncated"]  # PoseReached ended it
        done |= dones
    return success.mean(), ret.mean(), dist.mean(), length.mean()


class FrameEncoder(BaseFeaturesExtractor):
    """Three strided convolutions for 32-96 px frames (SB3's NatureCNN is sized for 84 px)."""

    def __init__(self, observation_space, features_dim: int = 256) -> None:
        super().__init__(observation_space, features_dim)
        channels = observation_space.shape[0]  # SB3 hands CnnPolicy channel-first images
        self.net = nn.Sequential(
            nn.Conv2d(channels, 32, 5, stride=2, padding=2),
            nn.ReLU(),
            nn.Conv2d(32, 64, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.Conv2d(64, 64, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(4),
            nn.Flatten(),
            nn.Linear(64 * 16, features_dim),
            nn.ReLU(),
        )

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        """Frames scaled to [0, 1] by SB3 -> features."""
        return self.net(obs)


class FramePoseEncoder(BaseFeaturesExtractor):
    """``FrameEncoder`` on the frame (64 features), next to where the target lies from the
    camera: its distance ahead and to the left in units of 5 m (the pose turned into the
    camera's frame), the heading as its sine and cosine, the pitch as a fraction of 60 deg."""

    def __init__(self, observation_space, target: tuple[float, float], frame_dim: int = 64):
        super().__init__(observation_space, frame_dim + 5)
        self.frames = FrameEncoder(observation_space["rgb"], frame_dim)
        self.register_buffer("target", torch.tensor(target, dtype=torch.float32))

    def forward(self, obs: dict) -> torch.Tensor:
        """``{"rgb": frames, "pose": (B, 4)}`` -> features."""
        x, y, yaw, pitch = obs["pose"].unbind(-1)
        dx, dy = self.target[0] - x, self.target[1] - y
        yaw = torch.deg2rad(yaw)
        cos, sin = yaw.cos(), yaw.sin()
        ahead, left = dx * cos + dy * sin, dy * cos - dx * sin
        pose = torch.stack([ahead / 5, left / 5, cos, sin, pitch / 60], -1)
        return torch.cat([self.frames(obs["rgb"]), pose], -1)


class CurveCallback(BaseCallback):
    """After each PPO update: save the policy, then append the figures of the episodes that
    ended in the rollout it trained on, and plot them.

    SB3 calls ``_on_rollout_end`` before the update, so the save waits for the next rollout's
    start (or the end of training): ``ppo.zip`` always holds the policy its step count says.
    It also advances the progress bar (SB3's own needs the ``rich`` package).
    """

    def __init__(
        self, curve: list, out: Path, saved: Path, scale: Path, bar: tqdm, train_in: str
    ) -> None:
        super().__init__()
        self.curve, self.out, self.saved, self.scale, self.bar = curve, out, saved, scale, bar
        self.train_in = train_in
        self.returns: list[float] = []
        self.successes: list[bool] = []
        self.unsaved = False

    def _on_step(self) -> bool:
        self.bar.update(self.training_env.num_envs)
        for info in self.locals["infos"]:
            if "episode" in info:  # VecMonitor's summary of a finished episode
                self.returns.append(info["episode"]["r"])
                self.successes.append(not info["TimeLimit.truncated"])  # PoseReached ended it
        return True

    def _on_rollout_end(self) -> None:
        self.unsaved = True

    def _on_rollout_start(self) -> None:
        self._save()

    def _on_training_end(self) -> None:
        self._save()

    def _save(self) -> None:
        if not self.unsaved:
            return
        # the scaler first: a saved policy always has its scaler beside it (at worst one
        # rollout newer, which only refines the estimate)
        tmp = self.scale.with_name("reward_scale.partial.pkl")
        self.model.get_vec_normalize_env().save(tmp)
        os.replace(tmp, self.scale)
        tmp = self.saved.with_name("ppo.partial.zip")
        self.model.save(tmp)
        os.replace(tmp, self.saved)
        if self.returns:
            self.curve.append(
                {
                    "env_steps": int(self.num_timesteps),
                    "episodes": len(self.returns),
                    "mean_return": float(np.mean(self.returns)),
                    "success_rate": float(np.mean(self.successes)),
                    "train_in": self.train_in,
                }
            )
            self.bar.set_postfix(success=f"{self.curve[-1]['success_rate']:.2f}")
            self.returns, self.successes = [], []
        write_atomically(self.out / "curve.json", json.dumps(self.curve, indent=1).encode())
        plot(self.curve, self.out / "curve.png")
        self.unsaved = False


def write_atomically(path: Path, data: bytes) -> None:
    """Write ``data`` next to ``path`` and move it into place."""
    tmp = path.with_name(path.name + ".partial")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def plot(curve: list, path: Path) -> None:
    """Mean return and success rate against env steps."""
    if not curve:
        return
    steps = [c["env_steps"] for c in curve]
    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.2))
    a.plot(steps, [c["mean_return"] for c in curve])
    a.set(xlabel="env steps", ylabel="mean episode return", title="return (- metres per step)")
    b.plot(steps, [c["success_rate"] for c in curve])
    b.set(xlabel="env steps", ylabel="success rate", ylim=(-0.02, 1.02), title="reached target")
    fig.tight_layout()
    tmp = path.with_name("curve.partial.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    os.replace(tmp, path)


if __name__ == "__main__":
    main()
