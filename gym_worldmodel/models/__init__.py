"""Model components: configs, VAE, causal chunk DiT, action experts."""

from gym_worldmodel.models.config import (
    DiTConfig,
    SamplerConfig,
    VAEConfig,
    WorldModelConfig,
)
from gym_worldmodel.models.dit import CausalChunkDiT
from gym_worldmodel.models.vae import VAE
from gym_worldmodel.models.world_model import (
    DTYPES,
    WorldModel,
    available_device,
    native_bf16,
    precision,
)

__all__ = [
    "DTYPES",
    "VAE",
    "CausalChunkDiT",
    "DiTConfig",
    "SamplerConfig",
    "VAEConfig",
    "WorldModel",
    "WorldModelConfig",
    "available_device",
    "native_bf16",
    "precision",
]
