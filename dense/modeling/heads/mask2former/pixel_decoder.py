"""Mask2Former's pixel decoder: a deformable-attention encoder over the coarse levels plus an FPN step to the
finest level (mmdet/mmseg ``MSDeformAttnPixelDecoder``; Detectron2's ``MSDeformAttnPixelDecoder`` is the same
network under other names)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ....ops import MSDeformAttn
from ....ops.ms_deform_attn import level_tensors
from ...layers import ConvNormAct
from .layers import FFN, SinePositionalEncoding

__all__ = ["DeformableEncoderLayer", "DeformableEncoder", "MSDeformAttnPixelDecoder"]


class DeformableEncoderLayer(nn.Module):
    """mmcv ``BaseTransformerLayer(operation_order=('self_attn', 'norm', 'ffn', 'norm'))`` with multi-scale
    deformable self-attention: x = norm0(x + attn(x + pos, x)); x = norm1(x + ffn(x)).
    Keys ``attentions.0`` (sampling_offsets, attention_weights, value_proj, output_proj), ``ffns.0``, ``norms.0/1``."""

    def __init__(self, embed_dims: int, num_heads: int, num_levels: int, num_points: int, feedforward_channels: int,
                 dropout: float = 0.0, use_checkpoint: bool = False):
        super().__init__()
        self.attentions = nn.ModuleList([MSDeformAttn(embed_dims, num_levels, num_heads, num_points)])
        self.ffns = nn.ModuleList([FFN(embed_dims, feedforward_channels, dropout, use_checkpoint)])
        self.norms = nn.ModuleList([nn.LayerNorm(embed_dims), nn.LayerNorm(embed_dims)])
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, pos: torch.Tensor, reference_points: torch.Tensor, spatial_shapes: torch.Tensor,
                level_start_index: torch.Tensor, level_shapes: list[tuple[int, int]]) -> torch.Tensor:
        """x, pos [N, S, C] (all levels flattened, coarse first); reference_points [N, S, L, 2]; level_shapes: the
        spatial_shapes as Python ints."""
        attn = self.attentions[0](x + pos, reference_points, x, spatial_shapes, level_start_index,
                                  level_shapes=level_shapes)
        x = self.norms[0](x + self.dropout(attn))
        return self.norms[1](self.ffns[0](x))


class DeformableEncoder(nn.Module):
    """mmcv ``DetrTransformerEncoder`` of post-norm layers (no final norm): key ``layers``."""

    def __init__(self, num_layers: int, *layer_args, **layer_kwargs):
        super().__init__()
        self.layers = nn.ModuleList([DeformableEncoderLayer(*layer_args, **layer_kwargs) for _ in range(num_layers)])

    def forward(self, x: torch.Tensor, *args) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x, *args)
        return x


class MSDeformAttnPixelDecoder(nn.Module):
    """Per-pixel features for Mask2Former.

    The ``num_encoder_levels`` coarsest inputs are projected (1x1 conv + GN, ``input_convs``, coarse first), get a
    sine position encoding plus a learned ``level_encoding``, and pass ``num_layers`` deformable-attention
    encoder layers together (each pixel attends to ``num_points`` points per head on every level around its own
    position). The remaining finer inputs are merged top-down FPN-style (1x1 ``lateral_convs`` + upsampled
    coarser output, 3x3 ``output_convs``, GN). ``mask_feature`` (1x1 conv) maps the finest output to the
    mask features.

    Args:
        in_channels: channels of the inputs, fine to coarse (res2..res5).
        feat_channels: width of every level (mmseg feat_channels, Detectron2 CONVS_DIM).
        out_channels: channels of the mask features (mmseg out_channels, Detectron2 MASK_DIM).
    """

    def __init__(self, in_channels: list[int], feat_channels: int = 256, out_channels: int = 256,
                 num_encoder_levels: int = 3, num_layers: int = 6, num_heads: int = 8, num_points: int = 4,
                 feedforward_channels: int = 1024, dropout: float = 0.0, norm: str = "GN",
                 use_checkpoint: bool = False):
        super().__init__()
        if not 1 <= num_encoder_levels <= len(in_channels):
            raise ValueError(f"The deformable encoder needs 1..{len(in_channels)} levels, got {num_encoder_levels}")
        self.num_inputs, self.num_encoder_levels = len(in_channels), num_encoder_levels
        coarse_first = list(reversed(in_channels))
        self.input_convs = nn.ModuleList([ConvNormAct(c, feat_channels, 1, norm=norm, activation=False, bias=True)
                                          for c in coarse_first[:num_encoder_levels]])
        self.encoder = DeformableEncoder(num_layers, feat_channels, num_heads, num_encoder_levels, num_points,
                                         feedforward_channels, dropout, use_checkpoint)
        self.postional_encoding = SinePositionalEncoding(feat_channels // 2)  # (sic) mmdet's attribute name
        self.level_encoding = nn.Embedding(num_encoder_levels, feat_channels)
        self.lateral_convs = nn.ModuleList([ConvNormAct(c, feat_channels, 1, norm=norm, activation=False)
                                            for c in coarse_first[num_encoder_levels:]])
        self.output_convs = nn.ModuleList([ConvNormAct(feat_channels, feat_channels, 3, padding=1, norm=norm)
                                           for _ in coarse_first[num_encoder_levels:]])
        self.mask_feature = nn.Conv2d(feat_channels, out_channels, 1)
        self._init_weights()

    def _init_weights(self) -> None:
        """mmdet's init: Xavier-uniform input projections, Caffe2-Xavier FPN convs, N(0, 1) level encodings,
        Xavier-normal encoder matrices, then the deformable attentions' own init."""
        for m in self.input_convs:
            nn.init.xavier_uniform_(m.conv.weight)
            nn.init.zeros_(m.conv.bias)
        for conv in [m.conv for m in (*self.lateral_convs, *self.output_convs)] + [self.mask_feature]:
            nn.init.kaiming_uniform_(conv.weight, a=1)
            if conv.bias is not None:
                nn.init.zeros_(conv.bias)
        nn.init.normal_(self.level_encoding.weight)
        for p in self.encoder.parameters():
            if p.dim() > 1:
                nn.init.xavier_normal_(p)
        for layer in self.encoder.layers:
            layer.attentions[0].reset_parameters()

    def forward(self, features: list[torch.Tensor]) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """features: inputs fine to coarse, [N, C_i, H_i, W_i].

        Returns (mask features [N, out_channels, H_0, W_0], the encoder's levels coarse to fine
        [N, feat_channels, H_i, W_i] followed by the FPN outputs).
        """
        n = features[0].shape[0]
        srcs, pos, shapes, refs = [], [], [], []
        for i in range(self.num_encoder_levels):
            feat = features[self.num_inputs - 1 - i]
            h, w = feat.shape[-2:]
            src = self.input_convs[i](feat)
            level_pos = (self.postional_encoding(n, h, w, feat.device, src.dtype)
                         + self.level_encoding.weight[i].view(1, -1, 1, 1))
            srcs.append(src.flatten(2).transpose(1, 2))
            pos.append(level_pos.flatten(2).transpose(1, 2))
            shapes.append((h, w))
            refs.append(_reference_points(h, w, feat.device))
        spatial_shapes, level_start_index = level_tensors(shapes, features[0].device)
        reference_points = torch.cat(refs)[None, :, None].expand(n, -1, self.num_encoder_levels, -1)
        x = self.encoder(torch.cat(srcs, 1), torch.cat(pos, 1), reference_points, spatial_shapes, level_start_index,
                         shapes)
        outs = [t.transpose(1, 2).reshape(n, -1, h, w)
                for t, (h, w) in zip(x.split([h * w for h, w in shapes], 1), shapes)]
        for i, (lateral, output) in enumerate(zip(self.lateral_convs, self.output_convs)):
            cur = lateral(features[self.num_inputs - self.num_encoder_levels - 1 - i])
            up = F.interpolate(outs[-1], size=cur.shape[-2:], mode="bilinear", align_corners=False)
            outs.append(output(cur + up))
        return self.mask_feature(outs[-1]), outs


def _reference_points(h: int, w: int, device: torch.device) -> torch.Tensor:
    """Pixel centres of an h x w map as (x, y) in [0, 1]: [h * w, 2], row-major."""
    ys, xs = torch.meshgrid(torch.arange(h, device=device, dtype=torch.float32),
                            torch.arange(w, device=device, dtype=torch.float32), indexing="ij")
    return torch.stack([(xs.reshape(-1) + 0.5) / w, (ys.reshape(-1) + 0.5) / h], -1)
