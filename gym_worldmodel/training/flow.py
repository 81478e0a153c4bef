"""Training the flow warp of the anchors (``models.flow``, ``DiTConfig.anchor_flow``).

Trained on the warp's own photometric error, a net that reads only the first frame and the action
hedges: where the arm may go several ways it moves it part of the way, which blurs less than a
wrong guess. So it is trained in two stages (docs/experiments.md, "A flow warp learns what the
robot's actions do"):

1. :class:`PairNet` sees both frames of each recorded pair and learns the flow that warps the
   first onto the second (:func:`pair_loss`: photometric L1 plus a smoothness term). It knows
   where things went, so it has nothing to hedge.
2. The world's :class:`~gym_worldmodel.models.flow.FlowWarp` regresses those flows (L2) from the
   first frame and the action alone (:func:`action_flow_loss`).

Both read the windows the other stages read (``ChunkWindows`` of two chunks, frames uint8): the
sink is the start frame repeated, so each window gives ``F`` recorded pairs, the start frame and
the next ``F`` frames, each with the action that led to it.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from gym_worldmodel.models.flow import FlowNet, FlowWarp, warp
from gym_worldmodel.models.vae import to_unit

#: Weight of the flow's smoothness (mean absolute difference of neighbouring pixels' flows).
SMOOTHNESS = 0.02


class PairNet(nn.Module):
    """Two frames ``(B, 3, H, W)`` -> the backward flow that warps the first onto the second."""

    def __init__(self, width: int = 32) -> None:
        super().__init__()
        self.net = FlowNet(6, 0, width)

    def forward(self, first: Tensor, second: Tensor) -> Tensor:  # noqa: D102
        return self.net(torch.cat((first, second), 1)).float()


def window_pairs(batch: dict, chunk_frames: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """The recorded frame pairs of a batch of two-chunk windows.

    Returns:
        ``first`` and ``second`` frames ``(B * F, 3, H, W)`` in [-1, 1], the action between them
        ``(B * F, A)`` and each pair's modality ``(B * F,)``.
    """
    f = chunk_frames
    frames = to_unit(batch["frames"])  # (B, 2F, 3, H, W)
    if frames.shape[1] != 2 * f:
        raise ValueError(f"flow training reads windows of 2 chunks ({2 * f} frames)")
    first, second = frames[:, f - 1 : 2 * f - 1], frames[:, f:]
    actions = batch["actions"][:, f:]
    modality = batch["modality"].repeat_interleave(f)
    return first.flatten(0, 1), second.flatten(0, 1), actions.flatten(0, 1), modality


def smoothness(flow: Tensor) -> Tensor:
    """Mean absolute difference between neighbouring pixels' flows."""
    return (flow.diff(dim=-1).abs().mean() + flow.diff(dim=-2).abs().mean()) / 2


def pair_loss(pair: PairNet, batch: dict, chunk_frames: int) -> tuple[Tensor, dict[str, Tensor]]:
    """Photometric L1 of the first frame warped by the pair's flow, plus its smoothness."""
    first, second, _, _ = window_pairs(batch, chunk_frames)
    flow = pair(first, second)
    photometric = (warp(first, flow) - second).abs().mean()
    loss = photometric + SMOOTHNESS * smoothness(flow)
    return loss, {"photometric": photometric.detach()}


def action_flow_loss(
    warp_net: FlowWarp, pair: PairNet, batch: dict, chunk_frames: int
) -> tuple[Tensor, dict[str, Tensor]]:
    """Squared error of the action's flow against the pair net's, in pixels."""
    first, second, actions, modality = window_pairs(batch, chunk_frames)
    with torch.no_grad():
        target = pair(first, second)
    flow = warp_net.flow(first, actions, modality)
    loss = (flow - target).pow(2).mean()
    return loss, {"pair_flow": target.abs().mean().detach()}


__all__ = ["PairNet", "action_flow_loss", "pair_loss", "smoothness", "window_pairs"]
