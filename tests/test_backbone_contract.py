"""Every backbone config under configs/backbones/ keeps the Backbone contract (tests/backbone_contract.py)."""
import glob
import os

import pytest

from dense.config import get_cfg

from backbone_contract import check_backbone_contract
from conftest import REPO

CONFIGS = sorted(os.path.basename(p) for p in glob.glob(os.path.join(REPO, "configs", "backbones", "*.yaml")))


def _cfg(config, opts=()):
    cfg = get_cfg()
    cfg.merge_from_file(os.path.join(REPO, "configs", "backbones", config))
    cfg.merge_from_list(["MODEL.DEVICE", "cpu", *opts])
    return cfg


@pytest.mark.parametrize("config", CONFIGS)
def test_backbone_contract(config):
    check_backbone_contract(_cfg(config))


@pytest.mark.parametrize("config", ["dat_pp_tiny.yaml", "dat_tiny.yaml", "davit_tiny.yaml", "dsan_t.yaml",
                                    "resnet18.yaml", "vit_adapter_tiny_deit_det.yaml"])
def test_backbone_contract_with_some_outputs(config):
    """RetinaNet reads res3..res5 only: the backbone returns (and normalises) only those."""
    check_backbone_contract(_cfg(config, ["MODEL.BACKBONE.OUT_FEATURES", ["res3", "res4", "res5"]]))


def test_every_family_has_a_backbone_config():
    from dense.modeling import BACKBONE_REGISTRY

    named = set()
    for config in CONFIGS:
        named.add(_cfg(config).MODEL.BACKBONE.NAME)
    assert named == {name for name, _ in BACKBONE_REGISTRY}
