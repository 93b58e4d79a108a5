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

import pytest
import torch

from dense.data import build_mapper

from conftest import REPO, sample_photo
from golden_utils import mmseg_stand_in_model, photo_crop_file

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


def test_reference_input_is_this_photograph():
    assert hashlib.sha256(open(sample_photo(), "rb").read()).hexdigest() == reference()["source_sha256"]


@pytest.mark.parametrize("mode", MODES)
def test_probabilities_equal_vit_adapter(mode, tmp_path):
    ref = reference()
    expected = ref["modes"][mode]
    spec = ref["models"][expected["model"]]
    cfg, model = mmseg_stand_in_model(ref["dense_config"], [*spec["dense_opts"], *expected["mode_opts"]], spec,
                                      ref["versions"]["mmcv"], tmp_path)
    record = build_mapper(cfg, is_train=False)({"file_name": photo_crop_file(ref["crops"][expected["crop"]], tmp_path)})
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
