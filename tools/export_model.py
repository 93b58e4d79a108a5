#!/usr/bin/env python
"""Export a model's inference as a torch.export program (.pt2) or an ONNX file (Detectron2's export_model.py).

    python tools/export_model.py --config-file CFG --format torch_export --output DIR [--size H W] [--opts K V ...]
    python tools/export_model.py --config-file CFG --format onnx --output DIR [--min-size 64] [--max-size 2048]

The exported module takes a normalised batch images [1, 3, H, W] ((pixel - MODEL.PIXEL_MEAN) / MODEL.PIXEL_STD in
INPUT.FORMAT channel order) and returns the task's tensors (dense.export: semantic segmentation -> logits
[1, K, H, W]; Mask2Former -> sem_seg, class_logits, mask_logits). H and W are dynamic, multiples of 32 in
[--min-size, --max-size], unless --static. The ONNX file holds standard operators only (dense's ops lowered
through their reference implementations): onnxruntime runs it as is.
MODEL.WEIGHTS (via --opts) is loaded first; without it the model has its initial weights.
"""
import argparse
import os

import torch

from dense.checkpoint import DenseCheckpointer
from dense.config import get_cfg
from dense.export import export_module, export_onnx, export_program
from dense.modeling import build_model


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config-file", required=True, metavar="FILE")
    p.add_argument("--format", required=True, choices=["torch_export", "onnx"])
    p.add_argument("--output", required=True, metavar="DIR", help="folder for model.pt2 / model.onnx")
    p.add_argument("--size", type=int, nargs=2, default=(512, 512), metavar=("H", "W"),
                   help="the size traced (multiples of 32)")
    p.add_argument("--min-size", type=int, default=64,
                   help="smallest dynamic side (raised to where the model's one program holds: its backbone's "
                        "export_min_size, a detector's coarsest FPN level; see dense.export)")
    p.add_argument("--max-size", type=int, default=2048, help="largest dynamic side")
    p.add_argument("--static", action="store_true", help="export for --size only")
    p.add_argument("--opts", nargs="*", default=[], help="config overrides KEY VALUE ...")
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    cfg = get_cfg()
    cfg.merge_from_file(args.config_file)
    cfg.merge_from_list(["MODEL.DEVICE", "cpu", *args.opts])
    model = build_model(cfg).eval()
    if cfg.MODEL.WEIGHTS:
        DenseCheckpointer.from_config(cfg, model, save_dir="").load(cfg.MODEL.WEIGHTS)
    if any(s % 32 for s in args.size):
        raise SystemExit(f"--size {args.size[0]} {args.size[1]}: both sides must be multiples of 32")
    images = torch.randn(1, 3, *args.size)
    os.makedirs(args.output, exist_ok=True)
    options = dict(dynamic=not args.static, min_size=args.min_size, max_size=args.max_size)
    if args.format == "torch_export":
        path = os.path.join(args.output, "model.pt2")
        torch.export.save(export_program(model, images, **options), path)
    else:
        path = os.path.join(args.output, "model.onnx")
        export_onnx(model, images, path, **options)
    outputs = ", ".join(export_module(model).output_names)
    print(f"wrote {path} ({os.path.getsize(path) / 2**20:.1f} MiB): images [1, 3, H, W] -> {outputs}")


if __name__ == "__main__":
    main()
