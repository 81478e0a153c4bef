"""Self-attention and the two ways a chunk sees its context.

* :class:`ChunkAttention`: inference. The current chunk's queries attend to the KV cache
  (sink, retrieved memory, ring window) plus the chunk itself; the cache-write pass stores the
  chunk's keys and values.
* :class:`SequenceAttention`: training and the no-cache reference. A whole sequence of chunks in
  one forward, each chunk attending to exactly the keys the cache would hold for it (block-causal
  sliding window), which makes it equal to chunk-by-chunk generation with the cache.
* :class:`MemoryAttention`: a retrieved memory chunk on its own (it attends to itself only),
  whose keys and values go to one of the cache's memory slots.

Positions are relative to the cache: the current chunk sits at time ``P = context_frames``, the
ring chunk ``a`` chunks old at ``P - a * F``, the sink (the first chunk) at ``0``, memory slot
``m`` at ``(1 + m) * F`` (retrieved chunks are reframed: wherever and whenever they were seen,
they sit just after the sink in the position index). The sequence path reproduces exactly those
relative distances, including the sink's and memory's fixed distances: rotary attention depends
only on the distance between a query and a key, so chunk ``c``'s queries stay at their place in
the sequence (``c * F`` on) and the sink and memory keys it reads are rotated to their fixed
position moved by ``c * F - P``, which puts them as far before the query as the cache does.
"""

from __future__ import annotations

from typing import Protocol

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gym_worldmodel.models.config import DiTConfig
from gym_worldmodel.models.rope import Rotary3D, apply_rotary, grid_positions


class ChunkCache(Protocol):
    """What :class:`ChunkAttention` needs from a KV cache (``memory.KVCache`` implements it)."""

    @property
    def attn_mask(self) -> Tensor | None:
        """Boolean ``(B, 1, 1, S)``: slots holding keys (current chunk included); None: all."""
        ...

    def stage(self, layer: int, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """Place the current chunk's K/V and return the layer's K and V over the slots it reads.

        ``(B, H, S', Dh)``: the memory slots are among them only once the cache holds memory.
        """
        ...

    def write(self, layer: int, k: Tensor, v: Tensor) -> None:
        """Store the current chunk's K/V in its sink or ring slot."""
        ...

    @property
    def anchor(self) -> Tensor | None:
        """``(B, C, h, w)`` frame the next chunk is anchored to; None: no ``frame_anchor``."""
        ...

    def write_anchor(self, frame: Tensor) -> None:
        """Keep each row's ``(B, C, h, w)`` last written frame: the next chunk's anchor."""
        ...


class MemoryCache(Protocol):
    """What :class:`MemoryAttention` needs from a KV cache."""

    def write_memory(self, layer: int, slot: int, k: Tensor, v: Tensor, rows: Tensor) -> None:
        """Store rotated ``(n, H, T, Dh)`` K/V of rows ``rows`` in memory slot ``slot``."""
        ...


class ChunkAttention:
    """Attention context of one chunk against a KV cache.

    Args:
        cache: The cache; read every call, written when ``write`` is set.
        cos: Rotary cosines of the chunk's tokens at the current position, ``(T, Dh)``.
        sin: Rotary sines, ``(T, Dh)``.
        write: Store this pass's K/V (the cache-write pass on the clean chunk).
    """

    def __init__(self, cache: ChunkCache, cos: Tensor, sin: Tensor, write: bool) -> None:
        self.cache, self.cos, self.sin, self.write = cache, cos, sin, write

    def __call__(self, layer: int, qk: Tensor, v: Tensor) -> Tensor:
        """Attend queries to the cache plus the chunk itself.

        Args:
            layer: Block index (selects the cache layer).
            qk: Stacked normalised queries and keys ``(2, B, H, T, Dh)``, not yet rotated.
            v: Values ``(B, H, T, Dh)``.
        """
        q, k = apply_rotary(qk, self.cos, self.sin).unbind(0)
        keys, values = self.cache.stage(layer, k, v)  # (B, H, S, Dh)
        out = F.scaled_dot_product_attention(q, keys, values, attn_mask=self.cache.attn_mask)
        if self.write:
            self.cache.write(layer, k, v)
        return out

    def store(self, layer: int, k: Tensor, v: Tensor) -> None:
        """What :meth:`__call__` leaves in the cache, ``k`` not yet rotated, without attending.

        For a write pass's last block, whose output no one reads.
        """
        k = apply_rotary(k, self.cos, self.sin)
        self.cache.stage(layer, k, v)
        if self.write:
            self.cache.write(layer, k, v)


class MemoryAttention:
    """Attention context of retrieved memory chunks being written to a cache memory slot.

    A memory chunk attends to itself only (like the sink when an episode starts), so its keys
    and values do not depend on where or when it was retrieved.

    Args:
        cache: The cache whose memory slot receives the chunk.
        cos: Rotary cosines at the slot's position, ``(T, Dh)``.
        sin: Rotary sines, ``(T, Dh)``.
        slot: Memory slot index.
        rows: ``(n,)`` long, the cache rows the ``n`` chunks go to.
    """

    def __init__(
        self, cache: MemoryCache, cos: Tensor, sin: Tensor, slot: int, rows: Tensor
    ) -> None:
        self.cache, self.cos, self.sin, self.slot, self.rows = cache, cos, sin, slot, rows

    def __call__(self, layer: int, qk: Tensor, v: Tensor) -> Tensor:
        """Self-attention of the chunk; its rotated K/V are stored (arguments as above)."""
        q, k = apply_rotary(qk, self.cos, self.sin).unbind(0)
        self.cache.write_memory(layer, self.slot, k, v, self.rows)
        return F.scaled_dot_product_attention(q, k, v)

    def store(self, layer: int, k: Tensor, v: Tensor) -> None:
        """The chunk's rotated K/V into the slot, without attending (the last block's)."""
        self.cache.write_memory(layer, self.slot, apply_rotary(k, self.cos, self.sin), v, self.rows)


class SequenceAttention:
    """Attention context of a whole chunk sequence (training, no-cache reference).

    Chunk ``n`` sees itself, the sink (chunk 0), the retrieved memory chunks and the
    ``window_chunks`` chunks before it, exactly what the cache holds when chunk ``n`` is
    generated. Memory chunks come first in the token sequence and attend to themselves only
    (as :class:`MemoryAttention`); the sink does not see them (an episode's first chunk is
    written before anything is retrieved).

    Args:
        config: The DiT config (cache layout and geometry).
        rope: The model's rotary frequencies.
        n_chunks: Chunks in the sequence, the memory chunks not counted.
        device: Where to build the tables.
        memory_chunks: Memory chunks before the sequence (at most ``config.memory_chunks``).
        memory_valid: ``(B,)`` bool, rows whose memory chunks are real (the others ignore them);
            None: every row's are.
    """

    def __init__(
        self,
        config: DiTConfig,
        rope: Rotary3D,
        n_chunks: int,
        device: torch.device,
        memory_chunks: int = 0,
        memory_valid: Tensor | None = None,
    ):
        if memory_chunks > config.memory_chunks:
            raise ValueError(
                f"{memory_chunks} memory chunks; the model has {config.memory_chunks} slots"
            )
        f, side = config.chunk_frames, config.latent_size // config.patch_size
        self.tokens_per_chunk = config.tokens_per_chunk

        def tables() -> tuple[Tensor, ...]:
            cos, sin = rope.cos_sin(grid_positions(n_chunks * f, side).to(device))
            # Fixed-position keys (the sink at 0, memory slot m at (1 + m) F) as chunk c >= 1
            # reads them: moved by c F - P, so they lie as far before its queries as in the cache.
            fixed_at = grid_positions((1 + memory_chunks) * f, side)
            moves = torch.arange(1, n_chunks, dtype=fixed_at.dtype) * f - config.context_frames
            moved = fixed_at.expand(len(moves), -1, -1).clone()
            moved[..., 0] += moves[:, None]
            cos_fixed, sin_fixed = rope.cos_sin(moved.to(device))  # (n - 1, S, Dh)
            # The memory chunks' own attention: their slots' positions (after the sink's).
            cos_mem, sin_mem = rope.cos_sin(fixed_at[config.tokens_per_chunk :].to(device))
            return cos, sin, cos_fixed, sin_fixed, cos_mem, sin_mem

        layout = (n_chunks, memory_chunks, f, side, config.context_frames)
        self.cos, self.sin, self.cos_fixed, self.sin_fixed, self.cos_mem, self.sin_mem = (
            rope.cached(layout, torch.device(device), tables)
        )
        self.n_chunks, self.window, self.n_mem = n_chunks, config.window_chunks, memory_chunks
        self.memory_valid = memory_valid

    def __call__(self, layer: int, qk: Tensor, v: Tensor) -> Tensor:
        """Attend every query of the sequence to its visible context (arguments as above).

        Chunk 0 (the sink) sees itself; chunk ``c >= 1`` sees the sink, the memory and chunks
        ``max(1, c - window) .. c``. Each group of chunks with the same context shape is one
        attention call (chunks with a full window are batched together), so no work is spent
        on masked-out pairs; a mask is used only to hide some rows' memory.
        """
        n0, n, w = self.tokens_per_chunk, self.n_chunks, self.window
        mem_tokens = self.n_mem * n0
        outs = self._memory(qk[..., :mem_tokens, :], v[:, :, :mem_tokens])
        # The keys and values at fixed positions: the sink's (chunk 0), then the memory's.
        fixed_k = torch.cat(
            (qk[1, :, :, mem_tokens : mem_tokens + n0], qk[1, :, :, :mem_tokens]), 2
        )
        fixed_v = torch.cat((v[:, :, mem_tokens : mem_tokens + n0], v[:, :, :mem_tokens]), 2)
        # Each reading chunk c >= 1 sees them rotated to its own distance: (B, n - 1, H, S, Dh).
        read_k = apply_rotary(fixed_k[:, None], self.cos_fixed[:, None], self.sin_fixed[:, None])
        qk, v = qk[..., mem_tokens:, :], v[:, :, mem_tokens:]
        q, k = apply_rotary(qk, self.cos, self.sin).unbind(0)
        b = q.shape[0]
        mask = self._mask(b, fixed_k.shape[2], q.device)
        chunks = self._chunks
        outs.append(F.scaled_dot_product_attention(chunks(q, 0, 1), chunks(k, 0, 1), v[:, :, :n0]))
        for c in range(1, min(w, n - 1) + 1):  # the window is not full yet
            keys = torch.cat((read_k[:, c - 1], chunks(k, 1, c + 1)), dim=2)
            values = torch.cat((fixed_v, chunks(v, 1, c + 1)), dim=2)
            outs.append(self._attend(chunks(q, c, c + 1), keys, values, mask))
        m = n - 1 - w  # chunks w + 1 .. n - 1 have the same context shape: batch them
        if m > 0:

            def windows(x: Tensor, fixed: Tensor) -> Tensor:
                parts = [chunks(x, c - w, c + 1) for c in range(w + 1, n)]
                stacked = torch.stack(parts, 1)  # (B, m, H, (w + 1) n0, D)
                return torch.cat((fixed, stacked), dim=3).flatten(0, 1)

            queries = chunks(q, w + 1, n).unflatten(2, (m, n0)).transpose(1, 2).flatten(0, 1)
            rows_mask = None if mask is None else mask.repeat_interleave(m, 0)
            fixed_v_rows = fixed_v[:, None].expand(b, m, *fixed_v.shape[1:])
            keys, values = windows(k, read_k[:, w:]), windows(v, fixed_v_rows)
            out = self._attend(queries, keys, values, rows_mask)
            outs.append(out.unflatten(0, (b, m)).transpose(1, 2).flatten(2, 3))
        return torch.cat(outs, dim=2)

    def _memory(self, qk: Tensor, v: Tensor) -> list[Tensor]:
        """The memory chunks' own attention, each at its slot's position.

        Args:
            qk: The memory tokens' queries and keys ``(2, B, H, n_mem * n0, Dh)``.
            v: Their values ``(B, H, n_mem * n0, Dh)``.

        Returns:
            One output per memory chunk.
        """
        n0 = self.tokens_per_chunk
        q_mem, k_mem = apply_rotary(qk, self.cos_mem, self.sin_mem).unbind(0)
        outs = []
        for j in range(self.n_mem):  # none without memory
            part = slice(j * n0, (j + 1) * n0)
            outs.append(
                F.scaled_dot_product_attention(q_mem[:, :, part], k_mem[:, :, part], v[:, :, part])
            )
        return outs

    def _chunks(self, x: Tensor, first: int, end: int) -> Tensor:
        """Tokens of chunks ``first .. end - 1`` of ``x`` ``(B, H, T, D)``."""
        return x[:, :, first * self.tokens_per_chunk : end * self.tokens_per_chunk]

    def _attend(self, q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None = None) -> Tensor:
        """Attention of ``q`` to ``k`` and ``v``.

        ``mask`` ``(B, 1, 1, S)`` covers the first ``S`` keys (the sink's and memory's); the
        keys after them are all visible.
        """
        if mask is not None:
            mask = F.pad(mask, (0, k.shape[2] - mask.shape[-1]), value=True)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)

    def _mask(self, b: int, fixed_keys: int, device: torch.device) -> Tensor | None:
        """``(B, 1, 1, fixed_keys)`` bool over the sink and memory keys; None: all visible."""
        if not self.n_mem or self.memory_valid is None:
            return None
        n0 = self.tokens_per_chunk
        mask = torch.ones(b, 1, 1, fixed_keys, dtype=torch.bool, device=device)
        mask[:, 0, 0, n0:] = self.memory_valid[:, None].to(device)
        return mask


#: What :class:`SelfAttention` attends through: one of the three contexts above.
AttentionContext = ChunkAttention | SequenceAttention | MemoryAttention


class SelfAttention(nn.Module):
    """Multi-head self-attention with QK RMS-norm; the context object decides what it sees."""

    def __init__(self, config: DiTConfig) -> None:
        super().__init__()
        self.heads, self.head_dim = config.heads, config.head_dim
        self.qkv = nn.Linear(config.dim, 3 * config.dim)
        # RMS-norm gains of queries (row 0) and keys (row 1), applied in one pass.
        self.qk_gain = nn.Parameter(torch.ones(2, 1, 1, 1, config.head_dim))
        self.proj = nn.Linear(config.dim, config.dim)

    def forward(self, x: Tensor, layer: int, context: AttentionContext) -> Tensor:
        """``x`` (B, T, dim) -> (B, T, dim)."""
        b, t, _ = x.shape
        qk, v = self._qkv(x)
        out = context(layer, qk, v)  # (B, H, T, Dh)
        return self.proj(out.transpose(1, 2).reshape(b, t, -1))

    def store(self, x: Tensor, layer: int, context: ChunkAttention | MemoryAttention) -> None:
        """Only what :meth:`forward` stores in ``context``'s cache: this layer's keys and values."""
        qk, v = self._qkv(x)
        context.store(layer, qk[1], v)

    def _qkv(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Normalised queries and keys ``(2, B, H, T, Dh)`` (not rotated) and values."""
        b, t, _ = x.shape
        qkv = self.qkv(x).view(b, t, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
        qk = F.rms_norm(qkv[:2], (self.head_dim,), eps=1e-6) * self.qk_gain.to(x.dtype)
        return qk, qkv[2]
