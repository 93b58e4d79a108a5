"""Logging setup: concise console lines on the main process, full log files per process."""
from __future__ import annotations

import functools
import logging
import os
import sys

__all__ = ["setup_logger"]


@functools.lru_cache
def setup_logger(output: str | None = None, distributed_rank: int = 0, name: str = "dense") -> logging.Logger:
    """Configure the ``name`` logger: INFO to stdout on rank 0, and to ``output/log.txt``
    (``log.txt.rank{N}`` on other ranks) when ``output`` is given. Idempotent per arguments."""
    logger = logging.getLogger(name)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    fmt = logging.Formatter("[%(asctime)s %(name)s %(levelname)s] %(message)s", datefmt="%m/%d %H:%M:%S")
    if distributed_rank == 0:
        ch = logging.StreamHandler(stream=sys.stdout)
        ch.setLevel(logging.INFO)
        ch.setFormatter(fmt)
        logger.addHandler(ch)
    if output is not None:
        filename = os.path.join(output, "log.txt")
        if distributed_rank > 0:
            filename += f".rank{distributed_rank}"
        os.makedirs(output, exist_ok=True)
        fh = logging.FileHandler(filename)
        fh.setLevel(logging.DEBUG)
        fh.setFormatter(fmt)
        logger.addHandler(fh)
    return logger
