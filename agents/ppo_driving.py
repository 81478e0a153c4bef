"""PPO (CleanRL style) in the imagined highway: change lanes with continuous controls.

    python agents/ppo_driving.py --steps 8192 --out runs/ppo_driving

A single-file PPO after CleanRL's ``ppo_continuous_action.py``, on the native vector env that
``gym.make_vec("WorldModel-Driving-v0", ...)`` gives: each step of the ``--envs`` rows is one
batched forward of the shipped driving world, and Gymnasium's own vector wrappers count episode
returns (``RecordEpisodeStatistics``), keep the controls in the box (``ClipAction``) and scale
the rewards (``NormalizeReward``). Controls are (steering, acceleration), each in [-1, 1]:
fractions of 30 degrees and of 3 m/s^2.

The task is the ``LaneCentre`` reward hook: minus the metres between the car and the centre of
the lane at ``y = --lane`` (y to the left; lanes are 4 m apart) and minus ``--heading-weight``
times its heading off the road in radians, every step, plus a small ``ActionCost``. Episodes
start at 25 m/s (5 m a step) from the bundled start frames and are cut at ``--episode-steps``;
the rows reset in the step that ends them (``SAME_STEP``), and a cut episode's value is
bootstrapped from its last observation (``info["final_obs"]``).

The policy sees the generated 64 x 64 frame (a small CNN) and, unless ``--frames-only``, the
pose the env integrates from the controls (``obs_mode="rgb+pose"``), as the lateral offset from
the lane, heading and speed. With ``--frames-only`` it must read where the car is from the
generated road alone.

With ``--start-heading DEG`` every episode starts up to DEG degrees off the road (the env's
``start_fn`` initial-conditions hook); with ``--lane 0`` the task is then to get back to the
centre of the lane the car started in and straighten out, which a single frame shows (the lane
lines around the car), unlike the lane change, whose target depends on where the car started.

Every update saves the agent, its optimiser and the reward scaler atomically (``agent.pt``) and
appends to ``curve.json`` / ``curve.png``; ``--resume`` continues a stopped run with them
(episodes in progress restart, and the sampling RNG from ``--seed``: not bit-exact). At the end
the policy (its mean controls, and sampled ones), zero controls and uniform random controls
each drive ``--eval-episodes`` episodes from the same fresh seeds (from the bundled start
frames, as in training),
and the script prints the final distance from the lane's centre, the heading, the return and
the share of episodes that end within 0.5 m and 3 degrees of the lane.

``--simulator`` scores the same policies in highway-env itself, the simulator the world was
trained on, through ``Simulator-Driving-v0`` (the same spaces, hooks and start_fn; crashes
counted); ``--train-in simulator`` trains there instead of in the world, the control that says
what imagination costs the agent (both need the ``simulators`` extra). The simulator's frames
are 64 x 64, the shipped world's size; the agent's CNN pools to a fixed size, so it also runs
on another ``--model``'s frames.
This script is meant to be read and copied, not imported.
"""

import argparse
import io
import json
import time
from operator import itemgetter
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch
from torch import nn
from torch.distributions import Normal
from tqdm import tqdm

import gym_worldmodel  # noqa: F401  (registers the ids)
from gym_worldmodel.cli import (
    denoiser_passes,
    finite_float,
    fraction,
    non_negative_float,
    non_negative_int,
    positive_float,
    positive_int,
)
from gym_worldmodel.envs import ActionCost, LaneCentre
from gym_worldmodel.files import atomic_write

try:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
except ImportError as err:  # pragma: no cover - depends on the installed extras
    raise SystemExit(
        'this agent plots its learning curve with matplotlib: pip install "gym-worldmodel[train]"'
    ) from err

START_SPEED = 25.0  # m/s, every episode's (the driving world's default start)
EVAL_SEED = 1_000_000_000  # the world's eval seed offset: training resets at --seed + steps


def main() -> None:
    args = parse_args()
    torch.manual_seed(args.seed)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    same_step = gym.vector.AutoresetMode.SAME_STEP
    try:
        envs = make_envs(args, args.envs, same_step, simulator=args.train_in == "simulator")
    except (OSError, ValueError) as err:  # a missing or damaged --model
        raise SystemExit(f"--model {args.model}: {err}") from err
    envs = gym.wrappers.vector.RecordEpisodeStatistics(envs)  # returns before scaling
    envs = gym.wrappers.vector.ClipAction(envs)
    envs = gym.wrappers.vector.NormalizeReward(envs, gamma=args.gamma)
    agent = Agent(args.lane, frames_only=args.frames_only)
    optimizer = torch.optim.Adam(agent.parameters(), lr=args.lr, eps=1e-5)
    step, curve = 0, []
    if args.resume:
        step, curve = resume(args, agent, optimizer, envs.return_rms)
    args.out.mkdir(parents=True, exist_ok=True)
    batch = args.envs * args.rollout
    updates = -(-(args.steps - step) // batch)  # whole rollouts: may pass --steps by < one
    bar = tqdm(total=max(updates, 0) * batch, unit="step", desc="PPO", disable=args.no_progress)
    obs, _ = envs.reset(seed=args.seed + step)
    start = time.perf_counter()
    try:
        for _ in range(updates):
            rollout, obs, episodes = collect(envs, agent, obs, args, bar)
            stats = update(agent, optimizer, rollout, args)
            step += batch
            if episodes:
                curve.append({"env_steps": step, **episode_means(episodes), **stats})
                bar.set_postfix(ret=f"{curve[-1]['mean_return']:.1f}")
            save(args, agent, optimizer, envs.return_rms, step, curve)
    except KeyboardInterrupt:
        bar.close()
        raise SystemExit(
            f"stopped; {args.out / 'agent.pt'} holds the agent after its last update "
            f"({step} env steps): the same command with --resume continues"
        ) from None
    bar.close()
    envs.close()
    if updates > 0:
        print(f"trained {updates * batch} env steps in {time.perf_counter() - start:.0f} s")
    evaluate_all(agent, args)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="checkpoint dir, repo id or random-tiny")
    parser.add_argument(
        "--lane", type=finite_float, default=4.0, help="lane centre y, metres (left +)"
    )
    parser.add_argument(
        "--heading-weight", type=non_negative_float, default=2.0, help="metres per radian"
    )
    parser.add_argument("--effort", type=non_negative_float, default=0.1, help="ActionCost weight")
    parser.add_argument(
        "--episode-steps", type=positive_int, default=16, help="steps before truncation"
    )
    parser.add_argument("--envs", type=positive_int, default=8, help="rows of the batched env")
    parser.add_argument("--steps", type=positive_int, default=8192, help="env steps, all rows")
    parser.add_argument("--rollout", type=positive_int, default=32, help="steps per row per update")
    parser.add_argument("--epochs", type=positive_int, default=8, help="passes per update")
    parser.add_argument(
        "--minibatches", type=positive_int, default=4, help="minibatches per PPO epoch"
    )
    parser.add_argument("--lr", type=positive_float, default=3e-4, help="Adam's learning rate")
    parser.add_argument("--gamma", type=fraction, default=0.9, help="discount")
    parser.add_argument("--gae-lambda", type=fraction, default=0.95)
    parser.add_argument("--clip", type=fraction, default=0.2, help="PPO's ratio clip")
    parser.add_argument("--frames-only", action="store_true", help="observe the frame alone")
    parser.add_argument(
        "--start-heading",
        type=non_negative_float,
        default=0.0,
        help="each episode starts up to this many degrees off the road (a start_fn hook)",
    )
    parser.add_argument(
        "--eval-episodes", type=positive_int, default=32, help="episodes of each evaluation"
    )
    parser.add_argument(
        "--simulator",
        action="store_true",
        help="also evaluate in highway-env itself, Simulator-Driving-v0 (the [simulators] extra)",
    )
    parser.add_argument(
        "--train-in",
        choices=("world", "simulator"),
        default="world",
        help="train in the driving world (default) or in highway-env itself, the control",
    )
    parser.add_argument("--nfe", type=denoiser_passes, help="denoiser passes a step")
    parser.add_argument("--seed", type=non_negative_int, default=0)
    parser.add_argument(
        "--threads",
        type=positive_int,
        help="torch CPU threads (default: torch's, which OMP_NUM_THREADS sets)",
    )
    parser.add_argument("--out", type=Path, default=Path("runs/ppo_driving"))
    parser.add_argument("--resume", action="store_true", help="continue from --out/agent.pt")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args()
    if args.envs * args.rollout < 2 * args.minibatches:
        parser.error("--envs x --rollout must be at least twice --minibatches (2 per minibatch)")
    if args.gamma in (0, 1) or args.clip == 0:
        parser.error("need 0 < --gamma < 1 and --clip > 0")
    if args.start_heading > 180:
        parser.error(f"--start-heading is at most 180 degrees, got {args.start_heading}")
    return args


def make_envs(args: argparse.Namespace, rows: int, autoreset, simulator: bool = False):
    """The task's vector env: the batched driving world (one forward for every row), or with
    ``simulator`` highway-env itself behind the same interface (one simulator per row)."""
    task_kwargs = {
        "obs_mode": "rgb" if args.frames_only else "rgb+pose",
        "reward_fn": [LaneCentre(args.lane, args.heading_weight), ActionCost(args.effort)],
        "start_fn": StartHeading(args.start_heading) if args.start_heading else None,
        "max_episode_steps": args.episode_steps,
    }
    if simulator:
        return gym.make_vec(
            "Simulator-Driving-v0",
            num_envs=rows,
            vectorization_mode="sync",
            vector_kwargs={"autoreset_mode": autoreset},
            crash_ends=False,  # highway-env brakes a crashed car; episodes keep their length
            **task_kwargs,
        )
    return gym.make_vec(
        "WorldModel-Driving-v0",
        num_envs=rows,
        vectorization_mode="vector_entry_point",
        model=args.model,
        memory=False,  # the car never comes back to a place in one episode
        autoreset_mode=autoreset,
        nfe=args.nfe,
        **task_kwargs,
    )


class StartHeading:
    """Initial conditions: each episode starts up to ``degrees`` off the road's direction, drawn
    from the starting row's own generator (so a seed gives the same starts)."""

    def __init__(self, degrees: float) -> None:
        self.degrees = degrees

    def __call__(self, rngs: list) -> dict:
        """Reset options for the starting rows."""
        return {"heading": [rng.uniform(-self.degrees, self.degrees) for rng in rngs]}


class Agent(nn.Module):
    """A CNN on the frame (and the pose's lane features), a Gaussian policy and a value head."""

    def __init__(self, lane: float, frames_only: bool, features: int = 128) -> None:
        super().__init__()
        self.lane, self.frames_only = lane, frames_only
        self.cnn = nn.Sequential(  # (B, 3, 64, 64) in [0, 1] -> (B, features)
            nn.Conv2d(3, 32, 5, stride=2, padding=2),
            nn.ReLU(),
            nn.Conv2d(32, 64, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.Conv2d(64, 64, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(4),
            nn.Flatten(),
            nn.Linear(64 * 16, features),
            nn.ReLU(),
        )
        width = features + (0 if frames_only else 3)
        self.actor = nn.Sequential(nn.Linear(width, 64), nn.Tanh(), nn.Linear(64, 2))
        self.critic = nn.Sequential(nn.Linear(width, 64), nn.Tanh(), nn.Linear(64, 1))
        nn.init.zeros_(self.actor[-1].bias)
        self.actor[-1].weight.data.mul_(0.01)  # start near zero controls
        self.log_std = nn.Parameter(torch.full((2,), -1.0))  # std 0.37: 11 degrees of steering

    def features(self, obs) -> torch.Tensor:
        """Observation (a frame, or ``{"rgb", "pose"}``) as NumPy or tensors -> features."""
        rgb = torch.as_tensor(obs if self.frames_only else obs["rgb"])
        x = self.cnn(rgb.permute(0, 3, 1, 2).float() / 255.0)
        if self.frames_only:
            return x
        _, y, heading, speed = torch.as_tensor(obs["pose"]).float().unbind(-1)
        pose = torch.stack([(y - self.lane) / 4, heading / 10, (speed - START_SPEED) / 5], -1)
        return torch.cat([x, pose], -1)

    def value(self, obs) -> torch.Tensor:
        """(B,) state values."""
        return self.critic(self.features(obs)).squeeze(-1)

    def policy(self, features: torch.Tensor) -> Normal:
        """The controls' distribution: one Normal per (steering, acceleration)."""
        mean = self.actor(features)
        return Normal(mean, self.log_std.exp().expand_as(mean))


def collect(envs, agent: Agent, obs, args, bar: tqdm):
    """Play ``--rollout`` steps of every row with the current policy.

    Returns the rollout's tensors, the next observation and the episodes that ended in it
    (unscaled return, final lateral offset and heading).
    """
    keys = ("obs", "actions", "logprobs", "rewards", "dones", "values")
    rollout: dict[str, list] = {k: [] for k in keys}
    episodes = []
    for _ in range(args.rollout):
        with torch.no_grad():
            feats = agent.features(obs)
            dist = agent.policy(feats)
            action = dist.sample()
            value = agent.critic(feats).squeeze(-1)
        rollout["obs"].append(obs)
        rollout["actions"].append(action)
        rollout["logprobs"].append(dist.log_prob(action).sum(-1))
        rollout["values"].append(value)
        obs, reward, terminated, truncated, info = envs.step(action.numpy())
        reward = torch.as_tensor(reward, dtype=torch.float32)
        cut = np.flatnonzero(truncated & ~terminated)
        if cut.size:  # bootstrap the cut episodes from their last observation
            last = stack_obs([info["final_obs"][i] for i in cut])
            with torch.no_grad():
                reward[cut] += args.gamma * agent.value(last)
        rollout["rewards"].append(reward)
        rollout["dones"].append(torch.as_tensor(terminated | truncated, dtype=torch.float32))
        for i in np.flatnonzero(info.get("_episode", [])):
            pose = info["final_info"]["pose"][i]  # Gymnasium: batched, masked
            episodes.append((info["episode"]["r"][i], abs(pose[1] - args.lane), abs(pose[2])))
        bar.update(args.envs)
    with torch.no_grad():
        rollout["next_value"] = agent.value(obs)
    return rollout, obs, episodes


def stack_obs(rows: list):
    """Per-row observations (frames or dicts) -> one batch."""
    if isinstance(rows[0], dict):
        return {k: np.stack([r[k] for r in rows]) for k in rows[0]}
    return np.stack(rows)


def map_obs(fn, obs):
    """``fn`` applied to an observation batch, or to each entry of a dict one."""
    return {k: fn(v) for k, v in obs.items()} if isinstance(obs, dict) else fn(obs)


def update(agent: Agent, optimizer, rollout: dict, args) -> dict:
    """GAE advantages, then ``--epochs`` passes of clipped PPO over shuffled minibatches."""
    rewards, dones, values = (torch.stack(rollout[k]) for k in ("rewards", "dones", "values"))
    advantages = torch.zeros_like(rewards)  # (T, N)
    last, next_value = torch.zeros(args.envs), rollout["next_value"]
    for t in reversed(range(args.rollout)):
        live = 1.0 - dones[t]  # a row that ended at t starts a new episode at t + 1
        delta = rewards[t] + args.gamma * next_value * live - values[t]
        last = delta + args.gamma * args.gae_lambda * live * last
        advantages[t], next_value = last, values[t]
    returns = (advantages + values).flatten()
    advantages = advantages.flatten()
    obs = map_obs(lambda v: v.reshape(-1, *v.shape[2:]), stack_obs(rollout["obs"]))  # (T * N, ...)
    actions = torch.cat(rollout["actions"])
    old_logprobs = torch.cat(rollout["logprobs"])
    n = len(returns)
    size = n // args.minibatches  # >= 2 (parse_args): a minibatch's advantages have a spread
    losses = []
    for _ in range(args.epochs):
        order = torch.randperm(n)
        for idx in order[: size * args.minibatches].reshape(args.minibatches, size):
            feats = agent.features(map_obs(itemgetter(idx.numpy()), obs))
            dist = agent.policy(feats)
            ratio = (dist.log_prob(actions[idx]).sum(-1) - old_logprobs[idx]).exp()
            adv = advantages[idx]
            adv = (adv - adv.mean()) / (adv.std() + 1e-8)
            pg = -torch.min(ratio * adv, ratio.clamp(1 - args.clip, 1 + args.clip) * adv).mean()
            v_loss = 0.5 * (agent.critic(feats).squeeze(-1) - returns[idx]).square().mean()
            loss = pg + 0.5 * v_loss
            optimizer.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(agent.parameters(), 0.5)
            optimizer.step()
            losses.append((pg.item(), v_loss.item()))
    pg, v = np.mean(losses, 0)
    return {"policy_loss": float(pg), "value_loss": float(v)}


def episode_means(episodes: list) -> dict:
    """Mean unscaled return, final offset from the lane (m) and |heading| (deg)."""
    ret, offset, heading = np.mean(episodes, 0)
    return {
        "episodes": len(episodes),
        "mean_return": float(ret),
        "final_offset_m": float(offset),
        "final_heading_deg": float(heading),
    }


def save(args, agent: Agent, optimizer, return_rms, step: int, curve: list) -> None:
    """``agent.pt`` (weights, optimiser, reward scaler, step), then the curve and its plot."""
    state = {
        "agent": agent.state_dict(),
        "optimizer": optimizer.state_dict(),
        "return_rms": [float(return_rms.mean), float(return_rms.var), float(return_rms.count)],
        "env_steps": step,
        "task": task(args),
    }
    buffer = io.BytesIO()
    torch.save(state, buffer)
    atomic_write(args.out / "agent.pt", lambda f: f.write(buffer.getvalue()))
    atomic_write(args.out / "curve.json", lambda f: f.write(json.dumps(curve, indent=1).encode()))
    plot(curve, args.out / "curve.png")


def task(args) -> dict:
    """What a saved agent was trained for, and in: a resumed run must match it."""
    keys = ("lane", "heading_weight", "effort", "episode_steps", "frames_only", "gamma")
    keys += ("start_heading", "train_in", "model", "nfe")
    return {k: getattr(args, k) for k in keys}


def resume(args, agent: Agent, optimizer, return_rms) -> tuple[int, list]:
    """Load ``agent.pt`` and the curve; the step count they were saved at."""
    path = args.out / "agent.pt"
    if not path.exists():
        raise SystemExit(f"--resume: no saved agent at {path}")
    try:
        state = torch.load(path, weights_only=True)
        trained_for = state["task"]
    except Exception as err:  # truncated, foreign or corrupt: say so, and touch nothing
        raise SystemExit(f"--resume: cannot read {path} ({type(err).__name__}: {err})") from err
    for key, default in (("start_heading", 0.0), ("train_in", "world")):  # older checkpoints
        trained_for.setdefault(key, default)
    asked = {k: v for k, v in task(args).items() if k in trained_for}  # model, nfe: since 12-06
    if trained_for != asked:
        raise SystemExit(f"--resume: {path} was trained for {trained_for}, not {asked}")
    try:
        agent.load_state_dict(state["agent"])
        optimizer.load_state_dict(state["optimizer"])
        mean, var, count = state["return_rms"]
    except (KeyError, RuntimeError, ValueError) as err:
        raise SystemExit(f"--resume: {path} does not fit this script's agent ({err})") from err
    return_rms.mean, return_rms.var, return_rms.count = np.array(mean), np.array(var), count
    curve_file = args.out / "curve.json"
    try:  # the curve is written after the agent: a stop between the two loses one entry
        curve = json.loads(curve_file.read_text()) if curve_file.exists() else []
    except json.JSONDecodeError:
        curve = []
        print(f"--resume: {curve_file} is unreadable; the curve restarts here")
    curve = [c for c in curve if c["env_steps"] <= state["env_steps"]]
    print(f"resumed from {path} at {state['env_steps']} env steps")
    return state["env_steps"], curve


def plot(curve: list, path: Path) -> None:
    """Mean return and the final offset from the lane against env steps."""
    if not curve:
        return
    steps = [c["env_steps"] for c in curve]
    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.2))
    a.plot(steps, [c["mean_return"] for c in curve])
    a.set(xlabel="env steps", ylabel="mean episode return", title="training episodes: return")
    b.plot(steps, [c["final_offset_m"] for c in curve])
    b.set(xlabel="env steps", ylabel="metres", ylim=(0, None), title="their final offset from lane")
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    plt.close(fig)
    atomic_write(path, lambda f: f.write(buffer.getvalue()))


def policies(agent: Agent, rng: np.random.Generator) -> dict:
    """The evaluated policies: features ``(n, F)`` -> controls ``(n, 2)`` in [-1, 1]."""
    return {
        "PPO, mean controls": lambda feats: agent.policy(feats).mean.clamp(-1, 1),
        "PPO, sampled": lambda feats: agent.policy(feats).sample().clamp(-1, 1),
        "zero controls": lambda feats: torch.zeros(len(feats), 2),
        "random controls": lambda feats: torch.from_numpy(rng.uniform(-1, 1, (len(feats), 2))),
    }


def report(name: str, pose: np.ndarray, ret: np.ndarray, seconds: float, args, more="") -> None:
    """One line: the share that ended in the lane, final offset and heading, mean return."""
    offset, heading = np.abs(pose[:, 1] - args.lane), np.abs(pose[:, 2])
    within = np.mean((offset < 0.5) & (heading < 3.0))
    print(
        f"  {name:18s}  in lane {within:.2f}  final offset {np.median(offset):.2f} m "
        f"(median)  heading {np.median(heading):.1f} deg  return {ret.mean():7.2f}  "
        f"({seconds:.1f} s){more}"
    )


def evaluate_all(agent: Agent, args) -> None:
    """Every policy drives the same ``--eval-episodes`` episodes in the world, and with
    ``--simulator`` in highway-env (its traffic is real there: crashes are counted)."""
    rows = args.eval_episodes
    print(
        f"{rows} episodes of {args.episode_steps} steps each, same seeds, "
        f"lane at y = {args.lane} m:"
    )
    evaluate(agent, args, make_envs(args, rows, gym.vector.AutoresetMode.DISABLED))
    if args.simulator:
        print("the same in highway-env itself (Simulator-Driving-v0):")
        try:
            envs = make_envs(args, rows, gym.vector.AutoresetMode.DISABLED, simulator=True)
        except ImportError as err:
            raise SystemExit(f"--simulator needs highway-env: {err}") from err
        evaluate(agent, args, envs)


def evaluate(agent: Agent, args, env) -> None:
    """One line per policy: each drives every row of ``env`` for one episode."""
    rows = args.eval_episodes
    for name, act in policies(agent, np.random.default_rng(args.seed)).items():
        obs, _ = env.reset(seed=args.seed + EVAL_SEED)  # no training reset uses it
        ret, start = np.zeros(rows), time.perf_counter()
        for _ in range(args.episode_steps):
            with torch.no_grad():
                obs, reward, _, _, info = env.step(act(agent.features(obs)).numpy())
            ret += reward
        crashed = f"  crashed {int(info['crashed'].sum())}/{rows}" if "crashed" in info else ""
        report(name, info["pose"], ret, time.perf_counter() - start, args, crashed)
    env.close()


if __name__ == "__main__":
    main()
