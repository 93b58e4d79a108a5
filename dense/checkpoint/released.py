"""Released checkpoints of the papers, converted on load: one generic path for every backbone family.

A backbone family declares what its released files look like beside its model, as the ``released``
attribute of its Backbone class (a :class:`ReleasedCheckpoint`): the keys that identify the upstream layout,
the classification-only keys of its ImageNet files, and, where upstream's names are not dense's, a conversion
of its keys. This module does the rest, the same for every family:

- the file's layout: an ImageNet classification file (bare backbone keys + a classifier), an mmseg / mmdet model
  (``backbone.*`` beside ``neck.*``, ``decode_head.*``, ``auxiliary_head.*``, ``rpn_head.*``, ...) or a
  Detectron2 Mask2Former model zoo file (``backbone.*`` beside ``sem_seg_head.predictor.*``);
- the family's rules applied to the backbone part, the wrapper's rules to the rest;
- a reason for every key deliberately left out (e.g. the ImageNet classifier), which the checkpointer reports.
"""
from __future__ import annotations

import glob
import os
import re
from dataclasses import dataclass
from typing import Callable

from torch import nn

from ..utils.comm import unwrap_model
from .layouts import DETECTRON2_MASK2FORMER_KEY, MMCV_HEAD_PREFIXES, detectron2_mask2former_key

__all__ = ["ReleasedCheckpoint", "Conversion", "convert_released", "mismatch_hint", "released_family",
           "family_configs"]

BACKBONE = "backbone."

KeyConversion = Callable[[dict, nn.Module], "tuple[dict, dict]"]
MismatchHint = Callable[[list, nn.Module], str]


@dataclass(frozen=True)
class ReleasedCheckpoint:
    """What one backbone family's released checkpoints look like (declared beside the model).

    Args:
        signature: backbone keys (without any prefix) that identify the upstream layout; a file holding any of
            them, bare (an ImageNet classification file) or under ``backbone.`` (a whole released model), is
            this family's.
        classifier: regex of the classification-only keys of an ImageNet file (final norm, head; also matching
            them after ``convert``), dropped with a reason when loading into a dense-prediction model, loaded
            under ``head.`` into an ImageClassifier.
        convert: ``(state_dict, backbone) -> (state_dict, dropped)`` on the backbone's keys (no prefix): renames
            and tensor conversions into the dense module's names, ``dropped`` = {key: why} for keys deliberately
            left out. None: upstream's names are dense's.
        mismatch_hint: ``(mismatched, backbone) -> str``: when tensors do not fit (``mismatched``: (model key,
            checkpoint shape, model shape)), what in the config to change, or "".
    """

    signature: tuple[str, ...]
    classifier: str = r"^(head|fc)\."
    convert: KeyConversion | None = None
    mismatch_hint: MismatchHint | None = None

    def matches(self, state_dict: dict) -> bool:
        """Whether ``state_dict`` (bare or a whole model's) holds this family's backbone."""
        return any(k in state_dict or BACKBONE + k in state_dict for k in self.signature)

    def is_classifier(self, key: str) -> bool:
        return re.match(self.classifier, key) is not None


@dataclass
class Conversion:
    """A released state dict in the model's names: ``state_dict``, the keys left out with the reason
    (``dropped``, the file's own key names) and what it was converted from (``source``, e.g. "DAT (mmcv)")."""

    state_dict: dict
    dropped: dict
    source: str


def _backbone_and_prefix(model: nn.Module) -> tuple[nn.Module, str]:
    """The model's backbone and the prefix of its keys ("backbone." in a whole model, "" for a bare backbone)."""
    model = unwrap_model(model)
    return (model.backbone, BACKBONE) if isinstance(getattr(model, "backbone", None), nn.Module) else (model, "")


def mismatch_hint(model: nn.Module, mismatched: list) -> str:
    """What the model's backbone family says about shape-mismatched tensors (``mismatched``: (model key, checkpoint
    shape, model shape)), or ""."""
    backbone, _ = _backbone_and_prefix(model)
    rules = getattr(type(backbone), "released", None)
    return rules.mismatch_hint(mismatched, backbone) if rules is not None and rules.mismatch_hint else ""


def released_family(state_dict: dict) -> str | None:
    """The registered backbone family (BACKBONE_REGISTRY name) whose released layout ``state_dict`` holds, or None."""
    from ..modeling.backbone import BACKBONE_REGISTRY

    for name, cls in BACKBONE_REGISTRY:
        rules = getattr(cls, "released", None)
        if rules is not None and rules.matches(state_dict):
            return name
    return None


def family_configs(family: str) -> list[str]:
    """The shipped configs/backbones/*.yaml of backbone ``family`` (paths relative to the repository)."""
    from ..config import get_cfg
    from ..model_zoo import configs_root

    out = []
    for path in sorted(glob.glob(os.path.join(configs_root(), "backbones", "*.yaml"))):
        cfg = get_cfg()
        cfg.merge_from_file(path)
        if cfg.MODEL.BACKBONE.NAME == family:
            out.append(os.path.relpath(path, os.path.dirname(configs_root())))
    return out


def convert_released(state_dict: dict, model: nn.Module) -> Conversion | None:
    """``state_dict`` of a released file converted into ``model``'s names, or None when it is not one this model's
    family (or a Detectron2 Mask2Former file) knows. ``model``: a whole dense model or a bare backbone."""
    model = unwrap_model(model)
    backbone, prefix = _backbone_and_prefix(model)
    rules = getattr(type(backbone), "released", None)
    family = rules if rules is not None and rules.matches(state_dict) else None
    detectron2 = bool(prefix) and DETECTRON2_MASK2FORMER_KEY in state_dict
    if family is None and not detectron2:
        return None
    wrapped = detectron2 or any(BACKBONE + k in state_dict for k in family.signature)
    layout = "detectron2" if detectron2 else "mmcv" if wrapped else "classification"
    if wrapped:
        part = {k[len(BACKBONE):]: v for k, v in state_dict.items() if k.startswith(BACKBONE)}
        rest = {k: v for k, v in state_dict.items() if not k.startswith(BACKBONE)}
    else:
        part, rest = dict(state_dict), {}
    source = BACKBONE if wrapped else ""  # how the file names the backbone part: dropped keys keep the file's names
    dropped = {}
    # a model that holds the classifier (ImageClassifier: released_head_prefix "head.") keeps it, others drop it
    head_prefix = getattr(type(model), "released_head_prefix", None) if prefix else None
    if layout == "classification" and head_prefix is None:
        dropped = {k: "ImageNet classifier (not part of a dense model)" for k in part if family.is_classifier(k)}
        part = {k: v for k, v in part.items() if k not in dropped}
    if family is not None and family.convert is not None:
        part, more = family.convert(part, backbone)
        dropped.update({source + k: why for k, why in more.items()})
    if layout == "classification" and head_prefix is not None:
        out = {(head_prefix if family.is_classifier(k) else prefix) + k: v for k, v in part.items()}
    else:
        out = {prefix + k: v for k, v in part.items()}
    model_keys = set(model.state_dict())
    if detectron2:
        num_fpn = len({k.split(".")[3] for k in model_keys
                       if k.startswith("sem_seg_head.pixel_decoder.lateral_convs.")})
    for k, v in rest.items():
        new, why = _detectron2_rest(k, num_fpn) if detectron2 else _mmcv_rest(k, prefix, model_keys)
        if why:
            dropped[k] = why
        else:
            out[new] = v
    name = "Detectron2 Mask2Former" if detectron2 else type(backbone).__name__
    return Conversion(out, dropped, f"{name} ({layout})")


def _mmcv_rest(key: str, prefix: str, model_keys: set) -> tuple[str, str]:
    """(dense key, "") of an mmseg/mmdet head key, or ("", why it is not loaded)."""
    head = next((p for p in MMCV_HEAD_PREFIXES if key.startswith(p)), None)
    if head is None or not prefix:
        return "", "head of the released model with no counterpart in this dense model"
    new = MMCV_HEAD_PREFIXES[head] + key[len(head):]
    if key.startswith("decode_head.conv_seg.") and new not in model_keys:
        return "", ("mmseg BaseDecodeHead's classifier, unused by this head (ViT-Adapter's Mask2Former checkpoints "
                    "saved before its head set conv_seg = None carry it)")
    return new, ""


def _detectron2_rest(key: str, num_fpn: int) -> tuple[str, str]:
    """(dense key, "") of a non-backbone key of a Detectron2 Mask2Former file, or ("", why it is not loaded);
    ``num_fpn``: the FPN levels of the model's pixel decoder."""
    if key == "criterion.empty_weight":
        return "", "loss constant (no-object class weight), recomputed from MODEL.MASK_FORMER.NO_OBJECT_WEIGHT"
    if key.startswith("sem_seg_head."):
        return "sem_seg_head." + detectron2_mask2former_key(key[len("sem_seg_head."):], num_fpn), ""
    return key, ""
