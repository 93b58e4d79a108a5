"""torch.compile / torch.export of every backbone family (issue 16): the custom ops are real PyTorch operators (fake
kernels, autograd, autocast: dense/ops/_library.py), so dynamo traces each backbone as one graph, and the exported
program, traced at one size, gives eager's outputs at another (dynamic height and width)."""
import pytest
import torch
import torch._dynamo
from torch.export import Dim

from dense.config import get_cfg
from dense.modeling.backbone import build_backbone

from small_models import SMALL_BACKBONES, small_backbone_cfg, small_model_cfg

FAMILIES = list(SMALL_BACKBONES)
# export_min_size of the small backbones: 64, or where every window layer has 2 windows per side (DaViT: windows in
# all four stages; DAT v1: window blocks up to stride 16; DAT++: neighbourhood attention up to stride 16)
EXPORT_MIN_SIZE = {"dat_pp": 128, "dat_v1": 128, "davit": 256, "vit_adapter_deit": 64, "vit_adapter_beit": 64,
                   "dsan": 64, "resnet": 64}
assert set(EXPORT_MIN_SIZE) == set(FAMILIES)


def _backbone(family: str) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_backbone(small_backbone_cfg(family)).eval()


def _sizes(family: str) -> tuple[tuple[int, int], tuple[int, int]]:
    """(traced, checked) sizes from the family's smallest dynamic side m: (m + 32, m + 64) and (m + 96, m)."""
    m = EXPORT_MIN_SIZE[family]
    return (m + 32, m + 64), (m + 96, m)


@pytest.mark.parametrize("family", FAMILIES)
def test_backbone_traces_as_one_graph(family):
    """torch._dynamo.explain: 0 graph breaks (the dense ops are opaque operators with fake kernels; no .item(), no
    data-dependent shapes)."""
    backbone = _backbone(family)
    with torch.no_grad():
        explained = torch._dynamo.explain(backbone)(torch.randn(1, 3, *_sizes(family)[0]))
    assert explained.graph_break_count == 0, [str(b.reason)[:200] for b in explained.break_reasons]
    assert explained.graph_count == 1


@pytest.mark.parametrize("family", FAMILIES)
def test_backbone_exports_with_dynamic_size(family):
    """torch.export.export with dynamic height and width (multiples of 32 from the backbone's export_min_size): the
    program traced at one size equals eager at other sizes, the smallest one included (window padding, BEiT's
    relative position bias resampled per grid and DAT v1's bias table resized per map all follow the size)."""
    backbone = _backbone(family)
    assert backbone.export_min_size == EXPORT_MIN_SIZE[family]
    _check_dynamic_export(backbone, *_sizes(family))


def _check_dynamic_export(backbone, traced: tuple[int, int], checked: tuple[int, int]) -> None:
    """torch.export of ``backbone`` with H, W multiples of 32 from its export_min_size to 2048, traced at ``traced``:
    equal to eager at ``checked`` and at the minimum."""
    low = backbone.export_min_size // 32
    dynamic = ({2: 32 * Dim("h", min=low, max=64), 3: 32 * Dim("w", min=low, max=64)},)
    program = torch.export.export(backbone, (torch.randn(1, 3, *traced),), dynamic_shapes=dynamic)
    for size in (checked, (32 * low, 32 * low)):
        x = torch.randn(1, 3, *size)
        with torch.no_grad():
            expected, got = backbone(x), program.module()(x)
        assert expected.keys() == got.keys()
        for name in expected:
            torch.testing.assert_close(got[name], expected[name], rtol=1e-5, atol=1e-5, msg=f"{name} at {size}")


def test_export_min_size_of_released_configs():
    """The smallest dynamic side of released configs: window layers need 2 windows per side (DaViT-T, DAT-T: stride
    32, window 7 -> 256; ViT-Adapter detection: stride 16, window 14 -> 256, BEiT-L's 56 -> 928), DAT-T++'s
    neighbourhood attention a 7-cell map at stride 16 (128); the rest 64 (the stride-32 map 2 cells wide)."""
    from dense.config import get_cfg

    expected = {"davit_tiny": 256, "dat_tiny": 256, "dat_pp_tiny": 128, "vit_adapter_tiny_deit_det": 256,
                "vit_adapter_large_beit_det": 928, "vit_adapter_large_beit_640": 64, "dsan_t": 64, "resnet50": 64}
    for name, size in expected.items():
        cfg = get_cfg()
        cfg.merge_from_file(f"configs/backbones/{name}.yaml")
        with torch.device("meta"):
            assert build_backbone(cfg).export_min_size == size, name


@pytest.mark.slow
@pytest.mark.parametrize("config,traced,checked", [
    ("dat_pp_tiny", (160, 192), (224, 128)), ("dat_tiny", (288, 320), (512, 288)),
    ("davit_tiny", (288, 320), (256, 448)), ("vit_adapter_tiny_deit_det", (288, 320), (512, 288)),
    ("vit_adapter_base_beit_512", (512, 512), (384, 640)), ("dsan_t", (128, 160), (224, 96)),
    ("resnet50", (128, 160), (224, 96))])
def test_released_backbone_exports_with_dynamic_size(config, traced, checked):
    """The released-size backbone of each family (the default run walks the small ones): traced at one size, equal
    to eager at another and at its export_min_size (DAT-T's shifted windows, ViT-Adapter's 14-token windows, BEiT-B's
    63-entry table resampled to other grids)."""
    from dense.config import get_cfg

    cfg = get_cfg()
    cfg.merge_from_file(f"configs/backbones/{config}.yaml")
    torch.manual_seed(0)
    _check_dynamic_export(build_backbone(cfg).eval(), traced, checked)


def test_beit_dynamic_export_needs_a_max_size():
    """BEiT's bias at a dynamic grid is read from the matrices of every grid up to the range's maximum: without one,
    a sentence saying so (dense.export always gives one)."""
    backbone = _backbone("vit_adapter_beit")
    unbounded = ({2: 32 * Dim("h", min=2), 3: 32 * Dim("w", min=2)},)
    with pytest.raises(ValueError, match="needs a bounded one: give the dynamic dimensions a max"):
        torch.export.export(backbone, (torch.randn(1, 3, 128, 160),), dynamic_shapes=unbounded)


def test_export_rejects_a_traced_size_outside_the_range():
    """A traced side below the model's smallest dynamic side is a sentence naming the range (not torch.export's
    constraint violation report)."""
    from dense.export import export_program

    model = _model("configs/synthetic/semantic_fpn/dat_pp_nano_demo.yaml")
    with pytest.raises(ValueError, match=r"traced size 96x128: .* in \[128, 2048\]"):
        export_program(model, torch.randn(1, 3, 96, 128))


# ------------------------------------------------------------------------------------------ whole models
# config -> min side asked for (the export module raises it to the backbone's export_min_size: DAT++ nano 128), sizes
# traced and checked (the checked one at that minimum)
SEMANTIC = {
    "semantic_fpn_dat_pp": ("configs/synthetic/semantic_fpn/dat_pp_nano_demo.yaml", 64, (160, 192), (224, 128)),
    "upernet_dat_pp": ("configs/synthetic/upernet/dat_pp_nano_demo.yaml", 64, (160, 192), (224, 128)),
    "light_ham_dat_pp": ("configs/synthetic/light_ham/dat_pp_nano_demo.yaml", 64, (160, 192), (224, 128)),
    "semantic_fpn_r18": ("tests/configs/tiny_semseg.yaml", 64, (96, 128), (160, 64)),
}


def _model(config: str):
    from dense.modeling import build_model

    cfg = get_cfg()
    cfg.merge_from_file(config)
    cfg.MODEL.DEVICE = "cpu"
    torch.manual_seed(0)
    return build_model(cfg).eval()


@pytest.mark.parametrize("name", list(SEMANTIC))
def test_semantic_model_exports_with_dynamic_size(name):
    """dense.export.export_program of a SemanticSegmentor (images [1, 3, H, W] -> logits): traced at one size, equal
    to eager's single_scale at another."""
    from dense.export import export_program

    config, low, traced, checked = SEMANTIC[name]
    model = _model(config)
    program = export_program(model, torch.randn(1, 3, *traced), min_size=low)
    x = torch.randn(1, 3, *checked)
    with torch.no_grad():
        torch.testing.assert_close(program.module()(x), model.single_scale(x[0])[None], rtol=1e-5, atol=1e-5)


def _run_export_tool(name: str, fmt: str, tmp_path, static: bool = False):
    """tools/export_model.py on SEMANTIC[name] with the test model's weights (MODEL.WEIGHTS); the model returned."""
    from conftest import PY, run_tool

    config, low, traced, _ = SEMANTIC[name]
    model = _model(config)
    torch.save({"model": model.state_dict()}, tmp_path / "weights.pth")
    args = [PY, "tools/export_model.py", "--config-file", config, "--format", fmt, "--output", str(tmp_path),
            "--size", *map(str, traced), "--min-size", str(low), "--max-size", "512",
            "--opts", "MODEL.WEIGHTS", str(tmp_path / "weights.pth")]
    assert "wrote" in run_tool(args + (["--static"] if static else [])).stdout
    return model


def test_readme_export_command(tmp_path):
    """The README's "Export and compile" ONNX command as written (its <checkpoint> a saved model, its output folder
    in tmp_path): the file runs in onnxruntime at another size than the traced one, and at the smallest side the
    model allows (its export_min_size, 128: raised from the default 64), equal to eager."""
    import os
    import shlex

    import onnxruntime

    from conftest import PY, REPO, run_tool

    readme = open(os.path.join(REPO, "README.md")).read()
    block = readme.split("## Export and compile", 1)[1].split("```bash\n", 1)[1].split("```", 1)[0]
    command = block.replace("\\\n", " ").splitlines()[0]
    model = _model(SEMANTIC["semantic_fpn_dat_pp"][0])
    torch.save({"model": model.state_dict()}, tmp_path / "weights.pth")
    command = command.replace("<checkpoint>", str(tmp_path / "weights.pth")).replace("out/onnx", str(tmp_path))
    args = shlex.split(command)
    assert args[0] == "python" and "--min-size" not in args
    assert "wrote" in run_tool([PY, *args[1:]]).stdout
    session = onnxruntime.InferenceSession(str(tmp_path / "model.onnx"), providers=["CPUExecutionProvider"])
    for size in ((224, 128), (128, 128)):
        x = torch.randn(1, 3, *size)
        got = torch.from_numpy(session.run(None, {"images": x.numpy()})[0])
        with torch.no_grad():
            torch.testing.assert_close(got, model.single_scale(x[0])[None], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name,static", [("upernet_dat_pp", False),
                                         pytest.param("upernet_dat_pp", True, marks=pytest.mark.slow)])
def test_onnx_file_runs_in_onnxruntime(name, static, tmp_path):
    """tools/export_model.py --format onnx: the file (neighbourhood attention lowered to gathers; UperNet's pyramid
    pooling to averaging matrices) runs in a stock onnxruntime and equals eager PyTorch, at another size than the
    traced one where the export is dynamic."""
    import onnxruntime

    _, _, traced, checked = SEMANTIC[name]
    model = _run_export_tool(name, "onnx", tmp_path, static)
    session = onnxruntime.InferenceSession(str(tmp_path / "model.onnx"), providers=["CPUExecutionProvider"])
    x = torch.randn(1, 3, *(traced if static else checked))
    got = torch.from_numpy(session.run(None, {"images": x.numpy()})[0])
    with torch.no_grad():
        torch.testing.assert_close(got, model.single_scale(x[0])[None], rtol=1e-4, atol=1e-4)


def test_export_tool_writes_a_program_that_loads(tmp_path):
    """tools/export_model.py --format torch_export: model.pt2 loads with torch.export.load and runs at another size."""
    model = _run_export_tool("semantic_fpn_r18", "torch_export", tmp_path)
    program = torch.export.load(str(tmp_path / "model.pt2"))
    x = torch.randn(1, 3, *SEMANTIC["semantic_fpn_r18"][3])
    with torch.no_grad():
        torch.testing.assert_close(program.module()(x), model.single_scale(x[0])[None], rtol=1e-5, atol=1e-5)


def test_benchmark_compile_runs():
    """tools/benchmark.py compile prints eager vs compiled time per backbone and the ratio (numbers not checked)."""
    from conftest import PY, run_tool

    out = run_tool([PY, "tools/benchmark.py", "compile", "--variants", "resnet18", "--size", "64", "--repeat", "1",
                    "--compile-backend", "aot_eager"]).stdout
    assert "resnet18" in out and "speed-up" in out


# ------------------------------------------------------------------------------------------ Mask2Former
# name -> (config, opts, min side of the dynamic range, traced size, checked size)
MASK2FORMER = {
    # ViT-Adapter: MSDeformAttn in the backbone's adapter and in the pixel decoder
    "semantic_vit_adapter": ("mask2former", "vit_adapter_deit", 64, (128, 160), (160, 96)),
    # DAT++ nano, semantic + panoptic + instance switched on (the export form is the same: their post-processing
    # reads the class and mask logits)
    "panoptic_dat_pp": ("configs/synthetic/mask2former/dat_pp_nano_panoptic_demo.yaml", None, 64, (160, 192),
                        (224, 128)),
}


def _mask2former(name: str):
    from dense.modeling import build_model

    config, family, *_ = MASK2FORMER[name]
    if family is not None:
        cfg = small_model_cfg(config, family)
    else:
        cfg = get_cfg()
        cfg.merge_from_file(config)
        cfg.MODEL.DEVICE = "cpu"
    torch.manual_seed(0)
    return build_model(cfg).eval()


def _mask2former_eager(model, images: torch.Tensor) -> tuple:
    out, _ = model.head_outputs(images[0])
    return model.single_scale(images[0])[None], out["pred_logits"], out["pred_masks"]


@pytest.mark.parametrize("name", list(MASK2FORMER))
def test_mask2former_exports_with_dynamic_size(name):
    """dense.export.export_program of a MaskFormer: (semantic scores, class logits, mask logits) traced at one size
    equal eager at another; panoptic and instance results computed from the program's logits equal the model's."""
    from dense.export import export_program
    from dense.modeling.meta_arch.mask_former_inference import (instance_inference, panoptic_inference,
                                                                upsample_mask_logits)

    _, _, low, traced, checked = MASK2FORMER[name]
    model = _mask2former(name)
    program = export_program(model, torch.randn(1, 3, *traced), min_size=low)
    image = torch.randint(0, 256, (3, *checked), dtype=torch.uint8)
    x = model.normalize(image)[None]
    with torch.no_grad():
        got, expected = program.module()(x), _mask2former_eager(model, x)
        for a, b, what in zip(got, expected, ("sem_seg", "class_logits", "mask_logits")):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5, msg=what)
        if model.panoptic_on:
            model.object_mask_threshold = 0.0  # random weights: no query is confident; keep them all as segments
            predicted = model.predict({"image": image})
            assert len(predicted["panoptic_seg"][1]) > 0 and len(predicted["instances"]) > 0
            padded = model.head_outputs(x[0])[1]
            masks = upsample_mask_logits(got[2][0], padded, checked, checked, model.mask_chunk)
            ids, segments = panoptic_inference(got[1][0], masks, model.thing_ids, model.object_mask_threshold,
                                               model.overlap_threshold)
            assert torch.equal(ids, predicted["panoptic_seg"][0]) and segments == predicted["panoptic_seg"][1]
            inst = instance_inference(got[1][0], masks, model.detections_per_image, model.thing_ids)
            torch.testing.assert_close(inst.scores, predicted["instances"].scores)
            assert torch.equal(inst.pred_masks, predicted["instances"].pred_masks)


def test_mask2former_vit_adapter_onnx_runs_in_onnxruntime(tmp_path):
    """A Mask2Former on ViT-Adapter (MSDeformAttn in the adapter and the pixel decoder, lowered to GridSample) as an
    ONNX file with dynamic height and width: a stock onnxruntime gives eager's three outputs at another size."""
    import onnxruntime

    from dense.export import export_onnx

    _, _, low, traced, checked = MASK2FORMER["semantic_vit_adapter"]
    model = _mask2former("semantic_vit_adapter")
    export_onnx(model, torch.randn(1, 3, *traced), str(tmp_path / "m2f.onnx"), min_size=low, max_size=512)
    session = onnxruntime.InferenceSession(str(tmp_path / "m2f.onnx"), providers=["CPUExecutionProvider"])
    assert [o.name for o in session.get_outputs()] == ["sem_seg", "class_logits", "mask_logits"]
    x = torch.randn(1, 3, *checked)
    got = session.run(None, {"images": x.numpy()})
    with torch.no_grad():
        expected = _mask2former_eager(model, x)
    for a, b in zip(got, expected):
        torch.testing.assert_close(torch.from_numpy(a), b, rtol=1e-4, atol=1e-4)


# ------------------------------------------------------------------------------------------ detectors
# name -> (head, backbone family, min side asked for, traced size, checked size); the export module raises the min
# side to keep the coarsest FPN level 2 cells wide and to the backbone's export_min_size (DETECTOR_MIN_SIDE)
DETECTORS = {
    "mask_rcnn_resnet": ("mask_rcnn", "resnet", 64, (128, 160), (192, 96)),
    "mask_rcnn_dat_pp": ("mask_rcnn", "dat_pp", 64, (160, 192), (224, 128)),
    "retinanet_resnet": ("retinanet", "resnet", 64, (256, 320), (192, 288)),
}
# Mask R-CNN: P6 (stride 64) + 32; DAT++ small: its export_min_size; RetinaNet: P7 (stride 128) + 32
DETECTOR_MIN_SIDE = {"mask_rcnn_resnet": 96, "mask_rcnn_dat_pp": 128, "retinanet_resnet": 160}


def _detector(name: str):
    from dense.modeling import build_model

    head, family, *_ = DETECTORS[name]
    torch.manual_seed(0)
    model = build_model(small_model_cfg(head, family)).eval()
    if head == "retinanet":  # mmdet's init scores every anchor ~ the prior: spread them (no ties) and keep them all
        model.bbox_head.score_thresh = 0.0
        for m in model.bbox_head.modules():
            if isinstance(m, torch.nn.Conv2d):
                torch.nn.init.normal_(m.weight, std=0.05)
    return model


def _detections(model, images: torch.Tensor) -> tuple:
    from dense.structures import ImageList

    r = model.inference(ImageList.from_tensors([images[0]], model.size_divisibility))[0]
    return (r.pred_boxes, r.scores, r.pred_classes) + ((r.pred_mask_probs,) if r.has("pred_mask_probs") else ())


@pytest.mark.parametrize("name", list(DETECTORS))
def test_detector_exports_with_dynamic_size(name):
    """dense.export.export_program of Mask R-CNN / RetinaNet (NMS and score thresholds inside: a data-dependent
    number of detections): traced at one size, the program's boxes, scores, classes (and mask probabilities) equal
    eager at another."""
    from dense.export import export_module, export_program

    _, _, low, traced, checked = DETECTORS[name]
    model = _detector(name)
    assert export_module(model).min_size == DETECTOR_MIN_SIDE[name]
    program = export_program(model, torch.randn(1, 3, *traced), min_size=low, max_size=1024)
    x = torch.randn(1, 3, *checked)
    with torch.no_grad():
        got, expected = program.module()(x), _detections(model, x)
    assert len(expected[0]) > 10, "too few detections to compare"
    for a, b in zip(got, expected):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-4)


def test_detector_program_handles_no_detection():
    """A program whose NMS keeps nothing runs and gives empty outputs (torchvision's own fake NMS promised at least 2
    kept boxes, so such a program failed its runtime check: dense.modeling.detection.nms registers 0 <= kept <= N)."""
    from dense.export import export_program

    _, _, low, traced, checked = DETECTORS["mask_rcnn_resnet"]
    model = _detector("mask_rcnn_resnet")
    model.roi_head.score_thresh = 2.0  # no class probability passes: the box head's NMS gets no box
    program = export_program(model, torch.randn(1, 3, *traced), min_size=low, max_size=1024)
    x = torch.randn(1, 3, *checked)
    with torch.no_grad():
        got, expected = program.module()(x), _detections(model, x)
    assert [tuple(t.shape) for t in got] == [tuple(t.shape) for t in expected] == [(0, 4), (0,), (0,), (0, 28, 28)]


@pytest.mark.parametrize("name,outputs", [("mask_rcnn_resnet", ["boxes", "scores", "classes", "mask_probs"]),
                                          ("retinanet_resnet", ["boxes", "scores", "classes"])])
def test_detector_onnx_runs_in_onnxruntime(name, outputs, tmp_path):
    """Mask R-CNN / RetinaNet as ONNX files with dynamic height and width (NMS -> NonMaxSuppression, RoIAlign ->
    RoiAlign): a stock onnxruntime gives eager's detections (and mask probabilities) at another size."""
    import onnxruntime

    from dense.export import export_onnx

    _, _, low, traced, checked = DETECTORS[name]
    model = _detector(name)
    export_onnx(model, torch.randn(1, 3, *traced), str(tmp_path / "model.onnx"), min_size=low, max_size=1024)
    session = onnxruntime.InferenceSession(str(tmp_path / "model.onnx"), providers=["CPUExecutionProvider"])
    assert [o.name for o in session.get_outputs()] == outputs
    x = torch.randn(1, 3, *checked)
    got = session.run(None, {"images": x.numpy()})
    with torch.no_grad():
        expected = _detections(model, x)
    assert len(expected[0]) > 10
    for a, b in zip(got, expected):  # boxes in pixels: 1e-3 px
        torch.testing.assert_close(torch.from_numpy(a), b, rtol=1e-4, atol=1e-3)


# ------------------------------------------------------------------------------------------ torch.compile
# Detectors and Mask2Former's panoptic / instance inference keep graph breaks where an output size depends on the
# data (NMS, score thresholds, the segments kept): torch.compile runs them as several graphs (README "Export and
# compile" lists them); their export forms above trace as one program. Semantic inference has none:
@pytest.mark.parametrize("head,family", [("semantic_fpn", "dat_pp"), ("upernet", "davit"), ("light_ham", "dsan"),
                                         ("mask2former", "vit_adapter_deit")])
def test_semantic_inference_compiles_as_one_graph(head, family, synthetic_root):
    """torch._dynamo.explain of the model's whole inference (list of input dicts in, sem_seg at the image size out):
    0 graph breaks (LightHam's seeded NMF bases are a buffer, not a torch.Generator made during the forward)."""
    from dense.data import DatasetCatalog, build_mapper
    from dense.modeling import build_model

    cfg = small_model_cfg(head, family)
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    inputs = build_mapper(cfg, False)(DatasetCatalog.get(cfg.DATASETS.TEST[0])[0])
    torch._dynamo.reset()
    with torch.no_grad():
        explained = torch._dynamo.explain(model)([inputs])
    assert explained.graph_break_count == 0, [str(b.reason)[:200] for b in explained.break_reasons]


@pytest.mark.parametrize("size", [1, 2, 3, 6])
def test_adaptive_pool_export_form_equals_pytorch(size):
    """dense's AdaptiveAvgPool2d as exported (averaging matrices, dynamic sides) equals PyTorch's adaptive pooling on
    sides that the bins divide unevenly, at sizes other than the traced one."""
    from dense.modeling.layers import AdaptiveAvgPool2d

    program = torch.export.export(AdaptiveAvgPool2d(size), (torch.randn(2, 3, 16, 16),),
                                  dynamic_shapes=({2: Dim("h", min=2, max=64), 3: Dim("w", min=2, max=64)},))
    for h, w in ((7, 9), (5, 23), (64, 40)):
        x = torch.randn(2, 3, h, w)
        torch.testing.assert_close(program.module()(x), torch.nn.functional.adaptive_avg_pool2d(x, size))
