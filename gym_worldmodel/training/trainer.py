"""A small resumable training loop, shared by every training recipe.

A run directory holds ``checkpoint.pt`` (module, optimizer, step, generator states and the loss
history; read back with ``weights_only=True``, nothing else is unpickled), ``losses.json`` and,
with matplotlib (the ``train`` extra), ``losses.png``. Checkpoints are written atomically every
``save_every`` steps and when Ctrl-C or SIGTERM stops a run (after the step it came in); a run
started again in the same directory continues where the last checkpoint left it, drawing the
same batches and noise an uninterrupted run would have.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import importlib.util
import json
import math
import signal
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, cast

import torch
from torch import Tensor, nn
from tqdm import tqdm

from gym_worldmodel.files import atomic_write, remove_stale_temps
from gym_worldmodel.models import DTYPES, precision
from gym_worldmodel.plotting import pyplot
from gym_worldmodel.training.config import TrainConfig as TrainConfig  # re-exported
from gym_worldmodel.training.config import default_warmup as default_warmup

#: ``loss_fn(batch, generator) -> (loss, parts)``: the parts to log are detached 0-d tensors
#: (read back with the loss in one transfer a step) or host floats.
LossFn = Callable[[Any, torch.Generator], tuple[Tensor, Mapping[str, Tensor | float]]]


#: The signals a run defers to the end of its step, each with the handler it must have for a
#: run to take it over (Python's own for Ctrl-C; the default, which ends the process, for the
#: SIGTERM that ``timeout``, ``kill`` and job schedulers send), and what the run says of it.
_DEFERRED = (
    (signal.SIGINT, signal.default_int_handler, "interrupted", "Ctrl-C"),
    (signal.SIGTERM, signal.SIG_DFL, "terminated", "SIGTERM"),
)


@contextlib.contextmanager
def interrupt_after_step(
    then: str = "writing a checkpoint",
) -> Iterator[Callable[[], bool]]:
    """Defer Ctrl-C (SIGINT) and SIGTERM to the end of the training step they arrive in.

    Yields a function that says whether one came; the loop then writes a checkpoint (``then``:
    what the message on the first signal says comes after the step) and stops,
    so an interrupted run resumes from its last whole step (a step cut short would leave the
    weights, the optimizer and the generators out of step with each other). A second one stops
    at once, as usual. Only a signal at its usual handling is deferred (Python's own for SIGINT,
    the default for SIGTERM): where it is ignored, handled by the caller's handler, or cannot be
    handled here (a thread other than the main one), it is left as it is.
    """
    came = False
    main = threading.current_thread() is threading.main_thread()
    ours: dict[int, tuple[str, str]] = {
        sig: (said, name)
        for sig, usual, said, name in _DEFERRED
        if main and signal.getsignal(sig) is usual
    }
    previous = {sig: signal.getsignal(sig) for sig in ours}

    def first(signum: int, frame: Any) -> None:
        nonlocal came
        came = True
        for sig, handler in previous.items():  # a second one, of either kind: at once
            signal.signal(sig, handler)
        said, name = ours[signum]
        print(f"\n{said}: {then} after this step ({name} again to stop now)")

    for sig in ours:
        signal.signal(sig, first)
    try:
        yield lambda: came
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


class Trainer:
    """Train ``module`` on ``dataset`` with ``loss_fn``, checkpointing into ``run_dir``.

    Args:
        module: What is optimized (its parameters that require grad).
        dataset: Indexable items; a step stacks ``batch_size`` of them with ``collate``.
        loss_fn: Maps a batch and the run's generator to ``(loss, parts)``, the parts to log
            as detached 0-d tensors or floats.
        run_dir: Where checkpoints, losses and the plot go.
        config: Optimisation settings.
        collate: Batches a list of items (default ``torch.utils.data.default_collate``).
        on_save: Called after each checkpoint is written (``fit`` writes the loadable model
            there, so a run can be evaluated or shipped while it trains).
    """

    def __init__(
        self,
        module: nn.Module,
        dataset: Any,
        loss_fn: LossFn,
        run_dir: Path,
        config: TrainConfig,
        collate: Callable[[list], Any] = torch.utils.data.default_collate,
        on_save: Callable[[], object] | None = None,
    ) -> None:
        self.module, self.dataset, self.loss_fn, self.config = module, dataset, loss_fn, config
        self.collate, self.run_dir, self.on_save = collate, Path(run_dir), on_save
        self.run_dir.mkdir(parents=True, exist_ok=True)
        remove_stale_temps(self.run_dir)  # a killed run's half-written checkpoint or plot
        self.device = torch.device(config.device)
        self.dtype = DTYPES[config.dtype]
        module.to(self.device)
        params = [p for p in module.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
        self.data_gen = torch.Generator().manual_seed(config.seed)
        self.noise_gen = torch.Generator(self.device).manual_seed(config.seed + 1)
        self.step = 0
        self.history: list[dict[str, float]] = []
        if (self.run_dir / "checkpoint.pt").is_file():
            self._load()

    def train(self, progress: bool = True) -> list[dict[str, float]]:
        """Run to ``config.steps``; returns the loss history (one dict per step).

        ``progress`` shows a bar; without it, each checkpoint prints one line (step, the mean
        of each loss part since the last checkpoint, seconds per step), which suits a log file.
        """
        cfg = self.config
        if self.step >= cfg.steps:
            more = (
                "its learning rate has cooled down to 0: go on from its model in a new run"
                if cfg.cooldown
                else "a larger step count goes on from it"
            )
            print(
                f"{self.run_dir.name}: its checkpoint is at step {self.step}, the run asks for "
                f"{cfg.steps}: nothing to train ({more})",
                flush=True,
            )
        elif self.step and not progress:  # a bar starts at the step; a log says it
            print(f"{self.run_dir.name}: resuming at step {self.step}/{cfg.steps}", flush=True)
        bar = tqdm(total=cfg.steps, initial=self.step, desc=self.run_dir.name, disable=not progress)
        self.module.train()
        since, started = self.step, time.perf_counter()
        with interrupt_after_step() as interrupted:
            while self.step < cfg.steps:
                parts = self._one_step()
                self.history.append(parts)
                self.step += 1
                bar.update(1)
                bar.set_postfix(loss=f"{parts['loss']:.4f}")
                if self.step % cfg.save_every == 0 or self.step == cfg.steps or interrupted():
                    self.save()
                    if not progress:
                        print(self._summary(since, time.perf_counter() - started), flush=True)
                    since, started = self.step, time.perf_counter()
                if interrupted():  # (one that came while it saved too: the checkpoint is written)
                    break
        bar.close()
        if interrupted():  # stopped: the recipe goes no further (a next stage, its model)
            if since != self.step:  # it came between the check and the save's: not saved yet
                self.save()
            print(f"{self.run_dir.name}: checkpoint written at step {self.step}", flush=True)
            raise KeyboardInterrupt
        return self.history

    def _summary(self, since: int, seconds: float) -> str:
        """One log line for the steps after ``since``: mean loss parts and seconds per step."""
        recent = self.history[since:]
        parts = ", ".join(
            f"{k} {sum(h[k] for h in recent) / len(recent):.4f}"
            for k in recent[-1]
            if k != "grad_norm"
        )
        pace = seconds / (self.step - since)
        return (
            f"{self.run_dir.name} step {self.step}/{self.config.steps}, means of steps "
            f"{since + 1}-{self.step}: {parts} ({pace:.2f} s/step)"
        )

    def _one_step(self) -> dict[str, float]:
        cfg = self.config
        idx = torch.randint(len(self.dataset), (cfg.batch_size,), generator=self.data_gen)
        batch = to_device(self.collate([self.dataset[int(i)] for i in idx]), self.device)
        for group in self.optimizer.param_groups:
            group["lr"] = cfg.lr * learning_rate_factor(self.step, cfg)
        with precision(self.device, self.dtype):
            loss, parts = self.loss_fn(batch, self.noise_gen)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(self.module.parameters(), cfg.grad_clip)
        # one read-back a step (on a GPU each is a wait for the device), before any weight moves
        logged = host_floats({"loss": loss, "grad_norm": norm, **parts})
        for name, what in (("loss", "loss"), ("grad_norm", "gradient norm")):
            if not math.isfinite(logged[name]):  # a step by a NaN gradient: every weight NaN
                of_loss = "" if name == "loss" else f" (loss {logged['loss']:.4g})"
                kept = (
                    f"the last checkpoint in {self.run_dir} is intact"
                    if (self.run_dir / "checkpoint.pt").is_file()
                    else "no checkpoint was written yet"
                )
                raise FloatingPointError(
                    f"{what} is {logged[name]} at step {self.step}{of_loss}; {kept}"
                )
        self.optimizer.step()
        return logged

    def save(self) -> None:
        """Write the checkpoint, the loss history and the loss plot (each atomically)."""
        state = {
            "module": self.module.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "step": self.step,
            "data_gen": self.data_gen.get_state(),
            "noise_gen": self.noise_gen.get_state(),
            "device": self.device.type,
            "history": json.dumps(self.history),
            "settings": json.dumps(self.config.run_settings()),
            "steps": self.config.steps,  # the count its learning-rate schedule ran under
            "dataset_size": len(self.dataset),
        }
        state["sha256"] = fingerprint(state)
        atomic_write(self.run_dir / "checkpoint.pt", lambda f: torch.save(state, f))
        text = json.dumps(self.history) + "\n"
        atomic_write(self.run_dir / "losses.json", lambda f: f.write(text.encode()))
        if self.on_save is not None:  # the run's model first: the plot is for reading
            self.on_save()
        plot_losses(self.history, self.run_dir / "losses.png", title=self.run_dir.name)

    def _load(self) -> None:
        path = self.run_dir / "checkpoint.pt"
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
            started = state.get("device", "cpu")
            # checkpoints written before the fingerprint resume unchecked
            if "sha256" in state and state.pop("sha256") != fingerprint(state):
                raise ValueError("its content does not match its SHA-256: altered or damaged")
        except Exception as err:  # noqa: BLE001 - any failure means the file cannot be trusted
            raise ValueError(
                f"{path} cannot be read as a checkpoint: damaged, truncated or another kind of "
                f"file ({err}); move it away to start over"
            ) from err
        if started != self.device.type:  # before any weight is touched
            raise ValueError(
                f"{path} was trained on {started}: resume it there (device={started!r}) to draw "
                f"the noise an uninterrupted run would, or start a new run directory"
            )
        # Checkpoints written before these were recorded resume unchecked.
        saved = json.loads(state["settings"]) if "settings" in state else {}
        now = self.config.run_settings()
        changed = {k: (v, now.get(k)) for k, v in saved.items() if now.get(k) != v}
        if "warmup" in changed and state["step"] >= max(changed["warmup"]):
            del changed["warmup"]  # both warm-ups are over: the schedule from here is the same
        steps = state.get("steps", self.config.steps)  # (older checkpoints resume unchecked)
        if steps != self.config.steps and not self._same_rate_so_far(steps, int(state["step"])):
            changed["steps"] = (steps, self.config.steps)
        if state.get("dataset_size", len(self.dataset)) != len(self.dataset):
            changed["training items"] = (state["dataset_size"], len(self.dataset))
        if changed:
            what = ", ".join(f"{k} {old!r} -> {new!r}" for k, (old, new) in changed.items())
            why = (
                " (its learning rate's cool-down had begun under the old step count: a new run "
                "directory can start from its model)"
                if "steps" in changed
                else ""
            )
            raise ValueError(
                f"{path} is a run with other settings ({what}){why}: resuming would continue "
                "neither run. Resume with the same settings and data, or start a new run directory"
            )
        try:
            self.module.load_state_dict(state["module"])
            self.optimizer.load_state_dict(state["optimizer"])
        except Exception as err:  # noqa: BLE001 - any failure means the file cannot be trusted
            raise ValueError(
                f"{path} is not a checkpoint of this run ({err}); move it away to start over"
            ) from err
        self.step = int(state["step"])
        self.data_gen.set_state(state["data_gen"])
        self.noise_gen.set_state(state["noise_gen"])
        self.history = json.loads(state["history"])

    def _same_rate_so_far(self, steps: int, done: int) -> bool:
        """Whether the first ``done`` steps had the learning rate of this run under ``steps``.

        True while neither count's cool-down had begun: a run stopped in its stable phase may
        take more (or fewer) steps, and goes on as a run of the new count from the start would.
        """
        other = dataclasses.replace(self.config, steps=steps)
        return all(
            learning_rate_factor(t, other) == learning_rate_factor(t, self.config)
            for t in range(done)
        )


def to_device(batch: Any, device: torch.device) -> Any:
    """``batch`` (a tensor, or dicts, lists and tuples of them) with its tensors on ``device``."""
    if isinstance(batch, Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {k: to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, list | tuple):
        return type(batch)(to_device(v, device) for v in batch)
    return batch


def learning_rate_factor(step: int, cfg: TrainConfig) -> float:
    """Warm-up, stable, cool-down: the multiplier of ``cfg.lr`` at ``step`` (0-based)."""
    warm = min(1.0, (step + 1) / max(1, cast(int, cfg.warmup)))  # set by __post_init__
    decay_steps = int(cfg.cooldown * cfg.steps)
    left = cfg.steps - step
    return warm * (min(1.0, left / decay_steps) if decay_steps else 1.0)


def fingerprint(obj: Any) -> str:
    """SHA-256 of a checkpoint's content: every tensor's dtype, shape and bytes, in key order.

    torch's zip reader checks no CRC, so a flipped byte in a saved tensor would otherwise load
    as a silently different weight or optimizer state. Stored in the checkpoint (which stays a
    plain ``torch.load``-able dict) and checked on resume.
    """
    digest = hashlib.sha256()

    def feed(value: Any) -> None:
        if isinstance(value, torch.Tensor):
            t = value.detach().cpu().contiguous()
            digest.update(f"T{t.dtype}{tuple(t.shape)}".encode())
            if t.numel():  # (its bytes as a buffer, not copied)
                digest.update(t.reshape(-1).view(torch.uint8).numpy())  # type: ignore[arg-type]
        elif isinstance(value, dict):
            digest.update(b"{")
            for key in sorted(value, key=str):
                digest.update(repr(key).encode())
                feed(value[key])
            digest.update(b"}")
        elif isinstance(value, (list, tuple)):
            digest.update(b"[")
            for item in value:
                feed(item)
            digest.update(b"]")
        else:
            digest.update(repr(value).encode())

    feed(obj)
    return digest.hexdigest()


def host_floats(values: Mapping[str, Tensor | float]) -> dict[str, float]:
    """``values`` as floats, its 0-d tensors read back in one transfer.

    Through the first tensor's device, in float32 (float64 if a part is: no part loses digits
    on the way, and devices without float64 never see one).
    """
    tensors = [v for v in values.values() if torch.is_tensor(v)]
    if not tensors:
        return {k: float(v) for k, v in values.items()}
    device = tensors[0].device
    wide = torch.float64 if any(t.dtype == torch.float64 for t in tensors) else torch.float32
    stacked = torch.stack([t.detach().to(device, wide).reshape(()) for t in tensors])
    read = iter(stacked.tolist())
    return {k: next(read) if torch.is_tensor(v) else float(v) for k, v in values.items()}


def plotted_keys(history: list[dict[str, float]]) -> list[str]:
    """The curves :func:`plot_losses` draws: the losses, not the gradient norm nor counts.

    A part that equals the total loss at every step (a loss of one part) is left to the total;
    a term zero throughout (its weight 0) has no line on a log axis.
    """

    def drawn(key: str) -> bool:
        if key in ("grad_norm", "own_chunks") or all(h[key] <= 0 for h in history):
            return False
        return key == "loss" or any(h[key] != h.get("loss") for h in history)

    return [k for k in history[0] if drawn(k)] if history else []


def plot_losses(history: list[dict[str, float]], path: Path, title: str) -> None:
    """Loss curves (log scale, with a moving average) as a PNG; none without matplotlib.

    The curves are :func:`plotted_keys`'.
    """
    if importlib.util.find_spec("matplotlib") is None:  # the `train` extra; the run goes on
        warnings.warn(  # shown once a process: Python's default filter, once per place
            f"no loss plot ({path.name}): matplotlib is not installed (pip install "
            "'gym-worldmodel[train]'); losses.json holds the same figures",
            stacklevel=2,
        )
        return
    plt = pyplot()
    from matplotlib.ticker import MaxNLocator

    keys = plotted_keys(history)
    fig, ax = plt.subplots(figsize=(7, 4))
    k = max(1, len(history) // 50)  # the moving mean's steps
    for key in keys:
        values = torch.tensor([h[key] for h in history])
        smooth = values.unfold(0, k, 1).mean(1)
        ax.plot(range(k, k + len(smooth)), smooth.numpy(), label=key)  # at its last step
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel(f"loss (mean of the last {k} steps)" if k > 1 else "loss")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=100))
    plt.close(fig)
