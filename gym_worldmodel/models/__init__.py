"""Model components: configs, VAE, causal chunk DiT, action experts."""

from gym_worldmodel.models.config import (
    DiTConfig,
    SamplerConfig,
    VAEConfig,
    WorldModelConfig,
)
from gym_worldmodel.models.dit import CausalChunkDiT
from gym_worldmodel.models.vae import VAE
from gym_worldmodel.models.world_model import DTYPES, WorldModel, native_bf16, precision

__all__ = [
    "DTYPES",
    "VAE",
    "CausalChunkDiT",
    "DiTConfig",
    "SamplerConfig",
    "VAEConfig",
    "WorldModel",
    "WorldModelConfig",
    "native_bf16",
    "precision",
]
