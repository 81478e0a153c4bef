"""Benchmarks that print their figures: ``python -m gym_worldmodel.bench engine``.

Timings are medians over steps after a warm-up, and every ratio compares figures measured in the
same run, since the machines this runs on are shared and noisy. Nothing here is a test.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import statistics
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode
from tqdm import tqdm

from gym_worldmodel.cli import denoiser_passes
from gym_worldmodel.cli.argtypes import check_device, non_negative_float, positive_int
from gym_worldmodel.files import atomic_write
from gym_worldmodel.memory import KVCache
from gym_worldmodel.models import DTYPES, WorldModel, WorldModelConfig, precision
from gym_worldmodel.sampling import ChunkRollout, RecomputeRollout, RowGenerators


def _sdpa_flops(query_shape, key_shape, *args: Any, **kwargs: Any) -> int:
    """QK^T and AV products of CPU flash attention (FlopCounterMode has no CPU formula)."""
    b, h, tq, d = query_shape
    return 4 * b * h * tq * key_shape[-2] * d


_FLOP_FORMULAS = {torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _sdpa_flops}


def matmul_peak(dtype: torch.dtype, size: int = 2048, repeats: int = 5) -> float:
    """Median GFLOP/s of a ``size``-square linear in ``dtype`` on this CPU."""
    a = torch.randn(size, size).to(dtype)
    w = torch.randn(size, size).to(dtype)
    seconds = median_seconds(lambda: F.linear(a, w), repeats, warmup=2)
    return 2 * size**3 / seconds / 1e9


def median_seconds(fn: Callable[[], object], repeats: int, warmup: int = 1) -> float:
    """Median wall time of ``fn`` over ``repeats`` calls after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


@dataclasses.dataclass
class Snapshot:
    """Engine state at one step: enough to time that step again, cached or recomputed."""

    cache: KVCache
    gens: RowGenerators
    sink: torch.Tensor | None
    recent: list[torch.Tensor]
    steps: int


class EngineRun:
    """A batch of rows stepping the engine: generate a chunk, decode it to frames.

    Timed comparisons restore snapshots and alternate between them, so a slow minute on a shared
    machine slows both sides of a ratio alike.
    """

    def __init__(self, model: WorldModel, batch: int, dtype: torch.dtype) -> None:
        self.model, self.dtype = model, dtype
        dit = model.dit
        self.cache = KVCache.for_model(dit.config, dit.rope, batch, dtype=dtype)
        self.rollout = ChunkRollout(dit, model.config.sampler)
        self.gens = RowGenerators(list(range(batch)))
        self.actions = torch.zeros(batch, *self.rollout.action_shape)
        self.actions[..., 1] = 1.0  # camera: walk forward
        self.modality = torch.zeros(batch, dtype=torch.long)
        self.steps = 0
        # What a no-cache recompute of the next step needs: the sink and the receptive field
        # (plus the chunk before it, whose last frame anchors the field's first chunk).
        cfg = dit.config
        self.sink: torch.Tensor | None = None
        self.recent: deque[torch.Tensor] = deque(maxlen=cfg.depth * cfg.window_chunks + 1)

    def step(self) -> torch.Tensor:
        """One env step's worth of engine work; returns uint8 frames ``(B, F, H, W, 3)``."""
        with torch.inference_mode(), precision("cpu", self.dtype):
            latents = self.rollout.generate(self.cache, self.actions, self.modality, self.gens)
            frames = self.model.vae.decode(latents)
        if self.sink is None:
            self.sink = latents
        else:
            self.recent.append(latents)
        self.steps += 1
        return frames

    def advance(self, steps: int, progress: str | None = None) -> None:
        """Run ``steps`` untimed steps."""
        for _ in tqdm(range(steps), desc=progress, disable=progress is None, leave=False):
            self.step()

    def snapshot(self) -> Snapshot:
        """A copy of the current state."""
        gens = self.gens.select(range(len(self.gens)))
        return Snapshot(self.cache.clone(), gens, self.sink, list(self.recent), self.steps)

    def restore(self, snap: Snapshot) -> None:
        """Continue from a copy of ``snap`` (the snapshot itself stays reusable)."""
        self.cache = snap.cache.clone()
        self.gens = snap.gens.select(range(len(snap.gens)))
        self.sink, self.steps = snap.sink, snap.steps
        self.recent = deque(snap.recent, maxlen=self.recent.maxlen)

    def timed_step(self, snap: Snapshot) -> float:
        """Seconds of the step after ``snap``."""
        self.restore(snap)
        start = time.perf_counter()
        self.step()
        return time.perf_counter() - start

    def timed_no_cache_step(self, snap: Snapshot) -> float:
        """Seconds of the same step done by :class:`RecomputeRollout`, without the cache.

        The baseline's history is the snapshot's own sink and receptive field, so it generates
        the chunk the cached engine generates next.
        """
        self.restore(snap)
        baseline = RecomputeRollout(self.model.dit, self.model.config.sampler)
        assert self.sink is not None, "snapshot before any step"
        chunks = [self.sink, *self.recent]
        baseline.set_history(chunks, [self.actions] * len(chunks))
        start = time.perf_counter()
        with torch.inference_mode(), precision("cpu", self.dtype):
            latents = baseline.generate(self.actions, self.modality, self.gens)
            self.model.vae.decode(latents)
        return time.perf_counter() - start

    def flops_per_step(self, snap: Snapshot) -> int:
        """FLOPs of the step after ``snap`` (matmuls, convolutions, attention)."""
        self.restore(snap)
        with FlopCounterMode(display=False, custom_mapping=_FLOP_FORMULAS) as counter:
            self.step()
        return counter.get_total_flops()


def interleaved(fns: Mapping[str, Callable[[], float]], repeats: int) -> dict[str, float]:
    """Median of each timing function, called in turn ``repeats`` times."""
    samples: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            samples[name].append(fn())
    return {k: statistics.median(v) for k, v in samples.items()}


def engine_benchmark(
    config: WorldModelConfig,
    dtypes: Sequence[str],
    batch: int,
    long_steps: int,
    repeats: int,
) -> dict[str, Any]:
    """Measure the engine and return every figure (also printed as it goes)."""
    model = random_model(config)
    results: dict[str, Any] = {"machine": machine_info(), "model": model_info(model)}
    _print_header(results)
    for i, name in enumerate(dtypes):
        # Cache properties do not depend on the dtype: measure them with the first only.
        row = latency_figures(model, name, long_steps if i == 0 else 0, repeats)
        row.update(throughput_figures(model, name, batch, repeats))
        results[name] = row
        _print_row(name, row, batch)
    return results


def random_model(config: WorldModelConfig) -> WorldModel:
    """A model with random (not zero-initialised) weights: timing does not depend on values."""
    torch.manual_seed(0)
    model = WorldModel(config).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.02)
    return model


def latency_figures(model: WorldModel, name: str, long_steps: int, repeats: int) -> dict:
    """Batch-1 step time at step 10; with ``long_steps``, also at 64 (vs no cache) and far out."""
    frames = model.config.dit.chunk_frames
    one = EngineRun(model, 1, DTYPES[name])
    one.advance(10, progress=f"{name}: to step 10")
    timers = {"10": partial(one.timed_step, one.snapshot())}
    if long_steps:
        one.advance(54, progress=f"{name}: to step 64")
        at64 = one.snapshot()
        timers["64"] = partial(one.timed_step, at64)
        timers["64 no cache"] = partial(one.timed_no_cache_step, at64)
        if long_steps > 64:
            one.advance(long_steps - 64, progress=f"{name}: to step {long_steps}")
            timers["long"] = partial(one.timed_step, one.snapshot())
    med = interleaved(timers, 2 * repeats + 1)
    row = {"step_ms_at_10": 1e3 * med["10"], "fps_batch1": frames / med["10"]}
    if "64" in med:
        row["cached_ms_at_64"] = 1e3 * med["64"]
        row["no_cache_ms_at_64"] = 1e3 * med["64 no cache"]
        row["no_cache_over_cached"] = med["64 no cache"] / med["64"]
    if "long" in med:
        row["long_step"] = long_steps
        row["step_ms_at_long"] = 1e3 * med["long"]
        row["long_over_10"] = med["long"] / med["10"]
    return row


def throughput_figures(model: WorldModel, name: str, batch: int, repeats: int) -> dict:
    """Frames/s and achieved FLOP/s of a batch, against the matmul peak sampled in between."""
    dtype = DTYPES[name]
    big = EngineRun(model, batch, dtype)
    big.advance(2, progress=f"{name}: batch {batch} warm-up")
    snap = big.snapshot()
    med = interleaved(
        {"step": partial(big.timed_step, snap), "peak": partial(_inv_peak, dtype)}, repeats
    )
    gflops = big.flops_per_step(snap) / 1e9
    return {
        f"fps_batch{batch}": batch * model.config.dit.chunk_frames / med["step"],
        "matmul_peak_gflops": 1.0 / med["peak"],
        "gflops_per_step": gflops,
        "achieved_gflops": gflops / med["step"],
        "fraction_of_peak": gflops / med["step"] * med["peak"],
    }


def vae_benchmark(model: WorldModel, frame_counts: Sequence[int], repeats: int) -> dict:
    """Encode and decode ``n`` frames in one pass against ``VAE``'s CPU passes; prints figures."""
    from gym_worldmodel.models.vae import CPU_FRAMES_PER_PASS, to_unit

    vae, size = model.vae.eval(), model.config.vae.image_size
    results: dict[str, Any] = {"frames_per_pass": CPU_FRAMES_PER_PASS}
    print(f"VAE passes of {CPU_FRAMES_PER_PASS} frames against one pass, float32")
    for n in frame_counts:
        x = to_unit(torch.randint(0, 256, (n, size, size, 3), dtype=torch.uint8))
        with torch.no_grad():
            z = vae.encoder(x[:1])[0].expand(n, -1, -1, -1).contiguous()
            fns = {
                "decode_one_pass": lambda z=z: median_seconds(lambda: vae.decoder(z), 1, 0),
                "decode_passes": lambda z=z: median_seconds(lambda: vae.decode_float(z), 1, 0),
                "encode_one_pass": lambda x=x: median_seconds(lambda: vae.encoder(x), 1, 0),
                "encode_passes": lambda x=x: median_seconds(lambda: vae.encode_posterior(x), 1, 0),
            }
            for fn in fns.values():
                fn()  # warm-up
            row = {k: 1000 * v for k, v in interleaved(fns, repeats).items()}
        results[f"frames_{n}"] = row
        for what in ("decode", "encode"):
            one, passes = row[f"{what}_one_pass"], row[f"{what}_passes"]
            print(
                f"  {n:4d} frames, {what}: one pass {one:7.1f} ms, in passes {passes:7.1f} ms, "
                f"{one / passes:.2f}x"
            )
    return results


def flow_benchmark(batches: Sequence[int], repeats: int, dtype: str, width: int) -> dict:
    """The flow warp's net on contiguous against channels-last CPU images; prints figures.

    A random net of the shipped width on 64 x 64 frames: the layout, not the weights, sets the
    time. Also reports the largest difference between the two layouts' flows (pixels).
    """
    from gym_worldmodel.models.flow import FlowNet

    dit = WorldModelConfig.compact().dit
    cond_dim = dit.action_dim + len(dit.modalities)  # what FlowWarp feeds it
    net = FlowNet(3, cond_dim, width).eval()
    torch.nn.init.normal_(net.out.weight, std=0.02)  # a net that moves something
    formats = {"contiguous": torch.contiguous_format, "channels_last": torch.channels_last}
    results: dict[str, Any] = {"dtype": dtype, "width": width}
    print(f"flow net (width {width}, 64 x 64) per call, contiguous against channels-last, {dtype}")

    def flow(fmt: torch.memory_format, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        net.cpu_memory_format = fmt
        return net(x, c).float()

    for n in batches:
        x, c = torch.rand(n, 3, 64, 64) * 2 - 1, torch.randn(n, cond_dim)
        with torch.no_grad(), precision(torch.device("cpu"), DTYPES[dtype]):
            flows = {k: flow(fmt, x, c) for k, fmt in formats.items()}  # also the warm-up
            fns = {
                k: partial(median_seconds, partial(flow, fmt, x, c), 1, 0)
                for k, fmt in formats.items()
            }
            row = {k: 1000 * v for k, v in interleaved(fns, repeats).items()}
        del net.cpu_memory_format  # back to the class's layout
        row["max_flow_difference"] = float(
            (flows["contiguous"] - flows["channels_last"]).abs().max()
        )
        results[f"batch_{n}"] = row
        print(
            f"  {n:3d} images: contiguous {row['contiguous']:6.1f} ms, channels-last "
            f"{row['channels_last']:6.1f} ms, {row['contiguous'] / row['channels_last']:.2f}x; "
            f"flows differ by at most {row['max_flow_difference']:.1e} px"
        )
    return results


def _inv_peak(dtype: torch.dtype) -> float:
    """Seconds per GFLOP of the matmul peak (a time, so medians combine with step times)."""
    return 1.0 / matmul_peak(dtype)


def machine_info() -> dict[str, Any]:
    """What the figures were measured on."""
    flags = set()
    try:
        text = Path("/proc/cpuinfo").read_text()
        flags = {f for f in ("amx_bf16", "avx512_bf16", "avx512f", "avx2") if f" {f}" in text}
    except OSError:
        pass
    return {
        "cpu": platform.processor() or platform.machine(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cpu_flags": sorted(flags),
    }


def model_info(model: WorldModel) -> dict[str, Any]:
    """Size and geometry of the benchmarked model."""
    cfg = model.config
    return {
        **model.num_parameters(),
        "frame": cfg.vae.image_size,
        "chunk_frames": cfg.dit.chunk_frames,
        "tokens_per_chunk": cfg.dit.tokens_per_chunk,
        "cache_chunks": 1 + cfg.dit.memory_chunks + cfg.dit.window_chunks,
        "nfe": cfg.sampler.nfe,
    }


def _print_header(results: dict[str, Any]) -> None:
    m, info = results["model"], results["machine"]
    print(
        f"torch {info['torch']}, {info['threads']} threads, CPU flags {info['cpu_flags']}\n"
        f"model: DiT {m['dit'] / 1e6:.1f}M + VAE {m['vae'] / 1e6:.2f}M params, "
        f"{m['frame']}x{m['frame']} frames, {m['chunk_frames']} frames/step, "
        f"{m['tokens_per_chunk']} tokens/step, nfe {m['nfe']} + 1 cache write"
    )


def _print_row(name: str, row: dict[str, Any], batch: int) -> None:
    print(f"[{name}]")
    print(f"  step time at step 10:     {row['step_ms_at_10']:.1f} ms (batch 1, with VAE decode)")
    if "long_step" in row:
        print(
            f"  step time at step {row['long_step']}:   {row['step_ms_at_long']:.1f} ms "
            f"-> ratio {row['long_over_10']:.3f} (target <= 1.10)"
        )
    if "no_cache_ms_at_64" in row:
        print(
            f"  step 64: cached {row['cached_ms_at_64']:.1f} ms, no-cache recompute "
            f"{row['no_cache_ms_at_64']:.1f} ms -> the cache is {row['no_cache_over_cached']:.1f}x "
            "faster"
        )
    print(f"  frames/s batch 1:         {row['fps_batch1']:.1f} (target >= 25)")
    print(f"  frames/s batch {batch}:        {row[f'fps_batch{batch}']:.1f}")
    print(
        f"  batch {batch}: {row['gflops_per_step']:.0f} GFLOP/step at {row['achieved_gflops']:.0f} "
        f"GFLOP/s = {100 * row['fraction_of_peak']:.0f}% of the {name} matmul peak "
        f"({row['matmul_peak_gflops']:.0f} GFLOP/s, 2048^2 linear, same run; target >= 30%)"
    )


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Command-line entry: ``python -m gym_worldmodel.bench engine [options]``."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.json is not None:  # checked and its folder made before the run, not after it
        if args.json.is_dir():
            parser.error(f"--json {args.json} is a folder: name the file to write")
        args.json.parent.mkdir(parents=True, exist_ok=True)
    results = run(args, parser)
    if args.json:
        text = (json.dumps(results, indent=2) + "\n").encode()
        atomic_write(args.json, lambda f: f.write(text))
    return results


def _add_output_flags(parser: argparse.ArgumentParser, tiny: bool = True) -> None:
    """``--tiny`` (where the benchmark builds its model) and ``--json``, which every one takes."""
    if tiny:
        parser.add_argument("--tiny", action="store_true", help="tiny test model (a smoke run)")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")


def build_parser() -> argparse.ArgumentParser:
    """The ``bench`` command's parser: one subcommand per benchmark."""
    parser = argparse.ArgumentParser(
        prog="gym-worldmodel bench",
        description="Benchmarks that print their figures (medians; ratios within one run).",
    )
    sub = parser.add_subparsers(dest="what", required=True)
    eng = sub.add_parser("engine", help="chunk latency, cache flatness, throughput, FLOP/s")
    eng.add_argument("--dtype", nargs="+", choices=sorted(DTYPES), default=["float32", "bfloat16"])
    eng.add_argument("--batch", type=positive_int, default=32, help="batch of the throughput run")
    eng.add_argument(
        "--long-steps", type=positive_int, default=2000, help="episode length for flatness"
    )
    eng.add_argument("--repeats", type=positive_int, default=5, help="timed samples per figure")
    _add_output_flags(eng)
    env = sub.add_parser("env", help="env-steps/s, frames/s and env overhead over the engine")
    env.add_argument("--world", default="citywalk", choices=["citywalk", "robot", "driving"])
    env.add_argument(
        "--sizes", type=positive_int, nargs="+", default=[1, 8, 64], help="vector env rows"
    )
    env.add_argument("--repeats", type=positive_int, default=10, help="timed samples per figure")
    env.add_argument(
        "--model", default=None, help="checkpoint or 'random' (default: the world's shipped)"
    )
    env.add_argument("--dtype", default="auto", choices=["auto", *DTYPES], help="envs' dtype")
    env.add_argument(
        "--nfe", type=denoiser_passes, help="denoiser passes per step (default: the checkpoint's)"
    )
    env.add_argument("--device", default="cpu", help="the envs' torch device (cpu, cuda)")
    env.add_argument(
        "--simulator",
        action="store_true",
        help="also time the simulator the world was trained on behind the same interface "
        "(Simulator-<World>-v0: one, and one per core in processes)",
    )
    _add_output_flags(env)
    state = sub.add_parser("state", help="get_state, set_state, fork and a step of the forks")
    state.add_argument("--world", default="citywalk", choices=["citywalk", "robot", "driving"])
    state.add_argument("--rows", type=positive_int, default=8, help="rows of the env forked")
    state.add_argument(
        "--forks", type=positive_int, nargs="+", default=[1, 8, 64], help="futures per fork"
    )
    state.add_argument("--repeats", type=positive_int, default=7, help="timed samples per figure")
    state.add_argument("--dtype", default="auto", choices=["auto", *DTYPES], help="envs' dtype")
    _add_output_flags(state)
    sync = sub.add_parser("sync", help="host-device syncs a step makes on a CUDA device")
    sync.add_argument("--rows", type=positive_int, default=8, help="rows of each env")
    sync.add_argument("--steps", type=positive_int, default=5, help="steps counted")
    _add_output_flags(sync)
    mem = sub.add_parser("memory", help="step cost with spatial memory on vs off, and flatness")
    mem.add_argument(
        "--batch", type=positive_int, nargs="+", default=[1, 8], help="vector env rows"
    )
    mem.add_argument(
        "--long-steps", type=positive_int, default=600, help="far step (bank long full)"
    )
    mem.add_argument("--capacity", type=positive_int, default=256, help="bank capacity (chunks)")
    mem.add_argument("--repeats", type=positive_int, default=7, help="timed samples per figure")
    mem.add_argument(
        "--memory-guidance",
        type=non_negative_float,
        default=1.0,
        metavar="SCALE",
        help="SamplerConfig.memory_guidance of the env with memory (default 1: none)",
    )
    mem.add_argument(
        "--nfe",
        type=denoiser_passes,
        help="denoiser passes a step (default: the compact preset's 3; the shipped worlds run 1, "
        "driving 2)",
    )
    _add_output_flags(mem)
    vae = sub.add_parser("vae", help="VAE encode/decode in one pass vs in small CPU passes")
    vae.add_argument(
        "--frames", type=positive_int, nargs="+", default=[3, 24, 192], help="frames per call"
    )
    vae.add_argument("--repeats", type=positive_int, default=7, help="timed samples per figure")
    _add_output_flags(vae)
    flow = sub.add_parser("flow", help="the flow warp's net on contiguous vs channels-last images")
    flow.add_argument(
        "--batch", type=positive_int, nargs="+", default=[4, 16, 64], help="images per call"
    )
    flow.add_argument("--repeats", type=positive_int, default=9, help="timed samples per figure")
    flow.add_argument("--dtype", default="bfloat16", choices=sorted(DTYPES), help="autocast dtype")
    flow.add_argument(
        "--width", type=positive_int, default=32, help="the net's first-level channels"
    )
    _add_output_flags(flow, tiny=False)
    train = sub.add_parser("train", help="a DiT training step (loss, backward, AdamW)")
    train.add_argument("--batch", type=positive_int, default=16, help="windows per step")
    train.add_argument(
        "--chunks",
        type=positive_int,
        nargs="+",
        default=[5, 9, 17],
        help="chunks per window (the teacher's default 5; self-forcing's gradient pass after k "
        "of its own chunks: k + 2)",
    )
    train.add_argument(
        "--memory", action="store_true", help="a retrieved memory chunk per window (--memory)"
    )
    train.add_argument(
        "--dtype", nargs="+", choices=sorted(DTYPES), default=["bfloat16", "float32"]
    )
    train.add_argument("--repeats", type=positive_int, default=5, help="timed steps per figure")
    _add_output_flags(train)
    prec = sub.add_parser("dtype", help="shipped worlds' held-out PSNR in float32 vs bf16")
    prec.add_argument("--data", type=Path, nargs="+", required=True, help="dataset directories")
    prec.add_argument("--horizons", type=positive_int, nargs="+", default=[1, 4, 16, 64])
    prec.add_argument("--model", default=None, help="checkpoint (default: the world's shipped)")
    _add_output_flags(prec, tiny=False)
    return parser


def run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> dict[str, Any]:
    """Run the benchmark ``args.what`` names and return its figures (printed as it goes)."""
    tiny = getattr(args, "tiny", False)
    config = WorldModelConfig.tiny() if tiny else WorldModelConfig()
    if args.what == "memory":
        from gym_worldmodel.bench_memory import memory_benchmark

        if args.long_steps < 12:  # its figures are at step 10 and at the far step after it
            parser.error(f"bench memory: --long-steps must be >= 12, got {args.long_steps}")

        print(
            f"torch {torch.__version__}, {torch.get_num_threads()} threads, float32, "
            f"memory guidance {args.memory_guidance:g}"
        )
        model = random_model(WorldModelConfig.tiny() if tiny else WorldModelConfig.compact())
        nfe = model.config.sampler.nfe if args.nfe is None else args.nfe
        model = model.with_sampler(nfe=nfe, memory_guidance=args.memory_guidance)
        results = memory_benchmark(model, args.batch, args.long_steps, args.repeats, args.capacity)
    elif args.what == "dtype":
        from gym_worldmodel.bench_dtype import dtype_benchmark

        print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
        results = dtype_benchmark(args.data, args.horizons, args.model)
    elif args.what == "train":
        from gym_worldmodel.bench_train import train_benchmark

        print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
        model = random_model(WorldModelConfig.tiny() if tiny else WorldModelConfig.compact())
        results = train_benchmark(
            model, args.batch, args.chunks, args.dtype, args.repeats, args.memory
        )
    elif args.what == "vae":
        print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
        model = random_model(WorldModelConfig.tiny() if tiny else WorldModelConfig.compact())
        results = vae_benchmark(model, args.frames, args.repeats)
    elif args.what == "flow":
        print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
        results = flow_benchmark(args.batch, args.repeats, args.dtype, args.width)
    elif args.what == "state":
        from gym_worldmodel.bench_env import state_benchmark

        print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
        model_name = "random-tiny" if tiny else None
        results = state_benchmark(
            model_name, args.world, args.rows, args.forks, args.repeats, args.dtype
        )
    elif args.what == "sync":
        from gym_worldmodel.bench_env import sync_benchmark

        print(f"torch {torch.__version__}")
        results = sync_benchmark("random-tiny" if tiny else None, args.rows, args.steps)
    elif args.what == "env":
        from gym_worldmodel.bench_env import env_benchmark, simulator_benchmark

        print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
        if tiny and args.model:
            parser.error("bench env: --tiny and --model name two models; give one")
        check_device(args.device)
        model_name = "random-tiny" if tiny else args.model
        results = env_benchmark(
            model_name, args.world, args.sizes, args.repeats, args.dtype, args.nfe, args.device
        )
        if args.simulator:
            results["simulator"] = simulator_benchmark(args.world, args.repeats)
    else:
        results = engine_benchmark(config, args.dtype, args.batch, args.long_steps, args.repeats)
    return results


if __name__ == "__main__":  # as ``gym-worldmodel bench``: a bad input is a one-line error
    import sys

    from gym_worldmodel.cli import main as cli_main

    sys.exit(cli_main(["bench", *sys.argv[1:]]))
