"""Caches and memories: the batched KV cache and the spatial memory bank."""

from gym_worldmodel.memory.kv_cache import CacheLayout, KVCache
from gym_worldmodel.memory.spatial import GEOMETRIES, Recall, SpatialMemory, ViewGeometry

__all__ = ["GEOMETRIES", "CacheLayout", "KVCache", "Recall", "SpatialMemory", "ViewGeometry"]
