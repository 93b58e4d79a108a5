"""Per-image container of instance fields (boxes, classes, masks, scores), as in Detectron2."""
from __future__ import annotations

from typing import Any

import torch

__all__ = ["Instances"]


class Instances:
    """A list of N objects in one image, stored as fields of equal length N.

    Conventions used across dense:
        gt_boxes / pred_boxes: float Tensor [N, 4], XYXY in absolute pixels of ``image_size``.
        gt_classes / pred_classes: int64 Tensor [N], contiguous class ids.
        gt_masks / pred_masks: bool (or float probability) Tensor [N, H, W] at ``image_size``.
        scores: float Tensor [N].
    """

    def __init__(self, image_size: tuple[int, int], **fields: Any):
        # ints (SymInts while tracing with dynamic sizes stay symbolic)
        self._image_size = tuple(s if isinstance(s, torch.SymInt) else int(s) for s in image_size[:2])
        self._fields: dict[str, Any] = {}
        for k, v in fields.items():
            self.set(k, v)

    @property
    def image_size(self) -> tuple[int, int]:
        """(height, width)."""
        return self._image_size

    def __setattr__(self, name: str, value: Any) -> None:
        if name.startswith("_"):
            super().__setattr__(name, value)
        else:
            self.set(name, value)

    def __getattr__(self, name: str) -> Any:
        fields = self.__dict__.get("_fields")  # absent while unpickling (data-loader workers send Instances)
        if fields is None or name not in fields:
            raise AttributeError(f"Instances has no field '{name}'; it has {list(fields or [])}")
        return fields[name]

    def set(self, name: str, value: Any) -> None:
        n = _length(value)
        if self._fields:
            m = _length(next(iter(self._fields.values())))
            torch._check(n == m, lambda: f"field '{name}' has length {n}, the others have {m}")
        self._fields[name] = value

    def has(self, name: str) -> bool:
        return name in self._fields

    def remove(self, name: str) -> None:
        del self._fields[name]

    def get(self, name: str) -> Any:
        return self._fields[name]

    def get_fields(self) -> dict[str, Any]:
        return self._fields

    def to(self, *args: Any, **kwargs: Any) -> Instances:
        out = Instances(self._image_size)
        for k, v in self._fields.items():
            out.set(k, v.to(*args, **kwargs) if hasattr(v, "to") else v)
        return out

    def __getitem__(self, item) -> Instances:
        if isinstance(item, int):
            if item >= len(self) or item < -len(self):
                raise IndexError("Instances index out of range")
            item = slice(item, None, len(self))
        out = Instances(self._image_size)
        for k, v in self._fields.items():
            out.set(k, v[item])
        return out

    def __len__(self) -> int:
        for v in self._fields.values():
            return len(v)
        return 0

    @staticmethod
    def cat(instance_lists: list[Instances]) -> Instances:
        assert len(instance_lists) > 0
        image_size = instance_lists[0].image_size
        out = Instances(image_size)
        for k in instance_lists[0]._fields:
            values = [i.get(k) for i in instance_lists]
            out.set(k, torch.cat(values) if isinstance(values[0], torch.Tensor) else sum(values, []))
        return out

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}: {tuple(v.shape) if hasattr(v, 'shape') else len(v)}" for k, v in self._fields.items())
        return f"Instances(num_instances={len(self)}, image_size={self._image_size}, fields=[{fields}])"


def _length(value: Any):
    """len(value); for a tensor its first dimension, which stays symbolic while tracing (len() would make it a
    constant)."""
    return value.shape[0] if isinstance(value, torch.Tensor) else len(value)
