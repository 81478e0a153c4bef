"""Mixture of action experts: per-modality projectors, null actions and per-block experts.

Every modality (camera, robot, driving, ...) writes its action into a padded vector of width
``DiTConfig.action_dim``. A projector per modality maps it into one shared action embedding; each
transformer block holds one expert per modality that maps the embedding to a residual added to
the tokens before self-attention. Experts start at zero, so a new modality begins as a no-op.
Routing is hard, by modality id, and batched: rows of different modalities share one forward,
and on the CPU a row's result has the same bits whatever rows share it (tested; not checked on a
GPU).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from gym_worldmodel.models.config import DiTConfig

#: Each row's frames go through the GEMMs below as whole blocks of this many rows. CPU bf16 GEMM
#: kernels round the rows of a part-filled block otherwise than those of a full one, so a row
#: whose frames shared a block with another row's (a flat GEMM over the batch), or that a batched
#: matmul took down another path for another batch size, got other bits than alone.
ROW_BLOCK = 16


def _routed_linear(x: Tensor, weight: Tensor, bias: Tensor, modality: Tensor) -> Tensor:
    """Per-row linear map chosen by ``modality``: x (B, N, i) @ weight[m] (i, o) + bias[m].

    A row's result does not depend on the other rows: each row's N frames are zero-padded to a
    multiple of :data:`ROW_BLOCK` and each modality's map runs as one flat GEMM over all rows,
    the row's own modality picked after. At these widths the extra work costs little.
    """
    b, n, i = x.shape
    padded = -(-n // ROW_BLOCK) * ROW_BLOCK
    flat = torch.cat((x, x.new_zeros(b, padded - n, i)), 1).reshape(b * padded, i)
    # On the host, only the modalities some row uses; on a GPU, reading ``modality`` back would
    # stall the queue, and every modality's map costs less than the wait.
    used = modality.unique().tolist() if modality.device.type == "cpu" else range(len(weight))
    out = None
    for m in used:
        y = torch.addmm(bias[m], flat, weight[m]).reshape(b, padded, weight.shape[-1])[:, :n]
        out = y if out is None else torch.where((modality == m)[:, None, None], y, out)
    return x.new_zeros(b, n, weight.shape[-1]) if out is None else out  # None: no rows


class ActionProjectors(nn.Module):
    """Per-modality MLP projectors into the shared action embedding, plus null actions.

    Args:
        config: Supplies the modality widths, padded width, embedding width and input scales.
    """

    input_scale: Tensor  # (M, action_dim) buffer

    def __init__(self, config: DiTConfig) -> None:
        super().__init__()
        m, a, u = len(config.modalities), config.action_dim, config.action_embed_dim
        self.w1 = nn.Parameter(torch.randn(m, a, u) * a**-0.5)
        self.b1 = nn.Parameter(torch.zeros(m, u))
        self.w2 = nn.Parameter(torch.randn(m, u, u) * u**-0.5)
        self.b2 = nn.Parameter(torch.zeros(m, u))
        self.null = nn.Parameter(torch.randn(m, u) * 0.02)
        # Each modality's factors (DiTConfig.action_scale), zero on the padding beyond its width.
        scale = torch.zeros(m, a)
        for i, (name, width) in enumerate(config.modalities.items()):
            scale[i, :width] = torch.tensor(config.action_scale.get(name, (1.0,) * width))
        self.register_buffer("input_scale", scale, persistent=False)

    def forward(self, actions: Tensor, modality: Tensor, drop: Tensor | None = None) -> Tensor:
        """Embed actions.

        Args:
            actions: ``(B, N, action_dim)`` padded action vectors, one per latent frame.
            modality: ``(B,)`` long modality ids.
            drop: Optional ``(B,)`` bool; rows set use their modality's learned null action
                (guidance's unconditional branch, action dropout in training).

        Returns:
            ``(B, N, action_embed_dim)``.
        """
        x = actions * self.input_scale[modality][:, None, :]
        x = _routed_linear(x, self.w1, self.b1, modality)
        emb = _routed_linear(nn.functional.silu(x), self.w2, self.b2, modality)
        if drop is not None:
            emb = torch.where(drop[:, None, None], self.null[modality][:, None, :], emb)
        return emb


class ActionExpert(nn.Module):
    """One block's experts: a zero-initialised linear map per modality to the block width.

    The blocks' experts run together, in :func:`expert_residuals`.
    """

    def __init__(self, config: DiTConfig) -> None:
        super().__init__()
        m = len(config.modalities)
        self.weight = nn.Parameter(torch.zeros(m, config.action_embed_dim, config.dim))
        self.bias = nn.Parameter(torch.zeros(m, config.dim))


def expert_residuals(
    experts: Sequence[ActionExpert], emb: Tensor, modality: Tensor
) -> tuple[Tensor, ...]:
    """Every block's expert residual for its tokens, in one routed GEMM (they read one embedding).

    Args:
        experts: The blocks' experts, in block order.
        emb: ``(B, N, u)`` action embedding (:class:`ActionProjectors`).
        modality: ``(B,)`` long modality ids.

    Returns:
        One ``(B, N, dim)`` residual per block.
    """
    weight = torch.cat([e.weight for e in experts], -1)
    bias = torch.cat([e.bias for e in experts], -1)
    return _routed_linear(emb, weight, bias, modality).chunk(len(experts), -1)
