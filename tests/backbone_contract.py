"""The Backbone contract (DESIGN.md), checked the same way for every backbone config: output names, strides and
channels as ``output_shape()`` says, any input size, a build on the meta device."""
import torch

from dense.modeling import build_backbone

STRIDES = {"res2": 4, "res3": 8, "res4": 16, "res5": 32}
SIZES = [(67, 45), (1, 2)]  # odd sides that no window, patch or stride divides; a degenerate image


def check_backbone_contract(cfg, sizes=SIZES) -> None:
    """Build the backbone of ``cfg`` on the meta device (all of it, no memory) and for real, and run it on ``sizes``:
    every feature is ``output_shape()``'s (names = MODEL.BACKBONE.OUT_FEATURES, channels, strides 4..32) at
    ceil(H / s) x ceil(W / s), finite."""
    with torch.device("meta"):
        meta = build_backbone(cfg)
    assert all(p.is_meta for p in meta.parameters())
    shapes = meta.output_shape()
    assert list(shapes) == list(cfg.MODEL.BACKBONE.OUT_FEATURES)
    assert {name: s.stride for name, s in shapes.items()} == {name: STRIDES[name] for name in shapes}
    torch.manual_seed(0)
    backbone = build_backbone(cfg).eval()
    assert backbone.output_shape() == shapes
    assert backbone.size_divisibility % 32 == 0, "padding to size_divisibility must keep the stride-32 level whole"
    for h, w in sizes:
        with torch.no_grad():
            out = backbone(torch.randn(1, 3, h, w))
        assert list(out) == list(shapes), (h, w, list(out))
        for name, t in out.items():
            s = shapes[name].stride
            assert t.shape == (1, shapes[name].channels, -(-h // s), -(-w // s)), (h, w, name, tuple(t.shape))
            assert torch.isfinite(t).all(), (h, w, name)
