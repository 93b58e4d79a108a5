"""dense backbones inside a real Detectron2 installation (skipped when Detectron2 is not importable: it is
not on PyPI; build it from source to run these)."""
import os

import pytest
import torch

pytest.importorskip("detectron2", reason="Detectron2 is not installed (not on PyPI: build it from source to run "
                                        "the Detectron2 interoperability tests)")

from detectron2.checkpoint import DetectionCheckpointer  # noqa: E402
from detectron2.config import get_cfg as d2_get_cfg  # noqa: E402
from detectron2.modeling import build_backbone as d2_build_backbone  # noqa: E402
from detectron2.modeling import build_model as d2_build_model  # noqa: E402
from detectron2.structures import BitMasks, Boxes, Instances  # noqa: E402

from dense.compat.detectron2 import add_dense_config, families, unwrap  # noqa: E402
from dense.config import get_cfg  # noqa: E402
from dense.modeling import build_backbone  # noqa: E402

from conftest import PY, REPO, run_tool  # noqa: E402

D2_CONFIGS = os.path.join(REPO, "tests", "configs", "detectron2")
# family -> dense backbone config (the tiny variant of each paper)
VARIANTS = {"dat": "dat_pp_tiny", "davit": "davit_tiny", "vit_adapter": "vit_adapter_tiny_deit", "dsan": "dsan_t"}


def _node(family):
    return next(iter(families()[family][1]))


def test_every_dense_family_is_registered_but_resnet():
    """The families come from dense's BACKBONE_REGISTRY; ResNet is Detectron2's own."""
    from detectron2.modeling import BACKBONE_REGISTRY

    assert set(families()) == set(VARIANTS)
    for family in VARIANTS:
        for suffix in ("backbone", "fpn_backbone", "retinanet_fpn_backbone"):
            assert f"build_{family}_{suffix}" in BACKBONE_REGISTRY
    assert "build_resnets_backbone" not in BACKBONE_REGISTRY


def _d2_cfg(config: str, family: str, builder: str):
    """A Detectron2 config with the dense family node of the tiny variant and MODEL.BACKBONE.NAME = builder."""
    dense = get_cfg()
    dense.merge_from_file(os.path.join(REPO, "configs", "backbones", f"{VARIANTS[family]}.yaml"))
    cfg = d2_get_cfg()
    add_dense_config(cfg)
    cfg.merge_from_file(os.path.join(D2_CONFIGS, config))
    node = _node(family)
    cfg.MODEL[node] = dense.MODEL[node].clone()
    if family == "vit_adapter":  # SyncBN needs a process group in Detectron2's training loop; BN is equivalent here
        cfg.MODEL[node].NORM = "BN"
    if family == "dsan":
        cfg.MODEL[node].NORM = "BN"
    cfg.MODEL.BACKBONE.NAME = builder
    return cfg


def _instance_batch(n=2, size=(64, 96)):
    g = torch.Generator().manual_seed(0)
    batch = []
    for _ in range(n):
        inst = Instances(size)
        inst.gt_boxes = Boxes(torch.tensor([[4.0, 6.0, 40.0, 50.0], [30.0, 10.0, 90.0, 60.0]]))
        inst.gt_classes = torch.tensor([1, 3])
        masks = torch.zeros(2, *size, dtype=torch.bool)
        masks[0, 6:50, 4:40] = True
        masks[1, 10:60, 30:90] = True
        inst.gt_masks = BitMasks(masks)
        batch.append({"image": torch.randint(0, 256, (3, *size), generator=g, dtype=torch.uint8), "instances": inst,
                      "height": size[0], "width": size[1]})
    return batch


@pytest.mark.parametrize("family", sorted(VARIANTS))
def test_detectron2_mask_rcnn_with_dense_backbone(family):
    """A Detectron2 GeneralizedRCNN (Mask R-CNN) whose MODEL.BACKBONE.NAME names a dense backbone runs a training
    step and inference on CPU."""
    model = d2_build_model(_d2_cfg("mask_rcnn_fpn.yaml", family, f"build_{family}_fpn_backbone"))
    from detectron2.utils.events import EventStorage

    model.train()
    with EventStorage():
        losses = model(_instance_batch())
    total = sum(losses.values())
    assert torch.isfinite(total) and {"loss_mask", "loss_rpn_cls", "loss_box_reg"} <= set(losses)
    total.backward()
    assert unwrap(model.backbone).output_shape()["res2"].stride == 4
    model.eval()
    with torch.no_grad():
        out = model([{"image": torch.randint(0, 256, (3, 70, 50), dtype=torch.uint8), "height": 140, "width": 100}])
    assert out[0]["instances"].image_size == (140, 100)


@pytest.mark.parametrize("family", sorted(VARIANTS))
def test_detectron2_semantic_segmentor_with_dense_backbone(family):
    model = d2_build_model(_d2_cfg("semantic_fpn.yaml", family, f"build_{family}_fpn_backbone"))
    g = torch.Generator().manual_seed(0)
    batch = [{"image": torch.randint(0, 256, (3, 64, 96), generator=g, dtype=torch.uint8),
              "sem_seg": torch.randint(0, 6, (64, 96), generator=g)} for _ in range(2)]
    model.train()
    losses = model(batch)
    sum(losses.values()).backward()
    model.eval()
    with torch.no_grad():
        out = model([{"image": batch[0]["image"], "height": 64, "width": 96}])
    assert out[0]["sem_seg"].shape == (6, 64, 96)


@pytest.mark.parametrize("family", sorted(VARIANTS))
def test_dense_backbone_in_detectron2_gives_the_same_features(tmp_path, family):
    """Same weights, same input: the backbone built by Detectron2 from its config (weights loaded through
    DetectionCheckpointer from `convert_checkpoint.py --format detectron2`) returns dense's features exactly."""
    config = os.path.join(REPO, "configs", "backbones", f"{VARIANTS[family]}.yaml")
    dense_cfg = get_cfg()
    dense_cfg.merge_from_file(config)
    if family in ("vit_adapter", "dsan"):
        dense_cfg.MODEL[_node(family)].NORM = "BN"
    torch.manual_seed(0)
    dense_bb = build_backbone(dense_cfg).eval()
    for p in dense_bb.parameters():  # non-trivial weights everywhere
        p.data.normal_(0, 0.02).add_(1.0 if p.ndim == 1 else 0.0)
    torch.save({"model": {"backbone." + k: v for k, v in dense_bb.state_dict().items()}}, tmp_path / "dense.pth")
    run_tool([PY, "tools/convert_checkpoint.py", "--config-file", config, "--input", str(tmp_path / "dense.pth"),
              "--output", str(tmp_path / "d2.pth"), "--format", "detectron2", "MODEL.DEVICE", "cpu"]
             + ([f"MODEL.{_node(family)}.NORM", "BN"] if family in ("vit_adapter", "dsan") else []))
    cfg = _d2_cfg("mask_rcnn_fpn.yaml", family, f"build_{family}_backbone")
    d2_bb = d2_build_backbone(cfg).eval()
    DetectionCheckpointer(d2_bb).load(str(tmp_path / "d2.pth"))
    x = torch.randn(1, 3, 96, 128)
    with torch.no_grad():
        a, b = dense_bb(x), d2_bb(x)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def _readme_yaml(first_line: str) -> str:
    """The README's ```yaml block that starts with ``first_line``."""
    readme = open(os.path.join(REPO, "README.md")).read()
    blocks = [b.split("```", 1)[0] for b in readme.split("```yaml\n")[1:]]
    return next(b for b in blocks if b.startswith(first_line))


def test_readme_examples_load(tmp_path):
    """The README's two Detectron2 YAML examples: the Mask R-CNN one (its _BASE_ pointed at the installed
    Detectron2's Base-RCNN-FPN.yaml) builds a Detectron2 model on DAT-T++; the Mask2Former one's own keys load."""
    import detectron2

    base = os.path.join(os.path.dirname(detectron2.__file__), "model_zoo", "configs", "Base-RCNN-FPN.yaml")
    text = _readme_yaml("# mask_rcnn_dat_pp_tiny_FPN_1x.yaml").replace("detectron2/configs/Base-RCNN-FPN.yaml", base)
    (tmp_path / "mask_rcnn.yaml").write_text(text)
    cfg = d2_get_cfg()
    add_dense_config(cfg)
    cfg.merge_from_file(str(tmp_path / "mask_rcnn.yaml"))
    cfg.MODEL.DEVICE = "cpu"
    model = d2_build_model(cfg)
    assert type(unwrap(model.backbone)).__name__ == "DAT" and cfg.MODEL.DAT.DROP_PATH_RATE == 0.2
    text = _readme_yaml("# configs/ade20k/semantic-segmentation/dense/maskformer2_dat_pp_tiny_bs16_160k.yaml")
    (tmp_path / "m2f.yaml").write_text("\n".join(line for line in text.splitlines() if not line.startswith("_BASE_")))
    cfg = d2_get_cfg()
    add_dense_config(cfg)
    cfg.merge_from_file(str(tmp_path / "m2f.yaml"))
    assert cfg.MODEL.BACKBONE.NAME == "build_dat_backbone" and cfg.MODEL.DAT.DROP_PATH_RATE == 0.3


def test_official_mask2former_recipe_runs_on_dense_kernels(tmp_path, monkeypatch):
    """The README's recipe, followed in the official Mask2Former code (its source: importable ``mask2former`` or a
    checkout at $MASK2FORMER_ROOT): dense.compat.provide_msda() before ``import mask2former``, add_dense_config before
    add_maskformer2_config, the README's DAT-T++ config on the official ADE20K R50 recipe; the official MaskFormer
    then trains a step (loss finite, gradients into the backbone) and predicts, its MSDeformAttnFunction calling
    dense's kernels forward and backward (not its CPU fallback)."""
    import importlib.util

    if os.environ.get("MASK2FORMER_ROOT"):
        monkeypatch.syspath_prepend(os.environ["MASK2FORMER_ROOT"])
    if importlib.util.find_spec("mask2former") is None:
        pytest.skip("the official Mask2Former source is not importable (set MASK2FORMER_ROOT to a checkout of "
                    "facebookresearch/Mask2Former)")
    import dense.compat

    msda = dense.compat.provide_msda()
    calls = {"forward": 0, "backward": 0}
    if getattr(msda, "__dense__", False):
        for name in calls:
            real = getattr(msda, f"ms_deform_attn_{name}")

            def counted(*args, real=real, name=name):
                calls[name] += 1
                return real(*args)

            monkeypatch.setattr(msda, f"ms_deform_attn_{name}", counted)
    import mask2former
    from detectron2.projects.deeplab import add_deeplab_config
    from mask2former import add_maskformer2_config

    official = os.path.join(os.path.dirname(os.path.dirname(mask2former.__file__)), "configs", "ade20k",
                            "semantic-segmentation", "maskformer2_R50_bs16_160k.yaml")
    text = _readme_yaml("# configs/ade20k/semantic-segmentation/dense/maskformer2_dat_pp_tiny_bs16_160k.yaml")
    (tmp_path / "m2f.yaml").write_text(text.replace("_BASE_: ../maskformer2_R50_bs16_160k.yaml", f"_BASE_: {official}"))
    cfg = d2_get_cfg()
    add_dense_config(cfg)
    add_deeplab_config(cfg)
    add_maskformer2_config(cfg)
    cfg.merge_from_file(str(tmp_path / "m2f.yaml"))
    cfg.MODEL.WEIGHTS, cfg.MODEL.DEVICE = "", "cpu"
    torch.manual_seed(0)
    model = d2_build_model(cfg)
    assert type(unwrap(model.backbone)).__name__ == "DAT"
    image = torch.randint(0, 256, (3, 128, 160), dtype=torch.uint8)
    masks = torch.zeros(2, 128, 160, dtype=torch.bool)
    masks[0, :64], masks[1, 64:] = True, True
    target = Instances((128, 160), gt_classes=torch.tensor([3, 7]), gt_masks=masks)
    model.train()
    losses = model([{"image": image, "instances": target, "height": 128, "width": 160}])
    total = sum(losses.values())
    total.backward()
    assert torch.isfinite(total)
    grads = [p.grad for n, p in model.named_parameters() if n.startswith("backbone.") and p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    model.eval()
    with torch.no_grad():
        out = model([{"image": image, "height": 128, "width": 160}])[0]
    assert out["sem_seg"].shape == (150, 128, 160) and torch.isfinite(out["sem_seg"]).all()
    if getattr(msda, "__dense__", False):
        assert calls["forward"] > 0 and calls["backward"] > 0, calls
