"""Save, load and share world-model checkpoints: local directories or Hugging Face Hub repos.

A checkpoint is a directory holding ``config.json`` (:meth:`WorldModelConfig.to_dict` plus
``"format": "gym-worldmodel/1"``) and ``model.safetensors`` (the model's state dict). Nothing is
ever unpickled. Hub repos are looked up in the local cache first and downloaded only when allowed.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import torch
from huggingface_hub import HfApi, snapshot_download
from huggingface_hub import constants as hf_constants
from huggingface_hub.errors import HfHubHTTPError, HFValidationError
from huggingface_hub.utils import validate_repo_id
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save

from gym_worldmodel.files import START_FRAMES, atomic_write, atomic_write_all
from gym_worldmodel.models import WorldModel, WorldModelConfig, available_device

if TYPE_CHECKING:
    from huggingface_hub import ModelCard

FORMAT = "gym-worldmodel/1"
CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
_TRUE_VALUES = {"1", "ON", "YES", "TRUE"}


def save_pretrained(
    model: WorldModel,
    directory: str | os.PathLike,
    dtype: torch.dtype | str | None = None,
    *,
    start_frames: bool = True,
) -> Path:
    """Write ``model`` as a checkpoint directory, replacing its files only once both are written.

    Args:
        model: The model to save.
        directory: Destination directory, created if needed.
        dtype: Storage dtype of the floating tensors (None: as they are), a floating
            ``torch.dtype`` or its name: ``torch.float16`` (``"float16"``) halves the file;
            loading casts back to the dtype asked of ``from_pretrained``.
        start_frames: Also copy the start frames of the checkpoint the model was loaded from
            (``start_frames/``, which an env running the checkpoint starts from) where
            ``directory`` has none of that world's.

    Returns:
        The checkpoint directory.

    Raises:
        ValueError: ``dtype`` is not floating, or a weight is NaN or inf (a diverged run):
            :func:`from_pretrained` would refuse the checkpoint, so the one there is kept.
    """
    if not isinstance(model, WorldModel):
        raise TypeError(f"save_pretrained saves a WorldModel, got {type(model).__name__}")
    directory = Path(directory).expanduser()
    if directory.exists() and not directory.is_dir():
        raise ValueError(f"{directory} is a file: a checkpoint is a directory (config + weights)")
    dtype = None if dtype is None else floating_dtype(dtype)
    tensors = {
        k: (v.to(dtype) if dtype is not None and v.is_floating_point() else v).detach().cpu()
        for k, v in model.state_dict().items()
    }
    tensors = {k: v.contiguous() for k, v in tensors.items()}
    bad = not_finite(tensors)
    if bad:
        raise ValueError(f"not saved: tensors holding NaN or inf ({len(bad)}): {_clip(bad)}")
    directory.mkdir(parents=True, exist_ok=True)
    text = json.dumps({"format": FORMAT, **model.config.to_dict()}, indent=2) + "\n"
    # Both files are written before either replaces the old one. The weights also name the
    # architecture they were saved with: a load between the two renames (or after a crash there)
    # that would mix an old config with new weights of another architecture is refused; with the
    # same architecture it reads the old config's sampler settings. And they carry a checksum of
    # their own data, so a damaged byte is an error at load, not a quietly different world.
    weights = save(tensors, {CHECKPOINT_KEY: _metadata(model.config, tensors)})
    atomic_write_all(
        {
            directory / WEIGHTS_NAME: lambda f: f.write(weights),
            directory / CONFIG_NAME: lambda f: f.write(text.encode("utf-8")),
        }
    )
    if start_frames:
        _carry_start_frames(model, directory)
    return directory


def _carry_start_frames(model: WorldModel, directory: Path) -> None:
    """Copy the start frames of the checkpoint ``model`` was loaded from that ``directory`` lacks.

    An env running a checkpoint starts from its ``start_frames/``: a model saved elsewhere takes
    them along, and the frames a directory already holds (a training run's own) stay.
    """
    source = model.checkpoint_dir
    if source is None or not (Path(source) / START_FRAMES).is_dir():
        return
    if Path(source).resolve() == directory.resolve():
        return
    (directory / START_FRAMES).mkdir(exist_ok=True)
    for path in sorted((Path(source) / START_FRAMES).glob("*.npz")):
        target = directory / START_FRAMES / path.name
        if not target.exists():

            def copy(f: IO[bytes], path: Path = path) -> None:
                f.write(path.read_bytes())

            atomic_write(target, copy)


def floating_dtype(dtype: torch.dtype | str) -> torch.dtype:
    """A floating ``torch.dtype`` from itself or its name (``"bfloat16"``, ``"torch.float16"``)."""
    name = dtype.removeprefix("torch.") if isinstance(dtype, str) else None
    value = getattr(torch, name, None) if name is not None else dtype
    if not isinstance(value, torch.dtype) or not value.is_floating_point:
        raise ValueError(f"dtype must be a floating torch dtype or its name, got {dtype!r}")
    return value


def not_finite(tensors: Mapping[str, torch.Tensor]) -> list[str]:
    """Names of the floating tensors holding NaN or inf."""
    return [k for k, v in tensors.items() if v.is_floating_point() and not torch.isfinite(v).all()]


#: Safetensors metadata key of a checkpoint's own record, a JSON object: ``architecture_sha256``
#: (of the VAE and DiT settings the weights were saved with) and ``weights_sha256`` (of the tensors
#: themselves, :func:`weights_sha256`). One key: safetensors writes several in no fixed order, and
#: a save gives the same bytes every time (``ship`` reproduces the shipped weights byte for byte).
CHECKPOINT_KEY = "gym_worldmodel"
#: The metadata key of checkpoints saved before :data:`CHECKPOINT_KEY`: the architecture alone.
ARCHITECTURE_KEY = "gym_worldmodel_architecture_sha256"


def _metadata(config: WorldModelConfig, tensors: dict[str, torch.Tensor]) -> str:
    record = {
        "architecture_sha256": _architecture(config),
        "weights_sha256": weights_sha256(tensors),
    }
    return json.dumps(record, sort_keys=True)


def weights_sha256(tensors: dict[str, torch.Tensor]) -> str:
    """SHA-256 of a state dict as stored: every tensor's name, dtype, shape and bytes, by name."""
    digest = hashlib.sha256()
    for name in sorted(tensors):
        tensor = tensors[name].detach().cpu().contiguous()
        digest.update(json.dumps([name, str(tensor.dtype), list(tensor.shape)]).encode())
        # (an ndarray is a buffer; numpy's stubs declare ``__buffer__`` only for Python >= 3.12)
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy())  # type: ignore[arg-type]
    return digest.hexdigest()


def _architecture(config: WorldModelConfig) -> str:
    """SHA-256 of ``config``'s VAE and DiT settings (the sampler and fps are free to edit)."""
    data = config.to_dict()
    text = json.dumps({"vae": data["vae"], "dit": data["dit"]}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


def from_pretrained(
    name_or_path: str | os.PathLike,
    *,
    revision: str | None = None,
    cache_dir: str | os.PathLike | None = None,
    local_files_only: bool | None = None,
    device: torch.device | str = "cpu",
    dtype: torch.dtype | str = torch.float32,
) -> WorldModel:
    """Load a checkpoint from a local directory or a Hugging Face Hub repo id.

    A repo is looked up in the local Hugging Face cache first; it is downloaded only if it is not
    cached, ``local_files_only`` is not True and offline mode (``HF_HUB_OFFLINE``) is off.

    Args:
        name_or_path: A checkpoint directory or a repo id such as ``"owner/name"``, which may
            name its revision after an ``@``: ``"owner/name@v1"``, ``"owner/name@<commit>"``.
        revision: Branch, tag or commit hash of the repo (default ``"main"``).
        cache_dir: Hugging Face cache directory (default: the standard one).
        local_files_only: If True never use the network; None or False allow downloading.
        device: Device to move the model to.
        dtype: Floating dtype (or its name) to cast the weights to. Run bf16 weights under
            ``gym_worldmodel.models.precision(device, torch.bfloat16)`` (autocast).

    Returns:
        The model in eval mode.

    Raises:
        FileNotFoundError: The directory, repo or one of its files cannot be found.
        NotADirectoryError: ``name_or_path`` is a file (a checkpoint is a directory).
        ValueError: A file is malformed or does not match the model its config describes.
    """
    dtype = floating_dtype(dtype)
    device = available_device(device)
    directory = checkpoint_directory(
        name_or_path, revision=revision, cache_dir=cache_dir, local_files_only=local_files_only
    )
    model = _load_directory(directory).to(dtype=dtype)  # its weights finite in float32
    overflow = not_finite(model.state_dict()) if dtype == torch.float16 else []  # (range)
    if overflow:
        raise ValueError(
            f"{directory}: weights overflow {dtype} ({len(overflow)}: {_clip(overflow)}); "
            "load them in float32 or bfloat16, whose range is float32's"
        )
    model = model.to(device=device).eval()
    model.checkpoint_dir = directory  # where it came from (an env reads its start frames there)
    return model


def checkpoint_directory(
    name_or_path: str | os.PathLike,
    *,
    revision: str | None = None,
    cache_dir: str | os.PathLike | None = None,
    local_files_only: bool | None = None,
) -> Path:
    """The local directory of a checkpoint: ``name_or_path`` itself, or a repo's cached snapshot.

    Resolves as :func:`from_pretrained` does (cache first, then a download where allowed)
    without loading the weights; :func:`read_config` then reads its ``config.json``.
    """
    if not str(name_or_path).strip():
        raise ValueError(
            "no checkpoint named: pass a checkpoint directory or a repo id 'owner/name'"
        )
    path = Path(name_or_path).expanduser()
    pinned = False  # "owner/name@v1": a Hub repo, whatever folders are here
    if isinstance(name_or_path, str) and not path.exists() and "@" in name_or_path:
        name_or_path, revision, pinned = _split_revision(name_or_path, revision)
        path = Path(name_or_path)
    if path.is_dir() and not pinned:
        directory = path
    elif path.is_file():  # a file named like a repo id ("runs/model.safetensors") too
        raise NotADirectoryError(f"{path} is a file; expected a checkpoint directory")
    elif isinstance(name_or_path, os.PathLike) or not _is_repo_id(name_or_path):
        what = (
            "a Path is read as a local directory only; a Hub repo id goes as a str"
            if isinstance(name_or_path, os.PathLike) and _is_repo_id(str(name_or_path))
            else "and it is not a valid Hugging Face repo id such as 'owner/name'"
        )
        raise FileNotFoundError(f"checkpoint directory {str(path)!r} does not exist ({what})")
    else:
        try:
            directory = _resolve_repo(name_or_path, revision, cache_dir, bool(local_files_only))
        except FileNotFoundError as err:
            # the local reading first: most often what was meant
            if path.parent.is_dir() and str(path.parent) != ".":  # "runs/studnet"
                raise FileNotFoundError(
                    f"checkpoint directory {str(path)!r} does not exist, though "
                    f"{str(path.parent)!r} does: a mistyped checkpoint path? (As a Hugging Face "
                    f"repo id: {err})"
                ) from err
            if len(path.parts) == 1:  # "citywalkk": neither a folder here nor an owner/name id
                raise FileNotFoundError(
                    f"there is no directory {str(path)!r} in {str(Path.cwd())!r}, and a Hub "
                    f"repo id is usually 'owner/name' (as a repo id: {err})"
                ) from err
            raise
    return directory


def push_to_hub(
    model: WorldModel,
    repo_id: str,
    *,
    revision: str | None = None,
    private: bool | None = None,
    commit_message: str = "Upload world model",
    token: str | None = None,
    dtype: torch.dtype | str | None = None,
) -> str:
    """Save ``model`` and upload the checkpoint to a Hugging Face Hub model repo.

    A model loaded by :func:`from_pretrained` takes the start frames of its checkpoint
    directory along (``start_frames/``, which ``gym-worldmodel train`` and ``ship --out``
    write), as :func:`save_pretrained` does, so an env from the repo starts from them; start
    frames the repo held from an earlier upload that this one lacks are deleted with the
    commit. A repo without a model card gets one (``README.md``: the library, the worlds the
    model was trained for, its size and how to load it); one it has is left as it is.

    Args:
        model: The model to upload.
        repo_id: Target repo, created if it does not exist.
        revision: Branch to commit to (default ``"main"``), created if needed.
        private: Visibility of a newly created repo (None: the Hub's default).
        commit_message: Message of the upload commit.
        token: Hub token (default: the locally stored one).
        dtype: Storage dtype of the floating weights, as :func:`save_pretrained`'s (None: as
            they are; ``torch.float16`` halves the upload).

    Returns:
        The commit URL returned by the Hub.
    """
    if _offline():
        raise ConnectionError(
            f"push_to_hub {repo_id}: offline mode is on (HF_HUB_OFFLINE); save_pretrained writes "
            "the checkpoint locally"
        )
    api = HfApi(token=token)
    with tempfile.TemporaryDirectory(prefix="gym-worldmodel-") as folder:
        save_pretrained(model, folder, dtype)  # with the start frames of its checkpoint
        try:
            api.create_repo(repo_id, exist_ok=True, private=private)
            if revision not in (None, "main"):
                api.create_branch(repo_id, branch=revision, exist_ok=True)
            if not api.file_exists(repo_id, "README.md", revision=revision):
                model_card(model, repo_id).save(Path(folder) / "README.md")
            info = api.upload_folder(
                repo_id=repo_id,
                folder_path=folder,
                revision=revision,
                commit_message=commit_message,
                delete_patterns=[f"{START_FRAMES}/*.npz"],  # the repo's: those of this upload
            )
        except Exception as err:
            # The Hub's own answers (a bad token, a missing repo: HfHubHTTPError and its kinds)
            # pass as they are; a network that does not reach it is named as such.
            if isinstance(err, HfHubHTTPError) or not _unreachable(err):
                raise
            raise ConnectionError(
                f"push_to_hub {repo_id}: the Hugging Face Hub cannot be reached "
                f"({type(err).__name__}: {err}); check the network"
            ) from err
    return str(info)


def model_card(model: WorldModel, repo_id: str) -> ModelCard:
    """The Hub model card :func:`push_to_hub` gives a repo that has none."""
    from huggingface_hub import ModelCard, ModelCardData

    config = model.config
    trained = config.trained_modalities
    worlds = ", ".join(trained) if trained else "not recorded"
    sizes = ", ".join(f"{part} {n / 1e6:.2f}M" for part, n in model.num_parameters().items())
    data = ModelCardData(
        library_name="gym-worldmodel",
        tags=["world-model", "video-diffusion", "gymnasium", "reinforcement-learning"],
    )
    side = config.vae.image_size
    return ModelCard(
        f"---\n{data.to_yaml()}\n---\n\n"
        f"# {repo_id}\n\n"
        "A generative world model for the gym-worldmodel library: a causal video diffusion "
        "transformer that plays as a Gymnasium environment.\n\n"
        f"- Action modalities it was trained on: {worlds}\n"
        f"- Frames: {side}x{side} RGB at {config.fps} frames a second, "
        f"{config.dit.chunk_frames} a step\n"
        f"- Denoiser passes a step: {config.sampler.nfe}\n"
        f"- Parameters: {sizes}\n\n"
        "```python\n"
        "import gymnasium as gym\n"
        "import gym_worldmodel\n\n"
        f'env = gym.make("WorldModel-CityWalk-v0", model="{repo_id}")  # or the Robot or '
        "Driving id, for a world it was trained on\n"
        "obs, info = env.reset(seed=0)\n"
        "```\n"
    )


def _unreachable(err: BaseException) -> bool:
    """Whether ``err`` says the network did not reach the Hub (OS, httpx or requests errors)."""
    names = {cls.__name__ for cls in type(err).__mro__}
    return isinstance(err, OSError) or bool(
        names & {"ConnectError", "ConnectionError", "TimeoutException", "Timeout", "NetworkError"}
    )


def _split_revision(name: str, revision: str | None) -> tuple[str, str | None, bool]:
    """``"owner/name@v1"`` as ``("owner/name", "v1", True)`` (as HfFileSystem's paths pin one).

    Anything else comes back as it was, with False: a path with an ``@`` in it is named by the
    usual errors.
    """
    repo_id, _, pinned = name.partition("@")
    if not _is_repo_id(repo_id):
        return name, revision, False
    if not pinned:
        raise ValueError(f"{name!r} names no revision after its '@' (owner/name@v1)")
    if revision is not None and revision != pinned:
        raise ValueError(
            f"{name!r} names revision {pinned!r} and revision={revision!r} another; give one"
        )
    return repo_id, pinned, True


def _is_repo_id(name: str) -> bool:
    try:
        validate_repo_id(name)
    except HFValidationError:
        return False
    return True


def _offline() -> bool:
    """Offline mode, from huggingface_hub (read at its import) or the environment (read now)."""
    env = os.environ.get("HF_HUB_OFFLINE", "").strip().upper()
    return bool(hf_constants.HF_HUB_OFFLINE) or env in _TRUE_VALUES


def _resolve_repo(
    repo_id: str, revision: str | None, cache_dir: str | os.PathLike | None, local_only: bool
) -> Path:
    """Directory of a repo snapshot: from the cache if complete there, else downloaded."""
    kwargs: dict[str, Any] = dict(
        revision=revision,
        cache_dir=cache_dir,
        allow_patterns=[CONFIG_NAME, WEIGHTS_NAME, f"{START_FRAMES}/*.npz"],
    )
    error: Exception | None = None
    lacking = ""
    try:
        folder = Path(snapshot_download(repo_id, local_files_only=True, **kwargs))
        missing = [n for n in (CONFIG_NAME, WEIGHTS_NAME) if not (folder / n).is_file()]
        if not missing:
            return folder
        lacking = f"; its cached snapshot {str(folder)!r} lacks {' and '.join(missing)}"
    except (OSError, ValueError) as err:
        error = err
    offline = _offline()
    if local_only or offline:
        why = ("HF_HUB_OFFLINE is set" if offline else "local_files_only=True") + lacking
        raise FileNotFoundError(_not_found(repo_id, revision, cache_dir, offline, why)) from error
    try:
        return Path(snapshot_download(repo_id, local_files_only=False, **kwargs))
    except Exception as err:
        why = f"downloading failed ({type(err).__name__}: {_first_line(err)})"
        raise FileNotFoundError(_not_found(repo_id, revision, cache_dir, offline, why)) from err


def _first_line(err: BaseException) -> str:
    """The line of huggingface_hub's message (several lines) that says what went wrong.

    Not its HTTP status line ("404 Client Error. (Request ID: ...)"): the next says "Repository
    Not Found", "Cannot access gated repo", ...
    """
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    said = [line for line in lines if not re.match(r"\d{3} (Client|Server) Error", line)]
    return (said or lines or [""])[0]


def _not_found(repo_id: str, revision: str | None, cache_dir: Any, offline: bool, why: str) -> str:
    cache = cache_dir if cache_dir is not None else hf_constants.HF_HUB_CACHE
    cached = Path(cache) / f"models--{repo_id.replace('/', '--')}"
    refs = sorted(p.name for p in (cached / "refs").glob("*") if p.is_file())
    snapshots = sorted(p.name for p in (cached / "snapshots").glob("*"))
    has = (
        f" (the cache holds other revisions of it: branches {refs}, commits "
        f"{[c[:12] for c in snapshots]}; a commit is pinned by its full hash)"
        if snapshots
        else ""
    )
    return (
        f"world model repo {repo_id!r} (revision {revision or 'main'!r}) is not in the Hugging "
        f"Face cache {str(cache)!r}{has} and was not downloaded: {why}. Offline mode is "
        f"{'on' if offline else 'off'}. To fix: pass a local directory written by "
        "save_pretrained, or run once online (HF_HUB_OFFLINE unset) to cache the repo."
    )


def _load_directory(directory: Path) -> WorldModel:
    """Validate and load a checkpoint directory on the CPU in float32."""
    for name in (CONFIG_NAME, WEIGHTS_NAME):
        if not (directory / name).is_file():
            raise _not_a_checkpoint(directory / name)
    config_path, weights_path = directory / CONFIG_NAME, directory / WEIGHTS_NAME
    config = read_config(config_path)
    try:
        with safe_open(weights_path, "pt") as f:
            metadata = f.metadata() or {}
        stored = load_file(weights_path)
    except (SafetensorError, OSError, ValueError) as err:
        raise ValueError(
            f"{weights_path} is not a readable safetensors file ({err}): a truncated or damaged "
            "copy or download (copy or download it again), or another format (re-save the model "
            "with save_pretrained)"
        ) from err
    saved_with, checksum = _saved_record(metadata, weights_path)
    if checksum is not None and checksum != weights_sha256(stored):
        raise ValueError(
            f"{weights_path} is damaged: its tensors no longer match the checksum they were saved "
            "with (a changed or lost byte in the file's data): copy or download it again; or "
            "another tool rewrote it with the old metadata: re-save it with save_pretrained"
        )
    if saved_with is not None and saved_with != _architecture(config):  # (oldest: None)
        # Refused before the model is built: a config.json edited to a huge model would
        # otherwise allocate it first. The same shapes may mean another thing (a VAE's scale).
        raise ValueError(
            f"{weights_path} was saved with another VAE/DiT configuration than {config_path} "
            "describes (a save interrupted or still under way, or config.json edited beyond its "
            "sampler and fps): save the model again"
        )
    tensors = WorldModel.upgrade_state_dict(stored)
    try:
        model = WorldModel(config)
    except (TypeError, ValueError, RuntimeError) as err:
        raise ValueError(f"cannot build a WorldModel from {config_path}: {err}") from err
    _check_tensors(tensors, model.state_dict(), weights_path)
    model.load_state_dict(tensors, strict=True)
    return model


def _saved_record(metadata: dict[str, str], path: Path) -> tuple[str | None, str | None]:
    """The architecture and weights checksums a checkpoint was saved with (None: not recorded)."""
    if CHECKPOINT_KEY not in metadata:  # saved before the weights had a checksum
        return metadata.get(ARCHITECTURE_KEY), None
    try:
        record = json.loads(metadata[CHECKPOINT_KEY])
        sums = record["architecture_sha256"], record["weights_sha256"]
        if not all(isinstance(v, str) and re.fullmatch("[0-9a-f]{64}", v) for v in sums):
            raise ValueError(f"expected two hex SHA-256 digests, got {sums}")
        return sums
    except (ValueError, TypeError, KeyError) as err:
        raise ValueError(
            f"{path}: its {CHECKPOINT_KEY!r} metadata is not the record save_pretrained writes "
            f"({type(err).__name__}: {err}); re-save with save_pretrained"
        ) from err


def _not_a_checkpoint(missing: Path) -> FileNotFoundError:
    folder, inside = missing.parent, missing.parent / "model"
    held = sorted(p.parent.name for p in folder.glob(f"*/{CONFIG_NAME}")) if folder.is_dir() else []
    if (inside / CONFIG_NAME).is_file():
        hint = f"; {str(folder)!r} looks like a training run: its checkpoint is {str(inside)!r}"
    elif held:  # ship --out's folder: one checkpoint per world
        named = ", ".join(repr(str(folder / n)) for n in held)
        hint = f"; {str(folder)!r} holds checkpoints in its folders: {named}"
    else:
        hint = ""
    what = "is a folder, not a file" if missing.is_dir() else "not found"
    return FileNotFoundError(
        f"{missing} {what}: a checkpoint directory holds {CONFIG_NAME} and {WEIGHTS_NAME} "
        f"(hub.save_pretrained and gym-worldmodel train write them){hint}"
    )


def read_config(path: Path) -> WorldModelConfig:
    """Read and validate a checkpoint's ``config.json``."""
    if not path.is_file():
        raise _not_a_checkpoint(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as err:
        raise ValueError(f"{path} is not valid JSON ({err}); expected a WorldModelConfig") from err
    if not isinstance(data, dict):
        raise ValueError(f"{path} must hold a JSON object, got {type(data).__name__}")
    fmt = data.pop("format", None)
    if fmt != FORMAT:
        newer = (
            "; written by a newer gym-worldmodel: upgrade it to load this checkpoint"
            if isinstance(fmt, str) and fmt.startswith("gym-worldmodel/")
            else ""
        )
        raise ValueError(f"{path}: 'format' is {fmt!r}, expected {FORMAT!r}{newer}")
    try:
        return WorldModelConfig.from_dict(data)
    except (TypeError, ValueError, KeyError, AttributeError) as err:
        raise ValueError(f"{path} is not a valid WorldModelConfig: {err}") from err


def _check_tensors(
    tensors: dict[str, torch.Tensor], expected: dict[str, torch.Tensor], path: Path
) -> None:
    """Raise ``ValueError`` listing every mismatch against ``expected``.

    Keys, shapes and dtypes, and every floating tensor that is not finite (a diverged or
    corrupted run).
    """
    common = sorted(tensors.keys() & expected.keys())
    problems = {
        "missing keys": sorted(expected.keys() - tensors.keys()),
        "unexpected keys": sorted(tensors.keys() - expected.keys()),
        "shape mismatches": [
            f"{k}: got {tuple(tensors[k].shape)}, expected {tuple(expected[k].shape)}"
            for k in common
            if tensors[k].shape != expected[k].shape
        ],
        "dtype mismatches": [
            f"{k}: got {tensors[k].dtype}, expected "
            + ("a floating dtype" if expected[k].is_floating_point() else str(expected[k].dtype))
            for k in common
            if not _dtype_ok(tensors[k].dtype, expected[k].dtype)
        ],
        "tensors holding NaN or inf": not_finite({k: tensors[k] for k in common}),
    }
    lines = [f"{kind} ({len(v)}): {_clip(v)}" for kind, v in problems.items() if v]
    if lines:
        raise ValueError(
            f"{path} does not match the model described by {CONFIG_NAME}: " + "; ".join(lines)
        )


def _dtype_ok(got: torch.dtype, want: torch.dtype) -> bool:
    """Any floating dtype may fill a floating tensor (it is cast); other dtypes must match."""
    return got.is_floating_point if want.is_floating_point else got == want


def _clip(items: list[str], limit: int = 8) -> str:
    shown = ", ".join(items[:limit])
    return shown + (f", ... ({len(items) - limit} more)" if len(items) > limit else "")
