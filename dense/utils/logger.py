"""Logging setup: concise console lines on the main process, full log files per process."""
from __future__ import annotations

import datetime
import functools
import logging
import os
import sys
import time

__all__ = ["setup_logger", "ProgressLog"]


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


class ProgressLog:
    """Progress of a loop over ``total`` items (images of an evaluation or a demo), logged like training's console
    line: ``{what} 12/500. 0.4210 s/img. ETA=0:03:25``, every ``period`` seconds and after the last item (the first
    line comes once the first item is done). ``step()`` after each item."""

    def __init__(self, total: int, logger: logging.Logger, what: str = "Inference done", period: float = 10.0,
                 clock=time.perf_counter):
        self.total, self.logger, self.what, self.period, self.clock = total, logger, what, period, clock
        self.done = 0
        self.start = clock()
        self._last_log = None

    def step(self, n: int = 1) -> None:
        self.done += n
        now = self.clock()
        if self._last_log is not None and now - self._last_log < self.period and self.done < self.total:
            return
        self._last_log = now
        per_item = (now - self.start) / self.done
        eta = datetime.timedelta(seconds=int(per_item * max(self.total - self.done, 0)))
        self.logger.info(f"{self.what} {self.done}/{self.total}. {per_item:.4f} s/img. ETA={eta}")
