"""Training-time metrics: an EventStorage that hooks and models write scalars into, and writers that
turn it into ``metrics.json`` lines, a console progress line with ETA, and TensorBoard events."""
from __future__ import annotations

import datetime
import json
import logging
import os
from collections import defaultdict
from typing import Any

import torch
from fvcore.common.history_buffer import HistoryBuffer

__all__ = ["EventStorage", "get_event_storage", "JSONWriter", "CommonMetricPrinter", "TensorboardWriter",
           "flatten_results_dict"]

_CURRENT_STORAGE_STACK: list[EventStorage] = []


def get_event_storage() -> EventStorage:
    """The EventStorage of the running training loop (raises outside one)."""
    assert _CURRENT_STORAGE_STACK, "get_event_storage() must be called inside a training loop (EventStorage context)"
    return _CURRENT_STORAGE_STACK[-1]


class EventStorage:
    """Scalars written during training, keyed by name, with their full history.

    ``put_scalar(name, value)`` records ``value`` at the current ``iter``; ``smoothing_hint`` tells
    writers whether to print a windowed median (losses) or the latest value (lr, metrics).
    """

    def __init__(self, start_iter: int = 0):
        self._history: dict[str, HistoryBuffer] = defaultdict(HistoryBuffer)
        self._smoothing_hints: dict[str, bool] = {}
        self._latest: dict[str, tuple[float, int]] = {}
        self._iter = start_iter

    def put_scalar(self, name: str, value: float | torch.Tensor, smoothing_hint: bool = True) -> None:
        value = float(value.detach().cpu().item() if isinstance(value, torch.Tensor) else value)
        self._history[name].update(value, self._iter)
        self._latest[name] = (value, self._iter)
        self._smoothing_hints.setdefault(name, smoothing_hint)

    def put_scalars(self, *, smoothing_hint: bool = True, **kwargs: float) -> None:
        for k, v in kwargs.items():
            self.put_scalar(k, v, smoothing_hint=smoothing_hint)

    def history(self, name: str) -> HistoryBuffer:
        if name not in self._history:
            raise KeyError(f"No history metric named '{name}'")
        return self._history[name]

    def histories(self) -> dict[str, HistoryBuffer]:
        return self._history

    def latest(self) -> dict[str, tuple[float, int]]:
        """{name: (latest value, iteration it was written at)}."""
        return self._latest

    def smoothing_hints(self) -> dict[str, bool]:
        return self._smoothing_hints

    @property
    def iter(self) -> int:
        return self._iter

    @iter.setter
    def iter(self, val: int) -> None:
        self._iter = int(val)

    def __enter__(self) -> EventStorage:
        _CURRENT_STORAGE_STACK.append(self)
        return self

    def __exit__(self, *exc: Any) -> None:
        assert _CURRENT_STORAGE_STACK[-1] is self
        _CURRENT_STORAGE_STACK.pop()


def flatten_results_dict(results: dict) -> dict[str, float]:
    """{"sem_seg": {"mIoU": 1}} -> {"sem_seg/mIoU": 1}."""
    out: dict[str, float] = {}
    for k, v in results.items():
        if isinstance(v, dict):
            for kk, vv in flatten_results_dict(v).items():
                out[f"{k}/{kk}"] = vv
        else:
            out[k] = v
    return out


class JSONWriter:
    """Appends one JSON object per iteration with new scalars to ``json_file`` (Detectron2's metrics.json)."""

    def __init__(self, json_file: str, window_size: int = 20):
        self._file_handle = open(json_file, "a")
        self._window_size = window_size
        self._last_write = -1

    def write(self) -> None:
        storage = get_event_storage()
        to_save: dict[int, dict[str, float]] = defaultdict(dict)
        for k, (v, itr) in storage.latest().items():
            if itr <= self._last_write:
                continue
            to_save[itr][k] = v
        if to_save:
            self._last_write = max(to_save)
        for itr, scalars in sorted(to_save.items()):
            scalars["iteration"] = itr
            self._file_handle.write(json.dumps(scalars, sort_keys=True) + "\n")
        self._file_handle.flush()
        os.fsync(self._file_handle.fileno())

    def close(self) -> None:
        self._file_handle.close()


class TensorboardWriter:
    """Writes every new scalar to TensorBoard event files in ``log_dir`` (needs the tensorboard package)."""

    def __init__(self, log_dir: str):
        from torch.utils.tensorboard import SummaryWriter

        self._writer = SummaryWriter(log_dir)
        self._last_write = -1

    def write(self) -> None:
        storage = get_event_storage()
        new_last = self._last_write
        for k, (v, itr) in storage.latest().items():
            if itr > self._last_write:
                self._writer.add_scalar(k, v, itr)
                new_last = max(new_last, itr)
        self._last_write = new_last

    def close(self) -> None:
        self._writer.close()


class CommonMetricPrinter:
    """Prints ``eta, iter, losses, time, lr, memory`` to the log, like Detectron2's console lines."""

    def __init__(self, max_iter: int, window_size: int = 20):
        self.logger = logging.getLogger("dense.engine")
        self._max_iter = max_iter
        self._window_size = window_size
        self._last: tuple[int, float] | None = None

    def _eta(self, storage: EventStorage) -> str:
        iteration = storage.iter
        try:
            sec_per_iter = storage.history("time").median(1000)
        except KeyError:
            return ""
        eta = sec_per_iter * (self._max_iter - iteration - 1)
        storage.put_scalar("eta_seconds", eta, smoothing_hint=False)
        return "eta: " + str(datetime.timedelta(seconds=int(eta)))

    def write(self) -> None:
        storage = get_event_storage()
        iteration = storage.iter
        if iteration == self._max_iter:
            return  # the final eval writes its own lines
        hist = storage.histories()
        losses = "  ".join(
            f"{k}: {v.median(self._window_size):.4g}" for k, v in hist.items() if "loss" in k
        )
        time_s = f"time: {hist['time'].median(self._window_size):.4f}  " if "time" in hist else ""
        data_s = f"data_time: {hist['data_time'].median(self._window_size):.4f}  " if "data_time" in hist else ""
        lr = f"lr: {hist['lr'].latest():.5g}  " if "lr" in hist else ""
        mem = ""
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            mem = f"max_mem: {torch.cuda.max_memory_allocated() / 1024 / 1024:.0f}M"
        self.logger.info(f" {self._eta(storage)}  iter: {iteration + 1}/{self._max_iter}  {losses}  "
                         f"{time_s}{data_s}{lr}{mem}")

    def close(self) -> None:
        pass

