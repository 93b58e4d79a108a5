"""DaViT: golden parity through released-checkpoint loading, parameter counts and FLOPs against the official code and
the paper, official and timm ImageNet files. (The Backbone contract: tests/test_backbone_contract.py.)"""
import json

import pytest
import torch

from golden_utils import (check_golden_backbone, classification_checkpoint, classification_gflops, model_from_config,
                          param_count)
from shared_data import shared_file

HEAD_CFG = "configs/Base-SemanticFPN.yaml"


def test_davit_tiny_golden(tmp_path):
    check_golden_backbone(tmp_path, "davit_tiny", "davit_tiny.yaml", "davit_tiny_det.pth")


@pytest.mark.parametrize("variant,expected", [("tiny", 27_592_512), ("small", 48_978_240), ("base", 86_931_200)])
def test_davit_param_counts(variant, expected):
    """Official dense backbones (dingmyu/davit mmdet/mmseg DaViT, incl. norm0..3), as counted from the
    upstream code in tests/data/parity/golden/keys/davit_keys.json."""
    assert param_count(f"davit_{variant}.yaml") == expected


@pytest.mark.parametrize("config,size,paper_gflops,classes", [
    ("davit_tiny.yaml", 224, 4.5, 768), ("davit_small.yaml", 224, 8.8, 768), ("davit_base.yaml", 224, 15.5, 1024)])
def test_davit_flops_match_paper(config, size, paper_gflops, classes):
    """Classification form (golden_utils.classification_gflops), within 3% of the paper."""
    gflops = classification_gflops(config, size, classes)
    assert abs(gflops - paper_gflops) / paper_gflops < 0.03, gflops


@pytest.mark.parametrize("layout", ["imagenet", "timm_hub"])
def test_davit_imagenet_checkpoints(tmp_path, layout):
    """Official IN-1K files ({'state_dict'}: patch_embeds, main_blocks, norms, head) and timm hub weights
    (bare: stem, stages, head.norm, head.fc) both load into the dense backbone."""
    from dense.checkpoint import DenseCheckpointer
    from dense.modeling.backbone import DaViT

    table = json.load(open(shared_file("keys", "davit_keys.json")))["tiny"][layout]
    sd = classification_checkpoint(table, tmp_path / "davit.pth", {"epoch": 300, "arch": "DaViT_224"})
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


@pytest.mark.parametrize("size", [(100, 150), (224, 224), (257, 63)])
def test_davit_export_forms_equal_timm(size):
    """dense's stem, down-samplings and window blocks (the padding spelt for torch.export) give timm's values at
    sizes that pad the stem, the down-samplings and the windows (the golden data, at 224, pads nothing)."""
    import copy

    from dense.modeling.backbone.davit import _EXPORTABLE

    torch.manual_seed(0)
    dense_model = model_from_config(HEAD_CFG, "configs/backbones/davit_tiny.yaml").backbone.eval()
    timm_model = copy.deepcopy(dense_model)
    originals = {ours: theirs for theirs, ours in _EXPORTABLE.items()}
    swapped = 0
    for module in timm_model.modules():
        if type(module) in originals:
            module.__class__ = originals[type(module)]
            swapped += 1
    assert swapped == 1 + 3 + sum(len(stage.blocks) for stage in dense_model.stages)  # stem, downs, spatial blocks
    x = torch.randn(1, 3, *size)
    with torch.no_grad():
        torch.testing.assert_close(dense_model.forward_features(x), timm_model.forward_features(x), rtol=0, atol=0)
