#!/usr/bin/env python
"""Train a dense model, or evaluate one with --eval-only (Detectron2's command line).

    python tools/train_net.py --config-file configs/synthetic/semantic_fpn/r18_demo.yaml
    python tools/train_net.py --config-file CFG --eval-only MODEL.WEIGHTS output/demo/model_final.pth
    python tools/train_net.py --config-file CFG --resume                  # continue after an interruption
    torchrun --nproc_per_node 2 tools/train_net.py --config-file CFG       # or: --num-gpus 2
"""
import json
import logging
import os
import sys

from dense.checkpoint import DenseCheckpointer
from dense.engine import Trainer, default_argument_parser, default_setup, launch, setup_cfg
from dense.utils import comm
from dense.utils.events import flatten_results_dict


def main(args):
    cfg = default_setup(setup_cfg(args), args)
    if args.eval_only:
        if not cfg.MODEL.WEIGHTS and not args.resume:
            sys.exit("--eval-only needs the weights to evaluate: add MODEL.WEIGHTS path/to/checkpoint.pth")
        model = Trainer.build_model(cfg)
        DenseCheckpointer.from_config(cfg, model, require_complete=True).resume_or_load(cfg.MODEL.WEIGHTS,
                                                                                  resume=args.resume)
        results = Trainer.test(cfg, model)
        if comm.is_main_process():
            flat = flatten_results_dict(results)
            with open(os.path.join(cfg.OUTPUT_DIR, "eval_results.json"), "w") as f:
                json.dump(flat, f, indent=1, sort_keys=True)
            logging.getLogger("dense").info("Results: " + json.dumps({k: v for k, v in flat.items() if "-" not in k}))
        return results
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=args.resume)
    return trainer.train()


if __name__ == "__main__":
    args = default_argument_parser().parse_args()
    launch(main, args.num_gpus, num_machines=args.num_machines, machine_rank=args.machine_rank,
           dist_url=args.dist_url, args=(args,))
