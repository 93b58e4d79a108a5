import os
import re

import pytest

from dense.config import get_cfg
from dense.config.config import ConfigError

from conftest import REPO, TINY_CFG


def test_unknown_key_in_file_names_key_and_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(f"_BASE_: {TINY_CFG}\nSOLVER:\n  BASE_LRR: 0.1\n")
    cfg = get_cfg()
    with pytest.raises(ConfigError) as e:
        cfg.merge_from_file(str(bad))
    assert "SOLVER.BASE_LRR" in str(e.value) and str(bad) in str(e.value)


def test_unknown_key_in_overrides():
    with pytest.raises(ConfigError, match="MODEL.BACKBONE.NAMEE"):
        get_cfg().merge_from_list(["MODEL.BACKBONE.NAMEE", "ResNet"])
    with pytest.raises(ConfigError, match="KEY VALUE"):
        get_cfg().merge_from_list(["SOLVER.BASE_LR"])


def test_wrong_type_is_reported():
    with pytest.raises(ConfigError, match="SOLVER.MAX_ITER"):
        get_cfg().merge_from_list(["SOLVER.MAX_ITER", "'many'"])


def test_base_inheritance_and_override(tmp_path):
    leaf = tmp_path / "leaf.yaml"
    leaf.write_text(f"_BASE_: {TINY_CFG}\nSOLVER:\n  MAX_ITER: 77\n")
    cfg = get_cfg()
    cfg.merge_from_file(str(leaf))
    assert cfg.SOLVER.MAX_ITER == 77  # leaf wins
    assert cfg.MODEL.NECK.NAME == "FPN"  # from Base-SemanticFPN.yaml, two levels up
    assert cfg.DATASETS.TRAIN == ("synthetic_sem_seg_train",)  # from Base-Synthetic-SemSeg.yaml
    assert cfg.MODEL.RESNETS.DEPTH == 18


def test_missing_config_file():
    with pytest.raises(FileNotFoundError, match="does not exist"):
        get_cfg().merge_from_file("configs/nope.yaml")


def test_every_default_key_has_a_comment():
    """defaults.py documents each key on its line (the config's reference)."""
    src = open(os.path.join(REPO, "dense", "config", "defaults.py")).read().splitlines()
    undocumented = []
    for line in src:
        m = re.match(r"^_C\.([A-Z0-9_.]+) = (.*)$", line)
        if m and not m.group(2).startswith("CN()") and "#" not in m.group(2):
            undocumented.append(m.group(1))
    assert not undocumented, f"keys without a comment: {undocumented}"
    # and the file defines every key get_cfg() returns
    defined = {re.match(r"^_C\.([A-Z0-9_.]+) =", l).group(1) for l in src if re.match(r"^_C\.([A-Z0-9_.]+) =", l)}

    def leaves(node, prefix=""):
        for k, v in node.items():
            if isinstance(v, dict):
                yield from leaves(v, f"{prefix}{k}.")
            else:
                yield prefix + k

    assert set(leaves(get_cfg())) <= defined


def test_all_shipped_configs_parse():
    for root, _, files in os.walk(os.path.join(REPO, "configs")):
        for f in files:
            if f.endswith(".yaml") and not f.startswith("Base-"):
                cfg = get_cfg()
                cfg.merge_from_file(os.path.join(root, f))
