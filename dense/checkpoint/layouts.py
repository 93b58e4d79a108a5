"""Key names of the wrappers that released whole models come in, beside the backbone's ``backbone.*`` keys
(which go through their family's rules, dense/checkpoint/released.py):

- mmseg / mmdet models: ``neck.*``, ``decode_head.*``, ``auxiliary_head.*``, ``rpn_head.*``, ... (dense keeps
  mmcv's module names under its own top-level names, MMCV_HEAD_PREFIXES);
- Detectron2 Mask2Former model-zoo files (facebookresearch/Mask2Former ``.pkl``: ``{'model': numpy arrays}``):
  the head's names -> dense's mmseg-style Mask2Former names.
"""
from __future__ import annotations

import re

__all__ = ["MMCV_HEAD_PREFIXES", "DETECTRON2_MASK2FORMER_KEY", "detectron2_mask2former_key", "apply_rules"]

# mmseg/mmdet top-level module -> dense module
MMCV_HEAD_PREFIXES = {"neck.": "neck.", "decode_head.": "sem_seg_head.", "auxiliary_head.": "aux_head.",
                      "rpn_head.": "rpn_head.", "roi_head.": "roi_head.", "bbox_head.": "bbox_head.",
                      "panoptic_head.": "sem_seg_head."}  # mmdet's Mask2Former keeps its head in panoptic_head

DETECTRON2_MASK2FORMER_KEY = "sem_seg_head.predictor.query_feat.weight"  # present in every such file

# Detectron2 Mask2Former head key (after "sem_seg_head.") -> dense key; the first matching pattern applies
_HEAD_RULES = [
    (r"pixel_decoder\.input_proj\.(\d+)\.0\.", r"pixel_decoder.input_convs.\1.conv."),
    (r"pixel_decoder\.input_proj\.(\d+)\.1\.", r"pixel_decoder.input_convs.\1.gn."),
    (r"pixel_decoder\.transformer\.level_embed$", "pixel_decoder.level_encoding.weight"),
    (r"pixel_decoder\.transformer\.encoder\.layers\.(\d+)\.self_attn\.",
     r"pixel_decoder.encoder.layers.\1.attentions.0."),
    (r"pixel_decoder\.transformer\.encoder\.layers\.(\d+)\.norm1\.", r"pixel_decoder.encoder.layers.\1.norms.0."),
    (r"pixel_decoder\.transformer\.encoder\.layers\.(\d+)\.norm2\.", r"pixel_decoder.encoder.layers.\1.norms.1."),
    (r"pixel_decoder\.transformer\.encoder\.layers\.(\d+)\.linear1\.",
     r"pixel_decoder.encoder.layers.\1.ffns.0.layers.0.0."),
    (r"pixel_decoder\.transformer\.encoder\.layers\.(\d+)\.linear2\.",
     r"pixel_decoder.encoder.layers.\1.ffns.0.layers.1."),
    (r"pixel_decoder\.mask_features\.", "pixel_decoder.mask_feature."),
    (r"predictor\.transformer_cross_attention_layers\.(\d+)\.multihead_attn\.",
     r"transformer_decoder.layers.\1.attentions.0.attn."),
    (r"predictor\.transformer_cross_attention_layers\.(\d+)\.norm\.", r"transformer_decoder.layers.\1.norms.0."),
    (r"predictor\.transformer_self_attention_layers\.(\d+)\.self_attn\.",
     r"transformer_decoder.layers.\1.attentions.1.attn."),
    (r"predictor\.transformer_self_attention_layers\.(\d+)\.norm\.", r"transformer_decoder.layers.\1.norms.1."),
    (r"predictor\.transformer_ffn_layers\.(\d+)\.linear1\.", r"transformer_decoder.layers.\1.ffns.0.layers.0.0."),
    (r"predictor\.transformer_ffn_layers\.(\d+)\.linear2\.", r"transformer_decoder.layers.\1.ffns.0.layers.1."),
    (r"predictor\.transformer_ffn_layers\.(\d+)\.norm\.", r"transformer_decoder.layers.\1.norms.2."),
    (r"predictor\.decoder_norm\.", "transformer_decoder.post_norm."),
    (r"predictor\.input_proj\.", "decoder_input_projs."),
    (r"predictor\.class_embed\.", "cls_embed."),
    (r"predictor\.(query_feat|query_embed|level_embed)\.", r"\1."),
]


def detectron2_mask2former_key(key: str, num_fpn: int) -> str:
    """A Detectron2 Mask2Former head key (without ``sem_seg_head.``) in dense's names. Detectron2 numbers its FPN
    convs adapter_k / layer_k from the finest level (k = 1); mmdet's lateral_convs / output_convs, which dense
    keeps, start at the coarsest (``num_fpn`` levels)."""
    m = re.match(r"pixel_decoder\.(adapter|layer)_(\d+)\.(norm\.)?(.*)$", key)
    if m:
        convs = "lateral_convs" if m[1] == "adapter" else "output_convs"
        return f"pixel_decoder.{convs}.{num_fpn - int(m[2])}.{'gn' if m[3] else 'conv'}.{m[4]}"
    m = re.match(r"predictor\.mask_embed\.layers\.(\d+)\.(.*)$", key)
    if m:
        return f"mask_embed.{2 * int(m[1])}.{m[2]}"
    return apply_rules(_HEAD_RULES, key)


def apply_rules(rules: list, key: str) -> str:
    """The first (pattern, replacement) of ``rules`` that matches ``key`` applied to it; ``key`` when none does."""
    for pattern, repl in rules:
        new, n = re.subn(pattern, repl, key, count=1)
        if n:
            return new
    return key
