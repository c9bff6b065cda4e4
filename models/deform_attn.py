"""Multi-scale deformable attention and the encoder built on it (Deformable-DETR style, pure PyTorch).

Owns the attention op, the encoder layer and the multi-level encoder of the ``paper`` descriptor
network. The op is the ``grid_sample`` formulation of multi-scale deformable attention, so it runs
on any device and dtype without a compiled extension.

Conventions
    Levels are flattened row-major and concatenated, finest first: a sequence ``[B, S, C]`` with
    ``S = sum(h_l * w_l)``. Reference points and sampling locations are normalised image
    coordinates in ``[0, 1]`` with ``(0, 0)`` the top-left *corner* of the map, ``(x, y)`` order;
    cell ``(i, j)`` of a level of size ``h x w`` is centred at ``((j + 0.5) / w, (i + 0.5) / h)``.
    Samples outside the map read zeros (``grid_sample``, ``align_corners=False``), as in the CUDA
    kernel of Deformable DETR.

Parameter names (``sampling_offsets``, ``attention_weights``, ``value_proj``, ``output_proj``,
``norm1``, ``linear1``, ``linear2``, ``norm2``, ``level_embed``, ``encoder.layers.N``) follow the
reference TraqPoint/RDD encoder so their checkpoints load unchanged.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F


def ms_deform_attn_sample(
    value: torch.Tensor,
    shapes: list[tuple[int, int]],
    locations: torch.Tensor,
    weights: torch.Tensor,
) -> torch.Tensor:
    """Weighted sum of bilinear samples of every level.

    Args:
        value: ``[B, S, heads, Dh]`` per-head values of the flattened levels.
        shapes: ``(h, w)`` of each level, in the order they are flattened in ``value``.
        locations: ``[B, Q, heads, L, P, 2]`` sampling points, normalised ``(x, y)`` in ``[0, 1]``.
        weights: ``[B, Q, heads, L, P]`` attention weights (softmax over ``L * P``).

    Returns:
        ``[B, Q, heads * Dh]``.
    """
    b, _, heads, dh = value.shape
    q, points = locations.shape[1], locations.shape[4]
    grids = 2.0 * locations - 1.0  # grid_sample wants [-1, 1] at the map corners
    out = value.new_zeros(b * heads, dh, q)
    per_level = value.split([h * w for h, w in shapes], dim=1)
    for lvl, ((h, w), v) in enumerate(zip(shapes, per_level)):
        v = v.permute(0, 2, 3, 1).reshape(b * heads, dh, h, w)
        g = grids[:, :, :, lvl].transpose(1, 2).reshape(b * heads, q, points, 2)
        sampled = F.grid_sample(v, g, mode="bilinear", padding_mode="zeros", align_corners=False)
        wl = weights[:, :, :, lvl].transpose(1, 2).reshape(b * heads, 1, q, points)
        # Weight in place when autograd does not need the samples: this op is memory-bound on CPU
        # and the extra buffer costs about a third of its time. Levels are accumulated one by one
        # (stacking them first would hold L times the samples).
        sampled = sampled * wl if (sampled.requires_grad or wl.requires_grad) else sampled.mul_(wl)
        out += sampled.sum(-1)
    return out.view(b, heads * dh, q).transpose(1, 2)


def reference_points(shapes: list[tuple[int, int]], device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """Cell centres of all levels, ``[S, 2]`` normalised ``(x, y)``, in flattening order."""
    refs = []
    for h, w in shapes:
        # Computed in float32 (half precision would shift centres of wide maps), then cast.
        ys = (torch.arange(h, device=device, dtype=torch.float32) + 0.5) / h
        xs = (torch.arange(w, device=device, dtype=torch.float32) + 0.5) / w
        yy, xx = torch.meshgrid(ys, xs, indexing="ij")
        refs.append(torch.stack([xx.reshape(-1), yy.reshape(-1)], dim=-1))
    return torch.cat(refs, dim=0).to(dtype)


def sine_position_encoding(
    h: int, w: int, dim: int, device: torch.device, temperature: float = 10000.0
) -> torch.Tensor:
    """DETR's normalised sine encoding of an unpadded ``h x w`` map, ``[dim, h, w]`` float32.

    The first ``dim / 2`` channels encode y, the rest x; each half alternates sin/cos over
    frequencies ``temperature ** (2 k / (dim / 2))``, positions scaled to ``(0, 2 pi)``.
    """
    half = dim // 2
    freqs = temperature ** (2 * (torch.arange(half, device=device) // 2) / half)

    def embed(n: int) -> torch.Tensor:  # [n, half]
        pos = (torch.arange(1, n + 1, device=device, dtype=torch.float32) - 0.5) / (n + 1e-6) * (2 * math.pi)
        angles = pos[:, None] / freqs
        return torch.stack([angles[:, 0::2].sin(), angles[:, 1::2].cos()], dim=-1).flatten(1)

    ey = embed(h).t()[:, :, None].expand(half, h, w)
    ex = embed(w).t()[:, None, :].expand(half, h, w)
    return torch.cat([ey, ex], dim=0)


class MSDeformAttn(nn.Module):
    """Multi-scale deformable attention: each query samples ``points`` locations per head and level.

    Args:
        d_model: channels of queries and values.
        levels: number of feature levels.
        heads: attention heads (``d_model`` must be divisible by it).
        points: sampling points per head and level.
    """

    def __init__(self, d_model: int = 256, levels: int = 4, heads: int = 8, points: int = 4) -> None:
        super().__init__()
        if d_model % heads:
            raise ValueError(f"d_model {d_model} is not divisible by heads {heads}")
        self.d_model, self.levels, self.heads, self.points = d_model, levels, heads, points
        self.sampling_offsets = nn.Linear(d_model, heads * levels * points * 2)
        self.attention_weights = nn.Linear(d_model, heads * levels * points)
        self.value_proj = nn.Linear(d_model, d_model)
        self.output_proj = nn.Linear(d_model, d_model)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Start with every head looking along its own direction, points 1..P cells away."""
        nn.init.zeros_(self.sampling_offsets.weight)
        angle = torch.arange(self.heads, dtype=torch.float32) * (2 * math.pi / self.heads)
        direction = torch.stack([angle.cos(), angle.sin()], dim=-1)
        direction = direction / direction.abs().amax(-1, keepdim=True)  # on the unit square
        steps = torch.arange(1, self.points + 1, dtype=torch.float32)
        bias = direction[:, None, None, :] * steps[None, None, :, None]  # [heads, 1, points, 2]
        with torch.no_grad():
            self.sampling_offsets.bias.copy_(bias.expand(-1, self.levels, -1, -1).reshape(-1))
        nn.init.zeros_(self.attention_weights.weight)
        nn.init.zeros_(self.attention_weights.bias)
        for lin in (self.value_proj, self.output_proj):
            nn.init.xavier_uniform_(lin.weight)
            nn.init.zeros_(lin.bias)

    def forward(
        self,
        query: torch.Tensor,
        refs: torch.Tensor,
        value: torch.Tensor,
        shapes: list[tuple[int, int]],
    ) -> torch.Tensor:
        """``query [B, Q, C]``, ``refs [B or 1, Q, L, 2]``, ``value [B, S, C]`` -> ``[B, Q, C]``."""
        b, q, _ = query.shape
        heads, levels, points = self.heads, self.levels, self.points
        v = self.value_proj(value).view(b, value.shape[1], heads, self.d_model // heads)
        offsets = self.sampling_offsets(query).view(b, q, heads, levels, points, 2)
        weights = self.attention_weights(query).view(b, q, heads, levels * points).softmax(-1)
        weights = weights.view(b, q, heads, levels, points)
        # Offsets are in cells of each level: divide by that level's (w, h).
        size = torch.tensor([[w, h] for h, w in shapes], device=query.device, dtype=query.dtype)
        locations = refs[:, :, None, :, None, :] + offsets / size[None, None, None, :, None, :]
        return self.output_proj(ms_deform_attn_sample(v, shapes, locations, weights))


class DeformEncoderLayer(nn.Module):
    """Post-norm encoder layer: deformable self-attention, then a ReLU feed-forward block."""

    def __init__(
        self,
        d_model: int = 256,
        ffn_dim: int = 1024,
        dropout: float = 0.1,
        levels: int = 4,
        heads: int = 8,
        points: int = 4,
    ) -> None:
        super().__init__()
        self.self_attn = MSDeformAttn(d_model, levels, heads, points)
        self.dropout1 = nn.Dropout(dropout)
        self.norm1 = nn.LayerNorm(d_model)
        self.linear1 = nn.Linear(d_model, ffn_dim)
        self.dropout2 = nn.Dropout(dropout)
        self.linear2 = nn.Linear(ffn_dim, d_model)
        self.dropout3 = nn.Dropout(dropout)
        self.norm2 = nn.LayerNorm(d_model)

    def forward(
        self, src: torch.Tensor, pos: torch.Tensor, refs: torch.Tensor, shapes: list[tuple[int, int]]
    ) -> torch.Tensor:
        src = self.norm1(src + self.dropout1(self.self_attn(src + pos, refs, src, shapes)))
        ffn = self.linear2(self.dropout2(F.relu(self.linear1(src))))
        return self.norm2(src + self.dropout3(ffn))


class MultiScaleDeformableEncoder(nn.Module):
    """Refine a pyramid of ``d_model``-channel maps jointly with deformable self-attention.

    ``forward(maps)`` takes ``L`` maps ``[B, d_model, h_l, w_l]`` (finest first) and returns the
    refined maps with the same shapes. Positions: sine encoding of each level plus a learnt
    per-level embedding. Images are assumed unpadded (every cell valid).
    """

    def __init__(
        self,
        d_model: int = 256,
        levels: int = 4,
        heads: int = 8,
        points: int = 8,
        num_layers: int = 4,
        ffn_dim: int = 1024,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        self.d_model, self.levels = d_model, levels
        self.level_embed = nn.Parameter(torch.empty(levels, d_model))
        layers = nn.ModuleList(
            DeformEncoderLayer(d_model, ffn_dim, dropout, levels, heads, points) for _ in range(num_layers)
        )
        # A dict holding only ``layers`` so parameters are named ``encoder.layers.N.*`` (reference layout).
        self.encoder = nn.ModuleDict({"layers": layers})
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Xavier for every matrix, then the attention's own initialisation, normal level embeddings."""
        for p in self.encoder.parameters():
            if p.dim() > 1:
                nn.init.xavier_uniform_(p)
        for m in self.modules():
            if isinstance(m, MSDeformAttn):
                m.reset_parameters()
        nn.init.normal_(self.level_embed)

    def forward(self, maps: list[torch.Tensor]) -> list[torch.Tensor]:
        if len(maps) != self.levels:
            raise ValueError(f"expected {self.levels} levels, got {len(maps)}")
        b, c = maps[0].shape[:2]
        shapes = [(int(m.shape[-2]), int(m.shape[-1])) for m in maps]
        src = torch.cat([m.flatten(2).transpose(1, 2) for m in maps], dim=1)
        pos = torch.cat(
            [
                sine_position_encoding(h, w, c, src.device).to(src.dtype).flatten(1).t() + self.level_embed[lvl]
                for lvl, (h, w) in enumerate(shapes)
            ],
            dim=0,
        )[None]
        # Every level shares one reference point per query (no padding: valid ratios are 1).
        refs = reference_points(shapes, src.device, src.dtype)[None, :, None, :].expand(-1, -1, self.levels, -1)
        for layer in self.encoder["layers"]:
            src = layer(src, pos, refs, shapes)
        parts = src.split([h * w for h, w in shapes], dim=1)
        return [p.transpose(1, 2).reshape(b, c, h, w) for p, (h, w) in zip(parts, shapes)]
