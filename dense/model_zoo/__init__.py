"""The shipped configs and the papers' released checkpoints by name, as Detectron2's ``model_zoo``::

    from dense import model_zoo
    cfg = model_zoo.get_config("ade20k/upernet/vit_adapter_tiny_deit_512_160k.yaml", trained=True)
    model = model_zoo.get("ade20k/upernet/vit_adapter_tiny_deit_512_160k.yaml")  # eval mode, released weights

Names are config paths relative to ``configs/`` (``.yaml`` and a leading ``configs/`` optional). Released
checkpoints with a direct URL are downloaded once into :func:`cache_dir` ($DENSE_CACHE, else
~/.cache/dense/checkpoints); the others print where to get the file and the name to give it there.
"""
from __future__ import annotations

import difflib
import glob
import logging
import os

from .catalog import RELEASES, Release
from .download import DownloadError, cache_dir, download, unpack_zip

__all__ = ["get_config_file", "get_config", "get", "get_checkpoint", "list_configs", "configs_root", "cache_dir",
           "Release", "RELEASES", "DownloadError", "ReleaseNotAvailable"]

logger = logging.getLogger(__name__)


class ReleaseNotAvailable(FileNotFoundError):
    """A config's released checkpoint is not in the cache and cannot be downloaded (no direct URL, or none released);
    the message says where to get it and where to put it."""


def configs_root() -> str:
    """dense's ``configs/`` folder (beside the package in a source checkout, as ``pip install -e .`` leaves it)."""
    root = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "configs")
    if not os.path.isdir(root):
        raise FileNotFoundError(f"dense's configs folder '{root}' is missing: install dense from its repository "
                                f"(pip install -e .) so that the configs stay beside the package")
    return root


def list_configs() -> list[str]:
    """Every shipped config (not the Base-* parts) by its name relative to ``configs/``."""
    root = configs_root()
    paths = glob.glob(os.path.join(root, "**", "*.yaml"), recursive=True)
    return sorted(os.path.relpath(p, root) for p in paths if not os.path.basename(p).startswith("Base-"))


def _name(name: str) -> str:
    name = name.replace(os.sep, "/").removeprefix("configs/")
    return name if name.endswith(".yaml") else name + ".yaml"


def get_config_file(name: str) -> str:
    """The path of shipped config ``name`` (e.g. ``"coco/mask_rcnn/davit_tiny_1x.yaml"``)."""
    name = _name(name)
    path = os.path.join(configs_root(), name)
    if not os.path.isfile(path):
        close = difflib.get_close_matches(name, list_configs(), n=5, cutoff=0.5)
        hint = f"; did you mean {', '.join(close)}?" if close else "; model_zoo.list_configs() lists them"
        raise FileNotFoundError(f"No shipped config named '{name}' under {configs_root()}{hint}")
    return path


def get_checkpoint(name: str, progress: bool = True) -> str:
    """The local path of config ``name``'s released checkpoint: from the cache folder, else downloaded into it (direct
    URLs; a released .zip is unpacked and the checkpoint inside returned). Raises :class:`ReleaseNotAvailable` with
    instructions for releases without a direct URL, and when none was released."""
    name = _name(name)
    config = get_config_file(name)
    release: Release | None = RELEASES.get(name)
    if release is None:
        raise ReleaseNotAvailable(f"No released checkpoint for '{name}' (a row the papers did not release): train it "
                                  f"with tools/train_net.py --config-file {config}")
    path = os.path.join(cache_dir(), release.file)
    if not os.path.isfile(path):
        if not release.url:
            raise ReleaseNotAvailable(
                f"The checkpoint of '{name}' has no direct download. Get it from {release.page} and save it as "
                f"'{path}' (or pass its path as MODEL.WEIGHTS)")
        logger.info(f"Downloading {release.url} to {path}")
        download(release.url, path, size=release.size, progress=progress)
    return unpack_zip(path) if path.endswith(".zip") else path


def get_config(name: str, trained: bool = False):
    """The config of shipped config ``name`` (a CfgNode, not frozen); ``trained=True`` sets MODEL.WEIGHTS to its
    released checkpoint (:func:`get_checkpoint`)."""
    from ..config import get_cfg

    cfg = get_cfg()
    cfg.merge_from_file(get_config_file(name))
    if trained:
        cfg.MODEL.WEIGHTS = get_checkpoint(name)
    return cfg


def get(name: str, trained: bool = True, device: str | None = None):
    """The model of shipped config ``name`` in eval mode on ``device`` (default MODEL.DEVICE), with its released
    checkpoint loaded when ``trained`` (every weight must load, as for ``--eval-only``)."""
    from ..checkpoint import DenseCheckpointer
    from ..modeling import build_model

    cfg = get_config(name, trained=trained)
    if device is not None:
        cfg.MODEL.DEVICE = device
    model = build_model(cfg).eval()
    if trained:
        DenseCheckpointer.from_config(cfg, model, save_dir="", require_complete=True).load(cfg.MODEL.WEIGHTS)
    return model
