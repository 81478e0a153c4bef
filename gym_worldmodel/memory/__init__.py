"""Caches and memories: the batched KV cache (and, later, the spatial memory bank)."""

from gym_worldmodel.memory.kv_cache import CacheLayout, KVCache

__all__ = ["CacheLayout", "KVCache"]
