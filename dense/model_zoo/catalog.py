"""Where each shipped config's released checkpoint comes from (Detectron2's model_zoo URL table, for the papers dense
covers). Keys are config names relative to ``configs/``.

A release with a direct URL (ViT-Adapter's GitHub releases, Mask2Former's model zoo) is downloaded by
:func:`dense.model_zoo.get_checkpoint`; the others (OneDrive, Google Drive, Tsinghua Cloud links in the authors'
READMEs) are fetched by hand from ``page`` and put into the cache folder under ``file``.
"""
from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Release", "RELEASES"]


@dataclass(frozen=True)
class Release:
    """One released checkpoint.

    Args:
        file: the file's name in the cache folder (upstream's name where it has one).
        url: a direct download URL, or "" when the release has none.
        page: where to get the file by hand (the authors' README or the share link), when ``url`` is "".
        size: the file's size in bytes when known (checked after a download; the server's Content-Length always is).
    """

    file: str
    url: str = ""
    page: str = ""
    size: int | None = None


_VIT_ADAPTER = "https://github.com/czczup/ViT-Adapter/releases/download/"
_MASK2FORMER = "https://dl.fbaipublicfiles.com/maskformer/mask2former/"
_DAT = "https://github.com/LeapLabTHU/DAT (README: classification models, OneDrive / TsinghuaCloud links)"
_DAT_SEG = "https://github.com/LeapLabTHU/DAT-Segmentation (README table, the row's checkpoint link)"
_DAT_DET = "https://github.com/LeapLabTHU/DAT-Detection (README table, the row's checkpoint link)"
_DAVIT = "https://github.com/dingmyu/davit (README tables, the row's OneDrive link)"
_DRIVE = "https://drive.google.com/file/d/{}/view (MarcYugo/DSAN-Deformable-Spatial-Attention README)"


def _direct(base: str, path: str) -> Release:
    return Release(path.rsplit("/", 1)[-1], base + path)


def _by_hand(config: str, page: str, file: str = "") -> tuple[str, Release]:
    """A release without a direct URL; ``file`` defaults to the config's name (``coco/mask_rcnn/x.yaml`` ->
    ``coco_mask_rcnn_x.pth``)."""
    return config, Release(file or config.replace("/", "_").removesuffix(".yaml") + ".pth", page=page)


RELEASES: dict[str, Release] = {
    # ViT-Adapter (czczup/ViT-Adapter segmentation/README.md and detection/README.md)
    "ade20k/upernet/vit_adapter_tiny_deit_512_160k.yaml":
        _direct(_VIT_ADAPTER, "v0.3.1/upernet_deit_adapter_tiny_512_160_ade20k.pth.tar"),
    "ade20k/upernet/vit_adapter_small_deit_512_160k.yaml":
        _direct(_VIT_ADAPTER, "v0.3.1/upernet_deit_adapter_small_512_160k_ade20k.pth"),
    "ade20k/upernet/vit_adapter_base_deit_512_160k.yaml":
        _direct(_VIT_ADAPTER, "v0.3.1/upernet_deit_adapter_base_512_160k_ade20k.pth.tar"),
    "ade20k/upernet/vit_adapter_tiny_augreg_512_160k.yaml":
        _direct(_VIT_ADAPTER, "v0.3.1/upernet_augreg_adapter_tiny_512_160_ade20k.pth.tar"),
    "ade20k/upernet/vit_adapter_base_augreg_512_160k.yaml":
        _direct(_VIT_ADAPTER, "v0.3.1/upernet_augreg_adapter_base_512_160k_ade20k.pth.tar"),
    "ade20k/upernet/vit_adapter_large_augreg_512_160k.yaml":
        _direct(_VIT_ADAPTER, "v0.3.1/upernet_augreg_adapter_large_512_160k_ade20k.pth.tar"),
    "ade20k/upernet/vit_adapter_large_beit_640_160k.yaml":
        _direct(_VIT_ADAPTER, "v0.2.1/upernet_beit_adapter_large_640_160k_ade20k.pth.tar"),
    "ade20k/mask2former/vit_adapter_large_beit_640_160k.yaml":
        _direct(_VIT_ADAPTER, "v0.2.2/mask2former_beit_adapter_large_640_160k_ade20k.zip"),
    "ade20k/mask2former/vit_adapter_large_beit_896_80k.yaml":
        _direct(_VIT_ADAPTER, "v0.2.0/mask2former_beit_adapter_large_896_80k_ade20k.zip"),
    "cityscapes/mask2former/vit_adapter_large_beit_896_80k.yaml":
        _direct(_VIT_ADAPTER, "v0.2.3/mask2former_beit_adapter_large_896_80k_cityscapes.zip"),
    "coco_stuff10k/mask2former/vit_adapter_base_beit_512_40k.yaml":
        _direct(_VIT_ADAPTER, "v0.2.9/mask2former_beit_adapter_base_512_40k_cocostuff10k.pth.tar"),
    "coco_stuff10k/mask2former/vit_adapter_large_beit_512_40k.yaml":
        _direct(_VIT_ADAPTER, "v0.2.5/mask2former_beit_adapter_large_512_40k_cocostuff10k.zip"),
    "coco_stuff10k/upernet/vit_adapter_large_beit_512_80k.yaml":
        _direct(_VIT_ADAPTER, "v0.2.4/upernet_beit_adapter_large_512_80k_cocostuff10k.pth.tar"),
    "coco_stuff164k/mask2former/vit_adapter_large_beit_896_80k.yaml":
        _direct(_VIT_ADAPTER, "v0.2.6/mask2former_beit_adapter_large_896_80k_cocostuff164k.zip"),
    "coco_stuff164k/upernet/vit_adapter_large_beit_640_80k.yaml":
        _direct(_VIT_ADAPTER, "v0.2.6/upernet_beit_adapter_large_640_80k_cocostuff164k.pth.tar"),
    "pascal_context/mask2former/vit_adapter_base_beit_480_40k.yaml":
        _direct(_VIT_ADAPTER, "v0.2.8/mask2former_beit_adapter_base_480_40k_pascal_context_59.pth.tar"),
    "pascal_context/mask2former/vit_adapter_large_beit_480_40k.yaml":
        _direct(_VIT_ADAPTER, "v0.2.7/mask2former_beit_adapter_large_480_40k_pascal_context_59.zip"),
    "pascal_context/upernet/vit_adapter_large_beit_480_80k.yaml":
        _direct(_VIT_ADAPTER, "v0.2.7/upernet_beit_adapter_large_480_80k_pascal_context_59.pth.tar"),
    "coco/mask_rcnn/vit_adapter_tiny_deit_3x.yaml":
        _direct(_VIT_ADAPTER, "v0.1.2/mask_rcnn_deit_adapter_tiny_fpn_3x_coco.pth.tar"),
    "coco/mask_rcnn/vit_adapter_small_deit_3x.yaml":
        _direct(_VIT_ADAPTER, "v0.1.2/mask_rcnn_deit_adapter_small_fpn_3x_coco.pth.tar"),
    "coco/mask_rcnn/vit_adapter_base_deit_3x.yaml":
        _direct(_VIT_ADAPTER, "v0.1.6/mask_rcnn_deit_adapter_base_fpn_3x_coco.pth.tar"),
    # Mask2Former's own R50 rows (facebookresearch/Mask2Former MODEL_ZOO.md, Detectron2 .pkl files)
    "ade20k/mask2former/r50_160k.yaml":
        _direct(_MASK2FORMER, "ade20k/semantic/maskformer2_R50_bs16_160k/model_final_500878.pkl"),
    "coco/mask2former/r50_50ep.yaml":
        _direct(_MASK2FORMER, "coco/panoptic/maskformer2_R50_bs16_50ep/model_final_94dc52.pkl"),
    # released without a direct URL: fetched by hand
    **dict(_by_hand(f"ade20k/{head}/dat_pp_{size}_{sched}.yaml", _DAT_SEG)
           for head, sched in (("semantic_fpn", "80k"), ("upernet", "160k")) for size in ("tiny", "small", "base")),
    **dict(_by_hand(f"coco/{head}/dat_pp_{size}_{sched}.yaml", _DAT_DET)
           for head in ("mask_rcnn", "retinanet") for size in ("tiny", "small") for sched in ("1x", "3x")),
    **dict(_by_hand(f"ade20k/upernet/davit_{size}_160k.yaml", _DAVIT) for size in ("tiny", "small", "base")),
    **dict(_by_hand(f"coco/{head}/davit_{size}_{sched}.yaml", _DAVIT)
           for head in ("mask_rcnn", "retinanet") for size in ("tiny", "small", "base") for sched in ("1x", "3x")),
    **dict(_by_hand(f"imagenet/{name}.yaml", _DAT, f"{name}_in1k_{res}.pth")
           for name, res in (("dat_pp_tiny", 224), ("dat_pp_small", 224), ("dat_pp_base", 224),
                             ("dat_pp_base_384", 384), ("dat_tiny", 224), ("dat_small", 224), ("dat_base", 224),
                             ("dat_base_384", 384))),
    **dict(_by_hand(f"imagenet/davit_{size}.yaml", _DAVIT) for size in ("tiny", "small", "base")),
    **dict(_by_hand(config, _DRIVE.format(drive_id), file) for config, drive_id, file in (
        ("imagenet/dsan_t.yaml", "13kzhzEBMaFJQ9bqSOyKx-uN0ufN45dkY", "dsan_t.pth.tar"),
        ("imagenet/dsan_t2.yaml", "1aiGgXTmHiorGoBXVQtuACGJhhYeVxrWl", "dsan_t2.pth.tar"),
        ("imagenet/dsan_s.yaml", "1sBjIoUhwWZwmk8vnhkM8idu_faLRpliC", "dsan_s.pth.tar"),
        ("ade20k/light_ham/dsan_t_160k.yaml", "1SrWarGFufipUUbxCdkbXynz-kWaxGCUc", ""),
        ("ade20k/light_ham/dsan_s_160k.yaml", "1Is5_MYxWFIOUEG1AQ7wRMk4Xl8FDGRmT", ""),
        ("cityscapes/light_ham/dsan_t_80k.yaml", "1t8zbhSQ6FWbUWrV5pa8xc7aXU8s14wv8", ""),
        ("cityscapes/light_ham/dsan_s_80k.yaml", "16O0cmW-sSpOumaJju99hagmd0wn3F9SK", ""),
        ("coco/mask_rcnn/dsan_t_1x.yaml", "1tObK1d80nYuuI4Cq6VfXoPzsNXz0DVGq", ""),
        ("coco/mask_rcnn/dsan_s_1x.yaml", "1G7EXX8iWhee51uEKYxa31DRD5UVG9c0o", ""),
    )),
}
