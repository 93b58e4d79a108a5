r"""Make mmdet_davit_detections.pt: the detections of the DaViT authors' mmdet 2.11 pipeline (Mask R-CNN and RetinaNet,
dingmyu/davit mmdet/configs/davit_{maskrcnn,retinanet}_1x_coco.py) on a real photograph with stand-in weights.

What runs is the authors' code, unmodified: their vendored mmdet tree (dingmyu/davit at COMMIT, mmdet/mmdet: mmdet
2.11.0 plus their DaViT backbone) over mmcv-full 1.3.0 with its compiled CPU ops, their configs read with
mmcv.Config.fromfile, `mmdet.apis.init_detector` and `mmdet.apis.inference_detector` (LoadImageFromFile ->
MultiScaleFlipAug(1333x800, Resize keep_ratio, RandomFlip, Normalize, Pad 32, ImageToTensor, Collect) ->
model.simple_test(rescale=True) with the config's test_cfg). As a cross-check the same is run a second time with
PyPI's mmdet==2.11.0 (their DaViT file registered into it); both runs must give the same detections. It is our code
calling their library: nothing of mmdet / mmcv / dingmyu/davit is copied into the project; the upstream tree is read
at run time from a bare git directory (the `fetch` tool's mirror of github:dingmyu/davit, or any clone).

The only deliberate changes, identical on dense's side (the test reads them from the .pt):
  - the DaViT backbone is shrunk (SHRINK: narrower, one dual block per stage) so that the test runs in seconds on
    2 CPU cores; the FPN's in_channels follow it. Everything else (FPN 256, RPN, RoI heads, RetinaHead, anchors,
    test pipeline, test_cfg: nms_pre, NMS thresholds, min_bbox_size 0, score_thr 0.05, max_per_img 100,
    mask_thr_binary 0.5) is the config's.
  - stand-in weights: tests/shared_data.py stand_in_weights(key table, SEED) (the golden files' algorithm), then
    TWEAKS: a few classifier / mask-logit tensors scaled (and RetinaNet's classification bias shifted to mmdet's
    prior-0.01 init) so that random weights give meaningful, well separated detections: without them every RoI
    scores ~1/81 (below score_thr 0.05: no detection at all), every RetinaNet anchor ~0.5 for every class (100
    near-ties), and mask logits ~0 (masks decided by float noise).

Environment (CPU only, 2 cores; only run by hand, never in the project's .venv). Commands used:

    python3.11 -m venv /tmp/mmdetenv
    /tmp/mmdetenv/bin/pip install /opt/wheels/torch-2.13.0+cpu-cp311-cp311-manylinux_2_28_x86_64.whl \
        numpy opencv-python-headless==5.1.0.95 terminaltables matplotlib pycocotools wheel ninja pytest \
        pyyaml six importlib_metadata      # pytest: tests/shared_data.py (the stand-in weights) imports it
    /tmp/mmdetenv/bin/pip install "setuptools<70"      # mmcv 1.3.0's setup.py imports pkg_resources
    cd /tmp/mmdetenv_build && /tmp/mmdetenv/bin/pip download --no-deps --no-binary :all: mmcv-full==1.3.0 \
        && tar xzf mmcv-full-1.3.0.tar.gz && cd mmcv-full-1.3.0
    # the one build fix (BUILD_FIXES below): torch 2.x's AT_DISPATCH_* macros take a ScalarType
    sed -i 's/(dets.type(), "nms_rotated"/(dets.scalar_type(), "nms_rotated"/' \
        mmcv/ops/csrc/pytorch/nms_rotated_cpu.cpp
    # FORCE_CUDA unset, no CUDA: a CppExtension over mmcv/ops/csrc/pytorch/*.cpp (torch adds -std=c++20)
    MMCV_WITH_OPS=1 MAX_JOBS=2 nice -n 10 /tmp/mmdetenv/bin/python setup.py build_ext --inplace
    echo /tmp/mmdetenv_build/mmcv-full-1.3.0 > /tmp/mmdetenv/lib/python3.11/site-packages/mmcv-full-src.pth
    /tmp/mmdetenv/bin/pip install --no-deps mmdet==2.11.0 addict yapf==0.40.1
    # then, from the repository root (the davit mirror: the `fetch` tool's /work/.mirror/dingmyu+davit/repo):
    /tmp/mmdetenv/bin/python tests/data/parity/make_mmdet_davit_detections.py \
        --davit-git /work/.mirror/dingmyu+davit/repo

Import shims the script writes into a temporary directory (it needs nothing else on the path):
  - `torchvision`: an empty package. mmcv 1.3.0's mmcv/runner/checkpoint.py and the authors' mmcv_custom/checkpoint.py
    `import torchvision` at import time (only for torchvision:// checkpoint URLs, unused here); PyPI's torchvision
    wheels need the CUDA build of torch (with the CPU torch, `import torchvision` fails: operator torchvision::nms
    does not exist).
  - `timm.models.layers` (DropPath, to_2tuple, trunc_normal_), the only names the authors' davit.py imports from timm:
    timm itself imports torchvision. DropPath is the identity in eval mode (stochastic depth only acts in
    training) and trunc_normal_ only initialises weights that the stand-in weights replace, so the shim
    changes no number.

Layout of the .pt (torch.load(..., weights_only=True) works):
    notes: str; versions: {package: version}; davit_commit: str; seed: int; shrink: {embed_dims, depths, num_heads}
    source: {name, sha256, decoded_bgr_sha256, shape}
    detectors: {"mask_rcnn" | "retinanet": {
        upstream_config: path in dingmyu/davit; dense_config: path in this repository; dense_opts: [str] (the
        shrink as dense config options)
        keys: {state-dict key: ([shape], dtype)} of the mmdet model (mmdet layout: backbone.* / neck.* / rpn_head.* /
            roi_head.* or bbox_head.*); tweaks: [(key, op "mul" | "add", value)] applied in this order after
            stand_in_weights(keys, seed)
        test_cfg: the config's test_cfg (as plain dicts); img_meta: {ori_shape, img_shape, pad_shape, scale_factor}
        resized_sha256: sha256 of the uint8 BGR HWC image after Resize (before Normalize)
        boxes: float32 [D, 4] XYXY at the original size; scores: float32 [D]; labels: int64 [D] (0..79), in
            inference_detector's order (by class, then as mmdet's NMS left them)
        masks (Mask R-CNN): list of D COCO RLE `counts` strings (pycocotools.mask, size = ori_shape[:2]) of
            inference_detector's bool masks; mask_areas: int64 [D]
        stats: score / logit statistics used to choose the tweaks }}
"""
import argparse
import hashlib
import os
import pickle
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.abspath(os.path.join(HERE, "..", "..", ".."))
DEFAULT_OUT = os.path.join(HERE, "mmdet_davit_detections.pt")
JPEG_REL = "matplotlib/mpl-data/sample_data/grace_hopper.jpg"

COMMIT = "fc79470d99babab23e45e0087790fa23cfd10a02"  # dingmyu/davit HEAD ("move models from googledrive to onedrive")
SEED = 15
SHRINK = {"embed_dims": [32, 64, 128, 256], "depths": [1, 1, 1, 1], "num_heads": [1, 2, 4, 8]}

DETECTORS = {
    "mask_rcnn": {"upstream_config": "mmdet/configs/davit_maskrcnn_1x_coco.py",
                  "dense_config": "configs/coco/mask_rcnn/davit_tiny_1x.yaml"},
    "retinanet": {"upstream_config": "mmdet/configs/davit_retinanet_1x_coco.py",
                  "dense_config": "configs/coco/retinanet/davit_tiny_1x.yaml"},
}

# Applied in order after stand_in_weights (see the module docstring for why).
TWEAKS = {
    "mask_rcnn": [
        ("rpn_head.rpn_cls.weight", "mul", 10.0),  # objectness logits std ~0.09 -> ~0.8: proposals ranked apart
        ("roi_head.bbox_head.fc_cls.weight", "mul", 15.0),  # class logits std ~0.17 -> ~2.5: scores 0.5-0.96
        ("roi_head.mask_head.conv_logits.weight", "mul", 200.0),  # mask logits std ~0.009 -> ~1.7
    ],
    "retinanet": [
        ("bbox_head.retina_cls.weight", "mul", 10.0),  # class logits std ~0.07-0.15 -> ~0.7-1.5
        ("bbox_head.retina_cls.bias", "add", -4.59511985013459),  # + mmdet's bias_init_with_prob(0.01)
    ],
}

# What mmcv-full 1.3.0 needed to compile its CPU ops against gcc 12.2 / torch 2.13.0+cpu (C++20): one line.
BUILD_FIXES = ("mmcv/ops/csrc/pytorch/nms_rotated_cpu.cpp line 62: AT_DISPATCH_FLOATING_TYPES(dets.type(), ...) -> "
               "AT_DISPATCH_FLOATING_TYPES(dets.scalar_type(), ...) (torch 2.x's dispatch macros take a ScalarType, "
               "no longer the deprecated DeprecatedTypeProperties; `sed -i 's/dets.type(), \"nms_rotated\"/"
               "dets.scalar_type(), \"nms_rotated\"/' mmcv/ops/csrc/pytorch/nms_rotated_cpu.cpp`); every other "
               "source compiled unchanged (rotated NMS is not used by these detectors)")

TIMM_SHIM = '''"""Shim (see make_mmdet_davit_detections.py): what the DaViT authors' davit.py imports from timm."""
import torch
from torch import nn


def to_2tuple(x):
    return tuple(x) if isinstance(x, (list, tuple)) else (x, x)


def trunc_normal_(tensor, mean=0.0, std=1.0, a=-2.0, b=2.0):
    return nn.init.trunc_normal_(tensor, mean, std, a, b)


class DropPath(nn.Module):
    def __init__(self, drop_prob=0.0):
        super().__init__()
        self.drop_prob = drop_prob

    def forward(self, x):
        if self.drop_prob == 0.0 or not self.training:
            return x
        keep = 1.0 - self.drop_prob
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
        return x * mask / keep
'''


def sha256(b):
    return hashlib.sha256(b).hexdigest()


def find_jpeg():
    import glob
    hits = sorted(glob.glob(os.path.join(REPO, ".venv", "lib", "python3*", "site-packages", JPEG_REL)))
    if hits:
        return hits[0]
    import matplotlib
    return os.path.join(os.path.dirname(matplotlib.__file__), "mpl-data", "sample_data", "grace_hopper.jpg")


def apply_tweaks(weights, tweaks):
    for key, op, value in tweaks:
        if op == "mul":
            weights[key] = weights[key] * value
        elif op == "add":
            weights[key] = weights[key] + value
        else:
            raise ValueError(op)
    return weights


def plain(obj):
    """mmcv ConfigDict / tuples / numpy -> plain Python (weights_only-loadable)."""
    import numpy as np
    if isinstance(obj, dict):
        return {str(k): plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [plain(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, (np.floating, np.integer)):
        return obj.item()
    return obj


# ---------------------------------------------------------------------------------------------------- one mmdet run
def prepare_tree(git_dir, source):
    """Temporary dir with the upstream files (and, for source 'upstream', their mmdet package) plus the shims."""
    tmp = tempfile.mkdtemp(prefix=f"mmdet_davit_{source}_")
    paths = ["mmdet/configs", "mmdet/mmcv_custom", "mmdet/mmdet"]
    archive = subprocess.run(["git", "--git-dir", git_dir, "archive", COMMIT] + paths, check=True,
                             capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", tmp], input=archive, check=True)
    up = os.path.join(tmp, "mmdet")  # holds configs/, mmcv_custom/, mmdet/ (the package)
    shims = os.path.join(tmp, "shims")
    os.makedirs(os.path.join(shims, "timm", "models"))
    open(os.path.join(shims, "timm", "__init__.py"), "w").close()
    open(os.path.join(shims, "timm", "models", "__init__.py"), "w").close()
    with open(os.path.join(shims, "timm", "models", "layers.py"), "w") as f:
        f.write(TIMM_SHIM)
    try:
        import torchvision  # noqa: F401
    except Exception:
        os.makedirs(os.path.join(shims, "torchvision"))
        open(os.path.join(shims, "torchvision", "__init__.py"), "w").close()
    if source == "upstream":
        sys.path[:0] = [shims, up]  # their mmdet package shadows any installed one
    else:
        sys.path[:0] = [shims]
        sys.path.append(up)  # mmcv_custom only; mmdet from site-packages
    return tmp, up


def run(args):
    source, out = args.run
    git_dir = os.path.abspath(args.davit_git)
    tmp, up = prepare_tree(git_dir, source)

    import importlib.util

    import cv2
    import mmcv
    import numpy as np
    import pycocotools.mask as mask_util
    import torch
    import mmdet
    from mmdet.apis import inference_detector, init_detector
    from mmdet.datasets.pipelines import Compose, LoadImageFromFile, Resize

    sys.path.insert(0, os.path.join(REPO, "tests"))
    from shared_data import stand_in_weights

    if source == "upstream":
        assert os.path.dirname(mmdet.__file__) == os.path.join(up, "mmdet"), mmdet.__file__
    else:
        assert "site-packages" in mmdet.__file__, mmdet.__file__
        name = "mmdet.models.backbones.davit"
        spec = importlib.util.spec_from_file_location(name, os.path.join(up, "mmdet", "models", "backbones",
                                                                          "davit.py"))
        mod = importlib.util.module_from_spec(spec)
        sys.modules[name] = mod
        spec.loader.exec_module(mod)
    from mmdet.models import BACKBONES
    assert BACKBONES.get("DaViT") is not None
    torch.set_num_threads(args.threads)

    versions = {"python": sys.version.split()[0], "torch": str(torch.__version__), "mmcv": mmcv.__version__,
                "mmdet": mmdet.__version__, "mmdet_source": source, "opencv": cv2.__version__,
                "numpy": np.__version__}
    from mmcv.ops import get_compiling_cuda_version, get_compiler_version
    versions["mmcv_ops"] = f"compiled with {get_compiler_version()}, CUDA {get_compiling_cuda_version()}"

    jpeg = args.jpeg or find_jpeg()
    result = {"versions": versions, "jpeg": jpeg, "detectors": {}}
    for det, spec in DETECTORS.items():
        if args.only and det not in args.only:
            continue
        cfg = mmcv.Config.fromfile(os.path.join(tmp, spec["upstream_config"]))
        cfg.model.backbone.update(embed_dims=tuple(SHRINK["embed_dims"]), depths=tuple(SHRINK["depths"]),
                                  num_heads=tuple(SHRINK["num_heads"]))
        cfg.model.neck.in_channels = list(SHRINK["embed_dims"])
        model = init_detector(cfg, None, device="cpu")
        sd = model.state_dict()
        keys = {k: (list(v.shape), str(v.dtype)) for k, v in sd.items()}
        weights = apply_tweaks(stand_in_weights(keys, SEED), TWEAKS[det])
        assert set(weights) == set(sd), set(sd) ^ set(weights)
        incompatible = model.load_state_dict(weights, strict=True)
        assert not incompatible.missing_keys and not incompatible.unexpected_keys

        # logit statistics (what the tweaks were chosen from)
        stats, hooks = {}, []
        watch = {"rpn_head.rpn_cls", "roi_head.bbox_head.fc_cls", "roi_head.mask_head.conv_logits",
                 "bbox_head.retina_cls"}
        for n, m in model.named_modules():
            if n in watch:
                def hook(mod, inp, outp, n=n, stats=stats):
                    t = outp.detach().float()
                    if t.numel():
                        stats.setdefault(n, []).append([float(t.mean()), float(t.std()), float(t.min()),
                                                        float(t.max())])
                hooks.append(m.register_forward_hook(hook))

        # the pipeline's image: uint8 after Resize, and the metas the model sees
        loaded = LoadImageFromFile()(dict(img_info=dict(filename=jpeg), img_prefix=None))
        loaded["scale"] = tuple(cfg.data.test.pipeline[1]["img_scale"])
        resized = Resize(keep_ratio=True)(loaded)["img"]
        data = Compose(cfg.data.test.pipeline)(dict(img_info=dict(filename=jpeg), img_prefix=None))
        meta = data["img_metas"][0].data
        img_meta = {k: plain(meta[k]) for k in ("ori_shape", "img_shape", "pad_shape", "scale_factor")}
        assert tuple(meta["img_shape"]) == resized.shape

        res = inference_detector(model, jpeg)
        for h in hooks:
            h.remove()
        bbox_res, segm_res = (res if isinstance(res, tuple) else (res, None))
        boxes, scores, labels, masks, areas = [], [], [], [], []
        for c, arr in enumerate(bbox_res):
            for i, row in enumerate(arr):
                boxes.append(row[:4])
                scores.append(row[4])
                labels.append(c)
                if segm_res is not None:
                    m = np.asarray(segm_res[c][i])
                    assert m.dtype == bool and m.shape == tuple(meta["ori_shape"][:2])
                    rle = mask_util.encode(np.asfortranarray(m.astype(np.uint8)))
                    masks.append(rle["counts"].decode("ascii"))
                    areas.append(int(m.sum()))
        entry = dict(spec)
        entry.update({
            "keys": keys, "tweaks": [list(t) for t in TWEAKS[det]], "test_cfg": plain(cfg.model.test_cfg),
            "img_meta": img_meta, "resized_sha256": sha256(np.ascontiguousarray(resized).tobytes()),
            "boxes": np.array(boxes, np.float32).reshape(-1, 4), "scores": np.array(scores, np.float32),
            "labels": np.array(labels, np.int64), "stats": stats,
        })
        if segm_res is not None:
            entry["masks"], entry["mask_areas"] = masks, np.array(areas, np.int64)
        result["detectors"][det] = entry
        s = entry["scores"]
        print(f"[{source}] {det}: {len(s)} detections, {len(set(labels))} classes, scores "
              f"{s.min() if len(s) else None}..{s.max() if len(s) else None}; img_meta {img_meta}", flush=True)
        for n, v in stats.items():
            print(f"    {n}: mean/std/min/max per level {[[round(x, 3) for x in r] for r in v]}", flush=True)
    with open(out, "wb") as f:
        pickle.dump(result, f)


# ---------------------------------------------------------------------------------------------------- orchestration
def same_detections(a, b):
    import numpy as np
    if len(a["scores"]) != len(b["scores"]) or not np.array_equal(a["labels"], b["labels"]):
        return False, "count/labels differ"
    db = float(np.abs(a["boxes"] - b["boxes"]).max()) if len(a["boxes"]) else 0.0
    ds = float(np.abs(a["scores"] - b["scores"]).max()) if len(a["scores"]) else 0.0
    dm = None
    if "masks" in a:
        dm = sum(x != y for x, y in zip(a["masks"], b["masks"]))
    return db < 1e-3 and ds < 1e-5 and not dm, f"max box diff {db:.3g}, max score diff {ds:.3g}, masks differing {dm}"


def main(args):
    import torch

    runs = {}
    for source in args.sources:
        out = os.path.join(tempfile.mkdtemp(prefix="mmdet_davit_run_"), "out.pkl")
        cmd = [sys.executable, os.path.abspath(__file__), "--davit-git", args.davit_git, "--run", source, out,
               "--threads", str(args.threads)] + (["--jpeg", args.jpeg] if args.jpeg else [])
        if args.only:
            cmd += ["--only"] + args.only
        subprocess.run(cmd, check=True)
        runs[source] = pickle.load(open(out, "rb"))
    primary = runs[args.sources[0]]
    cross = {}
    for source in args.sources[1:]:
        for det, entry in primary["detectors"].items():
            ok, why = same_detections(entry, runs[source]["detectors"][det])
            cross[f"{det} vs {source}"] = why
            assert ok, (det, source, why)
            assert entry["keys"] == runs[source]["detectors"][det]["keys"]

    import cv2
    jpeg = primary["jpeg"]
    src = cv2.imread(jpeg, cv2.IMREAD_COLOR)
    detectors = {}
    for det, e in primary["detectors"].items():
        d = {k: e[k] for k in ("upstream_config", "dense_config", "tweaks", "test_cfg", "img_meta",
                                "resized_sha256", "stats")}
        d["keys"] = {k: (list(shape), dtype) for k, (shape, dtype) in e["keys"].items()}
        d["dense_opts"] = ["MODEL.DAVIT.EMBED_DIMS", str(SHRINK["embed_dims"]), "MODEL.DAVIT.DEPTHS",
                           str(SHRINK["depths"]), "MODEL.DAVIT.NUM_HEADS", str(SHRINK["num_heads"])]
        d["boxes"] = torch.from_numpy(e["boxes"])
        d["scores"] = torch.from_numpy(e["scores"])
        d["labels"] = torch.from_numpy(e["labels"])
        if "masks" in e:
            d["masks"] = list(e["masks"])
            d["mask_areas"] = torch.from_numpy(e["mask_areas"])
        detectors[det] = d
    counts = {det: len(d["scores"]) for det, d in detectors.items()}
    notes = (
        f"Detections of the DaViT authors' mmdet pipeline (dingmyu/davit {COMMIT}: their vendored mmdet "
        f"{primary['versions']['mmdet']} tree + DaViT backbone, over mmcv-full {primary['versions']['mmcv']} with its "
        f"CPU ops built from source) for mmdet/configs/davit_maskrcnn_1x_coco.py and davit_retinanet_1x_coco.py, "
        f"through mmdet.apis.init_detector + inference_detector (the config's test pipeline LoadImageFromFile -> "
        f"MultiScaleFlipAug(1333x800, Resize keep_ratio, RandomFlip, Normalize, Pad 32, ImageToTensor, Collect), "
        f"simple_test(rescale=True) with the config's test_cfg) on matplotlib's grace_hopper.jpg (600x512, the JPEG "
        f"itself). Backbone shrunk identically on both sides: {SHRINK} (FPN in_channels follow; everything else as "
        f"the configs). Weights: tests/shared_data.py stand_in_weights(keys, seed={SEED}) over the mmdet model's "
        f"state-dict key table stored here, then the tweaks stored per detector (classification / mask logit "
        f"weights scaled, RetinaNet cls bias shifted by mmdet's prior-0.01 bias) so that random weights give "
        f"distinct detections above score_thr 0.05 and masks not decided by float noise. Detections: {counts}. "
        f"Cross-check: {cross or 'not run'} (the same pipeline with PyPI mmdet 2.11.0 + their davit.py gives the "
        f"same detections). mmcv build: {BUILD_FIXES}. Shims: empty torchvision package, timm.models.layers "
        f"(DropPath identity in eval, trunc_normal_ init only). Masks: COCO RLE counts of inference_detector's "
        f"bool masks at the original size. Limits: on this image these weights give the same detections under "
        f"mmdet < 2.18's RetinaNet candidate rule (the nms_pre anchors of highest max class score, all their classes "
        f"above score_thr) and mmdet >= 2.18's (the nms_pre best (anchor, class) pairs above score_thr), and under "
        f"either RPN min-size rule, so they do not tell those apart. "
        f"Made by tests/data/parity/make_mmdet_davit_detections.py."
    )
    data = {
        "notes": notes, "versions": primary["versions"], "davit_commit": COMMIT, "seed": SEED,
        "shrink": SHRINK, "cross_check": cross,
        "source": {"name": "grace_hopper.jpg", "sha256": sha256(open(jpeg, "rb").read()),
                   "decoded_bgr_sha256": sha256(src.tobytes()), "shape": list(src.shape)},
        "detectors": detectors,
    }
    torch.save(data, args.out)
    back = torch.load(args.out, weights_only=True)
    assert set(back["detectors"]) == set(detectors)
    print(f"wrote {args.out} ({os.path.getsize(args.out)} bytes): {counts}; cross-check {cross}")
    print(notes)


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--davit-git", required=True, help="bare git dir (or clone's .git) of github:dingmyu/davit")
    p.add_argument("--out", default=DEFAULT_OUT)
    p.add_argument("--jpeg", default=None)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--sources", nargs="+", default=["upstream", "pypi"])
    p.add_argument("--only", nargs="*", default=None)
    p.add_argument("--run", nargs=2, metavar=("SOURCE", "OUT"), help=argparse.SUPPRESS)
    a = p.parse_args()
    run(a) if a.run else main(a)
