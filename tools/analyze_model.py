#!/usr/bin/env python
"""Parameters and FLOPs of a model or its backbone at a given input size (fvcore counters).

    python tools/analyze_model.py --config-file CFG --input-size 512 512            # whole model
    python tools/analyze_model.py --config-file CFG --input-size 224 224 --backbone # backbone only

FLOPs follow the papers' convention: one fused multiply-add counts as one flop; dense's custom ops are
counted by dense.utils.analysis. Operators without a formula (grid_sample, softmax, GELU, ...) are
listed as uncounted, as in the papers' own fvcore counts.
"""
import argparse
import logging
import torch
from fvcore.nn import parameter_count, parameter_count_table

from dense.config import get_cfg
from dense.modeling import build_model
from dense.utils.analysis import flop_count


def parse_args():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config-file", required=True, metavar="FILE")
    p.add_argument("--input-size", type=int, nargs=2, default=(512, 512), metavar=("H", "W"))
    p.add_argument("--backbone", action="store_true", help="analyse the backbone only")
    p.add_argument("--tasks", nargs="+", default=["parameter", "flop"], choices=["parameter", "flop"])
    p.add_argument("--max-depth", type=int, default=3, help="depth of the parameter table")
    p.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides KEY VALUE ...")
    return p.parse_args()


def main():
    args = parse_args()
    logging.basicConfig(level=logging.WARNING)
    cfg = get_cfg()
    cfg.merge_from_file(args.config_file)
    cfg.merge_from_list(args.opts or [])
    cfg.MODEL.DEVICE = cfg.MODEL.DEVICE or "cpu"
    model = build_model(cfg).eval()
    target = model.backbone if args.backbone else model
    h, w = args.input_size
    if "parameter" in args.tasks:
        print(parameter_count_table(target, max_depth=args.max_depth))
        print(f"Total parameters: {parameter_count(target)[''] / 1e6:.3f}M ({parameter_count(target)['']:,})")
    if "flop" in args.tasks:
        with torch.no_grad():
            if args.backbone:
                flops, skipped = flop_count(target, (torch.zeros(1, 3, h, w, device=model.device),))
            else:
                image = torch.zeros(3, h, w, dtype=torch.uint8, device=model.device)
                flops, skipped = flop_count(target, ([{"image": image, "height": h, "width": w}],))
        print(f"FLOPs at {h}x{w}: {flops / 1e9:.3f}G (multiply-adds)")
        if skipped:
            print("Not counted: " + ", ".join(f"{op} x{n}" for op, n in skipped.most_common()))


if __name__ == "__main__":
    main()
