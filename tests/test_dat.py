"""DAT++ and the original DAT (CVPR 2022, LeapLabTHU/DAT@566a593, MODEL.DAT.VERSION "v1"): golden parity through
released-checkpoint loading, parameter counts and FLOPs against upstream and the papers, the released classification
keys, and the v1 window / deformable blocks against a transcription of upstream's LocalAttention /
ShiftWindowAttention / DAttentionBaseline at the pretraining size. (The Backbone contract, any input size included:
tests/test_backbone_contract.py.)"""
import json

import pytest
import torch
import torch.nn.functional as F

import dense.ops as ops
from dense.modeling import build_backbone
from dense.modeling.backbone.dat import DAT_VERSIONS, DeformableAttention, WindowAttention

from golden_utils import (backbone_config, check_golden_backbone, classification_checkpoint, classification_gflops,
                          model_from_config, param_count, stand_in_weights)
from shared_data import shared_file

HEAD_CFG = "configs/Base-SemanticFPN.yaml"


def _backends(op):
    return [b for b in ops.available_backends("cpu", op)]


@pytest.mark.parametrize("backend", _backends("na2d_qk"))
def test_dat_pp_tiny_golden(tmp_path, backend):
    with ops.use_backend(backend):
        check_golden_backbone(tmp_path, "dat_pp_tiny", "dat_pp_tiny.yaml", "dat_pp_tiny_seg.pth")


@pytest.mark.parametrize("variant,expected", [("tiny", 23_450_772), ("small", 52_359_710), ("base", 92_667_432)])
def test_dat_pp_param_counts(variant, expected):
    """The upstream dense backbones (LeapLabTHU/DAT-Segmentation DAT, incl. norms.0-3), as counted from the
    upstream constructors in tests/data/parity/golden/keys/dat_keys.json."""
    assert param_count(f"dat_pp_{variant}.yaml") == expected


@pytest.mark.parametrize("config,size,paper_gflops,classes", [
    ("dat_pp_tiny.yaml", 224, 4.3, 512), ("dat_pp_small.yaml", 224, 9.4, 768), ("dat_pp_base.yaml", 224, 16.6, 1024),
    ("dat_pp_base.yaml", 384, 49.7, 1024)])
def test_dat_pp_flops_match_paper(config, size, paper_gflops, classes):
    """Classification form (golden_utils.classification_gflops), within 3% of the paper."""
    gflops = classification_gflops(config, size, classes)
    assert abs(gflops - paper_gflops) / paper_gflops < 0.03, gflops


def test_dat_classification_checkpoint_loads_backbone_and_drops_classifier(tmp_path):
    """LeapLabTHU/DAT ImageNet files: {'model', 'optimizer', 'epoch', 'config': yacs CfgNode, ...}."""
    from yacs.config import CfgNode

    from dense.checkpoint import DenseCheckpointer

    table = json.load(open(shared_file("keys", "dat_keys.json")))["dat_pp_tiny"]["classification"]
    sd = classification_checkpoint(table, tmp_path / "dat_pp_tiny_in1k_224.pth",
                                    {"config": CfgNode({"MODEL": CfgNode({"TYPE": "dat"})}), "epoch": 299,
                                     "max_accuracy": 83.9, "optimizer": {}, "lr_scheduler": {}})
    model = model_from_config(HEAD_CFG, "configs/backbones/dat_pp_tiny.yaml")
    ck = DenseCheckpointer(model)
    ck.load(str(tmp_path / "dat_pp_tiny_in1k_224.pth"))
    r = ck.last_report
    assert r.converter == "DAT (classification)"
    assert set(r.dropped) == {"cls_head.weight", "cls_head.bias", "cls_norm.norm.weight", "cls_norm.norm.bias"}
    assert not r.unexpected and not r.mismatched
    assert {k for k in r.missing if k.startswith("backbone.")} == {f"backbone.norms.{i}.norm.{p}" for i in range(4)
                                                                    for p in ("weight", "bias")}
    assert torch.equal(model.backbone.stages[2].attns[3].rpe_table, sd["stages.2.attns.3.rpe_table"])



# ---- the original DAT (v1) ----

VARIANTS = ["tiny", "small", "base", "base_384"]
# (dense backbone incl. norms.0-3, classification model incl. cls_norm + cls_head) as counted from the upstream
# constructors (tests/data/parity/golden/keys/dat_keys.json: n_params_total); published 28M / 50M / 88M / 88M
COUNTS = {"tiny": (27_551_482, 28_319_138), "small": (48_932_746, 49_700_402), "base": (86_858_424, 87_881_632),
          "base_384": (87_155_064, 88_178_272)}


def _backbone(variant):
    cfg = backbone_config(f"dat_{variant}.yaml")
    return build_backbone(cfg), cfg


def _classifier_params(dim):  # cls_norm (LayerNorm) + cls_head (1000-way Linear)
    return 2 * dim + dim * 1000 + 1000


def _norms_params(bb):
    return sum(p.numel() for k, p in bb.named_parameters() if k.startswith("norms."))


@pytest.mark.parametrize("variant", VARIANTS)
def test_dat_v1_param_counts(variant):
    bb, cfg = _backbone(variant)
    n = sum(p.numel() for p in bb.parameters())
    assert n == COUNTS[variant][0]
    assert n - _norms_params(bb) + _classifier_params(cfg.MODEL.DAT.DIMS[-1]) == COUNTS[variant][1]


def _relative_position_index(ws):
    """Upstream LocalAttention's buffer, written as upstream does."""
    coords = torch.stack(torch.meshgrid([torch.arange(ws), torch.arange(ws)], indexing="ij"))
    flat = torch.flatten(coords, 1)
    rel = (flat[:, :, None] - flat[:, None, :]).permute(1, 2, 0).contiguous()
    rel[:, :, 0] += ws - 1
    rel[:, :, 1] += ws - 1
    rel[:, :, 0] *= 2 * ws - 1
    return rel.sum(-1)


@pytest.mark.parametrize("variant", VARIANTS)
def test_dat_v1_classification_checkpoint_loads(tmp_path, variant):
    """A stand-in of the released dat_{variant} ImageNet file ({'model': ...}, every key and shape of the upstream
    constructor, int64 relative_position_index with upstream's values) loads with nothing missing or unexpected
    but the dense output norms; the classifier is dropped and reported."""
    from dense.checkpoint import DenseCheckpointer

    table = json.load(open(shared_file("keys", "dat_keys.json")))[f"dat_{variant}"]["classification"]
    keys = {k: tuple(v) for k, v in table["keys"].items()}
    sd = stand_in_weights(keys, 5)
    ws = table["ctor"]["window_sizes"][0]
    for k, (shape, dtype) in keys.items():
        if dtype == "torch.int64":
            assert k.endswith("relative_position_index") and tuple(shape) == (ws * ws, ws * ws)
            sd[k] = _relative_position_index(ws)
    assert set(sd) == set(keys)
    torch.save({table["wrapper"]: sd, "epoch": 299, "optimizer": {}}, tmp_path / f"dat_{variant}.pth")
    model = model_from_config(HEAD_CFG, f"configs/backbones/dat_{variant}.yaml")
    ck = DenseCheckpointer(model)
    ck.load(str(tmp_path / f"dat_{variant}.pth"))
    r = ck.last_report
    assert r.converter == "DAT (classification)"
    assert set(r.dropped) == {"cls_head.weight", "cls_head.bias", "cls_norm.norm.weight", "cls_norm.norm.bias"}
    assert not r.unexpected and not r.mismatched, r.summary()
    assert {k for k in r.missing if k.startswith("backbone.")} == {f"backbone.norms.{i}.norm.{p}" for i in range(4)
                                                                    for p in ("weight", "bias")}
    assert len([k for k in r.loaded if k.startswith("backbone.")]) == len(keys) - 4
    bb = model.backbone
    assert torch.equal(bb.stages[2].attns[1].rpe_table, sd["stages.2.attns.1.rpe_table"])
    assert torch.equal(bb.stages[0].attns[1].relative_position_index, _relative_position_index(ws))
    # parameters: dense backbone - output norms + classifier = the upstream classification model
    n = sum(p.numel() for p in bb.parameters())
    assert n - _norms_params(bb) + _classifier_params(table["ctor"]["dims"][-1]) == table["n_params_total"]
    assert n - _norms_params(bb) == table["n_params_backbone"]
    with torch.no_grad():
        out = bb(torch.randn(1, 3, 64, 96))
    assert all(torch.isfinite(t).all() for t in out.values())


# ---- transcription of upstream's v1 blocks (LeapLabTHU/DAT@566a593 models/dat_blocks.py), for parity ----

def _upstream_local_attention(m, x, mask=None):
    B, C, H, W = x.shape
    ws, heads = m.window_size, m.heads
    r1, r2 = H // ws, W // ws
    t = x.reshape(B, C, r1, ws, r2, ws).permute(0, 2, 4, 3, 5, 1).reshape(B * r1 * r2, ws * ws, C)
    q, k, v = torch.chunk(m.proj_qkv(t), 3, dim=2)
    q = q * m.scale
    q, k, v = [u.reshape(u.shape[0], u.shape[1], heads, -1).permute(0, 2, 1, 3) for u in (q, k, v)]
    attn = torch.einsum("bhmc,bhnc->bhmn", q, k)
    bias = m.relative_position_bias_table[m.relative_position_index.view(-1)].view(ws * ws, ws * ws, -1)
    attn = attn + bias.permute(2, 0, 1).contiguous().unsqueeze(0)
    if mask is not None:
        nW, ww, _ = mask.shape
        attn = (attn.reshape(-1, nW, heads, ww, ww) + mask.reshape(1, nW, 1, ww, ww)).reshape(-1, heads, ww, ww)
    attn = attn.softmax(dim=3)
    out = torch.einsum("bhmn,bhnc->bhmc", attn, v).permute(0, 2, 1, 3).reshape(B * r1 * r2, ws * ws, C)
    out = m.proj_out(out)
    return out.reshape(B, r1, r2, ws, ws, C).permute(0, 5, 1, 3, 2, 4).reshape(B, C, H, W)


def _upstream_shift_window(m, x):
    s = m.shift
    y = _upstream_local_attention(m, torch.roll(x, shifts=(-s, -s), dims=(2, 3)), m.attn_mask)
    return torch.roll(y, shifts=(s, s), dims=(2, 3))


def _upstream_ref_points(h, w, n, dtype):
    ry, rx = torch.meshgrid(torch.linspace(0.5, h - 0.5, h, dtype=dtype), torch.linspace(0.5, w - 0.5, w, dtype=dtype),
                            indexing="ij")
    ref = torch.stack((ry, rx), -1)
    ref[..., 1].div_(w).mul_(2).sub_(1)
    ref[..., 0].div_(h).mul_(2).sub_(1)
    return ref[None].expand(n, -1, -1, -1)


def _upstream_dattention(m, x):
    B, C, H, W = x.shape
    G, gc, gh, hd = m.groups, m.group_channels, m.group_heads, m.head_dim
    q = m.proj_q(x)
    offset = m.conv_offset(q.reshape(B * G, gc, H, W))
    Hk, Wk = offset.shape[2:]
    ns = Hk * Wk
    offset = offset.tanh().mul(torch.tensor([1.0 / Hk, 1.0 / Wk]).reshape(1, 2, 1, 1)).mul(m.offset_range_factor)
    offset = offset.permute(0, 2, 3, 1)
    pos = offset + _upstream_ref_points(Hk, Wk, B * G, x.dtype)
    xs = F.grid_sample(x.reshape(B * G, gc, H, W), pos[..., (1, 0)], mode="bilinear", align_corners=True)
    xs = xs.reshape(B, C, 1, ns)
    q = q.reshape(B * m.heads, hd, H * W)
    k = m.proj_k(xs).reshape(B * m.heads, hd, ns)
    v = m.proj_v(xs).reshape(B * m.heads, hd, ns)
    attn = torch.einsum("bcm,bcn->bmn", q, k).mul(m.scale)
    rpe = m.rpe_table[None].expand(B, -1, -1, -1)
    q_grid = _upstream_ref_points(H, W, B * G, x.dtype)
    disp = (q_grid.reshape(B * G, H * W, 2).unsqueeze(2) - pos.reshape(B * G, ns, 2).unsqueeze(1)).mul(0.5)
    bias = F.grid_sample(rpe.reshape(B * G, gh, 2 * H - 1, 2 * W - 1), disp[..., (1, 0)], mode="bilinear",
                         align_corners=True)
    attn = (attn + bias.reshape(B * m.heads, H * W, ns)).softmax(dim=2)
    out = torch.einsum("bmn,bcn->bcm", attn, v).reshape(B, C, H, W)
    return m.proj_out(out)


def _randomise(m):
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in m.parameters():
            p.copy_(0.2 * torch.randn(p.shape, generator=g))


def test_dat_v1_window_blocks_match_upstream():
    torch.manual_seed(0)
    local, shifted = WindowAttention(96, 3, 7), WindowAttention(96, 3, 7, shift=4, fmap_size=28)
    for m in (local, shifted):
        _randomise(m)
    x = torch.randn(2, 96, 28, 28)
    with torch.no_grad():
        torch.testing.assert_close(local(x), _upstream_local_attention(local, x), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(shifted(x), _upstream_shift_window(shifted, x), rtol=1e-5, atol=1e-5)
        # other sizes: padded to the window and cropped back; the padded result's valid part is what is returned
        # (upstream built for a 21x21 map, with the same weights)
        up21 = WindowAttention(96, 3, 7, shift=4, fmap_size=21)
        up21.load_state_dict({k: v for k, v in shifted.state_dict().items() if k != "attn_mask"}, strict=False)
        y = torch.randn(1, 96, 17, 19)
        ref = _upstream_shift_window(up21, F.pad(y, (0, 2, 0, 4)))[..., :17, :19]
        torch.testing.assert_close(shifted(y), ref, rtol=1e-5, atol=1e-5)


def _upstream_shift_mask(fmap, ws, shift):
    """Upstream ShiftWindowAttention's attn_mask buffer (dat_blocks.py:102-117), written as upstream does."""
    img = torch.zeros(fmap, fmap)
    cnt = 0
    for h in (slice(0, -ws), slice(-ws, -shift), slice(-shift, None)):
        for w in (slice(0, -ws), slice(-ws, -shift), slice(-shift, None)):
            img[h, w] = cnt
            cnt += 1
    win = img.reshape(fmap // ws, ws, fmap // ws, ws).permute(0, 2, 1, 3).reshape(-1, ws * ws)
    mask = win.unsqueeze(1) - win.unsqueeze(2)
    return mask.masked_fill(mask != 0, -100.0).masked_fill(mask == 0, 0.0)


@pytest.mark.parametrize("variant", ["tiny", "base_384"])
def test_dat_v1_shifted_blocks_shift_by_half_window_rounded_up(variant):
    """Upstream's TransformerStage builds "S" with shift_size = math.ceil(window_size / 2) (models/dat.py:61): 4 for
    window 7 (not Swin's 7 // 2 = 3; the DAT-T golden differs by 0.1 in features with 3), 6 for window 12. The
    attn_mask buffers equal upstream's at the pretraining size, and each "S" block equals upstream's form there."""
    bb, cfg = _backbone(variant)
    ws, size = cfg.MODEL.DAT.WINDOW_SIZE, cfg.MODEL.DAT.IMG_SIZE
    shift = {7: 4, 12: 6}[ws]
    blocks = [(i, a) for i, st in enumerate(bb.stages) for kind, a in zip(st.spec, st.attns) if kind == "S"]
    assert blocks
    for i, m in blocks:
        fmap = size // 4 // 2**i
        assert m.shift == shift
        assert torch.equal(m.attn_mask, _upstream_shift_mask(fmap, ws, shift))
    if variant == "tiny":
        i, m = blocks[0]
        _randomise(m)
        x = torch.randn(1, m.proj_out.in_features, size // 4 // 2**i, size // 4 // 2**i)
        with torch.no_grad():
            torch.testing.assert_close(m(x), _upstream_shift_window(m, x), rtol=1e-5, atol=1e-5)


def test_dat_v1_deformable_attention_matches_upstream():
    m = DeformableAttention(384, 12, 3, q_size=14, stride=1, ksize=5, offset_range_factor=2,
                            design=DAT_VERSIONS["v1"]).eval()
    _randomise(m)
    x = torch.randn(2, 384, 14, 14)
    with torch.no_grad():
        torch.testing.assert_close(m(x), _upstream_dattention(m, x), rtol=1e-5, atol=1e-5)
        # another size: the bias table is resized bicubically to (2H-1, 2W-1), as issue #7 advises
        y = torch.randn(1, 384, 9, 20)
        out = m(y)
        table = m.rpe_table
        m.rpe_table = torch.nn.Parameter(F.interpolate(table[None], size=(17, 39), mode="bicubic",
                                                       align_corners=False)[0])
        torch.testing.assert_close(out, _upstream_dattention(m, y), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("variant,size,paper_gflops,classes", [
    ("tiny", 224, 4.6, 768), ("small", 224, 9.0, 768), ("base", 224, 15.8, 1024), ("base_384", 384, 49.8, 1024)])
def test_dat_v1_flops_match_paper(variant, size, paper_gflops, classes):
    """Classification form (golden_utils.classification_gflops), within 1% of the paper; measured 4.59 / 9.01 /
    15.79 / 49.78 G."""
    gflops = classification_gflops(f"dat_{variant}.yaml", size, classes)
    assert abs(gflops - paper_gflops) / paper_gflops < 0.01, gflops
