"""Training hooks: timing, lr schedule, periodic checkpoints, periodic evaluation, metric writers."""
from __future__ import annotations

import math
import time
from typing import Callable

from fvcore.common.checkpoint import PeriodicCheckpointer as _PeriodicCheckpointer

from ..utils import comm
from ..utils.events import flatten_results_dict

__all__ = ["HookBase", "IterationTimer", "LRScheduler", "PeriodicCheckpointer", "EvalHook", "PeriodicWriter"]


class HookBase:
    """Called by the Trainer around training and each step; ``self.trainer`` is set on registration."""

    trainer = None

    def before_train(self) -> None: ...

    def after_train(self) -> None: ...

    def before_step(self) -> None: ...

    def after_step(self) -> None: ...


class IterationTimer(HookBase):
    """Records the wall time of every step as ``time`` (the first ``warmup`` steps are not timed)."""

    def __init__(self, warmup: int = 3):
        self._warmup, self._start = warmup, 0.0

    def before_step(self) -> None:
        self._start = time.perf_counter()

    def after_step(self) -> None:
        if self.trainer.iter - self.trainer.start_iter >= self._warmup:
            self.trainer.storage.put_scalar("time", time.perf_counter() - self._start)


class LRScheduler(HookBase):
    """Records the lr of the largest parameter group as ``lr`` and steps the scheduler after each step."""

    def after_step(self) -> None:
        opt = self.trainer.optimizer
        largest = max(opt.param_groups, key=lambda g: sum(p.numel() for p in g["params"]))
        self.trainer.storage.put_scalar("lr", largest["lr"], smoothing_hint=False)
        self.trainer.scheduler.step()


class PeriodicCheckpointer(HookBase):
    """Saves ``model_{iter:07d}.pth`` every ``period`` iterations and ``model_final.pth`` at the end."""

    def __init__(self, checkpointer, period: int, max_iter: int):
        self._impl = _PeriodicCheckpointer(checkpointer, period, max_iter=max_iter)

    def after_step(self) -> None:
        self._impl.step(self.trainer.iter)


class EvalHook(HookBase):
    """Runs ``eval_function() -> results dict`` every ``period`` iterations and after the last one, and
    writes the flattened results (``sem_seg/mIoU``, ...) into the event storage."""

    def __init__(self, period: int, eval_function: Callable[[], dict]):
        self._period, self._func = period, eval_function
        self._last_eval_iter = -1

    def _do_eval(self) -> None:
        results = self._func()
        self.trainer.last_results = results
        if comm.is_main_process() and results:
            flat = flatten_results_dict(results)
            for k, v in flat.items():
                if not isinstance(v, (int, float)):
                    raise ValueError(f"Evaluation result '{k}' is {v!r}; evaluators must return numbers")
            self.trainer.storage.put_scalars(**{k: v for k, v in flat.items() if not math.isnan(v)},
                                             smoothing_hint=False)
        comm.synchronize()
        self._last_eval_iter = self.trainer.iter

    def after_step(self) -> None:
        next_iter = self.trainer.iter + 1
        if next_iter == self.trainer.max_iter or (self._period > 0 and next_iter % self._period == 0):
            self._do_eval()

    def after_train(self) -> None:
        # a run resumed after its last iteration still reports its final evaluation
        if self._last_eval_iter < 0 and self.trainer.iter >= self.trainer.max_iter:
            self._do_eval()


class PeriodicWriter(HookBase):
    """Calls each writer's ``write()`` every ``period`` iterations, after the last one, and at the end."""

    def __init__(self, writers: list, period: int = 20):
        self._writers, self._period = writers, period

    def after_step(self) -> None:
        if (self.trainer.iter + 1) % self._period == 0 or self.trainer.iter == self.trainer.max_iter - 1:
            for w in self._writers:
                w.write()

    def after_train(self) -> None:
        for w in self._writers:
            w.write()
            w.close()
