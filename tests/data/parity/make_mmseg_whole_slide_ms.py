"""Make mmseg_<family>_probs.pt: the class probabilities at the ORIGINAL image size that the authors' mmsegmentation 0.x
test path computes for a crop of a real photograph, in whole mode, slide mode and multi-scale + flip (--aug-test), for
three head families of the paper rows:

    upernet_davit   DaViT-T UperNet + FCN aux  dingmyu/davit mmseg/configs/upernet_davit_512x512_160k_ade20k.py
                    mmsegmentation 0.11.0 + mmcv 1.3.0 (davit README)
    sfpn_dat        DAT-T++ Semantic FPN        LeapLabTHU/DAT-Segmentation configs/dat/fpn_tiny_80k_dp04_lr2.py
                    mmsegmentation 0.29.0 + mmcv 1.4.0 (DAT-Segmentation README)
    lightham_dsan   DSAN-T LightHamHead         MarcYugo/DSAN-Deformable-Spatial-Attention
                    segmentation/configs/ham/ham_dsan_t_ade20k_160k.py, head = the repo's own
                    segmentation/models/ham_head.py; mmsegmentation 0.26.0 + mmcv 1.6.0 (DSAN README says
                    mmcv-full 1.6.0, mmseg 0.26.0; mmseg 0.26 has no LightHamHead of its own)

What runs is the row's own config file (read from the upstream repository at a recorded commit, `_base_` files
included) loaded with mmcv's Config, and mmseg's own code at that version: the test pipeline of the config
(LoadImageFromFile -> MultiScaleFlipAug[Resize keep_ratio, (ResizeToMultiple for DSAN), RandomFlip, Normalize,
ImageToTensor, Collect]) composed by mmseg's registry, mmcv's collate, and mmseg's EncoderDecoder
forward(return_loss=False, rescale=True) -> simple_test / aug_test -> inference (whole_inference / slide_inference,
resize to ori_shape, softmax, flip back). The probabilities are what `EncoderDecoder.inference` returns (simple_test),
and for --aug-test the tensor aug_test averages in place (`seg_logit += ...; seg_logit /= len(imgs)` on the first
view's output), read by wrapping `inference` so that the returned tensors are recorded, not changed. tools/test.py
--aug-test is reproduced as that script does it: `cfg.data.test.pipeline[1].img_ratios = [0.5, 0.75, 1.0, 1.25, 1.5,
1.75]; cfg.data.test.pipeline[1].flip = True`.

Changes to the rows, identical on both sides (dense's test applies the same through `dense_opts`):
  * Backbone: DaViT for all three, the authors' own dingmyu/davit mmseg/mmseg/models/backbones/davit.py (pure
    PyTorch + timm), shrunk to embed_dims (32, 64, 96, 128), depths (1, 1, 1, 1), num_heads (1, 2, 3, 4), window 7,
    ffn=True, cpe_act=False, overlapped_patch=False (the DaViT-T row's arguments otherwise). The DAT++ backbone needs
    natten 0.14.6 (no CPU wheel on PyPI) and DSAN's needs its CUDA-only DSCN op, so neither runs here; DaViT is
    proven equal to its upstream by tests/test_davit.py (golden davit_tiny.pt), so the heads, neck, segmentor and
    pipeline are what this file tests.
  * Heads narrowed, NUM_CLASSES 4: UperNet channels 64 (aux FCN 32), FPN neck out 64 + FPNHead channels 32,
    LightHam channels = ham_channels = 64 (GN 32 groups kept; MD_R 16 kept). in_index, pool scales, align_corners,
    norms (BN / SyncBN / GN), dropout and every test setting are the row's.
  * Slide mode: test_cfg = dict(mode='slide', crop_size=(512, 512), stride=(341, 341)) (the ViT-Adapter ADE rows'
    setting; the three rows themselves test whole images): 2 windows on the 512 x 756 view. slide_256: crop 256,
    stride 171, a 3 x 4 grid, so that window placement and overlap counts are checked along both axes.
  * DSAN's NMF draws random bases at every forward with `torch.rand(...).cuda()`. Here `_build_bases` is called with
    cuda=False and `torch.manual_seed(0)` is set right before every NMF2D forward (a forward pre-hook), which makes
    the bases equal to dense's MODEL.SEM_SEG_HEAD.HAM.EVAL_SEED = 0 draw (torch.rand from a CPU generator seeded 0).
  * No compiled mmcv ops (lite mmcv, MMCV_WITH_OPS=0): `mmcv.ops` is replaced by a stand-in module before mmseg is
    imported; its functions raise if called (mmseg imports point_sample, PSAMask, ... for heads not used here).

Weights: the row's state-dict key table (mmseg names, `backbone.` / `neck.` / `decode_head.` / `auxiliary_head.`) and
a seed; the stand-in weights are rebuilt from them by tests/shared_data.stand_in_weights (the same algorithm as
shared/tools/golden.py; imported through upstream.py, which needs only torch).

Input: matplotlib's grace_hopper.jpg, cv2.imread(IMREAD_COLOR) (BGR, 600 x 512), cropped to CROP and written as a
PNG (lossless): the test writes the same PNG and feeds it to dense's mapper.

Noise: the same model and views in float64 (the normalised views, weights and all activations, DSAN's bases drawn in
float32 then cast) give the float64 probabilities; |fp32 - fp64| is recorded per mode, and atol is set well above
it and well below any real pipeline difference.

It is only run by hand, in separate environments (never the project's .venv) that reuse the project's .venv for
torch, torchvision, timm, numpy, opencv (a .pth file appends its site-packages after the environment's own):

    SP=/work/main/.venv/lib/python3.11/site-packages     # the project venv (make install)
    mk() {  # name mmcv mmseg
      python3 -m venv /tmp/mmseg_parity/$1
      /tmp/mmseg_parity/$1/bin/pip install "setuptools<70" wheel addict "yapf==0.40.1" terminaltables prettytable \
          packaging pyyaml Pillow
      echo $SP > /tmp/mmseg_parity/$1/lib/python3.11/site-packages/zz_project_venv.pth
      MMCV_WITH_OPS=0 /tmp/mmseg_parity/$1/bin/pip install --no-build-isolation --no-deps mmcv==$2   # "lite" mmcv
      /tmp/mmseg_parity/$1/bin/pip install --no-deps mmsegmentation==$3
    }
    mk env011 1.3.0 0.11.0; mk env026 1.6.0 0.26.0; mk env029 1.4.0 0.29.0
    # the upstream repositories as git directories (any clone; the commits used are recorded in the .pt):
    #   dingmyu/davit, LeapLabTHU/DAT-Segmentation, MarcYugo/DSAN-Deformable-Spatial-Attention
    /tmp/mmseg_parity/env011/bin/python tests/data/parity/make_mmseg_whole_slide_ms.py --family upernet_davit
    /tmp/mmseg_parity/env029/bin/python tests/data/parity/make_mmseg_whole_slide_ms.py --family sfpn_dat
    /tmp/mmseg_parity/env026/bin/python tests/data/parity/make_mmseg_whole_slide_ms.py --family lightham_dsan

(--davit-git / --dat-git / --dsan-git name the git directories; defaults are this project's mirrors.)

Layout of the .pt (torch.load(..., weights_only=True) works):
    notes: str; family: str; versions: {package: version}; upstream: {repo: commit}; row_config: str (upstream path)
    dense_config: str (repo-relative yaml); dense_opts: [KEY, VALUE, ...] shrinking dense's model identically
    mode_opts: {mode: [KEY, VALUE, ...]} (TEST.* keys per mode)
    source_sha256: sha256 of grace_hopper.jpg; crop: (y0, y1, x0, x1); input_bgr_sha256: of the cropped BGR array
    keys: {mmseg key: (shape tuple, dtype str)}; seed: int; gains: {key: factor} applied after stand_in_weights
    modes: {"whole" | "slide" | "slide_256" | "msflip": {probs: float32 [C, H, W], probs_fp64_maxdiff: float,
            views: [(img_shape (h, w), flip)] the network inputs mmseg made}}
    atol, rtol: float; logit_std: {mode: std over pixels of log(probs) centred per pixel (how far from uniform)}
"""
import argparse
import copy
import math
import os
import sys
import tempfile
import types

from upstream import extract, git_commit, load_module, sha256, stand_in_weights

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.abspath(os.path.join(HERE, "..", "..", ".."))
MIRRORS = "/work/.mirror"

# (y0, y1, x0, x1) into cv2.imread(grace_hopper.jpg) (600 x 512): 151 x 223, the face; short side 151 -> 512
CROP = (71, 222, 139, 362)
SEED = 0
NUM_CLASSES = 4
AUG_RATIOS = [0.5, 0.75, 1.0, 1.25, 1.5, 1.75]  # mmseg tools/test.py --aug-test
SLIDE = dict(mode="slide", crop_size=(512, 512), stride=(341, 341))
# a 2-D grid of overlapping windows on the 512-high view (3 x 4; the last row / column shifted back to the border)
SLIDE_256 = dict(mode="slide", crop_size=(256, 256), stride=(171, 171))
TEST_CFGS = {"whole": dict(mode="whole"), "slide": SLIDE, "slide_256": SLIDE_256, "msflip": dict(mode="whole")}
DAVIT = dict(embed_dims=(32, 64, 96, 128), depths=(1, 1, 1, 1), num_heads=(1, 2, 3, 4))
MIN_ATOL, RTOL = 2e-5, 0.0  # atol: the larger of this and 10 x the measured fp32-vs-fp64 noise (rounded up)
# stand_in_weights' classifier (0.02 n) gives logits within ~0.03 of each other, probabilities within a few % of
# uniform, where softmax nearly commutes with resizing and averaging; the classifier is scaled so that they do not
GAINS = {"decode_head.conv_seg.weight": 50.0, "decode_head.conv_seg.bias": 50.0}

FAMILIES = {
    "upernet_davit": dict(
        repo="dingmyu/davit", git="dingmyu+davit", config="mmseg/configs/upernet_davit_512x512_160k_ade20k.py",
        extract=["mmseg/configs"], dense_config="configs/ade20k/upernet/davit_tiny_160k.yaml",
        mmseg="0.11.0", mmcv="1.3.0"),
    "sfpn_dat": dict(
        repo="LeapLabTHU/DAT-Segmentation", git="LeapLabTHU+DAT-Segmentation",
        config="configs/dat/fpn_tiny_80k_dp04_lr2.py", extract=["configs"],
        dense_config="configs/ade20k/semantic_fpn/dat_pp_tiny_80k.yaml", mmseg="0.29.0", mmcv="1.4.0"),
    "lightham_dsan": dict(
        repo="MarcYugo/DSAN-Deformable-Spatial-Attention", git="MarcYugo+DSAN-Deformable-Spatial-Attention",
        config="segmentation/configs/ham/ham_dsan_t_ade20k_160k.py",
        extract=["segmentation/configs", "segmentation/models/ham_head.py"],
        dense_config="configs/ade20k/light_ham/dsan_t_160k.yaml", mmseg="0.26.0", mmcv="1.6.0"),
}
DAVIT_FILES = ["mmseg/mmseg/models/backbones/davit.py", "mmseg/mmcv_custom"]


def dense_opts(family: str) -> list:
    """dense config overrides that build the same shrunk model as `shrink` does on the mmseg side."""
    opts = ["MODEL.BACKBONE.NAME", "DaViT", "MODEL.DAVIT.EMBED_DIMS", list(DAVIT["embed_dims"]),
            "MODEL.DAVIT.DEPTHS", list(DAVIT["depths"]), "MODEL.DAVIT.NUM_HEADS", list(DAVIT["num_heads"]),
            "MODEL.SEM_SEG_HEAD.NUM_CLASSES", NUM_CLASSES]
    if family == "upernet_davit":
        opts += ["MODEL.SEM_SEG_HEAD.CONVS_DIM", 64, "MODEL.AUX_HEAD.CONVS_DIM", 32]
    elif family == "sfpn_dat":
        opts += ["MODEL.FPN.OUT_CHANNELS", 64, "MODEL.SEM_SEG_HEAD.CONVS_DIM", 32]
    else:
        opts += ["MODEL.SEM_SEG_HEAD.CONVS_DIM", 64, "MODEL.SEM_SEG_HEAD.HAM.CHANNELS", 64]
    return opts


MODE_OPTS = {
    "whole": ["TEST.MODE", "whole", "TEST.AUG.ENABLED", False],
    "slide": ["TEST.MODE", "slide", "TEST.SLIDE.CROP_SIZE", list(SLIDE["crop_size"]), "TEST.SLIDE.STRIDE",
              list(SLIDE["stride"]), "TEST.AUG.ENABLED", False],
    "slide_256": ["TEST.MODE", "slide", "TEST.SLIDE.CROP_SIZE", list(SLIDE_256["crop_size"]), "TEST.SLIDE.STRIDE",
                  list(SLIDE_256["stride"]), "TEST.AUG.ENABLED", False],
    "msflip": ["TEST.MODE", "whole", "TEST.AUG.ENABLED", True, "TEST.AUG.RATIOS", list(AUG_RATIOS),
               "TEST.AUG.FLIP", True],
}


def shrink(cfg, family: str) -> None:
    """The row's mmseg model config -> the shrunk model (backbone DaViT, narrow heads, NUM_CLASSES classes)."""
    dims = list(DAVIT["embed_dims"])
    m = cfg.model
    m.pretrained = None
    m.backbone = dict(type="DaViT", embed_dims=tuple(dims), depths=DAVIT["depths"], num_heads=DAVIT["num_heads"],
                      window_size=7, mlp_ratio=4.0, qkv_bias=True, drop_path_rate=0.3, overlapped_patch=False,
                      ffn=True, cpe_act=False)
    m.decode_head.num_classes = NUM_CLASSES
    if family == "upernet_davit":
        m.decode_head.in_channels = dims
        m.decode_head.channels = 64
        m.auxiliary_head.in_channels = dims[2]
        m.auxiliary_head.channels = 32
        m.auxiliary_head.num_classes = NUM_CLASSES
    elif family == "sfpn_dat":
        m.neck.in_channels = dims
        m.neck.out_channels = 64
        m.decode_head.in_channels = [64] * 4
        m.decode_head.channels = 32
    else:
        m.decode_head.in_channels = [dims[i] for i in m.decode_head.in_index]
        m.decode_head.channels = 64
        m.decode_head.ham_channels = 64


def stub_mmcv_ops() -> None:
    """Lite mmcv has no compiled ops; mmseg imports some at module level for heads not used here."""
    ops = types.ModuleType("mmcv.ops")

    def getattr_(name):
        if name.startswith("__"):
            raise AttributeError(name)

        def missing(*args, **kwargs):
            raise RuntimeError(f"mmcv.ops.{name} needs compiled mmcv ops (lite mmcv here)")
        return missing
    ops.__getattr__ = getattr_
    sys.modules["mmcv.ops"] = ops
    import mmcv
    mmcv.ops = ops


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--family", required=True, choices=sorted(FAMILIES))
    ap.add_argument("--davit-git", default=os.path.join(MIRRORS, "dingmyu+davit", "repo"))
    ap.add_argument("--dat-git", default=os.path.join(MIRRORS, "LeapLabTHU+DAT-Segmentation", "repo"))
    ap.add_argument("--dsan-git", default=os.path.join(MIRRORS, "MarcYugo+DSAN-Deformable-Spatial-Attention", "repo"))
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    fam = FAMILIES[args.family]
    out_path = args.out or os.path.join(HERE, f"mmseg_{args.family}_probs.pt")
    git_dirs = {"upernet_davit": args.davit_git, "sfpn_dat": args.dat_git, "lightham_dsan": args.dsan_git}

    stub_mmcv_ops()
    import cv2
    import matplotlib
    import mmcv
    import numpy as np
    import timm
    import torch
    import mmseg
    assert mmseg.__version__ == fam["mmseg"], (mmseg.__version__, fam["mmseg"])
    assert mmcv.__version__ == fam["mmcv"], (mmcv.__version__, fam["mmcv"])
    from mmcv.parallel import collate
    from mmseg.apis import init_segmentor
    from mmseg.datasets.pipelines import Compose

    work = tempfile.mkdtemp(prefix="mmseg_parity_")
    upstream = {"dingmyu/davit": git_commit(args.davit_git)}
    extract(args.davit_git, DAVIT_FILES, os.path.join(work, "davit"))
    row_root = os.path.join(work, "row")
    extract(git_dirs[args.family], fam["extract"], row_root)
    upstream[fam["repo"]] = git_commit(git_dirs[args.family])

    # the authors' DaViT registered in this mmseg's BACKBONES (its `from ..builder import BACKBONES`, `from
    # mmcv_custom import load_checkpoint` resolve as in the davit repository)
    sys.path.insert(0, os.path.join(work, "davit", "mmseg"))
    import mmseg.models.backbones  # noqa: F401
    load_module("mmseg.models.backbones.davit_upstream",
                os.path.join(work, "davit", "mmseg", "mmseg", "models", "backbones", "davit.py"))
    ham = None
    if args.family == "lightham_dsan":  # DSAN's own LightHamHead (its models/__init__ also imports the CUDA backbone)
        ham = load_module("dsan_ham_head", os.path.join(row_root, "segmentation", "models", "ham_head.py"))
        build_bases = ham.NMF2D._build_bases
        state = {"dtype": torch.float32}

        def cpu_bases(self, B, S, D, R, cuda=False):
            return build_bases(self, B, S, D, R, cuda=False).to(state["dtype"])
        ham.NMF2D._build_bases = cpu_bases

    cfg = mmcv.Config.fromfile(os.path.join(row_root, fam["config"]))
    shrink(cfg, args.family)
    model = init_segmentor(cfg, checkpoint=None, device="cpu")
    model.eval()
    if ham is not None:
        for m in model.modules():
            if isinstance(m, ham.NMF2D):
                m.register_forward_pre_hook(lambda mod, inp: torch.manual_seed(0) and None)

    sd = model.state_dict()
    keys = {k: (tuple(v.shape), str(v.dtype)) for k, v in sd.items()}
    weights = stand_in_weights(keys, SEED)
    for k, gain in GAINS.items():
        weights[k] = weights[k] * gain
    missing, unexpected = model.load_state_dict(weights, strict=False)
    assert not unexpected and all(k.endswith("num_batches_tracked") for k in missing), (missing, unexpected)

    # the input file
    jpeg = os.path.join(os.path.dirname(matplotlib.__file__), "mpl-data", "sample_data", "grace_hopper.jpg")
    y0, y1, x0, x1 = CROP
    crop = cv2.imread(jpeg, cv2.IMREAD_COLOR)[y0:y1, x0:x1]
    png = os.path.join(work, "crop.png")
    assert cv2.imwrite(png, crop) and np.array_equal(cv2.imread(png, cv2.IMREAD_COLOR), crop)

    recorded, copies = [], []
    inference = model.inference

    def recording_inference(img, img_meta, rescale):
        out = inference(img, img_meta, rescale)
        recorded.append(out)  # the tensor itself: aug_test averages into the first one in place
        copies.append(out.clone())
        return out
    model.inference = recording_inference

    base_pipeline = cfg.data.test.pipeline
    results, notes_modes = {}, []
    for mode in ("whole", "slide", "slide_256", "msflip"):
        model.test_cfg = mmcv.ConfigDict(TEST_CFGS[mode])
        pipeline = copy.deepcopy(base_pipeline)
        if mode == "msflip":  # tools/test.py --aug-test
            pipeline[1].img_ratios = AUG_RATIOS
            pipeline[1].flip = True
        data = Compose(pipeline)(dict(img_info=dict(filename=png), img_prefix=None, seg_fields=[]))
        data = collate([data], samples_per_gpu=1)
        data["img_metas"] = [m.data[0] for m in data["img_metas"]]
        views = [(tuple(int(s) for s in m[0]["img_shape"][:2]), bool(m[0]["flip"])) for m in data["img_metas"]]
        probs = {}
        for dtype in (torch.float32, torch.float64):
            if ham is not None:
                state["dtype"] = dtype
            model.to(dtype)
            recorded.clear()
            copies.clear()
            with torch.no_grad():
                model(return_loss=False, rescale=True, img=[t.to(dtype) for t in data["img"]],
                      img_metas=data["img_metas"])
            assert len(recorded) == len(views), (len(recorded), len(views))
            if len(views) > 1:  # aug_test's average lies in the first view's tensor: check it is the views' mean
                mean = copies[0].clone()
                for c in copies[1:]:
                    mean += c
                assert torch.equal(recorded[0], mean / len(copies))
            probs[dtype] = recorded[0][0].clone()
        model.to(torch.float32)
        p32, p64 = probs[torch.float32], probs[torch.float64]
        assert tuple(p32.shape) == (NUM_CLASSES, y1 - y0, x1 - x0), p32.shape
        assert torch.allclose(p32.sum(0), torch.ones_like(p32[0]), atol=1e-5)
        diff = (p32.double() - p64).abs().max().item()
        logp = p64.log()
        spread = (logp - logp.mean(0, keepdim=True)).std().item()
        results[mode] = dict(probs=p32.float().contiguous(), probs_fp64_maxdiff=diff, views=views,
                             logit_std=spread)
        notes_modes.append(f"{mode}: {len(views)} view(s) {sorted(set(v[0] for v in views))}, |fp32 - fp64| max "
                           f"{diff:.2g}, centred log-prob std {spread:.3g}, prob range [{p32.min().item():.3f}, "
                           f"{p32.max().item():.3f}]")
        print(notes_modes[-1], flush=True)

    noise = max(r["probs_fp64_maxdiff"] for r in results.values())
    exponent = math.floor(math.log10(10 * noise))
    atol = max(MIN_ATOL, float(f"{math.ceil(10 * noise / 10 ** exponent)}e{exponent}"))  # 10 x noise, rounded up
    versions = {"mmsegmentation": mmseg.__version__, "mmcv": mmcv.__version__, "torch": str(torch.__version__),
                "timm": timm.__version__, "numpy": np.__version__, "opencv": cv2.__version__,
                "python": sys.version.split()[0]}
    notes = (
        f"Family {args.family}: the row config {fam['repo']}:{fam['config']} (commit {upstream[fam['repo']]}) loaded "
        f"with mmcv {mmcv.__version__} Config and run by mmsegmentation {mmseg.__version__}'s own test pipeline, "
        f"collate and EncoderDecoder (simple_test / aug_test -> inference: whole_inference or slide_inference, resize "
        f"to ori_shape with the head's align_corners, softmax, flip back). Backbone replaced by the authors' DaViT "
        f"(dingmyu/davit {upstream['dingmyu/davit']} mmseg/mmseg/models/backbones/davit.py) with embed_dims "
        f"{DAVIT['embed_dims']}, depths {DAVIT['depths']}, num_heads {DAVIT['num_heads']}; heads narrowed, "
        f"num_classes {NUM_CLASSES} (see dense_opts; the generator's `shrink`). Stand-in weights "
        f"stand_in_weights(keys, {SEED}) with the classifier multiplied by `gains` {GAINS} (so that the probabilities "
        f"are far from uniform), loaded strict except num_batches_tracked. Input: grace_hopper.jpg "
        f"cv2.imread BGR crop {CROP} (h x w = {y1 - y0} x {x1 - x0}) written as PNG. Modes: whole = "
        f"test_cfg mode 'whole'; slide = {SLIDE}; slide_256 = {SLIDE_256}; msflip = whole + tools/test.py "
        f"--aug-test (img_ratios "
        f"{AUG_RATIOS}, flip True). " + "; ".join(notes_modes) + ". "
        + ("DSAN's NMF bases: _build_bases(cuda=False) and torch.manual_seed(0) before every NMF2D forward "
           "(= dense HAM.EVAL_SEED 0); float64 run draws them in float32 and casts. The row's test pipeline has "
           "ResizeToMultiple(size_divisor=32) after Resize (also in every --aug-test view): dense's "
           "INPUT.TEST_RESIZE_MULTIPLE 32 in the row's yaml. " if ham is not None else "")
        + f"mmcv.ops replaced by a stand-in (lite mmcv; no op used). Versions: {versions}. atol {atol}, rtol {RTOL} "
        f"(probabilities; the larger of {MIN_ATOL} and 10 x the fp32-vs-fp64 noise measured above).")
    out = dict(notes=notes, family=args.family, versions=versions, upstream=upstream, row_config=fam["config"],
               dense_config=fam["dense_config"], dense_opts=dense_opts(args.family), mode_opts=MODE_OPTS,
               source_sha256=sha256(open(jpeg, "rb").read()), crop=CROP,
               input_bgr_sha256=sha256(np.ascontiguousarray(crop).tobytes()), keys=keys, seed=SEED, gains=GAINS,
               modes={k: {kk: vv for kk, vv in v.items() if kk != "logit_std"} for k, v in results.items()},
               logit_std={k: v["logit_std"] for k, v in results.items()}, atol=atol, rtol=RTOL)
    torch.save(out, out_path)
    print("wrote", out_path, os.path.getsize(out_path), "bytes")


if __name__ == "__main__":
    main()
