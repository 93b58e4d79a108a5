"""dense's whole semantic-segmentation test path equals the authors' mmsegmentation 0.x one, end to end: image file ->
dense's test mapper (build_mapper(cfg, is_train=False)) -> the model in whole mode, slide mode and multi-scale + flip
(TEST.AUG) -> class probabilities at the original image size, for the three head families of the paper rows:
UperNet + FCN aux (DaViT row, mmseg 0.11), Semantic FPN (DAT++ row, mmseg 0.29) and LightHam (DSAN row, mmseg 0.26).

The references (tests/data/parity/mmseg_<family>_probs.pt, made by tests/data/parity/make_mmseg_whole_slide_ms.py; read
a file's `notes`) hold the stand-in weights' key table and seed, the crop of the real photograph, the probabilities
mmseg's own pipeline + EncoderDecoder computed, and the tolerance. The models are shrunk identically on both sides
(DaViT backbone, narrow heads, 4 classes: the file's `dense_opts`); the row's test pipeline, head, neck, in_index,
align_corners and test settings are kept. Multi-scale + flip (12 views up to 896 x 1344) takes ~17-27 s per family on
2 CPU cores, whole and slide ~3-7 s.
"""
import hashlib
import os

import pytest
import torch

from dense.data import build_mapper

from conftest import REPO, sample_photo
from golden_utils import mmseg_stand_in_model, photo_crop_file

PARITY_DIR = os.path.join(REPO, "tests", "data", "parity")
FAMILIES = ["upernet_davit", "sfpn_dat", "lightham_dsan"]
MODES = ["whole", "slide", "slide_256", "msflip"]
_CACHE = {}


def reference(family: str) -> dict:
    """The family's reference file; the test fails (never skips) when it is absent."""
    if family not in _CACHE:
        path = os.path.join(PARITY_DIR, f"mmseg_{family}_probs.pt")
        if not os.path.isfile(path):
            pytest.fail(f"parity reference {os.path.relpath(path, REPO)} not found: make it with "
                        f"tests/data/parity/make_mmseg_whole_slide_ms.py --family {family} (see its docstring)",
                        pytrace=False)
        _CACHE[family] = torch.load(path, weights_only=True)
    return _CACHE[family]


def test_reference_input_is_this_photograph():
    for family in FAMILIES:
        ref = reference(family)
        assert hashlib.sha256(open(sample_photo(), "rb").read()).hexdigest() == ref["source_sha256"]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("family", FAMILIES)
def test_probabilities_equal_mmseg(family, mode, tmp_path):
    ref = reference(family)
    expected = ref["modes"][mode]
    cfg, model = mmseg_stand_in_model(ref["dense_config"], [*ref["dense_opts"], *ref["mode_opts"][mode]], ref,
                                      ref["versions"]["mmcv"], tmp_path)
    record = build_mapper(cfg, is_train=False)({"file_name": photo_crop_file(ref, tmp_path)})
    with torch.no_grad():
        out = model([record])[0]["sem_seg"]
    # whole / slide return logits at the original size, TEST.AUG the averaged probabilities
    probs = out if mode == "msflip" else out.softmax(0)
    ref_probs = expected["probs"]
    assert tuple(probs.shape) == tuple(ref_probs.shape), (tuple(probs.shape), tuple(ref_probs.shape))
    err = (probs - ref_probs).abs().max().item()
    print(f"{family} {mode}: max |dense - mmseg| = {err:.3g} (atol {ref['atol']}, mmseg fp32 vs fp64 "
          f"{expected['probs_fp64_maxdiff']:.2g})")
    assert torch.allclose(probs, ref_probs, atol=ref["atol"], rtol=ref["rtol"]), (
        f"{family} {mode}: max |dense - mmseg| = {err:.3g} > atol {ref['atol']}; mmseg's network inputs were "
        f"{expected['views']}")
