import os

import pytest
import torch
from torchvision.models import resnet18

from dense.checkpoint import CheckpointMismatchError, DenseCheckpointer, UnsafeCheckpointError, load_checkpoint_file
from dense.checkpoint.io import Placeholder
from dense.modeling import build_model


class _RunsCode:
    """Pickles to a call of os.system: loading it would execute a shell command."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_malicious_pickle_is_refused_and_loads_when_trusted(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    torch.save({"model": {"w": torch.ones(2)}, "payload": _RunsCode(marker)}, path)
    with pytest.raises(UnsafeCheckpointError, match="WEIGHTS_TRUSTED"):
        load_checkpoint_file(str(path))
    assert not marker.exists()  # nothing ran
    ckpt = load_checkpoint_file(str(path), trusted=True)
    assert marker.exists() and torch.equal(ckpt["model"]["w"], torch.ones(2))


def test_non_tensor_objects_become_placeholders(tmp_path):
    """The DAT classification files hold a yacs CfgNode; timm checkpoints an argparse Namespace."""
    import argparse

    from yacs.config import CfgNode

    cfg = CfgNode({"MODEL": CfgNode({"NAME": "dat_tiny"})})
    path = tmp_path / "cls.pth"
    torch.save({"model": {"w": torch.arange(3.0)}, "config": cfg, "args": argparse.Namespace(lr=0.1),
                "epoch": 299, "max_accuracy": 83.9}, path)
    ckpt = load_checkpoint_file(str(path))
    assert torch.equal(ckpt["model"]["w"], torch.arange(3.0)) and ckpt["epoch"] == 299
    assert isinstance(ckpt["config"], Placeholder) and ckpt["config"]["MODEL"]["NAME"] == "dat_tiny"
    assert isinstance(ckpt["args"], Placeholder) and ckpt["args"].state == {"lr": 0.1}


def test_refused_checkpoint_through_model_weights(tiny_cfg, tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"model": {}, "x": _RunsCode(tmp_path / "m")}, path)
    model = build_model(tiny_cfg)
    with pytest.raises(UnsafeCheckpointError):
        DenseCheckpointer(model).load(str(path))


def test_shape_mismatch_is_an_error_listing_keys(tiny_cfg, tmp_path):
    model = build_model(tiny_cfg)
    sd = model.state_dict()
    sd["sem_seg_head.conv_seg.weight"] = torch.zeros(9, 16, 1, 1)
    sd["sem_seg_head.conv_seg.bias"] = torch.zeros(9)
    torch.save({"model": sd}, tmp_path / "m.pth")
    with pytest.raises(CheckpointMismatchError) as e:
        DenseCheckpointer(build_model(tiny_cfg)).load(str(tmp_path / "m.pth"))
    msg = str(e.value)
    assert "sem_seg_head.conv_seg.weight: checkpoint [9, 16, 1, 1] vs model [6, 16, 1, 1]" in msg
    assert "WEIGHTS_SKIP_MISMATCH" in msg
    ck = DenseCheckpointer(build_model(tiny_cfg), skip_mismatch=True)
    ck.load(str(tmp_path / "m.pth"))
    assert {k for k, _, _ in ck.last_report.mismatched} == {"sem_seg_head.conv_seg.weight",
                                                            "sem_seg_head.conv_seg.bias"}


def test_missing_checkpoint_file(tiny_cfg):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        DenseCheckpointer(build_model(tiny_cfg)).load("no/such/model.pth")


def test_torchvision_resnet_checkpoint_is_converted(tiny_cfg, tmp_path):
    tv = resnet18()
    torch.save(tv.state_dict(), tmp_path / "resnet18.pth")
    model = build_model(tiny_cfg)
    ck = DenseCheckpointer(model)
    ck.load(str(tmp_path / "resnet18.pth"))
    r = ck.last_report
    assert r.converter == "ResNet (classification)"
    assert set(r.dropped) == {"fc.weight", "fc.bias"}
    assert not r.unexpected and not r.mismatched
    assert all(k.startswith(("sem_seg_head.", "neck.")) for k in r.missing)  # only the new head is missing
    assert torch.equal(model.backbone.layer3[1].conv2.weight, tv.layer3[1].conv2.weight)


def test_save_is_atomic_and_round_trips(tiny_cfg, tmp_path):
    model = build_model(tiny_cfg)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    ck = DenseCheckpointer(model, str(tmp_path), optimizer=opt)
    ck.save("model_0000009", iteration=9)
    assert sorted(os.listdir(tmp_path)) == ["last_checkpoint", "model_0000009.pth"]  # no temporary files left
    assert (tmp_path / "last_checkpoint").read_text() == "model_0000009.pth"
    model2 = build_model(tiny_cfg)
    ck2 = DenseCheckpointer(model2, str(tmp_path), optimizer=torch.optim.SGD(model2.parameters(), lr=0.1))
    extra = ck2.resume_or_load("", resume=True)
    assert extra["iteration"] == 9
    assert not ck2.last_report.missing and not ck2.last_report.unexpected
    for (k, a), b in zip(model.state_dict().items(), model2.state_dict().values()):
        assert torch.equal(a, b), k


def test_interrupted_write_keeps_previous_checkpoint(tiny_cfg, tmp_path, monkeypatch):
    model = build_model(tiny_cfg)
    ck = DenseCheckpointer(model, str(tmp_path))
    ck.save("model_0000001", iteration=1)

    def crash(*args, **kwargs):
        raise KeyboardInterrupt  # killed mid-write

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(KeyboardInterrupt):
        ck.save("model_0000002", iteration=2)
    assert (tmp_path / "last_checkpoint").read_text() == "model_0000001.pth"
    assert not (tmp_path / "model_0000002.pth").exists()


def _davit_release(tmp_path) -> str:
    """Stand-in weights in the layout of a released DaViT mmseg model (golden key table: backbone.* official names)."""
    from golden_utils import load_golden, released_checkpoint

    path = str(tmp_path / "davit_release.pth")
    released_checkpoint(load_golden("davit_tiny"), path)
    return path


def test_a_checkpoint_of_another_family_stops_naming_it(tmp_path):
    """A DaViT release with a DAT++ config: nothing of the backbone would load, so the load stops and names the
    family the file looks like and the configs that fit (it used to log 'Loaded 0 tensors' and evaluate a random
    model); MODEL.WEIGHTS_ALLOW_PARTIAL loads what fits."""
    from dense.config import get_cfg

    cfg = get_cfg()
    cfg.merge_from_file("configs/synthetic/semantic_fpn/dat_pp_nano_demo.yaml")
    cfg.MODEL.DEVICE = "cpu"
    path = _davit_release(tmp_path)
    with pytest.raises(CheckpointMismatchError, match=r"(?s)holds none of the model's backbone weights.*looks like a "
                                                      r"DaViT checkpoint.*configs/backbones/davit_tiny\.yaml.*"
                                                      r"MODEL.WEIGHTS_ALLOW_PARTIAL True"):
        DenseCheckpointer.from_config(cfg, build_model(cfg), save_dir="").load(path)
    cfg.MODEL.WEIGHTS_ALLOW_PARTIAL = True
    checkpointer = DenseCheckpointer.from_config(cfg, build_model(cfg), save_dir="")
    checkpointer.load(path)
    assert not [k for k in checkpointer.last_report.loaded if k.startswith("backbone.")]


def test_evaluation_needs_every_weight(tmp_path, tiny_cfg):
    """--eval-only (require_complete): a checkpoint that leaves a head uninitialised stops, naming the missing keys;
    training from it (the backbone loads) is the normal fine-tuning case and goes on."""
    model = build_model(tiny_cfg)
    sd = {k: v for k, v in model.state_dict().items() if k.startswith("backbone.")}
    path = str(tmp_path / "backbone_only.pth")
    torch.save({"model": sd}, path)
    DenseCheckpointer.from_config(tiny_cfg, build_model(tiny_cfg), save_dir="").load(path)
    with pytest.raises(CheckpointMismatchError, match=r"lacks \d+ of the model's weights: neck\."):
        DenseCheckpointer.from_config(tiny_cfg, build_model(tiny_cfg), save_dir="", require_complete=True).load(path)
