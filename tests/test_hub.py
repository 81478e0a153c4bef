"""Checkpoint save/load, validation of broken checkpoints, offline Hub cache resolution, push."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import safetensors.torch
import torch
from huggingface_hub import constants as hf_constants
from huggingface_hub.errors import LocalEntryNotFoundError
from safetensors import safe_open

import gym_worldmodel.files
from gym_worldmodel import hub
from gym_worldmodel.hub import from_pretrained, push_to_hub, save_pretrained
from gym_worldmodel.models import WorldModel, WorldModelConfig
from gym_worldmodel.training.start_frames import write_checkpoint_start_frames

COMMIT = "0123456789abcdef0123456789abcdef01234567"


def assert_same_model(a: WorldModel, b: WorldModel) -> None:
    assert a.config == b.config
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert sa[k].dtype == sb[k].dtype, k
        assert torch.equal(sa[k], sb[k]), k


def snapshot_bytes(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir())}


@pytest.fixture
def saved(tmp_path: Path, tiny_model: WorldModel) -> Path:
    return save_pretrained(tiny_model, tmp_path / "ckpt")


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch) -> list[dict]:
    """HF_HUB_OFFLINE=1 in the environment; records every snapshot_download call."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    calls: list[dict] = []
    real = hub.snapshot_download

    def spy(repo_id: str, **kwargs):
        calls.append({"repo_id": repo_id, **kwargs})
        assert kwargs["local_files_only"] is True, "network attempted while offline"
        return real(repo_id, **kwargs)

    monkeypatch.setattr(hub, "snapshot_download", spy)
    return calls


def make_hf_cache(cache: Path, repo_id: str, checkpoint: Path, ref: str = "main") -> Path:
    """The Hugging Face cache layout for ``repo_id`` at commit ``COMMIT``, built by hand."""
    repo_dir = cache / ("models--" + repo_id.replace("/", "--"))
    snapshot = repo_dir / "snapshots" / COMMIT
    snapshot.mkdir(parents=True)
    for name in ("config.json", "model.safetensors"):
        shutil.copy(checkpoint / name, snapshot / name)
    (repo_dir / "refs").mkdir()
    (repo_dir / "refs" / ref).write_text(COMMIT)  # no trailing newline: the Hub reads it verbatim
    return snapshot


# -- local round trip ------------------------------------------------------------------------


def test_round_trip_is_bitwise(saved: Path, tiny_model: WorldModel) -> None:
    assert sorted(p.name for p in saved.iterdir()) == ["config.json", "model.safetensors"]
    config = json.loads((saved / "config.json").read_text())
    assert config["format"] == "gym-worldmodel/1"
    loaded = from_pretrained(saved)
    assert not loaded.training
    assert_same_model(loaded, tiny_model)
    assert_same_model(from_pretrained(str(saved)), tiny_model)


def test_round_trip_detects_changed_weights(saved: Path, tiny_model: WorldModel) -> None:
    with torch.no_grad():
        next(tiny_model.parameters()).add_(1e-3)
    with pytest.raises(AssertionError):
        assert_same_model(from_pretrained(saved), tiny_model)


def test_dtype_and_resave(saved: Path, tmp_path: Path) -> None:
    model = from_pretrained(saved, dtype=torch.bfloat16)
    assert all(p.dtype == torch.bfloat16 for p in model.parameters())
    again = from_pretrained(save_pretrained(model, tmp_path / "bf16"))  # bf16 tensors load fine
    assert next(again.parameters()).dtype == torch.float32
    with pytest.raises(ValueError, match="floating"):
        from_pretrained(saved, dtype=torch.int64)


def test_weights_past_float16s_range_are_refused_in_float16(tmp_path: Path, tiny_model) -> None:
    with torch.no_grad():
        next(tiny_model.parameters()).fill_(1e5)  # finite in float32, inf in float16
    folder = save_pretrained(tiny_model, tmp_path / "big")
    with pytest.raises(ValueError, match="overflow torch.float16.*bfloat16"):
        from_pretrained(folder, dtype="float16")
    assert next(from_pretrained(folder, dtype="bfloat16").parameters()).isfinite().all()


def test_bad_devices_and_targets_are_named(saved: Path, tiny_model, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="device takes a torch device"):
        from_pretrained(saved, device="banana")
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="is a file: a checkpoint is a directory"):
        save_pretrained(tiny_model, tmp_path / "file")
    with pytest.raises(TypeError, match="saves a WorldModel, got str"):
        save_pretrained("model", tmp_path / "x")  # type: ignore[arg-type]
    assert not (tmp_path / "x").exists()


def test_float16_storage_halves_the_file(saved: Path, tiny_model: WorldModel, tmp_path: Path):
    half = save_pretrained(tiny_model, tmp_path / "fp16", dtype=torch.float16)
    size = lambda d: (d / "model.safetensors").stat().st_size  # noqa: E731
    assert size(half) < 0.55 * size(saved)
    loaded = from_pretrained(half)
    for (k, a), b in zip(
        tiny_model.state_dict().items(), loaded.state_dict().values(), strict=True
    ):
        assert b.dtype == a.dtype, k
        assert torch.equal(b, a.half().to(a.dtype) if a.is_floating_point() else a), k


def test_save_is_atomic_and_overwrites(saved: Path, tiny_model: WorldModel) -> None:
    before = snapshot_bytes(saved)
    save_pretrained(tiny_model, saved)
    assert snapshot_bytes(saved) == before  # deterministic bytes, no leftover temp files


def test_failed_save_leaves_no_temp_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*args, **kwargs):
        raise RuntimeError("disk full")

    model = WorldModel(WorldModelConfig.tiny())
    monkeypatch.setattr(gym_worldmodel.files.os, "fsync", boom)  # fail in the middle of a write
    with pytest.raises(RuntimeError, match="disk full"):
        save_pretrained(model, tmp_path / "ckpt")
    assert list((tmp_path / "ckpt").iterdir()) == []


def test_a_full_disk_names_the_file_and_leaves_it_as_it_was(saved: Path, tiny_model, monkeypatch):
    import errno
    import shutil
    from collections import namedtuple

    before = snapshot_bytes(saved)

    def no_space(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(gym_worldmodel.files.os, "fsync", no_space)
    with pytest.raises(
        OSError, match=r"cannot write .*ckpt/.*: the disk is full; the file was left"
    ):
        save_pretrained(tiny_model, saved)
    assert snapshot_bytes(saved) == before

    def torch_full(*args, **kwargs):  # what torch.save's writer raises when the disk fills
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 3547776")

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(gym_worldmodel.files.os, "fsync", torch_full)
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(2**30, 2**30, 4096))
    with pytest.raises(OSError, match="the disk is full") as err:
        save_pretrained(tiny_model, saved)
    assert err.value.errno == errno.ENOSPC and "unexpected pos" in str(err.value.__cause__)
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(2**40, 0, 2**40))
    with pytest.raises(RuntimeError, match="unexpected pos"):  # room left: the writer's own error
        save_pretrained(tiny_model, saved)
    assert snapshot_bytes(saved) == before


def test_a_save_into_a_folder_not_writable_names_the_folder(saved: Path, tiny_model, monkeypatch):
    def denied(*args, **kwargs):  # what mkstemp raises there (root, as CI runs, is never denied)
        raise PermissionError(13, "Permission denied", str(saved / ".model.safetensors.x.tmp"))

    before = snapshot_bytes(saved)
    monkeypatch.setattr(gym_worldmodel.files.tempfile, "mkstemp", denied)
    with pytest.raises(PermissionError, match=r"the folder .*ckpt' is not writable \(Permission"):
        save_pretrained(tiny_model, saved)
    assert snapshot_bytes(saved) == before


def test_a_save_that_load_would_refuse_keeps_the_checkpoint_there(saved: Path, tiny_model) -> None:
    before = snapshot_bytes(saved)
    for dtype in (torch.int8, torch.bool, "int64", "float99"):
        with pytest.raises(ValueError, match="floating torch dtype"):
            save_pretrained(tiny_model, saved, dtype=dtype)
    diverged = WorldModel(tiny_model.config)
    next(diverged.parameters()).data.view(-1)[0] = float("inf")
    with pytest.raises(ValueError, match=r"not saved: tensors holding NaN or inf \(1\)"):
        save_pretrained(diverged, saved)
    assert snapshot_bytes(saved) == before
    # a write that fails for the second file leaves the first as it was too
    (saved / "config.json").unlink()
    (saved / "config.json").mkdir()
    with pytest.raises(IsADirectoryError):
        save_pretrained(WorldModel(tiny_model.config), saved)  # other weights
    assert (saved / "model.safetensors").read_bytes() == before["model.safetensors"]


def test_dtypes_may_be_named(saved: Path, tiny_model: WorldModel, tmp_path: Path) -> None:
    half = save_pretrained(tiny_model, tmp_path / "half", dtype="float16")
    assert snapshot_bytes(half) == snapshot_bytes(save_pretrained(tiny_model, half, torch.float16))
    assert next(from_pretrained(saved, dtype="bfloat16").parameters()).dtype == torch.bfloat16


# -- broken checkpoints ----------------------------------------------------------------------


def truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def torch_pickle(path: Path) -> None:
    torch.save({"weight": torch.zeros(3)}, path)


def random_bytes(path: Path) -> None:
    path.write_bytes(os.urandom(4096))


@pytest.mark.parametrize("corrupt", [truncate, torch_pickle, random_bytes])
def test_unreadable_weights(saved: Path, corrupt) -> None:
    corrupt(saved / "model.safetensors")
    before = snapshot_bytes(saved)
    with pytest.raises(ValueError, match=r"model\.safetensors is not a readable safetensors file"):
        from_pretrained(saved)
    assert snapshot_bytes(saved) == before


def test_a_changed_byte_in_the_weights_data_is_refused(saved: Path) -> None:
    path = saved / "model.safetensors"
    data = bytearray(path.read_bytes())
    data[-3] ^= 0x01  # one bit of the last tensor: still a readable, finite file
    path.write_bytes(bytes(data))
    before = snapshot_bytes(saved)
    with pytest.raises(ValueError, match=r"model\.safetensors is damaged: its tensors no longer"):
        from_pretrained(saved)
    assert snapshot_bytes(saved) == before


def test_weights_saved_before_the_checksum_still_load(saved: Path, tiny_model) -> None:
    path = saved / "model.safetensors"
    tensors = safetensors.torch.load_file(path)
    architecture = hub._architecture(tiny_model.config)
    safetensors.torch.save_file(tensors, path, {hub.ARCHITECTURE_KEY: architecture})
    assert_same_model(from_pretrained(saved), tiny_model)
    safetensors.torch.save_file(tensors, path, {hub.ARCHITECTURE_KEY: "0" * 64})
    with pytest.raises(ValueError, match="saved with another VAE/DiT configuration"):
        from_pretrained(saved)


def test_a_checkpoint_record_that_is_not_ours_is_a_clear_error(saved: Path) -> None:
    path = saved / "model.safetensors"
    tensors = safetensors.torch.load_file(path)
    null = '{"architecture_sha256": null, "weights_sha256": null}'
    for record in ("not json", '{"architecture_sha256": "0"}', "[]", null):
        safetensors.torch.save_file(tensors, path, {hub.CHECKPOINT_KEY: record})
        with pytest.raises(ValueError, match="metadata is not the record save_pretrained writes"):
            from_pretrained(saved)


def test_a_training_run_given_for_its_checkpoint_names_the_checkpoint(tmp_path, tiny_model):
    save_pretrained(tiny_model, tmp_path / "run" / "model")
    with pytest.raises(FileNotFoundError, match="looks like a training run: its checkpoint is"):
        from_pretrained(tmp_path / "run")


@pytest.mark.parametrize("name", ["model.safetensors", "config.json"])
def test_missing_file(saved: Path, name: str) -> None:
    (saved / name).unlink()
    with pytest.raises(FileNotFoundError, match=name.replace(".", r"\.") + " not found"):
        from_pretrained(saved)
    (saved / name).mkdir()
    with pytest.raises(FileNotFoundError, match=name.replace(".", r"\.") + " is a folder"):
        from_pretrained(saved)


def edit_config(directory: Path, edit) -> None:
    path = directory / "config.json"
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))


def test_bad_json(saved: Path) -> None:
    (saved / "config.json").write_text('{"format": "gym-worldmodel/1", ')
    before = snapshot_bytes(saved)
    with pytest.raises(ValueError, match=r"config\.json is not valid JSON"):
        from_pretrained(saved)
    assert snapshot_bytes(saved) == before


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        (lambda d: d["dit"].update(bogus=1), r"unknown keys \['bogus'\]"),
        (lambda d: d.update(extra=True), r"unknown keys \['extra'\]"),
        (lambda d: d.pop("format"), "'format' is None"),
        (
            lambda d: d.update(format="gym-worldmodel/99"),
            "expected 'gym-worldmodel/1'; written by a newer gym-worldmodel: upgrade",
        ),
        (lambda d: d["dit"].update(heads=3), "not a valid WorldModelConfig"),
        (lambda d: d["dit"].update(action_scale={"robot": [1.0]}), r"action_scale\['robot'\]"),
        (lambda d: d["dit"].update(action_scale={"arm": [1.0]}), "expected a modality"),
        (lambda d: d["dit"].update(action_scale={"driving": [1, 0]}), "finite positive"),
        (lambda d: d["dit"].update(heads=0), r"DiTConfig\.heads must be an int >= 1, got 0"),
        (lambda d: d["dit"].update(modalities=["camera"]), r"modalities must be dict\[str, int\]"),
        (lambda d: d["dit"].update(dim="128"), r"DiTConfig\.dim must be int, got str"),
        (lambda d: d["dit"].update(dim=128.0), r"DiTConfig\.dim must be int, got float"),
        (lambda d: d["dit"].update(frame_anchor="false"), "frame_anchor must be bool"),
        (lambda d: d["sampler"].update(stochastic="no"), "stochastic must be bool"),
        (lambda d: d["sampler"].update(shift=float("nan")), r"shift must be float \(finite\)"),
        (lambda d: d["sampler"].update(guidance_scale=1e400), r"guidance_scale must be float"),
        (lambda d: d["vae"].update(scaling_factor=0), "scaling_factor must be finite and > 0"),
        (lambda d: d["vae"].update(scaling_factor="x"), "scaling_factor must be float"),
        (lambda d: d.update(fps=0), "fps .0. must be a positive multiple"),
        (lambda d: d.update(fps=-15), "fps .-15. must be a positive multiple"),
        (lambda d: d.pop("sampler"), r"WorldModelConfig: lacks \['sampler'\]"),
        (lambda d: d["dit"].pop("dim"), r"DiTConfig: lacks \['dim'\]"),
        (lambda d: d["sampler"].pop("nfe"), r"SamplerConfig: lacks \['nfe'\]"),
        (lambda d: d["sampler"].update(nfe=True), r"SamplerConfig\.nfe must be int, got bool"),
    ],
)
def test_invalid_config(saved: Path, edit, match: str) -> None:
    edit_config(saved, edit)
    with pytest.raises(ValueError, match=match):
        from_pretrained(saved)


@pytest.mark.parametrize("depth", [3, 10**6])
def test_config_does_not_match_tensors(saved: Path, depth: int) -> None:
    # refused from the architecture the weights were saved with, before a model is built (a
    # million blocks would be allocated first)
    edit_config(saved, lambda d: d["dit"].update(depth=depth))
    before = snapshot_bytes(saved)
    with pytest.raises(ValueError, match="saved with another VAE/DiT configuration"):
        from_pretrained(saved)
    assert snapshot_bytes(saved) == before


def test_shape_and_key_mismatches_are_listed(saved: Path, tiny_model: WorldModel) -> None:
    tensors = {k: v.clone() for k, v in tiny_model.state_dict().items()}
    name = next(k for k, v in tensors.items() if v.ndim == 2)
    expected = tuple(tensors[name].shape)
    tensors[name] = torch.zeros(expected[0] + 1, expected[1])
    tensors["extra.weight"] = torch.zeros(1)
    float_name = next(k for k in tensors if k != name and k != "extra.weight")
    tensors[float_name] = tensors[float_name].to(torch.int32)
    safetensors.torch.save_file(tensors, saved / "model.safetensors")
    with pytest.raises(ValueError) as info:
        from_pretrained(saved)
    message = str(info.value)
    assert f"{name}: got {(expected[0] + 1, expected[1])}, expected {expected}" in message
    assert "unexpected keys (1): extra.weight" in message
    assert f"{float_name}: got torch.int32, expected a floating dtype" in message


def test_weights_and_config_of_two_saves_are_refused_not_mixed(saved: Path, tiny_model) -> None:
    import dataclasses
    import shutil

    config = tiny_model.config
    vae = dataclasses.replace(config.vae, scaling_factor=2.5)  # same shapes, other latents
    other = WorldModel(dataclasses.replace(config, vae=vae))
    elsewhere = save_pretrained(other, saved.parent / "other")
    # a save of ``other`` over ``saved`` that stopped between its two files
    shutil.copy(elsewhere / "model.safetensors", saved / "model.safetensors")
    with pytest.raises(ValueError, match="saved with another VAE/DiT configuration"):
        from_pretrained(saved)
    # so too where the shapes differ (the default model's weights beside the tiny config):
    # named as such, not as a list of every tensor that differs
    save_pretrained(WorldModel(WorldModelConfig()), saved.parent / "big")
    shutil.copy(saved.parent / "big" / "model.safetensors", saved / "model.safetensors")
    with pytest.raises(ValueError, match="saved with another VAE/DiT configuration"):
        from_pretrained(saved)
    edit_config(elsewhere, lambda d: d["sampler"].update(nfe=4))  # the sampler is free to edit
    assert from_pretrained(elsewhere).config.sampler.nfe == 4
    # a JSON writer that drops the ".0" of whole floats (jq, JSON.stringify) changes nothing
    edit_config(elsewhere, lambda d: d["dit"].update(mlp_ratio=int(d["dit"]["mlp_ratio"])))
    assert isinstance(from_pretrained(elsewhere).config.dit.mlp_ratio, float)


def test_weights_holding_nan_or_inf_are_refused(saved: Path, tiny_model: WorldModel) -> None:
    tensors = {k: v.clone() for k, v in tiny_model.state_dict().items()}
    name = next(k for k, v in tensors.items() if v.is_floating_point() and v.numel() > 1)
    tensors[name].view(-1)[0] = float("nan")
    safetensors.torch.save_file(tensors, saved / "model.safetensors")
    before = snapshot_bytes(saved)
    with pytest.raises(ValueError, match=rf"tensors holding NaN or inf \(1\): {name}"):
        from_pretrained(saved)
    assert snapshot_bytes(saved) == before


def test_anchor_motion_written_before_the_zoom_loads_with_zero_zoom(moving_model, tmp_path):
    """Checkpoints whose anchor motion is ``(M, A, 2)`` (shift only) still load."""
    moving_model.dit.anchor_motion.data[..., 2] = 0.0
    path = save_pretrained(moving_model, tmp_path / "old")
    tensors = safetensors.torch.load_file(path / "model.safetensors")
    tensors["dit.anchor_motion"] = tensors["dit.anchor_motion"][..., :2].contiguous()
    safetensors.torch.save_file(tensors, path / "model.safetensors")
    assert_same_model(from_pretrained(path), moving_model)


def test_path_that_does_not_exist(tmp_path: Path) -> None:
    for missing in [tmp_path / "nope", str(tmp_path / "nope"), "./nope-dir", "a/b/c", "~/x/y/z"]:
        with pytest.raises(FileNotFoundError, match="does not exist"):
            from_pretrained(missing)


def test_a_file_is_named_as_a_file_also_where_its_name_could_be_a_repo_id(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("afile").write_text("x")  # "afile" would be looked up on the Hub as a name
    (tmp_path / "runs").mkdir()
    Path("runs/model.safetensors").write_text("x")  # an owner/name shape
    for name in ("afile", "runs/model.safetensors", tmp_path / "afile"):
        with pytest.raises(NotADirectoryError, match="is a file; expected a checkpoint directory"):
            from_pretrained(name)


def test_folder_that_is_no_checkpoint_and_an_empty_name(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="a checkpoint directory holds config.json"):
        from_pretrained(tmp_path)  # exists, holds nothing
    for empty in ["", "  "]:  # not the current directory
        with pytest.raises(ValueError, match="no checkpoint named"):
            from_pretrained(empty)


# -- Hub repo ids from the local cache ---------------------------------------------------------


def test_repo_id_from_offline_cache(
    saved: Path, tiny_model: WorldModel, tmp_path: Path, offline: list[dict]
) -> None:
    snapshot = make_hf_cache(tmp_path / "hf", "owner/name", saved)
    assert_same_model(from_pretrained("owner/name", cache_dir=tmp_path / "hf"), tiny_model)
    model = from_pretrained("owner/name", cache_dir=tmp_path / "hf", revision=COMMIT)
    assert_same_model(model, tiny_model)
    assert [c["revision"] for c in offline] == [None, COMMIT]
    assert offline[0]["allow_patterns"] == [
        "config.json",
        "model.safetensors",
        "start_frames/*.npz",
    ]
    assert snapshot_bytes(snapshot) == snapshot_bytes(saved)


def test_a_repo_id_may_name_its_revision_after_an_at(
    saved: Path, tiny_model: WorldModel, tmp_path: Path, offline: list[dict], monkeypatch
) -> None:
    make_hf_cache(tmp_path / "hf", "owner/name", saved)
    for name, revision in [(f"owner/name@{COMMIT}", None), (f"owner/name@{COMMIT}", COMMIT)]:
        model = from_pretrained(name, cache_dir=tmp_path / "hf", revision=revision)
        assert_same_model(model, tiny_model)
    assert [(c["repo_id"], c["revision"]) for c in offline] == [("owner/name", COMMIT)] * 2
    with pytest.raises(ValueError, match="names revision 'v1' and revision='v2' another"):
        from_pretrained("owner/name@v1", cache_dir=tmp_path / "hf", revision="v2")
    with pytest.raises(FileNotFoundError, match="'owner/name' \\(revision 'v1'\\)"):
        from_pretrained("owner/name@v1", cache_dir=tmp_path / "hf")
    local = tmp_path / "runs@2" / "model"  # a folder with an "@" in its path is a folder
    shutil.copytree(saved, local)
    assert_same_model(from_pretrained(str(local)), tiny_model)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "owner" / "name").mkdir(parents=True)  # a pinned revision is the Hub repo's
    model = from_pretrained(f"owner/name@{COMMIT}", cache_dir=tmp_path / "hf")
    assert_same_model(model, tiny_model)
    with pytest.raises(ValueError, match="names no revision after its '@'"):
        from_pretrained("owner/name@", cache_dir=tmp_path / "hf")


def test_repo_id_from_cache_validates_files(saved: Path, tmp_path: Path, offline) -> None:
    snapshot = make_hf_cache(tmp_path / "hf", "owner/name", saved)
    truncate(snapshot / "model.safetensors")
    with pytest.raises(ValueError, match="not a readable safetensors file"):
        from_pretrained("owner/name", cache_dir=tmp_path / "hf")


def test_a_cached_repo_lacking_a_file_names_it(saved: Path, tmp_path: Path, offline) -> None:
    snapshot = make_hf_cache(tmp_path / "hf", "owner/name", saved)
    (snapshot / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="cached snapshot .* lacks model.safetensors"):
        from_pretrained("owner/name", cache_dir=tmp_path / "hf")


def test_unknown_repo_offline(saved: Path, tmp_path: Path, offline: list[dict]) -> None:
    make_hf_cache(tmp_path / "hf", "owner/name", saved)
    for repo_id, revision in [
        ("owner/other", None),
        ("owner/name", "f" * 40),
        ("owner/name", "v2"),
    ]:
        with pytest.raises(FileNotFoundError) as info:
            from_pretrained(repo_id, cache_dir=tmp_path / "hf", revision=revision)
        message = str(info.value)
        assert repo_id in message and "Offline mode is on" in message
        assert repr(revision or "main") in message and "save_pretrained" in message
        cached = "the cache holds other revisions of it: branches ['main']" in message
        assert cached == (repo_id == "owner/name")  # a revision it lacks: what it has
    assert len(offline) == 3
    with pytest.raises(
        FileNotFoundError,
        match="a Path is read as a local directory only; a Hub repo id goes as a str",
    ):
        from_pretrained(Path("owner/name"), cache_dir=tmp_path / "hf")


def test_a_mistyped_local_path_that_looks_like_a_repo_id_says_so(
    tmp_path: Path, offline: list[dict], monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "runs").mkdir()
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError) as info:
        from_pretrained("runs/studnet", cache_dir=tmp_path / "hf")
    message = str(info.value)
    assert message.startswith("checkpoint directory 'runs/studnet' does not exist, though 'runs'")
    assert "mistyped checkpoint path" in message
    assert message.count("ffline mode is on") == 1


def test_a_folder_of_checkpoints_names_them(tmp_path: Path) -> None:
    """``ship --out``'s folder holds one checkpoint per world: loading the folder names them."""
    model = WorldModel(WorldModelConfig.tiny())
    for world in ("citywalk", "driving"):
        save_pretrained(model, tmp_path / "worlds" / world)
    with pytest.raises(
        FileNotFoundError, match="holds checkpoints in its folders: .*citywalk', .*driving'$"
    ):
        from_pretrained(tmp_path / "worlds")


def test_a_bare_name_that_is_no_folder_here_nor_cached_says_where_it_looked(
    tmp_path: Path, offline: list[dict], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError) as info:
        from_pretrained("citywalkk", cache_dir=tmp_path / "hf")
    message = str(info.value)
    assert message.startswith(f"there is no directory 'citywalkk' in {str(tmp_path)!r}")
    assert "'owner/name'" in message


def test_offline_from_huggingface_hub_constant(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)
    calls = fake_snapshot_download(monkeypatch, cached=False)
    with pytest.raises(FileNotFoundError, match="Offline mode is on"):
        from_pretrained("owner/other", cache_dir=tmp_path)
    assert [c["local_files_only"] for c in calls] == [True]


def fake_snapshot_download(
    monkeypatch: pytest.MonkeyPatch, cached: bool, folder: Path | None = None
):
    """Replace snapshot_download: a cache hit/miss, and a "network" that returns ``folder``."""
    calls: list[dict] = []

    def fake(repo_id: str, **kwargs):
        calls.append(kwargs)
        if kwargs["local_files_only"] and not cached:
            raise LocalEntryNotFoundError("not cached")
        if folder is None:
            raise OSError("network unreachable")
        return str(folder)

    monkeypatch.setattr(hub, "snapshot_download", fake)
    return calls


def test_downloads_only_after_cache_miss(
    saved: Path, tiny_model: WorldModel, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", False)
    calls = fake_snapshot_download(monkeypatch, cached=False, folder=saved)
    assert_same_model(from_pretrained("owner/name", revision="v1"), tiny_model)
    assert [(c["local_files_only"], c["revision"]) for c in calls] == [(True, "v1"), (False, "v1")]

    calls = fake_snapshot_download(monkeypatch, cached=True, folder=saved)
    from_pretrained("owner/name")
    assert [c["local_files_only"] for c in calls] == [True]

    calls = fake_snapshot_download(monkeypatch, cached=False, folder=saved)
    with pytest.raises(FileNotFoundError, match="local_files_only=True"):
        from_pretrained("owner/name", local_files_only=True)
    assert [c["local_files_only"] for c in calls] == [True]

    calls = fake_snapshot_download(monkeypatch, cached=False)
    with pytest.raises(FileNotFoundError, match="network unreachable.*Offline mode is off"):
        from_pretrained("owner/name")
    assert len(calls) == 2


def test_incomplete_cached_snapshot_is_downloaded_again(
    saved: Path, tiny_model: WorldModel, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", False)
    partial = tmp_path / "partial"
    partial.mkdir()
    shutil.copy(saved / "config.json", partial / "config.json")  # weights never finished
    calls: list[bool] = []

    def fake(repo_id: str, **kwargs):
        calls.append(kwargs["local_files_only"])
        return str(partial if kwargs["local_files_only"] else saved)

    monkeypatch.setattr(hub, "snapshot_download", fake)
    assert_same_model(from_pretrained("owner/name"), tiny_model)
    assert calls == [True, False]


# -- push_to_hub -----------------------------------------------------------------------------


def test_push_to_hub(tiny_model: WorldModel, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    calls: list[tuple[str, dict]] = []

    class FakeApi:
        def __init__(self, token=None) -> None:
            calls.append(("init", {"token": token}))

        def create_repo(self, repo_id, **kwargs):
            calls.append(("create_repo", {"repo_id": repo_id, **kwargs}))

        def create_branch(self, repo_id, **kwargs):
            calls.append(("create_branch", {"repo_id": repo_id, **kwargs}))

        has_card = False

        def file_exists(self, repo_id, filename, revision=None):
            calls.append(("file_exists", {"filename": filename, "revision": revision}))
            return self.has_card

        def upload_folder(self, **kwargs):
            calls.append(("upload_folder", kwargs))
            shutil.copytree(kwargs["folder_path"], tmp_path / "uploaded")
            return "https://huggingface.co/owner/name/commit/abc"

    monkeypatch.setattr(hub, "HfApi", FakeApi)
    url = push_to_hub(tiny_model, "owner/name", private=True, token="tok", revision="dev")
    assert url == "https://huggingface.co/owner/name/commit/abc"
    steps = ["init", "create_repo", "create_branch", "file_exists", "upload_folder"]
    assert [c[0] for c in calls] == steps
    assert calls[0][1] == {"token": "tok"}
    assert calls[1][1] == {"repo_id": "owner/name", "exist_ok": True, "private": True}
    assert calls[3][1] == {"filename": "README.md", "revision": "dev"}
    upload = calls[4][1]
    assert upload["repo_id"] == "owner/name" and upload["revision"] == "dev"
    assert upload["commit_message"] == "Upload world model"
    assert upload["delete_patterns"] == ["start_frames/*.npz"]  # an earlier upload's go
    assert not Path(upload["folder_path"]).exists()  # temporary folder cleaned up
    uploaded = tmp_path / "uploaded"
    names = ["README.md", "config.json", "model.safetensors"]
    assert sorted(p.name for p in uploaded.iterdir()) == names
    card = (uploaded / "README.md").read_text()
    assert "library_name: gym-worldmodel" in card and 'model="owner/name"' in card
    assert_same_model(from_pretrained(uploaded), tiny_model)
    shutil.rmtree(uploaded)  # a repo with a card keeps its own; weights stored as asked
    monkeypatch.setattr(FakeApi, "has_card", True)
    push_to_hub(tiny_model, "owner/name", dtype="float16")
    assert sorted(p.name for p in uploaded.iterdir()) == ["config.json", "model.safetensors"]
    with safe_open(uploaded / "model.safetensors", "pt") as f:
        assert {f.get_tensor(k).dtype for k in f.keys()} <= {torch.float16, torch.int64}
    # a model loaded from a checkpoint with start frames takes them along
    own = save_pretrained(tiny_model, tmp_path / "own")
    write_checkpoint_start_frames(own, {"citywalk": np.zeros((2, 32, 32, 3), np.uint8)})
    shutil.rmtree(uploaded)
    push_to_hub(from_pretrained(own), "owner/name")
    assert (uploaded / "start_frames" / "citywalk.npz").is_file()
    # and so does one saved to a folder; frames the folder holds of its own stay
    mine = tmp_path / "mine"
    write_checkpoint_start_frames(mine, {"citywalk": np.ones((1, 32, 32, 3), np.uint8)})
    save_pretrained(from_pretrained(own), mine)
    save_pretrained(from_pretrained(own), tmp_path / "copy")
    with np.load(mine / "start_frames" / "citywalk.npz") as kept:
        assert len(kept["frames"]) == 1
    with np.load(tmp_path / "copy" / "start_frames" / "citywalk.npz") as carried:
        assert len(carried["frames"]) == 2
    save_pretrained(from_pretrained(own), own)  # onto itself: its frames stay as they were
    assert sorted(p.name for p in (own / "start_frames").iterdir()) == ["citywalk.npz"]
    with np.load(own / "start_frames" / "citywalk.npz") as same:
        assert len(same["frames"]) == 2

    def unreachable(self, repo_id, **kwargs):
        raise OSError("[Errno -2] Name or service not known")

    monkeypatch.setattr(FakeApi, "create_repo", unreachable)
    with pytest.raises(ConnectionError, match=r"push_to_hub owner/name: .* cannot be reached"):
        push_to_hub(tiny_model, "owner/name")

    def refused(self, repo_id, **kwargs):
        raise ValueError("bad repo")

    monkeypatch.setattr(FakeApi, "create_repo", refused)
    with pytest.raises(ValueError, match="bad repo"):  # not a network error: passed as it is
        push_to_hub(tiny_model, "owner/name")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ConnectionError, match="offline mode is on"):
        push_to_hub(tiny_model, "owner/name")


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_a_loaded_model_generates(tiny_model, tmp_path, dtype):
    from gym_worldmodel.memory import KVCache
    from gym_worldmodel.models import precision
    from gym_worldmodel.sampling import ChunkRollout, RowGenerators

    save_pretrained(tiny_model, tmp_path)
    model = from_pretrained(tmp_path, dtype=dtype)
    cache = KVCache.for_model(model.config.dit, model.dit.rope, 1, dtype=dtype)
    rollout = ChunkRollout(model.dit, model.config.sampler)
    with torch.no_grad(), precision("cpu", dtype):  # bf16 weights run under autocast
        x = rollout.generate(
            cache,
            torch.zeros(1, *rollout.action_shape),
            torch.zeros(1, dtype=torch.long),
            RowGenerators([0]),
        )
        frames = model.vae.decode(x)
    assert torch.isfinite(x).all() and frames.dtype == torch.uint8


def test_an_env_from_a_cached_repo_reads_its_config_then_loads_the_weights_once(
    saved: Path, tmp_path: Path, offline: list[dict], monkeypatch: pytest.MonkeyPatch
) -> None:
    from gym_worldmodel.envs.vector_env import WorldModelVectorEnv

    make_hf_cache(tmp_path / "hf", "owner/name", saved)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    loads: list[Path] = []
    real = hub._load_directory
    monkeypatch.setattr(hub, "_load_directory", lambda d: loads.append(d) or real(d))
    env = WorldModelVectorEnv(1, world="citywalk", model="owner/name")
    assert loads == [] and env.config.dit.chunk_frames > 0  # the config only, from the cache
    assert env.checkpoint_dir == tmp_path / "hf" / "models--owner--name" / "snapshots" / COMMIT
    env.reset(seed=0)
    assert len(loads) == 1


def test_a_hub_error_is_said_by_the_line_that_names_it() -> None:
    """huggingface_hub's messages run to several lines; the first is often the HTTP status."""
    gated = "403 Client Error. (Request ID: abc)\n\nCannot access gated repo for url https://x."
    assert hub._first_line(OSError(gated)) == "Cannot access gated repo for url https://x."
    assert hub._first_line(OSError("Got: ConnectError\nAn error happened")) == "Got: ConnectError"
    assert hub._first_line(OSError("")) == ""
