"""Where the project's shared parity data lives (../shared beside the checkout; $DENSE_SHARED overrides).

Golden-parity tests skip with a clear reason when it is absent (a checkout on its own); every test of a fact
that does not need the files (parameter counts, FLOPs) holds the number itself.
"""
import os
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_CANDIDATES = [os.environ.get("DENSE_SHARED", ""), os.path.join(REPO, "..", "shared"), "/work/shared"]
SHARED = next((os.path.abspath(p) for p in _CANDIDATES if p and os.path.isdir(os.path.join(p, "golden"))), None)
GOLDEN_DIR = os.path.join(SHARED, "golden") if SHARED else None
KEYS_DIR = os.path.join(GOLDEN_DIR, "keys") if SHARED else None


def golden_tools():
    """shared/tools/golden.py (stand_in_weights, compare), or skip the calling test."""
    if SHARED is None:
        pytest.skip("shared parity data not found (../shared beside the checkout, or set DENSE_SHARED)")
    sys.path.insert(0, os.path.join(SHARED, "tools"))
    import golden

    return golden


def shared_file(*parts: str) -> str:
    """Path of a file under shared/golden, or skip the calling test when it is absent."""
    if GOLDEN_DIR is None or not os.path.isfile(os.path.join(GOLDEN_DIR, *parts)):
        pytest.skip(f"shared parity file golden/{'/'.join(parts)} not found (set DENSE_SHARED)")
    return os.path.join(GOLDEN_DIR, *parts)
