"""dense's Mask2Former semantic test path equals ViT-Adapter's (czczup/ViT-Adapter segmentation/, mmseg 0.20.2 +
mmdet 2.22.0 + mmcv 1.4.2), end to end, for the ViT-Adapter-L (BEiT) + Mask2Former ADE20K 640 row: image file ->
dense's test mapper (build_mapper(cfg, is_train=False): keep-ratio resize to (2048, 640) by cv2, ResizeToMultiple 32)
-> the model in whole mode and slide mode (crop 640, stride 426; and a 320 / 213 grid) -> semantic scores at the
original size (ViT-Adapter's combination: softmax(class)[:-1] x sigmoid(mask) summed over queries at stride 4, scores
upsampled) -> softmax, compared with the class probabilities EncoderDecoderMask2Former.inference returns.

The reference (tests/data/parity/vit_adapter_mask2former_probs.pt, made by
tests/data/parity/make_vit_adapter_mask2former.py; read its `notes`) holds the stand-in weights' key tables and seed,
the crops of the real photograph, the probabilities and the tolerance. The models are shrunk identically on both
sides (each model's `dense_opts`); the row's test pipeline, test_cfg and inference combination are kept. Whole mode
runs on a square crop (the upstream seg BEiTAdapter only runs at img_size x img_size). ~15-50 s on 2 shared CPU
cores (slide_320: 15 windows).
"""
import hashlib
import os

import cv2
import numpy as np
import pytest
import torch

from dense.checkpoint import DenseCheckpointer
from dense.config import get_cfg
from dense.data import build_mapper
from dense.modeling import build_model

from conftest import REPO, sample_photo
from shared_data import stand_in_weights

REFERENCE = os.path.join(REPO, "tests", "data", "parity", "vit_adapter_mask2former_probs.pt")
MODES = ["whole", "slide", "slide_320"]
_CACHE = {}


def reference() -> dict:
    """The reference file; the test fails (never skips) when it is absent."""
    if "ref" not in _CACHE:
        if not os.path.isfile(REFERENCE):
            pytest.fail(f"parity reference {os.path.relpath(REFERENCE, REPO)} not found: make it with "
                        f"tests/data/parity/make_vit_adapter_mask2former.py (see its docstring)", pytrace=False)
        _CACHE["ref"] = torch.load(REFERENCE, weights_only=True)
    return _CACHE["ref"]


def _image_file(crop: dict, tmp_path) -> str:
    """A crop of grace_hopper.jpg (cv2.imread, BGR) saved losslessly as PNG, as the generator wrote it."""
    y0, y1, x0, x1 = crop["crop"]
    image = np.ascontiguousarray(cv2.imread(sample_photo(), cv2.IMREAD_COLOR)[y0:y1, x0:x1])
    assert hashlib.sha256(image.tobytes()).hexdigest() == crop["input_bgr_sha256"]
    path = str(tmp_path / "crop.png")
    assert cv2.imwrite(path, image)
    return path


def _model(ref: dict, mode: str, tmp_path):
    """dense's model for the row's yaml + the reference model's shrinking opts + the mode's TEST opts, with the
    stand-in weights saved in mmseg's checkpoint layout and loaded through DenseCheckpointer (every key, nothing
    left over)."""
    spec = ref["models"][ref["modes"][mode]["model"]]
    cfg = get_cfg()
    cfg.merge_from_file(os.path.join(REPO, ref["dense_config"]))
    cfg.merge_from_list(["MODEL.DEVICE", "cpu", *spec["dense_opts"], *ref["modes"][mode]["mode_opts"]])
    model = build_model(cfg).eval()
    weights = stand_in_weights(spec["keys"], spec["seed"])
    for key, gain in spec["gains"].items():
        weights[key] = weights[key] * gain
    path = str(tmp_path / "mmseg_model.pth")
    torch.save({"meta": {"mmcv_version": ref["versions"]["mmcv"]}, "state_dict": weights}, path)
    ck = DenseCheckpointer(model)
    ck.load(path)
    r = ck.last_report
    assert not r.missing and not r.unexpected and not r.mismatched and not r.dropped, r.summary()
    return cfg, model


def test_reference_input_is_this_photograph():
    assert hashlib.sha256(open(sample_photo(), "rb").read()).hexdigest() == reference()["source_sha256"]


@pytest.mark.parametrize("mode", MODES)
def test_probabilities_equal_vit_adapter(mode, tmp_path):
    ref = reference()
    expected = ref["modes"][mode]
    cfg, model = _model(ref, mode, tmp_path)
    record = build_mapper(cfg, is_train=False)({"file_name": _image_file(ref["crops"][expected["crop"]], tmp_path)})
    assert [(tuple(record["image"].shape[-2:]), False)] == [tuple(v) for v in expected["views"]], (
        f"network input {tuple(record['image'].shape[-2:])}, ViT-Adapter's {expected['views']}")
    with torch.no_grad():
        scores = model([record])[0]["sem_seg"]
    probs = scores.softmax(0)  # EncoderDecoderMask2Former.inference: softmax of the resized scores
    ref_probs = expected["probs"]
    assert tuple(probs.shape) == tuple(ref_probs.shape), (tuple(probs.shape), tuple(ref_probs.shape))
    err = (probs - ref_probs).abs().max().item()
    print(f"{mode}: max |dense - ViT-Adapter| = {err:.3g} (atol {expected['atol']}, ViT-Adapter fp32 vs fp64 "
          f"{expected['probs_fp64_maxdiff']:.2g})")
    assert torch.allclose(probs, ref_probs, atol=expected["atol"], rtol=ref["rtol"]), (
        f"{mode}: max |dense - ViT-Adapter| = {err:.3g} > atol {expected['atol']}; ViT-Adapter's network input "
        f"{expected['views']}, {expected['windows']} window(s)")
