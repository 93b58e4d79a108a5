"""Optimizer parameter groups (weight decay, lr multipliers, layer-wise lr decay) and lr schedules."""
import math
import os

import pytest
import torch
from torch import nn

from dense.config import get_cfg
from dense.config.config import ConfigValueError
from dense.engine.solver import build_lr_scheduler, build_optimizer
from dense.modeling import META_ARCH_REGISTRY

from conftest import REPO


def _lrs(cfg, n):
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=cfg.SOLVER.BASE_LR)
    sched = build_lr_scheduler(cfg, opt)
    out = []
    for _ in range(n):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out


def test_lr_schedules(tiny_cfg):
    s = tiny_cfg.SOLVER
    s.BASE_LR, s.MAX_ITER, s.WARMUP_ITERS, s.WARMUP_FACTOR, s.END_LR = 1.0, 100, 10, 0.1, 0.0
    s.LR_SCHEDULER_NAME, s.POLY_POWER = "poly", 0.9
    lr = _lrs(tiny_cfg, 100)
    # mmseg: warmup multiplies the regular lr by 1 - (1 - i/W)(1 - ratio)
    assert lr[0] == pytest.approx(0.1) and lr[5] == pytest.approx((1 - 0.05) ** 0.9 * (1 - 0.5 * 0.9))
    assert lr[50] == pytest.approx(0.5**0.9) and lr[99] == pytest.approx(0.01**0.9)
    s.LR_SCHEDULER_NAME, s.WARMUP_ITERS = "cosine", 0
    lr = _lrs(tiny_cfg, 100)
    assert lr[25] == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.25)))
    s.LR_SCHEDULER_NAME, s.STEPS, s.GAMMA = "multistep", (60, 90), 0.1
    lr = _lrs(tiny_cfg, 100)
    assert lr[59] == 1.0 and lr[60] == pytest.approx(0.1) and lr[95] == pytest.approx(0.01)


def _meta_model(config, opts=()):
    cfg = get_cfg()
    cfg.merge_from_file(os.path.join(REPO, config))
    cfg.merge_from_list(["MODEL.DEVICE", "cpu", *opts])
    with torch.device("meta"):  # no memory: the meta-architecture built without build_model's move to MODEL.DEVICE
        return META_ARCH_REGISTRY.get(cfg.MODEL.META_ARCHITECTURE).from_config(cfg), cfg


def test_layer_decay_follows_the_vit_adapter_rule():
    """ViT-Adapter's LayerDecayOptimizerConstructor: lr x rate^(L + 1 - layer) with L = the ViT's blocks (12 here,
    from MODEL.VIT_ADAPTER.DEPTH), embeddings layer 0, blocks.i layer i + 1, the adapter and the heads layer L + 1;
    1-D parameters and biases get no weight decay."""
    model, cfg = _meta_model("configs/ade20k/upernet/vit_adapter_tiny_deit_512_160k.yaml")
    base, rate = cfg.SOLVER.BASE_LR, cfg.SOLVER.LAYER_DECAY.RATE
    assert cfg.SOLVER.LAYER_DECAY.ENABLED and rate == 0.95
    groups = build_optimizer(cfg, model).param_groups
    group_of = {id(p): g for g in groups for p in g["params"]}
    expected = {  # name: (layer, weight decay); pos_embed is in SOLVER.NO_WEIGHT_DECAY_KEYS
        "backbone.pos_embed": (0, 0.0), "backbone.patch_embed.proj.weight": (0, 0.01),
        "backbone.blocks.0.attn.qkv.weight": (1, 0.01), "backbone.blocks.11.mlp.fc2.bias": (12, 0.0),
        "backbone.blocks.11.norm2.weight": (12, 0.0), "backbone.spm.stem.0.weight": (13, 0.01),
        "backbone.interactions.3.injector.gamma": (13, 0.0), "sem_seg_head.conv_seg.weight": (13, 0.01)}
    params = dict(model.named_parameters())
    for name, (layer, wd) in expected.items():
        g = group_of[id(params[name])]
        assert g["lr"] == pytest.approx(base * rate ** (12 + 1 - layer)) and g["weight_decay"] == wd, name
    deeper, _ = _meta_model("configs/ade20k/upernet/vit_adapter_tiny_deit_512_160k.yaml",
                            ["MODEL.VIT_ADAPTER.DEPTH", 24, "MODEL.VIT_ADAPTER.INTERACTION_INDEXES",
                             [[0, 5], [6, 11], [12, 17], [18, 23]]])
    lr = {g["lr"] for g in build_optimizer(cfg, deeper).param_groups}
    assert max(lr) == pytest.approx(base) and min(lr) == pytest.approx(base * rate**25)  # L = 24 blocks


def test_layer_decay_needs_a_backbone_layer_rule():
    model, cfg = _meta_model("configs/ade20k/upernet/dat_pp_tiny_160k.yaml")
    cfg.SOLVER.LAYER_DECAY.ENABLED = True
    with pytest.raises(ConfigValueError, match="SOLVER.LAYER_DECAY.ENABLED = True: the backbone DAT has no layer rule"):
        build_optimizer(cfg, model)


def test_epoch_schedule_with_warmup_and_cooldown(tiny_cfg):
    """SOLVER.EPOCHS: MAX_ITER = epochs x images // batch; warmup and cosine decay in epochs, then END_LR for the
    cooldown epochs (timm's 300 + 10 recipes)."""
    from dense.engine.solver import resolve_epochs

    s = tiny_cfg.SOLVER
    s.BASE_LR, s.END_LR, s.IMS_PER_BATCH, s.LR_SCHEDULER_NAME = 1.0, 0.01, 10, "cosine"
    s.EPOCHS, s.WARMUP_EPOCHS, s.COOLDOWN_EPOCHS, s.WARMUP_FACTOR = 10, 2.0, 2, 0.0
    cfg = resolve_epochs(tiny_cfg, 105)  # 10 iterations per epoch (the last 5 images dropped)
    assert cfg.SOLVER.MAX_ITER == 100 and tiny_cfg.SOLVER.MAX_ITER != 100
    lr = _lrs(cfg, 100)
    assert lr[0] == 0 and lr[10] == pytest.approx(0.5 * (0.01 + 0.5 * 0.99 * (1 + math.cos(math.pi * 10 / 80))))
    assert lr[40] == pytest.approx(0.01 + 0.5 * 0.99 * (1 + math.cos(math.pi * 40 / 80)))
    assert lr[80:] == pytest.approx([0.01] * 20)
    with pytest.raises(ConfigValueError, match="SOLVER.IMS_PER_BATCH = 10.*9 training images"):
        resolve_epochs(tiny_cfg, 9)


def test_no_weight_decay_on_1d_parameters():
    """SOLVER.NO_WEIGHT_DECAY_1D: norms, biases and other 1-D parameters (layer scales) without decay, as timm's
    and Swin's ImageNet optimizers; matrices and convolutions keep it."""
    from dense.engine.solver import get_param_groups

    model = nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4))
    model.register_parameter("layer_scale", nn.Parameter(torch.ones(4)))
    groups = get_param_groups(model, 1.0, 0.05, 0.05, no_decay_1d=True)
    decay = {id(p): g["weight_decay"] for g in groups for p in g["params"]}
    assert decay[id(model[0].weight)] == 0.05
    assert decay[id(model[0].bias)] == decay[id(model[1].weight)] == decay[id(model.layer_scale)] == 0.0
