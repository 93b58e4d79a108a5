"""Where the project's shared parity data lives (../shared beside the checkout; $DENSE_SHARED overrides).

A parity test that cannot find its data fails, naming what is missing and where it was looked for: a parity check
that silently does not run proves nothing. Every test of a fact that does not need the files (parameter counts,
FLOPs) holds the number itself.
"""
import os
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_CANDIDATES = [os.environ.get("DENSE_SHARED", ""), os.path.join(REPO, "..", "shared"), "/work/shared"]
SHARED = next((os.path.abspath(p) for p in _CANDIDATES if p and os.path.isdir(os.path.join(p, "golden"))), None)
GOLDEN_DIR = os.path.join(SHARED, "golden") if SHARED else None


def _missing(what: str) -> None:
    looked = ", ".join(os.path.abspath(p) for p in _CANDIDATES if p)
    pytest.fail(f"shared parity data {what} not found (looked in: {looked}); put the project's shared/ folder beside "
                f"the checkout or set DENSE_SHARED to it", pytrace=False)


def golden_tools():
    """shared/tools/golden.py (stand_in_weights, compare); the calling test fails when it is absent."""
    if SHARED is None:
        _missing("tools/golden.py")
    sys.path.insert(0, os.path.join(SHARED, "tools"))
    import golden

    return golden


def shared_file(*parts: str) -> str:
    """Path of a file under shared/golden; the calling test fails when it is absent."""
    if GOLDEN_DIR is None or not os.path.isfile(os.path.join(GOLDEN_DIR, *parts)):
        _missing(f"file golden/{'/'.join(parts)}")
    return os.path.join(GOLDEN_DIR, *parts)
