"""The test-time input of the mmseg rows equals mmsegmentation's own pipeline (tests/data/parity: made by running
mmseg 0.11.0 + mmcv 1.3.0, see the file's notes and tests/data/parity/make_mmseg_ade20k_test_pipeline.py) on a real
photograph (matplotlib's grace_hopper.jpg) and four awkwardly sized crops of it."""
import hashlib
import os

import cv2
import numpy as np
import pytest
import torch

from dense.config import get_cfg
from dense.data import build_mapper
from dense.data.transforms import rescale_size

from conftest import REPO, sample_photo

PARITY = os.path.join(REPO, "tests", "data", "parity", "mmseg_ade20k_test_pipeline.pt")
DAVIT_UPERNET = os.path.join(REPO, "configs", "ade20k", "upernet", "davit_tiny_160k.yaml")


@pytest.fixture(scope="module")
def reference():
    return torch.load(PARITY, weights_only=True)



def _image_file(name: str, entry: dict, tmp_path) -> str:
    """The reference's input file: the JPEG, or its crop saved losslessly (the generator's recipe)."""
    if entry["crop"] is None:
        return sample_photo()
    y0, y1, x0, x1 = entry["crop"]
    path = str(tmp_path / f"{name}.png")
    cv2.imwrite(path, cv2.imread(sample_photo(), cv2.IMREAD_COLOR)[y0:y1, x0:x1])
    return path


def _sha(array: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()


def _mapped_bgr(config: str, path: str, opts=()) -> np.ndarray:
    """dense's test mapper output as mmseg holds it (uint8 HWC BGR)."""
    cfg = get_cfg()
    cfg.merge_from_file(config)
    cfg.merge_from_list(list(opts))
    image = build_mapper(cfg, is_train=False)({"file_name": path})["image"]
    image = image.flip(0) if cfg.INPUT.FORMAT == "RGB" else image
    return image.permute(1, 2, 0).numpy()


def test_reference_input_is_this_photograph(reference):
    src = reference["source"]
    assert hashlib.sha256(open(sample_photo(), "rb").read()).hexdigest() == src["sha256"]
    assert _sha(cv2.imread(sample_photo(), cv2.IMREAD_COLOR)) == src["decoded_bgr_sha256"]


@pytest.mark.parametrize("name", ["grace_hopper", "crop_333x493", "crop_599x511", "crop_547x37", "crop_29x500"])
def test_single_scale_input_equals_mmseg(reference, tmp_path, name):
    """DaViT-T UperNet ADE20K (INPUT.RESIZE_BACKEND cv2): the resized image equals mmseg's bit for bit, and after
    the model's normalisation its values equal mmseg's Normalize (mmcv.imnormalize) within float32 rounding."""
    entry = reference["images"][name]
    path = _image_file(name, entry, tmp_path)
    ours = _mapped_bgr(DAVIT_UPERNET, path)
    single = entry["single"]
    assert ours.shape[:2] == tuple(single["shape"])
    assert _sha(ours) == single["resized_sha256"]
    theirs = cv2.imdecode(single["resized_webp"].numpy(), cv2.IMREAD_UNCHANGED)
    assert np.array_equal(ours, theirs)
    cfg = get_cfg()
    cfg.merge_from_file(DAVIT_UPERNET)
    rgb = torch.from_numpy(ours[..., ::-1].copy()).permute(2, 0, 1).float()
    mean, std = torch.tensor(cfg.MODEL.PIXEL_MEAN)[:, None, None], torch.tensor(cfg.MODEL.PIXEL_STD)[:, None, None]
    normalized = (rgb - mean) / std  # what PixelNormalizer computes
    lut = reference["normalize_lut"]  # mmcv.imnormalize's float32 value per (channel, grey level)
    mmseg = torch.stack([lut[c][rgb[c].long()] for c in range(3)])
    assert (normalized - mmseg).abs().max() <= 5e-7
    # the fast torchvision path is what the check tells apart: +-1 grey levels on a share of the pixels
    if tuple(single["shape"]) != tuple(entry["input_shape"]):
        fast = _mapped_bgr(DAVIT_UPERNET, path, ["INPUT.RESIZE_BACKEND", "torchvision"])
        assert fast.shape == ours.shape and not np.array_equal(fast, ours)


@pytest.mark.parametrize("name", ["grace_hopper", "crop_333x493", "crop_547x37", "crop_29x500"])
def test_multi_scale_view_sizes_follow_mmseg(reference, name):
    """tools/test.py --aug-test: each ratio r rescales the ORIGINAL image to fit (int(2048 r), int(512 r)) with the
    keep-ratio rule (dense.data.transforms.rescale_size), views ordered ratio-major, flip inner."""
    entry = reference["images"][name]
    h, w = entry["input_shape"]
    views = [(v["ratio"], v["flip"], tuple(v["shape"])) for v in entry["aug"]]
    expected = [(r, flip, rescale_size(h, w, int(2048 * r), int(512 * r)))
                for r in (0.5, 0.75, 1.0, 1.25, 1.5, 1.75) for flip in (False, True)]
    assert views == expected


@pytest.mark.parametrize("name", ["grace_hopper", "crop_333x493", "crop_29x500"])
def test_multi_scale_flip_views_equal_mmseg(reference, tmp_path, name):
    """TEST.AUG.ENABLED: the mapper's views (``aug_images``, each ratio from the ORIGINAL image) and the model's
    flips of them equal mmseg's 12 MultiScaleFlipAug views bit for bit, in mmseg's order."""
    entry = reference["images"][name]
    cfg = get_cfg()
    cfg.merge_from_file(DAVIT_UPERNET)
    cfg.TEST.AUG.ENABLED = True
    views = build_mapper(cfg, is_train=False)({"file_name": _image_file(name, entry, tmp_path)})["aug_images"]
    ours = [v.flip(-1) if flip else v for v in views for flip in (False, True)]  # the model's order
    ours = [(v.flip(0) if cfg.INPUT.FORMAT == "RGB" else v).permute(1, 2, 0).numpy() for v in ours]
    assert [_sha(v) for v in ours] == [v["resized_sha256"] for v in entry["aug"]]


@pytest.fixture(scope="module")
def detectron2_reference():
    return torch.load(os.path.join(REPO, "tests", "data", "parity", "detectron2_test_resize.pt"), weights_only=True)


@pytest.mark.parametrize("config, scale", [("ade20k/mask2former/r50_160k.yaml", "ade20k_512_2048"),
                                           ("coco/mask2former/r50_50ep.yaml", "coco_800_1333")])
@pytest.mark.parametrize("name", ["grace_hopper", "crop_333x493", "crop_599x511", "crop_547x37", "crop_29x500"])
def test_detectron2_rows_input_equals_detectron2(detectron2_reference, tmp_path, config, scale, name):
    """The Mask2Former R50 rows (INPUT.RESIZE_BACKEND pil): dense's test input equals Detectron2's DatasetMapper
    (read_image + ResizeShortestEdge, PIL bilinear on uint8; tests/data/parity/make_detectron2_test_resize.py ran
    Detectron2's own modules) bit for bit."""
    crop = detectron2_reference["crops"][name]
    entry = detectron2_reference["images"][name]
    rgb = _mapped_bgr(os.path.join(REPO, "configs", config), _image_file(name, {"crop": crop}, tmp_path))[..., ::-1]
    assert rgb.shape[:2] == tuple(entry[scale]["shape"])
    assert _sha(rgb) == entry[scale]["resized_rgb_sha256"], "the PIL resize (or the size rule) differs"
    if name == "crop_333x493":  # what the check tells apart: the other backends give other pixels
        for backend in ("torchvision", "cv2"):
            other = _mapped_bgr(os.path.join(REPO, "configs", config), _image_file(name, {"crop": crop}, tmp_path),
                                ["INPUT.RESIZE_BACKEND", backend])[..., ::-1]
            assert _sha(other) != entry[scale]["resized_rgb_sha256"]


def test_benchmark_resize_runs():
    """tools/benchmark.py resize prints each backend's time and its ratio to torchvision's (numbers not checked)."""
    from conftest import PY, run_tool

    out = run_tool([PY, "tools/benchmark.py", "resize", "--size", "128", "--repeat", "1"]).stdout
    assert "cv2" in out and "x torchvision" in out
