"""Causal chunk diffusion transformer (the denoiser).

One forward is one denoiser call: noisy latents of a chunk, their noise level and per-frame
actions in; the flow-matching velocity out. Attention is block-causal: bidirectional inside a
chunk, causal across chunks: through the KV cache at inference, and in training through each
chunk's own window of the sequence, gathered in one forward (``SequenceAttention``, no mask).

Shapes (the one layout, used at every boundary):
    latents  (B, F, C, h, w)   F latent frames of C channels, h = w = latent_size
    t        (B,) chunk noise level in [0, 1] (1 = pure noise); (B, N) per chunk for sequences
    actions  (B, F, A)         padded action vector per latent frame, A = config.action_dim
    modality (B,) long         expert id per row (``config.modality_id(name)``)
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import cast

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from gym_worldmodel.models.actions import ActionExpert, ActionProjectors, expert_residuals
from gym_worldmodel.models.attention import (
    AttentionContext,
    ChunkAttention,
    ChunkCache,
    MemoryAttention,
    MemoryCache,
    SelfAttention,
    SequenceAttention,
)
from gym_worldmodel.models.config import DiTConfig
from gym_worldmodel.models.rope import Rotary3D, grid_positions

#: MKL computes a GEMM of fewer rows than this with another kernel, whose bits differ from the
#: one it uses for more rows (seen on AVX512-BF16 CPUs even with ``MKL_CBWR=AUTO,STRICT``).
MIN_GEMM_ROWS = 4


def padded_rows(fn: Callable[..., Tensor], *rows: Tensor) -> Tensor:
    """``fn(*rows)`` computed on at least :data:`MIN_GEMM_ROWS` rows (zero rows added, dropped).

    CPU kernels take another path for a few rows (a GEMM of fewer than four, a convolution of one
    image), whose bits differ from the batched one's: padding keeps a row's result independent
    of how many rows share the call.
    """
    n = len(rows[0])
    if n >= MIN_GEMM_ROWS:
        return fn(*rows)
    pad = [torch.cat((r, r.new_zeros(MIN_GEMM_ROWS - n, *r.shape[1:]))) for r in rows]
    return fn(*pad)[:n]


class RowLinear(nn.Linear):
    """``nn.Linear`` that never lets MKL see fewer than :data:`MIN_GEMM_ROWS` rows.

    Used for the per-frame conditioning layers, whose row count is ``B x frames``: a row's
    result must not depend on how many rows share the call, so small calls are padded with zero
    rows (a few extra multiply-adds) and the padding is dropped.
    """

    def forward(self, x: Tensor) -> Tensor:  # noqa: D102
        rows = x.numel() // x.shape[-1]
        if rows >= MIN_GEMM_ROWS:
            return super().forward(x)
        flat = padded_rows(super().forward, x.reshape(rows, x.shape[-1]))
        return flat.reshape(*x.shape[:-1], self.out_features)


def modulate(x: Tensor, shift: Tensor, scale: Tensor) -> Tensor:
    """AdaLN modulation."""
    return x * (1 + scale) + shift


class TimestepEmbedding(nn.Module):
    """Sinusoidal embedding of the noise level followed by an MLP."""

    freqs: Tensor

    def __init__(self, dim: int, freq_dim: int = 128) -> None:
        super().__init__()
        half = freq_dim // 2
        freqs = torch.exp(-math.log(10_000.0) * torch.arange(half, dtype=torch.float32) / half)
        self.register_buffer("freqs", freqs, persistent=False)
        self.mlp = nn.Sequential(RowLinear(freq_dim, dim), nn.SiLU(), RowLinear(dim, dim))

    def forward(self, t: Tensor) -> Tensor:
        """``t`` (...) in [0, 1] -> (..., dim)."""
        angles = (t.float() * 1000.0)[..., None] * self.freqs
        return self.mlp(torch.cat((angles.cos(), angles.sin()), dim=-1))


class DiTBlock(nn.Module):
    """AdaLN-Zero self-attention and MLP, after its action expert's residual.

    The block holds its expert's weights; every block's expert runs at once, before the blocks,
    in :func:`~gym_worldmodel.models.actions.expert_residuals`.
    """

    def __init__(self, config: DiTConfig) -> None:
        super().__init__()
        self.expert = ActionExpert(config)
        self.norm1 = nn.LayerNorm(config.dim, elementwise_affine=False, eps=1e-6)
        self.attn = SelfAttention(config)
        self.norm2 = nn.LayerNorm(config.dim, elementwise_affine=False, eps=1e-6)
        hidden = int(config.dim * config.mlp_ratio)
        self.mlp = nn.Sequential(
            nn.Linear(config.dim, hidden),
            nn.GELU(),
            nn.Linear(hidden, config.dim),
        )
        self.ada = RowLinear(config.dim, 6 * config.dim)
        nn.init.zeros_(self.ada.weight)
        nn.init.zeros_(self.ada.bias)

    def forward(
        self,
        x: Tensor,
        cond: Tensor,
        action: Tensor,
        layer: int,
        context: AttentionContext,
    ) -> Tensor:
        """``x`` (B, NF, Tf, dim); ``cond`` (B, NF, dim); ``action`` (B, NF, dim).

        ``action`` is this block's expert residual
        (:func:`~gym_worldmodel.models.actions.expert_residuals`).
        """
        b, nf, tf, d = x.shape
        x, h, (gate1, shift2, scale2, gate2) = self._attention_input(x, cond, action)
        x = torch.addcmul(x, gate1, self.attn(h, layer, context).view(b, nf, tf, d))
        return torch.addcmul(x, gate2, self.mlp(modulate(self.norm2(x), shift2, scale2)))

    def store(
        self,
        x: Tensor,
        cond: Tensor,
        action: Tensor,
        layer: int,
        context: ChunkAttention | MemoryAttention,
    ) -> None:
        """Only what :meth:`forward` stores in ``context``'s cache: this block's keys and values."""
        self.attn.store(self._attention_input(x, cond, action)[1], layer, context)

    def _attention_input(
        self, x: Tensor, cond: Tensor, action: Tensor
    ) -> tuple[Tensor, Tensor, tuple[Tensor, ...]]:
        """The residual stream with the action added, and the attention's input.

        Also the modulation of the rest of the block: gate1, shift2, scale2, gate2.
        """
        b, nf, tf, d = x.shape
        x = x + action[:, :, None]
        shift1, scale1, *rest = self.ada(F.silu(cond))[:, :, None].chunk(6, -1)
        h = modulate(self.norm1(x), shift1, scale1).reshape(b, nf * tf, d)
        return x, h, tuple(rest)


class CausalChunkDiT(nn.Module):
    """The denoiser: latents of a chunk at noise level ``t`` -> flow-matching velocity.

    Args:
        config: Architecture and cache layout.

    Example:
        >>> import torch
        >>> from gym_worldmodel.models import CausalChunkDiT, WorldModelConfig
        >>> cfg = WorldModelConfig.tiny().dit
        >>> dit = CausalChunkDiT(cfg)
        >>> side = cfg.latent_size
        >>> x = torch.randn(2, cfg.chunk_frames, cfg.latent_channels, side, side)
        >>> a = torch.zeros(2, cfg.chunk_frames, cfg.action_dim)
        >>> dit(x, torch.ones(2), a, torch.zeros(2, dtype=torch.long)).shape
        torch.Size([2, 2, 4, 16, 16])
    """

    # Rotary tables (non-persistent buffers): the current chunk's (T, Dh), memory slots' (M, T, Dh).
    chunk_cos: Tensor
    chunk_sin: Tensor
    memory_cos: Tensor
    memory_sin: Tensor

    def __init__(self, config: DiTConfig) -> None:
        super().__init__()
        self.config = config
        p, c = config.patch_size, config.latent_channels
        self.patch_embed = nn.Linear(c * p * p, config.dim)
        self.time_embed = TimestepEmbedding(config.dim)
        self.actions = ActionProjectors(config)
        self.blocks = nn.ModuleList(DiTBlock(config) for _ in range(config.depth))
        self.final_norm = nn.LayerNorm(config.dim, elementwise_affine=False, eps=1e-6)
        self.final_ada = RowLinear(config.dim, 2 * config.dim)
        self.out = nn.Linear(config.dim, c * p * p)
        # Without bias, a zero anchor (first chunk, memory) adds exactly nothing.
        self.anchor_embed = (
            nn.Linear(c * p * p, config.dim, bias=False) if config.frame_anchor else None
        )
        for layer in (self.final_ada, self.out):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)
        if self.anchor_embed is not None:  # starts as a no-op: fine-tuning keeps what was learned
            nn.init.zeros_(self.anchor_embed.weight)
        # Latent pixels (x, y) and log zoom a frame's content moves per unit of each action.
        self.anchor_motion = (
            nn.Parameter(torch.zeros(len(config.modalities), config.action_dim, 3))
            if config.anchor_motion
            else None
        )
        # With ``anchor_flow``, the owner (``WorldModel``) sets this to its flow warp of the
        # anchors: ``(anchors (B, N, C, h, w), actions (B, NF, A), modality) -> (B, NF, C, h, w)``.
        self.anchor_mover: Callable[[Tensor, Tensor, Tensor], Tensor] | None = None
        self.rope = Rotary3D(config.rope_axes, config.rope_theta)
        side = config.latent_size // p
        # The current chunk always sits at time ``context_frames``: queries and fresh keys.
        cos, sin = self.rope.cos_sin(
            grid_positions(config.chunk_frames, side, config.context_frames)
        )
        self.register_buffer("chunk_cos", cos, persistent=False)
        self.register_buffer("chunk_sin", sin, persistent=False)
        # Memory slot m sits at time (1 + m) * F: tables (M, T, Dh).
        slots = [
            self.rope.cos_sin(
                grid_positions(config.chunk_frames, side, (1 + m) * config.chunk_frames)
            )
            for m in range(config.memory_chunks)
        ]
        empty = torch.zeros(0, config.tokens_per_chunk, config.head_dim)
        self.register_buffer(
            "memory_cos", torch.stack([c for c, _ in slots]) if slots else empty, persistent=False
        )
        self.register_buffer(
            "memory_sin", torch.stack([s for _, s in slots]) if slots else empty, persistent=False
        )

    def forward(
        self,
        x: Tensor,
        t: Tensor,
        actions: Tensor,
        modality: Tensor,
        cache: ChunkCache | None = None,
        *,
        write: bool = False,
        drop_action: Tensor | None = None,
        frame_anchors: Tensor | None = None,
    ) -> Tensor:
        """Denoise one chunk against the cache.

        Args:
            x: ``(B, F, C, h, w)`` noisy latents of the current chunk.
            t: ``(B,)`` noise level.
            actions: ``(B, F, A)`` padded actions.
            modality: ``(B,)`` expert ids.
            cache: KV cache of the rows; ``None`` attends to the chunk alone.
            write: Store this pass's K/V in the cache (the cache-write pass).
            drop_action: ``(B,)`` bool; rows use the null action.
            frame_anchors: ``(B, F, C, h, w)``, each frame's anchor as :meth:`step_anchors`
                gives it for this cache and these actions (computed once for the step's
                denoiser calls); None: computed here.

        Returns:
            Velocity ``(B, F, C, h, w)``.

        With ``frame_anchor``, the chunk is anchored to the cache's last written frame, and the
        write pass makes this chunk's last frame the next anchor.
        """
        anchor = None
        context: ChunkAttention | SequenceAttention
        if cache is None:
            if write:
                raise ValueError("write=True needs a cache")
            context = SequenceAttention(self.config, self.rope, 1, x.device)
        else:
            context = ChunkAttention(cache, self.chunk_cos, self.chunk_sin, write)
            anchor = self._cache_anchor(cache)
        t_frames = t[:, None].expand(-1, x.shape[1])
        out = self._run(x, t_frames, actions, modality, drop_action, context, anchor, frame_anchors)
        if write and self.anchor_embed is not None:
            assert cache is not None  # write=True without a cache raised above
            cache.write_anchor(x[:, -1])
        return out

    def write(
        self,
        x: Tensor,
        t: Tensor,
        actions: Tensor,
        modality: Tensor,
        cache: ChunkCache,
        *,
        frame_anchors: Tensor | None = None,
    ) -> None:
        """The cache-write pass: what ``forward(..., write=True)`` stores, without its output.

        The last block stops once its keys and values are stored (its attention, MLP and the
        output head would compute a velocity no one reads). Arguments as :meth:`forward`.
        """
        anchor = self._cache_anchor(cache)
        context = ChunkAttention(cache, self.chunk_cos, self.chunk_sin, write=True)
        t_frames = t[:, None].expand(-1, x.shape[1])
        self._store(x, t_frames, actions, modality, context, anchor, frame_anchors)
        if self.anchor_embed is not None:
            cache.write_anchor(x[:, -1])

    def forward_sequence(
        self,
        x: Tensor,
        t: Tensor,
        actions: Tensor,
        modality: Tensor,
        *,
        drop_action: Tensor | None = None,
        memory: Tensor | None = None,
        memory_valid: Tensor | None = None,
        memory_t: float = 0.0,
        anchors: Tensor | None = None,
    ) -> Tensor:
        """Denoise a whole sequence of chunks in one forward, without a cache.

        Chunk ``n`` sees exactly what the cache would hold when generating it: the sink (chunk 0),
        the retrieved memory, the ``window_chunks`` chunks before it, and itself. Used for
        training (each chunk its own noise level: noise as mask) and as the no-cache reference.

        Args:
            x: ``(B, N * F, C, h, w)`` latents of N chunks.
            t: ``(B, N)`` noise level of each chunk.
            actions: ``(B, N * F, A)``.
            modality: ``(B,)``.
            drop_action: ``(B,)`` bool.
            memory: ``(B, M * F, C, h, w)`` latents of M retrieved chunks (``M`` at most
                ``config.memory_chunks``), as :meth:`encode_memory` would write them.
            memory_valid: ``(B,)`` bool: rows whose memory is real; None: all rows'.
            memory_t: Noise level the memory chunks are presented at.
            anchors: ``(B, N, C, h, w)`` frame each chunk is anchored to (``frame_anchor``);
                default: the last frame of the chunk before it in ``x``, zeros for chunk 0.

        Returns:
            Velocity ``(B, N * F, C, h, w)``.
        """
        n, f = t.shape[1], self.config.chunk_frames
        if x.shape[1] != n * f:
            raise ValueError(f"x has {x.shape[1]} frames; t implies {n} chunks of {f}")
        n_mem = 0 if memory is None else memory.shape[1] // f
        context = SequenceAttention(self.config, self.rope, n, x.device, n_mem, memory_valid)
        t_frames = t.repeat_interleave(f, dim=1)
        if self.anchor_embed is None:
            anchors = None
        elif anchors is None:
            anchors = sequence_anchors(x, f)
        elif anchors.shape != (x.shape[0], n, *x.shape[2:]):
            raise ValueError(
                f"anchors must be (B, {n}, {', '.join(map(str, x.shape[2:]))}), "
                f"got {tuple(anchors.shape)}"
            )
        if n_mem:  # memory chunks first, at their level and with no action
            assert memory is not None  # n_mem > 0 only with memory
            if memory.shape[1] != n_mem * f or memory.shape[2:] != x.shape[2:]:
                raise ValueError(
                    f"memory must be (B, M * {f}, {', '.join(map(str, x.shape[2:]))}), "
                    f"got {tuple(memory.shape)}"
                )
            x = torch.cat((memory.to(x.dtype), x), 1)
            t_frames = torch.cat(
                (torch.full_like(t_frames[:, :1], memory_t).expand(-1, n_mem * f), t_frames), 1
            )
            actions = torch.cat(
                (actions.new_zeros(actions.shape[0], n_mem * f, actions.shape[2]), actions), 1
            )
            if anchors is not None:  # memory is not anchored
                anchors = torch.cat(
                    (anchors.new_zeros(anchors.shape[0], n_mem, *anchors.shape[2:]), anchors), 1
                )
        out = self._run(x, t_frames, actions, modality, drop_action, context, anchors)
        return out[:, n_mem * f :]

    def encode_memory(
        self,
        latents: Tensor,
        t: float,
        modality: Tensor,
        cache: MemoryCache,
        slot: int,
        rows: Tensor,
    ) -> None:
        """Write retrieved chunks' keys and values into a cache memory slot (one forward).

        Args:
            latents: ``(n, F, C, h, w)`` chunk latents, one per row in ``rows``.
            t: Noise level they are presented at (the level history is written at).
            modality: ``(n,)`` expert ids.
            cache: The cache to write.
            slot: Memory slot index (< ``config.memory_chunks``).
            rows: ``(n,)`` long, the cache rows.
        """
        if not 0 <= slot < self.config.memory_chunks:
            raise ValueError(f"slot must be in [0, {self.config.memory_chunks}), got {slot}")
        context = MemoryAttention(cache, self.memory_cos[slot], self.memory_sin[slot], slot, rows)
        n, f = latents.shape[:2]
        t_frames = torch.full((n, f), float(t), device=latents.device)
        actions = torch.zeros(n, f, self.config.action_dim, device=latents.device)
        self._store(latents, t_frames, actions, modality, context)  # only its K/V are kept

    def _cache_anchor(self, cache: ChunkCache) -> Tensor | None:
        """``(B, 1, C, h, w)``: the frame a cached chunk is anchored to (None: no anchor)."""
        if self.anchor_embed is None:
            return None
        if cache.anchor is None:
            raise ValueError("the cache was built for a model without frame_anchor")
        return cache.anchor[:, None]

    @property
    def moves_anchors(self) -> bool:
        """Whether each frame of a chunk has its own anchor (``anchor_motion``/``anchor_flow``)."""
        return self.anchor_motion is not None or bool(self.config.anchor_flow)

    def frame_anchors(self, anchors: Tensor, actions: Tensor, modality: Tensor) -> Tensor:
        """Each frame's anchor ``(B, N * F, C, h, w)`` from each chunk's ``(B, N, C, h, w)``.

        Moved by the learned flow (``anchor_flow``) or the linear motion (``anchor_motion``);
        repeated over the chunk's frames otherwise.
        """
        if self.config.anchor_flow:
            if self.anchor_mover is None:
                raise RuntimeError(
                    "anchor_flow needs the flow warp: build the DiT inside a WorldModel"
                )
            return self.anchor_mover(anchors, actions, modality)
        if self.anchor_motion is not None:
            return self.moved_anchors(anchors, actions, modality)
        return anchors.repeat_interleave(self.config.chunk_frames, 1)

    def step_anchors(self, cache: ChunkCache, actions: Tensor, modality: Tensor) -> Tensor | None:
        """The per-frame anchors of the chunk a step generates after ``cache`` (None: not moved).

        One step's denoiser calls and its cache-write pass all use these, so a rollout computes
        them once (:class:`~gym_worldmodel.sampling.ChunkRollout`).
        """
        if not self.moves_anchors or cache.anchor is None:
            return None
        return self.frame_anchors(cache.anchor[:, None], actions, modality)

    def moved_anchors(self, anchors: Tensor, actions: Tensor, modality: Tensor) -> Tensor:
        """Each frame's anchor ``(B, N * F, C, h, w)`` from each chunk's ``(B, N, C, h, w)``.

        With ``anchor_motion``, frame ``k`` of a chunk sees its chunk's anchor moved (shifted
        and zoomed, :func:`move_frames`) by the motion of the chunk's actions ``0..k`` (action
        ``k`` leads to frame ``k``). Zero anchors (the sink, memory) stay zero.
        """
        assert self.anchor_motion is not None, "moved_anchors needs anchor_motion"
        b, n, f = anchors.shape[0], anchors.shape[1], self.config.chunk_frames
        rate = self.anchor_motion[modality].float()  # (B, A, 3)
        step = (actions.float()[..., None] * rate[:, None]).sum(-2)  # (B, NF, 3), per row
        motion = step.reshape(b, n, f, 3).cumsum(2).reshape(b, n * f, 3)
        return move_frames(anchors.repeat_interleave(f, 1), motion).to(anchors.dtype)

    def _run(
        self,
        x: Tensor,
        t_frames: Tensor,
        actions: Tensor,
        modality: Tensor,
        drop_action: Tensor | None,
        context: AttentionContext,
        anchors: Tensor | None = None,
        frame_anchors: Tensor | None = None,
    ) -> Tensor:
        """The velocity of latents ``x`` at ``t_frames`` through every block and the head."""
        p, side = self.config.patch_size, self.config.latent_size // self.config.patch_size
        tokens, cond, residuals, anchors = self._embed(
            x, t_frames, actions, modality, drop_action, anchors, frame_anchors
        )
        for layer, (block, residual) in enumerate(zip(self._blocks, residuals, strict=True)):
            tokens = block(tokens, cond, residual, layer, context)
        shift, scale = self.final_ada(F.silu(cond))[:, :, None].chunk(2, -1)
        out = self.out(modulate(self.final_norm(tokens), shift, scale))  # (B, NF, Tf, C p p)
        out = rearrange(out, "b f (h w) (c p q) -> b f c (h p) (w q)", h=side, p=p, q=p)
        if self.config.anchor_sigma:
            if anchors is None:  # memory encoding: nothing is anchored
                anchors = torch.zeros_like(x[:, :1])
            out = anchored_velocity(x, t_frames, anchors, out, self.config.anchor_sigma)
        return out

    def _store(
        self,
        x: Tensor,
        t_frames: Tensor,
        actions: Tensor,
        modality: Tensor,
        context: ChunkAttention | MemoryAttention,
        anchors: Tensor | None = None,
        frame_anchors: Tensor | None = None,
    ) -> None:
        """:meth:`_run` up to the last block's keys and values being stored in the cache."""
        tokens, cond, residuals, _ = self._embed(
            x, t_frames, actions, modality, None, anchors, frame_anchors
        )
        *body, last = self._blocks
        for layer, (block, residual) in enumerate(zip(body, residuals, strict=False)):
            tokens = block(tokens, cond, residual, layer, context)
        last.store(tokens, cond, residuals[-1], len(body), context)

    @property
    def _blocks(self) -> Sequence[DiTBlock]:
        return cast("Sequence[DiTBlock]", self.blocks)  # an nn.ModuleList of DiTBlock

    def _embed(
        self,
        x: Tensor,
        t_frames: Tensor,
        actions: Tensor,
        modality: Tensor,
        drop_action: Tensor | None,
        anchors: Tensor | None,
        frame_anchors: Tensor | None,
    ) -> tuple[Tensor, Tensor, tuple[Tensor, ...], Tensor | None]:
        """Tokens ``(B, NF, Tf, dim)`` with their anchors, and what every block reads.

        That is the time conditioning, each block's action residual, and the anchors used (one
        per frame where they move).
        """
        p = self.config.patch_size
        patches = "b f c (h p) (w q) -> b f (h w) (c p q)"
        tokens = self.patch_embed(rearrange(x, patches, p=p, q=p))  # (B, NF, Tf, dim)
        if anchors is not None:
            assert self.anchor_embed is not None  # callers pass anchors only with frame_anchor
            if self.moves_anchors:  # one anchor per frame
                if frame_anchors is None:
                    frame_anchors = self.frame_anchors(anchors, actions, modality)
                anchors = frame_anchors
                tokens = tokens + self.anchor_embed(
                    rearrange(anchors, patches, p=p, q=p).to(tokens.dtype)
                )
            else:  # (B, N, C, h, w): one anchor frame per chunk
                anchor = self.anchor_embed(rearrange(anchors, patches, p=p, q=p).to(tokens.dtype))
                chunks = tokens.unflatten(1, (anchors.shape[1], -1))  # (B, N, F, Tf, dim)
                tokens = (chunks + anchor[:, :, None]).flatten(1, 2)
        cond = self.time_embed(t_frames)  # (B, NF, dim)
        action = self.actions(actions, modality, drop_action)  # (B, NF, u)
        residuals = expert_residuals([block.expert for block in self._blocks], action, modality)
        return tokens, cond, residuals, anchors


def move_frames(frames: Tensor, motion: Tensor) -> Tensor:
    """Frames ``(B, N, C, h, w)`` with their content moved by ``motion`` ``(B, N, 3)``.

    ``motion`` is (x, y, zoom): a shift in pixels, right and down positive, and the log of a
    magnification about the frame's centre (positive: the content grows, as when the camera
    walks towards it), applied after the shift. Bilinear, with the border repeated where
    content comes in. Float32 out.
    """
    b, n, c, h, w = frames.shape
    m = motion.float().reshape(b * n, 1, 1, 3)
    shrink = torch.exp(-m[..., 2])  # (BN, 1, 1)
    xs = torch.arange(w, device=frames.device, dtype=torch.float32) - (w - 1) / 2
    ys = torch.arange(h, device=frames.device, dtype=torch.float32) - (h - 1) / 2
    gx = (xs[None, None, :] * shrink - m[..., 0]) * (2 / (w - 1))  # (BN, 1, w)
    gy = (ys[None, :, None] * shrink - m[..., 1]) * (2 / (h - 1))  # (BN, h, 1)
    grid = torch.stack(torch.broadcast_tensors(gx, gy), -1)  # (BN, h, w, 2)
    out = F.grid_sample(
        frames.float().reshape(b * n, c, h, w),
        grid,
        mode="bilinear",
        padding_mode="border",
        align_corners=True,
    )
    return out.reshape(b, n, c, h, w)


def anchored_velocity(
    x: Tensor, t_frames: Tensor, anchors: Tensor, raw: Tensor, sigma: float
) -> Tensor:
    """Velocity from the network's raw output under the anchored prior (``anchor_sigma``).

    With ``x_t = (1 - t) x0 + t eps`` and a prior ``x0 ~ N(a, s)`` around the frame's anchor
    ``a`` (``s = sigma^2``; ``a = 0, s = 1`` for chunks whose anchor is zero), the clean frame is
    predicted as its posterior mean plus the network's correction scaled by the posterior std:
    ``x0 = a + (1 - t) s / D * (x_t - (1 - t) a) + t sqrt(s / D) * raw``, with
    ``D = (1 - t)^2 s + t^2``, and the velocity is ``(x_t - x0) / t``, written so that it is
    finite at ``t = 0``. Only elementwise ops of one IEEE operation each, so rows stay bitwise
    independent of the batch.

    Args:
        x: ``(B, NF, C, h, w)`` noisy input.
        t_frames: ``(B, NF)`` noise level of each frame.
        anchors: ``(B, N, C, h, w)`` anchor of each chunk, or ``(B, NF, C, h, w)`` of each
            frame (zero: none).
        raw: ``(B, NF, C, h, w)`` network output.
        sigma: Prior standard deviation about the anchor.

    Returns:
        Velocity ``(B, NF, C, h, w)`` float32.
    """
    f = x.shape[1] // anchors.shape[1]
    a = anchors.float().repeat_interleave(f, 1)
    t = t_frames.float()
    s = torch.where(a.flatten(2).abs().amax(-1) > 0, sigma * sigma, 1.0)
    u = 1.0 - t
    d = u * u * s + t * t
    skip = (t - u * s) / d
    scale = (s / d).sqrt()
    y = x.float() - u[..., None, None, None] * a
    return skip[..., None, None, None] * y - a - scale[..., None, None, None] * raw.float()


def sequence_anchors(x: Tensor, chunk_frames: int) -> Tensor:
    """``(B, N, C, h, w)`` anchors of a chunk sequence ``x``: each chunk's previous frame.

    Chunk 0 (the sink) has none: zeros.
    """
    last = x[:, chunk_frames - 1 :: chunk_frames]  # last frame of every chunk
    return torch.cat((torch.zeros_like(last[:, :1]), last[:, :-1]), 1)
