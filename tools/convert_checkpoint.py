#!/usr/bin/env python
"""Convert a released checkpoint (ImageNet classification or mmseg/mmdet) into a dense checkpoint, offline.

    python tools/convert_checkpoint.py --config-file configs/backbones/dat_pp_tiny.yaml \\
        --input dat_pp_tiny_in1k_224.pth --output dat_pp_tiny_dense.pth

The model described by the config is built, the file is loaded into it exactly as MODEL.WEIGHTS would
load it (format detected, converted, every key not loaded listed with the reason), and the tensors that
came from the file are saved, in dense's names, as a dense checkpoint (so an ImageNet file becomes a
backbone-only checkpoint and an mmseg file a whole model). The file is read without executing code from it unless
--trusted is given (only for files you trust).

--format detectron2 writes the backbone's weights for Detectron2's DetectionCheckpointer instead (with
dense.compat.detectron2's backbones: `build_<family>_backbone`, `_fpn_backbone`, `_retinanet_fpn_backbone`):

    python tools/convert_checkpoint.py --config-file configs/backbones/dat_pp_tiny.yaml \
        --input dat_pp_tiny_in1k_224.pth --output dat_pp_tiny_d2.pth --format detectron2
"""
import argparse
import logging
import os
import sys

import torch

from dense.checkpoint import DenseCheckpointer
from dense.checkpoint.checkpointer import DENSE_MARKER
from dense.config import get_cfg
from dense.modeling import build_model
from dense.utils.logger import setup_logger


def parse_args():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config-file", required=True, metavar="FILE", help="config describing the target model")
    p.add_argument("--input", required=True, help="released checkpoint (.pth / .pth.tar / .zip)")
    p.add_argument("--output", required=True, help="where to write the dense checkpoint")
    p.add_argument("--trusted", action="store_true", help="allow pickles that run code (trusted files only)")
    p.add_argument("--allow-mismatch", action="store_true", help="skip shape-mismatched tensors instead of failing")
    p.add_argument("--format", choices=["dense", "detectron2"], default="dense",
                   help="dense checkpoint (default) or a backbone file for Detectron2's DetectionCheckpointer")
    p.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides KEY VALUE ...")
    return p.parse_args()


def main() -> int:
    args = parse_args()
    setup_logger(name="dense")
    setup_logger(name="fvcore")
    cfg = get_cfg()
    cfg.merge_from_file(args.config_file)
    cfg.merge_from_list(list(args.opts or []) + ["MODEL.DEVICE", "cpu"])
    cfg.MODEL.WEIGHTS_TRUSTED |= args.trusted
    cfg.MODEL.WEIGHTS_SKIP_MISMATCH |= args.allow_mismatch
    model = build_model(cfg)
    checkpointer = DenseCheckpointer.from_config(cfg, model, save_dir="")
    checkpointer.load(args.input)
    report = checkpointer.last_report
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    state = model.state_dict()
    source = {"file": os.path.abspath(args.input), "format": report.converter}
    if args.format == "detectron2":
        # Detectron2 matches these names by suffix ("matching_heuristics"), so the same file loads into the plain
        # (backbone.body.*) and the FPN-wrapped (backbone.bottom_up.body.*) dense backbones.
        backbone = {"body." + k[len("backbone."):]: state[k] for k in report.loaded if k.startswith("backbone.")}
        torch.save({"model": backbone, "__author__": "dense", "matching_heuristics": True, "converted_from": source},
                   args.output)
    else:
        torch.save({"model": {k: state[k] for k in report.loaded}, DENSE_MARKER: 1, "converted_from": source},
                   args.output)
    print(f"Wrote {args.output}")
    return 0


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    sys.exit(main())
