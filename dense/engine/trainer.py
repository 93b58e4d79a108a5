"""The training loop (one file): model, optimizer, schedule, data, hooks, AMP, clipping, DDP, resume."""
from __future__ import annotations

import logging
import os
import random
import time
import weakref
from collections import OrderedDict

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from ..checkpoint import DenseCheckpointer
from ..data import build_test_loader, build_train_loader
from ..data.build import train_records
from ..data.mappers import build_mapper
from ..evaluation import DatasetEvaluator, build_evaluator, inference_on_dataset
from ..modeling import build_model
from ..utils import comm
from ..utils.events import CommonMetricPrinter, EventStorage, JSONWriter, TensorboardWriter
from . import hooks
from .solver import build_lr_scheduler, build_optimizer, resolve_epochs

__all__ = ["Trainer", "create_ddp_model", "NonFiniteLossError"]

logger = logging.getLogger(__name__)


class NonFiniteLossError(FloatingPointError):
    """A loss became NaN or infinite."""


def create_ddp_model(model: nn.Module) -> nn.Module:
    """Wrap in DistributedDataParallel when running with several processes."""
    if comm.get_world_size() == 1:
        return model
    device_ids = [comm.get_local_rank()] if next(model.parameters()).is_cuda else None
    return DistributedDataParallel(model, device_ids=device_ids, broadcast_buffers=False)


def step_seed(seed: int, iteration: int, rank: int) -> int:
    """Seed of the model's randomness (dropout, drop path) at ``iteration`` on ``rank``: a function of the
    run's seed only, so a resumed run draws exactly what an uninterrupted run draws."""
    return (seed * 2_147_483 + iteration * 65_537 + rank * 101) % (2**63 - 1)


class Trainer:
    """Detectron2's DefaultTrainer, self-contained.

    Usage::

        trainer = Trainer(cfg)
        trainer.resume_or_load(resume=args.resume)
        trainer.train()

    Override the ``build_*`` classmethods to customise models, data or evaluation.
    """

    def __init__(self, cfg):
        self._train_records = None  # listed here once when the schedule is in epochs, reused by the loader
        if cfg.SOLVER.EPOCHS > 0:
            self._train_records = train_records(cfg)
            cfg = resolve_epochs(cfg, len(self._train_records))
            logger.info(f"SOLVER.EPOCHS {cfg.SOLVER.EPOCHS}: {cfg.SOLVER.MAX_ITER} iterations")
        self.cfg = cfg
        if comm.is_main_process():
            os.makedirs(cfg.OUTPUT_DIR, exist_ok=True)
        if cfg.SEED >= 0:  # the initialisation is a function of SEED in-process too, not only through default_setup
            torch.manual_seed(cfg.SEED)
        model = self.build_model(cfg)
        self.optimizer = self.build_optimizer(cfg, model)
        self.model = create_ddp_model(model)
        self.scheduler = build_lr_scheduler(cfg, self.optimizer)
        self.amp_dtype = {"float16": torch.float16, "bfloat16": torch.bfloat16}[cfg.SOLVER.AMP.DTYPE]
        self.device_type = next(model.parameters()).device.type
        use_scaler = cfg.SOLVER.AMP.ENABLED and self.amp_dtype == torch.float16
        self.grad_scaler = torch.amp.GradScaler(self.device_type) if use_scaler else None
        checkpointables = {"optimizer": self.optimizer, "scheduler": self.scheduler}
        if self.grad_scaler is not None:
            checkpointables["grad_scaler"] = self.grad_scaler
        self.checkpointer = DenseCheckpointer.from_config(cfg, model, **checkpointables)
        self.seed = cfg.SEED
        self.start_iter, self.iter, self.max_iter = 0, 0, cfg.SOLVER.MAX_ITER
        self._hooks: list[hooks.HookBase] = []
        self.last_results: dict = {}
        self.register_hooks(self.build_hooks())

    # ------------------------------------------------------------------ builders (override to customise)
    @classmethod
    def build_model(cls, cfg) -> nn.Module:
        model = build_model(cfg)
        logger.info(f"Model: {type(model).__name__}, "
                    f"{sum(p.numel() for p in model.parameters()) / 1e6:.2f}M parameters")
        return model

    @classmethod
    def build_optimizer(cls, cfg, model: nn.Module) -> torch.optim.Optimizer:
        return build_optimizer(cfg, model)

    @classmethod
    def build_mapper(cls, cfg, is_train: bool):
        """The dataset mapper named by INPUT.DATASET_MAPPER_NAME (DATASET_MAPPER_REGISTRY)."""
        return build_mapper(cfg, is_train)

    @classmethod
    def build_train_loader(cls, cfg, seed: int, start_iter: int, records: list[dict] | None = None):
        return build_train_loader(cfg, cls.build_mapper(cfg, True), seed=seed, start_iter=start_iter, records=records)

    @classmethod
    def build_test_loader(cls, cfg, dataset_name: str):
        return build_test_loader(cfg, dataset_name, cls.build_mapper(cfg, False))

    @classmethod
    def build_evaluator(cls, cfg, dataset_name: str) -> DatasetEvaluator:
        """The evaluator registered for the dataset's evaluator_type (EVALUATOR_REGISTRY)."""
        return build_evaluator(cfg, dataset_name)

    def build_hooks(self) -> list[hooks.HookBase]:
        cfg = self.cfg
        ret: list[hooks.HookBase] = [hooks.IterationTimer(), hooks.LRScheduler()]
        if comm.is_main_process():
            ret.append(hooks.PeriodicCheckpointer(self.checkpointer, cfg.SOLVER.CHECKPOINT_PERIOD, self.max_iter))
        if cfg.DATASETS.TEST:
            ret.append(hooks.EvalHook(cfg.TEST.EVAL_PERIOD, self._evaluate))
        if comm.is_main_process():
            writers = [CommonMetricPrinter(self.max_iter), JSONWriter(os.path.join(cfg.OUTPUT_DIR, "metrics.json"))]
            if cfg.TENSORBOARD:
                writers.append(TensorboardWriter(cfg.OUTPUT_DIR))
            ret.append(hooks.PeriodicWriter(writers, period=cfg.LOG_PERIOD))
        return ret

    def register_hooks(self, hook_list: list[hooks.HookBase]) -> None:
        for h in hook_list:
            h.trainer = weakref.proxy(self)
        self._hooks.extend(hook_list)

    # ------------------------------------------------------------------ checkpoints
    def resume_or_load(self, resume: bool = True) -> None:
        """With ``resume`` and a checkpoint in OUTPUT_DIR: continue from it (model, optimizer, schedule,
        iteration). Otherwise load MODEL.WEIGHTS (model only) and start at iteration 0."""
        ckpt = self.checkpointer.resume_or_load(self.cfg.MODEL.WEIGHTS, resume=resume)
        if resume and self.checkpointer.has_checkpoint():
            self.start_iter = ckpt.get("iteration", -1) + 1
            logger.info(f"Resuming from iteration {self.start_iter}")

    # ------------------------------------------------------------------ loop
    def train(self) -> dict:
        """Run from ``start_iter`` to MAX_ITER; returns the last evaluation results (main process)."""
        logger.info(f"Starting training from iteration {self.start_iter}")
        self._data_iter = iter(self.build_train_loader(self.cfg, self.seed, self.start_iter, self._train_records))
        self.iter = self.start_iter
        with EventStorage(self.start_iter) as self.storage:
            for h in self._hooks:
                h.before_train()
            for it in range(self.start_iter, self.max_iter):
                self.iter = it
                self.storage.iter = self.iter
                for h in self._hooks:
                    h.before_step()
                self.run_step()
                for h in self._hooks:
                    h.after_step()
            self.iter = self.storage.iter = max(self.start_iter, self.max_iter)
            for h in self._hooks:
                h.after_train()
        return self.last_results

    def run_step(self) -> None:
        assert self.model.training, "the model was left in eval mode"
        start = time.perf_counter()
        data = next(self._data_iter)
        data_time = time.perf_counter() - start
        seed = step_seed(self.seed, self.iter, comm.get_rank())
        torch.manual_seed(seed)  # the model's randomness: dropout, drop path; classification's Mixup and random
        np.random.seed(seed % 2**32)  # erasing also draw from numpy and random
        random.seed(seed)
        with torch.autocast(self.device_type, dtype=self.amp_dtype, enabled=self.cfg.SOLVER.AMP.ENABLED):
            loss_dict = self.model(data)
        losses = sum(loss_dict.values())
        self._check_finite(loss_dict)
        self.optimizer.zero_grad(set_to_none=True)
        if self.grad_scaler is not None:
            self.grad_scaler.scale(losses).backward()
            self.grad_scaler.unscale_(self.optimizer)
            self._clip_gradients()
            self.grad_scaler.step(self.optimizer)
            self.grad_scaler.update()
        else:
            losses.backward()
            self._clip_gradients()
            self.optimizer.step()
        reduced = comm.reduce_dict({k: v.detach() for k, v in loss_dict.items()})
        if comm.is_main_process():
            self.storage.put_scalars(total_loss=sum(reduced.values()), **reduced)
            self.storage.put_scalar("data_time", data_time)

    def _check_finite(self, loss_dict: dict[str, torch.Tensor]) -> None:
        bad = {k: v.item() for k, v in loss_dict.items() if not torch.isfinite(v).all()}
        if bad:
            last = self.checkpointer.get_checkpoint_file() if self.checkpointer.has_checkpoint() else "none"
            raise NonFiniteLossError(
                f"Loss became non-finite at iteration {self.iter}: {bad}. Training stopped; the last checkpoint "
                f"is {last}. Usual fixes: lower SOLVER.BASE_LR or lengthen SOLVER.WARMUP_ITERS, enable "
                f"SOLVER.CLIP_GRADIENTS.ENABLED, disable SOLVER.AMP.ENABLED, and check the labels are in range"
            )

    def _clip_gradients(self) -> None:
        c = self.cfg.SOLVER.CLIP_GRADIENTS
        if not c.ENABLED:
            return
        params = [p for g in self.optimizer.param_groups for p in g["params"] if p.grad is not None]
        if c.CLIP_TYPE == "full_model":
            torch.nn.utils.clip_grad_norm_(params, c.CLIP_VALUE, c.NORM_TYPE)
        elif c.CLIP_TYPE == "norm":
            for p in params:
                torch.nn.utils.clip_grad_norm_(p, c.CLIP_VALUE, c.NORM_TYPE)
        elif c.CLIP_TYPE == "value":
            torch.nn.utils.clip_grad_value_(params, c.CLIP_VALUE)
        else:
            raise ValueError(f"SOLVER.CLIP_GRADIENTS.CLIP_TYPE must be full_model, norm or value; got {c.CLIP_TYPE}")

    # ------------------------------------------------------------------ evaluation
    def _evaluate(self) -> dict:
        # processes hold their own BatchNorm statistics; evaluate rank 0's, which are what gets checkpointed
        comm.broadcast_buffers(self.model)
        return self.test(self.cfg, self.model)

    @classmethod
    def test(cls, cfg, model: nn.Module, evaluators: list[DatasetEvaluator] | None = None) -> dict:
        """Evaluate ``model`` on every dataset of DATASETS.TEST; returns {task: metrics} (one dataset) or
        {dataset: {task: metrics}}."""
        results = OrderedDict()
        for i, name in enumerate(cfg.DATASETS.TEST):
            loader = cls.build_test_loader(cfg, name)
            evaluator = evaluators[i] if evaluators is not None else cls.build_evaluator(cfg, name)
            results[name] = inference_on_dataset(model, loader, evaluator)
        if len(results) == 1:
            results = list(results.values())[0]
        return results
