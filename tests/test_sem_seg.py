"""Semantic segmentation: every shipped config trains a step, heads load mmseg checkpoints, inference modes,
whole-model parameter counts, bad-sample policy."""
import glob
import os

import numpy as np
import pytest
import torch
from PIL import Image

from dense.checkpoint import DenseCheckpointer
from dense.config import get_cfg
from dense.data import BadSampleError, SemSegDatasetMapper
from dense.data.build import MapDataset
from dense.modeling import META_ARCH_REGISTRY, build_model
from dense.modeling.meta_arch.semantic_seg import slide_windows

from dense.modeling.layers import resize

from conftest import REPO


def _is_semantic(path: str) -> bool:
    cfg = get_cfg()
    cfg.merge_from_file(path)
    return cfg.MODEL.META_ARCHITECTURE == "SemanticSegmentor"


# the SemanticSegmentor configs (detection: tests/test_detection.py; Mask2Former: tests/test_mask2former.py;
# classification: tests/test_classification.py)
LEAF_CONFIGS = sorted(p for p in glob.glob(os.path.join(REPO, "configs", "**", "*.yaml"), recursive=True)
                      if not os.path.basename(p).startswith("Base-")
                      and not any(os.sep + d + os.sep in p for d in ("backbones", "mask_rcnn", "retinanet",
                                                                     "mask2former", "imagenet"))
                      and _is_semantic(p))
# configs whose model is too large to build and step in the default run (> ~150M parameters)
LARGE = ("large",)


def _cfg(path, **overrides):
    cfg = get_cfg()
    cfg.merge_from_file(path)
    cfg.MODEL.DEVICE = "cpu"
    for k, v in overrides.items():
        cfg.merge_from_list([k, v])
    return cfg


def _batch(num_classes, size=(64, 64), n=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [{"image": torch.randint(0, 256, (3, *size), generator=g, dtype=torch.uint8),
             "sem_seg": torch.randint(0, num_classes, size, generator=g)} for _ in range(n)]


@pytest.mark.parametrize("path", [pytest.param(p, marks=pytest.mark.slow) if any(k in p for k in LARGE) else p
                                  for p in LEAF_CONFIGS],
                         ids=lambda p: os.path.relpath(p, os.path.join(REPO, "configs")))
def test_every_config_builds_and_steps(path):
    """Every config builds its model, runs forward + backward on a small synthetic batch and inference."""
    cfg = _cfg(path)
    torch.manual_seed(0)
    model = build_model(cfg).train()
    losses = model(_batch(cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES))
    total = sum(losses.values())
    assert torch.isfinite(total)
    total.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.backbone.parameters())
    model.eval()
    with torch.no_grad():
        out = model([{"image": torch.zeros(3, 70, 90, dtype=torch.uint8), "height": 35, "width": 45}])
    assert out[0]["sem_seg"].shape == (cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES, 35, 45)


@pytest.mark.parametrize("config,paper_m", [
    ("ade20k/upernet/davit_tiny_160k", 60), ("ade20k/upernet/davit_small_160k", 81),
    ("ade20k/upernet/davit_base_160k", 121), ("ade20k/upernet/vit_adapter_tiny_deit_512_160k", 36),
    ("ade20k/upernet/vit_adapter_small_deit_512_160k", 58), ("ade20k/upernet/vit_adapter_base_deit_512_160k", 134),
    ("ade20k/upernet/vit_adapter_large_augreg_512_160k", 364), ("ade20k/upernet/vit_adapter_large_beit_640_160k", 451),
    ("ade20k/light_ham/dsan_t_160k", 4.6), ("ade20k/light_ham/dsan_s_160k", 20.7)])
def test_whole_model_param_counts(config, paper_m):
    """The papers' whole-model sizes, in millions as their tables print them (rounded or truncated: within 1M).
    DaViT UperNet T/S/B 60/81/121M; ViT-Adapter UperNet DeiT-T/S/B 36/58/134M, AugReg-L 364M, BEiT-L 451M;
    DSAN LightHam T/S 4.6/20.7M (tolerance 0.1M for these).
    Built on the meta device: no memory is allocated."""
    cfg = _cfg(os.path.join(REPO, "configs", f"{config}.yaml"))
    with torch.device("meta"):
        model = META_ARCH_REGISTRY.get(cfg.MODEL.META_ARCHITECTURE).from_config(cfg)
    tolerance = 1.0 if paper_m > 30 else 0.1
    assert abs(sum(p.numel() for p in model.parameters()) / 1e6 - paper_m) < tolerance


# ------------------------------------------------------------------ released mmseg checkpoints of each head
def _bn(prefix):
    return [f"{prefix}.{k}" for k in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")]


def _mmseg_head_keys(head: str, levels: int = 4) -> list[str]:
    """mmsegmentation's module names for each head (mmseg/models/decode_heads, mmcv ConvModule): the
    independent spec the dense heads must load."""
    if head == "upernet":
        keys = [f"decode_head.psp_modules.{i}.1.conv.weight" for i in range(4)]
        keys += [k for i in range(4) for k in _bn(f"decode_head.psp_modules.{i}.1.bn")]
        for name in ["bottleneck", "fpn_bottleneck"] + [f"lateral_convs.{i}" for i in range(levels - 1)] + [
                f"fpn_convs.{i}" for i in range(levels - 1)]:
            keys += [f"decode_head.{name}.conv.weight"] + _bn(f"decode_head.{name}.bn")
        keys += ["decode_head.conv_seg.weight", "decode_head.conv_seg.bias", "auxiliary_head.convs.0.conv.weight",
                 "auxiliary_head.conv_seg.weight", "auxiliary_head.conv_seg.bias"] + _bn("auxiliary_head.convs.0.bn")
        return keys
    if head == "semantic_fpn":
        keys = [f"neck.{kind}.{i}.conv.{p}" for kind in ("lateral_convs", "fpn_convs") for i in range(levels)
                for p in ("weight", "bias")]
        for i, n in enumerate([1, 1, 2, 3]):
            for j in range(n):
                keys += ([f"decode_head.scale_heads.{i}.{2 * j}.conv.weight"]
                         + _bn(f"decode_head.scale_heads.{i}.{2 * j}.bn"))
        return keys + ["decode_head.conv_seg.weight", "decode_head.conv_seg.bias"]
    if head == "light_ham":
        gn = lambda p: [f"{p}.weight", f"{p}.bias"]  # noqa: E731
        return (["decode_head.squeeze.conv.weight", *gn("decode_head.squeeze.gn"),
                 "decode_head.hamburger.ham_in.conv.weight", "decode_head.hamburger.ham_in.conv.bias",
                 "decode_head.hamburger.ham_out.conv.weight", *gn("decode_head.hamburger.ham_out.gn"),
                 "decode_head.align.conv.weight", *gn("decode_head.align.gn"), "decode_head.conv_seg.weight",
                 "decode_head.conv_seg.bias"])
    raise KeyError(head)


@pytest.mark.parametrize("head,config", [("upernet", "ade20k/upernet/davit_tiny_160k.yaml"),
                                         ("semantic_fpn", "ade20k/semantic_fpn/dat_pp_tiny_80k.yaml"),
                                         ("light_ham", "synthetic/light_ham/dat_pp_nano_demo.yaml")])
def test_released_head_checkpoint_loads_completely(tmp_path, head, config):
    """A stand-in released mmseg checkpoint (backbone + neck + decode_head + auxiliary_head in mmseg's key
    layout) loads with nothing missing and nothing unexpected."""
    model = build_model(_cfg(os.path.join(REPO, "configs", config)))
    own = model.state_dict()
    renamed = {"decode_head.": "sem_seg_head.", "auxiliary_head.": "aux_head.", "neck.": "neck."}
    sd = {}
    for key in _mmseg_head_keys(head):
        prefix = next(p for p in renamed if key.startswith(p))
        ours = renamed[prefix] + key[len(prefix):]
        assert ours in own, f"{key}: dense has no {ours}"
        sd[key] = (torch.randn_like(own[ours].float()).to(own[ours].dtype) if own[ours].is_floating_point()
                   else own[ours])
    head_keys = {k for k in own if not k.startswith("backbone.")}
    assert len(sd) == len(head_keys), sorted(head_keys - {renamed[p] + k[len(p):] for k in sd for p in renamed
                                                          if k.startswith(p)})
    sd.update({"backbone." + k[len("backbone."):]: v for k, v in own.items() if k.startswith("backbone.")})
    torch.save({"meta": {"CLASSES": ("a",)}, "state_dict": sd}, tmp_path / "released.pth")
    ck = DenseCheckpointer(build_model(_cfg(os.path.join(REPO, "configs", config))))
    ck.load(str(tmp_path / "released.pth"))
    r = ck.last_report
    assert not r.missing and not r.unexpected and not r.dropped and not r.mismatched, r.summary()


# --------------------------------------------------------------------------------------- inference modes
def test_slide_windows_cover_the_image():
    for h, w, crop, stride in [(100, 80, (64, 64), (40, 40)), (30, 20, (64, 64), (40, 40)),
                               (517, 683, (512, 512), (341, 341))]:
        cover = np.zeros((h, w), int)
        for y0, y1, x0, x1 in slide_windows(h, w, crop, stride):
            assert 0 <= y0 < y1 <= h and 0 <= x0 < x1 <= w
            assert y1 - y0 == min(crop[0], h) and x1 - x0 == min(crop[1], w)
            cover[y0:y1, x0:x1] += 1
        assert cover.min() >= 1
    assert slide_windows(517, 683, (512, 512), (341, 341)) == [(0, 512, 0, 512), (0, 512, 171, 683),
                                                               (5, 517, 0, 512), (5, 517, 171, 683)]


@pytest.fixture(scope="module")
def tiny_model():
    cfg = _cfg(os.path.join(REPO, "tests", "configs", "tiny_semseg.yaml"))
    torch.manual_seed(0)
    return cfg, build_model(cfg).eval()


@pytest.mark.parametrize("size", [(40, 50), (64, 64), (97, 131)])
def test_slide_inference_sizes_and_whole_equivalence(tiny_model, size):
    cfg, model = tiny_model
    image = torch.randint(0, 256, (3, *size), dtype=torch.uint8)
    model.test_mode, model.slide_crop, model.slide_stride = "slide", (64, 64), (40, 40)
    with torch.no_grad():
        slide = model([{"image": image}])[0]["sem_seg"]
        model.test_mode = "whole"
        whole = model([{"image": image}])[0]["sem_seg"]
    assert slide.shape == whole.shape == (6, *size)
    if size[0] <= 64 and size[1] <= 64:  # one window covers the image: identical to whole-image inference
        torch.testing.assert_close(slide, whole)
    else:
        assert torch.isfinite(slide).all() and not torch.equal(slide, whole)


def test_multiscale_flip_inference(tiny_model):
    cfg, model = tiny_model
    model.aug_ratios, model.aug_flip = (0.5, 0.75, 1.0, 1.25, 1.5, 1.75), True
    try:
        with torch.no_grad():
            probs = model([{"image": torch.randint(0, 256, (3, 50, 70), dtype=torch.uint8), "height": 100,
                            "width": 140}])[0]["sem_seg"]
    finally:
        model.aug_ratios, model.aug_flip = (), False
    assert probs.shape == (6, 100, 140)
    torch.testing.assert_close(probs.sum(0), torch.ones(100, 140))  # averaged softmax probabilities


def test_multiscale_flip_inference_on_the_mappers_views(tiny_model):
    """With the mapper's ``aug_images`` (mmseg's views of the original image): the probabilities of each view and
    its flip, resized to the output size, averaged; a single view without flip is its softmax alone."""
    cfg, model = tiny_model
    g = torch.Generator().manual_seed(0)
    views = [torch.randint(0, 256, (3, 40 + 10 * i, 56 + 14 * i), generator=g, dtype=torch.uint8) for i in range(3)]
    x = {"image": views[1], "aug_images": views, "height": 100, "width": 140}
    model.aug_ratios, model.aug_flip = (0.5, 0.75, 1.0), True
    try:
        with torch.no_grad():
            probs = model([x])[0]["sem_seg"]
            model.aug_flip = False
            one = model([dict(x, aug_images=views[:1])])[0]["sem_seg"]
            expected = resize(model.single_scale(model.normalize(views[0]))[None], (100, 140), "bilinear")[0]
    finally:
        model.aug_ratios, model.aug_flip = (), False
    assert probs.shape == (6, 100, 140)
    torch.testing.assert_close(probs.sum(0), torch.ones(100, 140))
    torch.testing.assert_close(one, expected.softmax(0))


# --------------------------------------------------------------------------------------- bad samples
def test_bad_samples_are_skipped_and_counted_when_configured(tmp_path, tiny_cfg):
    good, corrupt, out_of_range = (tmp_path / f"{n}.jpg" for n in ("good", "corrupt", "range"))
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(good)
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(out_of_range)
    corrupt.write_bytes(b"not an image")
    Image.fromarray(np.zeros((16, 16), np.uint8)).save(tmp_path / "ok.png")
    Image.fromarray(np.full((16, 16), 40, np.uint8)).save(tmp_path / "bad.png")
    records = [{"file_name": str(corrupt), "sem_seg_file_name": str(tmp_path / "ok.png")},
               {"file_name": str(out_of_range), "sem_seg_file_name": str(tmp_path / "bad.png")},
               {"file_name": str(good), "sem_seg_file_name": str(tmp_path / "ok.png")}]
    mapper = SemSegDatasetMapper(tiny_cfg, is_train=True)
    with pytest.raises(BadSampleError):
        MapDataset(records, mapper, "error")[(0, 1)]
    ds = MapDataset(records, mapper, "skip")
    out = ds[(0, 1)]
    assert out["file_name"] == str(good) and ds.skipped == 2


def test_hamburger_eval_determinism():
    """LightHamHead's NMF draws random bases at every forward (upstream). With HAM.EVAL_SEED >= 0 evaluation is
    deterministic; with a negative seed two evaluations differ, as upstream's."""
    from dense.modeling.heads.ham import NMF2D

    x = torch.rand(2, 32, 6, 7)
    nmf = NMF2D(32, rank=8, eval_seed=0).eval()
    assert torch.equal(nmf(x), nmf(x))
    nmf.eval_seed = -1
    assert not torch.equal(nmf(x), nmf(x))
    nmf.train()
    torch.manual_seed(3)
    a = nmf(x)
    torch.manual_seed(3)
    assert torch.equal(a, nmf(x))  # training draws from the (per-step reseeded) global RNG
