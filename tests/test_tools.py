import json
import os
import sys

import cv2
import pytest

from conftest import PY, REPO, TINY_CFG, run_tool


@pytest.fixture(scope="module")
def trained(synthetic_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("trained")
    run_tool([PY, "tools/train_net.py", "--config-file", TINY_CFG, "OUTPUT_DIR", str(out)])
    return out


def test_eval_only_reproduces_training_metrics_exactly(trained, tmp_path):
    lines = [json.loads(line) for line in open(trained / "metrics.json")]
    final = [rec for rec in lines if "sem_seg/mIoU" in rec][-1]
    assert final["iteration"] == 5
    assert any("total_loss" in rec and "lr" in rec for rec in lines)
    run_tool([PY, "tools/train_net.py", "--config-file", TINY_CFG, "--eval-only",
              "MODEL.WEIGHTS", str(trained / "model_final.pth"), "OUTPUT_DIR", str(tmp_path)])
    ev = json.load(open(tmp_path / "eval_results.json"))
    for k, v in final.items():
        if k.startswith("sem_seg/"):
            assert ev[k] == v, k


def test_eval_only_without_weights_is_refused(tmp_path):
    p = run_tool([PY, "tools/train_net.py", "--config-file", TINY_CFG, "--eval-only", "OUTPUT_DIR", str(tmp_path)],
                 check=False)
    assert p.returncode != 0 and "MODEL.WEIGHTS" in p.stderr


def test_bad_config_key_on_command_line(tmp_path):
    p = run_tool([PY, "tools/train_net.py", "--config-file", TINY_CFG, "SOLVER.MAX_ITERS", "5"], check=False)
    assert p.returncode != 0 and "Unknown config key 'SOLVER.MAX_ITERS'" in p.stderr


def test_demo_writes_overlays_with_legend(trained, synthetic_root, tmp_path):
    pattern = os.path.join(synthetic_root, "images", "val", "0000[0-2].jpg")
    run_tool([PY, "tools/demo.py", "--config-file", TINY_CFG, "--input", pattern, "--output", str(tmp_path / "vis"),
              "--opts", "MODEL.WEIGHTS", str(trained / "model_final.pth")])
    files = sorted(os.listdir(tmp_path / "vis"))
    assert files == ["00000.png", "00001.png", "00002.png"]
    src = cv2.imread(os.path.join(synthetic_root, "images", "val", "00000.jpg"))
    vis = cv2.imread(str(tmp_path / "vis" / "00000.png"))
    assert vis.shape[0] >= src.shape[0] and vis.shape[1] == src.shape[1] + 180  # image + legend panel


def test_analyze_model_reports_params_and_flops():
    p = run_tool([PY, "tools/analyze_model.py", "--config-file", TINY_CFG, "--input-size", "64", "96", "--backbone"])
    assert "Total parameters: 11.177M" in p.stdout  # torchvision resnet18 without fc: 11,176,512
    flops = float(p.stdout.split("FLOPs at 64x96: ")[1].split("G")[0])
    assert 0.2 < flops < 0.25  # resnet18 backbone: 1.82 GMac at 224x224, scaled by area


def test_gpu_check_is_prepared(tmp_path):
    """tools/gpu_check.py (make gpu-check): without a GPU it says so in its report and exits 2; its steps name files
    and backbone variants that exist (a dry run writes them into the report)."""
    import torch

    sys.path.insert(0, os.path.join(REPO, "tools"))
    import gpu_check

    for _, command, _, limit in gpu_check.steps(PY, str(tmp_path), "9.0", 16):
        for arg in command[1:]:
            if arg.endswith((".py", ".yaml")) and not arg.startswith("--"):
                assert os.path.isfile(os.path.join(REPO, arg)), arg
        assert limit <= 240
    backbones = {os.path.splitext(f)[0] for f in os.listdir(os.path.join(REPO, "configs", "backbones"))}
    assert set(gpu_check.BENCH_VARIANTS) <= backbones
    proc = run_tool([PY, "tools/gpu_check.py", "--dry-run", "--output", str(tmp_path / "dry")])
    report = open(tmp_path / "dry" / "report.md").read()
    assert all(f"## {name}" in report for name, *_ in gpu_check.steps(PY, "", "9.0", 16)), report
    if not torch.cuda.is_available():
        proc = run_tool([PY, "tools/gpu_check.py", "--output", str(tmp_path / "real")], check=False)
        assert proc.returncode == 2 and "No GPU visible" in open(tmp_path / "real" / "report.md").read()
