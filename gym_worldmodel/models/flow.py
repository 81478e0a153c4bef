"""A learned dense flow that moves the anchor frame by the action (``DiTConfig.anchor_flow``).

The DiT predicts each frame as a change from its anchor. When the anchor is the last frame as it
was, the network has to learn every motion itself, and under the flow-matching loss a model that
is unsure where a robot arm or a car goes next shows it nowhere: the blur of the possible frames.
A small convolutional net that reads the picture and the action and outputs a per-pixel flow
learns those motions in minutes with a direct loss (``training.flow``: first a net that sees both
frames finds the recorded flow, then this one regresses it from the first frame and the action).
The world then warps its decoded last frame by it, once per frame of the chunk, and the DiT
corrects the warped anchor rather than inventing the motion.

Frames are float ``(B, 3, H, W)`` in [-1, 1]; flows ``(B, 2, H, W)`` are backward, in pixels:
output pixel (x, y) reads the input at (x + flow_x, y + flow_y).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gym_worldmodel.models.config import DiTConfig
from gym_worldmodel.models.dit import RowLinear, padded_rows

#: Largest flow the output layer's scale makes easy to reach, in pixels.
FLOW_SCALE = 4.0


def warp(frames: Tensor, flow: Tensor) -> Tensor:
    """``frames`` ``(B, C, H, W)`` resampled at each pixel plus ``flow`` ``(B, 2, H, W)``.

    Bilinear, with the border repeated where content comes in from outside. Float32 out.
    """
    b, _, h, w = frames.shape
    ys = torch.arange(h, device=frames.device, dtype=torch.float32)[:, None]
    xs = torch.arange(w, device=frames.device, dtype=torch.float32)[None, :]
    gx = (xs + flow[:, 0].float()) * (2 / (w - 1)) - 1
    gy = (ys + flow[:, 1].float()) * (2 / (h - 1)) - 1
    grid = torch.stack((gx, gy), -1)
    return F.grid_sample(
        frames.float(), grid, mode="bilinear", padding_mode="border", align_corners=True
    )


def _conv(c_in: int, c_out: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, 3, stride, 1)


class FlowNet(nn.Module):
    """A three-level U-Net from an image (and a condition vector) to a backward flow.

    The condition (the action, for :class:`FlowWarp`) scales each encoder level's channels
    (``1 + linear(cond)``), so one action can move different parts differently. The output
    layer starts at zero: a new net copies the frame.

    Args:
        in_channels: Image channels in (3: one frame; 6: a frame pair).
        cond_dim: Width of the condition vector (0: none).
        width: Channels of the first level (the others have twice as many).

    Example:
        >>> import torch
        >>> net = FlowNet(3, 5)
        >>> net(torch.zeros(2, 3, 32, 32), torch.zeros(2, 5)).shape
        torch.Size([2, 2, 32, 32])
    """

    #: Layout of the images on CPU: oneDNN's convolutions run this net about 1.5-1.7 times as
    #: fast on channels-last images (``python -m gym_worldmodel.bench flow`` times both), and a
    #: row's bits stay independent of the batch at the sizes the warp pads to.
    cpu_memory_format = torch.channels_last

    def __init__(self, in_channels: int, cond_dim: int, width: int = 32) -> None:
        super().__init__()
        c = width
        self.down1 = nn.Sequential(_conv(in_channels, c), nn.GELU(), _conv(c, c, 2), nn.GELU())
        self.down2 = nn.Sequential(_conv(c, 2 * c, 2), nn.GELU(), _conv(2 * c, 2 * c), nn.GELU())
        self.down3 = nn.Sequential(
            _conv(2 * c, 2 * c, 2), nn.GELU(), _conv(2 * c, 2 * c), nn.GELU()
        )
        self.up2 = nn.Sequential(_conv(4 * c, 2 * c), nn.GELU())
        self.up1 = nn.Sequential(_conv(3 * c, c), nn.GELU())
        self.out = _conv(c + in_channels, 2)
        nn.init.zeros_(self.out.weight)
        assert self.out.bias is not None  # _conv's convolutions have a bias
        nn.init.zeros_(self.out.bias)
        self.cond = (
            nn.ModuleList(RowLinear(cond_dim, n) for n in (c, 2 * c, 2 * c)) if cond_dim else None
        )

    def forward(self, image: Tensor, cond: Tensor | None = None) -> Tensor:
        """``image`` ``(B, in_channels, H, W)``, sides of 8k; ``cond`` ``(B, cond_dim)``."""
        if image.shape[-1] % 8 or image.shape[-2] % 8:
            raise ValueError(f"FlowNet needs sides that are multiples of 8, got {image.shape}")
        levels = []
        if image.device.type == "cpu":
            image = image.contiguous(memory_format=self.cpu_memory_format)
        h = image
        for i, down in enumerate((self.down1, self.down2, self.down3)):
            h = down(h)
            if self.cond is not None:
                if cond is None:
                    raise ValueError("this FlowNet was built with a cond_dim: pass cond")
                h = h * (1 + self.cond[i](cond.to(h.dtype))[:, :, None, None])
            levels.append(h)
        up = lambda x: F.interpolate(x, scale_factor=2.0)  # noqa: E731
        g = self.up2(torch.cat((up(levels[2]), levels[1]), 1))
        g = self.up1(torch.cat((up(g), levels[0]), 1))
        return self.out(torch.cat((up(g), image.to(g.dtype)), 1)) * FLOW_SCALE


class FlowWarp(nn.Module):
    """Moves frames by the flow their actions imply, for the modalities of ``anchor_flow``.

    The net reads the frame, the padded action vector and the modality (one-hot). Rows of
    other modalities are returned as they came.

    Args:
        config: The DiT's config (action width, modalities, ``anchor_flow``).
    """

    # Per-modality buffers (M,): moved by the flow, moved by the ego shift, its shift columns.
    moves: Tensor
    ego: Tensor
    ego_columns: Tensor

    def __init__(self, config: DiTConfig) -> None:
        super().__init__()
        self.config = config
        self.net = FlowNet(3, config.action_dim + len(config.modalities), config.anchor_flow_width)
        names = config.modalities
        moves = torch.tensor([name in config.anchor_flow for name in names])
        self.register_buffer("moves", moves, persistent=False)
        ego = torch.tensor([name in config.anchor_ego for name in names])
        self.register_buffer("ego", ego, persistent=False)
        # no flow modality needs the net: skip it (decided here, not per step on the device)
        self.net_unused = set(config.anchor_flow) <= set(config.anchor_ego)
        # each modality's ego shift columns: the two after its width
        columns = torch.tensor([min(w, config.action_dim - 2) for w in names.values()])
        self.register_buffer("ego_columns", columns, persistent=False)

    def flow(self, frames: Tensor, actions: Tensor, modality: Tensor) -> Tensor:
        """Backward flow ``(B, 2, H, W)`` in pixels, zero for rows whose modality has no flow.

        Rows of ``anchor_ego`` modalities move uniformly by their action's ego shift columns
        (:meth:`forward` holds the car); the others by the net.
        """
        if self.net_unused:
            flow = frames.new_zeros(frames.shape[0], 2, *frames.shape[2:], dtype=torch.float32)
        else:
            onehot = F.one_hot(modality, len(self.config.modalities)).to(actions.dtype)
            flow = padded_rows(self.net, frames, torch.cat((actions, onehot), -1)).float()
        if self.config.anchor_ego:
            ego = self.ego[modality]
            at = self.ego_columns[modality][:, None] + torch.arange(2, device=actions.device)
            shift = actions.float().gather(1, at)[:, :, None, None].expand_as(flow)
            flow = torch.where(ego[:, None, None, None], shift, flow)
        return flow * self.moves[modality].to(flow.dtype)[:, None, None, None]

    def forward(self, frames: Tensor, actions: Tensor, modality: Tensor) -> Tensor:
        """``frames`` ``(B, 3, H, W)`` in [-1, 1] moved by ``actions`` ``(B, A)``; float32.

        In ``anchor_ego`` rows the followed car (``ego_hold``) stays where it is, and the road
        moving past it reads the road beside it (each of the box's rows filled with the mean of
        the pixels left and right of it), not the car.
        """
        flow = self.flow(frames, actions, modality)
        if not self.config.ego_hold:
            return warp(frames, flow).clamp(-1.0, 1.0)
        held = self.ego[modality]
        top, bottom, left, right = self.config.ego_hold
        rows = slice(top, bottom)
        edges = (max(left - 1, 0), min(right, frames.shape[-1] - 1))  # left and right of the box
        beside = torch.stack([frames[:, :, rows, x] for x in edges], -1)  # no index to upload
        road = frames.clone()
        road[:, :, rows, left:right] = beside.mean(-1, keepdim=True)
        source = torch.where(held[:, None, None, None], road, frames)
        out = warp(source, flow)
        car = torch.where(held[:, None, None, None], frames.float(), out)
        out[:, :, rows, left:right] = car[:, :, rows, left:right]
        return out.clamp(-1.0, 1.0)


__all__ = ["FlowNet", "FlowWarp", "warp"]
