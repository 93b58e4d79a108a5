import inspect
import os
import re

import pytest
import yaml

from dense.config import get_cfg
from dense.config.config import ConfigError, ConfigValueError

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


def _definitions() -> dict[str, str]:
    """{key: its defining line} of dense/config/defaults.py and every registered backbone family's add_config."""
    from dense.modeling import BACKBONE_REGISTRY

    sources = [({"_C": ""}, open(os.path.join(REPO, "dense", "config", "defaults.py")).read())]
    for _, backbone in BACKBONE_REGISTRY:
        if getattr(backbone, "add_config", None) is not None:
            src = inspect.getsource(backbone.add_config)
            nodes = dict((var, node + ".") for node, var in re.findall(r"cfg\.(MODEL\.\w+) = (\w+) = CN\(\)", src))
            assert nodes, f"{backbone.__name__}.add_config should define its node as `cfg.MODEL.X = x = CN()`"
            sources.append((nodes, src))
    found = {}
    for prefixes, src in sources:
        for line in src.splitlines():
            m = re.match(r"^\s*(\w+)\.([A-Z0-9_.]+) = (.*)$", line)
            if m and m[1] in prefixes:
                found[prefixes[m[1]] + m[2]] = m[3]
    return found


def test_every_default_key_has_a_comment():
    """defaults.py and the families' add_<family>_config functions document each key on its line (the config's
    reference), and define every key get_cfg() returns."""
    definitions = _definitions()
    undocumented = [k for k, rest in definitions.items() if not rest.startswith("CN()") and "#" not in rest]
    assert not undocumented, f"keys without a comment: {undocumented}"

    def leaves(node, prefix=""):
        for k, v in node.items():
            if isinstance(v, dict):
                yield from leaves(v, f"{prefix}{k}.")
            else:
                yield prefix + k

    assert set(leaves(get_cfg())) == {k for k, rest in definitions.items() if not rest.startswith("CN()")}


def test_all_shipped_configs_parse():
    for root, _, files in os.walk(os.path.join(REPO, "configs")):
        for f in files:
            if f.endswith(".yaml") and not f.startswith("Base-"):
                cfg = get_cfg()
                cfg.merge_from_file(os.path.join(root, f))


@pytest.mark.parametrize("key,value,message", [
    ("MODEL.DAT.DIM_STEM", 64, "'MODEL.DAT.DIM_STEM' was removed: the stem's channels are MODEL.DAT.DIMS[0]"),
    ("MODEL.DAT.DEPTHS", [2, 2, 6, 2], "'MODEL.DAT.DEPTHS' was removed: the blocks per stage are the lengths of "
                                       "MODEL.DAT.STAGE_SPEC"),
    ("SOLVER.LAYER_DECAY.NUM_LAYERS", 24, "was removed: the layers are the backbone's own"),
    ("INPUT.CROP.TYPE", "absolute_range", "with INPUT.CROP.SIZE_RANGE"),
    ("MODEL.VIT_ADAPTER.WITH_CP", True,
     "'MODEL.VIT_ADAPTER.WITH_CP' was renamed to 'MODEL.VIT_ADAPTER.USE_CHECKPOINT'"),
    ("MODEL.MASK_FORMER.WITH_CP", True, "was renamed to 'MODEL.MASK_FORMER.USE_CHECKPOINT'")])
def test_removed_and_renamed_keys_say_what_to_do(tmp_path, key, value, message):
    """An old config that sets a key which restated another (or has a new name) fails with the fix, in a file and on
    the command line."""
    *parents, leaf = key.split(".")
    tree = {leaf: value}
    for p in reversed(parents):
        tree = {p: tree}
    path = tmp_path / "old.yaml"
    path.write_text(yaml.safe_dump(tree))
    with pytest.raises(ConfigError, match=re.escape(message)) as e:
        get_cfg().merge_from_file(str(path))
    assert str(path) in str(e.value)
    with pytest.raises(ConfigError, match=re.escape(message)):
        get_cfg().merge_from_list([key, str(value)])


def test_bad_backbone_value_names_the_key_and_value():
    from dense.modeling import build_backbone

    cfg = get_cfg()
    cfg.merge_from_file(os.path.join(REPO, "configs", "backbones", "dat_pp_tiny.yaml"))
    cfg.MODEL.DAT.DIMS = [64, 128, 256, 256]
    with pytest.raises(ConfigValueError, match=r"^MODEL.DAT.DIMS = \[64, 128, 256, 256\]: each stage must be twice"):
        build_backbone(cfg)
    cfg.MODEL.DAT.DIMS, cfg.MODEL.DAT.STAGE_SPEC = [64, 128, 256, 512], ["ND", "NX", "ND", "DD"]
    with pytest.raises(ValueError, match=r"^MODEL.DAT.STAGE_SPEC = .*: block type 'X' is not supported"):
        build_backbone(cfg)


def test_missing_base_file_names_the_including_yaml(tmp_path):
    """A _BASE_ entry that does not exist: the error names the YAML that refers to it and the path looked for (also
    when the missing base is two levels down)."""
    (tmp_path / "child.yaml").write_text('_BASE_: ["missing/Base.yaml"]\nSOLVER:\n  MAX_ITER: 5\n')
    (tmp_path / "top.yaml").write_text('_BASE_: "child.yaml"\n')
    for top in ("child.yaml", "top.yaml"):
        with pytest.raises(FileNotFoundError, match=r"child\.yaml' inherits _BASE_ 'missing/Base\.yaml', which does "
                                                    r"not exist \(looked for '.*missing/Base\.yaml'"):
            get_cfg().merge_from_file(str(tmp_path / top))
