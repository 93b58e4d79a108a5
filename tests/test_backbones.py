"""DAT++ and DaViT: golden parity through released-checkpoint loading, parameter counts, FLOPs, any input size."""
import json
import os

import pytest
import torch

import dense.ops as ops
from dense.config import get_cfg
from dense.modeling import build_backbone

from conftest import REPO
from golden_utils import assert_matches, load_golden, load_released, model_from_config, released_checkpoint
from shared_data import shared_file
HEAD_CFG = "configs/Base-SemanticFPN.yaml"


def _backends(op):
    return [b for b in ops.available_backends("cpu", op)]


@pytest.mark.parametrize("backend", _backends("na2d_qk"))
def test_dat_pp_tiny_golden(tmp_path, backend):
    g = load_golden("dat_pp_tiny")
    keys = released_checkpoint(g, str(tmp_path / "dat_pp_tiny_seg.pth"))
    model = model_from_config(HEAD_CFG, "configs/backbones/dat_pp_tiny.yaml")
    load_released(model, str(tmp_path / "dat_pp_tiny_seg.pth"), keys)
    with torch.no_grad(), ops.use_backend(backend):
        out = model.backbone(g["input"])
    assert_matches(out, g)


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


@pytest.mark.parametrize("variant,expected", [("tiny", 23_450_772), ("small", 52_359_710), ("base", 92_667_432)])
def test_dat_pp_param_counts(variant, expected):
    """The upstream dense backbones (LeapLabTHU/DAT-Segmentation DAT, incl. norms.0-3), as counted from the
    upstream constructors in shared/golden/keys/dat_keys.json."""
    assert _count(f"dat_pp_{variant}.yaml") == expected


@pytest.mark.parametrize("variant,expected", [("tiny", 27_592_512), ("small", 48_978_240), ("base", 86_931_200)])
def test_davit_param_counts(variant, expected):
    """Official dense backbones (dingmyu/davit mmdet/mmseg DaViT, incl. norm0..3), as counted from the
    upstream code in shared/golden/keys/davit_keys.json."""
    assert _count(f"davit_{variant}.yaml") == expected


@pytest.mark.parametrize("config,channels", [("dat_pp_tiny.yaml", [64, 128, 256, 512]),
                                             ("davit_tiny.yaml", [96, 192, 384, 768])])
def test_any_input_size(config, channels):
    cfg = get_cfg()
    cfg.merge_from_file(os.path.join(REPO, "configs", "backbones", config))
    bb = build_backbone(cfg).eval()
    for h, w in [(517, 683), (40, 33), (20, 25)]:
        with torch.no_grad():
            out = bb(torch.randn(1, 3, h, w))
        for (name, t), c, s in zip(out.items(), channels, [4, 8, 16, 32]):
            assert t.shape == (1, c, -(-h // s), -(-w // s)), (config, h, w, name, tuple(t.shape))
            assert torch.isfinite(t).all()


@pytest.mark.parametrize("config,size,paper_gflops,classes", [
    ("dat_pp_tiny.yaml", 224, 4.3, 512), ("dat_pp_small.yaml", 224, 9.4, 768), ("dat_pp_base.yaml", 224, 16.6, 1024),
    ("dat_pp_base.yaml", 384, 49.7, 1024), ("davit_tiny.yaml", 224, 4.5, 768), ("davit_small.yaml", 224, 8.8, 768),
    ("davit_base.yaml", 224, 15.5, 1024)])
def test_flops_match_papers(config, size, paper_gflops, classes):
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
    from golden_utils import stand_in_weights

    sd = stand_in_weights({k: tuple(v) for k, v in table["keys"].items()}, 3)
    sd = {k[len(table.get("prefix", "")):]: v for k, v in sd.items()}
    torch.save({table["wrapper"]: sd, **extra} if table["wrapper"] else sd, path)
    return sd


def test_dat_classification_checkpoint_loads_backbone_and_drops_classifier(tmp_path):
    """LeapLabTHU/DAT ImageNet files: {'model', 'optimizer', 'epoch', 'config': yacs CfgNode, ...}."""
    from yacs.config import CfgNode

    from dense.checkpoint import DenseCheckpointer

    table = json.load(open(shared_file("keys", "dat_keys.json")))["dat_pp_tiny"]["classification"]
    sd = _classification_checkpoint(table, tmp_path / "dat_pp_tiny_in1k_224.pth",
                                    {"config": CfgNode({"MODEL": CfgNode({"TYPE": "dat"})}), "epoch": 299,
                                     "max_accuracy": 83.9, "optimizer": {}, "lr_scheduler": {}})
    model = model_from_config(HEAD_CFG, "configs/backbones/dat_pp_tiny.yaml")
    ck = DenseCheckpointer(model)
    ck.load(str(tmp_path / "dat_pp_tiny_in1k_224.pth"))
    r = ck.last_report
    assert r.converter == "DATCheckpoint (classification)"
    assert set(r.dropped) == {"cls_head.weight", "cls_head.bias", "cls_norm.norm.weight", "cls_norm.norm.bias"}
    assert not r.unexpected and not r.mismatched
    assert {k for k in r.missing if k.startswith("backbone.")} == {f"backbone.norms.{i}.norm.{p}" for i in range(4)
                                                                    for p in ("weight", "bias")}
    assert torch.equal(model.backbone.stages[2].attns[3].rpe_table, sd["stages.2.attns.3.rpe_table"])


@pytest.mark.parametrize("layout", ["imagenet", "timm_hub"])
def test_davit_imagenet_checkpoints(tmp_path, layout):
    """Official IN-1K files ({'state_dict'}: patch_embeds, main_blocks, norms, head) and timm hub weights
    (bare: stem, stages, head.norm, head.fc) both load into the dense backbone."""
    from dense.checkpoint import DenseCheckpointer
    from dense.checkpoint.official import DaViTCheckpoint

    table = json.load(open(shared_file("keys", "davit_keys.json")))["tiny"][layout]
    sd = _classification_checkpoint(table, tmp_path / "davit.pth", {"epoch": 300, "arch": "DaViT_224"})
    model = model_from_config(HEAD_CFG, "configs/backbones/davit_tiny.yaml")
    ck = DenseCheckpointer(model)
    ck.load(str(tmp_path / "davit.pth"))
    r = ck.last_report
    assert r.converter == "DaViTCheckpoint (classification)"
    assert not r.unexpected and not r.mismatched
    assert {k.split(".")[0] for k in r.dropped} == ({"head"} if layout == "timm_hub" else {"head", "norms"})
    assert {k for k in r.missing if k.startswith("backbone.")} == {f"backbone.norm{i}.{p}" for i in range(4)
                                                                    for p in ("weight", "bias")}
    src = "stages.2.blocks.1.1.attn.qkv.weight" if layout == "timm_hub" else "main_blocks.2.1.1.attn.qkv.weight"
    assert torch.equal(model.backbone.stages[2].blocks[1][1].attn.qkv.weight, sd[src])
    assert DaViTCheckpoint().rename("main_blocks.0.0.0.cpe.1.proj.weight") == "stages.0.blocks.0.0.cpe2.proj.weight"
