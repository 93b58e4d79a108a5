"""Adding a backbone is one model file (code, config node, checkpoint rules) plus its YAML: the toy family of
tests/toy/ (written as a user would) gets the config, the registry build, the contract, released-checkpoint
loading, config-worded errors, training and, where Detectron2 is installed, Detectron2's registry, with no other
change to dense."""
import importlib
import os
import sys

import pytest
import torch

from dense.checkpoint import DenseCheckpointer
from dense.config import get_cfg
from dense.config.config import ConfigValueError
from dense.modeling import BACKBONE_REGISTRY, build_backbone, build_model

from backbone_contract import check_backbone_contract
from conftest import REPO

TOY = os.path.join(REPO, "tests", "toy")


@pytest.fixture
def toy():
    """tests/toy/toy_backbone.py imported (so registered) for one test, then taken out of dense again."""
    sys.path.insert(0, TOY)
    try:
        yield importlib.import_module("toy_backbone")
    finally:
        BACKBONE_REGISTRY._obj_map.pop("Toy", None)
        sys.modules.pop("toy_backbone", None)
        sys.path.remove(TOY)


def _cfg(*files, opts=()):
    cfg = get_cfg()
    for f in files:
        cfg.merge_from_file(os.path.join(REPO, f))
    cfg.merge_from_list(["MODEL.DEVICE", "cpu", *opts])
    return cfg


SEMANTIC = ("configs/Base-SemanticFPN.yaml", "configs/synthetic/Base-Synthetic-SemSeg.yaml", "tests/toy/toy.yaml")


def test_config_node_comes_with_the_family(toy):
    assert get_cfg().MODEL.TOY.WIDTHS == [8, 16, 24, 32]
    assert _cfg("tests/toy/toy.yaml").MODEL.TOY.STEM_WIDTH == 6
    BACKBONE_REGISTRY._obj_map.pop("Toy")
    assert "TOY" not in get_cfg().MODEL  # the node is the family's, not dense's


def test_registry_build_and_contract(toy):
    cfg = _cfg("tests/toy/toy.yaml")
    assert type(build_backbone(cfg)) is toy.Toy
    check_backbone_contract(cfg)
    cfg.MODEL.TOY.WIDTHS = [8, 16]
    with pytest.raises(ConfigValueError, match=r"^MODEL.TOY.WIDTHS = \[8, 16\]: needs one width per level"):
        build_backbone(cfg)


def _upstream_backbone(model) -> dict:
    """The model's backbone weights under the pretend upstream's names, with distinct values."""
    g = torch.Generator().manual_seed(0)
    out = {}
    for k, v in model.backbone.state_dict().items():
        k = k.replace("stem.0.", "patch_embed.proj1.").replace("stem.2.", "patch_embed.proj2.")
        out[k.replace("stages.", "layers.")] = torch.randn(v.shape, generator=g)
    return out


def test_released_files_load(toy, tmp_path):
    """An ImageNet file (upstream names + classifier) fills the backbone and drops the classifier; an mmseg file
    (backbone.* + neck.* + decode_head.*) fills the whole model."""
    model = build_model(_cfg(*SEMANTIC))
    upstream = _upstream_backbone(model)
    classifier = {"norm.weight": torch.ones(32), "norm.bias": torch.zeros(32), "head.weight": torch.zeros(1000, 32),
                  "head.bias": torch.zeros(1000)}
    torch.save({"model": {**upstream, **classifier}, "epoch": 300}, tmp_path / "toy_in1k.pth")
    checkpointer = DenseCheckpointer(model)
    checkpointer.load(str(tmp_path / "toy_in1k.pth"))
    r = checkpointer.last_report
    assert r.converter == "Toy (classification)" and set(r.dropped) == set(classifier)
    assert not r.unexpected and not r.mismatched and not [k for k in r.missing if k.startswith("backbone.")]
    assert torch.equal(model.backbone.stages[1][0].weight, upstream["layers.1.0.weight"])
    assert torch.equal(model.backbone.stem[2].bias, upstream["patch_embed.proj2.bias"])

    other = build_model(_cfg(*SEMANTIC))
    heads = {k.replace("sem_seg_head.", "decode_head."): v + 1 for k, v in other.state_dict().items()
             if not k.startswith("backbone.")}
    torch.save({"state_dict": {**{"backbone." + k: v for k, v in upstream.items()}, **heads}, "meta": {}},
               tmp_path / "toy_mmseg.pth")
    checkpointer = DenseCheckpointer(other)
    checkpointer.load(str(tmp_path / "toy_mmseg.pth"))
    r = checkpointer.last_report
    assert r.converter == "Toy (mmcv)" and not r.dropped and not r.unexpected and not r.mismatched
    assert not [k for k in r.missing if not k.endswith("num_batches_tracked")]
    assert torch.equal(other.backbone.stages[2][0].weight, upstream["layers.2.0.weight"])
    assert torch.equal(other.sem_seg_head.conv_seg.weight, heads["decode_head.conv_seg.weight"])


def test_trains_a_step(toy, synthetic_root):
    from dense.data import DatasetCatalog
    from dense.data.mappers import build_mapper

    cfg = _cfg(*SEMANTIC, opts=["INPUT.CROP.SIZE", (64, 64), "MODEL.SEM_SEG_HEAD.NUM_CLASSES", 6])
    model = build_model(cfg).train()
    mapper = build_mapper(cfg, True)
    batch = [mapper(r) for r in DatasetCatalog.get("synthetic_sem_seg_train")[:2]]
    losses = model(batch)
    sum(losses.values()).backward()
    assert all(torch.isfinite(v) for v in losses.values())
    assert model.backbone.stem[0].weight.grad.abs().sum() > 0


def test_detectron2_registers_the_new_family(toy, tmp_path):
    """dense.compat.detectron2 registers what dense's registry holds: the toy family too, after a
    register_backbones() call; Detectron2's backbone gives dense's features."""
    pytest.importorskip("detectron2", reason="Detectron2 is not installed (not on PyPI: build it from source)")
    from detectron2.config import get_cfg as d2_get_cfg
    from detectron2.modeling import BACKBONE_REGISTRY as D2_BACKBONE_REGISTRY

    from dense.compat.detectron2 import add_dense_config, register_backbones

    register_backbones()
    try:
        cfg = d2_get_cfg()
        add_dense_config(cfg)
        assert cfg.MODEL.TOY.WIDTHS == [8, 16, 24, 32]
        cfg.MODEL.TOY.STEM_WIDTH = 6
        cfg.MODEL.BACKBONE.NAME = "build_toy_fpn_backbone"
        cfg.MODEL.FPN.IN_FEATURES = ["res2", "res3", "res4", "res5"]
        from detectron2.modeling import build_backbone as d2_build_backbone

        d2 = d2_build_backbone(cfg).eval()
        dense = build_backbone(_cfg("tests/toy/toy.yaml")).eval()
        dense.load_state_dict({k[len("bottom_up.body."):]: v for k, v in d2.state_dict().items()
                               if k.startswith("bottom_up.body.")})
        x = torch.randn(1, 3, 70, 90)
        with torch.no_grad():
            features, res = d2.bottom_up(x), dense(x)
        assert all(torch.equal(features[k], res[k]) for k in res)
        assert set(d2(torch.randn(1, 3, 64, 96))) == {"p2", "p3", "p4", "p5", "p6"}  # FPN needs multiples of 32
    finally:
        for suffix in ("backbone", "fpn_backbone", "retinanet_fpn_backbone"):
            D2_BACKBONE_REGISTRY._obj_map.pop(f"build_toy_{suffix}", None)
