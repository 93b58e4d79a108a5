"""DenseCheckpointer: fvcore's Checkpointer with atomic writes, safe loading, released-checkpoint
conversion and a report of every key that was not loaded and why."""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from fvcore.common.checkpoint import Checkpointer
from torch import nn

from .io import load_checkpoint_file
from ..utils.comm import unwrap_model
from .released import convert_released, family_configs, mismatch_hint, released_family

__all__ = ["DenseCheckpointer", "LoadReport", "CheckpointMismatchError"]

logger = logging.getLogger(__name__)


DENSE_MARKER = "__dense_checkpoint__"  # written by DenseCheckpointer.save: the weights are in dense's layout


class CheckpointMismatchError(RuntimeError):
    """Checkpoint tensors whose shapes differ from the model's."""


@dataclass
class LoadReport:
    """What a load did. ``missing``: model keys the checkpoint lacks; ``unexpected``: checkpoint keys the
    model lacks; ``mismatched``: (key, checkpoint shape, model shape); ``dropped``: {key: reason} for keys a
    converter deliberately left out."""

    source: str
    converter: str | None = None
    loaded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mismatched: list[tuple[str, tuple, tuple]] = field(default_factory=list)
    dropped: dict[str, str] = field(default_factory=dict)

    def summary(self) -> str:
        lines = [f"Loaded {len(self.loaded)} tensors from {self.source}"
                 + (f" (converted from the {self.converter} format)" if self.converter else "")]
        if self.dropped:
            lines.append(f"Not loaded, by design ({len(self.dropped)}):")
            lines += [f"  {k}: {why}" for k, why in sorted(self.dropped.items())]
        if self.mismatched:
            lines.append(f"Skipped for shape mismatch ({len(self.mismatched)}):")
            lines += [f"  {k}: checkpoint {list(a)} vs model {list(b)}" for k, a, b in self.mismatched]
        if self.missing:
            lines.append(f"Missing in the checkpoint, left at initialisation ({len(self.missing)}):")
            lines += [f"  {k}" for k in _group_keys(self.missing)]
        if self.unexpected:
            lines.append(f"In the checkpoint but not in the model, ignored ({len(self.unexpected)}):")
            lines += [f"  {k}" for k in _group_keys(self.unexpected)]
        return "\n".join(lines)


def _group_keys(keys: list[str]) -> list[str]:
    """Collapse keys sharing a module prefix: a.b.{weight, bias}."""
    groups: dict[str, list[str]] = {}
    for k in sorted(keys):
        prefix, _, leaf = k.rpartition(".")
        groups.setdefault(prefix, []).append(leaf)
    return [f"{p}.{{{', '.join(v)}}}" if p and len(v) > 1 else (f"{p}.{v[0]}" if p else v[0])
            for p, v in groups.items()]


def _unwrap_checkpoint(ckpt: Any) -> tuple[dict, dict]:
    """(state dict, rest) for dense ({"model": ...}), mmcv/timm ({"state_dict": ...}) or bare checkpoints."""
    if not isinstance(ckpt, dict):
        raise ValueError(f"A checkpoint must be a dict, got {type(ckpt).__name__}")
    for key in ("model", "state_dict", "module"):
        if isinstance(ckpt.get(key), dict):
            rest = {k: v for k, v in ckpt.items() if k != key}
            return ckpt[key], rest
    if all(isinstance(v, (torch.Tensor, np.ndarray)) for v in ckpt.values()):
        return ckpt, {}
    raise ValueError(f"Cannot find the weights in a checkpoint with top-level keys {sorted(ckpt)[:10]}; "
                     f"expected 'model', 'state_dict' or a flat dict of tensors")


class DenseCheckpointer(Checkpointer):
    """Saves/loads model + optimizer + scheduler (+ any checkpointable) with Detectron2's behaviour, and

    - writes every file atomically (temporary file + rename), so a killed run never leaves a broken
      checkpoint or ``last_checkpoint`` pointer;
    - loads without executing code from the file (see dense.checkpoint.io), unless ``trusted``;
    - converts released checkpoints of supported families (see dense.checkpoint.released);
    - refuses shape mismatches (listing them, with the backbone family's ``mismatch_hint`` when it has one) unless
      ``skip_mismatch``, and keeps a :class:`LoadReport` of the last load in ``last_report``.

    :meth:`from_config` builds one from a config, as the trainer and every tool do.
    """

    def __init__(self, model: nn.Module, save_dir: str = "", *, save_to_disk: bool | None = None,
                 trusted: bool = False, skip_mismatch: bool = False, allow_partial: bool = False,
                 require_complete: bool = False, **checkpointables: Any):
        from ..utils import comm

        super().__init__(unwrap_model(model), save_dir,
                         save_to_disk=comm.is_main_process() if save_to_disk is None else save_to_disk,
                         **checkpointables)
        self.trusted, self.skip_mismatch = trusted, skip_mismatch
        self.allow_partial, self.require_complete = allow_partial, require_complete
        self.last_report: LoadReport | None = None
        self._source = ""

    @classmethod
    def from_config(cls, cfg, model: nn.Module, save_dir: str | None = None, require_complete: bool = False,
                    **checkpointables: Any) -> DenseCheckpointer:
        """The checkpointer of ``model`` as ``cfg`` says: MODEL.WEIGHTS_TRUSTED, MODEL.WEIGHTS_SKIP_MISMATCH,
        MODEL.WEIGHTS_ALLOW_PARTIAL, checkpoints in ``save_dir`` (default OUTPUT_DIR; "" = none), plus
        ``checkpointables`` (optimizer, scheduler, ...). ``require_complete`` (evaluation): every weight must load."""
        return cls(model, cfg.OUTPUT_DIR if save_dir is None else save_dir, trusted=cfg.MODEL.WEIGHTS_TRUSTED,
                   skip_mismatch=cfg.MODEL.WEIGHTS_SKIP_MISMATCH, allow_partial=cfg.MODEL.WEIGHTS_ALLOW_PARTIAL,
                   require_complete=require_complete, **checkpointables)

    # ------------------------------------------------------------------ saving
    def save(self, name: str, **kwargs: Any) -> None:
        if not self.save_dir or not self.save_to_disk:
            return
        data = {"model": self.model.state_dict(), DENSE_MARKER: 1}
        for key, obj in self.checkpointables.items():
            data[key] = obj.state_dict()
        data.update(kwargs)
        path = os.path.join(self.save_dir, f"{name}.pth")
        self.logger.info(f"Saving checkpoint to {path}")
        try:
            _atomic_write(path, lambda f: torch.save(data, f))
        except (OSError, RuntimeError) as e:  # disk full (torch: "PytorchStreamWriter failed writing"), read-only dir
            last = os.path.join(self.save_dir, "last_checkpoint")
            previous = open(last).read().strip() if os.path.isfile(last) else None
            kept = (f"the previous checkpoint '{previous}' and last_checkpoint are intact, so --resume continues from "
                    f"it" if previous else "no earlier checkpoint exists in it")
            raise OSError(f"Could not write checkpoint '{path}' ({type(e).__name__}: {str(e).splitlines()[0]}). "
                          f"Nothing of it was kept; {kept}. Free space in, or make writable, OUTPUT_DIR "
                          f"'{self.save_dir}'") from e
        self.tag_last_checkpoint(os.path.basename(path))

    def tag_last_checkpoint(self, last_filename_basename: str) -> None:
        _atomic_write(os.path.join(self.save_dir, "last_checkpoint"),
                      lambda f: f.write(last_filename_basename.encode()))

    # ------------------------------------------------------------------ loading
    def load(self, path: str, checkpointables: list[str] | None = None) -> dict[str, Any]:
        if path and not os.path.isfile(path):
            raise FileNotFoundError(f"Checkpoint '{path}' does not exist (MODEL.WEIGHTS / --resume). "
                                    f"Check the path, or set MODEL.WEIGHTS '' to start from scratch")
        self._source = path
        return super().load(path, checkpointables)

    def _load_file(self, f: str) -> dict[str, Any]:
        state_dict, rest = _unwrap_checkpoint(load_checkpoint_file(f, trusted=self.trusted))
        rest["model"] = state_dict
        rest[DENSE_MARKER] = bool(rest.get(DENSE_MARKER, False))
        return rest

    def _load_model(self, checkpoint: dict[str, Any]) -> LoadReport:
        state_dict = {k: torch.as_tensor(v) if isinstance(v, np.ndarray) else v
                      for k, v in checkpoint.pop("model").items()}
        if all(k.startswith("module.") for k in state_dict):
            state_dict = {k[len("module."):]: v for k, v in state_dict.items()}
        report = LoadReport(source=self._source)
        model_sd = self.model.state_dict()
        native = checkpoint.pop(DENSE_MARKER, False) or set(state_dict) <= set(model_sd)
        conversion = None if native else convert_released(state_dict, self.model)
        if conversion is not None:
            state_dict, report.dropped, report.converter = conversion.state_dict, conversion.dropped, conversion.source
        loadable = {}
        for k, v in state_dict.items():
            if k not in model_sd:
                report.unexpected.append(k)
            elif tuple(v.shape) != tuple(model_sd[k].shape):
                report.mismatched.append((k, tuple(v.shape), tuple(model_sd[k].shape)))
            else:
                loadable[k] = v
        # num_batches_tracked counters are bookkeeping, not weights: never report them as missing
        report.missing = [k for k in model_sd if k not in state_dict and not k.endswith("num_batches_tracked")]
        if report.mismatched and not self.skip_mismatch:
            rows = "\n".join(f"  {k}: checkpoint {list(a)} vs model {list(b)}" for k, a, b in report.mismatched)
            hint = mismatch_hint(self.model, report.mismatched)
            rows += f"\n{hint}" if hint else ""
            raise CheckpointMismatchError(
                f"Checkpoint '{self._source}' has {len(report.mismatched)} tensors whose shapes differ from the "
                f"model's:\n{rows}\nThe config does not describe the checkpoint's model (check the backbone variant "
                f"and NUM_CLASSES), or set MODEL.WEIGHTS_SKIP_MISMATCH True to leave these at initialisation "
                f"(e.g. fine-tuning to another number of classes)"
            )
        if not self.allow_partial:
            self._check_coverage(state_dict, loadable, report)
        self.model.load_state_dict(loadable, strict=False)
        report.loaded = sorted(loadable)
        self.last_report = report
        return report

    def _check_coverage(self, state_dict: dict, loadable: dict, report: LoadReport) -> None:
        """Stop when the file leaves the whole backbone uninitialised (a file of another family or task), or, when
        ``require_complete`` (evaluation), any weight: naming what the file looks like and the configs that fit."""
        prefix = "backbone." if any(k.startswith("backbone.") for k in self.model.state_dict()) else ""
        backbone_loaded = any(k.startswith(prefix) for k in loadable)
        if backbone_loaded and not (self.require_complete and report.missing):
            return
        if backbone_loaded:
            what = f"lacks {len(report.missing)} of the model's weights: {', '.join(_group_keys(report.missing)[:6])}"
        else:
            what = (f"holds none of the model's backbone weights ({len(loadable)} of its {len(state_dict)} tensors "
                    f"fit this {type(self.model).__name__})")
        family = released_family(state_dict)
        own = type(getattr(self.model, "backbone", self.model)).__name__
        looks = ""
        if family is not None and family != own:
            configs = ", ".join(family_configs(family)) or f"MODEL.BACKBONE.NAME {family}"
            looks = f" It looks like a {family} checkpoint: use a config with that backbone ({configs})."
        raise CheckpointMismatchError(
            f"Checkpoint '{self._source}' {what}.{looks} To load it anyway (e.g. ImageNet weights to fine-tune, or a "
            f"partial model), set MODEL.WEIGHTS_ALLOW_PARTIAL True")

    def _log_incompatible_keys(self, report: LoadReport) -> None:
        level = logging.WARNING if (report.missing or report.unexpected or report.mismatched) else logging.INFO
        self.logger.log(level, report.summary())


def _atomic_write(path: str, write) -> None:
    tmp = f"{path}.tmp{os.getpid()}"
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
