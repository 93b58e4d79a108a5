"""LightHamHead (SegNeXt / Enjoy-Hamburger, Geng et al. 2021) as DSAN's segmentation configs use it: the
multi-level features are fused and passed through a "Hamburger" whose core is non-negative matrix
factorisation (NMF) solved by a few multiplicative-update steps from random bases."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..backbone.backbone import ShapeSpec
from ..layers import ConvNormAct, resize
from .build import SEM_SEG_HEAD_REGISTRY, DecodeHead, head_config

__all__ = ["LightHamHead", "NMF2D", "Hamburger"]


class NMF2D(nn.Module):
    """NMF of the map viewed as [D = C, N = H*W] into bases [D, R] x coefficients [N, R].

    Bases start random (uniform, L2-normalised over D) at every forward, as upstream. In training they come
    from torch's global RNG (seeded per step by the trainer, so runs resume exactly); at eval, with
    ``eval_seed >= 0`` they are the first numbers of a CPU generator seeded with it (drawn once, kept as the
    ``eval_bases`` buffer: evaluation is deterministic, the same on every device, and traces as one graph);
    ``eval_seed < 0``: fresh random bases each call, upstream's behaviour.
    """

    def __init__(self, dim: int, rank: int = 64, train_steps: int = 6, eval_steps: int = 7, eval_seed: int = 0):
        super().__init__()
        self.rank, self.train_steps, self.eval_steps, self.eval_seed = rank, train_steps, eval_steps, eval_seed
        self.register_buffer("eval_bases", self._seeded_bases(1, dim), persistent=False)
        self._bases_seed = max(eval_seed, 0)

    def _seeded_bases(self, batch: int, dim: int) -> torch.Tensor:
        """[batch, dim, rank]: the first numbers of a CPU generator seeded with ``eval_seed`` (max(seed, 0))."""
        g = torch.Generator().manual_seed(max(self.eval_seed, 0))
        return torch.rand(batch, dim, self.rank, generator=g)

    def _bases(self, batch: int, dim: int, like: torch.Tensor) -> torch.Tensor:
        if not self.training and self.eval_seed >= 0:
            cached = self.eval_bases
            if batch > cached.shape[0] or dim != cached.shape[1] or self._bases_seed != self.eval_seed:
                self.eval_bases = self._seeded_bases(batch, dim).to(cached.device)  # rand(b)[:a] == rand(a)
                self._bases_seed = self.eval_seed
            bases = self.eval_bases[:batch].to(like.dtype)
        else:
            bases = torch.rand(batch, dim, self.rank, device=like.device, dtype=like.dtype)
        return F.normalize(bases, dim=1)

    @staticmethod
    def _update_coef(x: torch.Tensor, bases: torch.Tensor, coef: torch.Tensor) -> torch.Tensor:
        return coef * torch.bmm(x.transpose(1, 2), bases) / (coef.bmm(bases.transpose(1, 2).bmm(bases)) + 1e-6)

    @staticmethod
    def _update_bases(x: torch.Tensor, bases: torch.Tensor, coef: torch.Tensor) -> torch.Tensor:
        return bases * torch.bmm(x, coef) / (bases.bmm(coef.transpose(1, 2).bmm(coef)) + 1e-6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        flat = x.reshape(b, c, h * w)  # [B, D, N]
        bases = self._bases(b, c, x)
        coef = F.softmax(torch.bmm(flat.transpose(1, 2), bases), dim=-1)  # [B, N, R], inv_t = 1
        # gradients flow through every update step, as in DSAN's (and SegNeXt's) copy of the head
        for _ in range(self.train_steps if self.training else self.eval_steps):
            coef = self._update_coef(flat, bases, coef)
            bases = self._update_bases(flat, bases, coef)
        coef = self._update_coef(flat, bases, coef)
        return torch.bmm(bases, coef.transpose(1, 2)).reshape(b, c, h, w)


class Hamburger(nn.Module):
    """relu(x + ham_out(NMF(relu(ham_in(x))))); ham_in is a 1x1 conv with bias, ham_out a 1x1 conv + norm."""

    def __init__(self, channels: int, norm: str, nmf: NMF2D):
        super().__init__()
        self.ham_in = ConvNormAct(channels, channels, 1, norm="", activation=False)
        self.ham = nmf
        self.ham_out = ConvNormAct(channels, channels, 1, norm=norm, activation=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(x + self.ham_out(self.ham(F.relu(self.ham_in(x)))))


@SEM_SEG_HEAD_REGISTRY.register()
class LightHamHead(DecodeHead):
    """Levels ``in_features`` (DSAN: res3..res5) resized to the first one's size and concatenated ->
    ``squeeze`` 1x1 ConvNormAct -> Hamburger -> ``align`` 1x1 ConvNormAct -> dropout -> conv_seg.
    Norm GN(32) in the papers' configs. Logits at the first level's stride."""

    def __init__(self, input_shape: dict[str, ShapeSpec], in_features: list[str], channels: int, num_classes: int,
                 ham_channels: int = 512, norm: str = "GN", nmf: dict | None = None, **kwargs):
        super().__init__(in_features, channels, num_classes, **kwargs)
        self.common_stride = input_shape[in_features[0]].stride
        self.squeeze = ConvNormAct(sum(input_shape[f].channels for f in in_features), ham_channels, 1, norm=norm)
        self.hamburger = Hamburger(ham_channels, norm, NMF2D(ham_channels, **(nmf or {})))
        self.align = ConvNormAct(ham_channels, channels, 1, norm=norm)

    @classmethod
    def from_config(cls, cfg, input_shape: dict[str, ShapeSpec], node=None) -> LightHamHead:
        node = node or cfg.MODEL.SEM_SEG_HEAD
        h = cfg.MODEL.SEM_SEG_HEAD.HAM
        nmf = dict(rank=h.RANK, train_steps=h.TRAIN_STEPS, eval_steps=h.EVAL_STEPS, eval_seed=h.EVAL_SEED)
        return cls(input_shape, ham_channels=h.CHANNELS, nmf=nmf, **head_config(cfg, node))

    def layers(self, features: list[torch.Tensor]) -> torch.Tensor:
        size = features[0].shape[-2:]
        x = torch.cat([resize(f, size, "bilinear", self.align_corners) for f in features], dim=1)
        return self.align(self.hamburger(self.squeeze(x)))
