"""The project's parity data (tests/data/parity/golden: outputs of the authors' own code for deterministic stand-in
weights, with a ``notes`` field each saying how it was made) and the stand-in weight generator that rebuilds the
weights those outputs were computed with.

The data lives in the repository, so every clone runs every parity test; a parity test that cannot find its data
fails, naming what is missing. Every test of a fact that does not need the files (parameter counts, FLOPs) holds the
number itself.
"""
import os
import types

import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GOLDEN_DIR = os.path.join(REPO, "tests", "data", "parity", "golden")

# dtypes the generator leaves out: index tables and counters, which a model computes itself
_INTEGER_DTYPES = {"torch.int64", "torch.int32", "torch.int16", "torch.int8", "torch.uint8", "torch.bool"}


def stand_in_weights(keys: dict, seed: int) -> dict:
    """The golden files' deterministic stand-in weights: for every floating key of ``keys`` ({key: (shape, dtype)}),
    in sorted key order, float64 standard-normal draws n from one generator seeded with ``seed``, turned into float32
    as 1 + 0.1 |n| for BatchNorm ``running_var``, 1 + 0.02 n for a 1-D ``weight`` of a norm layer (a key naming
    norm / bn / ln / .gn), and 0.02 n otherwise. Integer keys draw nothing."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for key in sorted(keys):
        shape, dtype = keys[key]
        if str(dtype) in _INTEGER_DTYPES:
            continue
        shape = tuple(shape)
        n = torch.randn(shape, generator=g, dtype=torch.float64)
        leaf = key.rsplit(".", 1)[-1]
        norm_scale = len(shape) == 1 and leaf == "weight" and any(t in key.lower() for t in ("norm", "bn", "ln", ".gn"))
        if leaf == "running_var":
            w = 1.0 + 0.1 * n.abs()
        elif norm_scale:
            w = 1.0 + 0.02 * n
        else:
            w = 0.02 * n
        out[key] = w.to(torch.float32)
    return out


def compare(outputs: dict, expected: dict, atol: float, rtol: float) -> list[str]:
    """What differs between ``outputs`` and ``expected`` ({name: tensor}) beyond atol + rtol |expected|: a line per
    output (missing, shape, max abs error); [] when they agree."""
    problems = []
    for name, ref in expected.items():
        got = outputs.get(name)
        if got is None:
            problems.append(f"{name}: missing")
            continue
        got, ref = got.detach().float().cpu(), ref.float()
        if tuple(got.shape) != tuple(ref.shape):
            problems.append(f"{name}: shape {tuple(got.shape)} != {tuple(ref.shape)}")
        elif not torch.allclose(got, ref, atol=atol, rtol=rtol):
            problems.append(f"{name}: max abs err {(got - ref).abs().max().item():.3g}")
    return problems


def golden_tools():
    """``stand_in_weights`` and ``compare`` (the interface of the golden files' generator)."""
    return types.SimpleNamespace(stand_in_weights=stand_in_weights, compare=compare)


def shared_file(*parts: str) -> str:
    """Path of a file under tests/data/parity/golden; the calling test fails when it is absent."""
    path = os.path.join(GOLDEN_DIR, *parts)
    if not os.path.isfile(path):
        import pytest  # here only: the reference-data generators import this module where pytest may be absent

        pytest.fail(f"parity data file {os.path.relpath(path, REPO)} not found: the checkout is incomplete "
                    f"(git lfs or a partial clone?)", pytrace=False)
    return path
