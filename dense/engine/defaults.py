"""Command-line and setup helpers shared by the tools (Detectron2's argument names)."""
from __future__ import annotations

import argparse
import json
import logging
import os
import random

import numpy as np
import torch

from ..config import get_cfg
from ..utils import comm
from ..utils.logger import setup_logger

__all__ = ["default_argument_parser", "setup_cfg", "default_setup", "Predictor"]


def default_argument_parser(description: str = "dense training / evaluation") -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="Trailing KEY VALUE pairs override config keys, e.g. SOLVER.MAX_ITER 1000 "
                                       "MODEL.WEIGHTS path/to/model.pth")
    p.add_argument("--config-file", default="", metavar="FILE", help="path to a config file")
    p.add_argument("--resume", action="store_true", help="continue from the last checkpoint in OUTPUT_DIR")
    p.add_argument("--eval-only", action="store_true", help="evaluate MODEL.WEIGHTS and exit")
    p.add_argument("--num-gpus", type=int, default=1,
                   help="processes per machine (one per GPU; on a machine without GPUs, N CPU processes)")
    p.add_argument("--num-machines", type=int, default=1, help="total number of machines")
    p.add_argument("--machine-rank", type=int, default=0, help="rank of this machine (0 .. num-machines - 1)")
    p.add_argument("--dist-url", default="auto", help="rendezvous URL of machine 0, e.g. tcp://10.0.0.1:29500")
    p.add_argument("opts", nargs=argparse.REMAINDER, default=None, help="config overrides as KEY VALUE pairs")
    return p


def setup_cfg(args: argparse.Namespace):
    """get_cfg() + --config-file + trailing overrides, frozen."""
    cfg = get_cfg()
    if args.config_file:
        cfg.merge_from_file(args.config_file)
    cfg.merge_from_list(args.opts or [])
    cfg.freeze()
    return cfg


def default_setup(cfg, args: argparse.Namespace | None = None):
    """Create OUTPUT_DIR, set up logging, pick and record the seed, dump the full config.

    Returns the config with SEED fixed (a seed < 0 is replaced by one shared by all processes and
    written to OUTPUT_DIR/config.yaml, so the run can be repeated exactly).
    """
    rank = comm.get_rank()
    if comm.is_main_process():
        os.makedirs(cfg.OUTPUT_DIR, exist_ok=True)
    comm.synchronize()
    logger = setup_logger(cfg.OUTPUT_DIR, distributed_rank=rank, name="dense")
    setup_logger(cfg.OUTPUT_DIR, distributed_rank=rank, name="fvcore")
    logger.info(f"Rank {rank} of {comm.get_world_size()} processes; torch {torch.__version__}")
    if args is not None:
        logger.info(f"Command line: {json.dumps(vars(args))}")
    if cfg.SEED < 0:
        cfg.defrost()
        cfg.SEED = comm.shared_random_seed() % 2**31
        cfg.freeze()
    torch.manual_seed(cfg.SEED)
    np.random.seed(cfg.SEED % 2**32)
    random.seed(cfg.SEED)
    if comm.is_main_process():
        with open(os.path.join(cfg.OUTPUT_DIR, "config.yaml"), "w") as f:
            f.write(cfg.dump())
    torch.backends.cudnn.benchmark = cfg.CUDNN_BENCHMARK
    logging.getLogger("dense").debug(f"Full config:\n{cfg.dump()}")
    return cfg


class Predictor:
    """Detectron2's DefaultPredictor: one image in, the model's prediction for it out.

    Builds the model on MODEL.DEVICE, loads MODEL.WEIGHTS (a dense checkpoint or a released file, converted on load;
    as for ``--eval-only`` every weight must load unless MODEL.WEIGHTS_ALLOW_PARTIAL), and applies the config's test
    transform (INPUT.*: resize, backend, multiple; TEST.AUG for multi-scale + flip).

    ``predictor(image)`` with ``image`` an image path or a uint8 array [H, W, 3] in BGR order (``cv2.imread``) returns
    the model's output for it at the image's size: ``{"sem_seg": float [C, H, W]}`` (class probabilities),
    ``{"instances": Instances}`` (boxes XYXY in pixels, scores, pred_classes, pred_masks bool [N, H, W]),
    ``{"panoptic_seg": (ids int [H, W], segments_info)}`` or, for a classifier, ``{"logits": [num_classes]}``.
    ``format="RGB"`` for an array in RGB order (PIL, matplotlib)::

        predictor = dense.Predictor(cfg)
        probs = predictor("photo.jpg")["sem_seg"]
    """

    def __init__(self, cfg):
        from ..checkpoint import DenseCheckpointer
        from ..data import build_mapper
        from ..modeling import build_model

        self.cfg = cfg.clone()
        self.cfg.freeze()
        self.model = build_model(self.cfg).eval()
        if self.cfg.MODEL.WEIGHTS:
            DenseCheckpointer.from_config(self.cfg, self.model, save_dir="", require_complete=True).load(
                self.cfg.MODEL.WEIGHTS)
        else:
            logging.getLogger(__name__).warning("MODEL.WEIGHTS is empty: predicting with an untrained model")
        self.mapper = build_mapper(self.cfg, is_train=False)

    def __call__(self, image, format: str = "BGR") -> dict:
        if isinstance(image, (str, os.PathLike)):
            record = {"file_name": os.fspath(image)}
        else:
            if format not in ("BGR", "RGB"):
                raise ValueError(f"format must be 'BGR' or 'RGB', got {format!r}")
            image = np.asarray(image)
            record = {"file_name": "<array>", "image": image[:, :, ::-1] if format == "RGB" and image.ndim == 3
                      else image}
        with torch.no_grad():
            return self.model([self.mapper(record)])[0]
