"""Converters from released checkpoints to dense's key layout, chosen automatically by DenseCheckpointer.

A converter is a class registered in CHECKPOINT_CONVERTERS with

- ``matches(state_dict, model) -> bool``: whether it recognises this checkpoint for this model;
- ``convert(state_dict, model) -> (state_dict, dropped)``: the state dict in the model's names, and
  ``{original key: why it is not loaded}`` for keys deliberately left out (e.g. an ImageNet classifier).

Converters are tried in registration order; the first that matches converts.

Most families are handled by :class:`BackboneFamily`: a released checkpoint is either an ImageNet
classification checkpoint (bare backbone keys plus a classifier) or an mmseg/mmdet checkpoint
(``backbone.*`` plus ``neck.*``, ``decode_head.*``, ``auxiliary_head.*``, ``rpn_head.*``, ...). The family
says how its upstream backbone keys are named; the mmcv part is shared.
"""
from __future__ import annotations

import re

from fvcore.common.registry import Registry
from torch import nn

__all__ = ["CHECKPOINT_CONVERTERS", "find_converter", "unwrap_model", "BackboneFamily", "MMCV_HEAD_PREFIXES",
           "Detectron2MaskFormer"]

CHECKPOINT_CONVERTERS = Registry("CHECKPOINT_CONVERTER")

# mmseg/mmdet top-level module -> dense module (heads issues extend the models these map into)
MMCV_HEAD_PREFIXES = {"neck.": "neck.", "decode_head.": "sem_seg_head.", "auxiliary_head.": "aux_head.",
                      "rpn_head.": "rpn_head.", "roi_head.": "roi_head.", "bbox_head.": "bbox_head.",
                      "panoptic_head.": "sem_seg_head."}  # mmdet's Mask2Former keeps its head in panoptic_head


def unwrap_model(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)) else model


def find_converter(state_dict: dict, model: nn.Module):
    """The first registered converter that recognises ``state_dict`` for ``model``, or None."""
    for _, cls in CHECKPOINT_CONVERTERS:
        conv = cls()
        if conv.matches(state_dict, model):
            return conv
    return None


def _backbone_and_prefix(model: nn.Module) -> tuple[nn.Module, str]:
    """The model's backbone and the prefix of its keys ("backbone." in a full model, "" for a bare one)."""
    model = unwrap_model(model)
    if hasattr(model, "backbone"):
        return model.backbone, "backbone."
    return model, ""


class BackboneFamily:
    """Base of per-family converters.

    Subclasses set ``backbone_type`` (the dense Backbone class), ``signature`` (backbone keys, without any
    prefix, that identify the upstream layout: any one present is enough) and ``classifier`` (a regex of
    classification-only keys), and may override :meth:`rename` (upstream backbone key -> dense key).
    """

    backbone_type: type | None = None
    signature: tuple[str, ...] = ()
    classifier = re.compile(r"^(head|fc|cls_head|cls_norm|norm|fc_norm|norms)\.")
    name = "released"

    def rename(self, key: str) -> str:
        return key

    def _backbone_keys(self, state_dict: dict) -> tuple[dict, str]:
        """(backbone part, layout) with layout "mmcv" (backbone.* keys) or "classification"."""
        if any(("backbone." + s) in state_dict for s in self.signature):
            return {k[len("backbone."):]: v for k, v in state_dict.items() if k.startswith("backbone.")}, "mmcv"
        return state_dict, "classification"

    def matches(self, state_dict: dict, model: nn.Module) -> bool:
        backbone, _ = _backbone_and_prefix(model)
        if self.backbone_type is None or not isinstance(backbone, self.backbone_type):
            return False
        return any(s in state_dict or ("backbone." + s) in state_dict for s in self.signature)

    def convert(self, state_dict: dict, model: nn.Module) -> tuple[dict, dict]:
        _, prefix = _backbone_and_prefix(model)
        backbone_sd, layout = self._backbone_keys(state_dict)
        out, dropped = {}, {}
        for k, v in backbone_sd.items():
            if layout == "classification" and self.classifier.match(k):
                dropped[k] = "ImageNet classifier (not part of a dense model)"
                continue
            out[prefix + self.rename(k)] = v
        if layout == "mmcv":
            for k, v in state_dict.items():
                if k.startswith("backbone."):
                    continue
                head = next((p for p in MMCV_HEAD_PREFIXES if k.startswith(p)), None)
                if head is None or not prefix:
                    dropped[k] = "head of the released model with no counterpart in this dense model"
                elif k.startswith("decode_head.conv_seg.") and _is_mask2former(model):
                    dropped[k] = ("mmseg BaseDecodeHead's classifier, unused by Mask2Former (ViT-Adapter checkpoints "
                                  "saved before its head set conv_seg = None carry it)")
                else:
                    out[MMCV_HEAD_PREFIXES[head] + k[len(head):]] = v
        self.name = f"{type(self).__name__} ({layout})"
        return out, dropped


def _is_mask2former(model: nn.Module) -> bool:
    from ..modeling.heads.mask2former import Mask2FormerHead

    return isinstance(getattr(unwrap_model(model), "sem_seg_head", None), Mask2FormerHead)


@CHECKPOINT_CONVERTERS.register()
class TorchvisionResNet(BackboneFamily):
    """torchvision ImageNet ResNet (``conv1``, ``layer1.0.conv1``, ``fc``) -> ``backbone.*``."""

    signature = ("layer1.0.conv1.weight",)

    @property
    def backbone_type(self):
        from ..modeling.backbone.resnet import ResNet

        return ResNet


@CHECKPOINT_CONVERTERS.register()
class DATCheckpoint(BackboneFamily):
    """DAT++ releases: ImageNet (LeapLabTHU/DAT, ``{'model': ...}``, ``cls_head``/``cls_norm``) and mmseg /
    mmdet (LeapLabTHU/DAT-Segmentation / -Detection); the original DAT's ImageNet files (LeapLabTHU/DAT@566a593,
    same layout, incl. the int64 ``relative_position_index`` / float ``attn_mask`` buffers) load into
    MODEL.DAT.VERSION "v1". dense keeps upstream's key names."""

    signature = ("patch_proj.0.weight",)
    classifier = re.compile(r"^(cls_head|cls_norm)\.")

    @property
    def backbone_type(self):
        from ..modeling.backbone.dat import DAT

        return DAT


@CHECKPOINT_CONVERTERS.register()
class DSANCheckpoint(BackboneFamily):
    """DSAN releases (MarcYugo/DSAN-Deformable-Spatial-Attention): ImageNet ``dsan_{t,t2,s}.pth.tar`` (timm
    CheckpointSaver: ``{'state_dict', 'epoch', 'arch', 'args': Namespace, ...}``, classifier ``head``), the
    ``dsan_{t,s}_encoder.pth`` init files (the same state dict without ``head``) and mmseg / mmdet checkpoints
    (``backbone.*``). dense keeps upstream's key names. A checkpoint trained with other DSCN offset groups
    fails to load with the MODEL.DSAN.GROUPS that fits it (``DSAN.mismatch_hint``)."""

    signature = ("block1.0.attn.spatial_gating_unit.dscn_x.offset.weight",)
    classifier = re.compile(r"^head\.")

    @property
    def backbone_type(self):
        from ..modeling.backbone.dsan import DSAN

        return DSAN


@CHECKPOINT_CONVERTERS.register()
class DaViTCheckpoint(BackboneFamily):
    """DaViT releases: official ImageNet / mmdet / mmseg (dingmyu/davit: ``patch_embeds``, ``main_blocks``,
    ``cpe.0``, classifier ``norms``/``head``) and timm hub weights (``stem``, ``stages``, ``head.fc``)."""

    signature = ("patch_embeds.0.proj.weight", "stem.conv.weight")
    classifier = re.compile(r"^(head|norms)\.")
    _RULES = [
        (re.compile(r"^patch_embeds\.0\.proj\."), "stem.conv."),
        (re.compile(r"^patch_embeds\.0\.norm\."), "stem.norm."),
        (re.compile(r"^patch_embeds\.(\d)\.proj\."), r"stages.\1.downsample.conv."),
        (re.compile(r"^patch_embeds\.(\d)\.norm\."), r"stages.\1.downsample.norm."),
        (re.compile(r"^main_blocks\.(\d+)\.(\d+)\.(\d)\."), r"stages.\1.blocks.\2.\3."),
        (re.compile(r"\.cpe\.0\."), ".cpe1."),
        (re.compile(r"\.cpe\.1\."), ".cpe2."),
    ]

    @property
    def backbone_type(self):
        from ..modeling.backbone.davit import DaViT

        return DaViT

    def rename(self, key: str) -> str:
        for pattern, repl in self._RULES:
            key = pattern.sub(repl, key)
        return key


@CHECKPOINT_CONVERTERS.register()
class ViTAdapterCheckpoint(BackboneFamily):
    """ViT-Adapter releases (czczup/ViT-Adapter): mmseg / mmdet checkpoints (``state_dict`` with ``backbone.*``;
    upstream's names are dense's) and the ImageNet checkpoints its configs start from: DeiT (``{'model'}``),
    AugReg (ViT-Adapter release files, timm names) and BEiT / BEiT v2 (unilm, ``{'model'}``).

    - ImageNet class token, final norm and classifier are dropped (the segmentation BEiT adapter keeps BEiT's
      class token); DeiT/AugReg checkpoints lack the adapter's layer scales ``blocks.*.gamma1/gamma2``, which
      stay at their initial 1.0, as upstream;
    - BEiT: a shared ``rel_pos_bias`` table is copied to every block, ``relative_position_index`` buffers are
      dropped (the model computes them for each input size) and tables of another size are resized to the
      model's as upstream's loader does (geometric-progression cubic spline; windowed detection tables lose the
      class-token entries).
    """

    signature = ("blocks.0.attn.qkv.weight",)
    classifier = re.compile(r"^(head|head_dist|norm|fc_norm)\.|^dist_token$")

    @property
    def backbone_type(self):
        from ..modeling.backbone.vit_adapter import ViTAdapter

        return ViTAdapter

    def convert(self, state_dict: dict, model: nn.Module) -> tuple[dict, dict]:
        backbone, _ = _backbone_and_prefix(model)
        state_dict, dropped = self._adapt(state_dict, backbone)
        out, more = super().convert(state_dict, model)
        return out, {**dropped, **more}

    @staticmethod
    def _adapt(state_dict: dict, backbone: nn.Module) -> tuple[dict, dict]:
        """BEiT / class-token handling on the checkpoint's own keys (with or without ``backbone.``)."""
        from ..modeling.backbone.vit_adapter import resize_rel_pos_table

        out, dropped = {}, {}
        for key, value in state_dict.items():
            prefix = "backbone." if key.startswith("backbone.") else ""
            name = key[len(prefix):]
            if name.endswith("relative_position_index"):
                dropped[key] = "index buffer: the model computes it for each input size"
            elif name == "rel_pos_bias.relative_position_bias_table":
                dropped[key] = "shared BEiT table: copied to every block's attn.relative_position_bias_table"
                for i in range(len(backbone.blocks)):
                    out.setdefault(f"{prefix}blocks.{i}.attn.relative_position_bias_table", value)
            elif name == "cls_token" and backbone.cls_token is None:
                dropped[key] = "class token: this ViT-Adapter trunk has none"
            elif name == "mask_token" or name.startswith("lm_head."):
                dropped[key] = "BEiT masked-image-modelling pre-training part (not part of a dense model)"
            else:
                out[key] = value
        own = backbone.state_dict()
        for key, value in out.items():
            name = key[len("backbone."):] if key.startswith("backbone.") else key
            target = own.get(name)
            if (name.endswith("attn.relative_position_bias_table") and target is not None
                    and value.shape != target.shape and value.shape[1:] == target.shape[1:]):
                out[key] = resize_rel_pos_table(value, target.shape[0])
        return out, dropped


@CHECKPOINT_CONVERTERS.register()
class Detectron2MaskFormer:
    """Detectron2 Mask2Former releases (facebookresearch/Mask2Former model zoo ``.pkl``: ``{'model': numpy arrays}``)
    -> dense's mmseg-style Mask2Former names; a ResNet backbone in Detectron2's layout (``stem``, ``res2..5``,
    ``shortcut``) becomes torchvision's. The criterion's ``empty_weight`` constant is dropped (dense recomputes it)."""

    name = "Detectron2 Mask2Former"
    _HEAD_RULES = [
        (r"pixel_decoder\.input_proj\.(\d+)\.0\.", r"pixel_decoder.input_convs.\1.conv."),
        (r"pixel_decoder\.input_proj\.(\d+)\.1\.", r"pixel_decoder.input_convs.\1.gn."),
        (r"pixel_decoder\.transformer\.level_embed$", "pixel_decoder.level_encoding.weight"),
        (r"pixel_decoder\.transformer\.encoder\.layers\.(\d+)\.self_attn\.", r"pixel_decoder.encoder.layers.\1.attentions.0."),
        (r"pixel_decoder\.transformer\.encoder\.layers\.(\d+)\.norm1\.", r"pixel_decoder.encoder.layers.\1.norms.0."),
        (r"pixel_decoder\.transformer\.encoder\.layers\.(\d+)\.norm2\.", r"pixel_decoder.encoder.layers.\1.norms.1."),
        (r"pixel_decoder\.transformer\.encoder\.layers\.(\d+)\.linear1\.", r"pixel_decoder.encoder.layers.\1.ffns.0.layers.0.0."),
        (r"pixel_decoder\.transformer\.encoder\.layers\.(\d+)\.linear2\.", r"pixel_decoder.encoder.layers.\1.ffns.0.layers.1."),
        (r"pixel_decoder\.mask_features\.", "pixel_decoder.mask_feature."),
        (r"predictor\.transformer_cross_attention_layers\.(\d+)\.multihead_attn\.", r"transformer_decoder.layers.\1.attentions.0.attn."),
        (r"predictor\.transformer_cross_attention_layers\.(\d+)\.norm\.", r"transformer_decoder.layers.\1.norms.0."),
        (r"predictor\.transformer_self_attention_layers\.(\d+)\.self_attn\.", r"transformer_decoder.layers.\1.attentions.1.attn."),
        (r"predictor\.transformer_self_attention_layers\.(\d+)\.norm\.", r"transformer_decoder.layers.\1.norms.1."),
        (r"predictor\.transformer_ffn_layers\.(\d+)\.linear1\.", r"transformer_decoder.layers.\1.ffns.0.layers.0.0."),
        (r"predictor\.transformer_ffn_layers\.(\d+)\.linear2\.", r"transformer_decoder.layers.\1.ffns.0.layers.1."),
        (r"predictor\.transformer_ffn_layers\.(\d+)\.norm\.", r"transformer_decoder.layers.\1.norms.2."),
        (r"predictor\.decoder_norm\.", "transformer_decoder.post_norm."),
        (r"predictor\.input_proj\.", "decoder_input_projs."),
        (r"predictor\.class_embed\.", "cls_embed."),
        (r"predictor\.(query_feat|query_embed|level_embed)\.", r"\1."),
    ]
    _RESNET_RULES = [
        (r"^stem\.conv1\.norm\.", "bn1."),
        (r"^stem\.conv1\.", "conv1."),
        (r"^res(\d)\.(\d+)\.conv(\d)\.norm\.", lambda m: f"layer{int(m[1]) - 1}.{m[2]}.bn{m[3]}."),
        (r"^res(\d)\.(\d+)\.conv(\d)\.", lambda m: f"layer{int(m[1]) - 1}.{m[2]}.conv{m[3]}."),
        (r"^res(\d)\.(\d+)\.shortcut\.norm\.", lambda m: f"layer{int(m[1]) - 1}.{m[2]}.downsample.1."),
        (r"^res(\d)\.(\d+)\.shortcut\.", lambda m: f"layer{int(m[1]) - 1}.{m[2]}.downsample.0."),
    ]

    def matches(self, state_dict: dict, model: nn.Module) -> bool:
        from ..modeling.meta_arch.mask_former import MaskFormer

        return isinstance(unwrap_model(model), MaskFormer) and "sem_seg_head.predictor.query_feat.weight" in state_dict

    def convert(self, state_dict: dict, model: nn.Module) -> tuple[dict, dict]:
        from ..modeling.backbone.resnet import ResNet

        model = unwrap_model(model)
        num_fpn = len(model.sem_seg_head.pixel_decoder.lateral_convs)
        resnet = isinstance(model.backbone, ResNet)
        out, dropped = {}, {}
        for key, value in state_dict.items():
            if key == "criterion.empty_weight":
                dropped[key] = "loss constant (no-object class weight), recomputed from MODEL.MASK_FORMER.NO_OBJECT_WEIGHT"
            elif key.startswith("sem_seg_head."):
                out["sem_seg_head." + self._head_key(key[len("sem_seg_head."):], num_fpn)] = value
            elif key.startswith("backbone.") and resnet:
                out["backbone." + _apply_rules(self._RESNET_RULES, key[len("backbone."):])] = value
            else:
                out[key] = value
        return out, dropped

    def _head_key(self, key: str, num_fpn: int) -> str:
        """Detectron2 numbers its FPN convs adapter_k / layer_k from the finest level (k = 1); mmdet's
        lateral_convs / output_convs start at the coarsest."""
        m = re.match(r"pixel_decoder\.(adapter|layer)_(\d+)\.(norm\.)?(.*)$", key)
        if m:
            convs = "lateral_convs" if m[1] == "adapter" else "output_convs"
            return f"pixel_decoder.{convs}.{num_fpn - int(m[2])}.{'gn' if m[3] else 'conv'}.{m[4]}"
        m = re.match(r"predictor\.mask_embed\.layers\.(\d+)\.(.*)$", key)
        if m:
            return f"mask_embed.{2 * int(m[1])}.{m[2]}"
        return _apply_rules(self._HEAD_RULES, key)


def _apply_rules(rules: list, key: str) -> str:
    """The first (pattern, replacement) of ``rules`` that matches ``key`` applied to it; ``key`` when none does."""
    for pattern, repl in rules:
        new, n = re.subn(pattern, repl, key, count=1)
        if n:
            return new
    return key
