"""Helpers to run a backbone golden file (tests/data/parity/golden) through dense's checkpoint loading, and the
whole-model parity references (tests/data/parity/*.pt) through dense's pipeline."""
import hashlib
import os

import cv2
import numpy as np
import torch

from dense.checkpoint import DenseCheckpointer
from dense.config import get_cfg
from dense.modeling import build_backbone, build_model

from conftest import REPO, sample_photo
from shared_data import golden_tools, shared_file


def load_golden(name: str) -> dict:
    """A golden file of tests/data/parity/golden (the test fails when it is absent)."""
    return torch.load(shared_file(f"{name}.pt"), weights_only=False)


def stand_in_weights(keys: dict, seed: int) -> dict:
    return golden_tools().stand_in_weights(keys, seed)


def released_checkpoint(g: dict, path: str) -> set:
    """Write stand-in weights in the golden file's released layout (wrapper + prefix); return their keys."""
    sd = stand_in_weights(g["keys"], g["seed"])
    prefix = g["prefix"]
    sd = {(k if k.startswith(prefix) else prefix + k): v for k, v in sd.items()}
    torch.save({g["wrapper"]: sd, "meta": {"mmcv_version": "1.4.0"}} if g["wrapper"] else sd, path)
    return set(sd)


def model_from_config(*config_files: str, opts=()):
    cfg = get_cfg()
    for f in config_files:
        cfg.merge_from_file(os.path.join(REPO, f))
    cfg.merge_from_list(["MODEL.DEVICE", "cpu", *opts])
    return build_model(cfg).eval()


def load_released(model, path: str, expected_keys: set):
    """Load through DenseCheckpointer and assert every key of the table was loaded (none unexpected)."""
    ck = DenseCheckpointer(model)
    ck.load(path)
    r = ck.last_report
    assert not r.unexpected and not r.mismatched and not r.dropped, r.summary()
    # every table key became a distinct loaded backbone tensor (names may be converted), none missing
    loaded_backbone = [k for k in r.loaded if k.startswith("backbone.")]
    assert len(loaded_backbone) == len(expected_keys), (len(loaded_backbone), len(expected_keys))
    assert not [k for k in r.missing
                if k.startswith("backbone.") and not k.endswith("num_batches_tracked")], r.summary()
    return r


def check_golden_backbone(tmp_path, name: str, config: str, released_name: str) -> None:
    """The golden file ``name``'s stand-in weights, saved in its released layout as ``released_name`` and loaded
    into a Semantic FPN model on configs/backbones/<config> (every key), give the golden backbone outputs."""
    g = load_golden(name)
    path = str(tmp_path / released_name)
    keys = released_checkpoint(g, path)
    model = model_from_config("configs/Base-SemanticFPN.yaml", f"configs/backbones/{config}")
    load_released(model, path, keys)
    with torch.no_grad():
        out = model.backbone(g["input"])
    assert_matches(out, g)


def assert_matches(outputs: dict, g: dict, atol_key="atol", rtol_key="rtol", expected_key="outputs"):
    problems = golden_tools().compare(outputs, g[expected_key], g[atol_key], g[rtol_key])
    assert problems == [], problems


def backbone_config(config: str, opts=()):
    """The config of configs/backbones/<config> (+ overrides)."""
    cfg = get_cfg()
    cfg.merge_from_file(os.path.join(REPO, "configs", "backbones", config))
    cfg.merge_from_list(list(opts))
    return cfg


def param_count(config: str) -> int:
    """Parameters of the backbone of configs/backbones/<config> (built on the meta device)."""
    with torch.device("meta"):
        return sum(p.numel() for p in build_backbone(backbone_config(config)).parameters())


def classification_gflops(config: str, size: int, classifier_in: int) -> float:
    """GFLOPs of the classification form at size x size: this backbone + a 1000-way linear classifier on
    ``classifier_in`` features (the dense form's output norms instead of the classifier's single norm change the
    count by < 0.1%). One multiply-add = one flop; grid_sample, softmax and GELU are not counted, as in the papers'
    fvcore counts."""
    from dense.utils.analysis import flop_count

    backbone = build_backbone(backbone_config(config)).eval()
    with torch.no_grad():
        flops, _ = flop_count(backbone, (torch.zeros(1, 3, size, size),))
    return (flops + classifier_in * 1000) / 1e9


def classification_checkpoint(table: dict, path, extra: dict) -> dict:
    """Write stand-in weights of a released ImageNet file's key table (``table``: keys, wrapper, prefix) with the
    file's other entries ``extra``; return the state dict."""
    sd = stand_in_weights({k: tuple(v) for k, v in table["keys"].items()}, 3)
    sd = {k[len(table.get("prefix", "")):]: v for k, v in sd.items()}
    torch.save({table["wrapper"]: sd, **extra} if table["wrapper"] else sd, path)
    return sd


def photo_crop_file(crop: dict, tmp_path) -> str:
    """A parity reference's input: the crop ``crop["crop"]`` (y0, y1, x0, x1) of grace_hopper.jpg (cv2.imread, BGR),
    checked against ``crop["input_bgr_sha256"]`` and saved losslessly as PNG, as the reference's generator did."""
    y0, y1, x0, x1 = crop["crop"]
    image = np.ascontiguousarray(cv2.imread(sample_photo(), cv2.IMREAD_COLOR)[y0:y1, x0:x1])
    assert hashlib.sha256(image.tobytes()).hexdigest() == crop["input_bgr_sha256"]
    path = str(tmp_path / "crop.png")
    assert cv2.imwrite(path, image)
    return path


def mmseg_stand_in_model(config: str, opts: list, spec: dict, mmcv_version: str, tmp_path):
    """(cfg, model) of dense's ``config`` + ``opts`` on CPU, loaded through DenseCheckpointer from a parity reference's
    stand-in weights (``spec``: ``keys``, ``seed``, ``gains`` per key) saved in mmseg's checkpoint layout: every key
    must load, nothing left over."""
    cfg = get_cfg()
    cfg.merge_from_file(os.path.join(REPO, config))
    cfg.merge_from_list(["MODEL.DEVICE", "cpu", *opts])
    model = build_model(cfg).eval()
    weights = stand_in_weights(spec["keys"], spec["seed"])
    for key, gain in spec["gains"].items():
        weights[key] = weights[key] * gain
    path = str(tmp_path / "mmseg_model.pth")
    torch.save({"meta": {"mmcv_version": mmcv_version}, "state_dict": weights}, path)
    ck = DenseCheckpointer(model)
    ck.load(path)
    r = ck.last_report
    assert not r.missing and not r.unexpected and not r.mismatched and not r.dropped, r.summary()
    return cfg, model
