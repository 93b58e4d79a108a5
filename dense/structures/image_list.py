"""A batch of images of different sizes, padded into one tensor."""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

__all__ = ["ImageList"]


class ImageList:
    """Images of possibly different sizes stored as one padded tensor.

    Attributes:
        tensor: [N, C, Hp, Wp], padded at the bottom/right.
        image_sizes: the (h, w) of each image before padding.
    """

    def __init__(self, tensor: torch.Tensor, image_sizes: list[tuple[int, int]]):
        self.tensor = tensor
        self.image_sizes = image_sizes

    def __len__(self) -> int:
        return len(self.image_sizes)

    def __getitem__(self, idx: int) -> torch.Tensor:
        """The idx-th image without its padding, [C, h, w]."""
        h, w = self.image_sizes[idx]
        return self.tensor[idx, ..., :h, :w]

    def to(self, *args, **kwargs) -> ImageList:
        return ImageList(self.tensor.to(*args, **kwargs), self.image_sizes)

    @property
    def device(self) -> torch.device:
        return self.tensor.device

    @staticmethod
    def from_tensors(
        tensors: Sequence[torch.Tensor], size_divisibility: int = 0, pad_value: float = 0.0,
        min_size: tuple[int, int] | None = None,
    ) -> ImageList:
        """Pad ``tensors`` ([..., h_i, w_i] each) to a common size that is a multiple of ``size_divisibility``
        and at least ``min_size`` (h, w), and stack them."""
        assert len(tensors) > 0, "ImageList.from_tensors needs at least one tensor"
        sizes = [(t.shape[-2], t.shape[-1]) for t in tensors]  # ints (symbolic under torch.export: kept so)
        max_h = max(s[0] for s in sizes)
        max_w = max(s[1] for s in sizes)
        if min_size is not None:
            max_h, max_w = max(max_h, min_size[0]), max(max_w, min_size[1])
        if size_divisibility > 1:  # integer ceiling: no float round trip
            max_h = -(-max_h // size_divisibility) * size_divisibility
            max_w = -(-max_w // size_divisibility) * size_divisibility
        batch = [F.pad(t, (0, max_w - s[1], 0, max_h - s[0]), value=pad_value) for t, s in zip(tensors, sizes)]
        return ImageList(torch.stack(batch).contiguous(), sizes)
