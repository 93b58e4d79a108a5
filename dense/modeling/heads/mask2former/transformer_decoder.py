"""Mask2Former's masked-attention transformer decoder layers (mmdet ``DetrTransformerDecoder`` with
``DetrTransformerDecoderLayer``; the query embeddings and prediction heads live in :class:`Mask2FormerHead`)."""
from __future__ import annotations

import torch
from torch import nn

from .layers import FFN, MultiheadAttention

__all__ = ["MaskedAttentionDecoderLayer", "MaskedTransformerDecoder"]


class MaskedAttentionDecoderLayer(nn.Module):
    """operation_order ('cross_attn', 'norm', 'self_attn', 'norm', 'ffn', 'norm'), post-norm:
    masked cross-attention of the queries to one pixel-decoder level, self-attention among the queries, FFN.
    Keys ``attentions.0`` (cross), ``attentions.1`` (self), ``ffns.0``, ``norms.0/1/2``."""

    def __init__(self, embed_dims: int, num_heads: int, feedforward_channels: int, dropout: float = 0.0,
                 use_checkpoint: bool = False):
        super().__init__()
        self.attentions = nn.ModuleList([MultiheadAttention(embed_dims, num_heads, dropout),
                                         MultiheadAttention(embed_dims, num_heads, dropout)])
        self.ffns = nn.ModuleList([FFN(embed_dims, feedforward_channels, dropout, use_checkpoint)])
        self.norms = nn.ModuleList([nn.LayerNorm(embed_dims) for _ in range(3)])

    def forward(self, query: torch.Tensor, query_pos: torch.Tensor, memory: torch.Tensor, memory_pos: torch.Tensor,
                attn_mask: torch.Tensor) -> torch.Tensor:
        """query, query_pos [N, Q, C]; memory, memory_pos [N, HW, C]; attn_mask bool [N * heads, Q, HW]
        (True = a query may not look at that pixel)."""
        query = self.norms[0](self.attentions[0](query, memory, query_pos, memory_pos, attn_mask))
        query = self.norms[1](self.attentions[1](query, query, query_pos, query_pos))
        return self.norms[2](self.ffns[0](query))


class MaskedTransformerDecoder(nn.Module):
    """The stack of ``num_layers`` decoder layers and the LayerNorm (``post_norm``) applied to the queries
    before every prediction."""

    def __init__(self, num_layers: int, embed_dims: int, num_heads: int, feedforward_channels: int,
                 dropout: float = 0.0, use_checkpoint: bool = False):
        super().__init__()
        self.layers = nn.ModuleList([MaskedAttentionDecoderLayer(embed_dims, num_heads, feedforward_channels, dropout,
                                                                 use_checkpoint) for _ in range(num_layers)])
        self.post_norm = nn.LayerNorm(embed_dims)
        self.num_heads = num_heads
