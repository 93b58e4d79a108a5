#!/usr/bin/env python
"""Run a model on images and write overlays (semantic classes with a legend, or instances), or, for a classifier,
print and draw its top-5 classes.

    python tools/demo.py --config-file CFG --input 'images/*.jpg' --output out/ --opts MODEL.WEIGHTS model.pth
"""
import argparse
import glob
import logging
import os
import sys

import cv2
import torch

from dense.config import get_cfg
from dense.data import MetadataCatalog
from dense.data.io import read_image
from dense.engine import Predictor
from dense.utils.logger import ProgressLog, setup_logger
from dense.utils.visualizer import draw_instances, draw_panoptic, overlay_sem_seg, palette


def parse_args():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config-file", required=True, metavar="FILE")
    p.add_argument("--input", nargs="+", required=True, help="image paths or glob patterns")
    p.add_argument("--output", required=True, help="folder for the overlay PNGs")
    p.add_argument("--confidence-threshold", type=float, default=0.5, help="min score of drawn instances")
    p.add_argument("--opts", nargs=argparse.REMAINDER, default=[], help="config overrides KEY VALUE ...")
    return p.parse_args()


def class_info(cfg):
    """(semantic class names, colours, thing class names) from the first test (or train) dataset."""
    names = list(cfg.DATASETS.TEST) + list(cfg.DATASETS.TRAIN)
    meta = MetadataCatalog.get(names[0]) if names else None
    n = cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES
    stuff = list(meta.get("stuff_classes", [])) if meta else []
    stuff = stuff if len(stuff) == n else [f"class {i}" for i in range(n)]
    colors = [tuple(c) for c in meta.get("stuff_colors", [])] if meta else []
    things = list(meta.get("thing_classes", [])) if meta else []
    return stuff, colors if len(colors) == len(stuff) else palette(len(stuff)), things


def classifier_names(cfg) -> list[str]:
    """Class names of a classifier (the first test or train dataset's ``classes``), or "class i"."""
    names = list(cfg.DATASETS.TEST) + list(cfg.DATASETS.TRAIN)
    classes = list(MetadataCatalog.get(names[0]).get("classes", [])) if names else []
    n = cfg.MODEL.CLASSIFIER.NUM_CLASSES
    return classes if len(classes) == n else [f"class {i}" for i in range(n)]


def draw_top5(rgb, logits: torch.Tensor, names: list[str]) -> tuple:
    """(the image with its top-5 classes and probabilities written on it, the lines)."""
    probs = logits.float().softmax(0)
    top = probs.topk(min(5, len(probs)))
    lines = [f"{names[i]} {p:.1%}" for p, i in zip(top.values.tolist(), top.indices.tolist())]
    vis = rgb.copy()
    scale = max(vis.shape[1] / 640, 0.4)
    for k, line in enumerate(lines):
        org = (8, int((k + 1) * 24 * scale))
        cv2.putText(vis, line, org, cv2.FONT_HERSHEY_SIMPLEX, 0.6 * scale, (0, 0, 0), max(int(4 * scale), 2))
        cv2.putText(vis, line, org, cv2.FONT_HERSHEY_SIMPLEX, 0.6 * scale, (255, 255, 255), max(int(scale), 1))
    return vis, lines


def main():
    args = parse_args()
    logger = setup_logger(name="dense")
    cfg = get_cfg()
    cfg.merge_from_file(args.config_file)
    cfg.merge_from_list(args.opts)
    cfg.freeze()
    paths = sorted({p for pattern in args.input for p in (glob.glob(os.path.expanduser(pattern)) or [pattern])})
    missing = [p for p in paths if not os.path.isfile(p)]
    if missing:
        sys.exit(f"Input images not found: {missing[:5]}")
    predictor = Predictor(cfg)
    stuff, colors, things = class_info(cfg)
    os.makedirs(args.output, exist_ok=True)
    progress = ProgressLog(len(paths), logger, "Images done")
    for path in paths:
        out = predictor(path)
        rgb = read_image(path, "RGB")  # as the predictor saw it (EXIF orientation applied)
        if "logits" in out:
            vis, lines = draw_top5(rgb, out["logits"].cpu(), classifier_names(cfg))
            print(f"{path}: " + "; ".join(lines))
        elif "panoptic_seg" in out:
            segment_ids, segments_info = out["panoptic_seg"]
            vis = draw_panoptic(rgb, segment_ids.cpu().numpy(), segments_info, stuff, colors)
        elif "instances" in out:
            inst = out["instances"].to("cpu")
            keep = inst.scores >= args.confidence_threshold
            inst = inst[keep]
            names = things or [f"class {i}" for i in range(int(inst.pred_classes.max()) + 1 if len(inst) else 1)]
            vis = draw_instances(rgb, inst.pred_boxes.numpy(), inst.pred_classes.numpy(), inst.scores.numpy(),
                                 inst.pred_masks.numpy() if inst.has("pred_masks") else None, names)
        else:
            vis = overlay_sem_seg(rgb, out["sem_seg"].argmax(0).cpu().numpy().astype("uint8"), stuff, colors)
        dst = os.path.join(args.output, os.path.splitext(os.path.basename(path))[0] + ".png")
        cv2.imwrite(dst, cv2.cvtColor(vis, cv2.COLOR_RGB2BGR))
        logger.debug(f"{path} -> {dst}")
        progress.step()
    logger.info(f"Overlays of {len(paths)} images in {args.output}")


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    main()
