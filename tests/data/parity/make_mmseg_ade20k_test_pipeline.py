"""Make mmseg_ade20k_test_pipeline.pt: what mmsegmentation 0.11.0's ADE20K test pipeline (with mmcv 1.3.0) produces.

The DaViT UperNet ADE20K config (dingmyu/davit, mmseg/configs/upernet_davit_512x512_160k_ade20k.py) inherits
mmseg's configs/_base_/datasets/ade20k.py, whose test pipeline is

    LoadImageFromFile
    MultiScaleFlipAug(img_scale=(2048, 512), flip=False, transforms=[Resize(keep_ratio=True), RandomFlip,
                      Normalize(mean=[123.675, 116.28, 103.53], std=[58.395, 57.12, 57.375], to_rgb=True),
                      ImageToTensor(keys=['img']), Collect(keys=['img'])])

and tools/test.py --aug-test sets img_ratios=[0.5, 0.75, 1.0, 1.25, 1.5, 1.75] and flip=True on it. This script builds
exactly that pipeline with mmseg's own registry/Compose and runs it on grace_hopper.jpg (shipped by matplotlib) and
on four crops of it. It is our code calling their library: no mmseg/mmcv source is copied here. It is only run by
hand, in a separate environment that has mmcv 1.3.0 and mmsegmentation 0.11.0 (never in the project's .venv):

    python3 -m venv /tmp/mmenv
    /tmp/mmenv/bin/pip install numpy opencv-python-headless==5.1.0.95 terminaltables matplotlib
    /tmp/mmenv/bin/pip install torch          # any CPU build (here 2.13.0+cpu); mmseg.datasets imports torch
    /tmp/mmenv/bin/pip install "setuptools<70" wheel    # mmcv 1.3.0's setup.py needs pkg_resources
    MMCV_WITH_OPS=0 /tmp/mmenv/bin/pip install --no-build-isolation mmcv==1.3.0    # the pure-Python "lite" mmcv
    /tmp/mmenv/bin/pip install --no-deps mmsegmentation==0.11.0
    # mmcv 1.3.0's mmcv/runner/checkpoint.py does `import torchvision` at import time (used only for torchvision://
    # checkpoint URLs, never by the data pipeline); an empty stand-in package satisfies it when no torchvision that
    # matches the installed torch is at hand:
    mkdir -p /tmp/mmstubs/torchvision && touch /tmp/mmstubs/torchvision/__init__.py
    # optional, to record how another OpenCV build behaves (mmcv only, no mmseg/torch needed there):
    python3 -m venv /tmp/cv4env
    /tmp/cv4env/bin/pip install "numpy<2" opencv-python-headless==4.5.5.64 "setuptools<70" wheel
    MMCV_WITH_OPS=0 /tmp/cv4env/bin/pip install --no-build-isolation mmcv==1.3.0
    PYTHONPATH=/tmp/mmstubs /tmp/mmenv/bin/python tests/data/parity/make_mmseg_ade20k_test_pipeline.py \
        --probe-python /tmp/cv4env/bin/python

Stage 1 (that command) runs mmseg and writes a pickle of plain Python objects; it then runs this same file with
--convert under --torch-python (default: the project's .venv python), which re-checks every stored image in the
project's environment and torch.save()s the .pt. Use the same opencv-python-headless version as the project's
.venv (see the `versions` entry of the .pt) so that JPEG decoding and cv2.resize are the same library.

Layout of the .pt (torch.load(..., weights_only=True) works: only tensors, str, int, float, bool, None,
tuple, list, dict):
    notes: str                       how it was made, what was verified, crop recipe, the view-size rule
    versions: {package: version}     of the mmseg environment
    source: {path, sha256, decoded_bgr_sha256, shape}
    normalize_lut: float32 tensor (3, 256)   lut[c, v] = mmcv.imnormalize's output for RGB channel c of pixel value v
    normalize_lut_by_opencv: {opencv version: the same LUT computed by mmcv 1.3.0 over that OpenCV build}
    images: {name: {
        crop: (y0, y1, x0, x1) into cv2.imread(grace_hopper.jpg) (BGR), or None for the JPEG itself
        input_shape: (h, w);  input_bgr_sha256: sha256 of LoadImageFromFile's uint8 HWC BGR array
        single: {scale, shape, scale_factor, img_shape, resized_sha256, resized_webp, normalized, normalized_sha256,
                 normalized_equals_lut}
        aug: [{ratio, flip, scale, shape, scale_factor, resized_sha256, resized_webp, equals_mirror_of_unflipped}, ...]
    }}
    resized_webp: 1-D uint8 tensor holding a lossless WebP file (or None where left out for size) of the resized uint8
        view *before* Normalize, in mmseg's BGR order: cv2.imdecode(t.numpy(), cv2.IMREAD_UNCHANGED) returns mmseg's
        array exactly (the file itself has true colours).
    resized_sha256: sha256 of the view's BGR HWC C-contiguous uint8 bytes (every view, with or without pixels).
    normalized_sha256: sha256 of the float32 CHW (RGB) array that ImageToTensor produced (its .numpy() bytes).
"""
import argparse
import hashlib
import os
import pickle
import shutil
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.abspath(os.path.join(HERE, "..", "..", ".."))
DEFAULT_OUT = os.path.join(HERE, "mmseg_ade20k_test_pipeline.pt")
DEFAULT_TORCH_PYTHON = os.path.join(REPO, ".venv", "bin", "python")
JPEG_REL = "matplotlib/mpl-data/sample_data/grace_hopper.jpg"

IMG_SCALE = (2048, 512)
AUG_RATIOS = [0.5, 0.75, 1.0, 1.25, 1.5, 1.75]
MEAN = [123.675, 116.28, 103.53]
STD = [58.395, 57.12, 57.375]

# (y0, y1, x0, x1) into the (600, 512) BGR array cv2.imread(grace_hopper.jpg, cv2.IMREAD_COLOR) returns.
CROPS = {
    "grace_hopper": None,                    # 600x512 (h x w), portrait, the JPEG itself
    "crop_333x493": (13, 346, 7, 500),       # landscape, short side binds
    "crop_599x511": (1, 600, 0, 511),        # odd, almost the full image: 512/511 upscale
    "crop_547x37": (41, 588, 233, 270),      # very narrow portrait: the long side (2048) binds
    "crop_29x500": (300, 329, 5, 505),       # very wide landscape: the long side (2048) binds
}
# Pixels kept (lossless WebP) for every single-scale view and these unflipped aug views: ratio 0.5 of every image,
# ratio 1.75 (the biggest upscale) of the two long-side-bound crops. All other views keep shape, scale factor and
# sha256 only (pixels of every view would make the file ~13 MB even as lossless WebP).
AUG_PIXEL_VIEWS = {(name, 0.5) for name in CROPS} | {("crop_547x37", 1.75), ("crop_29x500", 1.75)}


def sha256(b):
    return hashlib.sha256(b).hexdigest()


def encode_lossless(img):
    """Lossless WebP (cv2's IMWRITE_WEBP_QUALITY above 100), checked to decode back to the same array."""
    import cv2
    import numpy as np
    ok, buf = cv2.imencode(".webp", img, [cv2.IMWRITE_WEBP_QUALITY, 101])
    assert ok and np.array_equal(cv2.imdecode(buf, cv2.IMREAD_UNCHANGED), img)
    return buf.tobytes()


def mmcv_normalize_lut():
    """lut[c, v]: mmcv.imnormalize's float32 output for RGB channel c of a BGR pixel B=G=R=v (it is pointwise)."""
    import mmcv
    import numpy as np
    ramp = np.repeat(np.arange(256, dtype=np.uint8)[None, :, None], 3, axis=2)
    lut = mmcv.imnormalize(ramp, np.array(MEAN, np.float32), np.array(STD, np.float32), to_rgb=True)[0].T.copy()
    assert lut.shape == (3, 256) and lut.dtype == np.float32
    return lut


def lut_formulas(lut):
    """Which plain float formula reproduces the LUT bit for bit (max abs difference otherwise)."""
    import numpy as np
    v = np.arange(256, dtype=np.float32)[None, :]
    m32, s32 = np.array(MEAN, np.float32)[:, None], np.array(STD, np.float32)[:, None]
    v64, m64, s64 = v.astype(np.float64), np.array(MEAN)[:, None], np.array(STD)[:, None]
    candidates = {
        "(v - mean32) / std32 in float32": (v - m32) / s32,
        "(v - mean32) * float32(1 / std64) in float32": (v - m32) * (1 / s64).astype(np.float32),
        "float32((v - mean64) / std64)": ((v64 - m64) / s64).astype(np.float32),
        "float32((v - mean64) * (1 / std64))": ((v64 - m64) * (1 / s64)).astype(np.float32),
    }
    return {k: "yes" if np.array_equal(c, lut) else f"no (max diff {np.abs(c - lut).max():.3g})"
            for k, c in candidates.items()}


def probe(args):
    """--probe IN OUT, in an env with mmcv (any OpenCV, no mmseg/torch needed): decode, views and LUT with mmcv's
    functions that LoadImageFromFile / Resize(keep_ratio) / RandomFlip / Normalize call, for comparison."""
    import json

    import cv2
    import mmcv
    import numpy as np
    spec = json.load(open(args.probe[0]))
    src = mmcv.imfrombytes(open(spec["jpeg"], "rb").read(), flag="color", backend="cv2")
    lut = mmcv_normalize_lut()
    resized, normalized = [], []
    for crop, scale, flip, want_norm in spec["views"]:
        img = src if crop is None else np.ascontiguousarray(src[crop[0]:crop[1], crop[2]:crop[3]])
        out = mmcv.imrescale(img, tuple(scale))
        if flip:
            out = mmcv.imflip(out, direction="horizontal")
        resized.append(sha256(np.ascontiguousarray(out).tobytes()))
        if want_norm:
            norm = mmcv.imnormalize(out, np.array(MEAN, np.float32), np.array(STD, np.float32), True)
            normalized.append(sha256(np.ascontiguousarray(norm.transpose(2, 0, 1)).tobytes()))
        else:
            normalized.append(None)
    res = {"versions": {"python": sys.version.split()[0], "mmcv": mmcv.__version__, "opencv": cv2.__version__,
                        "numpy": np.__version__},
           "decoded_bgr_sha256": sha256(src.tobytes()), "lut": lut.tolist(), "resized_sha256": resized,
           "normalized_sha256": normalized}
    json.dump(res, open(args.probe[1], "w"))


def run_probes(args, jpeg, images, decoded_sha256):
    """Run --probe under each --probe-python; returns {opencv version: summary}."""
    import json

    import numpy as np
    views, keys = [], []
    for name, entry in images.items():
        for i, view in enumerate([entry["single"]] + entry["aug"]):
            views.append((entry["crop"], view["scale"], view.get("flip", False), i == 0))
            keys.append((name, i))
    out = {}
    for py in args.probe_python:
        tmp = tempfile.mkdtemp(prefix="mmseg_probe_")
        spec, res = os.path.join(tmp, "in.json"), os.path.join(tmp, "out.json")
        json.dump({"jpeg": jpeg, "views": views}, open(spec, "w"))
        subprocess.run([py, os.path.abspath(__file__), "--probe", spec, res], check=True)
        r = json.load(open(res))
        shutil.rmtree(tmp)
        same_resized = same_norm = n_norm = 0
        for (name, i), rh, nh in zip(keys, r["resized_sha256"], r["normalized_sha256"]):
            view = ([images[name]["single"]] + images[name]["aug"])[i]
            same_resized += rh == view["resized_sha256"]
            if nh is not None:
                n_norm += 1
                same_norm += nh == view["normalized_sha256"]
        lut = np.array(r["lut"], np.float32)
        out[r["versions"]["opencv"]] = {
            "versions": r["versions"], "lut": lut, "lut_formulas": lut_formulas(lut),
            "decode_identical": r["decoded_bgr_sha256"] == decoded_sha256,
            "resized_identical": f"{same_resized}/{len(keys)}", "normalized_identical": f"{same_norm}/{n_norm}"}
        print("probe", r["versions"], {k: x for k, x in out[r["versions"]["opencv"]].items() if k != "lut"})
    return out


def find_jpeg():
    """The project's .venv copy of matplotlib's grace_hopper.jpg (else the running python's matplotlib's)."""
    import glob
    hits = sorted(glob.glob(os.path.join(REPO, ".venv", "lib", "python3*", "site-packages", JPEG_REL)))
    if hits:
        return hits[0]
    import matplotlib
    return os.path.join(os.path.dirname(matplotlib.__file__), "mpl-data", "sample_data", "grace_hopper.jpg")


def test_pipeline_cfg(img_ratios, flip):
    mscfg = dict(type="MultiScaleFlipAug", img_scale=IMG_SCALE, flip=flip,
                 transforms=[dict(type="Resize", keep_ratio=True), dict(type="RandomFlip"),
                             dict(type="Normalize", mean=MEAN, std=STD, to_rgb=True),
                             dict(type="ImageToTensor", keys=["img"]), dict(type="Collect", keys=["img"])])
    if img_ratios is not None:
        mscfg["img_ratios"] = img_ratios
    return [dict(type="LoadImageFromFile"), mscfg]


def upto_flip(cfg):
    """The same pipeline with the transforms after RandomFlip replaced by a Collect of the uint8 image."""
    import copy
    cfg = copy.deepcopy(cfg)
    cfg[1]["transforms"] = cfg[1]["transforms"][:2] + [
        dict(type="Collect", keys=["img"],
             meta_keys=("ori_shape", "img_shape", "pad_shape", "scale_factor", "flip", "flip_direction", "scale"))]
    return cfg


def stage1(args):
    import cv2
    import mmcv
    import mmseg
    import numpy as np
    import torch
    from mmseg.datasets.pipelines import Compose

    versions = {"python": sys.version.split()[0], "mmcv": mmcv.__version__, "mmseg": mmseg.__version__,
                "opencv": cv2.__version__, "numpy": np.__version__, "torch": str(torch.__version__)}
    versions = {k: str(x) for k, x in versions.items()}  # torch's TorchVersion is not weights_only-loadable
    assert mmcv.__version__ == "1.3.0" and mmseg.__version__ == "0.11.0" or args.any_version, versions

    jpeg = args.jpeg or find_jpeg()
    src_bytes = open(jpeg, "rb").read()
    src = cv2.imread(jpeg, cv2.IMREAD_COLOR)
    assert src.shape == (600, 512, 3), src.shape

    lut = mmcv_normalize_lut()

    pipes = {
        "single": Compose(test_pipeline_cfg(None, False)),
        "single_u8": Compose(upto_flip(test_pipeline_cfg(None, False))),
        "aug": Compose(test_pipeline_cfg(AUG_RATIOS, True)),
        "aug_u8": Compose(upto_flip(test_pipeline_cfg(AUG_RATIOS, True))),
    }
    checks = []
    images = {}
    tmp = tempfile.mkdtemp(prefix="mmseg_parity_")
    for name, crop in CROPS.items():
        if crop is None:
            path = jpeg
            expect = src
        else:
            y0, y1, x0, x1 = crop
            expect = np.ascontiguousarray(src[y0:y1, x0:x1])
            path = os.path.join(tmp, name + ".png")
            assert cv2.imwrite(path, expect)

        def run(key, path=path):
            return pipes[key](dict(img_info=dict(filename=path), img_prefix=None))

        loaded = pipes["single_u8"].transforms[0](dict(img_info=dict(filename=path), img_prefix=None))["img"]
        assert loaded.dtype == np.uint8 and np.array_equal(loaded, expect), name
        h, w = loaded.shape[:2]
        entry = {"crop": crop, "input_shape": (h, w), "input_bgr_sha256": sha256(loaded.tobytes())}

        # (a) single scale
        s_full, s_u8 = run("single"), run("single_u8")
        assert len(s_full["img"]) == 1 and len(s_u8["img"]) == 1
        u8 = s_u8["img"][0]
        meta_u8 = s_u8["img_metas"][0].data
        meta = s_full["img_metas"][0].data
        t = s_full["img"][0]
        assert isinstance(t, torch.Tensor) and t.dtype == torch.float32 and t.shape == (3,) + u8.shape[:2]
        norm = t.numpy()
        via_mmcv = mmcv.imnormalize(u8, np.array(MEAN, np.float32), np.array(STD, np.float32), True)
        assert np.array_equal(norm, via_mmcv.transpose(2, 0, 1)), name
        rgb = u8[:, :, ::-1]
        via_lut = np.stack([lut[c][rgb[:, :, c]] for c in range(3)])
        eq_lut = bool(np.array_equal(norm, via_lut))
        assert eq_lut, name
        assert meta["img_shape"] == u8.shape and meta["flip"] is False and meta_u8["scale"] == IMG_SCALE
        assert np.array_equal(meta["scale_factor"], meta_u8["scale_factor"])
        entry["single"] = {
            "scale": tuple(meta_u8["scale"]), "shape": tuple(u8.shape[:2]), "img_shape": tuple(meta["img_shape"]),
            "scale_factor": [float(x) for x in meta["scale_factor"]],
            "resized_sha256": sha256(np.ascontiguousarray(u8).tobytes()), "resized_webp": encode_lossless(u8),
            "normalized": None, "normalized_sha256": sha256(np.ascontiguousarray(norm).tobytes()),
            "normalized_equals_lut": eq_lut,
        }

        # (b) aug test: 6 ratios x flip
        a_full, a_u8 = run("aug"), run("aug_u8")
        n = len(AUG_RATIOS) * 2
        assert len(a_full["img"]) == n and len(a_u8["img"]) == n
        views = []
        for i in range(n):
            ratio = AUG_RATIOS[i // 2]
            img = a_u8["img"][i]
            m = a_u8["img_metas"][i].data
            mf = a_full["img_metas"][i].data
            assert m["flip"] == bool(i % 2) == mf["flip"] and m["flip_direction"] == "horizontal"
            assert m["scale"] == (int(IMG_SCALE[0] * ratio), int(IMG_SCALE[1] * ratio))
            assert mf["img_shape"] == img.shape and np.array_equal(mf["scale_factor"], m["scale_factor"])
            nv = a_full["img"][i].numpy()
            assert np.array_equal(nv, mmcv.imnormalize(img, np.array(MEAN, np.float32), np.array(STD, np.float32),
                                                       True).transpose(2, 0, 1)), (name, i)
            img_c = np.ascontiguousarray(img)
            view = {"ratio": ratio, "flip": bool(m["flip"]), "scale": tuple(m["scale"]), "shape": tuple(img.shape[:2]),
                    "scale_factor": [float(x) for x in m["scale_factor"]], "resized_sha256": sha256(img_c.tobytes()),
                    "resized_webp": None, "equals_mirror_of_unflipped": None}
            if m["flip"]:
                prev = views[-1]
                mirror = bool(np.array_equal(img_c, np.ascontiguousarray(a_u8["img"][i - 1][:, ::-1])))
                assert mirror and prev["ratio"] == ratio and not prev["flip"], (name, i)
                view["equals_mirror_of_unflipped"] = mirror
            elif (name, ratio) in AUG_PIXEL_VIEWS:
                view["resized_webp"] = encode_lossless(img_c)
            if ratio == 1.0 and not m["flip"]:
                assert view["resized_sha256"] == entry["single"]["resized_sha256"], name
            views.append(view)
        entry["aug"] = views
        images[name] = entry
        checks.append(name)
        print(f"{name}: input {h}x{w}  single {entry['single']['shape']}  aug "
              + " ".join(f"{vv['shape'][0]}x{vv['shape'][1]}" for vv in views[::2]))

    # the rule, checked on every view: size from mmcv.rescale_size's formula, reimplemented here only to assert it
    for name, entry in images.items():
        h, w = entry["input_shape"]
        for view in [entry["single"]] + entry["aug"]:
            sw, sh = view["scale"]
            f = min(max(sw, sh) / max(h, w), min(sw, sh) / min(h, w))
            assert view["shape"] == (int(h * f + 0.5), int(w * f + 0.5)), (name, view["scale"])
            assert view["scale_factor"] == [float(np.float32(view["shape"][1] / w)),
                                            float(np.float32(view["shape"][0] / h))] * 2

    shutil.rmtree(tmp)
    probes = run_probes(args, jpeg, images, sha256(src.tobytes()))
    luts = {versions["opencv"]: {"versions": versions, "lut": lut, "lut_formulas": lut_formulas(lut)}}
    luts.update(probes)
    payload = {
        "versions": versions,
        "source": {"path": "<site-packages>/" + JPEG_REL, "sha256": sha256(src_bytes),
                   "decoded_bgr_sha256": sha256(src.tobytes()), "shape": tuple(src.shape[:2])},
        "normalize_lut": lut, "luts": luts, "images": images,
    }
    payload["notes"] = make_notes(payload)
    fd, pkl = tempfile.mkstemp(suffix=".pkl", prefix="mmseg_parity_")
    with os.fdopen(fd, "wb") as f:
        pickle.dump(payload, f, protocol=4)
    print("stage 1 done:", pkl)
    subprocess.run([args.torch_python, os.path.abspath(__file__), "--convert", pkl, "--out", args.out], check=True)


def make_notes(p):
    v = p["versions"]
    lines = [
        "Reference output of mmsegmentation's ADE20K TEST pipeline, made by running mmseg's own code "
        f"(mmseg {v['mmseg']}, mmcv {v['mmcv']} lite i.e. MMCV_WITH_OPS=0, python {v['python']}, "
        f"opencv-python-headless {v['opencv']}, numpy {v['numpy']}, torch {v['torch']} CPU; torchvision replaced by "
        "an empty stand-in module because mmcv/runner/checkpoint.py imports it at import time, unused by pipelines).",
        "Made by tests/data/parity/make_mmseg_ade20k_test_pipeline.py (see its docstring for the exact commands).",
        "Pipeline built with mmseg.datasets.pipelines.Compose from the config dicts of mmseg 0.11.0's "
        "configs/_base_/datasets/ade20k.py test_pipeline: LoadImageFromFile -> "
        "MultiScaleFlipAug(img_scale=(2048, 512), "
        "transforms=[Resize(keep_ratio=True), RandomFlip, Normalize(mean=[123.675, 116.28, 103.53], "
        "std=[58.395, 57.12, 57.375], to_rgb=True), ImageToTensor(['img']), Collect(['img'])]); single: img_ratios "
        "unset, flip=False; aug (tools/test.py --aug-test): img_ratios=[0.5, 0.75, 1.0, 1.25, 1.5, 1.75], flip=True.",
        "The uint8 views before Normalize come from the same pipeline with the transforms after RandomFlip replaced by "
        "Collect (mmseg's); the normalized tensor from the full pipeline. Checked in the mmseg env: normalized == "
        "mmcv.imnormalize(view) transposed to CHW == normalize_lut[c][view_rgb] exactly, for every view; aug view "
        "(ratio 1.0, no flip) == single view; every flipped view == its unflipped predecessor[:, ::-1] exactly "
        "(mmcv.imflip after the resize); LoadImageFromFile's array == cv2.imread(jpeg)[crop] exactly.",
        "Source code identity: the installed mmseg 0.11.0 wheel's mmseg/datasets/pipelines/{test_time_aug,transforms,"
        "loading,formating,compose,__init__}.py are byte-identical to the copy vendored in dingmyu/davit "
        "(mmseg/mmseg/datasets/pipelines, whose mmseg/version.py says 0.11.0); the installed mmcv 1.3.0 sdist's "
        "mmcv/image/{geometric,photometric,io,colorspace,__init__}.py, fileio/file_client.py, utils/misc.py, "
        "parallel/data_container.py are byte-identical to open-mmlab/mmcv tag v1.3.0 (commit 75d907c9).",
        "Decoding: LoadImageFromFile(color_type='color', imdecode_backend='cv2') = cv2.imdecode(bytes, "
        "cv2.IMREAD_COLOR): uint8 HWC BGR. The pipeline stays BGR up to Normalize(to_rgb=True).",
        "View size rule (MultiScaleFlipAug mode 2 + Resize keep_ratio -> mmcv.imrescale -> rescale_size): "
        "scale_r = (int(2048 * r), int(512 * r)) per ratio r (single scale: (2048, 512)); "
        "f = min(max(scale_r) / max(h, w), min(scale_r) / min(h, w)) in Python float64; "
        "new_w = int(w * f + 0.5), new_h = int(h * f + 0.5); cv2.resize(img, (new_w, new_h), "
        "interpolation=cv2.INTER_LINEAR); meta scale_factor = float32 [new_w / w, new_h / h, new_w / w, new_h / h]. "
        "Views are ordered ratio-major, flip inner: (r0, no flip), (r0, flip), (r1, no flip), ...",
        "Normalize: normalize_lut[c, v] (c in RGB order) is mmcv.imnormalize's float32 output for value v under "
        f"OpenCV {v['opencv']}; normalize_lut_by_opencv[version] the same under other OpenCV builds (mmcv's "
        "cv2.subtract/cv2.multiply arithmetic changed between OpenCV releases). Which plain formula equals it: "
        + " | ".join(f"OpenCV {ver}: " + "; ".join(f"{k}: {ok}" for k, ok in e["lut_formulas"].items())
                     for ver, e in p["luts"].items()) + ".",
        *[f"Probe under OpenCV {ver} (mmcv {e['versions']['mmcv']}, numpy {e['versions']['numpy']}; "
          "mmcv.imfrombytes + imrescale + imflip + imnormalize, the functions the pipeline calls): JPEG decode "
          f"identical: {e['decode_identical']}; resized views identical: {e['resized_identical']}; single-scale "
          f"normalized identical: {e['normalized_identical']}."
          for ver, e in p["luts"].items() if "resized_identical" in e],
        "normalized is None everywhere: each float32 CHW view is >= 2.9 MB raw (the file must stay < 3 MB); "
        "normalized_sha256 + normalize_lut reproduce it exactly (lut[c][view_rgb[..., c]] stacked to CHW).",
        f"Images: {p['source']['path']} (sha256 {p['source']['sha256'][:16]}..., cv2.imread -> {p['source']['shape']} "
        "BGR) and crops of it: crop (y0, y1, x0, x1) means cv2.imread(jpeg, cv2.IMREAD_COLOR)[y0:y1, x0:x1], "
        "written losslessly with cv2.imwrite('<name>.png') and loaded by mmseg's LoadImageFromFile from that PNG. "
        "Crops: " + ", ".join(f"{k}={c}" for k, c in CROPS.items()) + ".",
        "Pixels stored as lossless WebP bytes (cv2.imencode('.webp', bgr, [cv2.IMWRITE_WEBP_QUALITY, 101]); "
        "cv2.imdecode(..., cv2.IMREAD_UNCHANGED) gives back mmseg's BGR array) for every single-scale view and the "
        "unflipped aug views: " + ", ".join(f"{n} r={r}" for n, r in sorted(AUG_PIXEL_VIEWS)) + "; other views "
        "have resized_webp None but shape, scale_factor and "
        "resized_sha256 (sha256 of the BGR HWC uint8 C-contiguous bytes). JPEG decoding and cv2.resize depend on the "
        "OpenCV build: compare input_bgr_sha256 / source.decoded_bgr_sha256 first.",
    ]
    return "\n".join(lines)


def convert(args):
    import cv2
    import numpy as np
    import torch

    with open(args.convert, "rb") as f:
        p = pickle.load(f)
    src = cv2.imread(find_jpeg(), cv2.IMREAD_COLOR)
    decode_same = sha256(src.tobytes()) == p["source"]["decoded_bgr_sha256"]
    print("project env: opencv", cv2.__version__, "JPEG decode identical to the mmseg env:", decode_same)
    lut = np.asarray(p["normalize_lut"], np.float32)
    for name, entry in p["images"].items():
        if decode_same:
            c = entry["crop"]
            img = src if c is None else np.ascontiguousarray(src[c[0]:c[1], c[2]:c[3]])
            assert sha256(img.tobytes()) == entry["input_bgr_sha256"], name
        for view in [entry["single"]] + entry["aug"]:
            if view["resized_webp"] is None:
                continue
            u8 = cv2.imdecode(np.frombuffer(view["resized_webp"], np.uint8), cv2.IMREAD_UNCHANGED)
            assert u8.shape == tuple(view["shape"]) + (3,) and sha256(u8.tobytes()) == view["resized_sha256"]
            if "normalized_sha256" in view:
                rgb = u8[:, :, ::-1]
                norm = np.stack([lut[c][rgb[:, :, c]] for c in range(3)])
                assert sha256(norm.tobytes()) == view["normalized_sha256"], name
    # encoded images as 1-D uint8 tensors: torch.save pickles with protocol 2, which stores `bytes` as latin-1 text
    # (about 1.5x larger); tensors are stored raw
    for entry in p["images"].values():
        for view in [entry["single"]] + entry["aug"]:
            if view["resized_webp"] is not None:
                view["resized_webp"] = torch.frombuffer(bytearray(view["resized_webp"]), dtype=torch.uint8)
    out = {
        "notes": p["notes"], "versions": p["versions"], "source": p["source"],
        "normalize_lut": torch.from_numpy(lut.copy()), "images": p["images"],
        "normalize_lut_by_opencv": {ver: torch.from_numpy(np.asarray(e["lut"], np.float32).copy())
                                    for ver, e in p["luts"].items()},
    }
    torch.save(out, args.out)
    back = torch.load(args.out, weights_only=True)
    assert set(back["images"]) == set(p["images"])
    print("wrote", args.out, os.path.getsize(args.out), "bytes")
    os.remove(args.convert)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=DEFAULT_OUT)
    ap.add_argument("--jpeg", default=None, help="grace_hopper.jpg (default: matplotlib's sample_data)")
    ap.add_argument("--torch-python", default=DEFAULT_TORCH_PYTHON, help="python that torch.save()s the .pt")
    ap.add_argument("--any-version", action="store_true", help="allow mmcv/mmseg other than 1.3.0/0.11.0")
    ap.add_argument("--probe-python", action="append", default=[],
                    help="python of another env with mmcv 1.3.0 (e.g. another OpenCV) to compare decode/resize/LUT")
    ap.add_argument("--convert", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--probe", nargs=2, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.probe:
        probe(args)
    elif args.convert:
        convert(args)
    else:
        stage1(args)


if __name__ == "__main__":
    main()
