"""Optimizer and learning-rate schedule from the config.

Schedules are fvcore ParamSchedulers of the training progress ``where = iter / MAX_ITER`` in [0, 1),
applied as multipliers of each parameter group's base lr by :class:`LRMultiplier`.
"""
from __future__ import annotations


import torch
from fvcore.common.param_scheduler import CosineParamScheduler, MultiStepParamScheduler, ParamScheduler
from torch import nn

from ..config.config import ConfigValueError
from ..utils.comm import unwrap_model

__all__ = ["build_optimizer", "build_lr_scheduler", "get_param_groups", "resolve_epochs", "PolyParamScheduler",
           "WarmupParamScheduler", "LRMultiplier"]

_NORM_TYPES = (nn.modules.batchnorm._BatchNorm, nn.GroupNorm, nn.LayerNorm, nn.LocalResponseNorm,
               nn.modules.instancenorm._InstanceNorm)


def get_param_groups(model: nn.Module, base_lr: float, weight_decay: float, weight_decay_norm: float,
                     no_decay_keys: tuple[str, ...] = (), weight_decay_bias: float | None = None,
                     backbone_multiplier: float = 1.0, head_multiplier: float = 1.0,
                     layer_decay: float | None = None, no_decay_1d: bool = False) -> list[dict]:
    """Parameter groups of (lr, weight decay), in a deterministic order.

    Weight decay: norm-layer parameters get ``weight_decay_norm``; names containing one of ``no_decay_keys``
    get 0; biases ``weight_decay_bias`` (None = ``weight_decay``); the rest ``weight_decay``; with ``no_decay_1d``
    every 1-D parameter (norms, biases, layer scales) gets 0 (timm's and Swin's ImageNet recipes). With a
    ``layer_decay`` rate (ViT-Adapter), lr is scaled by rate^(L + 1 - layer) by the backbone's layer rule (its
    ``lr_layer_id`` and ``num_lr_layers`` = L; parameters outside the backbone are layer L + 1) and every 1-D
    parameter and bias gets no weight decay, as upstream. lr is also scaled by ``backbone_multiplier`` for
    ``backbone.*`` and ``head_multiplier`` for names containing "head" (mmseg's custom key).
    """
    layer_of = _layer_rule(model) if layer_decay is not None else None
    groups: dict[tuple[float, float], list[nn.Parameter]] = {}
    seen: set[int] = set()
    for module_name, module in model.named_modules():
        for name, p in module.named_parameters(recurse=False):
            if not p.requires_grad or id(p) in seen:
                continue
            seen.add(id(p))
            full = f"{module_name}.{name}" if module_name else name
            if isinstance(module, _NORM_TYPES):
                wd = weight_decay_norm
            elif any(k in full for k in no_decay_keys):
                wd = 0.0
            elif name == "bias" and weight_decay_bias is not None:
                wd = weight_decay_bias
            else:
                wd = weight_decay
            if no_decay_1d and p.ndim <= 1:
                wd = 0.0
            scale = 1.0
            if full.startswith("backbone."):
                scale *= backbone_multiplier
            if "head" in full:
                scale *= head_multiplier
            if layer_of is not None:
                layer, num_layers = layer_of(full)
                scale *= layer_decay ** (num_layers + 1 - layer)
                if p.ndim == 1 or name == "bias":
                    wd = 0.0
            groups.setdefault((scale, wd), []).append(p)
    return [{"params": ps, "lr": base_lr * scale, "weight_decay": wd} for (scale, wd), ps in groups.items()]


def _layer_rule(model: nn.Module):
    """``full parameter name -> (layer, L)`` by the backbone's layer rule (``lr_layer_id``, ``num_lr_layers`` = L);
    parameters outside the backbone are layer L + 1."""
    model = unwrap_model(model)
    backbone = getattr(model, "backbone", None)
    if not hasattr(backbone, "lr_layer_id"):
        raise ConfigValueError(f"SOLVER.LAYER_DECAY.ENABLED = True: the backbone {type(backbone).__name__} has no "
                               f"layer rule for layer-wise lr decay (ViTAdapter has one); "
                               f"set SOLVER.LAYER_DECAY.ENABLED False")
    num_layers = backbone.num_lr_layers

    def layer_of(name: str) -> tuple[int, int]:
        inside = name.startswith("backbone.")
        return (backbone.lr_layer_id(name[len("backbone."):]) if inside else num_layers + 1), num_layers

    return layer_of


def build_optimizer(cfg, model: nn.Module) -> torch.optim.Optimizer:
    s = cfg.SOLVER
    groups = get_param_groups(
        model, s.BASE_LR, s.WEIGHT_DECAY, s.WEIGHT_DECAY_NORM, tuple(s.NO_WEIGHT_DECAY_KEYS),
        weight_decay_bias=None if s.WEIGHT_DECAY_BIAS < 0 else s.WEIGHT_DECAY_BIAS,
        backbone_multiplier=s.BACKBONE_MULTIPLIER, head_multiplier=s.HEAD_LR_MULTIPLIER,
        layer_decay=s.LAYER_DECAY.RATE if s.LAYER_DECAY.ENABLED else None, no_decay_1d=s.NO_WEIGHT_DECAY_1D)
    if s.OPTIMIZER == "AdamW":
        return torch.optim.AdamW(groups, lr=s.BASE_LR, betas=tuple(s.BETAS), weight_decay=s.WEIGHT_DECAY)
    if s.OPTIMIZER == "SGD":
        return torch.optim.SGD(groups, lr=s.BASE_LR, momentum=s.MOMENTUM, nesterov=s.NESTEROV,
                               weight_decay=s.WEIGHT_DECAY)
    raise ValueError(f"SOLVER.OPTIMIZER must be 'AdamW' or 'SGD', got '{s.OPTIMIZER}'")


class PolyParamScheduler(ParamScheduler):
    """mmseg's poly decay: (start - end) * (1 - where)^power + end."""

    def __init__(self, start_value: float, end_value: float, power: float):
        self.start_value, self.end_value, self.power = start_value, end_value, power

    def __call__(self, where: float) -> float:
        return (self.start_value - self.end_value) * (1.0 - where) ** self.power + self.end_value


class WarmupParamScheduler(ParamScheduler):
    """``scheduler`` times a warmup factor during the first ``warmup_length`` of training (mmseg/mmdet
    semantics): linear from ``warmup_factor`` to 1, or constant ``warmup_factor``."""

    def __init__(self, scheduler: ParamScheduler, warmup_factor: float, warmup_length: float, method: str = "linear"):
        if method not in ("linear", "constant"):
            raise ValueError(f"SOLVER.WARMUP_METHOD must be 'linear' or 'constant', got '{method}'")
        self.scheduler, self.factor, self.length, self.method = scheduler, warmup_factor, warmup_length, method

    def __call__(self, where: float) -> float:
        value = self.scheduler(where)
        if where >= self.length:
            return value
        if self.method == "constant":
            return value * self.factor
        return value * (1.0 - (1.0 - where / self.length) * (1.0 - self.factor))


class LRMultiplier(torch.optim.lr_scheduler.LRScheduler):
    """lr of group g at iteration i = base_lr_g * multiplier(i / max_iter). Stepped once per iteration."""

    def __init__(self, optimizer: torch.optim.Optimizer, multiplier: ParamScheduler, max_iter: int,
                 last_iter: int = -1):
        self._multiplier, self._max_iter = multiplier, max_iter
        super().__init__(optimizer, last_epoch=last_iter)

    def state_dict(self) -> dict:
        return {"base_lrs": self.base_lrs, "last_epoch": self.last_epoch}

    def get_lr(self) -> list[float]:
        m = self._multiplier(min(self.last_epoch / self._max_iter, 1.0))
        return [base * m for base in self.base_lrs]


def resolve_epochs(cfg, num_images: int):
    """``cfg`` with SOLVER.MAX_ITER = SOLVER.EPOCHS epochs of ``num_images`` training images (incomplete last
    batches dropped), when EPOCHS > 0; else ``cfg`` itself."""
    s = cfg.SOLVER
    if s.EPOCHS <= 0:
        return cfg
    per_epoch = num_images // s.IMS_PER_BATCH
    if per_epoch == 0:
        raise ConfigValueError(f"SOLVER.IMS_PER_BATCH = {s.IMS_PER_BATCH}: larger than the {num_images} training "
                               f"images of {list(cfg.DATASETS.TRAIN)}, so an epoch has no iteration")
    cfg = cfg.clone()
    cfg.defrost()
    cfg.SOLVER.MAX_ITER = s.EPOCHS * per_epoch
    cfg.freeze()
    return cfg


def build_lr_scheduler(cfg, optimizer: torch.optim.Optimizer) -> LRMultiplier:
    """The lr multiplier of SOLVER over MAX_ITER iterations. With SOLVER.EPOCHS, the warmup lasts WARMUP_EPOCHS and
    the decay ends COOLDOWN_EPOCHS before the end (then END_LR), as fractions of the EPOCHS."""
    s = cfg.SOLVER
    end = s.END_LR / s.BASE_LR if s.BASE_LR > 0 else 0.0
    if s.LR_SCHEDULER_NAME == "poly":
        sched: ParamScheduler = PolyParamScheduler(1.0, end, s.POLY_POWER)
    elif s.LR_SCHEDULER_NAME == "cosine":
        sched = CosineParamScheduler(1.0, end)
    elif s.LR_SCHEDULER_NAME == "multistep":
        steps = [x for x in s.STEPS if x <= s.MAX_ITER]
        sched = MultiStepParamScheduler([s.GAMMA**k for k in range(len(steps) + 1)], milestones=steps,
                                        num_updates=s.MAX_ITER)
    else:
        raise ValueError(f"SOLVER.LR_SCHEDULER_NAME must be 'poly', 'cosine' or 'multistep', "
                         f"got '{s.LR_SCHEDULER_NAME}'")
    warmup = s.WARMUP_ITERS / s.MAX_ITER
    if s.EPOCHS > 0:
        if s.COOLDOWN_EPOCHS >= s.EPOCHS:
            raise ConfigValueError(f"SOLVER.COOLDOWN_EPOCHS = {s.COOLDOWN_EPOCHS}: must be below SOLVER.EPOCHS")
        sched = CooldownParamScheduler(sched, 1.0 - s.COOLDOWN_EPOCHS / s.EPOCHS)
        warmup = s.WARMUP_EPOCHS / s.EPOCHS
    if warmup > 0:
        sched = WarmupParamScheduler(sched, s.WARMUP_FACTOR, min(warmup, 1.0), s.WARMUP_METHOD)
    return LRMultiplier(optimizer, sched, s.MAX_ITER)


class CooldownParamScheduler(ParamScheduler):
    """``scheduler`` compressed into the first ``decay_length`` of training, then held at its final value (timm's
    cooldown epochs)."""

    def __init__(self, scheduler: ParamScheduler, decay_length: float):
        self.scheduler, self.length = scheduler, decay_length

    def __call__(self, where: float) -> float:
        return self.scheduler(min(where / self.length, 1.0))
