"""The CI switch DENSE_REQUIRE_PARITY=1 (.ci/run): a skipped test fails unless a GPU or Detectron2 is what it lacks."""
import os
import subprocess
import sys

from conftest import REPO

PROBE = '''import pytest
def test_reference_missing():
    pytest.skip("reference data tests/data/parity/x.pt is missing")
@pytest.mark.skipif(True, reason="needs a GPU and dense._C built with CUDA kernels (FORCE_CUDA=1)")
def test_gpu():
    pass
def test_detectron2():
    pytest.importorskip("no_such_module_here", reason="Detectron2 is not installed (not on PyPI)")
'''


def _run(tmp_path, require: str) -> str:
    (tmp_path / "test_probe.py").write_text(PROBE)
    env = dict(os.environ, DENSE_REQUIRE_PARITY=require, PYTHONPATH=os.path.join(REPO, "tests"))
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "conftest", "-p", "no:cacheprovider",
                           "--rootdir", str(tmp_path), "-c", os.devnull, str(tmp_path / "test_probe.py")],
                          env=env, capture_output=True, text=True, cwd=tmp_path).stdout


def test_a_skipped_parity_test_fails_under_the_ci_switch(tmp_path):
    out = _run(tmp_path, "1")
    assert "1 failed, 2 skipped" in out and "FAILED" in out and "test_reference_missing" in out
    assert "1 failed" not in _run(tmp_path, "0")
