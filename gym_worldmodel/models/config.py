"""Typed configuration for every model component.

Every architecture constant lives here, once. Cache shapes, RoPE tables and token counts are
derived from these dataclasses; no other module hard-codes a shape.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

#: Action vector width of each modality, in the order of the experts (the modality id).
#: camera: translation one-hot (none, W, A, S, D) + rotation one-hot (none, left, right, up, down)
#: + continuous (yaw, pitch) deltas; robot: the RT-1 vector (world_vector 3, rotation_delta 3,
#: gripper 1, base_displacement_vector 2, base_displacement_vertical_rotation 1, terminate 3);
#: driving: (steering, acceleration).
DEFAULT_MODALITIES: dict[str, int] = {"camera": 12, "robot": 13, "driving": 2}

#: Per-row widths are multiples of this so PyTorch's CPU elementwise kernels (two SIMD vectors per
#: iteration, up to 64 bf16 values) never compute part of a row in their scalar tail loop; that
#: keeps a row's result bitwise identical alone or in any batch.
ROW_ALIGN = 64

T = TypeVar("T", bound="DataclassInstance")


def _from_dict(cls: type[T], data: dict[str, Any]) -> T:
    """Build dataclass ``cls`` from ``data``, refusing unknown keys with a clear error."""
    if not isinstance(data, dict):
        raise TypeError(f"{cls.__name__} expects a dict, got {type(data).__name__}")
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ValueError(
            f"{cls.__name__}: unknown keys {unknown}; expected a subset of {sorted(names)}"
        )
    missing = [name for name in _SINCE_FORMAT_1.get(cls.__name__, ()) if name not in data]
    if missing:
        raise ValueError(
            f"{cls.__name__}: lacks {missing}, which every checkpoint has recorded since the "
            "first format (a config.json edited by hand?); only fields added later default"
        )
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name in data:
            value = data[f.name]
            sub = _NESTED.get((cls.__name__, f.name))
            if not sub and not _has_type(value, str(f.type)):
                finite = " (finite)" if "float" in str(f.type) else ""
                raise ValueError(
                    f"{cls.__name__}.{f.name} must be {f.type}{finite}, got "
                    f"{type(value).__name__} {value!r}"[:200]
                )
            if str(f.type).startswith("float") and value is not None:
                value = float(value)  # JSON writers may drop the ".0": one value, one form
            kwargs[f.name] = _from_dict(sub, value) if sub else _tuplify(value)
    return cls(**kwargs)


def _has_type(value: Any, annotation: str) -> bool:
    """Whether a JSON value fits a config field's annotation (lists stand for tuples)."""
    if annotation.endswith(" | None"):
        return value is None or _has_type(value, annotation[: -len(" | None")])
    if annotation == "bool":
        return isinstance(value, bool)
    if annotation == "int":
        return isinstance(value, int) and not isinstance(value, bool)
    if annotation == "float":
        return _has_type(value, "int") or (isinstance(value, float) and math.isfinite(value))
    if annotation == "str":
        return isinstance(value, str)
    if annotation.startswith("tuple["):
        inner = annotation[len("tuple[") : -1].split(", ")[0]
        return isinstance(value, (list, tuple)) and all(_has_type(v, inner) for v in value)
    if annotation.startswith("dict[str, "):
        inner = annotation[len("dict[str, ") : -1]
        return isinstance(value, dict) and all(
            isinstance(k, str) and _has_type(v, inner) for k, v in value.items()
        )
    raise TypeError(f"no JSON check for annotation {annotation!r}")  # a new field's type


def _python_numbers(config: Any) -> None:
    """Store the int and float fields given as NumPy scalars as Python numbers (JSON saves them).

    Only a number becomes one: a string or a bool stays, for the checks to name.
    """
    for f in dataclasses.fields(config):
        value, kind = getattr(config, f.name), str(f.type).removesuffix(" | None")
        if isinstance(value, bool) or type(value) in (int, float):
            continue
        if kind == "int" and isinstance(value, numbers.Integral):
            object.__setattr__(config, f.name, int(value))
        elif kind == "float" and isinstance(value, numbers.Real):
            object.__setattr__(config, f.name, float(value))


def _at_least(config: Any, low: int, *names: str) -> None:
    """Raise a ``ValueError`` naming the first of ``names`` that is not an int >= ``low``.

    NumPy ints count (:func:`_python_numbers` has stored them as Python ints); bools do not.
    """
    for name in names:
        value = getattr(config, name)
        if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < low:
            raise ValueError(
                f"{type(config).__name__}.{name} must be an int >= {low}, got {value!r}"
            )


def _numbers(config: Any, *names: str) -> None:
    """Raise a ``ValueError`` naming the first of ``names`` that is not a real number."""
    for name in names:
        value = getattr(config, name)
        if not isinstance(value, numbers.Real) or isinstance(value, bool):
            raise ValueError(f"{type(config).__name__}.{name} must be a number, got {value!r}")
        object.__setattr__(config, name, float(value))  # NumPy floats too: one form, for JSON


def _tuplify(value: Any) -> Any:
    """JSON turns tuples into lists; configs hold tuples, immutable as the frozen dataclasses."""
    return tuple(_tuplify(v) for v in value) if isinstance(value, list) else value


@dataclass(frozen=True)
class VAEConfig:
    """Convolutional VAE between uint8 frames and latents.

    Attributes:
        image_size: Side of the square RGB frame in pixels.
        latent_channels: Channels of the latent.
        channels: Width of each resolution level, from full resolution down. The spatial
            compression factor is ``2 ** (len(channels) - 1)``.
        blocks_per_level: Residual blocks per level.
        scaling_factor: Latents are multiplied by this after encoding so they have about unit
            variance for the diffusion model (set from data by training).
    """

    image_size: int = 64
    latent_channels: int = 4
    channels: tuple[int, ...] = (32, 64, 96)
    blocks_per_level: int = 1
    scaling_factor: float = 1.0

    @property
    def downsample(self) -> int:
        """Spatial compression factor."""
        return 2 ** (len(self.channels) - 1)

    @property
    def latent_size(self) -> int:
        """Side of the square latent."""
        return self.image_size // self.downsample

    def __post_init__(self) -> None:
        _python_numbers(self)
        _at_least(self, 1, "image_size", "latent_channels", "blocks_per_level")
        if not self.channels or min(self.channels) < 1:
            raise ValueError(f"VAEConfig.channels must be widths >= 1, got {self.channels}")
        if not 0 < self.scaling_factor < math.inf:
            raise ValueError(
                f"VAEConfig.scaling_factor must be finite and > 0, got {self.scaling_factor}"
            )
        if self.image_size % self.downsample:
            raise ValueError(
                f"image_size {self.image_size} must be divisible by the downsample factor "
                f"{self.downsample} implied by channels={self.channels}"
            )


@dataclass(frozen=True)
class DiTConfig:
    """Causal chunk diffusion transformer and the cache layout it is trained with.

    Attributes:
        latent_channels: Channels of the VAE latent (must match ``VAEConfig``).
        latent_size: Side of the square latent (must match ``VAEConfig``).
        patch_size: Side of the square latent patch that becomes one token.
        dim: Transformer width.
        depth: Number of blocks.
        heads: Attention heads; ``dim // heads`` is the head width.
        mlp_ratio: Hidden width of the MLP relative to ``dim``.
        rope_axes: Head channels given to the (time, height, width) rotary axes; must sum to the
            head width and each be even.
        rope_theta: RoPE base.
        chunk_frames: Latent frames generated per ``step()`` (one chunk).
        sink_chunks: Chunks kept forever at the start of the cache (the first chunk).
        window_chunks: Recent chunks kept in the ring window.
        memory_chunks: Reserved cache chunks for retrieved spatial memory.
        modalities: Action vector width of each modality; the key order is the modality id.
        action_embed_dim: Width of the shared action embedding all projectors map into.
        frame_anchor: Add to every token of a chunk a projection of the same patch of the
            previous chunk's last frame (zero for the first chunk and for memory): a direct,
            local path to copy what is already on screen, as frame-stacking world models have,
            which attention alone learns slowly. False keeps checkpoints written before this
            option loadable (their ``config.json`` does not name it).
        anchor_sigma: Predict each frame as a change from its anchor frame (needs
            ``frame_anchor``): the network's raw output is preconditioned so that the clean
            chunk it implies is the posterior mean of a Gaussian prior centred on the anchor
            with this standard deviation (in scaled latent units) plus the network's scaled
            correction. A zero output then repeats the anchor frame (copying the last frame,
            sharpened by the noisy input as the noise falls), and the network learns only what
            changes. Chunks without an anchor (the sink, memory) use a unit prior centred on
            zero. 0 turns it off: the raw output is the velocity (checkpoints written before
            this option).
        anchor_motion: Move each frame's anchor by the image motion its actions imply
            (needs ``frame_anchor``): a per-modality linear map from the action vector to a
            shift in latent pixels and a zoom per frame (``CausalChunkDiT.anchor_motion``,
            fitted to the recorded frames by ``training.motion.fit_anchor_motion`` and
            fine-tuned), summed over the chunk's frames up to each one. A camera that turns 6
            degrees a frame moves the scene about 6 pixels, one that walks forward magnifies it
            about 5%; the network then corrects the moved anchor rather than learning the
            motion. False keeps checkpoints written before this option loadable.
        anchor_flow: Modalities whose anchors a learned dense flow moves instead (needs
            ``frame_anchor``; not with ``anchor_motion``): the anchor frame is decoded, warped
            frame by frame by a small conv net that reads the picture and each action
            (``models.flow.FlowWarp``, in the checkpoint beside the DiT, trained by
            ``gym-worldmodel train flow``) and the latent change the warp makes is
            added to the anchor. A robot arm or the cars around a driven car move by parts,
            which one shift per frame cannot follow. Empty: no flow (checkpoints written
            before this option).
        anchor_ego: Modalities of ``anchor_flow`` whose flow is the ego vehicle's own motion
            rather than the net's: a top-down view that follows the car shows everything but
            the car moving back by the car's displacement. The two action columns after the
            modality's width carry that shift per frame in pixels (backward flow ``(dx, dy)``,
            y down; ``envs.pose.EgoShift`` integrates it from the actions and the start pose,
            ``training.data`` takes it from recorded poses); the action experts do not read
            them. Empty: none (checkpoints written before this option).
        ego_hold: ``(top, bottom, left, right)`` pixels of the frame the followed car fills,
            kept in place by the ego flow (empty: nothing held).
        anchor_flow_width: Channels of the flow net's first level (``models.flow.FlowNet``;
            32 in the driving world, 244k parameters).
        action_scale: Per-modality factors each action dimension is multiplied by before its
            projector (modalities left out: 1). Actions whose dimensions differ in spread by
            30x (a robot's translations against its gripper) otherwise enter one projector at
            that ratio, and its small dimensions learn 30x slower;
            ``training.fitting.fit_action_scale`` fits 1 / std per dimension from the data.
            Empty for checkpoints written before it.
    """

    latent_channels: int = 4
    latent_size: int = 16
    patch_size: int = 2
    dim: int = 192
    depth: int = 6
    heads: int = 3
    mlp_ratio: float = 4.0
    rope_axes: tuple[int, int, int] = (16, 24, 24)
    rope_theta: float = 256.0
    chunk_frames: int = 3
    sink_chunks: int = 1
    window_chunks: int = 2
    memory_chunks: int = 1
    modalities: dict[str, int] = field(default_factory=lambda: dict(DEFAULT_MODALITIES))
    action_embed_dim: int = 64
    frame_anchor: bool = False
    anchor_sigma: float = 0.0
    anchor_motion: bool = False
    anchor_flow: tuple[str, ...] = ()
    anchor_ego: tuple[str, ...] = ()
    ego_hold: tuple[int, ...] = ()
    anchor_flow_width: int = 32
    action_scale: dict[str, tuple[float, ...]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _python_numbers(self)
        _at_least(self, 1, "latent_channels", "latent_size", "patch_size", "dim", "depth", "heads")
        _at_least(self, 1, "action_embed_dim", "chunk_frames", "window_chunks")
        _at_least(self, 0, "memory_chunks")
        self._check_layout()
        self._check_actions()
        self._check_anchors()

    def _check_layout(self) -> None:
        """The transformer's widths, tokens and cache layout."""
        if not 0 < self.mlp_ratio < math.inf or not 0 < self.rope_theta < math.inf:
            raise ValueError(
                f"DiTConfig.mlp_ratio and rope_theta must be finite and > 0, got "
                f"{self.mlp_ratio} and {self.rope_theta}"
            )
        if self.dim % ROW_ALIGN or self.action_embed_dim % ROW_ALIGN:
            raise ValueError(
                f"dim ({self.dim}) and action_embed_dim ({self.action_embed_dim}) must be "
                f"multiples of {ROW_ALIGN}: CPU kernels compute a buffer's tail with a scalar "
                "path, so rows that are not whole vector iterations differ alone and in a batch"
            )
        if self.dim % self.heads:
            raise ValueError(f"dim {self.dim} must be divisible by heads {self.heads}")
        if (
            sum(self.rope_axes) != self.head_dim
            or any(a % 2 for a in self.rope_axes)
            or min(self.rope_axes) < 0
        ):
            raise ValueError(
                f"rope_axes {self.rope_axes} must be even, not negative, and sum to the head width "
                f"{self.head_dim}"
            )
        if self.latent_size % self.patch_size:
            raise ValueError(
                f"latent_size {self.latent_size} not divisible by patch {self.patch_size}"
            )
        if self.sink_chunks != 1:
            raise ValueError("sink_chunks must be 1: the sink holds the episode's first chunk")

    def _check_actions(self) -> None:
        """The modalities' action widths and scales (JSON's lists made tuples)."""
        if not isinstance(self.modalities, dict) or not all(
            isinstance(w, int) and w >= 1 for w in self.modalities.values()
        ):
            raise ValueError(
                f"DiTConfig.modalities must map each modality to its action width >= 1, e.g. "
                f"{DEFAULT_MODALITIES}, got {self.modalities!r}"
            )
        if not self.modalities:
            raise ValueError("at least one action modality is required")
        scales = {name: tuple(float(v) for v in scale) for name, scale in self.action_scale.items()}
        object.__setattr__(self, "action_scale", scales)  # JSON gives lists: keep one form
        for name, scale in scales.items():
            width = self.modalities.get(name)
            if width is None or len(scale) != width or not all(0 < v < math.inf for v in scale):
                raise ValueError(
                    f"action_scale[{name!r}]: expected a modality of {list(self.modalities)} "
                    f"and {width} finite positive factors, got {scale}"
                )

    def _check_anchors(self) -> None:
        """The frame anchor's options, which build on one another."""
        if self.anchor_motion and not self.frame_anchor:
            raise ValueError("anchor_motion moves the frame anchor: it needs frame_anchor=True")
        unknown = [name for name in self.anchor_flow if name not in self.modalities]
        if self.anchor_flow and (unknown or not self.frame_anchor or self.anchor_motion):
            raise ValueError(
                f"anchor_flow {self.anchor_flow} moves the frame anchor: it needs "
                f"frame_anchor=True, no anchor_motion and modalities of {list(self.modalities)}"
            )
        for name in ("anchor_flow", "anchor_ego"):  # lists given in Python, as JSON gives them
            object.__setattr__(self, name, tuple(getattr(self, name)))
        object.__setattr__(self, "ego_hold", tuple(int(v) for v in self.ego_hold))
        narrow = [
            n for n in self.anchor_ego if self.modalities.get(n, math.inf) + 2 > self.action_dim
        ]
        if (
            set(self.anchor_ego) - set(self.anchor_flow)
            or narrow
            or len(self.ego_hold) not in (0, 4)
        ):
            raise ValueError(
                f"anchor_ego {self.anchor_ego} needs modalities of anchor_flow "
                f"{self.anchor_flow} with two free action columns (action_dim "
                f"{self.action_dim}), and ego_hold four pixel bounds, got {self.ego_hold}"
            )
        if self.anchor_flow_width < 1:
            raise ValueError(
                f"anchor_flow_width is a channel count >= 1, got {self.anchor_flow_width}"
            )
        if self.anchor_sigma < 0 or (self.anchor_sigma and not self.frame_anchor):
            raise ValueError(
                f"anchor_sigma must be >= 0 and needs frame_anchor=True, got {self.anchor_sigma} "
                f"with frame_anchor={self.frame_anchor}"
            )

    @property
    def head_dim(self) -> int:
        """Width of one attention head."""
        return self.dim // self.heads

    @property
    def tokens_per_frame(self) -> int:
        """Tokens of one latent frame."""
        return (self.latent_size // self.patch_size) ** 2

    @property
    def tokens_per_chunk(self) -> int:
        """Tokens of one chunk (the query length of one step)."""
        return self.chunk_frames * self.tokens_per_frame

    @property
    def context_frames(self) -> int:
        """Frames of context before the current chunk (sink + memory + window): its time index."""
        return (self.sink_chunks + self.memory_chunks + self.window_chunks) * self.chunk_frames

    @property
    def action_dim(self) -> int:
        """Width of the padded action vector every modality is written into."""
        return max(self.modalities.values())

    @property
    def modality_names(self) -> tuple[str, ...]:
        """Modality names in id order."""
        return tuple(self.modalities)

    def modality_id(self, name: str) -> int:
        """Expert index of modality ``name``."""
        if name not in self.modalities:
            raise ValueError(f"unknown modality {name!r}; this model has {list(self.modalities)}")
        return self.modality_names.index(name)


#: The most denoiser passes a chunk may take, and the largest guidance scale.
MAX_NFE, MAX_GUIDANCE = 1000, 100.0


@dataclass(frozen=True)
class SamplerConfig:
    """Few-step flow-matching sampling.

    Attributes:
        nfe: Denoiser evaluations per chunk (not counting the cache-write pass or guidance).
        shift: Timestep shift; larger values spend more steps at high noise.
        guidance_scale: Classifier-free guidance against the null action; 1.0 turns it off
            (and costs nothing extra).
        context_t: Noise level of the cache-write pass (0 writes clean K/V).
        memory_t: Noise level retrieved memory chunks are presented at; None presents them like
            history, at ``context_t``. A ``context_t`` above ``memory_t`` tells the model its
            own recent frames are less certain than what it retrieves. Training presents memory
            clean (level 0), so a level above 0 is one the model never saw (for experiments).
        stochastic: Re-noise the x0 prediction with fresh noise between steps (distilled
            students); if False take deterministic Euler steps (teachers).
        memory_guidance: Guidance towards retrieved spatial memory: in a step where some row
            holds memory, the denoiser also runs with the memory slots masked, and the velocity
            is ``v_off + memory_guidance (v - v_off)``. 1.0 turns it off (and costs nothing
            extra); above 1 a step with memory costs one more denoiser pass per pass. Rows
            holding none are unchanged, bit for bit.
    """

    nfe: int = 3
    shift: float = 3.0
    guidance_scale: float = 1.0
    context_t: float = 0.0
    stochastic: bool = True
    memory_t: float | None = None
    memory_guidance: float = 1.0

    def __post_init__(self) -> None:
        _python_numbers(self)
        _at_least(self, 1, "nfe")
        _numbers(self, "shift", "guidance_scale", "context_t", "memory_guidance")
        if self.memory_t is not None:
            _numbers(self, "memory_t")
        if not 0 < self.shift < math.inf:
            raise ValueError(f"shift must be finite and > 0, got {self.shift}")
        if self.nfe > MAX_NFE:  # a typo's 10**9 passes would run for ever
            raise ValueError(
                f"SamplerConfig.nfe must be at most {MAX_NFE} (a teacher samples well at 32), "
                f"got {self.nfe}"
            )
        if not 0.0 <= self.guidance_scale <= MAX_GUIDANCE:
            raise ValueError(
                f"guidance_scale must be in [0, {MAX_GUIDANCE}] (1 turns guidance off, 0 ignores "
                f"the action), got {self.guidance_scale}"
            )
        if not 0.0 <= self.memory_guidance <= MAX_GUIDANCE:
            raise ValueError(
                f"memory_guidance must be in [0, {MAX_GUIDANCE}] (1 turns it off, 0 ignores "
                f"the retrieved memory), got {self.memory_guidance}"
            )
        if not 0.0 <= self.context_t < 1.0:
            raise ValueError(f"context_t must be in [0, 1), got {self.context_t}")
        if self.memory_t is not None and not 0.0 <= self.memory_t < 1.0:
            raise ValueError(f"memory_t must be in [0, 1) or None, got {self.memory_t}")

    @property
    def memory_level(self) -> float:
        """The level memory chunks are presented at (``memory_t``, else ``context_t``)."""
        return self.context_t if self.memory_t is None else self.memory_t


@dataclass(frozen=True)
class WorldModelConfig:
    """A whole world model: VAE, denoiser, sampler defaults and the world's frame rate.

    ``trained_modalities``: the action modalities its denoiser was trained on, over its whole
    line of checkpoints (the training recipes record them; an env refuses a world of another);
    None where that was not recorded (checkpoints from before, random weights).
    """

    vae: VAEConfig = field(default_factory=VAEConfig)
    dit: DiTConfig = field(default_factory=DiTConfig)
    sampler: SamplerConfig = field(default_factory=SamplerConfig)
    fps: int = 15
    trained_modalities: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        _python_numbers(self)
        trained = self.trained_modalities
        if trained is not None:
            if isinstance(trained, str) or not all(isinstance(m, str) for m in trained):
                raise ValueError(
                    f"trained_modalities must be modality names, e.g. ('camera',), got {trained!r}"
                )
            object.__setattr__(self, "trained_modalities", tuple(dict.fromkeys(trained)))
        unknown = [m for m in self.trained_modalities or () if m not in self.dit.modalities]
        if unknown:
            raise ValueError(
                f"trained_modalities {unknown} are not among the DiT's modalities "
                f"{list(self.dit.modalities)}"
            )
        if self.fps < 1 or self.fps % self.dit.chunk_frames:
            raise ValueError(
                f"fps ({self.fps}) must be a positive multiple of chunk_frames "
                f"({self.dit.chunk_frames}): "
                "envs render one frame per step, and video writers drop frames at fractional rates"
            )
        if (self.vae.latent_channels, self.vae.latent_size) != (
            self.dit.latent_channels,
            self.dit.latent_size,
        ):
            raise ValueError(
                f"VAE latent ({self.vae.latent_channels}, {self.vae.latent_size}) does not match "
                f"DiT latent ({self.dit.latent_channels}, {self.dit.latent_size})"
            )

    def check_trained(self, modality: str, world: str) -> None:
        """Refuse to run ``world`` (of ``modality``) with a denoiser that never learned it."""
        if modality not in self.dit.modalities:  # no expert for it at all
            raise ValueError(
                f"this model has no action expert for {modality} actions (its modalities: "
                f"{list(self.dit.modalities)}): the {world} world needs a model built and "
                f"trained with one"
            )
        trained = self.trained_modalities
        if trained is not None and not trained:
            raise ValueError(
                f"this model's denoiser is untrained (a VAE run's checkpoint): the {world} world "
                f"needs one trained on {modality} data: `gym-worldmodel train teacher --data "
                "<data> --init <this checkpoint>`, then a student or self-forcing "
                "(docs/training.md; a record that is wrong can be edited: trained_modalities in "
                "config.json)"
            )
        if trained is not None and modality not in trained:
            raise ValueError(
                f"this model's denoiser was trained on {list(trained)} actions, not on "
                f"{modality} actions: the {world} world needs a model trained on {modality} "
                "data (a record that is wrong can be edited: trained_modalities in config.json)"
            )

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form, as written to ``config.json``."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> WorldModelConfig:
        """Inverse of :meth:`to_dict`; unknown keys raise ``ValueError``."""
        return _from_dict(cls, data)

    @classmethod
    def compact(cls) -> WorldModelConfig:
        """The shipped worlds' size: the default VAE and a 128-wide, 6-block DiT (2.2M params).

        Sized for CPU training: about the compute-optimal parameter count for an hour of two
        cores (training is ~3x faster per token than the default 192-wide DiT).
        """
        return cls(dit=DiTConfig(dim=128, heads=2, frame_anchor=True))

    @classmethod
    def tiny(cls, **dit_overrides: Any) -> WorldModelConfig:
        """A very small model for tests and doctests (32x32 frames, 2 blocks)."""
        vae = VAEConfig(image_size=32, latent_channels=4, channels=(8, 16))
        dit_kwargs: dict[str, Any] = dict(
            latent_channels=4,
            latent_size=16,
            patch_size=4,
            dim=64,
            depth=2,
            heads=2,
            rope_axes=(8, 12, 12),
            chunk_frames=2,
            window_chunks=2,
            memory_chunks=1,
            action_embed_dim=64,
            frame_anchor=True,
        )
        dit_kwargs.update(dit_overrides)
        dit_kwargs.setdefault("anchor_sigma", 0.5 if dit_kwargs["frame_anchor"] else 0.0)
        dit = DiTConfig(**dit_kwargs)
        return cls(vae=vae, dit=dit, sampler=SamplerConfig(nfe=2), fps=8 * dit.chunk_frames)


#: Fields every ``config.json`` has held since format ``gym-worldmodel/1``: a file that lacks
#: one was edited, and its default (e.g. the sampler's 3 stochastic steps) would run another
#: model than the one trained. Fields added since default, so that older checkpoints load.
_SINCE_FORMAT_1: dict[str, tuple[str, ...]] = {
    "VAEConfig": (
        "image_size",
        "latent_channels",
        "channels",
        "blocks_per_level",
        "scaling_factor",
    ),
    "DiTConfig": (
        "latent_channels",
        "latent_size",
        "patch_size",
        "dim",
        "depth",
        "heads",
        "mlp_ratio",
        "rope_axes",
        "rope_theta",
        "chunk_frames",
        "sink_chunks",
        "window_chunks",
        "memory_chunks",
        "modalities",
        "action_embed_dim",
    ),
    "SamplerConfig": ("nfe", "shift", "guidance_scale", "context_t", "stochastic"),
    "WorldModelConfig": ("vae", "dit", "sampler", "fps"),
}

_NESTED: dict[tuple[str, str], type] = {
    ("WorldModelConfig", "vae"): VAEConfig,
    ("WorldModelConfig", "dit"): DiTConfig,
    ("WorldModelConfig", "sampler"): SamplerConfig,
}
