import pytest
import torch

from dense.config import get_cfg
from dense.config.config import ConfigError
from dense.modeling import build_backbone, build_model
from dense.modeling.backbone import ShapeSpec
from dense.modeling.necks import FPN


@pytest.mark.parametrize("depth,channels", [(18, [64, 128, 256, 512]), (50, [256, 512, 1024, 2048])])
def test_resnet_channels(depth, channels):
    cfg = get_cfg()
    cfg.MODEL.RESNETS.DEPTH = depth
    with torch.device("meta"):
        bb = build_backbone(cfg)
    assert bb.output_shape() == {n: ShapeSpec(channels=c, stride=s)
                                 for n, c, s in zip(["res2", "res3", "res4", "res5"], channels, [4, 8, 16, 32])}


def test_freeze_at_freezes_stem_and_stages():
    cfg = get_cfg()
    cfg.MODEL.RESNETS.DEPTH, cfg.MODEL.BACKBONE.FREEZE_AT = 18, 2
    bb = build_backbone(cfg)
    assert (not any(p.requires_grad for p in bb.conv1.parameters())
            and not any(p.requires_grad for p in bb.layer1.parameters()))
    assert all(p.requires_grad for p in bb.layer2.parameters())
    bb.train()
    x = torch.randn(2, 3, 64, 64)
    stats = bb.layer1[0].bn1.running_mean.clone()
    bb(x)
    assert torch.equal(stats, bb.layer1[0].bn1.running_mean)  # frozen statistics


def test_fpn_levels_and_extra_convs():
    shapes = {f"res{i}": ShapeSpec(channels=16 * i, stride=2**i) for i in range(2, 6)}
    feats = {f"res{i}": torch.randn(1, 16 * i, 64 // 2**i, 96 // 2**i) for i in range(2, 6)}
    fpn = FPN(shapes, ["res2", "res3", "res4", "res5"], out_channels=8, num_outs=5, add_extra_convs="on_input")
    out = fpn(feats)
    assert list(out) == ["p2", "p3", "p4", "p5", "p6"] and out["p6"].shape[-2:] == (1, 2)
    assert fpn.fpn_convs[4].conv.in_channels == 80  # on_input: from res5
    retina = FPN(shapes, ["res2", "res3", "res4", "res5"], out_channels=8, num_outs=5, start_level=1,
                 add_extra_convs="on_input")
    assert list(retina(feats)) == ["p3", "p4", "p5", "p6", "p7"]
    pooled = FPN(shapes, ["res2", "res3", "res4", "res5"], out_channels=8, num_outs=5)(feats)
    assert pooled["p6"].shape[-2:] == (1, 2)


def test_semantic_segmentor_output_sizes(tiny_cfg):
    model = build_model(tiny_cfg).eval()
    imgs = [{"image": torch.randint(0, 255, (3, 50, 77), dtype=torch.uint8), "height": 100, "width": 154},
            {"image": torch.randint(0, 255, (3, 64, 64), dtype=torch.uint8)}]
    with torch.no_grad():
        out = model(imgs)
    assert out[0]["sem_seg"].shape == (6, 100, 154) and out[1]["sem_seg"].shape == (6, 64, 64)
    model.train()
    imgs[0]["sem_seg"] = torch.randint(0, 6, (50, 77))
    imgs[1]["sem_seg"] = torch.full((64, 64), 255)
    losses = model(imgs)
    losses["loss_sem_seg"].backward()
    assert torch.isfinite(losses["loss_sem_seg"])


def test_unknown_registry_name_lists_choices():
    cfg = get_cfg()
    cfg.MODEL.BACKBONE.NAME = "ResNot"
    with pytest.raises(ConfigError, match="MODEL.BACKBONE.NAME = 'ResNot'.*known names: .*ResNet"):
        build_backbone(cfg)


def test_mmseg_key_layout_of_semantic_fpn(tiny_cfg):
    """Neck and head keys follow mmseg's FPN / FPNHead (neck.* and decode_head.* in released checkpoints)."""
    keys = set(build_model(tiny_cfg).state_dict())
    for k in ["neck.lateral_convs.0.conv.weight", "neck.lateral_convs.0.conv.bias", "neck.fpn_convs.3.conv.weight",
              "sem_seg_head.scale_heads.0.0.conv.weight", "sem_seg_head.scale_heads.0.0.bn.running_var",
              "sem_seg_head.scale_heads.3.4.conv.weight", "sem_seg_head.conv_seg.weight"]:
        assert k in keys, k
    assert "sem_seg_head.scale_heads.0.0.conv.bias" not in keys  # ConvModule: no bias before a norm


def test_fpn_errors_name_the_key(tiny_cfg):
    tiny_cfg.MODEL.FPN.IN_FEATURES = ["res2", "res6"]
    with pytest.raises(ValueError, match=r"^MODEL.FPN.IN_FEATURES = \['res2', 'res6'\]: \['res6'\] are not produced"):
        build_model(tiny_cfg)
    tiny_cfg.MODEL.FPN.IN_FEATURES, tiny_cfg.MODEL.FPN.NUM_OUTS = ["res2", "res3", "res4", "res5"], 3
    with pytest.raises(ValueError, match=r"^MODEL.FPN.NUM_OUTS = 3: must be >= the number of used inputs \(4: "
                                         r"MODEL.FPN.IN_FEATURES from MODEL.FPN.START_LEVEL\)"):
        build_model(tiny_cfg)
