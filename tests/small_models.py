"""Small, fast versions of every backbone family and every head family, for tests that walk them all.

``SMALL_BACKBONES``: family -> (backbone config, opts that shrink it; the family's own blocks, ops and code paths).
``SMALL_HEADS``: head family -> (config files merged in order, opts): each a few-second model on the synthetic data
whose backbone the ``SMALL_BACKBONES`` entry replaces.
"""
import math
import os

import torch

from dense.config import get_cfg

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SMALL_BACKBONES = {
    "dat_pp": ("configs/synthetic/Base-DAT-nano.yaml", ["MODEL.DAT.STAGE_SPEC", ["N", "D", "ND", "D"]]),
    "dat_v1": ("configs/backbones/dat_tiny.yaml",
               ["MODEL.DAT.DIMS", [24, 48, 96, 192], "MODEL.DAT.HEADS", [1, 2, 4, 8], "MODEL.DAT.GROUPS",
                [-1, -1, 2, 2], "MODEL.DAT.STAGE_SPEC", ["L", "L", "LD", "D"]]),
    "davit": ("configs/backbones/davit_tiny.yaml",
              ["MODEL.DAVIT.EMBED_DIMS", [24, 48, 96, 192], "MODEL.DAVIT.NUM_HEADS", [1, 2, 4, 8]]),
    "vit_adapter_deit": ("configs/backbones/vit_adapter_tiny_deit.yaml",
                         ["MODEL.VIT_ADAPTER.DEPTH", 4, "MODEL.VIT_ADAPTER.EMBED_DIM", 96,
                          "MODEL.VIT_ADAPTER.NUM_HEADS", 2, "MODEL.VIT_ADAPTER.DEFORM_NUM_HEADS", 2,
                          "MODEL.VIT_ADAPTER.CONV_INPLANE", 16,
                          "MODEL.VIT_ADAPTER.INTERACTION_INDEXES", [[0, 0], [1, 1], [2, 2], [3, 3]]]),
    "vit_adapter_beit": ("configs/backbones/vit_adapter_base_beit_512.yaml",
                         ["MODEL.VIT_ADAPTER.DEPTH", 4, "MODEL.VIT_ADAPTER.EMBED_DIM", 96,
                          "MODEL.VIT_ADAPTER.NUM_HEADS", 2, "MODEL.VIT_ADAPTER.DEFORM_NUM_HEADS", 2,
                          "MODEL.VIT_ADAPTER.CONV_INPLANE", 16, "MODEL.VIT_ADAPTER.IMG_SIZE", 128,
                          "MODEL.VIT_ADAPTER.INTERACTION_INDEXES", [[0, 0], [1, 1], [2, 2], [3, 3]]]),
    "dsan": ("configs/backbones/dsan_t.yaml",
             ["MODEL.DSAN.EMBED_DIMS", [8, 16, 24, 32], "MODEL.DSAN.DEPTHS", [1, 1, 2, 1], "MODEL.DSAN.GROUPS",
              [1, 2, 2, 4]]),
    "resnet": ("configs/backbones/resnet18.yaml", []),
}

_SEG = ["configs/synthetic/Base-Synthetic-SemSeg.yaml"]
_SEG_OPTS = ["INPUT.MIN_SIZE_TRAIN", (64,), "INPUT.CROP.SIZE", (64, 64), "INPUT.MIN_SIZE_TEST", 64,
             "MODEL.SEM_SEG_HEAD.CONVS_DIM", 16, "DATALOADER.NUM_WORKERS", 0, "SOLVER.IMS_PER_BATCH", 2]
SMALL_HEADS = {
    "semantic_fpn": (["tests/configs/tiny_semseg.yaml"], ["SOLVER.IMS_PER_BATCH", 2]),
    "upernet": (["configs/Base-UperNet.yaml", *_SEG], _SEG_OPTS),
    "light_ham": (["configs/Base-LightHam.yaml", *_SEG],
                  _SEG_OPTS + ["MODEL.SEM_SEG_HEAD.CONVS_DIM", 32, "MODEL.SEM_SEG_HEAD.HAM.CHANNELS", 32]),
    "mask2former": (["tests/configs/tiny_mask2former.yaml"], ["SOLVER.IMS_PER_BATCH", 2]),
    "mask_rcnn": (["tests/configs/tiny_mask_rcnn.yaml"], []),
    "retinanet": (["tests/configs/tiny_retinanet.yaml"], []),
    "classification": (["tests/configs/tiny_classification.yaml"], ["SOLVER.IMS_PER_BATCH", 4]),
}


def small_backbone_cfg(family: str):
    """The config of ``family``'s small backbone alone."""
    config, opts = SMALL_BACKBONES[family]
    cfg = get_cfg()
    cfg.merge_from_file(os.path.join(REPO, config))
    cfg.merge_from_list(opts)
    return cfg


def small_model_cfg(head: str, family: str, *opts):
    """A few-second ``head`` model on ``family``'s small backbone, on CPU."""
    files, head_opts = SMALL_HEADS[head]
    config, backbone_opts = SMALL_BACKBONES[family]
    cfg = get_cfg()
    for path in (*files, config):
        cfg.merge_from_file(os.path.join(REPO, path))
    cfg.merge_from_list([*head_opts, *backbone_opts, "MODEL.DEVICE", "cpu", *opts])
    return cfg


def amp_train_step_and_inference(head: str, family: str, out_dir, device: str = "cpu", dtype: str = "bfloat16"):
    """One training step of the real Trainer with SOLVER.AMP (``dtype``: "bfloat16", or "float16" with loss scaling)
    on ``device``: finite losses, finite float32 weights that changed; then an inference under autocast: finite
    outputs (semantic ones at the image's size)."""
    from dense.data import DatasetCatalog, build_mapper
    from dense.engine import Trainer
    from dense.utils.events import EventStorage

    cfg = small_model_cfg(head, family, "SOLVER.AMP.ENABLED", True, "SOLVER.AMP.DTYPE", dtype,
                          "OUTPUT_DIR", str(out_dir), "SEED", 0, "MODEL.DEVICE", device)
    trainer = Trainer(cfg)
    before = {k: v.clone() for k, v in trainer.model.state_dict().items() if v.is_floating_point()}
    trainer._data_iter = iter(trainer.build_train_loader(cfg, 0, 0, trainer._train_records))
    with EventStorage(0) as trainer.storage:
        trainer.run_step()  # raises NonFiniteLossError on a NaN / inf loss
        losses = {k: h.latest() for k, h in trainer.storage.histories().items() if "loss" in k}
    assert losses and all(math.isfinite(v) for v in losses.values()), losses
    after = trainer.model.state_dict()
    assert all(torch.isfinite(after[k]).all() and after[k].dtype == torch.float32 for k in before)
    skipped = trainer.grad_scaler is not None and trainer.grad_scaler.get_scale() < 2.0 ** 16  # fp16 overflow: the
    assert skipped or any(not torch.equal(before[k], after[k]) for k in before), "the step changed no weight"  # scaler
    # skips the step and lowers its scale (by design: GradScaler starts at 2**16)

    record = DatasetCatalog.get(cfg.DATASETS.TEST[0])[0]
    model = trainer.model.eval()
    inputs = build_mapper(cfg, False)(record)
    with torch.no_grad(), torch.autocast(torch.device(device).type, dtype=getattr(torch, dtype)):
        out = model([inputs])[0]
    tensors = {"sem_seg": lambda o: [o["sem_seg"]], "logits": lambda o: [o["logits"]],
               "instances": lambda o: [o["instances"].pred_boxes, o["instances"].scores],
               "panoptic_seg": lambda o: [o["panoptic_seg"][0].float()]}
    found = [t for key, get in tensors.items() if key in out for t in get(out)]
    assert found and all(torch.isfinite(t.float()).all() for t in found), list(out)
    if "sem_seg" in out:
        assert tuple(out["sem_seg"].shape[-2:]) == (inputs["height"], inputs["width"])
