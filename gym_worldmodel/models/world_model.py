"""The world model: VAE and causal chunk DiT under one config."""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gym_worldmodel.models.config import WorldModelConfig
from gym_worldmodel.models.dit import CausalChunkDiT, padded_rows
from gym_worldmodel.models.flow import FlowWarp
from gym_worldmodel.models.vae import VAE


class WorldModel(nn.Module):
    """A VAE and a denoiser sharing one :class:`WorldModelConfig`.

    Load and save with :func:`gym_worldmodel.hub.from_pretrained` and
    :func:`gym_worldmodel.hub.save_pretrained`.

    Args:
        config: The whole model's configuration.
    """

    def __init__(self, config: WorldModelConfig) -> None:
        super().__init__()
        self.config = config
        #: The checkpoint directory ``hub.from_pretrained`` loaded it from (None: built here);
        #: an env reads the start frames kept there.
        self.checkpoint_dir: Path | None = None
        self.vae = VAE(config.vae)
        self.dit = CausalChunkDiT(config.dit)
        self.flow = FlowWarp(config.dit) if config.dit.anchor_flow else None
        if self.flow is not None:
            self.dit.anchor_mover = self.flow_anchors

    @property
    def device(self) -> torch.device:
        """Where the model's weights are."""
        return next(self.parameters()).device

    def _like(self, config: WorldModelConfig) -> WorldModel:
        """A new model of ``config`` on this model's device (the ``with_*`` copies stay there).

        It keeps this model's ``checkpoint_dir``: the same weights, and the same start frames.
        """
        model = WorldModel(config).to(self.device)
        model.checkpoint_dir = self.checkpoint_dir
        return model

    def _converted(
        self,
        new: Callable[[str], bool] = lambda key: False,
        sampler: bool = False,
        /,
        **changes: Any,
    ) -> WorldModel:
        """This model's weights in a model of this config with ``changes``, in this mode.

        ``changes`` are ``DiTConfig`` fields (with ``sampler``, ``SamplerConfig`` ones). Weights
        the new model has and this one lacks must be ones ``new`` names: they keep the new
        model's initialisation; any other difference is an error.
        """
        part = "sampler" if sampler else "dit"
        config = dataclasses.replace(
            self.config, **{part: dataclasses.replace(getattr(self.config, part), **changes)}
        )
        model = self._like(config)
        missing, unexpected = model.load_state_dict(self.state_dict(), strict=False)
        if unexpected or not all(new(key) for key in missing):
            raise RuntimeError(f"unexpected weights: missing {missing}, extra {unexpected}")
        return model.train(self.training)

    @staticmethod
    def upgrade_state_dict(tensors: dict[str, Tensor]) -> dict[str, Tensor]:
        """Weights written by earlier versions, in this version's layout (a new dict).

        Anchor motion written before its zoom column (``(M, A, 2)``) gains a zero zoom.
        """
        out = dict(tensors)
        rates = out.get("dit.anchor_motion")
        if rates is not None and rates.shape[-1] == 2:
            out["dit.anchor_motion"] = F.pad(rates, (0, 1))
        return out

    def with_frame_anchor(self) -> WorldModel:
        """This model with a frame anchor (``DiTConfig.frame_anchor``) added, if it has none.

        The anchor's projection starts at zero, so the new model computes exactly what this one
        does; fine-tuning then learns to use the anchor.
        """
        if self.config.dit.frame_anchor:
            return self
        return self._converted(lambda key: key == "dit.anchor_embed.weight", frame_anchor=True)

    def with_action_scale(self, scales: Mapping[str, Any]) -> WorldModel:
        """This model with new action input factors (``DiTConfig.action_scale``) for ``scales``.

        Each projector's first layer is divided by the change, so the new model computes
        exactly what this one does; only how fast training moves each dimension changes.

        Args:
            scales: Modality name -> one positive factor per action dimension; modalities left
                out keep theirs.
        """
        merged = {**self.config.dit.action_scale, **{k: tuple(v) for k, v in scales.items()}}
        model = self._converted(action_scale=merged)  # (the config validates them)
        old, new = self.dit.actions.input_scale, model.dit.actions.input_scale
        ratio = torch.where(new > 0, old / new.clamp_min(1e-30), torch.ones_like(new))
        with torch.no_grad():
            model.dit.actions.w1.mul_(ratio[:, :, None])
        return model

    def with_anchor_motion(self, rates: Mapping[str, Any]) -> WorldModel:
        """This model with moving anchors (``DiTConfig.anchor_motion``), from ``rates``.

        Args:
            rates: Modality name -> ``(width, 3)``: latent pixels (x, y) and log zoom each
                action dimension moves a frame's content by (``training.motion``); modalities
                left out do not move their anchors. Replaces the rates of a model that has them.
        """
        model = self.with_frame_anchor()
        if not model.config.dit.anchor_motion:
            model = model._converted(lambda key: key == "dit.anchor_motion", anchor_motion=True)
        table = model.dit.anchor_motion
        assert table is not None  # the model was given anchor_motion above if it lacked it
        for name, rate in rates.items():
            rate = torch.as_tensor(np.asarray(rate, np.float32))
            width = model.config.dit.modalities.get(name)
            if width is None or rate.shape != (width, 3):
                raise ValueError(
                    f"anchor motion of {name!r}: expected a known modality and ({width}, 3) "
                    f"rates, got {tuple(rate.shape)}"
                )
            row = table[model.config.dit.modality_id(name)]
            with torch.no_grad():
                row.zero_()
                row[:width] = rate
        return model

    @torch.no_grad()
    def flow_anchors(self, anchors: Tensor, actions: Tensor, modality: Tensor) -> Tensor:
        """Each frame's anchor ``(B, N * F, C, h, w)`` moved by the flow warp (``anchor_flow``).

        Chunk ``n``'s anchor ``(B, N, C, h, w)`` is decoded, warped by the flow of action
        ``k`` once per frame ``k`` (the warps compose: frame ``k`` has moved ``k + 1`` times),
        and the warped frames are encoded; frame ``k``'s anchor is the chunk's anchor plus the
        latent change the warp made (``encode(warped) - encode(decoded)``), so where nothing
        moves the anchor is exactly the latent it was, not its autoencoded copy. Zero anchors
        (the sink, memory) and rows of modalities without a flow stay as they were. The warp
        and the VAE are frozen here: they are trained in their own stages.
        """
        if self.flow is None:
            raise ValueError("flow_anchors needs a model with a flow net (DiTConfig.anchor_flow)")
        f, scale = self.config.dit.chunk_frames, self.config.vae.scaling_factor
        b, n = anchors.shape[:2]
        flat = anchors.flatten(0, 1).float()  # (BN, C, h, w)
        rows = modality.repeat_interleave(n)
        acts = actions.reshape(b * n, f, actions.shape[-1])
        frame = padded_rows(self.vae.decode_float, flat / scale).float().clamp(-1.0, 1.0)
        frames = [frame]
        for k in range(f):
            frame = self.flow(frame, acts[:, k], rows)
            frames.append(frame)
        latents = self.vae.encode_posterior(torch.stack(frames, 1))[0].float() * scale
        moved = flat[:, None] + (latents[:, 1:] - latents[:, :1])  # (BN, F, C, h, w)
        kept = flat[:, None].expand_as(moved)
        real = (flat.flatten(1).abs().amax(-1) > 0) & self.flow.moves[rows]
        out = torch.where(real[:, None, None, None, None], moved, kept)
        return out.reshape(b, n * f, *anchors.shape[2:]).to(anchors.dtype)

    def with_anchor_flow(self, modalities: tuple[str, ...]) -> WorldModel:
        """This model with a flow warp moving the anchors of ``modalities`` (``anchor_flow``).

        The warp starts at zero flow, so the new model computes what this one does (up to the
        rounding of a resample at whole pixels); ``gym-worldmodel train flow`` trains
        it. A model with a flow keeps its weights and gains the named modalities.
        """
        model = self.with_frame_anchor()
        names = tuple(dict.fromkeys((*model.config.dit.anchor_flow, *modalities)))
        return model._converted(lambda key: key.startswith("flow."), anchor_flow=names)

    def with_anchor_ego(self, modalities: tuple[str, ...], hold: tuple[int, ...]) -> WorldModel:
        """This model moving the anchors of ``modalities`` with the car (``anchor_ego``).

        Their anchors are decoded, warped and encoded as a flow warp's are (``anchor_flow``,
        added where missing), by the shift the actions carry instead of the net's flow; the
        weights are kept. ``hold``: the ``ego_hold`` box of the followed car (empty: none).
        """
        model = self.with_anchor_flow(tuple(modalities))
        return model._converted(anchor_ego=tuple(modalities), ego_hold=tuple(hold))

    def with_anchor_sigma(self, sigma: float) -> WorldModel:
        """This model predicting frames as changes from their anchor (``DiTConfig.anchor_sigma``).

        The output layer is reset to zero, since the raw output changes meaning: the new model
        starts by repeating the anchor frame, and fine-tuning learns the changes with the
        trunk's features. Adds the frame anchor first if the model has none.
        """
        out = self.with_frame_anchor()._converted(anchor_sigma=float(sigma))
        torch.nn.init.zeros_(out.dit.out.weight)
        torch.nn.init.zeros_(out.dit.out.bias)
        return out

    def with_sampler(self, **changes: Any) -> WorldModel:
        """The same weights with ``SamplerConfig`` fields replaced (e.g. ``nfe=1``)."""
        return self._converted(lambda key: False, True, **changes)

    def for_autocast(self, dtype: torch.dtype | str) -> WorldModel:
        """Hold the linear and convolution layers' weights in ``dtype``, for inference under it.

        Under autocast in ``dtype`` (:func:`precision`) these layers run in ``dtype`` and cast
        their float32 weights and biases to it at every call; held in it, nothing is cast and
        every result has the same bits (autocast rounds as ``Tensor.to`` does), in less time: an
        env step of a shipped world 1.09x faster with one row and 1.03-1.04x with 8 on this
        CPU (``docs/benchmarks.md``). The other parameters (norms, action experts) stay as they
        are. Afterwards the model runs only under ``precision(device, dtype)``: a float32
        forward would meet ``dtype`` weights. Envs do this to the models they load themselves,
        never to one they are given.

        Args:
            dtype: The autocast dtype, or its name: ``torch.bfloat16``, or ``torch.float32``,
                which changes nothing.

        Returns:
            This model.
        """
        dtype = DTYPES.get(dtype, dtype) if isinstance(dtype, str) else dtype
        if dtype not in DTYPES.values():
            raise ValueError(
                f"dtype must be one of {list(DTYPES)} (or that torch.dtype), got {dtype!r}"
            )
        if dtype != torch.float32:
            for module in self.modules():
                if isinstance(module, (nn.Linear, nn.Conv2d)):
                    module.to(dtype)
        return self

    def weights_digest(self) -> str:
        """A digest of the weights, to tell a state made by other weights (16 hex digits).

        Floating tensors are read as bfloat16, so a float32 model and its copy held in bf16 for
        autocast (:meth:`for_autocast`, which rounds as this does) have the same digest. Reads
        every tensor once (tens of milliseconds for the shipped worlds).
        """
        digest = hashlib.blake2b(digest_size=8)
        for name, tensor in sorted(self.state_dict().items()):
            value = tensor.detach().cpu()
            if value.is_floating_point():
                value = value.to(torch.bfloat16).view(torch.int16)
            digest.update(name.encode())
            digest.update(value.contiguous().numpy().tobytes())
        return digest.hexdigest()

    def num_parameters(self) -> dict[str, int]:
        """Parameter counts of each part."""
        parts = {"vae": self.vae, "dit": self.dit, "flow": self.flow}
        return {
            name: sum(p.numel() for p in part.parameters())
            for name, part in parts.items()
            if part is not None
        }


#: The compute precisions the envs and benchmarks take by name.
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def available_device(device: torch.device | str, name: str = "device") -> torch.device:
    """``device`` as a ``torch.device``, or a ``ValueError`` saying why it cannot be used here.

    ``name`` is what the message calls the argument (``"--device"`` in the commands). Touches
    CUDA only for a CUDA device (to count them), never for the CPU.
    """
    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(
            f"{name} takes a torch device such as cpu, cuda or cuda:1; got {device!r}"
        ) from None
    if parsed.type == "meta":
        raise ValueError(f"{name} meta holds shapes, no values: a model runs on cpu or cuda")
    if parsed.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"{name} {device}: no CUDA device is available on this machine")
        if parsed.index is not None and parsed.index >= torch.cuda.device_count():
            raise ValueError(
                f"{name} {device}: this machine has {torch.cuda.device_count()} CUDA device(s)"
            )
    return parsed


def native_bf16(device: torch.device | str) -> bool:
    """Whether ``device`` computes bfloat16 natively: CUDA with bf16, AVX512-BF16 or AMX.

    Elsewhere (an older CPU) bf16 is emulated and runs slower than float32.
    """
    device = torch.device(device)
    if device.type == "cuda":  # Ampere (compute capability 8) and later; older GPUs emulate it
        if not torch.cuda.is_available():
            return False
        if torch.version.hip:
            return torch.cuda.is_bf16_supported(including_emulation=False)
        return torch.cuda.get_device_capability(device)[0] >= 8
    if device.type == "cpu":  # torch.cpu's probes are private: absent ones count as no
        probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
        return any(getattr(torch.cpu, name, lambda: False)() for name in probes)
    return False


@contextlib.contextmanager
def precision(device: torch.device | str, dtype: torch.dtype) -> Iterator[None]:
    """Run the body in ``dtype``: autocast for bf16/fp16, plain float32 otherwise.

    Args:
        device: Device the model runs on (selects the autocast backend).
        dtype: ``torch.float32``, ``torch.bfloat16`` or ``torch.float16``.
    """
    if dtype == torch.float32:
        yield
        return
    if dtype not in (torch.bfloat16, torch.float16):
        raise ValueError(f"dtype must be float32, bfloat16 or float16, got {dtype}")
    with torch.autocast(device_type=torch.device(device).type, dtype=dtype):
        yield
