"""Helpers the reference-data generators share: reading an upstream repository's files from its git mirror, loading
a module from a path, hashing, and the stand-in weights (tests/shared_data.py, the golden files' algorithm). Standard
library and torch only: the generators run in the upstream projects' own environments."""
import hashlib
import importlib.util
import os
import subprocess
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
from shared_data import stand_in_weights  # noqa: E402,F401  (re-exported for the generators)


def git_commit(git_dir: str) -> str:
    return subprocess.check_output(["git", "--git-dir", git_dir, "rev-parse", "HEAD"], text=True).strip()


def extract(git_dir: str, paths: list, dest: str) -> None:
    """The upstream files (`git archive HEAD paths`) under dest."""
    os.makedirs(dest, exist_ok=True)
    tar = subprocess.check_output(["git", "--git-dir", git_dir, "archive", "HEAD", *paths])
    subprocess.run(["tar", "-x", "-C", dest], input=tar, check=True)


def load_module(name: str, path: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def sha256(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()
