"""World presets: what each registered id runs, and where its weights and start frames come from.

A world names its action head, its pose integrator and its bundled assets. The trained weights
ship inside the package: one backbone serves the worlds through its action experts, in
``gym_worldmodel/worlds/shared/`` (``config.json`` + ``model.safetensors``); a world that does
better with its own copy (``World.checkpoint``; the city walk and driving) has it beside its
start frames in ``gym_worldmodel/worlds/<name>/`` (``start_frames.npz``). A world whose weights are
missing says so clearly and can run any model the user passes (``model=`` a directory, a hub repo
id, a ``WorldModel``, or ``"random"`` / ``"random-tiny"`` for untrained weights, seeded, whose
zero-initialised layers get small random values so that frames follow actions, history and
memory as a trained model's do: a smoke test, or a test of those paths, sees them).
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from gym_worldmodel import files
from gym_worldmodel.envs.actions import ActionHead, CameraHead, DrivingHead, RobotHead
from gym_worldmodel.models import WorldModel, WorldModelConfig

RANDOM_MODELS = ("random", "random-tiny")


@dataclass(frozen=True)
class World:
    """One registered world.

    Attributes:
        name: Folder name of its assets.
        head: Default action head (mode can be changed per env).
        pose: ``"camera"``, ``"driving"`` or None (fixed camera).
        description: One line for the env card and errors.
        checkpoint: Folder (under ``worlds/``) of the checkpoint it loads by default.
        start_pose: The pose every episode starts from (driving: the speed its recorded
            episodes start at, so the pose moves with the road the start frame shows).
    """

    name: str
    head: ActionHead
    pose: str | None
    description: str
    checkpoint: str = "shared"
    start_pose: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0)

    @property
    def assets(self) -> Path:
        """Folder of the world's start frames."""
        return files.WORLDS_DIR / self.name

    @property
    def checkpoint_dir(self) -> Path:
        """Folder of the shipped checkpoint it loads by default."""
        return files.WORLDS_DIR / self.checkpoint

    def action_head(self, mode: str | None) -> ActionHead:
        """The head in ``mode`` (None: the default)."""
        if mode is None or mode == self.head.mode:
            return self.head
        return type(self.head)(mode=mode)


WORLDS: dict[str, World] = {
    # Its own checkpoint: the shared one, self-forced further on the camera worlds' data alone,
    # with moving anchors (DiTConfig.anchor_motion: the previous frame shifted and zoomed as the
    # keys turn and walk).
    "citywalk": World(
        "citywalk",
        CameraHead(),
        "camera",
        "first-person walk through a city",
        checkpoint="citywalk",
    ),
    # Flat by default: check_env and SB3 want [-1, 1] Boxes; action_mode="dict" is RT-1's dict.
    "robot": World("robot", RobotHead(mode="flat"), None, "tabletop robot arm, fixed camera"),
    # highway-env starts every recorded episode at 25 m/s. Its own checkpoint: the shared one
    # with anchors moved by the car's displacement (DiTConfig.anchor_ego: the last frame shifted
    # by what the pose integrates), self-forced on the driving data alone; it runs 2 denoiser
    # passes a step (its config's sampler.nfe), which keep its long rollouts in range.
    "driving": World(
        "driving",
        DrivingHead(),
        "driving",
        "top-down ego vehicle on a highway",
        checkpoint="driving",
        start_pose=(0.0, 0.0, 0.0, 25.0),
    ),
}


#: world -> the action modality its head encodes (``camera``, ``robot``, ``driving``)
WORLD_MODALITIES = {name: world.head.modality for name, world in sorted(WORLDS.items())}


def get_world(name: str) -> World:
    """The preset called ``name``; a ``ValueError`` lists the presets for an unknown one."""
    if name not in WORLDS:
        available = "; ".join(f"{w} ({world.description})" for w, world in sorted(WORLDS.items()))
        raise ValueError(f"unknown world {name!r}; available: {available}")
    return WORLDS[name]


ModelArg = WorldModel | str | os.PathLike | None


def shipped_checkpoint(world: World) -> Path:
    """The folder of ``world``'s embedded checkpoint; a clear error if this install lacks it."""
    from gym_worldmodel import hub

    if not (world.checkpoint_dir / hub.CONFIG_NAME).is_file():
        raise FileNotFoundError(
            f"the trained {world.name!r} world is not shipped in this install "
            f"({world.checkpoint_dir} has no checkpoint). Pass model= a checkpoint directory, a "
            "hub repo id or a WorldModel; or model='random' for untrained weights."
        )
    return world.checkpoint_dir


def model_config(world: World, model: ModelArg) -> WorldModelConfig:
    """The config of the model ``model=`` names, without loading weights where avoidable."""
    return model_source(world, model)[0]


def model_source(world: World, model: ModelArg) -> tuple[WorldModelConfig, Path | None]:
    """The config of the model ``model=`` names and its checkpoint directory, if it has one.

    A hub repo id resolves to its cached snapshot (downloaded where allowed) now; the weights
    load on the env's first reset. A ``WorldModel`` has the directory ``hub.from_pretrained``
    loaded it from (its ``checkpoint_dir``), if any; random weights have none.
    """
    from gym_worldmodel import hub

    if isinstance(model, WorldModel):
        return model.config, model.checkpoint_dir
    if model is not None and not isinstance(model, (str, os.PathLike)):
        raise ValueError(
            "model must be None (the shipped world), a checkpoint directory, a Hugging Face repo "
            f"id or a gym_worldmodel WorldModel, got {type(model).__name__}"
        )
    if model in RANDOM_MODELS:
        return (WorldModelConfig.tiny() if model == "random-tiny" else WorldModelConfig()), None
    if model is not None and not str(model).strip():
        raise ValueError("model='' names no checkpoint: pass None for the shipped world")
    directory = shipped_checkpoint(world) if model is None else hub.checkpoint_directory(model)
    return hub.read_config(directory / hub.CONFIG_NAME), directory


def load_model(world: World, model: ModelArg) -> WorldModel:
    """Resolve the ``model=`` argument of an env into a ``WorldModel`` on the CPU."""
    from gym_worldmodel import hub

    if isinstance(model, WorldModel):
        return model
    if model is None:
        return hub.from_pretrained(shipped_checkpoint(world))
    if model in RANDOM_MODELS:
        config = WorldModelConfig.tiny() if model == "random-tiny" else WorldModelConfig()
        with torch.random.fork_rng(), torch.no_grad():
            torch.manual_seed(0)
            model = WorldModel(config).eval()
            for p in model.parameters():
                if not p.any():  # zero-initialised (adaLN-Zero gates, output layers): nothing
                    p.normal_(0.0, 0.02)  # would pass, and frames ignore actions and history
            return model
    return hub.from_pretrained(model)


def check_finite_weights(model: WorldModel) -> None:
    """Raise ``ValueError`` naming the weights of ``model`` that hold NaN or inf.

    A checkpoint is checked as it loads (``hub.from_pretrained``); a model given to an env as an
    object is checked here, once, rather than giving black frames.
    """
    from gym_worldmodel import hub

    bad = hub.not_finite(model.state_dict())
    if bad:
        shown = ", ".join(bad[:4]) + (f" and {len(bad) - 4} more" if len(bad) > 4 else "")
        raise ValueError(f"model= holds NaN or inf in {shown} (a training run that diverged?)")


def start_frames(world: World, size: int, checkpoint: Path | None = None) -> np.ndarray:
    """The start frames ``(N, size, size, 3)`` uint8 of ``world`` (under ``checkpoint``).

    A checkpoint directory's own start frames for the world (``files.checkpoint_start_frames``)
    come first, then the world's bundled ones (``start_frames.npz``, key ``frames``); without
    either, a fixed set of procedural frames stands in: sky, horizon and ground in a few
    colours. The array is cached (per file and modification time) and shared, so it is
    read-only.
    """
    own = None if checkpoint is None else files.checkpoint_start_frames(checkpoint, world.name)
    own_file = own is not None and own.is_file()
    if own is not None and not own_file and (own.is_symlink() or own.exists()):
        # a folder, or a link to a file that is gone (a Hub cache's missing blob): not skipped
        what = (
            "a folder" if own.is_dir() else "a link to nothing" if own.is_symlink() else "no file"
        )
        raise ValueError(f"start frames {own}: expected an .npz file, found {what}")
    path = own if own is not None and own_file else world.assets / "start_frames.npz"
    path = path.resolve()
    stamp = path.stat().st_mtime_ns if path.is_file() else None
    return _start_frames(world, size, path, stamp)


@functools.lru_cache(maxsize=16)
def _start_frames(world: World, size: int, path: Path, stamp: int | None) -> np.ndarray:
    frames = _read_start_frames(world, size, path)
    frames.setflags(write=False)  # cached: every env of the process shares this array
    return frames


def _read_start_frames(world: World, size: int, path: Path) -> np.ndarray:
    if path.is_file():
        frames = _load_start_frames(path)
        return frames if frames.shape[1] == size else resize_frames(frames, size)
    rng = np.random.default_rng(sum(map(ord, world.name)))
    out = np.empty((8, size, size, 3), np.uint8)
    rows = np.linspace(0.0, 1.0, size)[:, None, None]
    for i in range(len(out)):
        sky, ground = rng.integers(40, 230, 3), rng.integers(20, 200, 3)
        horizon = rng.uniform(0.35, 0.65)
        img = np.where(rows < horizon, sky, ground) * (0.75 + 0.25 * rows)
        out[i] = np.broadcast_to(img, (size, size, 3)).astype(np.uint8)
    return out


def _load_start_frames(path: Path) -> np.ndarray:
    """The ``frames`` array of a start-frames file, checked: uint8 ``(N, H, H, 3)``, N >= 1."""
    expected = "an .npz whose 'frames' is uint8 (N, H, H, 3) RGB, N >= 1"
    try:
        data = files.load_numbers(path, keys=["frames"])
        if not isinstance(data, dict):
            raise KeyError("no 'frames' array: one array (an .npy)")
        frames = data["frames"]
    except (OSError, ValueError, KeyError) as err:
        # not an npz, a damaged one, pickled, no frames
        why = files.numpy_load_error(err)
        raise ValueError(f"start frames {path}: expected {expected} ({why})") from None
    if (
        frames.dtype != np.uint8
        or frames.ndim != 4
        or frames.shape[-1] != 3
        or frames.shape[1] != frames.shape[2]
        or len(frames) < 1
    ):
        raise ValueError(
            f"start frames {path}: expected {expected}, got {frames.dtype} {frames.shape}"
        )
    return frames


def fit_frames(frames: np.ndarray, size: int) -> np.ndarray:
    """uint8 ``(N, H, W, 3)`` of any size -> ``(N, size, size, 3)``: centre-cropped, then resized.

    Frames that are not square are cropped to a square (the worlds were trained on square
    frames; stretching would distort them); frames of the size already are returned as they are.
    """
    h, w = frames.shape[1:3]
    if h != w:
        side = min(h, w)
        top, left = (h - side) // 2, (w - side) // 2
        frames = frames[:, top : top + side, left : left + side]
    return resize_frames(frames, size) if frames.shape[1:3] != (size, size) else frames


def resize_frames(frames: np.ndarray, size: int) -> np.ndarray:
    """Resize uint8 ``(N, H, W, 3)`` frames to ``(N, size, size, 3)`` (bilinear, antialiased).

    Any strides are taken (a view such as ``img[..., ::-1]``, OpenCV's BGR to RGB, included).
    """
    x = torch.from_numpy(np.array(frames)).permute(0, 3, 1, 2).float()  # a contiguous copy
    x = torch.nn.functional.interpolate(
        x, size=(size, size), mode="bilinear", antialias=True, align_corners=False
    )
    return x.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()
