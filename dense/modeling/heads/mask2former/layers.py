"""Transformer pieces of Mask2Former with mmcv's module names (``attn``, ``layers.0.0``, ...), so that released
mmseg/mmdet Mask2Former checkpoints (ViT-Adapter) load key for key.

Sequences are batch-first: [N, L, C].
"""
from __future__ import annotations

import math

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

__all__ = ["SinePositionalEncoding", "FFN", "MultiheadAttention"]


class SinePositionalEncoding(nn.Module):
    """DETR's normalised sine encoding of pixel positions (mmcv ``SinePositionalEncoding(num_feats, normalize=True)``
    = Mask2Former's ``PositionEmbeddingSine``): for a map without padding, y and x run 1..H and 1..W, are
    scaled to (0, 2 pi] and encoded by ``num_feats`` sin/cos features each; output [N, 2 * num_feats, H, W],
    the y features first."""

    def __init__(self, num_feats: int, temperature: float = 10000.0, scale: float = 2 * math.pi, eps: float = 1e-6):
        super().__init__()
        self.num_feats, self.temperature, self.scale, self.eps = num_feats, temperature, scale, eps

    def forward(self, n: int, h: int, w: int, device: torch.device, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        y = torch.arange(1, h + 1, dtype=torch.float32, device=device) / (h + self.eps) * self.scale
        x = torch.arange(1, w + 1, dtype=torch.float32, device=device) / (w + self.eps) * self.scale
        dim_t = torch.arange(self.num_feats, dtype=torch.float32, device=device)
        dim_t = self.temperature ** (2 * torch.div(dim_t, 2, rounding_mode="floor") / self.num_feats)
        pos_y = _interleave_sin_cos(y[:, None] / dim_t)  # [H, F]
        pos_x = _interleave_sin_cos(x[:, None] / dim_t)  # [W, F]
        pos = torch.cat([pos_y[:, None, :].expand(h, w, -1), pos_x[None, :, :].expand(h, w, -1)], dim=-1)
        return pos.permute(2, 0, 1)[None].expand(n, -1, -1, -1).to(dtype)


def _interleave_sin_cos(t: torch.Tensor) -> torch.Tensor:
    """[..., F] -> sin of the even features and cos of the odd ones, interleaved back to [..., F]."""
    return torch.stack([t[..., 0::2].sin(), t[..., 1::2].cos()], dim=-1).flatten(-2)


class FFN(nn.Module):
    """mmcv ``FFN`` (2 fully connected layers, ReLU) with its identity connection: x + fc2(relu(fc1(x))).
    Keys ``layers.0.0`` (fc1) and ``layers.1`` (fc2). ``use_checkpoint`` recomputes the hidden activations in the
    backward pass instead of storing them."""

    def __init__(self, embed_dims: int, feedforward_channels: int, dropout: float = 0.0, use_checkpoint: bool = False):
        super().__init__()
        self.layers = nn.Sequential(
            nn.Sequential(nn.Linear(embed_dims, feedforward_channels), nn.ReLU(inplace=True), nn.Dropout(dropout)),
            nn.Linear(feedforward_channels, embed_dims), nn.Dropout(dropout))
        self.use_checkpoint = use_checkpoint

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.use_checkpoint and x.requires_grad:
            return x + checkpoint(self.layers, x, use_reentrant=False)
        return x + self.layers(x)


class MultiheadAttention(nn.Module):
    """mmcv ``MultiheadAttention``: ``nn.MultiheadAttention`` (key ``attn``) with positional encodings added to
    query and key (not the value) and the identity connection: query + attn(query + query_pos, key + key_pos,
    key)."""

    def __init__(self, embed_dims: int, num_heads: int, dropout: float = 0.0):
        super().__init__()
        self.attn = nn.MultiheadAttention(embed_dims, num_heads, dropout=dropout, batch_first=True)
        self.num_heads = num_heads

    def forward(self, query: torch.Tensor, key: torch.Tensor, query_pos: torch.Tensor | None = None,
                key_pos: torch.Tensor | None = None, attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        """query [N, Lq, C], key (= value) [N, Lk, C], attn_mask bool [N * heads, Lq, Lk] (True = blocked)."""
        q = query if query_pos is None else query + query_pos
        k = key if key_pos is None else key + key_pos
        return query + self.attn(q, k, key, attn_mask=attn_mask, need_weights=False)[0]
