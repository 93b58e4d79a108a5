"""Mask2FormerHead: pixel decoder + masked-attention transformer decoder -> per-query class logits and mask
logits (mmseg/mmdet ``Mask2FormerHead``'s module names, Detectron2's MultiScaleMaskedTransformerDecoder
behaviour; the two agree)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ...backbone.backbone import ShapeSpec
from ..build import SEM_SEG_HEAD_REGISTRY
from .layers import SinePositionalEncoding
from .pixel_decoder import MSDeformAttnPixelDecoder
from .transformer_decoder import MaskedTransformerDecoder

__all__ = ["Mask2FormerHead"]


@SEM_SEG_HEAD_REGISTRY.register()
class Mask2FormerHead(nn.Module):
    """Mask classification head.

    ``num_queries`` learnable queries (``query_feat``, with positional ``query_embed``) attend round-robin to
    the pixel decoder's levels, coarse to fine (``level_embed`` added), in ``num_layers`` masked-attention
    layers: a query only sees the pixels its previous mask prediction covers (sigmoid >= 0.5, resized to the
    level). Before the first layer and after each, every query predicts a class (``cls_embed``, K + 1 with
    "no object" last) and a mask: its ``mask_embed`` dotted with the stride-4 mask features.

    forward(features) -> {"pred_logits": [N, Q, K + 1], "pred_masks": [N, Q, H/4, W/4], "aux_outputs":
    [the same for the learnable queries and layers 1..num_layers - 1]} (aux outputs only in training).
    """

    def __init__(self, in_features: list[str], in_channels: list[int], num_classes: int, *, feat_channels: int = 256,
                 mask_dim: int = 256, encoder_levels: int = 3, encoder_layers: int = 6, encoder_heads: int = 8,
                 encoder_points: int = 4, encoder_feedforward: int = 1024, norm: str = "GN", hidden_dim: int = 256,
                 num_queries: int = 100, num_heads: int = 8, feedforward: int = 2048, num_layers: int = 9,
                 dropout: float = 0.0, enforce_input_proj: bool = False, use_checkpoint: bool = False,
                 ignore_value: int = 255):
        super().__init__()
        self.in_features, self.num_classes, self.ignore_value = list(in_features), num_classes, ignore_value
        self.num_queries, self.num_levels = num_queries, encoder_levels
        self.pixel_decoder = MSDeformAttnPixelDecoder(in_channels, feat_channels, mask_dim, encoder_levels,
                                                      encoder_layers, encoder_heads, encoder_points,
                                                      encoder_feedforward, dropout, norm, use_checkpoint)
        self.transformer_decoder = MaskedTransformerDecoder(num_layers, hidden_dim, num_heads, feedforward, dropout,
                                                            use_checkpoint)
        project = feat_channels != hidden_dim or enforce_input_proj
        self.decoder_input_projs = nn.ModuleList(
            [nn.Conv2d(feat_channels, hidden_dim, 1) if project else nn.Identity() for _ in range(encoder_levels)])
        self.decoder_positional_encoding = SinePositionalEncoding(hidden_dim // 2)
        self.query_embed = nn.Embedding(num_queries, hidden_dim)
        self.query_feat = nn.Embedding(num_queries, hidden_dim)
        self.level_embed = nn.Embedding(encoder_levels, hidden_dim)
        self.cls_embed = nn.Linear(hidden_dim, num_classes + 1)
        self.mask_embed = nn.Sequential(nn.Linear(hidden_dim, hidden_dim), nn.ReLU(inplace=True),
                                        nn.Linear(hidden_dim, hidden_dim), nn.ReLU(inplace=True),
                                        nn.Linear(hidden_dim, mask_dim))
        self._init_weights()

    def _init_weights(self) -> None:
        """mmdet's init: Caffe2-Xavier input projections, Xavier-normal decoder matrices (the rest keeps
        PyTorch's defaults)."""
        for m in self.decoder_input_projs:
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_uniform_(m.weight, a=1)
                nn.init.zeros_(m.bias)
        for p in self.transformer_decoder.parameters():
            if p.dim() > 1:
                nn.init.xavier_normal_(p)

    @classmethod
    def from_config(cls, cfg, input_shape: dict[str, ShapeSpec]) -> Mask2FormerHead:
        head, mf = cfg.MODEL.SEM_SEG_HEAD, cfg.MODEL.MASK_FORMER
        in_features = list(head.IN_FEATURES)
        missing = [f for f in in_features if f not in input_shape]
        if missing:
            raise ValueError(f"MODEL.SEM_SEG_HEAD.IN_FEATURES {missing} are not produced by the backbone "
                             f"(it gives {sorted(input_shape)})")
        enc = list(head.DEFORMABLE_TRANSFORMER_ENCODER_IN_FEATURES)
        if in_features[len(in_features) - len(enc):] != enc:
            raise ValueError(f"MODEL.SEM_SEG_HEAD.DEFORMABLE_TRANSFORMER_ENCODER_IN_FEATURES {enc} must be the last "
                             f"(coarsest) entries of MODEL.SEM_SEG_HEAD.IN_FEATURES {in_features}")
        if mf.DEC_LAYERS < 2:
            raise ValueError(f"MODEL.MASK_FORMER.DEC_LAYERS is {mf.DEC_LAYERS}: it counts the learnable queries' "
                             f"prediction plus one per layer, so it must be >= 2 (Mask2Former: 10)")
        return cls(in_features, [input_shape[f].channels for f in in_features], head.NUM_CLASSES,
                   feat_channels=head.CONVS_DIM, mask_dim=head.MASK_DIM, encoder_levels=len(enc),
                   encoder_layers=head.TRANSFORMER_ENC_LAYERS,
                   encoder_heads=head.DEFORMABLE_TRANSFORMER_ENCODER_N_HEADS,
                   encoder_points=head.DEFORMABLE_TRANSFORMER_ENCODER_N_POINTS,
                   encoder_feedforward=head.DEFORMABLE_TRANSFORMER_ENCODER_DIM_FEEDFORWARD, norm=head.NORM,
                   hidden_dim=mf.HIDDEN_DIM, num_queries=mf.NUM_OBJECT_QUERIES, num_heads=mf.NHEADS,
                   feedforward=mf.DIM_FEEDFORWARD, num_layers=mf.DEC_LAYERS - 1, dropout=mf.DROPOUT,
                   enforce_input_proj=mf.ENFORCE_INPUT_PROJ, use_checkpoint=mf.USE_CHECKPOINT,
                   ignore_value=head.IGNORE_VALUE)

    def forward(self, features: dict[str, torch.Tensor]) -> dict:
        mask_features, levels = self.pixel_decoder([features[f] for f in self.in_features])
        n = mask_features.shape[0]
        memories, memory_pos, sizes = [], [], []
        for i in range(self.num_levels):
            h, w = levels[i].shape[-2:]
            x = self.decoder_input_projs[i](levels[i]).flatten(2).transpose(1, 2) + self.level_embed.weight[i]
            memories.append(x)
            memory_pos.append(self.decoder_positional_encoding(n, h, w, x.device, x.dtype).flatten(2).transpose(1, 2))
            sizes.append((h, w))
        query = self.query_feat.weight[None].expand(n, -1, -1)
        query_pos = self.query_embed.weight[None].expand(n, -1, -1)
        predictions = [self._predict(query, mask_features, sizes[0])]
        for i, layer in enumerate(self.transformer_decoder.layers):
            level = i % self.num_levels
            attn_mask = predictions[-1][2]
            attn_mask[attn_mask.all(-1)] = False  # a query whose mask is empty attends everywhere
            query = layer(query, query_pos, memories[level], memory_pos[level], attn_mask)
            predictions.append(self._predict(query, mask_features, sizes[(i + 1) % self.num_levels]))
            if not self.training:
                predictions = predictions[-1:]
        out = {"pred_logits": predictions[-1][0], "pred_masks": predictions[-1][1]}
        if self.training:
            out["aux_outputs"] = [{"pred_logits": c, "pred_masks": m} for c, m, _ in predictions[:-1]]
        return out

    def _predict(self, query: torch.Tensor, mask_features: torch.Tensor, attn_size: tuple[int, int]):
        """(class logits [N, Q, K + 1], mask logits [N, Q, H/4, W/4], attention mask for the next layer
        [N * heads, Q, h * w] at ``attn_size``)."""
        x = self.transformer_decoder.post_norm(query)
        mask_logits = torch.einsum("nqc,nchw->nqhw", self.mask_embed(x), mask_features)
        attn = F.interpolate(mask_logits, size=attn_size, mode="bilinear", align_corners=False)
        attn_mask = (attn.sigmoid().flatten(2) < 0.5).detach()
        attn_mask = attn_mask.repeat_interleave(self.transformer_decoder.num_heads, dim=0)
        return self.cls_embed(x), mask_logits, attn_mask
