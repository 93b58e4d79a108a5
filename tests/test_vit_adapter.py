"""ViT-Adapter: golden parity through released-checkpoint loading, parameter counts and key tables of every
released variant, any input size, relative position tables, ImageNet and mmseg checkpoint conversion."""
import functools
import json
import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import dense.ops as ops
from dense.checkpoint import DenseCheckpointer
from dense.config import get_cfg
from dense.modeling import build_backbone
from dense.modeling.backbone.beit_rel_pos import _geometric_nodes, rel_pos_resample_matrix, resize_rel_pos_table
from dense.modeling.backbone.vit_adapter import BEiTAttention, ViTAdapter

from conftest import REPO
from shared_data import shared_file
from golden_utils import (assert_matches, load_golden, load_released, model_from_config, released_checkpoint,
                          stand_in_weights)

N_PARAMS = {  # upstream backbones built with each released config (tests/data/parity/golden/keys/vit_adapter_keys.json)
    "vit_adapter_tiny": 7966640, "vit_adapter_small": 27503888, "vit_adapter_base": 99495392,
    "vit_adapter_base_augreg384": 99787232, "vit_adapter_large_augreg384": 326973632,
    "vit_adapter_base_light": 91394432, "beit_adapter_base_512": 99907616, "beit_adapter_base_480": 99837344,
    "beit_adapter_large_640": 328756928, "beit_adapter_large_896": 331091648, "beit_adapter_large_512": 327884480,
    "beit_adapter_large_480": 327697088, "det_vit_adapter_tiny": 7966640, "det_vit_adapter_small": 27503888,
    "det_vit_adapter_base": 99495392, "det_vit_adapter_large_augreg384": 326973632,
    "det_beit_adapter_large_htcpp": 327380032,
}


@functools.lru_cache
def _keys() -> dict:
    """The released key tables (skips the calling test when the shared data is absent)."""
    return json.load(open(shared_file("keys", "vit_adapter_keys.json")))
HEAD_CFG = "configs/Base-SemanticFPN.yaml"
# released variant (vit_adapter_keys.json "dense") -> dense config
VARIANTS = {
    "vit_adapter_tiny": "vit_adapter_tiny_deit", "vit_adapter_small": "vit_adapter_small_deit",
    "vit_adapter_base": "vit_adapter_base_deit", "vit_adapter_base_light": "vit_adapter_base_deit_light",
    "vit_adapter_base_augreg384": "vit_adapter_base_augreg_384",
    "vit_adapter_large_augreg384": "vit_adapter_large_augreg_384",
    "beit_adapter_base_480": "vit_adapter_base_beit_480", "beit_adapter_base_512": "vit_adapter_base_beit_512",
    "beit_adapter_large_480": "vit_adapter_large_beit_480", "beit_adapter_large_512": "vit_adapter_large_beit_512",
    "beit_adapter_large_640": "vit_adapter_large_beit_640", "beit_adapter_large_896": "vit_adapter_large_beit_896",
    "det_vit_adapter_tiny": "vit_adapter_tiny_deit_det", "det_vit_adapter_small": "vit_adapter_small_deit_det",
    "det_vit_adapter_base": "vit_adapter_base_deit_det",
    "det_vit_adapter_large_augreg384": "vit_adapter_large_augreg_384_det",
    "det_beit_adapter_large_htcpp": "vit_adapter_large_beit_det",
}
# a small BEiT adapter (segmentation form, 128 x 128 crops = 8 x 8 tokens) for the run-time table tests
SMALL_BEIT = ["MODEL.VIT_ADAPTER.EMBED_DIM", 96, "MODEL.VIT_ADAPTER.DEPTH", 4, "MODEL.VIT_ADAPTER.NUM_HEADS", 3,
              "MODEL.VIT_ADAPTER.DEFORM_NUM_HEADS", 3, "MODEL.VIT_ADAPTER.IMG_SIZE", 128,
              "MODEL.VIT_ADAPTER.INTERACTION_INDEXES", [[0, 0], [1, 1], [2, 2], [3, 3]]]


def _cfg(config, opts=()):
    cfg = get_cfg()
    cfg.merge_from_file(os.path.join(REPO, "configs", "backbones", f"{config}.yaml"))
    cfg.merge_from_list(list(opts))
    return cfg


@pytest.fixture(scope="module")
def golden_tiny(tmp_path_factory):
    """The authors' ViT-Adapter-T (segmentation form) golden file and a dense model built from the config, loaded
    from the golden weights written as a released mmseg checkpoint (every key must load)."""
    g = load_golden("vit_adapter_tiny")
    path = str(tmp_path_factory.mktemp("golden") / "upernet_deit_adapter_tiny.pth")
    keys = released_checkpoint(g, path)
    model = model_from_config(HEAD_CFG, "configs/backbones/vit_adapter_tiny_deit.yaml")
    load_released(model, path, keys)
    return g, model


@pytest.mark.parametrize("backend", ops.available_backends("cpu", "ms_deform_attn"))
def test_vit_adapter_tiny_golden(golden_tiny, backend):
    """Features equal tests/data/parity/golden/vit_adapter_tiny.pt through each MSDeformAttn backend."""
    g, model = golden_tiny
    with torch.no_grad(), ops.use_backend(backend):
        out = model.backbone(g["input"])
    assert_matches(out, g)


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_param_counts_equal_upstream(variant):
    with torch.device("meta"):
        bb = build_backbone(_cfg(VARIANTS[variant]))
    assert sum(p.numel() for p in bb.parameters()) == N_PARAMS[variant]


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_param_counts_and_keys_equal_upstream(variant):
    """Parameters (total, ViT part, adapter part) and state-dict keys/shapes equal the upstream backbone built
    with the released config; the only upstream keys dense lacks are BEiT's relative_position_index buffers."""
    table = _keys()["dense"][variant]
    with torch.device("meta"):
        bb = build_backbone(_cfg(VARIANTS[variant]))
    vit = ("patch_embed.", "pos_embed", "cls_token", "blocks.")
    params = dict(bb.named_parameters())
    assert sum(p.numel() for p in params.values()) == table["n_params"]
    assert sum(p.numel() for k, p in params.items() if k.startswith(vit)) == table["n_params_vit_part"]
    ours = {k: list(v.shape) for k, v in bb.state_dict().items()}
    upstream = {k: shape for k, (shape, _) in table["keys"].items() if not k.endswith("relative_position_index")}
    assert ours == upstream


def test_deit_adapter_pads_inside():
    """Segmentation and detection (windowed) DeiT adapters pad any size to a multiple of 32 inside: the outputs equal
    those of the input zero-padded (bottom/right) by the caller, cropped to ceil(H/s) x ceil(W/s). (Shapes at any
    size: tests/test_backbone_contract.py.)"""
    cases = [("vit_adapter_tiny_deit", [(40, 33)]), ("vit_adapter_tiny_deit_det", [(75, 230)])]
    for config, sizes in cases:
        bb = build_backbone(_cfg(config, ["MODEL.VIT_ADAPTER.NORM", "BN"])).eval()
        for h, w in sizes:
            x = torch.randn(1, 3, h, w)
            with torch.no_grad():
                out, padded = bb(x), bb(F.pad(x, (0, -w % 32, 0, -h % 32)))
            for name, s in zip(["res2", "res3", "res4", "res5"], [4, 8, 16, 32]):
                assert torch.equal(out[name], padded[name][..., : -(-h // s), : -(-w // s)]), (config, h, w, name)


def test_beit_adapter_other_sizes_resample_tables():
    """A BEiT adapter trained on 128 x 128 crops runs at other sizes: the whole-image tables are resampled to
    the token grid (cropped when smaller, BEiT's geometric-progression spline when larger)."""
    bb = build_backbone(_cfg("vit_adapter_base_beit_512", SMALL_BEIT + ["MODEL.VIT_ADAPTER.NORM", "BN"])).eval()
    for h, w in [(128, 128), (96, 200), (176, 208)]:
        with torch.no_grad():
            out = bb(torch.randn(1, 3, h, w))
        for name, s in zip(["res2", "res3", "res4", "res5"], [4, 8, 16, 32]):
            assert out[name].shape == (1, 96, -(-h // s), -(-w // s)) and torch.isfinite(out[name]).all()


def test_beit_bias_at_other_grids():
    """Bias semantics: at the training grid the table is read as upstream reads it; a smaller grid sees exactly
    the trained biases of its displacements; a larger one keeps displacement 0 and the cls entries."""
    torch.manual_seed(0)
    attn = BEiTAttention(32, num_heads=2, grid=8, windowed=False)
    with torch.no_grad():
        attn.relative_position_bias_table.normal_()
    table = attn.relative_position_bias_table.detach()
    full = attn._bias(8, 8).detach()  # [heads, 65, 65], token 0 = cls
    # upstream's index: (dy + 7) * 15 + (dx + 7); cls->token, token->cls, cls->cls = the last 3 rows
    assert torch.equal(full[:, 1 + 2 * 8 + 3, 1 + 5 * 8 + 1], table[(2 - 5 + 7) * 15 + (3 - 1 + 7)])
    assert torch.equal(full[:, 0, 5], table[-3]) and torch.equal(full[:, 5, 0], table[-2])
    assert torch.equal(full[:, 0, 0], table[-1])
    small = attn._bias(3, 5).detach()
    ids = torch.tensor([0] + [1 + y * 8 + x for y in range(3) for x in range(5)])  # the same tokens on the 8 x 8 grid
    assert torch.equal(small, full[:, ids][:, :, ids])
    large = attn._bias(12, 10).detach()
    assert torch.allclose(large[:, 1, 1], table[7 * 15 + 7], atol=1e-6)  # displacement (0, 0)
    assert torch.equal(large[:, 0, 0], table[-1]) and large.shape == (2, 121, 121)


def test_rel_pos_table_resampling_matches_scipy():
    """The torch cubic spline equals SciPy's RectBivariateSpline(kx=3, ky=3) (= the interp2d(kind='cubic')
    upstream used) on BEiT's geometric-progression grid, for the released resolutions."""
    from scipy.interpolate import RectBivariateSpline

    rng = np.random.RandomState(0)
    for src, dst in [(27, 59), (27, 63), (27, 79), (27, 111), (63, 79)]:  # 224 -> 480 / 512 / 640 / 896, 512 -> 640
        nodes = _geometric_nodes(src, dst)
        targets = np.arange(-(dst // 2), dst // 2 + 1, dtype=np.float64)
        z = rng.randn(src, src)
        expected = RectBivariateSpline(nodes, nodes, z, kx=3, ky=3, s=0)(targets, targets)
        m = rel_pos_resample_matrix(src, dst)
        got = (m @ torch.from_numpy(z) @ m.T).numpy()
        assert np.abs(got - expected).max() < 1e-10, (src, dst)
        assert abs(nodes[-1] - dst // 2) < 1e-3  # the stretched grid reaches the new table's edge


def test_resize_rel_pos_table_keeps_or_drops_cls_entries():
    table = torch.randn(27 * 27 + 3, 4)  # an ImageNet BEiT table (224 crops)
    seg = resize_rel_pos_table(table, 63 * 63 + 3)  # segmentation at 512
    assert seg.shape == (63 * 63 + 3, 4) and torch.equal(seg[-3:], table[-3:])
    assert torch.allclose(seg[31 * 63 + 31], table[13 * 27 + 13], atol=1e-6)  # displacement (0, 0)
    assert torch.equal(resize_rel_pos_table(table, 27 * 27), table[:-3])  # 14 x 14 detection windows
    assert resize_rel_pos_table(table, 111 * 111).shape == (111 * 111, 4)  # 56 x 56 detection windows
    with pytest.raises(ValueError, match="class-token"):
        resize_rel_pos_table(table[:-3], 63 * 63 + 3)


def _classification_checkpoint(name, path, keep=None):
    """Stand-in ImageNet checkpoint with the released key table (integer buffers as zeros)."""
    table = _keys()["classification"][name]
    keys = {k: v for k, v in table["keys"].items() if keep is None or keep(k)}
    sd = stand_in_weights({k: tuple(v) for k, v in keys.items()}, 3)
    sd.update({k: torch.zeros(shape, dtype=torch.long) for k, (shape, dt) in keys.items() if dt == "torch.int64"})
    torch.save({"model": sd} if table["wrapper"] == "model" else sd, path)
    return sd


@pytest.mark.parametrize("config,checkpoint", [("vit_adapter_tiny_deit", "deit_tiny"),
                                               ("vit_adapter_tiny_augreg", "augreg_tiny_224")])
def test_deit_augreg_imagenet_checkpoint(tmp_path, config, checkpoint):
    """DeiT ({'model'}) and AugReg (bare) ImageNet weights fill the ViT; the class token, final norm and head are
    dropped, the layer scales gamma1/gamma2 (absent) stay at 1.0, the adapter is left at initialisation."""
    sd = _classification_checkpoint(checkpoint, tmp_path / "in1k.pth")
    model = model_from_config(HEAD_CFG, f"configs/backbones/{config}.yaml")
    ck = DenseCheckpointer(model)
    ck.load(str(tmp_path / "in1k.pth"))
    r = ck.last_report
    assert r.converter == "ViTAdapter (classification)"
    assert set(r.dropped) == {"cls_token", "norm.weight", "norm.bias", "head.weight", "head.bias"}
    assert not r.unexpected and not r.mismatched
    missing = {k[len("backbone."):] for k in r.missing if k.startswith("backbone.")}
    gammas = {f"blocks.{i}.gamma{j}" for i in range(12) for j in (1, 2)}
    assert {k for k in missing if k.startswith("blocks.")} == gammas
    assert {k.split(".")[0] for k in missing} == {"blocks", "level_embed", "spm", "interactions", "up", "norm1",
                                                  "norm2", "norm3", "norm4"}
    bb = model.backbone
    assert torch.equal(bb.blocks[7].attn.qkv.weight, sd["blocks.7.attn.qkv.weight"])
    assert torch.equal(bb.pos_embed, sd["pos_embed"])
    assert all(torch.equal(b.gamma1, torch.ones(192)) for b in bb.blocks)


BEIT_DEPTH = 4  # BEiT-B widths with its first 4 blocks (one per interaction), to keep the conversion tests fast


def _first_blocks(key):
    return not key.startswith("blocks.") or int(key.split(".")[1]) < BEIT_DEPTH


@pytest.fixture(scope="module")
def beit_base_512():
    return model_from_config(HEAD_CFG, "configs/backbones/vit_adapter_base_beit_512.yaml",
                             opts=["MODEL.VIT_ADAPTER.DEPTH", BEIT_DEPTH, "MODEL.VIT_ADAPTER.INTERACTION_INDEXES",
                                   [[i, i] for i in range(BEIT_DEPTH)]])


def test_beit_imagenet_checkpoint(tmp_path, beit_base_512):
    """beit_base_patch16_224_pt22k_ft22k into the 512 segmentation adapter: tables resized 27^2+3 -> 63^2+3 rows
    (cls entries kept), index buffers, fc_norm and head dropped, the class token and gamma_1/gamma_2 loaded."""
    sd = _classification_checkpoint("beit_base_pt22k_ft22k", tmp_path / "beit.pth", keep=_first_blocks)
    ck = DenseCheckpointer(beit_base_512)
    ck.load(str(tmp_path / "beit.pth"))
    r = ck.last_report
    assert r.converter == "ViTAdapter (classification)"
    assert set(r.dropped) == ({"fc_norm.weight", "fc_norm.bias", "head.weight", "head.bias"}
                              | {f"blocks.{i}.attn.relative_position_index" for i in range(BEIT_DEPTH)})
    assert not r.unexpected and not r.mismatched
    missing = {k[len("backbone."):].split(".")[0] for k in r.missing if k.startswith("backbone.")}
    assert missing == {"level_embed", "spm", "interactions", "up", "norm1", "norm2", "norm3", "norm4"}
    bb = beit_base_512.backbone
    src = sd["blocks.3.attn.relative_position_bias_table"]
    assert torch.equal(bb.blocks[3].attn.relative_position_bias_table.detach(), resize_rel_pos_table(src, 63 * 63 + 3))
    assert torch.equal(bb.cls_token, sd["cls_token"]) and torch.equal(bb.blocks[2].gamma_2, sd["blocks.2.gamma_2"])


def test_beit_mmseg_checkpoint(tmp_path, beit_base_512):
    """A released mmseg BEiT-adapter checkpoint ({'state_dict': backbone.*, 'meta'}; here the 480 Pascal Context
    one into the 512 model) loads every backbone tensor, tables resized 59^2+3 -> 63^2+3 rows; the index buffers
    are dropped."""
    table = _keys()["dense"]["beit_adapter_base_480"]
    keys = {k: v for k, v in table["keys"].items() if _first_blocks(k)}
    sd = stand_in_weights({k: tuple(v) for k, v in keys.items()}, 5)
    sd.update({k: torch.zeros(s, dtype=torch.long) for k, (s, dt) in keys.items() if dt == "torch.int64"})
    torch.save({"state_dict": {"backbone." + k: v for k, v in sd.items()}, "meta": {"mmseg_version": "0.20.2"}},
               tmp_path / "m2f.pth")
    ck = DenseCheckpointer(beit_base_512)
    ck.load(str(tmp_path / "m2f.pth"))
    r = ck.last_report
    assert r.converter == "ViTAdapter (mmcv)"
    assert set(r.dropped) == {f"backbone.blocks.{i}.attn.relative_position_index" for i in range(BEIT_DEPTH)}
    assert not r.unexpected and not r.mismatched
    assert not [k for k in r.missing if k.startswith("backbone.")]
    bb = beit_base_512.backbone
    src = sd["blocks.3.attn.relative_position_bias_table"]
    assert torch.equal(bb.blocks[3].attn.relative_position_bias_table.detach(), resize_rel_pos_table(src, 63 * 63 + 3))
    assert torch.equal(bb.interactions[3].extra_extractors[1].ffn.fc2.weight,
                       sd["interactions.3.extra_extractors.1.ffn.fc2.weight"])


def test_beit_shared_table_and_windowed_conversion():
    """A BEiT checkpoint with one shared table (pre-training layout) into a windowed (detection) adapter: the table
    is copied to every block and resized per window (14 -> 27^2 rows, 4 -> 7^2), the class token and the
    masked-image-modelling parts are dropped with their reasons."""
    bb = ViTAdapter(base="beit", embed_dim=48, depth=2, num_heads=3, deform_num_heads=3, window_size=[14, 4],
                    interaction_indexes=[[0, 0], [1, 1]], vit_feature="final", norm="BN")
    shared = torch.randn(27 * 27 + 3, 3)
    ckpt = {"cls_token": torch.zeros(1, 1, 48), "mask_token": torch.zeros(1, 1, 48),
            "lm_head.weight": torch.zeros(8, 48),
            "rel_pos_bias.relative_position_bias_table": shared,
            "rel_pos_bias.relative_position_index": torch.zeros(197, 197, dtype=torch.long),
            "blocks.0.attn.qkv.weight": torch.zeros(144, 48)}
    rules = ViTAdapter.released
    assert rules.matches(ckpt)
    out, dropped = rules.convert(ckpt, bb)
    assert set(dropped) == {"cls_token", "mask_token", "lm_head.weight", "rel_pos_bias.relative_position_bias_table",
                            "rel_pos_bias.relative_position_index"}
    assert torch.equal(out["blocks.0.attn.relative_position_bias_table"], shared[:-3])
    assert torch.equal(out["blocks.1.attn.relative_position_bias_table"], resize_rel_pos_table(shared, 49))


def test_config_errors_name_the_key():
    """Built from a config, a bad value is named by its key (and the keys its reason refers to); built directly,
    by the constructor argument."""
    with pytest.raises(ValueError,
                       match=r"MODEL.VIT_ADAPTER.INTERACTION_INDEXES = \[\[0, 2\], \[4, 11\]\]: must split"):
        build_backbone(_cfg("vit_adapter_tiny_deit", ["MODEL.VIT_ADAPTER.INTERACTION_INDEXES", [[0, 2], [4, 11]]]))
    with pytest.raises(ValueError, match="MODEL.VIT_ADAPTER.WINDOW_SIZE = .*: BEiT blocks are either all global"):
        build_backbone(_cfg("vit_adapter_base_beit_512", ["MODEL.VIT_ADAPTER.WINDOW_SIZE", [14, 0] * 6]))
    with pytest.raises(ValueError, match="MODEL.VIT_ADAPTER.VIT_FEATURE = 'stages': .* got 1 "
                                         r"\(MODEL.VIT_ADAPTER.INTERACTION_INDEXES\); use 'final' or "
                                         "MODEL.VIT_ADAPTER.ADD_VIT_FEATURE False"):
        build_backbone(_cfg("vit_adapter_tiny_deit", ["MODEL.VIT_ADAPTER.INTERACTION_INDEXES", [[0, 11]]]))
    with pytest.raises(ValueError, match="^interaction_indexes: must split blocks"):
        ViTAdapter(interaction_indexes=[[0, 2], [4, 11]])


def test_use_checkpoint_gives_the_same_outputs_and_gradients():
    """USE_CHECKPOINT (activation checkpointing of blocks, injectors and extractors) changes memory, not results."""
    opts = SMALL_BEIT + ["MODEL.VIT_ADAPTER.NORM", "BN", "MODEL.VIT_ADAPTER.DROP_PATH_RATE", 0.0]
    torch.manual_seed(0)
    plain = build_backbone(_cfg("vit_adapter_base_beit_512", opts)).train()
    ckpt = build_backbone(_cfg("vit_adapter_base_beit_512", opts + ["MODEL.VIT_ADAPTER.USE_CHECKPOINT", True])).train()
    ckpt.load_state_dict(plain.state_dict())
    x = torch.randn(2, 3, 96, 128)
    grads = []
    for bb in (plain, ckpt):
        out = bb(x)
        sum(o.square().mean() for o in out.values()).backward()
        grads.append({k: p.grad for k, p in bb.named_parameters()})
    for k, g in grads[0].items():
        assert torch.allclose(g, grads[1][k], atol=1e-6, rtol=1e-4), k
