"""A small convolutional VAE between uint8 RGB frames and latents.

Frames are channel-last uint8 ``(..., H, W, 3)`` as Gymnasium observations are; latents are
channel-first float ``(..., C, h, w)`` already multiplied by ``scaling_factor``.
"""

from __future__ import annotations

from typing import cast

import torch
from torch import Tensor, nn

from gym_worldmodel.models.config import VAEConfig

#: Frames per encoder or decoder pass at inference on CPU. Passes this small keep a pass's
#: activations in cache: decoding 192 frames (a 64-row env step) in one pass took twice as long
#: as in passes of 8 (``python -m gym_worldmodel.bench vae``). Passes that carry gradients stay
#: whole; training's encodes under ``no_grad`` (its latents) are split as inference's are.
CPU_FRAMES_PER_PASS = 8


def _norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(min(8, channels), channels, eps=1e-6)


class ResBlock(nn.Module):
    """GroupNorm-SiLU-conv residual block."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            _norm(c_in),
            nn.SiLU(),
            nn.Conv2d(c_in, c_out, 3, padding=1),
            _norm(c_out),
            nn.SiLU(),
            nn.Conv2d(c_out, c_out, 3, padding=1),
        )
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        """``(N, c_in, H, W) -> (N, c_out, H, W)``."""
        return self.skip(x) + self.body(x)


class Encoder(nn.Module):
    """Frames in [-1, 1] ``(N, 3, H, W)`` -> mean and log-variance ``(N, C, h, w)`` each."""

    def __init__(self, config: VAEConfig) -> None:
        super().__init__()
        ch = config.channels
        layers: list[nn.Module] = [nn.Conv2d(3, ch[0], 3, padding=1)]
        for level, c in enumerate(ch):
            c_prev = ch[max(level - 1, 0)]
            layers += [ResBlock(c_prev if i == 0 else c, c) for i in range(config.blocks_per_level)]
            if level < len(ch) - 1:
                layers.append(nn.Conv2d(c, c, 3, stride=2, padding=1))
        layers += [
            _norm(ch[-1]),
            nn.SiLU(),
            nn.Conv2d(ch[-1], 2 * config.latent_channels, 3, padding=1),
        ]
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Posterior parameters."""
        mean, logvar = self.net(x).chunk(2, dim=1)
        return mean, logvar.clamp(-30.0, 20.0)


class Decoder(nn.Module):
    """Latents ``(N, C, h, w)`` -> frames in [-1, 1] ``(N, 3, H, W)``."""

    def __init__(self, config: VAEConfig) -> None:
        super().__init__()
        ch = config.channels[::-1]
        layers: list[nn.Module] = [nn.Conv2d(config.latent_channels, ch[0], 3, padding=1)]
        for level, c in enumerate(ch):
            layers += [ResBlock(c, c) for _ in range(config.blocks_per_level)]
            if level < len(ch) - 1:  # sub-pixel upsampling: no 3x3 conv at the finer resolution
                layers += [nn.Conv2d(c, 4 * ch[level + 1], 1), nn.PixelShuffle(2)]
        layers += [_norm(ch[-1]), nn.SiLU(), nn.Conv2d(ch[-1], 3, 3, padding=1)]
        self.net = nn.Sequential(*layers)

    def forward(self, z: Tensor) -> Tensor:
        """Reconstruction (unbounded; clamp when converting to pixels)."""
        return self.net(z)


class VAE(nn.Module):
    """Encoder, decoder and the uint8 conversions around them.

    Example:
        >>> import torch
        >>> from gym_worldmodel.models import VAE, VAEConfig
        >>> vae = VAE(VAEConfig(image_size=32, channels=(8, 16)))
        >>> frames = torch.zeros(2, 3, 32, 32, 3, dtype=torch.uint8)
        >>> z = vae.encode(frames)
        >>> z.shape, vae.decode(z).shape, vae.decode(z).dtype
        (torch.Size([2, 3, 4, 16, 16]), torch.Size([2, 3, 32, 32, 3]), torch.uint8)
    """

    def __init__(self, config: VAEConfig) -> None:
        super().__init__()
        self.config = config
        self.encoder = Encoder(config)
        self.decoder = Decoder(config)

    def encode(self, frames: Tensor) -> Tensor:
        """uint8 ``(..., H, W, 3)`` -> scaled posterior mean ``(..., C, h, w)``."""
        mean, _ = self.encode_posterior(to_unit(frames))
        return mean * self.config.scaling_factor

    def encode_posterior(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Float frames in [-1, 1] ``(..., 3, H, W)`` -> unscaled (mean, logvar)."""
        size = self.config.image_size
        if x.ndim < 3 or tuple(x.shape[-3:]) != (3, size, size):
            raise ValueError(
                f"frames of shape {tuple(x.shape)} (channels first), but this VAE encodes "
                f"{size}x{size} RGB frames: resize them (the envs' reset does) or use a VAE of "
                "that size"
            )
        lead = x.shape[:-3]
        mean, logvar = _in_passes(self.encoder, x.reshape(-1, *x.shape[-3:]).to(self._dtype))
        return mean.reshape(*lead, *mean.shape[1:]), logvar.reshape(*lead, *logvar.shape[1:])

    def decode(self, latents: Tensor) -> Tensor:
        """Scaled latents ``(..., C, h, w)`` -> uint8 frames ``(..., H, W, 3)``."""
        return to_uint8(self.decode_float(latents / self.config.scaling_factor))

    def decode_float(self, z: Tensor) -> Tensor:
        """Unscaled latents ``(..., C, h, w)`` -> float frames ``(..., 3, H, W)``, about [-1, 1]."""
        lead = z.shape[:-3]
        x = _in_passes(self.decoder, z.reshape(-1, *z.shape[-3:]).to(self._dtype))
        return x.reshape(*lead, *x.shape[1:])

    @property
    def _dtype(self) -> torch.dtype:
        return cast(nn.Conv2d, self.decoder.net[0]).weight.dtype


def _in_passes(net: nn.Module, x: Tensor):
    """``net(x)`` over the batch axis; at CPU inference in passes of ``CPU_FRAMES_PER_PASS``.

    At CPU inference every pass also holds an even number of frames (a zero frame added, its
    output dropped): the CPU's convolutions compute the middle image of an odd batch on another
    path, whose bits differ from the batched one's (by a grey level in bf16), so a row's frames
    would depend on how many rows share the env.
    """
    if x.device.type != "cpu" or torch.is_grad_enabled():
        return net(x)
    outs = [_even(net, part) for part in x.split(CPU_FRAMES_PER_PASS)]
    if isinstance(outs[0], tuple):
        return tuple(torch.cat(parts) for parts in zip(*outs, strict=True))
    return torch.cat(outs)


def _even(net: nn.Module, x: Tensor):
    """``net(x)`` computed on an even number of channels-last frames (a zero frame added, dropped).

    Channels last is also the layout the CPU's convolutions run fastest on here (decoding 24
    frames took half the time of contiguous latents: ``python -m gym_worldmodel.bench vae``).
    """
    n = len(x)
    if n % 2:
        x = torch.cat((x, x.new_zeros(1, *x.shape[1:])))
    out = net(x.contiguous(memory_format=torch.channels_last))
    return tuple(o[:n] for o in out) if isinstance(out, tuple) else out[:n]


def to_unit(frames: Tensor) -> Tensor:
    """uint8 ``(..., H, W, 3)`` -> float ``(..., 3, H, W)`` in [-1, 1]."""
    if frames.dtype != torch.uint8:
        raise TypeError(f"frames must be uint8 (..., H, W, 3), got {frames.dtype}")
    return frames.movedim(-1, -3).float() / 127.5 - 1.0


def to_uint8(x: Tensor) -> Tensor:
    """Float ``(..., 3, H, W)`` in [-1, 1] -> uint8 ``(..., H, W, 3)``."""
    return ((x.float().clamp(-1.0, 1.0) + 1.0) * 127.5).round().to(torch.uint8).movedim(-3, -1)


__all__ = ["VAE", "to_uint8", "to_unit"]
