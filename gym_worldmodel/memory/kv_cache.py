"""Preallocated, batched KV cache: sink, retrieved-memory slots, ring window, current chunk.

Layout of one row's token slots (every layer alike)::

    [ memory (M chunks) | sink (first chunk) | ring window (W chunks) | current chunk ]

Memory comes first so that a cache used without memory (no :meth:`KVCache.set_memory` since its
last full reset) reads the contiguous view after it and spends nothing on the empty slots. Once
set_memory is called, attention reads the slots every step, masked in rows that hold none: a
row's keys, and in bf16 its bits, then do not depend on whether another row holds memory.

Keys are stored already rotated to their slot's position, and positions are relative to the
current chunk, which always sits at time ``P = (1 + M + W) * F`` frames: the sink at ``0``, memory
chunk ``m`` at ``(1 + m) * F``, the ring chunk ``a`` chunks old at ``P - a * F``. A commit ages
every ring key by one chunk with a fixed rotation, so an endless episode never leaves the trained
position range and a step never re-rotates the whole cache.

A step allocates only index tensors and the rotated window that a commit writes, and its writes
and commits never sync to the host: write positions are computed on the device from each row's
chunk counter, so rows reset at different times coexist in one batch. (Starting rows does:
``select`` and ``load_state_dict`` read their counters back.)
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import Tensor

from gym_worldmodel.models.config import DiTConfig
from gym_worldmodel.models.rope import Rotary3D, apply_rotary


@dataclass(frozen=True)
class CacheLayout:
    """Token slot ranges of one cache row, derived from the model config."""

    chunk_tokens: int
    chunk_frames: int
    memory_chunks: int
    window_chunks: int

    @classmethod
    def from_config(cls, config: DiTConfig) -> CacheLayout:
        """The layout a model with ``config`` was trained for."""
        return cls(
            config.tokens_per_chunk, config.chunk_frames, config.memory_chunks, config.window_chunks
        )

    def _span(self, first_chunk: int, chunks: int) -> slice:
        return slice(first_chunk * self.chunk_tokens, (first_chunk + chunks) * self.chunk_tokens)

    @property
    def memory(self) -> slice:
        """Slots reserved for retrieved spatial memory."""
        return self._span(0, self.memory_chunks)

    def memory_slot(self, slot: int) -> slice:
        """Slots of retrieved-memory chunk ``slot``."""
        return self._span(slot, 1)

    @property
    def sink(self) -> slice:
        """Slots of the first chunk of the episode."""
        return self._span(self.memory_chunks, 1)

    @property
    def window(self) -> slice:
        """Ring of the most recent chunks."""
        return self._span(1 + self.memory_chunks, self.window_chunks)

    @property
    def current(self) -> slice:
        """Scratch slots of the chunk being generated."""
        return self._span(1 + self.memory_chunks + self.window_chunks, 1)

    @property
    def slots(self) -> int:
        """Token slots per row."""
        return self.current.stop

    @property
    def current_time(self) -> int:
        """Time index (frames) of the current chunk's first frame."""
        return (1 + self.memory_chunks + self.window_chunks) * self.chunk_frames


class KVCache:
    """Keys and values of every layer for a batch of independent rows.

    Build one with :meth:`for_model`. The model's attention calls :meth:`stage` each forward and
    :meth:`write` on the cache-write pass; the rollout then calls :meth:`commit` once.

    Attributes:
        k: ``(L, B, H, S, Dh)`` rotated keys.
        v: ``(L, B, H, S, Dh)`` values.
        valid: ``(B, S)`` bool, slots holding keys (the current chunk's always do).
        chunks: ``(B,)`` long, chunks committed per row since its reset.
        anchor: ``(B, C, h, w)`` float32 last frame of each row's last written chunk, the frame
            the next chunk is anchored to (models with ``frame_anchor``; else None).
    """

    def __init__(
        self,
        layout: CacheLayout,
        k: Tensor,
        v: Tensor,
        valid: Tensor,
        chunks: Tensor,
        to_sink: tuple[Tensor, Tensor],
        age: tuple[Tensor, Tensor],
        anchor: Tensor | None = None,
    ) -> None:
        # contiguous: write() stores through flat views
        self.k, self.v = k.contiguous(), v.contiguous()
        self.layout, self.valid, self.chunks, self.anchor = layout, valid, chunks, anchor
        self._to_sink, self._age = to_sink, age
        self._refresh_write_index()
        self._refresh_context()

    @classmethod
    def for_model(
        cls,
        config: DiTConfig,
        rope: Rotary3D,
        batch_size: int,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
    ) -> KVCache:
        """An empty cache for ``batch_size`` rows of a model with ``config`` and ``rope``."""
        layout = CacheLayout.from_config(config)
        shape = (config.depth, batch_size, config.heads, layout.slots, config.head_dim)
        k = torch.zeros(shape, device=device, dtype=dtype)
        valid = torch.zeros(batch_size, layout.slots, dtype=torch.bool, device=device)
        valid[:, layout.current] = True
        chunks = torch.zeros(batch_size, dtype=torch.long, device=device)
        anchor = None
        if config.frame_anchor:
            side = config.latent_size
            anchor = torch.zeros(batch_size, config.latent_channels, side, side, device=device)

        def shift(frames: float) -> tuple[Tensor, Tensor]:
            cos, sin = rope.time_shift(frames)
            return cos.to(device, dtype), sin.to(device, dtype)

        return cls(
            layout,
            k,
            torch.zeros_like(k),
            valid,
            chunks,
            shift(-layout.current_time),
            shift(-layout.chunk_frames),
            anchor,
        )

    @property
    def batch_size(self) -> int:
        """Rows."""
        return self.k.shape[1]

    @property
    def attn_mask(self) -> Tensor | None:
        """``(B, 1, 1, S')`` view of :attr:`valid` over the slots attention reads.

        ``None`` once every slot read is known to be valid (memory either unused or held by
        every row, and at least ``1 + W`` commits since the last reset, counted on the host):
        unmasked attention is faster and gives the same result.
        """
        memory_ok = not self._memory_in_use or self._memory_full
        if memory_ok and self._commits_since_reset > self.layout.window_chunks:
            return None
        return self.valid[:, None, None, self._context]

    def stage(self, layer: int, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """Put the current chunk's ``(B, H, T, Dh)`` K/V in the scratch slots.

        Returns:
            The layer's keys and values over the slots attention reads (views, no copy).
        """
        cur = self.layout.current
        self.k[layer, :, :, cur] = k
        self.v[layer, :, :, cur] = v
        return self.k[layer, :, :, self._context], self.v[layer, :, :, self._context]

    def write(self, layer: int, k: Tensor, v: Tensor) -> None:
        """Store the current chunk in the sink (a row's first chunk) or its ring slot.

        Through ``index_copy_`` of ``(Dh,)`` rows into a layer's flat view: ``scatter_``
        through an index expanded over the head width took ten times longer on the CPU.
        """
        if self._commits_since_reset == 0:  # else every row has a chunk: none goes to the sink
            first = (self.chunks == 0)[:, None, None, None]
            k = torch.where(first, apply_rotary(k, *self._to_sink), k)
        width, at = self.k.shape[-1], self._flat_write_index
        self.k[layer].view(-1, width).index_copy_(0, at, k.reshape(-1, width).to(self.k.dtype))
        self.v[layer].view(-1, width).index_copy_(0, at, v.reshape(-1, width).to(self.v.dtype))

    def write_anchor(self, frame: Tensor) -> None:
        """Keep each row's ``(B, C, h, w)`` last written frame: the next chunk's anchor."""
        assert self.anchor is not None  # called only for models with frame_anchor
        self.anchor.copy_(frame)

    def write_memory(self, layer: int, slot: int, k: Tensor, v: Tensor, rows: Tensor) -> None:
        """Store a retrieved chunk's rotated ``(n, H, T, Dh)`` K/V in memory slot ``slot``.

        Called by the model's memory pass (``CausalChunkDiT.encode_memory``) for every layer;
        :meth:`set_memory` then marks which rows hold memory.
        """
        span = self.layout.memory_slot(slot)
        self.k[layer, rows, :, span] = k.to(self.k.dtype)
        self.v[layer, rows, :, span] = v.to(self.v.dtype)

    def set_memory(self, valid: Tensor) -> None:
        """Mark the memory slots each row holds; slots marked False are masked out of attention.

        ``valid`` is ``(B, M)`` bool, a host tensor (or one on the cache's device).
        """
        lay = self.layout
        valid = torch.as_tensor(valid, dtype=torch.bool)
        if valid.shape != (self.batch_size, lay.memory_chunks):
            raise ValueError(
                f"memory validity must be ({self.batch_size}, {lay.memory_chunks}), "
                f"got {tuple(valid.shape)}"
            )
        self.valid[:, lay.memory] = valid.to(self.valid.device).repeat_interleave(
            lay.chunk_tokens, 1
        )
        # Attention reads the memory slots from now on, held or not (masked where not): reading
        # them only while some row holds memory would change every row's keys, and in bf16 its
        # bits, when another row retrieves its first chunk.
        self._set_memory_in_use(True)
        self._memory_full = bool(valid.all())
        self._memory_held = bool(valid.any())

    @property
    def holds_memory(self) -> bool:
        """Whether some row may hold retrieved memory (host flag, no device read).

        Never False while a row holds memory; after a partial :meth:`reset` it may stay True
        until the next :meth:`set_memory`.
        """
        return self._memory_held

    @contextmanager
    def hidden_memory(self) -> Iterator[None]:
        """Attention reads no memory slot inside the block: every row as if it held none.

        The slots attention reads stay the same, masked, so a row that holds no memory gets
        the same bits inside as outside. For memory guidance (``SamplerConfig``); nothing may
        be written to the cache inside.
        """
        memory = self.layout.memory
        held, full = self.valid[:, memory].clone(), self._memory_full
        self.valid[:, memory] = False
        self._memory_full = False
        try:
            yield
        finally:
            self.valid[:, memory] = held
            self._memory_full = full

    def commit(self) -> None:
        """Close a step after every layer wrote: mark slots valid, age the ring, count."""
        self.valid.scatter_(1, self._write_index, True)
        win = self.layout.window
        self.k[:, :, :, win] = apply_rotary(self.k[:, :, :, win], *self._age)
        self.chunks += 1
        self._commits_since_reset += 1
        self._refresh_write_index()

    def reset(self, env_idx: Tensor | list[int] | None = None) -> None:
        """Empty rows ``env_idx`` (all rows if ``None``); other rows are untouched."""
        rows = self._rows(env_idx)
        self.k[:, rows] = 0
        self.v[:, rows] = 0
        self.valid[rows] = False
        self.valid[rows, self.layout.current] = True
        self.chunks[rows] = 0
        if self.anchor is not None:
            self.anchor[rows] = 0
        self._commits_since_reset = 0
        self._memory_full = False
        self._refresh_write_index()
        if env_idx is None:  # a partial reset keeps the flag: attending to masked slots is exact
            self._set_memory_in_use(False)

    def select(self, idx: Tensor | list[int]) -> KVCache:
        """A new cache holding copies of rows ``idx`` (repeats allowed: fork one row into n)."""
        idx = torch.as_tensor(idx, dtype=torch.long, device=self.k.device)
        return KVCache(
            self.layout,
            self.k[:, idx],
            self.v[:, idx],
            self.valid[idx],
            self.chunks[idx],
            self._to_sink,
            self._age,
            None if self.anchor is None else self.anchor[idx],
        )

    def clone(self) -> KVCache:
        """An independent copy."""
        return self.select(torch.arange(self.batch_size, device=self.k.device))

    def state_dict(self, env_idx: Tensor | list[int] | None = None) -> dict[str, Tensor]:
        """Tensors that fully describe the cache contents.

        References to the whole cache for None; else copies of rows ``env_idx`` (repeats
        allowed), for :meth:`load_state_dict` with as many rows.
        """
        state = {"k": self.k, "v": self.v, "valid": self.valid, "chunks": self.chunks}
        if self.anchor is not None:
            state["anchor"] = self.anchor
        if env_idx is None:
            return state
        rows = self._rows(env_idx)
        assert isinstance(rows, Tensor)
        return {k: t.index_select(_row_axis(t), rows) for k, t in state.items()}

    def load_state_dict(self, state: dict[str, Tensor], env_idx: Tensor | list[int] | None = None):
        """Copy ``state`` into rows ``env_idx`` (all rows if ``None``).

        ``state`` holds as many rows as ``env_idx`` names (or the whole batch). Every tensor is
        checked before any is copied: a state that does not fit changes nothing.
        """
        rows = self._rows(env_idx)
        for name, dst in self.state_dict().items():
            if name not in state:
                raise ValueError(f"cache state lacks {name!r}: it is from a different model")
            src = state[name]
            axis = _row_axis(dst)
            count = dst.shape[axis] if isinstance(rows, slice) else len(rows)
            expected = (*dst.shape[:axis], count, *dst.shape[axis + 1 :])  # (no copy to size it)
            if tuple(src.shape) != expected:
                raise ValueError(
                    f"cache state {name!r} has shape {tuple(src.shape)}, expected {tuple(expected)}"
                )
        for name, dst in self.state_dict().items():
            src = state[name]
            if dst.dim() == 5:
                dst[:, rows] = src.to(dst)
            else:
                dst[rows] = src.to(dst)
        self._refresh_write_index()
        self._refresh_context()

    def miscounted_rows(self, state: dict[str, Tensor]) -> list[int]:
        """Rows of a cache ``state`` whose chunk count disagrees with the slots marked written.

        The sink and the window hold a row's first ``1 + window_chunks`` chunks committed (the
        window the latest of them): a count edited apart from its ``valid`` mask would place the
        next chunks elsewhere than the keys it holds.
        """
        lay = self.layout
        held = state["valid"][:, lay.sink.start : lay.window.stop].sum(1)
        expected = state["chunks"].clamp(max=1 + lay.window_chunks) * lay.chunk_tokens
        return torch.nonzero(held != expected).flatten().tolist()

    def _rows(self, env_idx: Tensor | list[int] | None) -> Tensor | slice:
        if env_idx is None:
            return slice(None)
        return torch.as_tensor(env_idx, dtype=torch.long, device=self.k.device)

    def _refresh_write_index(self) -> None:
        """Slots the next committed chunk goes to, per row: ``(B, T)`` long."""
        lay = self.layout
        ring = (self.chunks - 1).clamp(min=0) % lay.window_chunks
        start = torch.where(
            self.chunks == 0, lay.sink.start, lay.window.start + ring * lay.chunk_tokens
        )
        self._write_index = start[:, None] + torch.arange(lay.chunk_tokens, device=start.device)
        # The same slots as rows of a layer's (B * H * S, Dh) view, in (B, H, T) order.
        _, rows, heads, slots, _ = self.k.shape
        first = torch.arange(rows * heads, device=start.device).view(rows, heads, 1) * slots
        self._flat_write_index = (first + self._write_index[:, None, :]).reshape(-1)

    def _refresh_context(self) -> None:
        """Read the memory slots in attention if some row holds memory; recount commits.

        Called only off the hot path (construction, fork, state loads), where one host read of the
        valid mask is cheap. An engine with memory calls :meth:`set_memory` before every step,
        which reads the slots from then on.
        """
        self._set_memory_in_use(bool(self.valid[:, self.layout.memory].any()))
        self._commits_since_reset = int(self.chunks.min()) if self.batch_size else 0

    def _set_memory_in_use(self, in_use: bool) -> None:
        self._memory_in_use = self._memory_held = in_use
        self._memory_full = False  # known only after set_memory
        self._context = slice(0 if in_use else self.layout.memory.stop, None)


def _row_axis(t: Tensor) -> int:
    """The axis of a cache tensor's rows: 1 for the (layers, B, ...) keys and values, else 0."""
    return 1 if t.dim() == 5 else 0
