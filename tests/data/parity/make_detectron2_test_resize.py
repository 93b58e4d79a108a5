"""Make detectron2_test_resize.pt: what Detectron2's test-time input path gives the Mask2Former R50 rows.

Mask2Former (facebookresearch/Mask2Former) evaluates with Detectron2's default ``DatasetMapper(cfg, is_train=False)``:

    image = detection_utils.read_image(file_name, format="RGB")             # PIL decode + EXIF orientation
    T.AugmentationList([T.ResizeShortestEdge(MIN_SIZE_TEST, MAX_SIZE_TEST, "choice")])(T.AugInput(image))
    torch.as_tensor(image.transpose(2, 0, 1))                               # uint8 CHW, RGB

with (MIN_SIZE_TEST, MAX_SIZE_TEST) = (512, 2048) for ADE20K and (800, 1333) for COCO. This script runs exactly that,
with Detectron2's own modules, on matplotlib's grace_hopper.jpg and on the four awkward crops the mmseg reference
uses (saved losslessly as PNG, as the test does). It is our code calling their library; no Detectron2 source is kept
in the project. Detectron2's data modules are pure Python, so no build is needed; run by hand with the project's
.venv and a source tree of Detectron2 (here facebookresearch/detectron2 at 02b5c4e, 2026-06-06) on the path:

    mkdir -p /tmp/d2src && git -C <detectron2 clone> archive HEAD detectron2 | tar -x -C /tmp/d2src
    .venv/bin/python -m pip install --target /tmp/d2deps cloudpickle omegaconf hydra-core   # imported by d2.config
    PYTHONPATH=/tmp/d2src:/tmp/d2deps .venv/bin/python tests/data/parity/make_detectron2_test_resize.py

Layout (torch.load(..., weights_only=True)): notes, versions, crops {name: (y0, y1, x0, x1) or None},
images {name: {input_shape, input_rgb_sha256, <scale name>: {shape, resized_rgb_sha256}}}, where a sha256 is over the
C-contiguous uint8 HWC RGB bytes and <scale name> is "ade20k_512_2048" or "coco_800_1333".
"""
import hashlib
import os
import sys
import tempfile

import cv2
import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", ".."))  # tests/conftest.py: the sample photograph

from conftest import sample_photo  # noqa: E402

CROPS = {"grace_hopper": None, "crop_333x493": (13, 346, 7, 500), "crop_599x511": (1, 600, 0, 511),
         "crop_547x37": (41, 588, 233, 270), "crop_29x500": (300, 329, 5, 505)}
SCALES = {"ade20k_512_2048": (512, 2048), "coco_800_1333": (800, 1333)}


def _sha(a: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()


def main():
    import detectron2
    import PIL
    from detectron2.data import detection_utils, transforms as T

    images = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, crop in CROPS.items():
            path = sample_photo()
            if crop is not None:
                y0, y1, x0, x1 = crop
                path = os.path.join(tmp, f"{name}.png")
                cv2.imwrite(path, cv2.imread(sample_photo(), cv2.IMREAD_COLOR)[y0:y1, x0:x1])
            image = detection_utils.read_image(path, format="RGB")
            entry = {"input_shape": tuple(image.shape[:2]), "input_rgb_sha256": _sha(image)}
            for scale, (short, long) in SCALES.items():
                aug = T.AugInput(image.copy())
                T.AugmentationList([T.ResizeShortestEdge(short, long, "choice")])(aug)
                entry[scale] = {"shape": tuple(aug.image.shape[:2]), "resized_rgb_sha256": _sha(aug.image)}
            images[name] = entry
    out = {
        "notes": "Detectron2's DatasetMapper test path (read_image RGB + ResizeShortestEdge 'choice', PIL bilinear on "
                 "uint8) run with Detectron2's own modules by tests/data/parity/make_detectron2_test_resize.py on "
                 "matplotlib's grace_hopper.jpg and four crops of cv2.imread's BGR array saved as PNG.",
        "versions": {"detectron2": detectron2.__version__ + " (02b5c4e)", "Pillow": PIL.__version__,
                     "numpy": np.__version__, "opencv": cv2.__version__},
        "crops": CROPS, "images": images,
    }
    torch.save(out, os.path.join(HERE, "detectron2_test_resize.pt"))
    for name, e in images.items():
        print(name, e["input_shape"], {s: e[s]["shape"] for s in SCALES})


if __name__ == "__main__":
    main()
