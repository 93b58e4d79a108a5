"""Make vit_adapter_mask2former_probs.pt: the class probabilities at the ORIGINAL image size that ViT-Adapter's own
segmentation code (czczup/ViT-Adapter segmentation/: mmseg_custom BEiTAdapter + Mask2FormerHead +
EncoderDecoderMask2Former, on mmsegmentation 0.20.2 / mmdet 2.22.0 / mmcv-full 1.4.2 / timm 0.4.12, the versions of
its README) computes for crops of a real photograph, in whole and slide test modes, for the row

    ViT-Adapter-L (BEiT-L) + Mask2Former, ADE20K 640, 160k
    segmentation/configs/ade20k/mask2former_beit_adapter_large_640_160k_ade20k_ss.py
    (dense: configs/ade20k/mask2former/vit_adapter_large_beit_640_160k.yaml)

What runs is the row's own config file (read from the upstream repository at a recorded commit, `_base_` files
included) loaded with mmcv's Config, ViT-Adapter's mmseg_custom package registered into mmseg 0.20.2, and mmseg's own
code: the row's test pipeline (LoadImageFromFile -> MultiScaleFlipAug(img_scale (2048, 640), flip False)[Resize
keep_ratio, ResizeToMultiple(size_divisor=32), RandomFlip, Normalize, ImageToTensor, Collect]) composed by mmseg's
registry, mmcv's collate, and EncoderDecoderMask2Former.forward(return_loss=False, rescale=True) -> simple_test ->
inference (whole_inference / slide_inference: Mask2FormerHead.forward_test = einsum(softmax(cls)[..., :-1],
sigmoid(mask)) at stride 4, bilinear to the network input (align_corners False), windows summed / counted, bilinear to
ori_shape, softmax over classes). The probabilities recorded are what `inference` returns, read by wrapping it.

Changes to the row, identical on both sides (dense's test applies the same through each model's `dense_opts`):
  * Shrunk: BEiTAdapter embed_dim 128, depth 4, num_heads 4, deform_num_heads 4, conv_inplane 16,
    interaction_indexes [[0, 0], [1, 1], [2, 2], [3, 3]] (one block per interaction; 4 interactions, the last with
    the extra extractors, as the row); img_size, patch 16, mlp_ratio, qkv_bias, rel-pos bias, init_values, n_points,
    cffn_ratio, deform_ratio 0.5 are the row's. Mask2FormerHead: feat/out channels 64, 20 queries, 5 classes
    (3 things + 2 stuff), pixel-decoder encoder 2 layers (4 heads, FFN 256, sine 32 + 32), transformer decoder 3 layers
    (4 heads, FFN 256); level structure, GN, num_levels 3, positional encodings normalised, decoder operation order
    are the row's. with_cp off (memory only).
  * Whole mode: the seg BEiTAdapter's relative position bias is fixed at img_size x img_size (upstream raises for any
    other token grid), so whole mode can only run on a view of exactly 640 x 640: a SQUARE crop of the photo
    (CROPS["square"], 200 x 200 -> 640 x 640). Slide mode runs the row's test_cfg (crop 640, stride 426) on a
    non-square crop (CROPS["wide"], 151 x 223 -> Resize 640 x 945 -> ResizeToMultiple 640 x 960: 2 windows).
    slide_320: a second shrunk model with img_size 320 (rel-pos tables of the 320 grid), test_cfg crop 320,
    stride 213 on the same 640 x 960 view: a 3 x 5 grid of windows, so window placement and overlap counts are
    checked along both axes.
  * Compiled ops: none. mmcv is the "lite" build (MMCV_WITH_OPS=0); `mmcv.ops` is replaced by a stand-in module
    before anything imports it: its `multi_scale_deform_attn` submodule is mmcv 1.4.2's own
    mmcv/ops/multi_scale_deform_attn.py loaded with `ext_loader.load_ext` stubbed (its MultiScaleDeformableAttention
    runs `multi_scale_deformable_attn_pytorch` on CPU tensors by itself); every other mmcv.ops name raises if called
    (point_sample / sigmoid_focal_loss are training-only here). The adapter's `ops.modules.MSDeformAttn` is the
    upstream detection/ops package (the segmentation README symlinks it) with the compiled
    `MultiScaleDeformableAttention` extension stubbed and MSDeformAttnFunction.apply routed to the package's own
    pure-PyTorch `ms_deform_attn_core_pytorch` (identical maths; the CUDA kernel is the only other implementation).
  * SyncBatchNorm (adapter norms): eval mode on one CPU process = BatchNorm with running statistics.

Weights: each model's state-dict key table (mmseg names, `backbone.` / `decode_head.`) and a seed; the stand-in
weights are rebuilt from them by tests/shared_data.stand_in_weights (imported through upstream.py, which needs only
torch), then the keys of `gains` are multiplied (the classifier and the last mask
embedding layer; stand-in weights give nearly constant scores, hence near-uniform probabilities, otherwise).

Input: matplotlib's grace_hopper.jpg, cv2.imread(IMREAD_COLOR) (BGR, 600 x 512), cropped and written as PNG
(lossless): the test writes the same PNGs and feeds them to dense's mapper.

Noise: the same model and views in float64 give float64 probabilities; |fp32 - fp64| is recorded per mode, and atol
is the larger of MIN_ATOL and 10 x that noise.

It is only run by hand, in a separate environment (never the project's .venv) that reuses the project's .venv for
torch, torchvision, numpy, opencv, scipy (a .pth file appends its site-packages after the environment's own; timm
0.4.12 is installed into the environment so that it shadows the project's timm):

    SP=/work/main/.venv/lib/python3.11/site-packages     # the project venv (make install)
    python3 -m venv /tmp/mmseg_parity/env020
    P=/tmp/mmseg_parity/env020/bin/pip
    $P install "setuptools<70" wheel addict "yapf==0.40.1" terminaltables prettytable packaging pyyaml Pillow
    echo $SP > /tmp/mmseg_parity/env020/lib/python3.11/site-packages/zz_project_venv.pth
    MMCV_WITH_OPS=0 $P install --no-build-isolation --no-deps mmcv==1.4.2      # "lite" mmcv(-full) 1.4.2 sources
    $P install --no-deps mmsegmentation==0.20.2 mmdet==2.22.0 timm==0.4.12
    # czczup/ViT-Adapter as a git directory (any clone; the commit used is recorded in the .pt)
    /tmp/mmseg_parity/env020/bin/python tests/data/parity/make_vit_adapter_mask2former.py \
        [--vit-adapter-git /work/.mirror/czczup+ViT-Adapter/repo]

Layout of the .pt (torch.load(..., weights_only=True) works):
    notes: str; versions: {package: version}; upstream: {repo: commit}; row_config: str (upstream path)
    dense_config: str (repo-relative yaml); source_sha256: sha256 of grace_hopper.jpg
    crops: {name: {crop: (y0, y1, x0, x1), input_bgr_sha256: str}}
    models: {name: {keys: {mmseg key: (shape, dtype str)}, seed: int, gains: {key: factor},
             dense_opts: [KEY, VALUE, ...]}}
    modes: {"whole" | "slide" | "slide_320": {model: str, crop: str, mode_opts: [KEY, VALUE, ...], probs: float32
            [C, H, W] (H x W = the crop), probs_fp64_maxdiff: float, views: [(img_shape (h, w), flip)],
            windows: int, logit_std: float, atol: float (the larger of MIN_ATOL and 10 x probs_fp64_maxdiff)}}
    atol: float (the largest mode atol), rtol: float
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
MIRRORS = "/work/.mirror"
ROW_CONFIG = "segmentation/configs/ade20k/mask2former_beit_adapter_large_640_160k_ade20k_ss.py"
DENSE_CONFIG = "configs/ade20k/mask2former/vit_adapter_large_beit_640_160k.yaml"
VERSIONS = {"mmseg": "0.20.2", "mmdet": "2.22.0", "mmcv": "1.4.2", "timm": "0.4.12"}

# (y0, y1, x0, x1) into cv2.imread(grace_hopper.jpg) (600 x 512)
CROPS = {"square": (60, 260, 150, 350),   # 200 x 200 -> 640 x 640 (whole mode needs exactly img_size)
         "wide": (71, 222, 139, 362)}     # 151 x 223 -> 640 x 945 -> ResizeToMultiple -> 640 x 960
SEED = 0
THINGS, STUFF = 3, 2
NUM_CLASSES = THINGS + STUFF
EMBED, DEPTH, HEADS, DEFORM_HEADS, CONV_INPLANE = 128, 4, 4, 4, 16
FEAT, QUERIES, ENC_LAYERS, DEC_LAYERS, M2F_HEADS, FFN = 64, 20, 2, 3, 4, 256
MIN_ATOL, RTOL = 2e-5, 0.0
# stand-in weights give near-constant class scores (softmax(0.02 n) ~ uniform, sigmoid(~0) ~ 0.5) and so near-uniform
# probabilities, where resizing and averaging nearly commute with softmax: the classifier and the last mask-embedding
# layer are scaled up
# (class x10, mask logits x300: per-class probabilities from 0.2 to 0.98 over the image, spatial std up to 0.2)
GAINS = {"decode_head.cls_embed.weight": 10.0, "decode_head.cls_embed.bias": 10.0,
         "decode_head.mask_embed.4.weight": 300.0, "decode_head.mask_embed.4.bias": 300.0}
MODELS = {"img640": 640, "img320": 320}
MODES = {  # mode: (model, crop, test_cfg)
    "whole": ("img640", "square", dict(mode="whole")),
    "slide": ("img640", "wide", dict(mode="slide", crop_size=(640, 640), stride=(426, 426))),
    "slide_320": ("img320", "wide", dict(mode="slide", crop_size=(320, 320), stride=(213, 213))),
}


def dense_opts(img_size: int) -> list:
    """dense config overrides that build the same shrunk model as `shrink` does on the mmseg side."""
    return ["MODEL.VIT_ADAPTER.IMG_SIZE", img_size, "MODEL.VIT_ADAPTER.EMBED_DIM", EMBED,
            "MODEL.VIT_ADAPTER.DEPTH", DEPTH, "MODEL.VIT_ADAPTER.NUM_HEADS", HEADS,
            "MODEL.VIT_ADAPTER.DEFORM_NUM_HEADS", DEFORM_HEADS, "MODEL.VIT_ADAPTER.CONV_INPLANE", CONV_INPLANE,
            "MODEL.VIT_ADAPTER.INTERACTION_INDEXES", [[i, i] for i in range(DEPTH)],
            "MODEL.VIT_ADAPTER.USE_CHECKPOINT", False,
            "MODEL.SEM_SEG_HEAD.NUM_CLASSES", NUM_CLASSES, "MODEL.SEM_SEG_HEAD.CONVS_DIM", FEAT,
            "MODEL.SEM_SEG_HEAD.MASK_DIM", FEAT, "MODEL.SEM_SEG_HEAD.TRANSFORMER_ENC_LAYERS", ENC_LAYERS,
            "MODEL.SEM_SEG_HEAD.DEFORMABLE_TRANSFORMER_ENCODER_N_HEADS", M2F_HEADS,
            "MODEL.SEM_SEG_HEAD.DEFORMABLE_TRANSFORMER_ENCODER_DIM_FEEDFORWARD", FFN,
            "MODEL.MASK_FORMER.HIDDEN_DIM", FEAT, "MODEL.MASK_FORMER.NHEADS", M2F_HEADS,
            "MODEL.MASK_FORMER.DIM_FEEDFORWARD", FFN, "MODEL.MASK_FORMER.DEC_LAYERS", DEC_LAYERS + 1,
            "MODEL.MASK_FORMER.NUM_OBJECT_QUERIES", QUERIES, "MODEL.MASK_FORMER.USE_CHECKPOINT", False]


def mode_opts(test_cfg: dict) -> list:
    if test_cfg["mode"] == "whole":
        return ["TEST.MODE", "whole", "TEST.AUG.ENABLED", False]
    return ["TEST.MODE", "slide", "TEST.SLIDE.CROP_SIZE", list(test_cfg["crop_size"]), "TEST.SLIDE.STRIDE",
            list(test_cfg["stride"]), "TEST.AUG.ENABLED", False]


def shrink(cfg, img_size: int) -> None:
    """The row's mmseg model config -> the shrunk model (see the module docstring)."""
    m = cfg.model
    m.pretrained = None
    b = m.backbone
    b.update(img_size=img_size, embed_dim=EMBED, depth=DEPTH, num_heads=HEADS, deform_num_heads=DEFORM_HEADS,
             conv_inplane=CONV_INPLANE, interaction_indexes=[[i, i] for i in range(DEPTH)], with_cp=False)
    h = m.decode_head
    h.update(in_channels=[EMBED] * 4, feat_channels=FEAT, out_channels=FEAT, num_queries=QUERIES,
             num_things_classes=THINGS, num_stuff_classes=STUFF)
    h.loss_cls.class_weight = [1.0] * NUM_CLASSES + [0.1]
    enc = h.pixel_decoder.encoder
    enc.num_layers = ENC_LAYERS
    enc.transformerlayers.attn_cfgs.update(embed_dims=FEAT, num_heads=M2F_HEADS)
    enc.transformerlayers.ffn_cfgs.update(embed_dims=FEAT, feedforward_channels=FFN, with_cp=False)
    h.pixel_decoder.positional_encoding.num_feats = FEAT // 2
    h.positional_encoding.num_feats = FEAT // 2
    dec = h.transformer_decoder
    dec.num_layers = DEC_LAYERS
    dec.transformerlayers.attn_cfgs.update(embed_dims=FEAT, num_heads=M2F_HEADS)
    dec.transformerlayers.ffn_cfgs.update(embed_dims=FEAT, feedforward_channels=FFN, with_cp=False)
    dec.transformerlayers.feedforward_channels = FFN


def stand_in_mmcv_ops() -> None:
    """Lite mmcv has no compiled ops. `mmcv.ops` becomes a module whose names raise when called, except
    `multi_scale_deform_attn` (MultiScaleDeformableAttention): mmcv's own file, its extension loader stubbed (on CPU
    tensors it runs multi_scale_deformable_attn_pytorch and never touches the extension)."""
    import mmcv
    from mmcv.utils import ext_loader
    ops = types.ModuleType("mmcv.ops")
    ops.__path__ = []

    def getattr_(name):
        if name.startswith("__"):
            raise AttributeError(name)

        def missing(*args, **kwargs):
            raise RuntimeError(f"mmcv.ops.{name} needs compiled mmcv ops (lite mmcv here)")
        return missing
    ops.__getattr__ = getattr_
    sys.modules["mmcv.ops"] = ops
    mmcv.ops = ops
    load_ext = ext_loader.load_ext
    ext_loader.load_ext = lambda name, funcs: types.SimpleNamespace()
    try:
        msda = load_module("mmcv.ops.multi_scale_deform_attn",
                           os.path.join(os.path.dirname(mmcv.__file__), "ops", "multi_scale_deform_attn.py"))
    finally:
        ext_loader.load_ext = load_ext
    ops.multi_scale_deform_attn = msda
    ops.MultiScaleDeformableAttention = msda.MultiScaleDeformableAttention


def stand_in_adapter_ops(ops_dir: str) -> None:
    """ViT-Adapter's `ops` package (detection/ops) without its compiled extension: MSDeformAttnFunction.apply routed
    to the package's own ms_deform_attn_core_pytorch."""
    sys.modules["MultiScaleDeformableAttention"] = types.ModuleType("MultiScaleDeformableAttention")
    sys.path.insert(0, os.path.dirname(ops_dir))
    import ops.functions.ms_deform_attn_func as func
    core = func.ms_deform_attn_core_pytorch

    def apply(value, spatial_shapes, level_start_index, sampling_locations, attention_weights, im2col_step):
        return core(value, spatial_shapes, sampling_locations, attention_weights)
    func.MSDeformAttnFunction.apply = staticmethod(apply)
    import ops.modules  # noqa: F401  (binds the same class object)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--vit-adapter-git", default=os.path.join(MIRRORS, "czczup+ViT-Adapter", "repo"))
    ap.add_argument("--out", default=os.path.join(HERE, "vit_adapter_mask2former_probs.pt"))
    args = ap.parse_args()

    import mmcv
    stand_in_mmcv_ops()
    import cv2
    import matplotlib
    import numpy as np
    import timm
    import torch
    import mmdet
    import mmseg
    for name, module in (("mmseg", mmseg), ("mmdet", mmdet), ("mmcv", mmcv), ("timm", timm)):
        assert module.__version__ == VERSIONS[name], (name, module.__version__)
    from mmcv.parallel import collate
    from mmseg.apis import init_segmentor
    from mmseg.datasets.pipelines import Compose

    work = tempfile.mkdtemp(prefix="vit_adapter_m2f_")
    upstream = {"czczup/ViT-Adapter": git_commit(args.vit_adapter_git)}
    extract(args.vit_adapter_git, ["segmentation/configs", "segmentation/mmseg_custom", "segmentation/mmcv_custom",
                                   "detection/ops"], work)
    stand_in_adapter_ops(os.path.join(work, "detection", "ops"))
    sys.path.insert(0, os.path.join(work, "segmentation"))
    import mmcv_custom  # noqa: F401
    import mmseg_custom  # noqa: F401

    jpeg = os.path.join(os.path.dirname(matplotlib.__file__), "mpl-data", "sample_data", "grace_hopper.jpg")
    image = cv2.imread(jpeg, cv2.IMREAD_COLOR)
    crops, pngs = {}, {}
    for name, (y0, y1, x0, x1) in CROPS.items():
        crop = np.ascontiguousarray(image[y0:y1, x0:x1])
        pngs[name] = os.path.join(work, f"{name}.png")
        assert cv2.imwrite(pngs[name], crop) and np.array_equal(cv2.imread(pngs[name], cv2.IMREAD_COLOR), crop)
        crops[name] = dict(crop=CROPS[name], input_bgr_sha256=sha256(crop.tobytes()))

    row_cfg = mmcv.Config.fromfile(os.path.join(work, ROW_CONFIG))
    models, built = {}, {}
    for name, img_size in MODELS.items():
        cfg = mmcv.Config.fromfile(os.path.join(work, ROW_CONFIG))
        shrink(cfg, img_size)
        model = init_segmentor(cfg, checkpoint=None, device="cpu")
        model.eval()
        sd = model.state_dict()
        keys = {k: (tuple(v.shape), str(v.dtype)) for k, v in sd.items()}
        weights = stand_in_weights(keys, SEED)
        for k, gain in GAINS.items():
            weights[k] = weights[k] * gain
        missing, unexpected = model.load_state_dict(weights, strict=False)
        assert not unexpected and all(k.endswith(("num_batches_tracked", "relative_position_index"))
                                      for k in missing), (missing, unexpected)
        models[name] = dict(keys=keys, seed=SEED, gains=GAINS, dense_opts=dense_opts(img_size))
        built[name] = model

    recorded = []
    results, notes_modes = {}, []
    for mode, (model_name, crop_name, test_cfg) in MODES.items():
        model = built[model_name]
        model.test_cfg = mmcv.ConfigDict(test_cfg)
        inference = type(model).inference
        model.inference = lambda img, img_meta, rescale, m=model, f=inference: recorded.append(
            f(m, img, img_meta, rescale)) or recorded[-1]
        encode_decode, windows = type(model).encode_decode, []
        model.encode_decode = lambda img, img_meta, m=model, f=encode_decode, windows=windows: windows.append(
            tuple(img.shape[-2:])) or f(m, img, img_meta)
        pipeline = copy.deepcopy(row_cfg.data.test.pipeline)
        data = Compose(pipeline)(dict(img_info=dict(filename=pngs[crop_name]), img_prefix=None, seg_fields=[]))
        data = collate([data], samples_per_gpu=1)
        data["img_metas"] = [m.data[0] for m in data["img_metas"]]
        views = [(tuple(int(s) for s in m[0]["img_shape"][:2]), bool(m[0]["flip"])) for m in data["img_metas"]]
        probs = {}
        for dtype in (torch.float32, torch.float64):
            model.to(dtype)
            recorded.clear()
            windows.clear()
            with torch.no_grad():
                model(return_loss=False, rescale=True, img=[t.to(dtype) for t in data["img"]],
                      img_metas=data["img_metas"])
            assert len(recorded) == 1, len(recorded)
            probs[dtype] = recorded[0][0].clone()
        model.to(torch.float32)
        p32, p64 = probs[torch.float32], probs[torch.float64]
        y0, y1, x0, x1 = CROPS[crop_name]
        assert tuple(p32.shape) == (NUM_CLASSES, y1 - y0, x1 - x0), p32.shape
        assert torch.allclose(p32.sum(0), torch.ones_like(p32[0]), atol=1e-5)
        diff = (p32.double() - p64).abs().max().item()
        logp = p64.log()
        spread = (logp - logp.mean(0, keepdim=True)).std().item()
        labels = torch.bincount(p64.argmax(0).flatten(), minlength=NUM_CLASSES).tolist()
        results[mode] = dict(model=model_name, crop=crop_name, mode_opts=mode_opts(test_cfg),
                             probs=p32.float().contiguous(), probs_fp64_maxdiff=diff, views=views,
                             windows=len(windows), logit_std=spread)
        notes_modes.append(f"{mode}: model {model_name}, crop {crop_name}, test_cfg {test_cfg}, view(s) {views}, "
                           f"{len(windows)} network pass(es) of {sorted(set(windows))}, |fp32 - fp64| max "
                           f"{diff:.2g}, centred log-prob std {spread:.3g}, prob range [{p32.min().item():.3f}, "
                           f"{p32.max().item():.3f}], argmax label counts {labels}")
        print(notes_modes[-1], flush=True)

    for r in results.values():  # per mode: the larger of MIN_ATOL and 10 x its fp32-vs-fp64 noise, rounded up
        exponent = math.floor(math.log10(10 * r["probs_fp64_maxdiff"]))
        r["atol"] = max(MIN_ATOL, float(f"{math.ceil(10 * r['probs_fp64_maxdiff'] / 10 ** exponent)}e{exponent}"))
    atol = max(r["atol"] for r in results.values())
    versions = {"mmsegmentation": mmseg.__version__, "mmdet": mmdet.__version__, "mmcv": mmcv.__version__,
                "timm": timm.__version__, "torch": str(torch.__version__), "numpy": np.__version__,
                "opencv": cv2.__version__, "python": sys.version.split()[0]}
    notes = (
        f"ViT-Adapter-L (BEiT) + Mask2Former ADE20K 640 row: czczup/ViT-Adapter:{ROW_CONFIG} (commit "
        f"{upstream['czczup/ViT-Adapter']}) loaded with mmcv {mmcv.__version__} Config; ViT-Adapter's mmseg_custom "
        f"(BEiTAdapter, Mask2FormerHead, MSDeformAttnPixelDecoder, EncoderDecoderMask2Former) run by mmsegmentation "
        f"{mmseg.__version__} (mmdet {mmdet.__version__}, timm {timm.__version__}): the row's test pipeline "
        f"(LoadImageFromFile -> MultiScaleFlipAug(2048 x 640)[Resize keep_ratio, ResizeToMultiple(32), RandomFlip, "
        f"Normalize, ImageToTensor]), collate, simple_test -> inference (whole / slide; head scores = "
        f"einsum(softmax(cls)[:-1], sigmoid(mask)) at stride 4, bilinear to the input, to ori_shape, softmax). "
        f"Shrunk identically on both sides (generator's `shrink` / each model's dense_opts): BEiTAdapter embed "
        f"{EMBED}, depth {DEPTH}, heads {HEADS}, deform heads {DEFORM_HEADS}, conv_inplane {CONV_INPLANE}, one block "
        f"per interaction; Mask2Former feat {FEAT}, {QUERIES} queries, {NUM_CLASSES} classes, encoder {ENC_LAYERS} "
        f"layers, decoder {DEC_LAYERS} layers, {M2F_HEADS} heads, FFN {FFN}. Stand-in weights stand_in_weights(keys, "
        f"{SEED}) times `gains` {GAINS}. Input: grace_hopper.jpg cv2.imread BGR crops {CROPS} written as PNG. "
        f"Whole mode on the square crop only (the seg BEiTAdapter's rel-pos bias is fixed to img_size x img_size). "
        + "; ".join(notes_modes) + ". mmcv.ops replaced by a stand-in (lite mmcv): MultiScaleDeformableAttention is "
        "mmcv's own file (pure-PyTorch path on CPU); the adapter's MSDeformAttn (detection/ops) routed to its "
        f"ms_deform_attn_core_pytorch. Versions: {versions}. atol per mode "
        f"{ {k: r['atol'] for k, r in results.items()} } (max {atol}), rtol {RTOL} (probabilities; the larger of "
        f"{MIN_ATOL} and 10 x the mode's fp32-vs-fp64 noise measured above).")
    out = dict(notes=notes, versions=versions, upstream=upstream, row_config=ROW_CONFIG, dense_config=DENSE_CONFIG,
               source_sha256=sha256(open(jpeg, "rb").read()), crops=crops, models=models, modes=results,
               atol=atol, rtol=RTOL)
    torch.save(out, args.out)
    print("wrote", args.out, os.path.getsize(args.out), "bytes")


if __name__ == "__main__":
    main()
