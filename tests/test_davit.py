"""DaViT: golden parity through released-checkpoint loading, parameter counts and FLOPs against the official code and
the paper, official and timm ImageNet files. (The Backbone contract: tests/test_backbone_contract.py.)"""
import json
import os

import pytest
import torch

from dense.config import get_cfg
from dense.modeling import build_backbone

from conftest import REPO
from golden_utils import (assert_matches, load_golden, load_released, model_from_config, released_checkpoint,
                          stand_in_weights)
from shared_data import shared_file

HEAD_CFG = "configs/Base-SemanticFPN.yaml"


def test_davit_tiny_golden(tmp_path):
    g = load_golden("davit_tiny")
    keys = released_checkpoint(g, str(tmp_path / "davit_tiny_det.pth"))
    model = model_from_config(HEAD_CFG, "configs/backbones/davit_tiny.yaml")
    load_released(model, str(tmp_path / "davit_tiny_det.pth"), keys)
    with torch.no_grad():
        out = model.backbone(g["input"])
    assert_matches(out, g)


def _count(config):
    cfg = get_cfg()
    cfg.merge_from_file(os.path.join(REPO, "configs", "backbones", config))
    return sum(p.numel() for p in build_backbone(cfg).parameters())


@pytest.mark.parametrize("variant,expected", [("tiny", 27_592_512), ("small", 48_978_240), ("base", 86_931_200)])
def test_davit_param_counts(variant, expected):
    """Official dense backbones (dingmyu/davit mmdet/mmseg DaViT, incl. norm0..3), as counted from the
    upstream code in shared/golden/keys/davit_keys.json."""
    assert _count(f"davit_{variant}.yaml") == expected


@pytest.mark.parametrize("config,size,paper_gflops,classes", [
    ("davit_tiny.yaml", 224, 4.5, 768), ("davit_small.yaml", 224, 8.8, 768), ("davit_base.yaml", 224, 15.5, 1024)])
def test_davit_flops_match_paper(config, size, paper_gflops, classes):
    """Classification form = this backbone + a 1000-way linear classifier (the dense form's four output
    LayerNorms instead of the single classifier norm change the count by < 0.1%). One multiply-add = one
    flop; grid_sample, softmax and GELU are not counted (as in the papers' fvcore counts)."""
    from dense.utils.analysis import flop_count

    cfg = get_cfg()
    cfg.merge_from_file(os.path.join(REPO, "configs", "backbones", config))
    bb = build_backbone(cfg).eval()
    with torch.no_grad():
        flops, _ = flop_count(bb, (torch.zeros(1, 3, size, size),))
    flops += classes * 1000
    assert abs(flops / 1e9 - paper_gflops) / paper_gflops < 0.03, flops / 1e9


def _classification_checkpoint(table: dict, path, extra: dict):
    sd = stand_in_weights({k: tuple(v) for k, v in table["keys"].items()}, 3)
    sd = {k[len(table.get("prefix", "")):]: v for k, v in sd.items()}
    torch.save({table["wrapper"]: sd, **extra} if table["wrapper"] else sd, path)
    return sd


@pytest.mark.parametrize("layout", ["imagenet", "timm_hub"])
def test_davit_imagenet_checkpoints(tmp_path, layout):
    """Official IN-1K files ({'state_dict'}: patch_embeds, main_blocks, norms, head) and timm hub weights
    (bare: stem, stages, head.norm, head.fc) both load into the dense backbone."""
    from dense.checkpoint import DenseCheckpointer
    from dense.modeling.backbone import DaViT

    table = json.load(open(shared_file("keys", "davit_keys.json")))["tiny"][layout]
    sd = _classification_checkpoint(table, tmp_path / "davit.pth", {"epoch": 300, "arch": "DaViT_224"})
    model = model_from_config(HEAD_CFG, "configs/backbones/davit_tiny.yaml")
    ck = DenseCheckpointer(model)
    ck.load(str(tmp_path / "davit.pth"))
    r = ck.last_report
    assert r.converter == "DaViT (classification)"
    assert not r.unexpected and not r.mismatched
    assert {k.split(".")[0] for k in r.dropped} == ({"head"} if layout == "timm_hub" else {"head", "norms"})
    assert {k for k in r.missing if k.startswith("backbone.")} == {f"backbone.norm{i}.{p}" for i in range(4)
                                                                    for p in ("weight", "bias")}
    src = "stages.2.blocks.1.1.attn.qkv.weight" if layout == "timm_hub" else "main_blocks.2.1.1.attn.qkv.weight"
    assert torch.equal(model.backbone.stages[2].blocks[1][1].attn.qkv.weight, sd[src])
    renamed, _ = DaViT.released.convert({"main_blocks.0.0.0.cpe.1.proj.weight": torch.zeros(1)}, model.backbone)
    assert list(renamed) == ["stages.0.blocks.0.0.cpe2.proj.weight"]
