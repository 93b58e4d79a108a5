"""DSAN: golden parity through released-checkpoint loading (outputs and DSCN-sensitive inner modules), the
released variants' key tables and parameter counts, any input size, the DSCN offset gradient at DSAN's stage-3
group widths, and every released checkpoint format (incl. the S file with 2 stage-1 offset groups)."""
import argparse
import json
import os
import sys

import pytest
import torch
from torch import nn
from torch.autograd import gradcheck

import dense.ops as ops
from dense.checkpoint import CheckpointMismatchError, DenseCheckpointer
from dense.config import get_cfg
from dense.modeling import build_backbone
from dense.modeling.backbone.dsan import DSCNPair

from conftest import REPO
from shared_data import shared_file
from golden_utils import (assert_matches, load_golden, load_released, model_from_config, released_checkpoint,
                          stand_in_weights)

HEAD_CFG = "configs/Base-SemanticFPN.yaml"
# (config, dsan_keys.json variant, dense-form table) for every released variant
VARIANTS = [("dsan_t.yaml", "dsan_t", "dense"), ("dsan_t2.yaml", "dsan_t2", "dense_derived_no_upstream_config"),
            ("dsan_s.yaml", "dsan_s", "dense"),
            ("dsan_s_ade20k_160k.yaml", "dsan_s", "dense_ade20k_160k_groups_2_8_16_16")]


def _table(variant: str, form: str) -> dict:
    return json.load(open(shared_file("keys", "dsan_keys.json")))["variants"][variant][form]


def _backbone(config: str, opts=()):
    cfg = get_cfg()
    cfg.merge_from_file(os.path.join(REPO, "configs", "backbones", config))
    cfg.merge_from_list(list(opts))
    return build_backbone(cfg).eval()


def _weights(table: dict, seed: int = 3, head: bool = True) -> dict:
    """Stand-in weights for a key table, without its prefix (``head.*`` dropped unless ``head``)."""
    sd = stand_in_weights({k: tuple(v) for k, v in table["keys"].items()}, seed)
    sd = {k[len(table["prefix"]):]: v for k, v in sd.items()}
    return {k: v for k, v in sd.items() if head or not k.startswith("head.")}


# ------------------------------------------------------------------------------------------- golden parity
@pytest.mark.parametrize("backend", ops.available_backends("cpu", "dscn"))
def test_dsan_t_golden(tmp_path, backend):
    """The authors' dense DSAN-T (stand-in weights in the mmseg layout) through DenseCheckpointer: res2..res5
    and, via forward hooks on upstream's module names, each stage's first dscn_x / dscn_y / gating unit, which
    (unlike res*) change far beyond tolerance when the DSCN offsets are wrong (golden notes)."""
    g = load_golden("dsan_t")
    keys = released_checkpoint(g, str(tmp_path / "dsan_t_ade20k.pth"))
    model = model_from_config(HEAD_CFG, "configs/backbones/dsan_t.yaml")
    load_released(model, str(tmp_path / "dsan_t_ade20k.pth"), keys)
    aux = {}
    for name in g["aux_outputs"]:
        model.backbone.get_submodule(name).register_forward_hook(lambda m, i, o, name=name: aux.__setitem__(name, o))
    with torch.no_grad(), ops.use_backend(backend):
        out = model.backbone(g["input"])
    assert_matches(out, g)
    assert_matches(aux, g, "aux_atol", "aux_rtol", "aux_outputs")


# ------------------------------------------------------------------------------- variants, shapes, sizes
@pytest.mark.parametrize("config,variant,form", VARIANTS)
def test_param_counts_equal_upstream(config, variant, form):
    expected = {"dsan_t.yaml": 4_227_706, "dsan_t2.yaml": 5_780_440, "dsan_s.yaml": 19_367_248,
                "dsan_s_ade20k_160k.yaml": 19_359_448}
    assert sum(p.numel() for p in _backbone(config).parameters()) == expected[config]


@pytest.mark.parametrize("config,variant,form", VARIANTS)
def test_released_variants_key_tables_and_param_counts(config, variant, form):
    """Every key and shape of the released dense checkpoints (dsan_keys.json), and upstream's parameter count
    (T 4,227,706; T2 5,780,440; S 19,367,248; S with 2 stage-1 groups 19,359,448)."""
    table = _table(variant, form)
    bb = _backbone(config)
    got = {k: list(v.shape) for k, v in bb.state_dict().items()}
    assert got == {k[len(table["prefix"]):]: shape for k, (shape, _) in table["keys"].items()}
    assert sum(p.numel() for p in bb.parameters()) == table["params"]
    cls = _table(variant, "classification")
    if form != "dense_ade20k_160k_groups_2_8_16_16":
        assert table["params"] == cls["params_without_head"]


def test_config():
    """(Shapes at any size: tests/test_backbone_contract.py.)"""
    bb = _backbone("dsan_t.yaml")
    assert {n: (s.channels, s.stride) for n, s in bb.output_shape().items()} == {
        "res2": (32, 4), "res3": (64, 8), "res4": (160, 16), "res5": (256, 32)}
    assert type(bb.block1[0].norm1) is nn.BatchNorm2d  # SyncBN on one process is plain BN
    assert bb.norm1.eps == 1e-5 and _backbone("dsan_t.yaml", ["MODEL.DSAN.NORM_EPS", 1e-6]).norm4.eps == 1e-6


def test_bad_configs_name_the_key():
    with pytest.raises(ValueError, match="MODEL.DSAN.KERNEL_SIZES .* must be odd"):
        _backbone("dsan_t.yaml", ["MODEL.DSAN.KERNEL_SIZES", [11, 11, 8, 5]])
    with pytest.raises(ValueError, match="MODEL.DSAN.GROUPS .* must divide"):
        _backbone("dsan_t.yaml", ["MODEL.DSAN.GROUPS", [3, 4, 8, 8]])
    with pytest.raises(ValueError, match="MODEL.DSAN.DEPTHS .* one entry per stage"):
        _backbone("dsan_t.yaml", ["MODEL.DSAN.DEPTHS", [3, 3, 5]])


def test_activation_checkpointing_gives_the_same_gradients():
    opts = ["MODEL.DSAN.EMBED_DIMS", [8, 16, 24, 32], "MODEL.DSAN.DEPTHS", [1, 1, 2, 1], "MODEL.DSAN.GROUPS",
            [1, 2, 2, 4], "MODEL.DSAN.DROP_PATH_RATE", 0.0, "MODEL.DSAN.NORM", "BN"]
    torch.manual_seed(0)
    plain = _backbone("dsan_t.yaml", opts).train()
    ckpt = _backbone("dsan_t.yaml", opts + ["MODEL.DSAN.USE_CHECKPOINT", True]).train()
    ckpt.load_state_dict(plain.state_dict())
    x = torch.randn(2, 3, 37, 50)
    for m in (plain, ckpt):
        sum(t.square().mean() for t in m(x).values()).backward()
    for (name, a), b in zip(plain.named_parameters(), ckpt.parameters()):
        torch.testing.assert_close(a.grad, b.grad, msg=name)


# ------------------------------------------------------------------------ DSCN gradient at stage-3 sizes
class _UpstreamCudaBackward(torch.autograd.Function):
    """DSCN whose offset gradient lacks channel 0 of every group, as upstream's CUDA backward computes it for
    group widths that are not a power of two (< 64): the failure the gradcheck below must catch."""

    @staticmethod
    def forward(ctx, x, offset, *args):
        ctx.args = args
        ctx.save_for_backward(x, offset)
        return ops.dscn(x, offset, *args)

    @staticmethod
    def backward(ctx, grad):
        x, offset = (t.detach().requires_grad_() for t in ctx.saved_tensors)
        group, group_channels = ctx.args[8], ctx.args[9]
        with torch.enable_grad():
            out = ops.dscn(x, offset, *ctx.args)
            grad_x, = torch.autograd.grad(out, x, grad, retain_graph=True)
            no_channel_0 = grad.unflatten(-1, (group, group_channels)).clone()
            no_channel_0[..., 0] = 0
            grad_offset, = torch.autograd.grad(out, offset, no_channel_0.flatten(-2))
        return (grad_x, grad_offset, *([None] * len(ctx.args)))


def _directional_derivatives(fn, x, a, u, v, eps=1e-6):
    """v . (d fn / d a) u: by central differences, and from the backward pass."""
    with torch.no_grad():
        numerical = (v * (fn(x, a + eps * u) - fn(x, a - eps * u))).sum() / (2 * eps)
    grad, = torch.autograd.grad(fn(x, a), a, v)
    return numerical.item(), (grad * u).sum().item()


@pytest.mark.parametrize("backend", ops.available_backends("cpu", "dscn"))
@pytest.mark.parametrize("variant,channels,kernel,groups", [("T/S", 160, 7, 8), ("T2", 160, 13, 16)])
def test_stage3_dscn_pair_gradcheck(monkeypatch, backend, variant, channels, kernel, groups):
    """gradcheck (float64, fast mode, 14 x 14 = stage 3 of a 224 input) of a stage-3 dscn_x -> dscn_y pair with
    respect to its input and to the map its offsets are predicted from, at group width 20 (T, S) and 10 (T2),
    where upstream's CUDA backward drops channel 0 of the offset gradient. The gradient with respect to the
    offset map flows only through the offsets; with upstream's offset gradient substituted it misses the
    finite differences by far more than gradcheck's tolerance."""
    torch.manual_seed(0)
    unit = DSCNPair(channels, kernel, kernel, groups).double()
    for m in (unit.dscn_x.offset, unit.dscn_y.offset):  # fractional offsets of a few px
        nn.init.normal_(m.weight, std=0.1)
        nn.init.uniform_(m.bias, -1.0, 1.0)
    pair = lambda x, a: unit.dscn_y(unit.dscn_x(x, a), a)  # noqa: E731
    x = torch.randn(1, 14, 14, channels, dtype=torch.float64, requires_grad=True)
    a = torch.randn(1, channels, 14, 14, dtype=torch.float64, requires_grad=True)
    # fast mode scales atol by sum(u) * sum(v) (~2e4 here): 1e-10 keeps the check at ~1e-4 relative
    with ops.use_backend(backend):
        assert gradcheck(pair, (x, a), eps=1e-6, atol=1e-10, rtol=1e-4, fast_mode=True)
        u, v = torch.rand_like(a), torch.rand(1, 14, 14, channels, dtype=torch.float64)
        numerical, dense = _directional_derivatives(pair, x, a, u, v)
        monkeypatch.setattr(sys.modules["dense.ops.dscn"], "dscn",
                            lambda x, offset, *args: _UpstreamCudaBackward.apply(x, offset, *args))
        _, upstream = _directional_derivatives(pair, x, a, u, v)
    assert abs(dense - numerical) < 1e-6 * abs(numerical)
    assert abs(upstream - numerical) > 1e-2 * abs(numerical), (upstream, numerical)


# ------------------------------------------------------------------------------------ released formats
def test_classification_checkpoint_loads_backbone_and_drops_head(tmp_path):
    """dsan_t.pth.tar as timm's CheckpointSaver writes it (argparse Namespace included), into a full model."""
    table = _table("dsan_t", "classification")
    sd = _weights(table)
    path = tmp_path / "dsan_t.pth.tar"
    torch.save({"epoch": 299, "arch": "dsan_t", "state_dict": sd, "optimizer": {}, "version": 2,
                "args": argparse.Namespace(model="dsan_t", lr=1e-3, drop_path=0.1), "metric": 76.4}, path)
    model = model_from_config(HEAD_CFG, "configs/backbones/dsan_t.yaml")
    ck = DenseCheckpointer(model)
    ck.load(str(path))
    r = ck.last_report
    assert r.converter == "DSAN (classification)"
    assert set(r.dropped) == {"head.weight", "head.bias"} and "classifier" in r.dropped["head.weight"]
    assert not r.unexpected and not r.mismatched
    assert all(k.startswith(("sem_seg_head.", "neck.")) for k in r.missing)
    assert len(r.loaded) == len(sd) - 2
    w = "block3.4.attn.spatial_gating_unit.dscn_x.offset.weight"
    assert torch.equal(model.backbone.get_parameter(w), sd[w])


@pytest.mark.parametrize("into", ["model", "backbone"])
def test_encoder_checkpoint_loads_every_key(tmp_path, into):
    """dsan_t_encoder.pth (the classification state dict minus head, bare): into a full model (converted,
    prefixed) and into a bare backbone (already dense's names)."""
    sd = _weights(_table("dsan_t", "classification"), head=False)
    torch.save(sd, tmp_path / "dsan_t_encoder.pth")
    model = model_from_config(HEAD_CFG, "configs/backbones/dsan_t.yaml")
    target = model if into == "model" else model.backbone
    ck = DenseCheckpointer(target)
    ck.load(str(tmp_path / "dsan_t_encoder.pth"))
    r = ck.last_report
    assert r.converter == ("DSAN (classification)" if into == "model" else None)
    assert not r.dropped and not r.unexpected and not r.mismatched
    assert len(r.loaded) == len(sd) and not [k for k in r.missing if not k.startswith(("sem_seg_head.", "neck."))]


def test_mmseg_checkpoint_reports_its_head(tmp_path):
    """A released mmseg file (LightHamHead decode_head.*) into a bare backbone: backbone loaded, head dropped
    with the reason; into a full model the head keys are reported (Ham head: a later issue)."""
    sd = {"backbone." + k: v for k, v in _weights(_table("dsan_t", "dense")).items()}
    head = {"decode_head.squeeze.conv.weight": torch.zeros(256, 480, 1, 1),
            "decode_head.hamburger.ham_in.conv.weight": torch.zeros(256, 256, 1, 1),
            "decode_head.align.conv.weight": torch.zeros(256, 256, 1, 1)}
    torch.save({"meta": {"mmseg_version": "0.26.0"}, "state_dict": {**sd, **head}, "optimizer": {}},
               tmp_path / "ham_dsan_t.pth")
    model = model_from_config(HEAD_CFG, "configs/backbones/dsan_t.yaml")
    ck = DenseCheckpointer(model.backbone)
    ck.load(str(tmp_path / "ham_dsan_t.pth"))
    r = ck.last_report
    assert r.converter == "DSAN (mmcv)" and set(r.dropped) == set(head)
    assert len(r.loaded) == len(sd) and not r.missing and not r.unexpected
    ck = DenseCheckpointer(model)
    ck.load(str(tmp_path / "ham_dsan_t.pth"))
    assert set(ck.last_report.unexpected) == {"sem_seg_head." + k[len("decode_head."):] for k in head}


def test_groups_2_checkpoint_needs_its_config(tmp_path):
    """The S ADE20K 160k file (stage-1 offset groups 2) fails in the default S config with the
    MODEL.DSAN.GROUPS that fits, and loads in dsan_s_ade20k_160k.yaml; the 4-group ImageNet S weights fail
    there the other way round and, with WEIGHTS_SKIP_MISMATCH, initialise it as upstream did (the stage-1
    offset layers left out)."""
    g2 = {"backbone." + k: v for k, v in _weights(_table("dsan_s", "dense_ade20k_160k_groups_2_8_16_16")).items()}
    torch.save({"meta": {}, "state_dict": g2}, tmp_path / "ham_dsan_s_ade20k_160k.pth")
    with pytest.raises(CheckpointMismatchError, match=r"set MODEL.DSAN.GROUPS \[2, 8, 16, 16\]") as e:
        DenseCheckpointer(_backbone("dsan_s.yaml")).load(str(tmp_path / "ham_dsan_s_ade20k_160k.pth"))
    assert "stage 1: 2 groups x 15 kernel points" in str(e.value)
    bb = _backbone("dsan_s_ade20k_160k.yaml")
    ck = DenseCheckpointer(bb)
    ck.load(str(tmp_path / "ham_dsan_s_ade20k_160k.pth"))
    assert len(ck.last_report.loaded) == len(g2) and not ck.last_report.missing

    torch.save(_weights(_table("dsan_s", "classification"), head=False), tmp_path / "dsan_s_encoder.pth")
    with pytest.raises(CheckpointMismatchError, match=r"set MODEL.DSAN.GROUPS \[4, 8, 16, 16\]"):
        DenseCheckpointer(bb).load(str(tmp_path / "dsan_s_encoder.pth"))
    ck = DenseCheckpointer(bb, skip_mismatch=True)
    ck.load(str(tmp_path / "dsan_s_encoder.pth"))
    assert {k.split(".")[0] for k, _, _ in ck.last_report.mismatched} == {"block1"}
    assert len(ck.last_report.mismatched) == 2 * 2 * 2  # 2 blocks x dscn_{x,y} x offset.{weight,bias}


def test_other_variants_checkpoint_gets_no_groups_hint(tmp_path):
    """A T checkpoint in the T2 config is a wrong variant, not a groups setting: the generic error only."""
    torch.save(_weights(_table("dsan_t", "classification"), head=False), tmp_path / "dsan_t_encoder.pth")
    with pytest.raises(CheckpointMismatchError) as e:
        DenseCheckpointer(_backbone("dsan_t2.yaml")).load(str(tmp_path / "dsan_t_encoder.pth"))
    assert "check the backbone variant" in str(e.value) and "MODEL.DSAN.GROUPS" not in str(e.value)
