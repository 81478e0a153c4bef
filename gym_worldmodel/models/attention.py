"""Self-attention and the two ways a chunk sees its context.

* :class:`ChunkAttention`: inference. The current chunk's queries attend to the KV cache
  (sink, retrieved memory, ring window) plus the chunk itself; the cache-write pass stores the
  chunk's keys and values.
* :class:`SequenceAttention`: training and the no-cache reference. A whole sequence of chunks in
  one forward, with the block-causal sliding-window mask that makes it equal to chunk-by-chunk
  generation with the cache.

Positions are relative to the cache: the current chunk sits at time ``P = context_frames``, the
ring chunk ``a`` chunks old at ``P - a * F``, the sink (the first chunk) at ``0``. The sequence
path reproduces exactly those relative distances, including the sink's fixed distance, by giving
every query a second rotation at ``P`` used only against the sink keys (the two rotations are
concatenated along the head axis so one fused attention call evaluates both).
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
        """Place the current chunk's K/V; return the layer's full ``(B, H, S, Dh)`` K and V."""
        ...

    def write(self, layer: int, k: Tensor, v: Tensor) -> None:
        """Store the current chunk's K/V in its sink or ring slot."""
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


class SequenceAttention:
    """Attention context of a whole chunk sequence (training, no-cache reference).

    Chunk ``n`` sees itself, the sink (chunk 0) and the ``window_chunks`` chunks before it,
    exactly what the cache holds when chunk ``n`` is generated.

    Args:
        config: The DiT config (cache layout and geometry).
        rope: The model's rotary frequencies.
        n_chunks: Chunks in the sequence.
        device: Where to build the tables.
    """

    def __init__(self, config: DiTConfig, rope: Rotary3D, n_chunks: int, device: torch.device):
        f, side = config.chunk_frames, config.latent_size // config.patch_size
        self.tokens_per_chunk = config.tokens_per_chunk
        self.scale = config.head_dim**-0.5
        self.cos, self.sin = rope.cos_sin(grid_positions(n_chunks * f, side).to(device))
        sink_q = grid_positions(f, side, time_offset=config.context_frames).repeat(n_chunks, 1)
        self.cos_q_sink, self.sin_q_sink = rope.cos_sin(sink_q.to(device))
        self.cos_k_sink, self.sin_k_sink = rope.cos_sin(grid_positions(f, side).to(device))
        self.mask = self._mask(n_chunks, config.window_chunks, config.tokens_per_chunk, device)

    @staticmethod
    def _mask(n: int, window: int, tokens: int, device: torch.device) -> Tensor:
        """Boolean ``(T, tokens + T)``: columns are [sink keys | every token of the sequence]."""
        q = torch.arange(n, device=device)[:, None]
        j = torch.arange(n, device=device)[None, :]
        normal = (j == q) | ((j >= 1) & (j < q) & (j >= q - window))
        sink = (q >= 1).expand(n, 1)
        chunks = torch.cat((sink, normal), dim=1)  # (n, 1 + n)
        return chunks.repeat_interleave(tokens, 0).repeat_interleave(tokens, 1)

    def __call__(self, layer: int, qk: Tensor, v: Tensor) -> Tensor:
        """Attend every query of the sequence to its visible context (arguments as above)."""
        n0 = self.tokens_per_chunk
        q, k = qk.unbind(0)
        q_abs, k_abs = apply_rotary(qk, self.cos, self.sin).unbind(0)
        q_sink = apply_rotary(q, self.cos_q_sink, self.sin_q_sink)
        k_sink = apply_rotary(k[:, :, :n0], self.cos_k_sink, self.sin_k_sink)
        q2 = torch.cat((q_abs, q_sink), dim=-1)  # (B, H, T, 2Dh)
        k2 = torch.cat(
            (
                torch.cat((torch.zeros_like(k_sink), k_sink), dim=-1),  # sink path
                torch.cat((k_abs, torch.zeros_like(k_abs)), dim=-1),  # relative path
            ),
            dim=2,
        )  # (B, H, n0 + T, 2Dh)
        v2 = torch.cat((v[:, :, :n0], v), dim=2)
        return F.scaled_dot_product_attention(q2, k2, v2, attn_mask=self.mask, scale=self.scale)


class SelfAttention(nn.Module):
    """Multi-head self-attention with QK RMS-norm; the context object decides what it sees."""

    def __init__(self, config: DiTConfig) -> None:
        super().__init__()
        self.heads, self.head_dim = config.heads, config.head_dim
        self.qkv = nn.Linear(config.dim, 3 * config.dim)
        # RMS-norm gains of queries (row 0) and keys (row 1), applied in one pass.
        self.qk_gain = nn.Parameter(torch.ones(2, 1, 1, 1, config.head_dim))
        self.proj = nn.Linear(config.dim, config.dim)

    def forward(self, x: Tensor, layer: int, context: ChunkAttention | SequenceAttention) -> Tensor:
        """``x`` (B, T, dim) -> (B, T, dim)."""
        b, t, _ = x.shape
        qkv = self.qkv(x).view(b, t, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
        qk = F.rms_norm(qkv[:2], (self.head_dim,), eps=1e-6) * self.qk_gain.to(x.dtype)
        out = context(layer, qk, qkv[2])  # (B, H, T, Dh)
        return self.proj(out.transpose(1, 2).reshape(b, t, -1))
