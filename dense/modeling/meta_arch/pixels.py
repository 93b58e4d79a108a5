"""What every meta-architecture does to its input pixels."""
from __future__ import annotations

import torch
from torch import nn

__all__ = ["PixelNormalizer"]


class PixelNormalizer(nn.Module):
    """Base of the meta-architectures: MODEL.PIXEL_MEAN / PIXEL_STD as non-persistent buffers (they follow the
    model's device, and are not saved in checkpoints), ``device``, and ``normalize``."""

    def __init__(self, pixel_mean: list[float], pixel_std: list[float]):
        super().__init__()
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean).view(-1, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std).view(-1, 1, 1), persistent=False)

    @property
    def device(self) -> torch.device:
        return self.pixel_mean.device

    def normalize(self, image: torch.Tensor) -> torch.Tensor:
        """uint8 or float [3, H, W] (or [N, 3, H, W]) -> float, (image - mean) / std, on the model's device."""
        return (image.to(self.device).float() - self.pixel_mean) / self.pixel_std
