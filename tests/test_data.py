import os

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import tv_tensors

from dense.config import get_cfg
from dense.data import BadSampleError, DatasetCatalog, MetadataCatalog, SemSegDatasetMapper, get_dataset_dicts
from dense.data.build import MapDataset, build_train_loader
from dense.data.datasets import load_sem_seg
from dense.data.datasets.synthetic import CLASSES, THING_CLASSES, render
from dense.data.mappers import InstanceDatasetMapper
from dense.data.samplers import InferenceSampler, TrainingSampler
from dense.data.transforms import Compose, RandomCropCatMax, RandomFlip, ResizeRatioRange, rescale_size
from dense.utils import comm


def test_synthetic_is_deterministic_and_consistent(synthetic_root):
    img1, lab1, things1, _ = render(3, 0)
    img2, lab2, things2, _ = render(3, 0)
    assert np.array_equal(img1, img2) and np.array_equal(lab1, lab2) and len(things1) == len(things2)
    assert set(np.unique(lab1)) <= set(range(len(CLASSES))) | {255}
    # the files on disk are the rendering (labels are lossless PNGs)
    on_disk = np.asarray(Image.open(os.path.join(synthetic_root, "sem_seg", "train", "00003.png")))
    assert np.array_equal(on_disk, lab1)


def test_synthetic_registrations(synthetic_root):
    sem = DatasetCatalog.get("synthetic_sem_seg_train")
    assert len(sem) == 400 and os.path.isfile(sem[0]["sem_seg_file_name"])
    inst = DatasetCatalog.get("synthetic_instances_val")
    assert len(inst) == 100 and all(a["category_id"] < len(THING_CLASSES) for r in inst for a in r["annotations"])
    assert MetadataCatalog.get("synthetic_instances_val").thing_classes == THING_CLASSES
    pan = DatasetCatalog.get("synthetic_panoptic_val")
    # panoptic segments agree with the semantic labels pixel for pixel
    r = pan[0]
    rgb = np.asarray(Image.open(r["pan_seg_file_name"])).astype(np.int64)
    ids = rgb[..., 0] + 256 * rgb[..., 1] + 65536 * rgb[..., 2]
    label = np.asarray(Image.open(r["sem_seg_file_name"]))
    for seg in r["segments_info"]:
        assert np.all(label[ids == seg["id"]] == seg["category_id"])
    assert np.all(label[ids == 0] == 255)


def test_dataset_names_must_be_a_list():
    with pytest.raises(TypeError, match="list or tuple"):
        get_dataset_dicts("synthetic_sem_seg_train")
    with pytest.raises(KeyError, match="not registered"):
        get_dataset_dicts(["nope"])


def test_missing_dataset_folder_names_folder_and_layout(tmp_path):
    with pytest.raises(FileNotFoundError) as e:
        load_sem_seg(str(tmp_path / "ADEChallengeData2016/images/training"), str(tmp_path / "x"),
                     layout="  ADEChallengeData2016/images/training/*.jpg")
    msg = str(e.value)
    assert "ADEChallengeData2016/images/training" in msg and "Expected layout" in msg and "DENSE_DATASETS" in msg


def _write_pair(root, name, image, label):
    os.makedirs(root / "img", exist_ok=True)
    os.makedirs(root / "lab", exist_ok=True)
    Image.fromarray(image).save(root / "img" / f"{name}.jpg")
    if label is not None:
        Image.fromarray(label).save(root / "lab" / f"{name}.png")


def test_missing_label_error_or_skip(tmp_path):
    img = np.zeros((8, 8, 3), np.uint8)
    _write_pair(tmp_path, "a", img, np.zeros((8, 8), np.uint8))
    _write_pair(tmp_path, "b", img, None)
    DatasetCatalog.register("_missing_label", lambda: load_sem_seg(str(tmp_path / "img"), str(tmp_path / "lab")))
    with pytest.raises(FileNotFoundError, match="(?s)1 images .* have no label file.*b.png.*ON_BAD_SAMPLE skip"):
        get_dataset_dicts(["_missing_label"])
    assert [os.path.basename(r["file_name"])
            for r in get_dataset_dicts(["_missing_label"], on_bad_sample="skip")] == ["a.jpg"]


def test_corrupt_image_and_bad_labels_get_clear_errors(tmp_path, tiny_cfg):
    mapper = SemSegDatasetMapper(tiny_cfg, is_train=True)
    _write_pair(tmp_path, "ok", np.zeros((16, 16, 3), np.uint8), np.full((16, 16), 9, np.uint8))
    (tmp_path / "img" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 definitely not a jpeg")
    with pytest.raises(BadSampleError, match="broken.jpg.*corrupt"):
        mapper({"file_name": str(tmp_path / "img" / "broken.jpg"),
                "sem_seg_file_name": str(tmp_path / "lab" / "ok.png")})
    with pytest.raises(BadSampleError, match=r"values \[9\] outside 0..5"):
        mapper({"file_name": str(tmp_path / "img" / "ok.jpg"), "sem_seg_file_name": str(tmp_path / "lab" / "ok.png")})


def test_reduce_zero_label(tmp_path, tiny_cfg):
    label = np.array([[0, 1], [6, 255]], np.uint8)
    _write_pair(tmp_path, "z", np.zeros((2, 2, 3), np.uint8), label)
    (tiny_cfg.INPUT.MIN_SIZE_TRAIN_SAMPLING, tiny_cfg.INPUT.MIN_SIZE_TRAIN,
     tiny_cfg.INPUT.MAX_SIZE_TRAIN) = "choice", (2,), 2
    tiny_cfg.INPUT.CROP.ENABLED, tiny_cfg.INPUT.FLIP_PROB, tiny_cfg.INPUT.COLOR_AUG = False, 0.0, False
    out = SemSegDatasetMapper(tiny_cfg, True)({"file_name": str(tmp_path / "img/z.jpg"),
                                               "sem_seg_file_name": str(tmp_path / "lab/z.png"),
                                               "reduce_zero_label": True})
    assert out["sem_seg"].tolist() == [[255, 0], [5, 255]]  # 0 -> ignore, v -> v-1, ignore stays (as mmseg)


def test_joint_transforms_keep_image_mask_and_boxes_aligned():
    torch.manual_seed(0)
    h, w = 60, 90
    image = torch.zeros(3, h, w, dtype=torch.uint8)
    mask = torch.zeros(h, w, dtype=torch.uint8)
    image[:, 10:30, 50:80] = 200
    mask[10:30, 50:80] = 1
    sample = {"image": tv_tensors.Image(image), "sem_seg": tv_tensors.Mask(mask),
              "boxes": tv_tensors.BoundingBoxes(torch.tensor([[50.0, 10.0, 80.0, 30.0]]), format="XYXY",
                                                canvas_size=(h, w))}
    t = Compose([ResizeRatioRange(180, 60, (0.5, 2.0)), RandomCropCatMax((40, 40), 1.0), RandomFlip(1.0)])
    for _ in range(20):
        out = t(sample)
        img, m, b = out["image"][0] > 100, out["sem_seg"] == 1, out["boxes"][0]
        assert img.shape == m.shape
        mf = m[None, None].float()
        boundary = (torch.nn.functional.max_pool2d(mf, 3, 1, 1) != -torch.nn.functional.max_pool2d(-mf, 3, 1, 1))[0, 0]
        assert not ((img != m) & ~boundary).any()  # image and mask differ only on the object's boundary
        if m.any():
            ys, xs = torch.nonzero(m, as_tuple=True)
            assert abs(xs.min().item() - b[0].item()) <= 1.5 and abs(xs.max().item() + 1 - b[2].item()) <= 1.5
            assert abs(ys.min().item() - b[1].item()) <= 1.5 and abs(ys.max().item() + 1 - b[3].item()) <= 1.5


def test_rescale_size_matches_mmcv():
    # mmcv.imrescale(512x683 image, (2048, 512)) -> scale min(2048/683, 512/512) = 1
    assert rescale_size(512, 683, 2048, 512) == (512, 683)
    assert rescale_size(100, 1000, 2048, 512) == (205, 2048)


def test_cat_max_ratio_rejects_single_class_crops():
    torch.manual_seed(0)
    mask = torch.zeros(100, 100, dtype=torch.uint8)
    mask[:, 90:] = 1  # class 1 only in a thin strip
    sample = {"image": tv_tensors.Image(torch.zeros(3, 100, 100, dtype=torch.uint8)), "sem_seg": tv_tensors.Mask(mask)}
    crop = RandomCropCatMax((20, 20), cat_max_ratio=0.75)
    hits = sum(int((crop(sample)["sem_seg"] == 1).any()) for _ in range(50))
    plain = RandomCropCatMax((20, 20), cat_max_ratio=1.0)
    plain_hits = sum(int((plain(sample)["sem_seg"] == 1).any()) for _ in range(50))
    assert hits > plain_hits


def test_training_sampler_is_exact_under_ddp_and_resumable(monkeypatch):
    def stream(rank, world, start=0, n=30):
        monkeypatch.setattr(comm, "get_rank", lambda: rank)
        monkeypatch.setattr(comm, "get_world_size", lambda: world)
        it = iter(TrainingSampler(7, seed=3, start=start))
        return [next(it) for _ in range(n)]

    single = stream(0, 1, n=60)
    r0, r1 = stream(0, 2), stream(1, 2)
    assert [x for pair in zip(r0, r1) for x in pair] == single  # global stream split across ranks
    assert stream(0, 1, start=13, n=20) == single[13:33]  # resuming mid-epoch continues the stream
    # every epoch is a permutation
    assert sorted(i for i, _ in single[:7]) == list(range(7))


def test_inference_sampler_covers_each_index_once(monkeypatch):
    seen = []
    for rank in range(3):
        monkeypatch.setattr(comm, "get_rank", lambda r=rank: r)
        monkeypatch.setattr(comm, "get_world_size", lambda: 3)
        seen += list(InferenceSampler(10))
    assert seen == list(range(10))


def test_train_loader_is_reproducible_per_sample(tiny_cfg):
    """Augmentations depend only on (seed, stream position): a loader started at iteration 2 yields what
    iterations 2.. of a loader started at 0 yield, regardless of worker processes."""
    mapper = SemSegDatasetMapper(tiny_cfg, True)
    records = get_dataset_dicts(tiny_cfg.DATASETS.TRAIN)[:20]
    a = iter(build_train_loader(tiny_cfg, mapper, seed=5, start_iter=0, records=records))
    batches = [next(a) for _ in range(4)]
    tiny_cfg.DATALOADER.NUM_WORKERS = 2
    b = iter(build_train_loader(tiny_cfg, mapper, seed=5, start_iter=2, records=records))
    for expected in batches[2:]:
        got = next(b)
        for x, y in zip(expected, got):
            assert x["file_name"] == y["file_name"]
            assert torch.equal(x["image"], y["image"]) and torch.equal(x["sem_seg"], y["sem_seg"])


def test_map_dataset_restores_global_rng():
    ds = MapDataset([{"x": 1}], lambda r: torch.rand(1))
    torch.manual_seed(0)
    ref = torch.rand(3)
    torch.manual_seed(0)
    ds[(0, 123)]
    assert torch.equal(torch.rand(3), ref)


def test_instance_mapper_produces_aligned_instances(synthetic_root):
    cfg = get_cfg()
    cfg.INPUT.MIN_SIZE_TRAIN, cfg.INPUT.MAX_SIZE_TRAIN, cfg.INPUT.CROP.SIZE = (96,), 400, (80, 80)
    mapper = InstanceDatasetMapper(cfg, is_train=True)
    torch.manual_seed(0)
    for record in DatasetCatalog.get("synthetic_instances_train")[:10]:
        out = mapper(record)
        inst = out["instances"]
        assert inst.image_size == tuple(out["image"].shape[-2:])
        assert len(inst.gt_boxes) == len(inst.gt_masks) == len(inst.gt_classes)
        for box, m in zip(inst.gt_boxes, inst.gt_masks):
            ys, xs = torch.nonzero(m, as_tuple=True)
            if len(xs):
                assert xs.min() >= box[0] - 1.5 and xs.max() + 1 <= box[2] + 1.5
